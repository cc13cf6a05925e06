"""psycopg pipeline mode: large rows and parameters in flight at once, errors mid-pipeline."""

import psycopg

from transcript import Client, cur_result, digest, emit, error_event, main


def executemany_returning_large_rows():
    """executemany in a pipeline: 1 MB Binds going out while 1 MB rows come back."""
    c = Client("a")
    c.query("create", "CREATE TABLE t (i int, v text)")

    def run(conn):
        cur = conn.cursor()
        cur.executemany(
            "INSERT INTO t VALUES (%s, %s) RETURNING i, v",
            [(i, chr(ord("a") + i % 26) * 1_000_000) for i in range(40)],
            returning=True,
        )
        out = []
        while True:
            out.append(cur.fetchall())
            if not cur.nextset():
                break
        return {"sets": len(out), "rows": digest([r for rs in out for r in rs])}

    c.step("executemany", run)
    c.query("after", "SELECT count(*), sum(length(v)) FROM t")
    c.close()


def errors_mid_pipeline():
    """A failing statement in the middle: the statements after it up to the next Sync are
    aborted, and the ones after the Sync run; in a transaction the whole block fails."""
    for autocommit in (True, False):
        who = "autocommit" if autocommit else "transaction"
        c = Client(who, autocommit=autocommit)
        c.query("create", "CREATE TABLE IF NOT EXISTS t (i int PRIMARY KEY)")
        if not autocommit:
            c.conn.commit()
        statements = [
            ("INSERT INTO t VALUES (1) RETURNING i", None),
            ("SELECT 1 / %s", [0]),
            ("INSERT INTO t VALUES (2) RETURNING i", None),
            ("SELECT 'after error'", None),
            ("SYNC", None),
            ("INSERT INTO t VALUES (3) RETURNING i", None),
            ("INSERT INTO t VALUES (3) RETURNING i", None),
            ("SELECT 'after duplicate'", None),
        ]
        # Which call raises an error depends on when psycopg happens to read the server's
        # answer (it reads opportunistically while sending), so the raised errors are
        # reported as a set; each statement's own outcome, fetched afterwards, is exact.
        raised = set()

        def note(e):
            # PipelineAborted is psycopg's own, raised or not by the same timing; the
            # statements' outcomes below show the abort exactly.
            if isinstance(e, psycopg.errors.PipelineAborted):
                return
            diag = getattr(e, "diag", None)
            raised.add((type(e).__name__, getattr(e, "sqlstate", None),
                        getattr(diag, "message_primary", None) or str(e).strip()))

        curs = []
        try:
            with c.conn.pipeline() as p:
                for n, (sql, params) in enumerate(statements):
                    if sql == "SYNC":
                        try:
                            p.sync()
                        except psycopg.Error as e:
                            note(e)
                        continue
                    cur = c.conn.cursor()
                    try:
                        cur.execute(sql, params)
                    except psycopg.Error as e:
                        note(e)
                    curs.append((n, cur))
                try:
                    p.sync()
                except psycopg.Error as e:
                    note(e)
        except psycopg.Error as e:
            note(e)
        for n, cur in curs:
            try:
                emit(ev="result", who=who, step=n, value=cur_result(cur))
            except psycopg.Error as e:
                error_event(who, f"fetch {n}", e)
        emit(ev="raised", who=who, errors=sorted(raised, key=str))
        if not autocommit:
            c.conn.rollback()
        c.query("after", "SELECT array_agg(i ORDER BY i) FROM t")
        c.close()


if __name__ == "__main__":
    main(
        {
            "executemany_returning_large_rows": executemany_returning_large_rows,
            "errors_mid_pipeline": errors_mid_pipeline,
        }
    )

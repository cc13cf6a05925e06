"""COPY FROM STDIN / TO STDOUT through psycopg: the simple protocol (cursor.copy, with and
without client-side parameters) and the extended one (libpq PQexecParams through psycopg.pq:
Parse/Bind/Execute/Sync, then CopyData/CopyDone/Sync, two Syncs for one ReadyForQuery),
successful, failing on bad data and aborted by the client. Afterwards a second client must get
the backend at once (pool_size 1): a COPY that is over must have released it."""

import psycopg

from transcript import Client, digest, emit, main, pq_result, pq_results, together

ROWS = 2000


def lines(n, start=0):
    return b"".join(f"{i}\trow {i}\n".encode() for i in range(start, start + n))


def copy_in_simple(conn):
    with conn.cursor().copy("COPY t FROM STDIN") as cp:
        for i in range(ROWS):
            cp.write_row((i, f"row {i}"))
    return {"rowcount": conn.cursor().rowcount}


def copy_out(statement, params=None):
    def run(conn):
        cur = conn.cursor()
        with cur.copy(statement, params) as cp:
            data = b"".join(bytes(chunk) for chunk in cp)
        return {"bytes": len(data), "lines": digest(data.splitlines()), "rowcount": cur.rowcount}

    return run


def copy_in_bad_row(conn):
    with conn.cursor().copy("COPY t FROM STDIN") as cp:
        cp.write(b"1\tfine\n")
        cp.write(b"not a number\tbad\n")
    return "copied"


class ClientAbort(Exception):
    pass


def copy_in_client_abort(conn):
    try:
        with conn.cursor().copy("COPY t FROM STDIN") as cp:
            cp.write(b"1\tfine\n")
            raise ClientAbort()
    except ClientAbort:
        return "aborted"


def extended_copy_in(data, fail=None):
    """PQexecParams("COPY t FROM STDIN"), the data, then PQputCopyEnd (or a client CopyFail)."""

    def run(conn):
        pg = conn.pgconn
        first = pq_result(pg.exec_params(b"COPY t FROM STDIN", []))
        if first["status"] != "COPY_IN":
            return {"start": first}
        pg.put_copy_data(data)
        pg.put_copy_end(fail)
        return {"start": first, "end": pq_results(pg)}

    return run


def extended_copy_out(sql):
    def run(conn):
        pg = conn.pgconn
        first = pq_result(pg.exec_params(sql, []))
        if first["status"] != "COPY_OUT":
            return {"start": first}
        chunks = []
        while True:
            n, chunk = pg.get_copy_data(0)
            if n < 0:
                break
            chunks.append(bytes(chunk))
        data = b"".join(chunks)
        return {"start": first, "lines": digest(data.splitlines()), "end": pq_results(pg)}

    return run


def simple_and_extended_then_second_client():
    a = Client("a")
    a.query("create", "CREATE TABLE t (i int, s text)")
    a.step("copy in, simple", copy_in_simple)
    a.step("copy out, simple", copy_out("COPY t TO STDOUT"))
    a.step(
        "copy out, client-side params",
        copy_out("COPY (SELECT * FROM t WHERE i < %s ORDER BY i) TO STDOUT", [10]),
    )
    a.step("copy in, simple, bad row", copy_in_bad_row)
    a.step("copy in, simple, client abort", copy_in_client_abort)
    a.step("copy in, extended", extended_copy_in(lines(ROWS, ROWS)))
    a.step("copy out, extended", extended_copy_out(b"COPY t TO STDOUT"))
    a.step(
        "copy out, extended, query",
        extended_copy_out(b"COPY (SELECT i FROM t WHERE i % 100 = 0 ORDER BY i) TO STDOUT"),
    )
    a.step("copy in, extended, bad row", extended_copy_in(b"1\tfine\nnope\tbad\n"))
    a.step("copy in, extended, client abort", extended_copy_in(b"1\tfine\n", b"client abort"))
    a.step("copy out, extended, error", extended_copy_out(b"COPY no_such_table TO STDOUT"))
    a.query("count after copies", "SELECT count(*), count(DISTINCT i) FROM t")
    a.query("still in sync", "SELECT 'a is fine'")
    if not together():
        a.close()
    # pool_size 1: if any COPY above kept the backend, this waits for the borrow timeout.
    b = Client("b")
    b.query("second client right after", "SELECT count(*) FROM t")
    b.step("second client copies too", extended_copy_in(lines(5, 10 * ROWS)))
    b.close()
    if together():
        a.query("first client again", "SELECT count(*) FROM t")
        a.close()


if __name__ == "__main__":
    main({"simple_and_extended_then_second_client": simple_and_extended_then_second_client})

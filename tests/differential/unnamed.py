"""libpq's unnamed prepared statement over two round trips (PQprepare(conn, "", sql), then
PQexecPrepared(conn, "", ...), each ending in Sync), with another client preparing its own
unnamed statement in between. Each client must run its own text, or get what PostgreSQL
gives for a missing statement (26000); never the other client's."""

from transcript import Client, emit, main, pq_result, together

A_SQL = b"SELECT 'client a:' || $1::text"
B_SQL = b"SELECT 'other client:' || $1::text || ':' || $2::text"


def prepare(sql, n):
    def run(conn):
        return pq_result(conn.pgconn.prepare(b"", sql, [25] * n))

    return run


def execute(*values):
    def run(conn):
        return pq_result(conn.pgconn.exec_prepared(b"", list(values)))

    return run


def describe(conn):
    res = conn.pgconn.describe_prepared(b"")
    out = pq_result(res)
    if out["status"] == "COMMAND_OK":
        out["nparams"] = res.nparams
        out["nfields"] = res.nfields
    return out


def interleaved():
    a = Client("a")
    a.step("a prepares unnamed", prepare(A_SQL, 1))
    if together():
        b = Client("b")
        b.step("b prepares unnamed", prepare(B_SQL, 2))
        b.step("b executes unnamed", execute(b"x", b"y"))
        a.step("a describes unnamed", describe)
        a.step("a executes unnamed", execute(b"mine"))
        b.step("b executes unnamed again", execute(b"z", b"w"))
        a.step("a executes unnamed again", execute(b"mine again"))
        b.close()
        a.close()
    else:
        a.step("a executes unnamed", execute(b"mine"))
        a.close()
        # The next session on the same backend has no unnamed statement (26000 directly).
        b = Client("b")
        b.step("b describes unnamed before preparing", describe)
        b.step("b executes unnamed before preparing", execute(b"x", b"y"))
        b.step("b prepares unnamed", prepare(B_SQL, 2))
        b.step("b executes unnamed", execute(b"x", b"y"))
        b.close()
    # A simple Query destroys the unnamed statement (protocol: "Extended Query").
    c = Client("c")
    c.step("c prepares unnamed", prepare(A_SQL, 1))
    c.query("c runs a simple query", "SELECT 1")
    c.step("c executes unnamed after a simple query", execute(b"gone"))
    c.close()


if __name__ == "__main__":
    main({"interleaved": interleaved})

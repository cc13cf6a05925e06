"""asyncpg: its own protocol code, named prepared statements for every query (cached per
connection as __asyncpg_stmt_N__, so two connections use the same names), its own
pipelining (executemany writes Binds while reading results)."""

import asyncio

import asyncpg

from transcript import digest, emit, main, together


async def connect(who):
    c = await asyncpg.connect(timeout=30)

    def notice(conn, msg):
        emit(ev="notice", who=who, sqlstate=msg.sqlstate, message=msg.message)

    c.add_log_listener(notice)
    return c


async def step(who, name, awaitable, big=False):
    try:
        v = await awaitable
    except asyncpg.PostgresError as e:
        emit(ev="error", who=who, step=name, kind=type(e).__name__, sqlstate=e.sqlstate,
             message=e.message)
        return None
    except (asyncpg.InterfaceError, OSError, asyncio.TimeoutError) as e:
        emit(ev="error", who=who, step=name, kind=type(e).__name__, sqlstate=None,
             message=str(e))
        return None
    if isinstance(v, list):
        rows = [list(r.values()) if isinstance(r, asyncpg.Record) else r for r in v]
        v = digest(rows) if big else rows
    elif isinstance(v, asyncpg.Record):
        v = list(v.values())
    emit(ev="result", who=who, step=name, value=v)
    return v


async def large_binds_both_ways():
    a = await connect("a")
    await step("a", "create", a.execute("CREATE TABLE t (i int, v text)"))
    rows = [(i, chr(ord("a") + i % 26) * 1_000_000) for i in range(40)]
    # executemany: 40 Binds of 1 MB out while 40 rows of 1 MB come back.
    await step("a", "executemany returning", a.executemany(
        "INSERT INTO t VALUES ($1, $2) RETURNING v", rows))
    await step("a", "large result", a.fetch(
        "SELECT i, repeat('x', 1000) FROM generate_series(1, 100000) i"), big=True)
    await step("a", "large parameter and result", a.fetch(
        "SELECT length($1::text), $1::text", "z" * 20_000_000), big=True)
    await step("a", "after", a.fetch("SELECT count(*), sum(length(v)) FROM t"))
    await a.close()


async def described(prepared):
    """A prepared statement as what the server said of it (its repr holds an address)."""
    s = await prepared
    return {"params": [t.name for t in s.get_parameters()],
            "columns": [a.name for a in s.get_attributes()]}


async def client_work(c, who, n):
    await step(who, "prepare", described(c.prepare(f"SELECT $1::int + {n} AS v")))
    await step(who, "fetch", c.fetch(f"SELECT $1::int * {n} AS v, '{who}' AS who", 7))
    await step(who, "fetchrow", c.fetchrow(f"SELECT $1::text || ':{who}' AS v", "x"))
    await step(who, "error", c.fetch("SELECT 1 / $1::int", 0))
    await step(who, "after error", c.fetchval(f"SELECT '{who} fine'"))
    await step(who, "transaction", c.execute("BEGIN; SELECT 1; COMMIT"))


async def named_statements_two_clients():
    a = await connect("a")
    if together():
        # Both connected first: asyncpg's prepare() is Parse/Describe/Flush with no Sync, so
        # (as on PostgreSQL, where that leaves an implicit transaction open) the client keeps
        # its backend until its next Sync; with pool_size 1 the other client waits till then.
        b = await connect("b")
        sa = await a.prepare("SELECT $1::int + 1 AS v")
        await step("a", "a's statement", sa.fetch(41))
        # The same cached name (__asyncpg_stmt_1__ etc.) on both connections, different text.
        sb = await b.prepare("SELECT $1::text || ' from b' AS v")
        await step("b", "b's statement", sb.fetch("x"))
        for i in range(3):
            await client_work(a, "a", i + 2)
            await client_work(b, "b", i + 10)
        await step("b", "b's statement again", sb.fetchval("y"))
        await step("a", "a's statement again", sa.fetchval(1))
        await b.close()
        await a.close()
    else:
        sa = await a.prepare("SELECT $1::int + 1 AS v")
        await step("a", "a's statement", sa.fetch(41))
        for i in range(3):
            await client_work(a, "a", i + 2)
        await a.close()
        b = await connect("b")
        sb = await b.prepare("SELECT $1::text || ' from b' AS v")
        await step("b", "b's statement", sb.fetch("x"))
        for i in range(3):
            await client_work(b, "b", i + 10)
        await b.close()


if __name__ == "__main__":
    main({
        "large_binds_both_ways": lambda: asyncio.run(large_binds_both_ways()),
        "named_statements_two_clients": lambda: asyncio.run(named_statements_two_clients()),
    })

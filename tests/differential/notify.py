"""LISTEN / NOTIFY: a client's own notifications, transactional ones (deduplicated, dropped
on rollback), pg_notify, another client's; the process id the driver was told against the
server's; and the next session on a backend hears nothing of the last one's channels."""

from transcript import Client, emit, main, together


def pid_check(c, step):
    """Is the process id in BackendKeyData the server's? (Transaction mode issues its own:
    the test normalises this line there, see notify_cases in psycopg_cases.rs.)"""
    told = c.conn.info.backend_pid
    server = c.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    c.conn.execute("NOTIFY pid_probe, 'probe'")
    pids = [n.pid for n in c.conn.notifies(timeout=10, stop_after=1)]
    emit(ev="pid", who=c.who, step=step, told_is_server=told == server,
         notify_pid_is_server=pids == [server])


def listen_notify():
    a = Client("a", notify_handler=False)
    a.query("listen", "LISTEN ch; LISTEN pid_probe")
    a.query("notify self", "NOTIFY ch, 'to myself'")
    a.recv_notifies("own notification", 1)
    a.query("in a transaction", "BEGIN; NOTIFY ch, 'x'; NOTIFY ch, 'x'; NOTIFY ch, 'y'; COMMIT")
    a.recv_notifies("deduplicated", 2)
    a.query("rolled back", "BEGIN; NOTIFY ch, 'never'; ROLLBACK")
    a.query("pg_notify", "SELECT pg_notify('ch', 'via function')")
    a.recv_notifies("after rollback only the function's", 1)
    pid_check(a, "pid")
    if together():
        b = Client("b")
        b.query("b notifies", "NOTIFY ch, 'from b'")
        a.recv_notifies("from the other client", 1)
        b.query("b is not listening", "SELECT pg_listening_channels()")
        b.close()
    a.query("channels", "SELECT pg_listening_channels() ORDER BY 1")
    a.query("unlisten", "UNLISTEN *")
    a.query("no channels", "SELECT pg_listening_channels()")
    a.query("listen again", "LISTEN left_open")
    a.close()
    # The next session (the same backend in session mode) inherits no channels.
    c = Client("c", notify_handler=False)
    c.query("next session's channels", "SELECT pg_listening_channels()")
    c.query("notify left_open", "NOTIFY left_open, 'nobody hears'")
    c.query("listen", "LISTEN ch")
    c.query("notify", "NOTIFY ch, 'c'")
    c.recv_notifies("c hears its own", 1)
    c.close()


if __name__ == "__main__":
    main({"listen_notify": listen_notify})

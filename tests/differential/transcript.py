"""Transcripts for the differential client scripts (tests/tests/differential/runner.rs).

A script prints one canonical JSON object per line for each thing it observed: rows, an error
(SQLSTATE and primary message), a notice, a change in the ParameterStatus values the driver
holds, a notification. The same script runs directly against PostgreSQL and through Tollgate,
and the runner compares the lines. So: print only what PostgreSQL determines (never a pid, a
time or an OID), flush every line (a hang must still show how far the script got), and keep
large results short (a count and a digest).

Where to connect comes from the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD,
PGDATABASE, PGSSLMODE), which psycopg and asyncpg both read.
"""

import datetime
import decimal
import hashlib
import json
import os
import sys
import uuid

import psycopg
from psycopg import pq

# Every setting PostgreSQL 15 reports with ParameterStatus (GUC_REPORT). A driver keeps the
# last value of each; a pooler must keep them what the server would have said.
REPORTED = [
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "in_hot_standby",
    "integer_datetimes",
    "IntervalStyle",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
    "standard_conforming_strings",
    "TimeZone",
]


def canon(v):
    """A JSON-able, deterministic form of a value a driver returned."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"hex": bytes(v).hex()}
    if isinstance(v, (datetime.date, datetime.time, datetime.datetime, datetime.timedelta)):
        return {"time": str(v)}
    if isinstance(v, (decimal.Decimal, uuid.UUID)):
        return str(v)
    if isinstance(v, (tuple, list)):
        return [canon(x) for x in v]
    if isinstance(v, dict):
        return {str(k): canon(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return {type(v).__name__: str(v)}


def emit(**event):
    """Prints one event line."""
    print(json.dumps(canon(event), sort_keys=True, ensure_ascii=True), flush=True)


def digest(rows):
    """Row count and SHA-256 of a (large) row set, instead of the rows."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(canon(r), ensure_ascii=True).encode())
        h.update(b"\n")
    return {"count": len(rows), "sha256": h.hexdigest()}


def error_event(who, step, e):
    """The event for a driver exception: class, SQLSTATE and primary message."""
    diag = getattr(e, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    emit(
        ev="error",
        who=who,
        step=step,
        kind=type(e).__name__,
        sqlstate=getattr(e, "sqlstate", None),
        message=primary if primary is not None else str(e).strip(),
    )


class Client:
    """A psycopg connection that writes what it observes to the transcript."""

    def __init__(self, who, autocommit=True, notify_handler=True, **kwargs):
        """notify_handler=False leaves notifications to conn.notifies() (see recv_notifies)."""
        self.who = who
        self.params = {}
        self.conn = psycopg.connect(autocommit=autocommit, **kwargs)
        self.conn.add_notice_handler(self._notice)
        if notify_handler:
            self.conn.add_notify_handler(self._notify)
        self.check_params("connect")

    def recv_notifies(self, step, count, timeout=10):
        """Waits for `count` notifications (at most `timeout` s) and emits them, pid left out."""
        got = 0
        for n in self.conn.notifies(timeout=timeout, stop_after=count):
            emit(ev="notify", who=self.who, step=step, channel=n.channel, payload=n.payload)
            got += 1
        emit(ev="notifies_received", who=self.who, step=step, count=got)

    def _notice(self, diag):
        emit(
            ev="notice",
            who=self.who,
            severity=diag.severity_nonlocalized,
            sqlstate=diag.sqlstate,
            message=diag.message_primary,
        )

    def _notify(self, n):
        # The pid is left out: it is the backend's, which transaction mode does not keep.
        emit(ev="notify", who=self.who, channel=n.channel, payload=n.payload)

    def check_params(self, step):
        """Emits the ParameterStatus values that changed since the last check."""
        now = {k: self.conn.info.parameter_status(k) for k in REPORTED}
        changed = {k: v for k, v in now.items() if k not in self.params or self.params[k] != v}
        if changed:
            emit(ev="params", who=self.who, step=step, changed=changed)
        self.params = now

    def step(self, step, fn):
        """Runs fn(conn); emits its result (rows or status) or its error, then param changes."""
        try:
            result = fn(self.conn)
        except psycopg.Error as e:
            error_event(self.who, step, e)
            result = None
        else:
            emit(ev="result", who=self.who, step=step, value=result)
        if not self.conn.closed:
            self.check_params(step)
        return result

    def query(self, step, sql, params=None):
        """Executes sql and emits its rows (or status when it returns none)."""

        def run(conn):
            cur = conn.execute(sql, params)
            return cur_result(cur)

        return self.step(step, run)

    def close(self):
        # Silent, so a program that closes its first client earlier when the two cannot be
        # connected together (DIFF_CLIENTS) prints the same lines otherwise.
        self.conn.close()


def cur_result(cur):
    """Rows (or the status line, when there are none) of each of a cursor's results."""
    sets = []
    while True:
        if cur.description is None:
            sets.append({"status": cur.statusmessage})
        else:
            sets.append({"rows": cur.fetchall()})
        if not cur.nextset():
            break
    return sets[0] if len(sets) == 1 else {"results": sets}


def together():
    """True when the program may keep two clients connected at once; False in session mode
    with pool_size 1, where it runs them one after the other (runner.rs, Case::two_clients)."""
    return os.environ.get("DIFF_CLIENTS") == "together"


def pq_result(res):
    """A libpq PGresult (psycopg.pq): status, then the error or the rows as text."""
    status = pq.ExecStatus(res.status).name
    out = {"status": status}
    if res.status == pq.ExecStatus.FATAL_ERROR:
        out["sqlstate"] = (res.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
        # The message is in the client encoding: kept exact, undecodable bytes escaped.
        msg = res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b""
        out["message"] = msg.decode(errors="backslashreplace")
        if not msg:
            # No server error: libpq's own (a lost connection, say).
            out["libpq"] = (res.error_message or b"").decode(errors="backslashreplace").strip()
    elif res.status == pq.ExecStatus.TUPLES_OK:
        out["rows"] = [
            [canon(res.get_value(r, c)) for c in range(res.nfields)] for r in range(res.ntuples)
        ]
    elif res.status == pq.ExecStatus.COMMAND_OK:
        out["command"] = (res.command_status or b"").decode()
    return out


def pq_results(pgconn):
    """Every remaining PGresult of the current command, until libpq says there are none."""
    out = []
    while (res := pgconn.get_result()) is not None:
        out.append(pq_result(res))
    return out


def main(cases):
    """Runs the case named by argv[1]."""
    if len(sys.argv) != 2 or sys.argv[1] not in cases:
        print(f"usage: {sys.argv[0]} {'|'.join(cases)}", file=sys.stderr)
        sys.exit(2)
    cases[sys.argv[1]]()

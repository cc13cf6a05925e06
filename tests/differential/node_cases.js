// node-postgres: simple and parameterised queries, a named prepared query, errors, notices,
// connect() then end(). Connects from the libpq environment (PGHOST, PGPORT, ...), which
// node-postgres reads. One canonical JSON line per observation (runner.rs).
'use strict';
const { Client } = require('pg');

function canon(v) {
  if (Array.isArray(v)) return v.map(canon);
  if (v && typeof v === 'object' && !(v instanceof Date)) {
    const out = {};
    for (const k of Object.keys(v).sort()) out[k] = canon(v[k]);
    return out;
  }
  return v;
}
function emit(ev) { process.stdout.write(JSON.stringify(canon(ev)) + '\n'); }

process.on('uncaughtException', (e) => {
  emit({ ev: 'uncaught', kind: e.constructor.name, code: e.code || null, message: e.message });
  process.exitCode = 1;
});

async function connect(who) {
  const c = new Client();
  c.on('notice', (n) => emit({ ev: 'notice', who, sqlstate: n.code, message: n.message }));
  c.on('error', (e) => emit({ ev: 'client_error', who, code: e.code || null, message: e.message }));
  await c.connect();
  return c;
}

async function step(who, name, promise) {
  try {
    const r = await promise;
    const results = Array.isArray(r) ? r : [r];
    emit({ ev: 'result', who, step: name, value: results.map((x) => ({ command: x.command, rowCount: x.rowCount, rows: x.rows, fields: x.fields.map((f) => f.name) })) });
  } catch (e) {
    emit({ ev: 'error', who, step: name, kind: e.constructor.name, sqlstate: e.code || null, message: e.message });
  }
}

async function queries() {
  const c = await connect('a');
  await step('a', 'simple', c.query("SELECT 1 AS a, 'x' AS b, NULL AS n"));
  await step('a', 'multi statement', c.query("SELECT 1 AS one; SELECT 2 AS two"));
  await step('a', 'parameters', c.query('SELECT $1::int + $2::int AS s, $3::text AS t', [1, 2, 'three']));
  await step('a', 'named', c.query({ name: 'x', text: 'SELECT $1::text AS v', values: ['first'] }));
  await step('a', 'named again (no Parse)', c.query({ name: 'x', text: 'SELECT $1::text AS v', values: ['second'] }));
  await step('a', 'named, other name', c.query({ name: 'y', text: 'SELECT $1::int * 2 AS v', values: [21] }));
  await step('a', 'error', c.query('SELECT 1 / $1::int', [0]));
  await step('a', 'named after error', c.query({ name: 'x', text: 'SELECT $1::text AS v', values: ['third'] }));
  await step('a', 'notice', c.query("DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$"));
  await step('a', 'transaction', c.query('BEGIN; CREATE TABLE t (i int); INSERT INTO t VALUES (1), (2); COMMIT'));
  await step('a', 'rows', c.query('SELECT i FROM t ORDER BY i'));
  await step('a', 'syntax error', c.query('SELEC 1'));
  await step('a', 'still fine', c.query("SELECT 'fine' AS v"));
  await c.end();
  emit({ ev: 'ended', who: 'a' });
}

async function connectThenEnd() {
  // Awaited connect, then end.
  const a = await connect('a');
  await a.end();
  emit({ ev: 'ended', who: 'a' });
  // end() right after connect(), before the connection is up.
  const b = new Client();
  b.on('error', (e) => emit({ ev: 'client_error', who: 'b', code: e.code || null, message: e.message }));
  const connecting = b.connect().then(() => 'connected', (e) => `connect failed: ${e.message}`);
  await b.end().then(() => emit({ ev: 'ended', who: 'b' }), (e) => emit({ ev: 'end_error', who: 'b', message: e.message }));
  emit({ ev: 'connect', who: 'b', outcome: await connecting });
  // A client after both: the server (or Tollgate) is still fine.
  const c = await connect('c');
  await step('c', 'after', c.query("SELECT 'c fine' AS v"));
  await c.end();
}

const cases = { queries, connect_then_end: connectThenEnd };
const name = process.argv[2];
if (!cases[name]) {
  process.stderr.write(`usage: node node_cases.js ${Object.keys(cases).join('|')}\n`);
  process.exit(2);
}
cases[name]().catch((e) => {
  emit({ ev: 'failed', kind: e.constructor.name, message: e.message });
  process.exitCode = 1;
});

// Benchmark driver for bench/devsync_bench.py: one fresh @powersync/node client.
//
//   node bench-initial-sync.mjs '<json options>'
//
// Options: {path, api, sync, access_token, refresh_token, expected, expected_counts, writes, warmup}
// (`expected`: books; `expected_counts`: {table: rows}, every table counted and checked).
// 1. Initial sync: opens a new database at `path`, connects and waits for the first complete
//    sync; prints {"event":"first_sync", seconds, rows, max_rss_kb, cpu_seconds}. `seconds` runs
//    from the connect() call to first sync complete; max_rss_kb is this process's peak RSS so far
//    and cpu_seconds its CPU time (all threads) since connect().
// 2. Commit-to-client latency: for each write, POSTs one new book to Papyrus's upload endpoint
//    (what another client's connector does) and times from its 200 (the commit) until the row
//    is in this client's local database; prints {"event":"latency", from_commit_ms, from_request_ms}.
// Everything is timed here, with one monotonic clock, so no IPC sits inside a measurement.
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import {
  PowerSyncDatabase, SyncStreamConnectionMethod, createConsoleLogger, LogLevels
} from '@powersync/node';
import { schema } from './schema.mjs';

const opts = JSON.parse(process.argv[2]);


const session = { accessToken: opts.access_token, refreshToken: opts.refresh_token };
const out = (msg) => process.stdout.write(JSON.stringify(msg) + '\n');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function api(path, init = {}) {
  const call = () => fetch(`${opts.api}${path}`, {
    ...init,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${session.accessToken}` }
  });
  let r = await call();
  if (r.status === 401) {
    const refreshed = await fetch(`${opts.api}/v1/auth/refresh`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ refresh_token: session.refreshToken })
    });
    if (refreshed.ok) {
      const body = await refreshed.json();
      session.accessToken = body.access_token;
      session.refreshToken = body.refresh_token;
      r = await call();
    }
  }
  return r;
}

const connector = {
  async fetchCredentials() {
    const r = await api('/v1/auth/powersync-token', { method: 'POST' });
    if (!r.ok) throw new Error(`powersync-token: HTTP ${r.status}`);
    const { token, expires_in } = await r.json();
    return { endpoint: opts.sync, token, expiresAt: new Date(Date.now() + expires_in * 1000) };
  },
  async uploadData() {} // this client never writes locally
};

const slash = opts.path.lastIndexOf('/');
const db = new PowerSyncDatabase({
  schema,
  database: { dbFilename: opts.path.slice(slash + 1), dbLocation: opts.path.slice(0, slash) },
  logger: createConsoleLogger({ minLevel: LogLevels.error })
});
await db.init();

// -- 1. initial sync ---------------------------------------------------------------------------
const cpuBefore = process.cpuUsage();
const connectStarted = performance.now();
await db.connect(connector, { connectionMethod: SyncStreamConnectionMethod.HTTP, retryDelayMs: 300 });
await db.waitForFirstSync();
const initialSeconds = (performance.now() - connectStarted) / 1000;
const maxRssKb = process.resourceUsage().maxRSS;
const cpu = process.cpuUsage(cpuBefore);
const counts = {};
for (const table of Object.keys(opts.expected_counts ?? { books: opts.expected })) {
  counts[table] = (await db.get(`SELECT count(*) AS n FROM "${table}"`)).n;
}
const rows = Object.values(counts).reduce((a, b) => a + b, 0);
out({
  event: 'first_sync', seconds: initialSeconds, rows, counts, max_rss_kb: maxRssKb,
  cpu_seconds: (cpu.user + cpu.system) / 1e6
});
if (opts.expected !== undefined && counts.books !== opts.expected) {
  out({ event: 'error', error: `expected ${opts.expected} books after first sync, found ${counts.books}` });
}
for (const [table, n] of Object.entries(opts.expected_counts ?? {})) {
  if (counts[table] !== n) out({ event: 'error', error: `expected ${n} rows in ${table}, found ${counts[table]}` });
}

// -- 2. commit-to-client latency ---------------------------------------------------------------
// Each change to `books` (throttleMs 0: no batching delay) checks for the rows being waited on.
const pending = new Map(); // id -> resolve(visibleAt)
let checking = Promise.resolve();
const check = async () => {
  if (pending.size === 0) return;
  const ids = [...pending.keys()];
  const found = await db.getAll(
    `SELECT id FROM books WHERE id IN (${ids.map(() => '?').join(',')})`, ids
  );
  const at = performance.now();
  for (const { id } of found) {
    pending.get(id)?.(at);
    pending.delete(id);
  }
};
db.onChange({ onChange: () => { checking = checking.then(check, check); } }, { tables: ['books'], throttleMs: 0 });

let opId = 0;
async function oneWrite(i) {
  const id = randomUUID();
  const visible = new Promise((resolve) => pending.set(id, resolve));
  const timeout = setTimeout(() => pending.get(id)?.(NaN), 10_000);
  const body = JSON.stringify({
    batch: [{
      op_id: ++opId, tx_id: opId, op: 'PUT', type: 'books', id,
      data: { title: `Latency ${i}`, author: 'Bench', page_count: 100 + i, reading_status: 'not_started' }
    }]
  });
  const requestAt = performance.now();
  const r = await api('/v1/sync/powersync-upload', { method: 'POST', body });
  const committedAt = performance.now();
  if (!r.ok) throw new Error(`upload: HTTP ${r.status} ${await r.text()}`);
  const result = await r.json();
  if (result.status !== 'applied') throw new Error(`upload not applied: ${JSON.stringify(result)}`);
  const visibleAt = await visible;
  clearTimeout(timeout);
  if (Number.isNaN(visibleAt)) throw new Error(`book ${id} never reached the client`);
  return { fromCommit: visibleAt - committedAt, fromRequest: visibleAt - requestAt };
}

const fromCommit = [];
const fromRequest = [];
try {
  for (let i = 0; i < (opts.warmup ?? 3); i++) await oneWrite(-1 - i);
  for (let i = 0; i < (opts.writes ?? 50); i++) {
    const sample = await oneWrite(i);
    fromCommit.push(sample.fromCommit);
    fromRequest.push(sample.fromRequest);
    await sleep(20 + Math.random() * 30); // independent writes, not a pipeline
  }
  out({ event: 'latency', from_commit_ms: fromCommit, from_request_ms: fromRequest });
} catch (error) {
  out({ event: 'error', error: String(error?.stack ?? error) });
}
await db.disconnect();
await db.close();
process.exit(0);

// One official PowerSync Node SDK client, driven by JSON commands on stdin (one per line).
// Every command answers one JSON line on stdout: {"id", "ok": true, "result"} or {"id", "ok": false, "error"}.
// The connector is the app's: credentials from Papyrus's /v1/auth/powersync-token (refreshing the
// Papyrus session once on 401), uploads to /v1/sync/powersync-upload.
import { createInterface } from 'node:readline';
import {
  PowerSyncDatabase, SyncStreamConnectionMethod, createConsoleLogger, LogLevels
} from '@powersync/node';
import { schema, tables } from './schema.mjs';


let db = null;
let session = null; // {api, sync, accessToken, refreshToken}
const counters = { fetchCredentials: 0, refreshes: 0, uploads: 0, uploadErrors: 0, rejected: 0 };

async function api(path, init = {}) {
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${session.accessToken}` };
  return fetch(`${session.api}${path}`, { ...init, headers: { ...headers, ...(init.headers ?? {}) } });
}

async function refreshSession() {
  counters.refreshes++;
  const r = await fetch(`${session.api}/v1/auth/refresh`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ refresh_token: session.refreshToken })
  });
  if (!r.ok) return false;
  const body = await r.json();
  session.accessToken = body.access_token;
  session.refreshToken = body.refresh_token;
  return true;
}

async function withRefresh(call) {
  let r = await call();
  if (r.status === 401 && (await refreshSession())) r = await call();
  return r;
}

const connector = {
  async fetchCredentials() {
    counters.fetchCredentials++;
    const r = await withRefresh(() => api('/v1/auth/powersync-token', { method: 'POST' }));
    if (r.status === 401) return null; // signed out
    if (!r.ok) throw new Error(`powersync-token: HTTP ${r.status}`);
    const { token, expires_in } = await r.json();
    return { endpoint: session.sync, token, expiresAt: new Date(Date.now() + expires_in * 1000) };
  },
  async uploadData(database) {
    const tx = await database.getNextCrudTransaction();
    if (!tx) return;
    const body = JSON.stringify({ batch: tx.crud.map((e) => e.toJSON()) });
    const r = await withRefresh(() => api('/v1/sync/powersync-upload', { method: 'POST', body }));
    if (!r.ok) {
      counters.uploadErrors++;
      throw new Error(`upload: HTTP ${r.status}`); // transient: the SDK retries
    }
    const result = await r.json();
    if (result.status === 'rejected') counters.rejected++;
    counters.uploads++;
    await tx.complete();
  }
};

const commands = {
  async open({ path, api: apiUrl, sync, access_token, refresh_token }) {
    const slash = path.lastIndexOf('/');
    session = { api: apiUrl, sync, accessToken: access_token, refreshToken: refresh_token };
    db = new PowerSyncDatabase({
      schema,
      database: { dbFilename: path.slice(slash + 1), dbLocation: path.slice(0, slash) },
      logger: createConsoleLogger({ minLevel: LogLevels.error })
    });
    await db.init();
    return null;
  },
  async connect() {
    await db.connect(connector, {
      connectionMethod: SyncStreamConnectionMethod.HTTP, retryDelayMs: 300, crudUploadThrottleMs: 20
    });
    return null;
  },
  async waitForFirstSync({ timeout_ms = 30000 } = {}) {
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('first sync timed out')), timeout_ms));
    await Promise.race([db.waitForFirstSync(), timeout]);
    return null;
  },
  async execute({ sql, params = [] }) {
    const result = await db.execute(sql, params);
    return result.rows?._array ?? [];
  },
  async getAll({ sql, params = [] }) { return db.getAll(sql, params); },
  // Every synced table's rows (as schema.json declares the tables), ordered by id.
  async snapshot() {
    const out = {};
    for (const { name } of tables) out[name] = await db.getAll(`SELECT * FROM "${name}" ORDER BY id`);
    return out;
  },
  async status() {
    const s = db.currentStatus;
    return {
      connected: s.connected, hasSynced: s.hasSynced, lastSyncedAt: s.lastSyncedAt ?? null,
      uploading: s.dataFlowStatus.uploading, downloadError: s.dataFlowStatus.downloadError?.message ?? null,
      uploadError: s.dataFlowStatus.uploadError?.message ?? null,
      queue: (await db.getUploadQueueStats()).count, counters
    };
  },
  async setAccessToken({ access_token }) { session.accessToken = access_token; return null; },
  async disconnect() { await db.disconnect(); return null; },
  async close() { await db.close(); db = null; return null; }
};

const out = (msg) => process.stdout.write(JSON.stringify(msg) + '\n');
const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const { id, cmd, args } = JSON.parse(line);
  try {
    out({ id, ok: true, result: await commands[cmd](args ?? {}) });
  } catch (error) {
    out({ id, ok: false, error: String(error?.stack ?? error) });
  }
}
if (db) await db.close();
// Idle keep-alive sockets of fetch would hold the process open for a while; nothing is pending.
process.exit(0);

// Evaluates source rows with the PowerSync service's own sync-config engine
// (@powersync/service-sync-rules), as its replication does after decoding a row:
//
//   node evaluate-rows.mjs < {"yaml": "<sync config>", "rows": [{"table", "record"}]}
//
// Record values are SQLite values; integers come as {"$int": "<digits>"} (the service holds them
// as bigints). Prints one JSON line: [[{bucket, table, id, data}]...] per input row, where `data`
// is the exact row text the service stores and checksums (JSONBig.stringify).

// The service runs on Node 24; Node 20 lacks Object.groupBy, which the compiler calls.
if (!Object.groupBy) {
  Object.groupBy = (items, key) => {
    const groups = Object.create(null);
    let i = 0;
    for (const item of items) (groups[key(item, i++)] ??= []).push(item);
    return groups;
  };
}
const { SqlSyncRules, versionedHydrationState } = await import('@powersync/service-sync-rules');
const { JSONBig } = await import('@powersync/service-jsonbig');

let input = '';
for await (const chunk of process.stdin) input += chunk;
const { yaml, rows } = JSON.parse(input);

const { config } = SqlSyncRules.fromYaml(yaml, { defaultSchema: 'public', throwOnError: true });
const hydrated = config.hydrate({ hydrationState: versionedHydrationState(1) });
const decode = (value) => (value !== null && typeof value === 'object' && '$int' in value ? BigInt(value.$int) : value);
const results = rows.map(({ table, record }) =>
  hydrated
    .evaluateRow({
      sourceTable: { connectionTag: 'default', schema: 'public', name: table },
      record: Object.fromEntries(Object.entries(record).map(([k, v]) => [k, decode(v)]))
    })
    .map((row) => ({ bucket: row.bucket, table: row.table, id: row.id, data: JSONBig.stringify(row.data) }))
);
process.stdout.write(JSON.stringify(results) + '\n');

// Compiles a sync config with the PowerSync service's own compiler (@powersync/service-sync-rules)
// against a source schema, the way the service validates a deployed config.
//
//   node compile-sync-config.mjs < {"yaml": "<sync config text>", "tables": [<source table>...]}
//
// A source table is {name, columns: [{name, pg_type, internal_type}]}, in schema `public`, as the
// service's Postgres module describes its tables. Prints one JSON object:
// {"errors": [{type, message, start, end}], "tables": [{name, columns: [{name, type}]}]}, where
// `errors` holds every error and warning and `tables` is the client schema the compiler derives
// (output table -> column -> text/integer/real).

// The service runs on Node 24; Node 20 lacks Object.groupBy, which the compiler calls.
if (!Object.groupBy) {
  Object.groupBy = (items, key) => {
    const groups = Object.create(null);
    let i = 0;
    for (const item of items) (groups[key(item, i++)] ??= []).push(item);
    return groups;
  };
}
const { SqlSyncRules, StaticSchema, schemaGenerators, sqlTypeName } = await import(
  '@powersync/service-sync-rules'
);

let input = '';
for await (const chunk of process.stdin) input += chunk;
const { yaml, tables } = JSON.parse(input);

const schema = new StaticSchema([{ tag: 'default', schemas: [{ name: 'public', tables }] }]);
const { config, errors } = SqlSyncRules.fromYaml(yaml, {
  schema,
  defaultSchema: 'public',
  throwOnError: false
});
const derived = schemaGenerators.ts.getAllTables(config, schema).map((table) => ({
  name: table.name,
  columns: table.columns.map((column) => ({ name: column.name, type: sqlTypeName(column) }))
}));
process.stdout.write(
  JSON.stringify({
    errors: errors.map((e) => ({
      type: e.type,
      message: e.message,
      start: e.location?.start ?? null,
      end: e.location?.end ?? null
    })),
    tables: derived
  }) + '\n'
);

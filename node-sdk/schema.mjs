// The app's client schema for @powersync/node, built from schema.json: the synced tables as the
// declarations give them (src/papyrus/contract/tables.py). schema.json is generated; regenerate
// it with `python -m papyrus.contract.powersync`, never edit it by hand.
import { readFileSync } from 'node:fs';
import { Schema, Table, column } from '@powersync/node';

export const tables = JSON.parse(readFileSync(new URL('./schema.json', import.meta.url), 'utf8')).tables;

const COLUMN_TYPES = { TEXT: column.text, INTEGER: column.integer, REAL: column.real };

/** The SDK schema of `specs` ({name, columns: [{name, type}], indexes: [{name, columns}]}). */
export function buildSchema(specs, { localOnly = false } = {}) {
  const built = {};
  for (const spec of specs) {
    const columns = {};
    for (const { name, type } of spec.columns) {
      if (!(type in COLUMN_TYPES)) throw new Error(`${spec.name}.${name}: unknown column type ${type}`);
      columns[name] = COLUMN_TYPES[type];
    }
    const indexes = Object.fromEntries(spec.indexes.map((index) => [index.name, index.columns]));
    built[spec.name] = new Table(columns, { indexes, localOnly });
  }
  return new Schema(built);
}

export const schema = buildSchema(tables);

// Prints the SDK's own JSON (Schema.toJSON(), what it hands the core extension) for schema.json:
//   node print-schema.mjs [--local-only]
import { buildSchema, tables } from './schema.mjs';

const localOnly = process.argv.includes('--local-only');
process.stdout.write(JSON.stringify(buildSchema(tables, { localOnly }).toJSON()) + '\n');

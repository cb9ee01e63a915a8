// Copies azd outputs (present in this process's environment when azd runs a hook) into the Values of
// local.settings.json, so `npm start` runs the app locally against the deployed resources with `az login`.
// Other values are kept; local-only settings that would override the deployed ones are removed.
// Usage: node infra/hooks/write-local-settings.mjs [path/to/local.settings.json]
// Plain Node (>= 20), no dependencies: it runs right after `azd provision`, before any `npm install`.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const hooksDir = dirname(fileURLToPath(import.meta.url));
const mapping = JSON.parse(readFileSync(join(hooksDir, 'local-settings-outputs.json'), 'utf8'));
const target = resolve(
  process.argv[2] ?? process.env.LOCAL_SETTINGS_PATH ?? join(hooksDir, '..', '..', 'local.settings.json'),
);
const env = process.env;
const say = (line) => process.stdout.write(`${line}\n`);
const warn = (line) => process.stderr.write(`warning: ${line}\n`);

const outputs = [...new Set(Object.values(mapping.settings))];
const missing = outputs.filter((output) => env[output] === undefined);
if (missing.length === outputs.length) {
  process.stderr.write(
    `No azd outputs in the environment (${missing.join(', ')}): run through azd (azd provision), or export them.\n`,
  );
  process.exit(1);
}

let settings = { IsEncrypted: false, Values: {} };
if (existsSync(target)) {
  try {
    settings = JSON.parse(readFileSync(target, 'utf8'));
  } catch (error) {
    process.stderr.write(`${target} is not valid JSON, left untouched: ${error.message}\n`);
    process.exit(1);
  }
}
const values = { FUNCTIONS_WORKER_RUNTIME: 'node', ...(settings.Values ?? {}) };

const removed = [];
for (const name of mapping.remove) {
  if (name in values) {
    removed.push(name);
    delete values[name];
  }
}
const written = [];
for (const [name, output] of Object.entries(mapping.settings)) {
  const value = env[output];
  if (value === undefined) continue;
  if (value === '') {
    if (name in values) removed.push(name);
    delete values[name];
  } else {
    values[name] = value;
    written.push(name);
  }
}
writeFileSync(target, `${JSON.stringify({ ...settings, Values: values }, null, 2)}\n`);

say(`${target}: set ${written.join(', ')}`);
if (removed.length > 0) say(`  removed (local-only or unset on Azure): ${removed.join(', ')}`);
if (missing.length > 0) warn(`outputs not found, settings left as they were: ${missing.join(', ')}`);
say(
  '  Local runs now read and write the deployed tables: set another TABLES_PREFIX in local.settings.json to keep them apart.',
);
if (env.AUTH_MODE === 'jwt' && !env.AUTH_AUDIENCE) {
  warn(
    'AUTH_MODE=jwt without AUTH_AUDIENCE: the deployed app refuses to start. Run `azd env set AUTH_AUDIENCE <client id of the API app registration>` and `azd provision`.',
  );
}
if (env.AUTH_MODE === 'easyauth' && !env.EASYAUTH_CLIENT_ID) {
  warn(
    'AUTH_MODE=easyauth without EASYAUTH_CLIENT_ID: App Service Authentication answers 401 to every request. Run `azd env set EASYAUTH_CLIENT_ID <client id>` and `azd provision`.',
  );
}

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';

const root = path.join(__dirname, '..', '..');

describe('src/index.ts', () => {
  const source = readFileSync(path.join(root, 'src', 'index.ts'), 'utf8');
  const imports = [...source.matchAll(/^import (?:.* from )?'([^']+)';$/gm)].map((match) => match[1]);

  it('registers every function before it checks the settings', () => {
    const functions = readdirSync(path.join(root, 'src', 'functions'))
      .filter((file) => file.endsWith('.ts'))
      .map((file) => `./functions/${file.replace(/\.ts$/, '')}`)
      .sort();
    assert.deepEqual(imports.filter((name) => name?.startsWith('./functions/')).sort(), functions);
    assert.equal(imports[0], './setup', 'app.setup runs before any registration');
    const check = source.indexOf('validateStartupSettings();');
    assert.ok(check > source.lastIndexOf("import './functions/"), 'the check runs after the last registration');
  });
});

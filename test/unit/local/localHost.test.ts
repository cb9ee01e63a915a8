import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { appEntryFiles } from '../../../local/localHost';

describe('appEntryFiles: the files package.json main names', () => {
  const root = mkdtempSync(path.join(tmpdir(), 'app-entry-'));
  after(() => rmSync(root, { recursive: true, force: true }));

  const withMain = (main: unknown) => writeFileSync(path.join(root, 'package.json'), JSON.stringify({ main }));
  for (const file of ['dist/app/main.js', 'dist/src/index.js', 'dist/src/functions/b.js', 'dist/src/functions/a.js']) {
    mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    writeFileSync(path.join(root, file), '');
  }
  mkdirSync(path.join(root, 'dist/src/functions/helpers.js')); // a folder whose name matches the glob

  it('returns a plain path as the one file', () => {
    withMain('dist/app/main.js');
    assert.deepEqual(appEntryFiles(root), [path.join(root, 'dist/app/main.js')]);
  });

  it('expands {a,b} in order and * by name, files only, as the worker loads them', () => {
    withMain('./dist/src/{index.js,functions/*.js}');
    assert.deepEqual(appEntryFiles(root), [
      path.join(root, 'dist/src/index.js'),
      path.join(root, 'dist/src/functions/a.js'),
      path.join(root, 'dist/src/functions/b.js'),
    ]);
  });

  it('says what is wrong: no main, nothing matching (not built), or a ** it does not support', () => {
    withMain(undefined);
    assert.throws(() => appEntryFiles(root), /has no "main"/);
    withMain('dist/other/*.js');
    assert.throws(() => appEntryFiles(root), /No file matches "main" \(dist\/other\/\*\.js\).*npm run build/);
    withMain('dist/**/*.js');
    assert.throws(() => appEntryFiles(root), /"\*\*" is not supported/);
    rmSync(path.join(root, 'package.json'));
    assert.throws(() => appEntryFiles(root), /No package\.json/);
  });
});

/**
 * src/appLoader.ts, on a small app of its own in a temporary folder: the code cache it writes is used by the next
 * load, and every way a cache can fail to fit (none, another file, another V8, damaged bytes, not a cache at all)
 * still loads the app, compiled from its source. Each load runs in a fresh Node process, as a cold start does.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { APP_FILE, CODE_CACHE_FILE } from '../../src/appLoader';

const LOADER = path.join(__dirname, '..', '..', 'src', 'appLoader.ts');

/** An app with enough code for V8 to cache, a relative require, and a value computed at load. */
function appSource(answer: number): string {
  const functions = Array.from(
    { length: 200 },
    (_, index) => `function f${index}(x) { return x.map((y) => y * ${index} + ${answer}).filter(Boolean).length; }`,
  );
  return [
    "'use strict';",
    ...functions,
    "const helper = require('./helper.js');",
    `exports.answer = helper.twice(${answer / 2});`,
    'exports.file = __filename;',
    'exports.sum = [' + functions.map((_, index) => `f${index}([1, 2])`).join(', ') + '].reduce((a, b) => a + b, 0);',
    'exports.cached = require.cache[__filename] === module;',
  ].join('\n');
}

/**
 * Runs `code` with the loader in a fresh process (under tsx, which turns source maps on: `sourceMaps` says whether
 * they stay on); returns what it printed as JSON.
 */
function inFreshNode(directory: string, code: string, sourceMaps = false): any {
  const script = `
    process.setSourceMapsEnabled(${sourceMaps});
    const loader = require(${JSON.stringify(LOADER)});
    const directory = ${JSON.stringify(directory)};
    ${code}
  `;
  const run = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(run.stdout);
}

const load = (directory: string, sourceMaps = false) =>
  inFreshNode(
    directory,
    `const outcome = loader.loadApp(module, directory);
     process.stdout.write(JSON.stringify({ outcome, exports: module.exports }));`,
    sourceMaps,
  );
const write = (directory: string) =>
  inFreshNode(directory, `process.stdout.write(JSON.stringify(loader.writeCodeCache(directory, module)));`);

describe('appLoader', () => {
  const directory = mkdtempSync(path.join(tmpdir(), 'app-loader-'));
  const cacheFile = path.join(directory, CODE_CACHE_FILE);
  const expected = (answer: number) => ({
    answer,
    file: path.join(directory, APP_FILE),
    sum: Array.from({ length: 200 }, () => 2).reduce((a, b) => a + b, 0),
    cached: true,
  });

  before(() => {
    writeFileSync(path.join(directory, 'helper.js'), 'exports.twice = (x) => 2 * x;\n');
    writeFileSync(path.join(directory, APP_FILE), appSource(42));
  });
  after(() => rmSync(directory, { recursive: true, force: true }));

  it('loads the app from its source when there is no cache', () => {
    assert.deepEqual(load(directory), { outcome: 'missing', exports: expected(42) });
  });

  it('writes a cache that names the file and the V8 it belongs to, which the next load uses', () => {
    assert.equal(write(directory), cacheFile);
    const bytes = readFileSync(cacheFile);
    const header = JSON.parse(bytes.subarray(0, bytes.indexOf(0x0a)).toString('utf8'));
    assert.equal(header.v8, process.versions.v8);
    assert.match(header.appSha256, /^[0-9a-f]{64}$/);
    assert.ok(bytes.length - bytes.indexOf(0x0a) > 1000, 'V8 saved code');
    assert.deepEqual(load(directory), { outcome: 'used', exports: expected(42) });
  });

  it('requires the app the ordinary way when source maps are on, so Node maps its stack traces', () => {
    const run = load(directory, true);
    assert.deepEqual(run, { outcome: 'source-maps', exports: expected(42) });
  });

  it('compiles the source when the cache belongs to another file of the same length', () => {
    const original = readFileSync(path.join(directory, APP_FILE), 'utf8');
    writeFileSync(path.join(directory, APP_FILE), appSource(44));
    assert.equal(readFileSync(path.join(directory, APP_FILE), 'utf8').length, original.length);
    try {
      assert.deepEqual(load(directory), { outcome: 'mismatch', exports: expected(44) });
    } finally {
      writeFileSync(path.join(directory, APP_FILE), original);
    }
  });

  it('compiles the source when the cache was made by another V8', () => {
    const bytes = readFileSync(cacheFile);
    const newline = bytes.indexOf(0x0a);
    const header = JSON.parse(bytes.subarray(0, newline).toString('utf8'));
    try {
      writeFileSync(
        cacheFile,
        Buffer.concat([Buffer.from(`${JSON.stringify({ ...header, v8: '1.2.3' })}\n`), bytes.subarray(newline + 1)]),
      );
      assert.deepEqual(load(directory), { outcome: 'mismatch', exports: expected(42) });
    } finally {
      writeFileSync(cacheFile, bytes);
    }
  });

  it('compiles the source when V8 rejects damaged cache bytes', () => {
    const bytes = readFileSync(cacheFile);
    const damaged = Buffer.from(bytes);
    for (let index = bytes.indexOf(0x0a) + 1; index < damaged.length; index += 7)
      damaged[index] = damaged[index]! ^ 0xff;
    try {
      writeFileSync(cacheFile, damaged);
      assert.deepEqual(load(directory), { outcome: 'rejected', exports: expected(42) });
    } finally {
      writeFileSync(cacheFile, bytes);
    }
  });

  it('compiles the source when the cache file is not a cache', () => {
    const bytes = readFileSync(cacheFile);
    try {
      writeFileSync(cacheFile, 'not a cache');
      assert.deepEqual(load(directory), { outcome: 'unreadable', exports: expected(42) });
    } finally {
      writeFileSync(cacheFile, bytes);
    }
  });

  it('passes an error thrown while the app loads to the caller, leaving no half-loaded module behind', () => {
    const original = readFileSync(path.join(directory, APP_FILE), 'utf8');
    writeFileSync(path.join(directory, APP_FILE), `${original}\nthrow new Error('bad setting');\n`);
    try {
      const run = inFreshNode(
        directory,
        `let message;
         try { loader.loadApp(module, directory); } catch (error) { message = error.message; }
         process.stdout.write(JSON.stringify({ message, cached: require.cache[require('node:path').join(directory, 'app.js')] !== undefined }));`,
      );
      assert.deepEqual(run, { message: 'bad setting', cached: false });
    } finally {
      writeFileSync(path.join(directory, APP_FILE), original);
    }
  });
});

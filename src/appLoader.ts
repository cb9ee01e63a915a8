/**
 * What `dist/app/main.js` (package.json `main`) runs: it loads the app's bundle, `app.js` beside it, with the V8 code
 * cache the build saved beside that, `app.js.cache`, so a cold start deserializes the code V8 compiled while the app
 * loaded at build time instead of parsing and compiling the 1.8 MB bundle again (most of what loading it cost,
 * measured with --cpu-prof; docs/benchmarks.md, "Cold start: the code cache").
 *
 * The cache is used only when it belongs to this very file and this V8: its header names the SHA-256 of the `app.js`
 * it was made from and the V8 version that made it, and V8 itself checks its own version, flags and the source again
 * and rejects a cache that does not fit. In every other case (no cache, another file, another Node, a rejected or
 * damaged cache) the app loads exactly as before, compiled from its source; only the time differs. With source maps
 * on (`--enable-source-maps`), `app.js` is required the ordinary way, since Node maps stack traces only for the
 * modules it compiles itself.
 *
 * Node 22's own compile cache (`module.enableCompileCache`) would write its cache at run time into a directory; the
 * package on Azure is read-only and each instance starts afresh, so it is not used here.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import * as path from 'node:path';
import { Script } from 'node:vm';

/** The bundle of the app, beside main.js. */
export const APP_FILE = 'app.js';
/** Its code cache, beside it. */
export const CODE_CACHE_FILE = 'app.js.cache';
const CACHE_FORMAT = 'app-code-cache/1';

interface CacheHeader {
  format: string;
  /** `process.versions.v8` of the process that made the cache. */
  v8: string;
  /** SHA-256 (hex) of the app.js the cache was made from. */
  appSha256: string;
}

/**
 * How app.js was compiled: `used` (the cache), `rejected` (V8 refused the cache), `mismatch` (the cache names another
 * file or V8), `missing` (no cache file) or `unreadable` (not a cache file of this format).
 */
export type CodeCacheOutcome = 'used' | 'rejected' | 'mismatch' | 'missing' | 'unreadable';

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** The cache's bytes when its header names this source and this V8; otherwise why not. */
function readCodeCache(cacheFile: string, source: string): Buffer | Exclude<CodeCacheOutcome, 'used' | 'rejected'> {
  if (!existsSync(cacheFile)) return 'missing';
  const bytes = readFileSync(cacheFile);
  const newline = bytes.indexOf(0x0a);
  if (newline < 0) return 'unreadable';
  let header: Partial<CacheHeader>;
  try {
    header = JSON.parse(bytes.subarray(0, newline).toString('utf8')) as Partial<CacheHeader>;
  } catch {
    return 'unreadable';
  }
  if (header.format !== CACHE_FORMAT) return 'unreadable';
  if (header.v8 !== process.versions.v8 || header.appSha256 !== sha256(source)) return 'mismatch';
  return bytes.subarray(newline + 1);
}

export interface CompiledApp {
  file: string;
  /** The source compiled, as read once. */
  source: string;
  script: Script;
  codeCache: CodeCacheOutcome;
}

/** Compiles `<directory>/app.js` as Node compiles a CommonJS module, with its code cache when that fits. */
export function compileApp(directory: string): CompiledApp {
  const file = path.join(directory, APP_FILE);
  const source = readFileSync(file, 'utf8');
  const cache = readCodeCache(path.join(directory, CODE_CACHE_FILE), source);
  const script = new Script(Module.wrap(source), {
    filename: file,
    ...(typeof cache === 'string' ? {} : { cachedData: cache }),
  });
  const codeCache = typeof cache === 'string' ? cache : script.cachedDataRejected === true ? 'rejected' : 'used';
  return { file, source, script, codeCache };
}

/** Runs a compiled app.js as the module `require('./app.js')` would make it; returns that module. */
function runApp({ file, script }: CompiledApp, parent: NodeJS.Module): NodeJS.Module {
  const appModule = new Module(file, parent);
  appModule.filename = file;
  appModule.paths = parent.paths;
  require.cache[file] = appModule;
  try {
    const wrapper = script.runInThisContext() as (...args: unknown[]) => void;
    wrapper.call(appModule.exports, appModule.exports, createRequire(file), appModule, file, path.dirname(file));
  } catch (error) {
    delete require.cache[file];
    throw error;
  }
  appModule.loaded = true;
  return appModule;
}

/**
 * Loads the app into `parent` (main.js's module): its exports become main.js's. Returns how it was compiled, or
 * `source-maps` when it was required the ordinary way.
 */
export function loadApp(parent: NodeJS.Module, directory: string): CodeCacheOutcome | 'source-maps' {
  if (process.sourceMapsEnabled !== false) {
    // On, or a Node that cannot tell: Node's own loader, which maps stack traces.
    parent.exports = parent.require(path.join(directory, APP_FILE));
    return 'source-maps';
  }
  const compiled = compileApp(directory);
  parent.exports = runApp(compiled, parent).exports;
  return compiled.codeCache;
}

/**
 * Loads `<directory>/app.js` in this process as main.js would, then saves the code V8 compiled meanwhile as
 * `<directory>/app.js.cache`. Run by the build in a process of its own, with settings that pass the app's checks and
 * the functions-core stand-in in place. Returns the cache file.
 */
export function writeCodeCache(directory: string, parent: NodeJS.Module): string {
  const compiled = compileApp(directory);
  runApp(compiled, parent);
  const header: CacheHeader = {
    format: CACHE_FORMAT,
    v8: process.versions.v8,
    appSha256: sha256(compiled.source),
  };
  const cacheFile = path.join(directory, CODE_CACHE_FILE);
  writeFileSync(
    cacheFile,
    Buffer.concat([Buffer.from(`${JSON.stringify(header)}\n`), compiled.script.createCachedData()]),
  );
  return cacheFile;
}

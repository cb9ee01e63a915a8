/**
 * Bundles the function app with esbuild into dist/app/: `main.js` (what package.json `main` names, so the Functions
 * worker, `func start`, the local host and Azure all load this one file), which loads `app.js`, the app's bundle
 * (with its source map), and `ranks/`, the js-tiktoken rank tables, copied beside it. The bundle needs no
 * node_modules at run time: the deployment package is host.json, package.json and dist/app/ (see .funcignore and
 * docs/deploy.md).
 *
 * - `main.js` is src/appLoader.ts: it compiles `app.js` with `app.js.cache`, the V8 code cache this build saves by
 *   loading app.js once in a process of its own (this Node, placeholder settings), when that cache names this app.js
 *   and this V8; otherwise (or with source maps on) app.js loads from its source as any module does. So `import()`
 *   in the app is bundled as `require` (node:vm runs `import()` only behind a flag on Node 20).
 *
 * - The entry imports src/index.ts, then every src/functions/*.ts in name order: the order the worker loaded the
 *   tsc output in when `main` was `dist/src/{index.js,functions/*.js}`.
 * - `@azure/functions-core` stays a `require`: the worker provides it (the local host installs a stand-in).
 * - The packages in LAZY_MODULES (@azure/identity, jose, the Octokit packages, @azure/storage-queue, Ajv,
 *   standardwebhooks) are bundles of their own in `lazy/` beside `main.js`, required on first use: the sources reach
 *   them only through `import()` or a `require` inside a function, and a static import of one fails the build. Inside
 *   main.js V8 would still compile all of their code at every cold start (most of a cold start was compiling the 4.9
 *   MB bundle, measured with --cpu-prof) although the first turn of an app with key or no auth needs none of them.
 *   Each lazy bundle holds its own copy of what it shares with main.js (@azure/core-rest-pipeline...): code that
 *   checks errors from them uses their name, not `instanceof` (tableConversationStore.ts isUnavailable).
 * - The source modules in LAZY_SOURCES (src/openapi/document.ts, needed by GET /api/openapi.json alone) are bundles
 *   of their own in `lazy/` too, reached only through `await import('<path>.js')`.
 * - The rank tables (2.3 MB for o200k_base, 1.1 MB for cl100k_base) stay separate files, required on first use from
 *   `./ranks/`: inside the bundle, V8 would scan all 3.4 MB at every cold start for nothing (measured: 16-22 ms
 *   more before the host listens, nothing gained on the first turn). Beside each, `<encoding>.index.bin`: the token
 *   index the tokenizer would build from it on the first turn, made here once (src/adapters/prebuiltRankIndex.ts).
 *
 * - The telemetry SDKs are bundles of their own beside `main.js`, each required only when its setting is present:
 *   `telemetry-azure-monitor.js` (the Azure Monitor distro, src/adapters/telemetry/azureMonitorSdk.ts) and
 *   `telemetry-otlp.js` (the OpenTelemetry Node SDK, src/adapters/telemetry/otlpSdk.ts). An app with telemetry off
 *   never reads or parses the megabytes they take, and an OTLP app never parses the distro.
 *
 * Run by `npm run build` after tsc (`node dist/scripts/bundle.js`); tests call `bundleApp` with their own outDir.
 */
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { spawnSync } from 'node:child_process';
import { builtinModules } from 'node:module';
import * as path from 'node:path';
import { build, type BuildOptions, type Message, type Metafile, type Plugin } from 'esbuild';
import type { Tiktoken, TiktokenBPE } from 'js-tiktoken/lite' with { 'resolution-mode': 'import' };
import { indexFileName, serializeRankIndex, sha256 } from '../src/adapters/prebuiltRankIndex';
import { APP_FILE, CODE_CACHE_FILE } from '../src/appLoader';
import { indexRanksFast } from '../src/adapters/tiktokenRanks';

/** The worker's built-in module, provided at run time. */
export const FUNCTIONS_CORE_MODULE = '@azure/functions-core';
/** Where `npm run build` writes the bundle, relative to the repository root; package.json `main` names it. */
export const APP_BUNDLE_DIR = path.join('dist', 'app');
export const APP_BUNDLE_FILE = 'main.js';
/** Beside the bundle: the bundle requires `./ranks/<file>` for `js-tiktoken/ranks/<encoding>`. */
export const RANKS_DIR = 'ranks';
/** Where src/adapters/telemetry/index.ts finds each SDK module. */
const TELEMETRY_DIR = path.join('src', 'adapters', 'telemetry');
/**
 * Beside the bundle: the telemetry SDKs, by the module src/adapters/telemetry/index.ts imports (`./<module>`), each
 * loaded only when configured.
 */
export const TELEMETRY_BUNDLE_FILES = {
  azureMonitorSdk: 'telemetry-azure-monitor.js',
  otlpSdk: 'telemetry-otlp.js',
} as const;

const RANKS_MODULE = /^js-tiktoken\/ranks\/[\w-]+$/;

/** Beside the bundle: one bundle per lazily loaded package, `lazy/<file>`. */
export const LAZY_DIR = 'lazy';

/**
 * Packages loaded on first use, each bundled into `lazy/<file>`, and how the sources reach them: `import`
 * (`await import('x')`: the bundle is the package's ES module build, as main.js had it) or `require` (a `require('x')`
 * inside a function: its CommonJS build, what tsx and the tsc output load too).
 */
export const LAZY_MODULES: Readonly<Record<string, { file: string; reach: 'import' | 'require' }>> = {
  '@azure/identity': { file: 'identity.js', reach: 'import' },
  '@azure/storage-queue': { file: 'storage-queue.js', reach: 'require' },
  '@octokit/auth-app': { file: 'octokit-auth-app.js', reach: 'import' },
  '@octokit/core': { file: 'octokit-core.js', reach: 'import' },
  'ajv/dist/2020': { file: 'ajv.js', reach: 'require' },
  jose: { file: 'jose.js', reach: 'import' },
  standardwebhooks: { file: 'standardwebhooks.js', reach: 'require' },
};

/**
 * Source modules loaded on first use, each bundled into `lazy/<file>` with what it imports (its own copy of the
 * modules it shares with main.js: only pure code and constants, no state the app keeps): reached only through
 * `await import('<relative path>.js')`, as a LAZY_MODULES package is. src/openapi/document.ts (the OpenAPI generator,
 * its response schemas and zod's JSON Schema output) is needed only by GET /api/openapi.json; in main.js, V8 compiled
 * it and zod built its schemas at every cold start.
 */
export const LAZY_SOURCES: Readonly<Record<string, { file: string }>> = {
  'src/openapi/document.ts': { file: 'openapi.js' },
};

export interface BundleOptions {
  /** The repository root: it holds src/ and tsconfig.json. Default: found from this file. */
  root?: string;
  /** Default: dist/app under the root. Emptied first. */
  outDir?: string;
  /** Print esbuild's warnings and errors (the build fails on errors either way). Default true. */
  log?: boolean;
}

export interface BundleResult {
  /** The lazily loaded packages' bundles, `<outDir>/lazy/<file>`, by package. */
  lazy: Record<string, string>;
  /** The lazily loaded source modules' bundles, `<outDir>/lazy/<file>`, by source (LAZY_SOURCES). */
  lazySources: Record<string, string>;
  outDir: string;
  /** What package.json `main` names, `<outDir>/main.js`: the loader of the app (src/appLoader.ts). */
  mainFile: string;
  /** The bundle of the app itself, `<outDir>/app.js`, which main.js loads. */
  appFile: string;
  /** Its V8 code cache, `<outDir>/app.js.cache`, made by loading it once in a process of its own. */
  codeCacheFile: string;
  /** The telemetry SDKs' bundles, `<outDir>/telemetry-*.js`. */
  telemetryFiles: string[];
  /** The source modules the entry imports, in load order (relative to the root). */
  entryModules: string[];
  /** What the bundle still requires at run time besides Node built-ins: the worker module and `./ranks/*.cjs`. */
  externals: string[];
  /** The rank files copied to `<outDir>/ranks/`, by the module name the app requires. */
  ranks: Record<string, string>;
  /** The saved token index of each (`<outDir>/ranks/<encoding>.index.bin`), by the same module name. */
  rankIndexes: Record<string, string>;
  warnings: Message[];
  metafile: Metafile;
}

/** The repository root, whether this runs from scripts/ (tsx) or dist/scripts/ (compiled). */
function findRoot(start: string): string {
  for (let directory = start; ; directory = path.dirname(directory)) {
    if (existsSync(path.join(directory, 'tsconfig.json')) && existsSync(path.join(directory, 'src', 'index.ts'))) {
      return directory;
    }
    if (path.dirname(directory) === directory) throw new Error(`No repository root above ${start}.`);
  }
}

/** src/index.ts, then src/functions/*.ts by name: the modules that call app.setup and app.http. */
export function appEntryModules(root: string): string[] {
  const functions = readdirSync(path.join(root, 'src', 'functions'))
    .filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'))
    .sort()
    .map((file) => `src/functions/${file}`);
  return ['src/index.ts', ...functions];
}

/** Packages whose ESM build cannot run from a CommonJS bundle: their CommonJS build is bundled instead. */
const COMMONJS_BUILDS = /^@azure\/storage-queue$/;

/**
 * `@azure/storage-queue`'s ESM build pulls in `@azure/storage-common`'s ESM crc64 module, which builds `require` from
 * `import.meta.url`: empty in a CommonJS bundle, so loading the app would throw. An `import` of such a package is
 * resolved as a `require` would be, to the package's own CommonJS build.
 */
function commonJsBuilds(): Plugin {
  return {
    name: 'commonjs-builds',
    setup(pluginBuild) {
      pluginBuild.onResolve({ filter: COMMONJS_BUILDS }, async (args) => {
        if (args.pluginData === 'resolving-commonjs' || args.kind === 'require-call') return undefined;
        const resolved = await pluginBuild.resolve(args.path, {
          kind: 'require-call',
          resolveDir: args.resolveDir,
          importer: args.importer,
          pluginData: 'resolving-commonjs',
        });
        return resolved.errors.length > 0 ? { errors: resolved.errors } : { path: resolved.path };
      });
    },
  };
}

/**
 * Leaves `require('js-tiktoken/ranks/<encoding>')` as `require('./ranks/<file>.cjs')` and remembers which file that
 * is, so it can be copied beside the bundle. esbuild resolves the module itself (the package's `require` export).
 */
function externalRanks(found: Map<string, string>, ranksDir = `./${RANKS_DIR}`): Plugin {
  return {
    name: 'external-ranks',
    setup(pluginBuild) {
      pluginBuild.onResolve({ filter: RANKS_MODULE }, async (args) => {
        if (args.pluginData === 'resolving-ranks') return undefined; // our own lookup below
        const resolved = await pluginBuild.resolve(args.path, {
          kind: args.kind,
          resolveDir: args.resolveDir,
          importer: args.importer,
          pluginData: 'resolving-ranks',
        });
        if (resolved.errors.length > 0) return { errors: resolved.errors };
        found.set(args.path, resolved.path);
        return { path: `${ranksDir}/${path.basename(resolved.path)}`, external: true };
      });
    },
  };
}

/**
 * Leaves `import('x')` / `require('x')` of a LAZY_MODULES package as `require('./lazy/<file>')`; any other way of
 * reaching one (a static import would evaluate it at load) fails the build, naming the importer.
 */
function externalLazyModules(lazyDir = `./${LAZY_DIR}`): Plugin {
  const names = Object.keys(LAZY_MODULES).map((name) => name.replace(/[/\\^$*+?.()|[\]{}]/g, '\\$&'));
  return {
    name: 'external-lazy-modules',
    setup(pluginBuild) {
      pluginBuild.onResolve({ filter: new RegExp(`^(${names.join('|')})$`) }, (args) => {
        const lazy = LAZY_MODULES[args.path]!;
        const kind = lazy.reach === 'import' ? 'dynamic-import' : 'require-call';
        if (args.kind !== kind) {
          const how =
            lazy.reach === 'import' ? `await import('${args.path}')` : `a require('${args.path}') in a function`;
          return {
            errors: [
              {
                text: `${args.importer} must reach ${args.path} lazily, through ${how} (scripts/bundle.ts LAZY_MODULES).`,
              },
            ],
          };
        }
        return { path: `${lazyDir}/${lazy.file}`, external: true };
      });
    },
  };
}

/**
 * Leaves `import('<path>.js')` of a LAZY_SOURCES module as `require('./lazy/<file>')`; a static import of one (or a
 * `require`) fails the build, naming the importer.
 */
function externalLazySources(root: string): Plugin {
  const sources = new Map(
    Object.entries(LAZY_SOURCES).map(([source, { file }]) => [path.resolve(root, source), file] as const),
  );
  const basenames = [...sources.keys()].map((source) =>
    path.basename(source, '.ts').replace(/[/\\^$*+?.()|[\]{}]/g, '\\$&'),
  );
  return {
    name: 'external-lazy-sources',
    setup(pluginBuild) {
      pluginBuild.onResolve(
        { filter: new RegExp(`^\\.{1,2}/(.*/)?(${basenames.join('|')})(\\.js|\\.ts)?$`) },
        (args) => {
          const resolved = path.resolve(args.resolveDir, args.path).replace(/\.js$/, '');
          const target = path.extname(resolved) === '.ts' ? resolved : `${resolved}.ts`;
          const file = sources.get(target);
          if (file === undefined) return undefined;
          if (args.kind !== 'dynamic-import') {
            const relative = (file: string) => path.relative(root, file).split(path.sep).join('/');
            const specifier = args.path.replace(/(\.[jt]s)?$/, '.js');
            return {
              errors: [
                {
                  text: `${relative(args.importer)} must reach ${relative(target)} lazily, through await import('${specifier}') (scripts/bundle.ts LAZY_SOURCES).`,
                },
              ],
            };
          }
          return { path: `./${LAZY_DIR}/${file}`, external: true };
        },
      );
    },
  };
}

/** Leaves src/adapters/telemetry/index.ts's `import('./<sdk module>')` as `require('./telemetry-*.js')`. */
function externalTelemetrySdks(root: string): Plugin {
  const index = path.join(root, TELEMETRY_DIR, 'index.ts');
  return {
    name: 'external-telemetry-sdks',
    setup(pluginBuild) {
      pluginBuild.onResolve({ filter: /^\.\/\w+Sdk(\.js)?$/ }, (args) => {
        const module = args.path.replace(/^\.\//, '').replace(/\.js$/, '');
        const file = (TELEMETRY_BUNDLE_FILES as Record<string, string>)[module];
        return path.resolve(args.importer) === index && file ? { path: `./${file}`, external: true } : undefined;
      });
    },
  };
}

export async function bundleApp(options: BundleOptions = {}): Promise<BundleResult> {
  const root = options.root ?? findRoot(__dirname);
  const outDir = path.resolve(root, options.outDir ?? APP_BUNDLE_DIR);
  const mainFile = path.join(outDir, APP_BUNDLE_FILE);
  const appFile = path.join(outDir, APP_FILE);
  const entryModules = appEntryModules(root);
  const ranks = new Map<string, string>();

  // What every bundle here is built with.
  const shared = {
    // Paths in the metafile (inputs, outputs) are relative to the root.
    absWorkingDir: root,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    // Names stay as written: errors take theirs from the class (`new.target.name`), and bundling would otherwise
    // rename classes that collide across packages (openai's NotFoundError became NotFoundError2).
    keepNames: true,
    // Stack traces map back to src/*.ts with `node --enable-source-maps`; the sources themselves stay out.
    sourcemap: 'linked',
    sourcesContent: false,
    logLevel: options.log === false ? 'silent' : 'warning',
  } satisfies BuildOptions;

  rmSync(outDir, { recursive: true, force: true });
  const result = await build({
    stdin: {
      contents: entryModules.map((file) => `import './${file.replace(/\.ts$/, '')}';`).join('\n'),
      resolveDir: root,
      sourcefile: 'app-entry.ts',
      loader: 'ts',
    },
    outfile: appFile,
    ...shared,
    tsconfig: path.join(root, 'tsconfig.json'),
    // `import()` becomes a `require` (every file it reaches is CommonJS): main.js compiles app.js with node:vm, where
    // Node 20 supports `import()` only behind an experimental flag.
    supported: { 'dynamic-import': false },
    external: [FUNCTIONS_CORE_MODULE],
    plugins: [
      externalRanks(ranks),
      externalLazyModules(),
      externalLazySources(root),
      commonJsBuilds(),
      externalTelemetrySdks(root),
    ],
    metafile: true,
  });

  // main.js: src/appLoader.ts, which loads app.js with its code cache.
  const loader = await build({
    stdin: {
      contents: "require('./src/appLoader').loadApp(module, __dirname);",
      resolveDir: root,
      sourcefile: 'app-loader.js',
      loader: 'js',
    },
    outfile: mainFile,
    ...shared,
    tsconfig: path.join(root, 'tsconfig.json'),
  });

  const telemetryFiles: string[] = [];
  const telemetryWarnings: Message[] = [];
  for (const [module, file] of Object.entries(TELEMETRY_BUNDLE_FILES)) {
    const outfile = path.join(outDir, file);
    const telemetry = await build({
      entryPoints: [path.join(root, TELEMETRY_DIR, `${module}.ts`)],
      outfile,
      // The Azure Monitor distro's ES module build reads import.meta.url (to find its folder and the worker module):
      // in a CommonJS bundle that is this file's URL.
      banner: { js: "const __bundleUrl = require('node:url').pathToFileURL(__filename).href;" },
      define: { 'import.meta.url': '__bundleUrl' },
      ...shared,
      tsconfig: path.join(root, 'tsconfig.json'),
    });
    telemetryFiles.push(outfile);
    telemetryWarnings.push(...telemetry.warnings);
  }

  const lazy: Record<string, string> = {};
  const lazyBuilds = await Promise.all(
    Object.entries(LAZY_MODULES).map(([name, { file, reach }]) => {
      lazy[name] = path.join(outDir, LAZY_DIR, file);
      return build({
        stdin: {
          contents: reach === 'import' ? `export * from '${name}';` : `module.exports = require('${name}');`,
          resolveDir: root,
          sourcefile: `lazy-${file}`,
          loader: 'js',
        },
        outfile: lazy[name],
        ...shared,
        plugins: [commonJsBuilds()],
      });
    }),
  );

  const lazySources: Record<string, string> = {};
  const lazySourceWarnings: Message[] = [];
  for (const [source, { file }] of Object.entries(LAZY_SOURCES)) {
    lazySources[source] = path.join(outDir, LAZY_DIR, file);
    const lazySource = await build({
      entryPoints: [path.join(root, source)],
      outfile: lazySources[source],
      ...shared,
      tsconfig: path.join(root, 'tsconfig.json'),
      // What it imports is bundled in, but a rank table or a lazy package stays the file main.js requires too,
      // named from lazy/.
      plugins: [externalRanks(ranks, `../${RANKS_DIR}`), externalLazyModules('.'), commonJsBuilds()],
    });
    lazySourceWarnings.push(...lazySource.warnings);
  }

  mkdirSync(path.join(outDir, RANKS_DIR), { recursive: true });
  const copiedRanks: Record<string, string> = {};
  const rankIndexes: Record<string, string> = {};
  for (const [moduleName, file] of [...ranks].sort(([a], [b]) => a.localeCompare(b))) {
    const target = path.join(outDir, RANKS_DIR, path.basename(file));
    copyFileSync(file, target);
    copiedRanks[moduleName] = target;
    rankIndexes[moduleName] = writeRankIndex(target);
  }

  const codeCacheFile = writeAppCodeCache(outDir);

  const builtins = new Set(builtinModules.flatMap((name) => [name, `node:${name}`]));
  const imports = Object.values(result.metafile.outputs).flatMap((entry) => entry.imports);
  const externals = [
    ...new Set(imports.filter((entry) => entry.external && !builtins.has(entry.path)).map((entry) => entry.path)),
  ].sort();

  return {
    outDir,
    mainFile,
    appFile,
    codeCacheFile,
    telemetryFiles,
    entryModules,
    externals,
    ranks: copiedRanks,
    rankIndexes,
    lazy,
    lazySources,
    warnings: [
      ...result.warnings,
      ...loader.warnings,
      ...telemetryWarnings,
      ...lazyBuilds.flatMap((lazyBuild) => lazyBuild.warnings),
      ...lazySourceWarnings,
    ],
    metafile: result.metafile,
  };
}

/** Settings that pass the app's checks at load; nothing is contacted while it loads. */
const PLACEHOLDER_SETTINGS = {
  TABLES_CONNECTION_STRING: 'UseDevelopmentStorage=true',
  AZURE_OPENAI_ENDPOINT: 'http://127.0.0.1:9',
  AZURE_OPENAI_API_KEY: 'placeholder',
  AZURE_OPENAI_DEPLOYMENT: 'chat',
  AZURE_OPENAI_MODEL: 'gpt-4o',
  AUTH_MODE: 'none',
};

const WRITE_CODE_CACHE = `
const [directory, functionsCore, appLoader] = process.argv.slice(1);
const standIn = require(functionsCore).installFunctionsCoreStandIn();
standIn.systemLog = () => {};
standIn.loadingModule = require('node:path').join(directory, ${JSON.stringify(APP_FILE)});
require(appLoader).writeCodeCache(directory, module);
process.exit(0);
`;

/**
 * Loads `<outDir>/app.js` once in a Node process of its own (this Node, with placeholder settings and the local
 * host's functions-core stand-in, so it registers its functions as under the worker) and saves the code V8 compiled
 * meanwhile as `app.js.cache` (src/appLoader.ts writeCodeCache). Fails the build if the app does not load.
 */
export function writeAppCodeCache(outDir: string): string {
  // From scripts/ under tsx, the sources; from dist/scripts/, their tsc output.
  const extension = path.extname(__filename);
  const base = path.resolve(__dirname, '..');
  const loaded = spawnSync(
    process.execPath,
    [
      ...(extension === '.ts' ? ['--import', 'tsx'] : []),
      '-e',
      WRITE_CODE_CACHE,
      outDir,
      path.join(base, 'local', 'host', `functionsCore${extension}`),
      path.join(base, 'src', `appLoader${extension}`),
    ],
    { cwd: base, env: { PATH: process.env.PATH ?? '', ...PLACEHOLDER_SETTINGS }, encoding: 'utf8' },
  );
  const cacheFile = path.join(outDir, CODE_CACHE_FILE);
  if (loaded.status !== 0 || !existsSync(cacheFile)) {
    throw new Error(`Loading ${APP_FILE} to make its code cache failed (${loaded.status}):\n${loaded.stderr}`);
  }
  return cacheFile;
}

/**
 * Saves the token index of the ranks file `ranksFile` (`<dir>/<encoding>.cjs`) beside it, made by the tokenizer's own
 * code from that very file; returns the index file. Fails the build if the index cannot be made from the ranks.
 */
export function writeRankIndex(ranksFile: string): string {
  const encoding = path.basename(ranksFile, '.cjs');
  /* eslint-disable @typescript-eslint/no-require-imports -- the library's CommonJS build and the ranks file itself */
  const ranks = require(ranksFile) as TiktokenBPE;
  delete require.cache[require.resolve(ranksFile)]; // a build in a test process leaves the bundle's files unloaded
  const { Tiktoken: TiktokenClass } = require('js-tiktoken/lite') as { Tiktoken: typeof Tiktoken };
  /* eslint-enable @typescript-eslint/no-require-imports */
  const index = indexRanksFast(TiktokenClass, ranks);
  if (!index) throw new Error(`The token index of ${ranksFile} could not be made from its ranks.`);
  const target = path.join(path.dirname(ranksFile), indexFileName(encoding));
  writeFileSync(
    target,
    serializeRankIndex(index, {
      encoding,
      ranksSha256: sha256(readFileSync(ranksFile)),
      patStr: ranks.pat_str,
      specialTokens: ranks.special_tokens,
    }),
  );
  return target;
}

function megabytes(file: string): string {
  return `${(statSync(file).size / 1024 / 1024).toFixed(1)} MB`;
}

async function main(): Promise<void> {
  const started = performance.now();
  const bundle = await bundleApp();
  const relative = (file: string) => path.relative(process.cwd(), file);
  console.log(
    `Bundled ${bundle.entryModules.length} app modules into ${relative(bundle.appFile)} (${megabytes(bundle.appFile)}, ` +
      `code cache ${megabytes(bundle.codeCacheFile)}), loaded by ${relative(bundle.mainFile)}, ` +
      `in ${(performance.now() - started).toFixed(0)} ms; requires at run time: ${bundle.externals.join(', ')}.`,
  );
  for (const file of [...Object.values(bundle.ranks), ...Object.values(bundle.rankIndexes)]) {
    console.log(`  ${relative(file)} (${megabytes(file)})`);
  }
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
    process.exitCode = 1;
  });
}

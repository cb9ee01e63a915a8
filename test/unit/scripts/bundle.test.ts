/**
 * The esbuild bundle of the app (scripts/bundle.ts), built here into a temporary folder: what it requires at run
 * time, that it registers exactly the functions the sources register, that loading it evaluates neither a rank table
 * nor @azure/identity nor jose, and that .funcignore turns the repository into a package of the bundle alone.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  APP_BUNDLE_DIR,
  APP_BUNDLE_FILE,
  appEntryModules,
  bundleApp,
  FUNCTIONS_CORE_MODULE,
  LAZY_DIR,
  LAZY_MODULES,
  LAZY_SOURCES,
  type BundleResult,
} from '../../../scripts/bundle';
import { buildOpenApiDocument, defaultOpenApiOptions } from '../../../src/openapi/document';
import { loadPrebuiltRankIndex } from '../../../src/adapters/prebuiltRankIndex';
import { APP_FILE, CODE_CACHE_FILE, compileApp } from '../../../src/appLoader';
import { collectRegistrations, type FunctionRegistration } from '../../../local/host/functionsCore';
import { functionModules, REPO_ROOT } from '../../support/app';

const RANK_FILE = /[\\/]ranks[\\/][\w-]+\.c?js$/;

/** What the host learns about a function: its name and HTTP trigger. */
function describeRegistrations(registrations: FunctionRegistration[]) {
  return registrations
    .map(({ metadata }) => {
      const trigger = Object.values(metadata.bindings).find((binding) => binding.type === 'httpTrigger');
      return {
        name: metadata.name,
        route: trigger?.route,
        methods: trigger?.methods,
        authLevel: trigger?.authLevel,
        bindings: Object.keys(metadata.bindings).sort(),
      };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
}

describe('bundleApp', () => {
  const outDir = mkdtempSync(path.join(tmpdir(), 'app-bundle-'));
  let bundle: BundleResult;

  before(async () => {
    // Valid settings: the app checks them as it loads (src/index.ts). Nothing is contacted at load.
    Object.assign(process.env, {
      TABLES_CONNECTION_STRING: 'UseDevelopmentStorage=true',
      AZURE_OPENAI_ENDPOINT: 'http://127.0.0.1:9',
      AZURE_OPENAI_API_KEY: 'unused',
      AZURE_OPENAI_DEPLOYMENT: 'chat',
      AZURE_OPENAI_MODEL: 'gpt-4o-mini',
      AUTH_MODE: 'none',
    });
    bundle = await bundleApp({ outDir, log: false });
  });

  after(() => rmSync(outDir, { recursive: true, force: true }));

  it('writes main.js, the app in app.js with its source map and code cache, and the rank tables, with no esbuild warning', () => {
    assert.deepEqual(bundle.warnings, []);
    assert.equal(bundle.mainFile, path.join(outDir, APP_BUNDLE_FILE));
    assert.ok(existsSync(bundle.mainFile));
    assert.equal(bundle.appFile, path.join(outDir, APP_FILE));
    assert.equal(bundle.codeCacheFile, path.join(outDir, CODE_CACHE_FILE));
    assert.match(readFileSync(bundle.appFile, 'utf8'), /\/\/# sourceMappingURL=app\.js\.map\s*$/);
    const map = JSON.parse(readFileSync(`${bundle.appFile}.map`, 'utf8')) as { sources: string[] };
    assert.ok(map.sources.some((source) => source.endsWith('src/functions/sendMessage.ts')));
    assert.deepEqual(Object.keys(bundle.ranks), ['js-tiktoken/ranks/cl100k_base', 'js-tiktoken/ranks/o200k_base']);
    assert.deepEqual(Object.keys(bundle.rankIndexes), Object.keys(bundle.ranks));
    for (const encoding of ['cl100k_base', 'o200k_base']) {
      assert.equal(
        bundle.rankIndexes[`js-tiktoken/ranks/${encoding}`],
        path.join(outDir, 'ranks', `${encoding}.index.bin`),
      );
      assert.ok(loadPrebuiltRankIndex(encoding, path.join(outDir, 'ranks')), `${encoding}: the saved index is read`);
    }
    for (const [moduleName, file] of Object.entries(bundle.ranks)) {
      const original = require.resolve(moduleName);
      assert.equal(readFileSync(file, 'utf8'), readFileSync(original, 'utf8'), `${file} is a copy of ${original}`);
    }
  });

  it('makes main.js the loader of app.js, and a code cache of app.js that V8 accepts', () => {
    const main = readFileSync(bundle.mainFile, 'utf8');
    assert.match(main, /\/\/ src\/appLoader\.ts\n/);
    assert.ok(main.length < 20_000, `main.js is the loader alone (${main.length} characters)`);
    const compiled = compileApp(outDir);
    assert.equal(compiled.codeCache, 'used');
    assert.equal(compiled.script.cachedDataRejected, false);
  });

  it('is what package.json main names when npm run build writes it', () => {
    const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { main: string };
    assert.equal(path.normalize(pkg.main), path.join(APP_BUNDLE_DIR, APP_BUNDLE_FILE));
  });

  it('imports src/index.ts first, then every function module in name order', () => {
    const entries = appEntryModules(REPO_ROOT);
    assert.equal(entries[0], 'src/index.ts');
    const functions = functionModules().functionModules.map((file) => path.relative(REPO_ROOT, file).split(path.sep));
    assert.deepEqual(
      entries.slice(1),
      functions.map((parts) => parts.join('/')),
    );
    assert.deepEqual(bundle.entryModules, entries);
  });

  it('requires nothing at run time but Node built-ins, the worker module and its own rank and telemetry files', () => {
    const builtins = new Set(builtinModules.flatMap((name) => [name, `node:${name}`]));
    const externals = Object.values(bundle.metafile.outputs)
      .flatMap((output) => output.imports)
      .filter((entry) => entry.external && !builtins.has(entry.path));
    // Every one a `require`: app.js is compiled with node:vm, so the build turns `import()` into `require` too.
    assert.deepEqual([...new Set(externals.map((entry) => `${entry.kind} ${entry.path}`))].sort(), [
      'require-call ./lazy/ajv.js',
      'require-call ./lazy/identity.js',
      'require-call ./lazy/jose.js',
      'require-call ./lazy/octokit-auth-app.js',
      'require-call ./lazy/octokit-core.js',
      'require-call ./lazy/openapi.js',
      'require-call ./lazy/standardwebhooks.js',
      'require-call ./lazy/storage-queue.js',
      'require-call ./ranks/cl100k_base.cjs',
      'require-call ./ranks/o200k_base.cjs',
      'require-call ./telemetry-azure-monitor.js',
      'require-call ./telemetry-otlp.js',
      `require-call ${FUNCTIONS_CORE_MODULE}`,
    ]);
    assert.deepEqual(bundle.externals, [
      './lazy/ajv.js',
      './lazy/identity.js',
      './lazy/jose.js',
      './lazy/octokit-auth-app.js',
      './lazy/octokit-core.js',
      './lazy/openapi.js',
      './lazy/standardwebhooks.js',
      './lazy/storage-queue.js',
      './ranks/cl100k_base.cjs',
      './ranks/o200k_base.cjs',
      './telemetry-azure-monitor.js',
      './telemetry-otlp.js',
      FUNCTIONS_CORE_MODULE,
    ]);
    for (const external of bundle.externals.filter((name) => name.startsWith('./'))) {
      assert.ok(existsSync(path.join(outDir, external)), `${external} is beside the bundle`);
    }
  });

  it('leaves the OpenTelemetry SDK and the Azure Monitor distro out of main.js, each in a file of its own beside it', () => {
    const inMain = Object.keys(bundle.metafile.inputs);
    for (const prefix of ['node_modules/@opentelemetry/sdk-', 'node_modules/@azure/monitor-opentelemetry']) {
      assert.ok(!inMain.some((file) => file.startsWith(prefix)), `${prefix} is not in main.js`);
    }
    assert.deepEqual(bundle.telemetryFiles, [
      path.join(outDir, 'telemetry-azure-monitor.js'),
      path.join(outDir, 'telemetry-otlp.js'),
    ]);
    const [azureMonitor, otlp] = bundle.telemetryFiles.map((file) => readFileSync(file, 'utf8'));
    assert.match(azureMonitor!, /node_modules\/@azure\/monitor-opentelemetry\//);
    // An app exporting over OTLP never parses the distro.
    assert.match(otlp!, /node_modules\/@opentelemetry\/sdk-node\//);
    assert.doesNotMatch(otlp!, /node_modules\/@azure\/monitor-opentelemetry\//);
  });

  it('leaves the lazily loaded packages out of main.js, each in a bundle of its own in lazy/', () => {
    const inMain = Object.keys(bundle.metafile.inputs);
    const lazyPackages = [
      'node_modules/@azure/identity/',
      'node_modules/@azure/msal-node/',
      'node_modules/@azure/storage-queue/',
      'node_modules/@azure/storage-common/',
      'node_modules/@octokit/',
      'node_modules/ajv/',
      'node_modules/jose/',
      'node_modules/standardwebhooks/',
    ];
    for (const prefix of lazyPackages) {
      assert.ok(!inMain.some((file) => file.startsWith(prefix)), `${prefix} is not in main.js`);
    }
    assert.deepEqual(Object.keys(bundle.lazy).sort(), Object.keys(LAZY_MODULES).sort());
    for (const [name, file] of Object.entries(bundle.lazy)) {
      assert.equal(file, path.join(outDir, LAZY_DIR, LAZY_MODULES[name]!.file));
      assert.match(readFileSync(file, 'utf8'), new RegExp(`node_modules/${name.split('/').slice(0, 2).join('/')}/`));
    }
  });

  it("leaves zod's locales out of main.js but the English one its messages come from", () => {
    // `import { z } from 'zod'` would keep all of zod (eslint.config.mjs asks for `import * as z`).
    const main = Object.values(bundle.metafile.outputs).find((output) => output.entryPoint);
    assert.ok(main, 'the metafile names the entry');
    const locales = Object.entries(main.inputs)
      .filter(([file, { bytesInOutput }]) => /node_modules\/zod\/.*\/locales\//.test(file) && bytesInOutput > 0)
      .map(([file]) => file);
    assert.deepEqual(
      locales.map((file) => path.basename(file)),
      ['en.js'],
    );
  });

  it('leaves the OpenAPI generator out of main.js, in lazy/openapi.js', () => {
    const main = Object.values(bundle.metafile.outputs).find((output) => output.entryPoint);
    assert.ok(main, 'the metafile names the entry');
    const openapi = Object.entries(main.inputs)
      .filter(([file, { bytesInOutput }]) => file.startsWith('src/openapi/') && bytesInOutput > 0)
      .map(([file]) => file);
    assert.deepEqual(openapi, []);
    assert.deepEqual(bundle.lazySources, { 'src/openapi/document.ts': path.join(outDir, LAZY_DIR, 'openapi.js') });
    assert.deepEqual(Object.keys(LAZY_SOURCES), Object.keys(bundle.lazySources));
    assert.match(readFileSync(bundle.appFile, 'utf8'), /require\("\.\/lazy\/openapi\.js"\)/);
    // What a lazy source requires of the bundle's own files (lazy/ajv.js for http/clientToolSchema.ts) is named
    // from lazy/, where it is.
    for (const file of Object.values(bundle.lazySources)) {
      const relative = [...readFileSync(file, 'utf8').matchAll(/\b(?:require|import)\("(\.{1,2}\/[^"]+)"\)/g)].map(
        ([, specifier]) => specifier!,
      );
      assert.ok(relative.length > 0, `${file} requires files of the bundle`);
      for (const specifier of relative) {
        assert.ok(existsSync(path.resolve(path.dirname(file), specifier)), `${specifier} from ${file} exists`);
      }
    }
  });

  it('fails the build when a module imports a lazy source statically, naming the importer', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'app-bundle-static-'));
    try {
      // A copy of the repository's layout where one function imports the OpenAPI generator at load.
      for (const file of ['tsconfig.json', 'package.json']) {
        writeFileSync(path.join(root, file), readFileSync(path.join(REPO_ROOT, file)));
      }
      mkdirSync(path.join(root, 'src', 'functions'), { recursive: true });
      mkdirSync(path.join(root, 'src', 'openapi'), { recursive: true });
      writeFileSync(path.join(root, 'src', 'index.ts'), 'export {};\n');
      writeFileSync(path.join(root, 'src', 'openapi', 'document.ts'), 'export const document = {};\n');
      writeFileSync(
        path.join(root, 'src', 'functions', 'openapi.ts'),
        "import { document } from '../openapi/document';\nexport const served = document;\n",
      );
      await assert.rejects(
        bundleApp({ root, outDir: path.join(root, 'dist', 'app'), log: false }),
        /src\/functions\/openapi\.ts must reach src\/openapi\/document\.ts lazily, through await import\('\.\.\/openapi\/document\.js'\)/,
      );
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('reaches the OpenTelemetry API only through import(), so loading the app does not evaluate it', () => {
    const inputs = bundle.metafile.inputs;
    const lazyPackages = ['node_modules/@opentelemetry/api/'];
    for (const prefix of lazyPackages) {
      assert.ok(
        Object.keys(inputs).some((file) => file.startsWith(prefix)),
        `${prefix} is in the bundle`,
      );
    }
    // Everything the entry reaches without crossing an import(): what runs when the bundle loads.
    const entry = Object.values(bundle.metafile.outputs).find((output) => output.entryPoint)?.entryPoint;
    assert.ok(entry && inputs[entry], 'the metafile names the entry');
    const loadedAtStart = new Set<string>();
    const pending = [entry];
    for (let file = pending.pop(); file !== undefined; file = pending.pop()) {
      if (loadedAtStart.has(file)) continue;
      loadedAtStart.add(file);
      for (const edge of inputs[file]?.imports ?? []) {
        if (!edge.external && edge.kind !== 'dynamic-import') pending.push(edge.path);
      }
    }
    assert.ok(loadedAtStart.has('src/functions/sendMessage.ts') && loadedAtStart.has('src/composition.ts'));
    const eager = [...loadedAtStart].filter((file) => lazyPackages.some((prefix) => file.startsWith(prefix)));
    assert.deepEqual(eager, []);
  });

  it("loads under the local host's functions-core stand-in, registers the same functions as the sources, and evaluates no rank table", () => {
    const fromSources = collectRegistrations(functionModules());
    const fromBundle = collectRegistrations({ functionModules: [bundle.mainFile] });
    assert.ok(fromBundle.length >= 9, `the bundle registered ${fromBundle.length} functions`);
    assert.deepEqual(describeRegistrations(fromBundle), describeRegistrations(fromSources));
    assert.ok(fromBundle.every((registration) => registration.moduleFile === bundle.mainFile));

    const loaded = Object.keys(require.cache);
    assert.ok(loaded.includes(bundle.mainFile));
    for (const file of bundle.telemetryFiles) {
      assert.ok(!loaded.includes(file), `${path.basename(file)} is not loaded with telemetry off`);
    }
    for (const file of Object.values(bundle.lazy)) assert.ok(!loaded.includes(file), `${file} is not loaded at start`);
    assert.deepEqual(
      loaded.filter((file) => RANK_FILE.test(file)),
      [],
    );
  });

  /* eslint-disable @typescript-eslint/no-require-imports -- loads the lazy bundles as main.js does */
  // After the test above: this one loads the lazy bundles into this process.
  it('loads each lazy bundle with the exports of the package the sources load', async () => {
    for (const [name, file] of Object.entries(bundle.lazy)) {
      const loaded = require(file) as Record<string, unknown>;
      const own = (LAZY_MODULES[name]!.reach === 'import' ? await import(name) : require(name)) as Record<
        string,
        unknown
      >;
      // The same exported names as the package itself (the ES module build and the CommonJS one export the same).
      for (const key of Object.keys(own).filter((key) => key !== 'default' && key !== '__esModule')) {
        assert.ok(key in loaded, `${name}: ${key} is exported by ${path.basename(file)}`);
      }
    }
    // The generator in lazy/openapi.js writes the document the sources write.
    const openapi = require(
      bundle.lazySources['src/openapi/document.ts']!,
    ) as typeof import('../../../src/openapi/document');
    assert.deepEqual(
      openapi.buildOpenApiDocument(openapi.defaultOpenApiOptions()),
      buildOpenApiDocument(defaultOpenApiOptions()),
    );
    const ajv = require(bundle.lazy['ajv/dist/2020']!) as typeof import('ajv/dist/2020');
    assert.equal(new ajv.default({ strict: false }).validateSchema({ type: 'object' }), true);
    const webhooks = require(bundle.lazy['standardwebhooks']!) as typeof import('standardwebhooks');
    assert.match(new webhooks.Webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw').sign('id', new Date(0), '{}'), /^v1,/);
  });
  /* eslint-enable @typescript-eslint/no-require-imports */
});

// ---- .funcignore ----------------------------------------------------------------------------------------------

/** The files a build and a local run leave in the tree beside the tracked ones. */
const UNTRACKED_FILES = [
  'dist/app/app.js',
  'dist/app/app.js.cache',
  'dist/app/app.js.map',
  'dist/app/lazy/identity.js',
  'dist/app/lazy/identity.js.map',
  'dist/app/main.js',
  'dist/app/main.js.map',
  'dist/app/ranks/cl100k_base.cjs',
  'dist/app/ranks/cl100k_base.index.bin',
  'dist/app/ranks/o200k_base.cjs',
  'dist/app/telemetry-azure-monitor.js',
  'dist/app/telemetry-azure-monitor.js.map',
  'dist/app/telemetry-otlp.js',
  'dist/app/telemetry-otlp.js.map',
  'dist/src/index.js',
  'dist/src/index.js.map',
  'dist/src/functions/health.js',
  'dist/local/localHost.js',
  'dist/scripts/bundle.js',
  'dist/test/unit/config.test.js',
  'dist/bench/run.js',
  'node_modules/.package-lock.json',
  'node_modules/.bin/tsc',
  'node_modules/@azure/functions/package.json',
  'node_modules/openai/index.js',
  'local.settings.json',
  '.azurite/__azurite_db_table__.json',
  '.bench/last.json',
  '.azure/dev/.env',
  '.vscode/settings.json',
  'coverage/lcov.info',
  'npm-debug.log',
];

const PACKAGE = [
  'dist/app/app.js',
  'dist/app/app.js.cache',
  'dist/app/app.js.map',
  'dist/app/lazy/identity.js',
  'dist/app/lazy/identity.js.map',
  'dist/app/main.js',
  'dist/app/main.js.map',
  'dist/app/ranks/cl100k_base.cjs',
  'dist/app/ranks/cl100k_base.index.bin',
  'dist/app/ranks/o200k_base.cjs',
  'dist/app/telemetry-azure-monitor.js',
  'dist/app/telemetry-azure-monitor.js.map',
  'dist/app/telemetry-otlp.js',
  'dist/app/telemetry-otlp.js.map',
  'host.json',
  'package.json',
];

/** Tracked files and untracked ones that are not git-ignored: what a clone holds before it is built. */
function repositoryFiles(): string[] {
  const listed = spawnSync('git', ['ls-files', '--cached', '--others', '--exclude-standard', '-z'], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
  });
  assert.equal(listed.status, 0, `git ls-files failed: ${listed.stderr || listed.error?.message}`);
  return listed.stdout.split('\0').filter((file) => file !== '');
}

/**
 * The files Core Tools would publish: its GitIgnoreParser (a port of the npm package gitignore-parser) accepts a
 * file when any `!` rule matches it or no other rule does, each rule a regular expression on the path's start.
 */
function coreToolsPackage(rules: string, files: string[]): string[] {
  const escape = (pattern: string) =>
    pattern
      .replace(/[-[\]/{}()+?.\\^$|]/g, '\\$&')
      .replace(/\*\*/g, '(.+)')
      .replace(/\*/g, '([^\\/]+)');
  const positive: string[] = [];
  const negative: string[] = [];
  for (let line of rules.split('\n').map((text) => text.trim())) {
    if (line === '' || line.startsWith('#')) continue;
    const negated = line.startsWith('!');
    if (negated) line = line.slice(1);
    if (line.startsWith('/')) line = line.slice(1);
    (negated ? negative : positive).push(line);
  }
  const compile = (patterns: string[]) =>
    patterns.length > 0 ? new RegExp(`^((${patterns.sort().map(escape).join(')|(')}))\\b`) : /$^/;
  const [denied, accepted] = [compile(positive), compile(negative)];
  return files.filter((file) => accepted.test(file) || !denied.test(file));
}

/** The files git keeps when the rules are its exclude file: gitignore semantics, which azd follows. */
function gitignorePackage(rules: string, files: string[]): string[] {
  const tree = mkdtempSync(path.join(tmpdir(), 'funcignore-'));
  try {
    for (const file of files) {
      mkdirSync(path.dirname(path.join(tree, file)), { recursive: true });
      writeFileSync(path.join(tree, file), '');
    }
    const git = (...args: string[]) => spawnSync('git', args, { cwd: tree, encoding: 'utf8' });
    assert.equal(git('init', '--quiet').status, 0);
    writeFileSync(path.join(tree, '.git', 'info', 'exclude'), rules);
    const listed = git('ls-files', '--others', '--exclude-standard', '-z');
    assert.equal(listed.status, 0, listed.stderr);
    // azd decides on a remote build by whether node_modules itself is excluded: it must not be.
    assert.equal(git('check-ignore', '--quiet', 'node_modules').status, 1, 'node_modules itself is not excluded');
    return listed.stdout.split('\0').filter((file) => file !== '');
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
}

describe('.funcignore', () => {
  const rules = readFileSync(path.join(REPO_ROOT, '.funcignore'), 'utf8');
  const files = [...new Set([...repositoryFiles(), ...UNTRACKED_FILES])].sort();

  it('leaves host.json, package.json and dist/app/ in the package under gitignore rules (azd)', () => {
    assert.deepEqual(gitignorePackage(rules, files).sort(), PACKAGE);
  });

  it("leaves the same files under Core Tools' matching, where a ! rule always wins", () => {
    assert.deepEqual(coreToolsPackage(rules, files).sort(), PACKAGE);
  });

  it('ships a new top-level folder under both until it is listed, which is why this test lists the repository', () => {
    const withNewFolder = [...files, 'tools/release.sh'];
    assert.ok(gitignorePackage(rules, withNewFolder).includes('tools/release.sh'));
    assert.ok(coreToolsPackage(rules, withNewFolder).includes('tools/release.sh'));
  });
});

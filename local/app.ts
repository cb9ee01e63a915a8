/**
 * The whole app on loopback, in this process: a private Azurite (or a shared one), the model stand-in, and the local
 * host serving the real function modules over HTTP. Used by the integration tests (through test/support/app.ts) and
 * the benchmarks. The app reads its settings from process.env once per process, so one process = one app.
 */
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { startAzurite, type RunningAzurite } from './azurite';
import { startLocalHost } from './localHost';
import { startModelStandIn, type ModelStandIn, type ModelStandInOptions } from './modelStandIn';

/** The repository root (it holds tsconfig.build.json), whether this runs from the sources or compiled under dist/. */
export function findRepoRoot(start = __dirname): string {
  let directory = start;
  while (!existsSync(join(directory, 'tsconfig.build.json'))) {
    const parent = dirname(directory);
    if (parent === directory) throw new Error(`No package.json above ${start}`);
    directory = parent;
  }
  return directory;
}

export const REPO_ROOT = findRepoRoot();

/** The API key the app and the model stand-in share unless a managed identity is used. */
export const LOCAL_APP_MODEL_KEY = 'test-key';

export interface LocalApp {
  /** Base URL of the API, e.g. http://127.0.0.1:40123/api */
  api: string;
  azurite: RunningAzurite;
  model: ModelStandIn;
  close(): Promise<void>;
}

export interface LocalAppOptions {
  /** Extra settings for the app (override the defaults below). */
  env?: Record<string, string> | ((model: ModelStandIn) => Record<string, string>);
  model?: ModelStandInOptions;
  /**
   * Authenticate to the model with a managed identity instead of the API key: the stand-in expects `token` as a
   * bearer token and the app gets `settings` (IDENTITY_ENDPOINT, IDENTITY_HEADER...) instead of a key.
   */
  identity?: { token: string; settings: Record<string, string> };
  /** Also run Azurite's Queue service, and the queue triggers on it (AzureWebJobsStorage). */
  queue?: boolean;
  /** Reuse an Azurite someone else started (e.g. two app instances sharing storage). */
  azurite?: RunningAzurite;
  /** Run the compiled app under dist/ instead of the TypeScript sources. */
  compiled?: boolean;
  /** Modules that register functions of their own beside the app's, in the same host (the benchmark's bound function). */
  extraFunctionModules?: string[];
  /** The app's warnings and errors (and handler failures). Default: stderr. */
  logError?: (line: string) => void;
}

export function functionModules(compiled = false): { functionModules: string[]; setupModule: string } {
  const base = compiled ? join(REPO_ROOT, 'dist', 'src') : join(REPO_ROOT, 'src');
  const extension = compiled ? '.js' : '.ts';
  const directory = join(base, 'functions');
  return {
    setupModule: join(base, `index${extension}`),
    functionModules: readdirSync(directory)
      .filter((file) => file.endsWith(extension) && !file.endsWith('.d.ts'))
      .sort()
      .map((file) => join(directory, file)),
  };
}

export async function startLocalApp(options: LocalAppOptions = {}): Promise<LocalApp> {
  const started: { close(): Promise<void> }[] = [];
  const closeAll = async () => {
    for (const item of started.reverse()) await item.close().catch(() => {});
  };
  try {
    const azurite = options.azurite ?? (await startAzurite({ queue: options.queue ?? false }));
    if (!options.azurite) started.push({ close: () => azurite.stop() });
    const { identity } = options;
    const model = await startModelStandIn({
      ...(identity ? { expectedBearerToken: identity.token } : { expectedApiKey: LOCAL_APP_MODEL_KEY }),
      ...options.model,
    });
    started.push(model);

    const settings: Record<string, string> = {
      TABLES_CONNECTION_STRING: azurite.connectionString,
      TABLES_PREFIX: `t${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`,
      AZURE_OPENAI_ENDPOINT: model.url,
      AZURE_OPENAI_DEPLOYMENT: 'chat',
      AZURE_OPENAI_MODEL: 'gpt-4o-mini',
      AZURE_OPENAI_TIMEOUT_MS: '20000',
      AUTH_MODE: 'none',
      LIMIT_REQUESTS_PER_MINUTE: '0',
      LIMIT_TOKENS_PER_DAY: '0',
      ...(azurite.queueEndpoint ? { AzureWebJobsStorage: azurite.connectionString } : {}),
      ...(identity ? identity.settings : { AZURE_OPENAI_API_KEY: LOCAL_APP_MODEL_KEY }),
      ...(typeof options.env === 'function' ? options.env(model) : options.env),
    };
    Object.assign(process.env, settings);

    const modules = functionModules(options.compiled);
    const host = await startLocalHost({
      ...modules,
      functionModules: [...modules.functionModules, ...(options.extraFunctionModules ?? [])],
      port: 0,
      log: () => {},
      ...(options.logError ? { logError: options.logError } : {}),
    });
    started.push(host);
    return { api: `${host.url}/api`, azurite, model, close: closeAll };
  } catch (error) {
    await closeAll();
    throw error;
  }
}

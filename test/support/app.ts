/**
 * The whole app on loopback for integration tests and benchmarks: a private Azurite, the model stand-in, optionally
 * the managed-identity stand-in, and the local host serving the real function modules over HTTP. The app reads its
 * settings from process.env once per process, so one test file = one app.
 */
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { startLocalHost } from '../../scripts/localHost';
import { startAzurite, type RunningAzurite } from './azurite';
import { startIdentityStandIn, type IdentityStandIn } from './identityStandIn';
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

export interface TestApp {
  /** Base URL of the API, e.g. http://127.0.0.1:40123/api */
  api: string;
  azurite: RunningAzurite;
  model: ModelStandIn;
  identity?: IdentityStandIn;
  close(): Promise<void>;
}

export interface TestAppOptions {
  /** Extra settings for the app (override the defaults below). */
  env?: Record<string, string>;
  model?: ModelStandInOptions;
  /** Authenticate to the model with a managed identity (loopback identity stand-in) instead of an API key. */
  managedIdentity?: { clientId?: string };
  /** Reuse an Azurite someone else started (e.g. two app instances sharing storage). */
  azurite?: RunningAzurite;
  /** Run the compiled app under dist/ instead of the TypeScript sources. */
  compiled?: boolean;
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

export async function startTestApp(options: TestAppOptions = {}): Promise<TestApp> {
  const started: { close(): Promise<void> }[] = [];
  const closeAll = async () => {
    for (const item of started.reverse()) await item.close().catch(() => {});
  };
  try {
    const azurite = options.azurite ?? (await startAzurite());
    if (!options.azurite) started.push({ close: () => azurite.stop() });
    let identity: IdentityStandIn | undefined;
    if (options.managedIdentity) {
      identity = await startIdentityStandIn();
      started.push(identity);
    }
    const model = await startModelStandIn({
      ...(identity ? { expectedBearerToken: identity.token } : { expectedApiKey: 'test-key' }),
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
      ...(identity
        ? {
            IDENTITY_ENDPOINT: identity.endpoint,
            IDENTITY_HEADER: identity.header,
            ...(options.managedIdentity?.clientId ? { AZURE_CLIENT_ID: options.managedIdentity.clientId } : {}),
          }
        : { AZURE_OPENAI_API_KEY: 'test-key' }),
      ...options.env,
    };
    Object.assign(process.env, settings);

    const host = await startLocalHost({ ...functionModules(options.compiled), port: 0, log: () => {} });
    started.push(host);
    return { api: `${host.url}/api`, azurite, model, ...(identity ? { identity } : {}), close: closeAll };
  } catch (error) {
    await closeAll();
    throw error;
  }
}

/** fetch + JSON for tests: returns status, headers and the parsed body (or text). */
export async function call(
  method: string,
  url: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; body: any; text: string }> {
  const response = await fetch(url, {
    method,
    headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // Not JSON: the caller reads `text`.
  }
  return { status: response.status, headers: response.headers, body: parsed, text };
}

/**
 * The whole app on loopback for integration tests: local/app.ts (a private Azurite, the model stand-in, the local host
 * serving the real function modules), optionally authenticating to the model through the managed-identity stand-in.
 * The app reads its settings from process.env once per process, so one test file = one app.
 */
import { writeSync } from 'node:fs';
import { startLocalApp, type LocalApp, type LocalAppOptions } from '../../local/app';
import { startIdentityStandIn, type IdentityStandIn } from './identityStandIn';

export { findRepoRoot, functionModules, REPO_ROOT } from '../../local/app';

export interface TestApp extends LocalApp {
  identity?: IdentityStandIn;
}

export interface TestAppOptions extends Omit<LocalAppOptions, 'identity'> {
  /** Authenticate to the model with a managed identity (loopback identity stand-in) instead of an API key. */
  managedIdentity?: { clientId?: string };
}

/**
 * The app's warnings and errors. Fault tests provoke them on purpose (a model answering 500, storage gone), so
 * printed as they come they read like failures: they are kept, and printed when the process exits only if a test
 * in this file failed (node:test has set the exit code by then).
 */
const appLogLines: string[] = [];
const APP_LOG_LINES_KEPT = 200;
let appLogHooked = false;

function keepAppLog(line: string): void {
  appLogLines.push(line);
  if (appLogLines.length > APP_LOG_LINES_KEPT) appLogLines.shift();
  if (appLogHooked) return;
  appLogHooked = true;
  process.once('exit', (code) => {
    if (!code && !process.exitCode) return;
    writeSync(2, `\nThe app's warnings and errors in this test file (printed because a test failed):\n`);
    writeSync(2, `${appLogLines.map((entry) => `  ${entry}`).join('\n')}\n`);
  });
}

export async function startTestApp(options: TestAppOptions = {}): Promise<TestApp> {
  const { managedIdentity, ...rest } = options;
  const localOptions = { logError: keepAppLog, ...rest };
  if (!managedIdentity) return startLocalApp(localOptions);
  const identity = await startIdentityStandIn();
  try {
    const app = await startLocalApp({
      ...localOptions,
      identity: {
        token: identity.token,
        settings: {
          IDENTITY_ENDPOINT: identity.endpoint,
          IDENTITY_HEADER: identity.header,
          ...(managedIdentity.clientId ? { AZURE_CLIENT_ID: managedIdentity.clientId } : {}),
        },
      },
    });
    return {
      ...app,
      identity,
      close: async () => {
        await app.close();
        await identity.close().catch(() => {});
      },
    };
  } catch (error) {
    await identity.close().catch(() => {});
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

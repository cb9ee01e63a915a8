/**
 * A small local stand-in for the Azure Functions host, for machines where Functions Core Tools cannot be
 * installed. It loads the app the way the real Node.js worker does: it provides the worker's built-in module
 * `@azure/functions-core` before the app is required, so `app.http(...)` registrations reach it (outside a host
 * the library runs in "test mode" and drops them). It then serves those registrations over HTTP with the
 * library's own `HttpRequest`, `InvocationContext` and `HttpResponse`, using exactly the binding metadata
 * (route, methods, authLevel) the real host would receive.
 *
 * What it is not: no function keys are checked (as with `func start`), no triggers but HTTP and storage queues.
 * CORS follows local.settings.json `Host.CORS`, as under `func start` (host/cors.ts).
 * Run it on the built app with `node dist/local/localHost.js`: it loads the files package.json `main` names, the
 * dist/app/main.js, which loads the esbuild bundle dist/app/app.js (see docs/local-host.md).
 *
 * This file starts and stops the host; its parts live in host/, one concern each:
 * - host/functionsCore.ts  the `@azure/functions-core` stand-in that collects registrations and hooks
 * - host/routing.ts        route templates, the route prefix, the route table of the HTTP triggers
 * - host/serving.ts        HTTP serving: request -> hooks and handler -> response, host-level problems, app logs
 * - host/cors.ts           CORS from local.settings.json `Host.CORS`, as `func start` applies it
 * - host/appFiles.ts       local.settings.json `Values` and `Host`, and the files package.json `main` names
 * - host/queueTriggers.ts  storage-queue triggers, polled as the host's queue listener does (host.json `queues`)
 * Other trigger kinds would get a module of their own there, fed the registrations that buildRouteTable skips,
 * and started and stopped in startLocalHost beside the HTTP server.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { appEntryFiles, applyLocalSettings, readHostSettings } from './host/appFiles';
import { assertValidCors, corsFromHostSettings, type CorsPolicy } from './host/cors';
import { collectRegistrations, installFunctionsCoreStandIn, printLog } from './host/functionsCore';
import { buildRouteTable, normalisePrefix, readRoutePrefix, type RegisteredRoute } from './host/routing';
import { describeError, handleRequest, runHooks, type HostContext } from './host/serving';
import { readQueueSettings, startQueueTriggers, type QueueTrigger } from './host/queueTriggers';

export { appEntryFiles, applyLocalSettings, readHostSettings } from './host/appFiles';
export { corsFromHostSettings, type CorsPolicy } from './host/cors';
export { DEFAULT_ROUTE_PREFIX, type RegisteredRoute } from './host/routing';

export interface LocalHostOptions {
  /** Modules that call `app.http(...)`; loaded in this order after `setupModule`. */
  functionModules: string[];
  /** The app's entry module that calls `app.setup(...)` (src/index); loaded first. */
  setupModule?: string;
  /** Default 7071; 0 picks a free port. */
  port?: number;
  /** Default 127.0.0.1 (loopback only). */
  host?: string;
  /** Overrides host.json `extensions.http.routePrefix` (default `api`); '' serves routes at the root. */
  routePrefix?: string;
  /** Where to read the route prefix from; default `./host.json` when it exists. */
  hostJsonPath?: string;
  /** Request lines and the app's logs. Default: stdout. */
  log?: (line: string) => void;
  /** Handler failures, with their stack, and the app's warnings and errors. Default: stderr. */
  logError?: (line: string) => void;
  /** Larger request bodies are refused with 413. Default 100 MiB, the platform's limit. */
  maxRequestBodyBytes?: number;
  /** CORS, as local.settings.json `Host.CORS` configures it under `func start`; none when omitted. */
  cors?: CorsPolicy;
}

export interface LocalHost {
  /** `http://127.0.0.1:7071`, without the route prefix. */
  url: string;
  port: number;
  routePrefix: string;
  routes: RegisteredRoute[];
  /** The storage-queue triggers being polled. */
  queueTriggers: QueueTrigger[];
  /** Stops accepting, ends open connections (cancelling streamed bodies), runs appTerminate hooks. */
  close(): Promise<void>;
}

export const DEFAULT_PORT = 7071;
export const DEFAULT_BIND_ADDRESS = '127.0.0.1';
export const DEFAULT_MAX_REQUEST_BODY_BYTES = 100 * 1024 * 1024;

// ---- Starting and stopping -----------------------------------------------------------------------------------

export async function startLocalHost(options: LocalHostOptions): Promise<LocalHost> {
  const log = options.log ?? ((line: string) => console.log(line));
  const logError = options.logError ?? ((line: string) => console.error(line));
  const bindAddress = options.host ?? DEFAULT_BIND_ADDRESS;
  const hostJsonPath = path.resolve(options.hostJsonPath ?? 'host.json');

  if (options.cors) assertValidCors(options.cors);
  const state = installFunctionsCoreStandIn();
  state.systemLog = (level, message) => printLog(level, message, log, logError);
  const registrations = collectRegistrations(options);
  const routePrefix = normalisePrefix(options.routePrefix ?? readRoutePrefix(hostJsonPath));
  const entries = buildRouteTable(registrations, routePrefix, logError);

  const appHookData: Record<string, unknown> = {};
  await runHooks(state, 'appStart', {
    hookData: {},
    appHookData,
    functionAppDirectory: path.dirname(hostJsonPath),
  });

  const host: HostContext = {
    entries,
    state,
    appHookData,
    log,
    logError,
    maxRequestBodyBytes: options.maxRequestBodyBytes ?? DEFAULT_MAX_REQUEST_BODY_BYTES,
    fallbackOrigin: 'http://localhost',
    ...(options.cors ? { cors: options.cors } : {}),
  };
  const server = http.createServer({ noDelay: true }, (req, res) => void handleRequest(host, req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? DEFAULT_PORT, bindAddress, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${bindAddress.includes(':') ? `[${bindAddress}]` : bindAddress}:${port}`;
  host.fallbackOrigin = url;
  // Non-HTTP triggers start from the same registrations once the app is up, and stop in close().
  let queues: Awaited<ReturnType<typeof startQueueTriggers>>;
  try {
    queues = await startQueueTriggers(host, registrations, readQueueSettings(hostJsonPath));
  } catch (error) {
    server.close();
    throw error;
  }

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    routePrefix,
    routes: [...entries].sort((a, b) => a.order - b.order).map((entry) => entry.route), // registration order
    queueTriggers: queues.triggers,
    close() {
      closing ??= (async () => {
        await queues.close();
        const closed = new Promise<void>((resolve, reject) =>
          server.close((error) => (error ? reject(error) : resolve())),
        );
        server.closeAllConnections(); // open streams end here; their bodies are cancelled as for any disconnect
        await closed;
        await runHooks(state, 'appTerminate', { hookData: {}, appHookData });
      })();
      return closing;
    },
  };
}

/** The routes as a table for the console, one function per line. */
export function formatRouteTable(host: Pick<LocalHost, 'url' | 'routes'>): string {
  const rows = [...host.routes]
    .sort((a, b) => a.path.localeCompare(b.path) || a.methods.join().localeCompare(b.methods.join()))
    .map((route) => [route.methods.join(','), `${host.url}${route.path}`, route.functionName]);
  const widths = [0, 1].map((column) => Math.max(...rows.map((row) => (row[column] ?? '').length), 0));
  return rows
    .map(
      ([methods = '', address = '', name = '']) =>
        `  ${methods.padEnd(widths[0] ?? 0)}  ${address.padEnd(widths[1] ?? 0)}  ${name}`,
    )
    .join('\n');
}

/** The storage-queue triggers, one per line: `  queue turn-jobs -> runTurnJob`. */
export function formatQueueTriggers(host: Pick<LocalHost, 'queueTriggers'>): string {
  return host.queueTriggers.map((trigger) => `  queue ${trigger.queueName} -> ${trigger.functionName}`).join('\n');
}

function parsePort(text: string | undefined): number {
  if (text === undefined || text === '') return DEFAULT_PORT;
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(`PORT must be a port number, not "${text}".`);
  return port;
}

/** Serves the app in the current directory: the files package.json `main` names, as the worker would load them. */
export async function main(): Promise<void> {
  const appRoot = process.cwd();
  const applied = applyLocalSettings(path.join(appRoot, 'local.settings.json'));
  if (applied.length > 0) console.log(`Settings from local.settings.json: ${applied.join(', ')}`);

  const cors = corsFromHostSettings(readHostSettings(path.join(appRoot, 'local.settings.json')));
  const host = await startLocalHost({
    functionModules: appEntryFiles(appRoot),
    port: parsePort(process.env.PORT),
    hostJsonPath: path.join(appRoot, 'host.json'),
    ...(cors ? { cors } : {}),
  });
  console.log(`Local Functions host (no Core Tools) listening on ${host.url}, route prefix "/${host.routePrefix}":`);
  console.log(formatRouteTable(host));
  if (host.queueTriggers.length > 0) console.log(formatQueueTriggers(host));

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) process.exit(1); // a second Ctrl-C does not wait
    stopping = true;
    console.log(`${signal}: stopping the local host`);
    // A function that ignores the end of its connection must not keep a Ctrl-C waiting forever.
    setTimeout(() => process.exit(1), 10_000).unref();
    host.close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(`The local host did not stop cleanly: ${describeError(error)}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (require.main === module) {
  main().catch((error: unknown) => {
    // A bad setting says which, in its message; a stack would only bury that. Anything else keeps its stack.
    const why = error instanceof Error && error.name === 'ConfigError' ? error.message : describeError(error);
    console.error(`The local host could not start: ${why}`);
    process.exitCode = 1;
  });
}

/**
 * Starts a private Azurite Table service (and, when asked, its Queue service) on free loopback ports and stops them
 * by PID. Shared by the integration
 * tests, the local `npm start` and the benchmarks, so it must not import node:test.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createConnection } from 'node:net';
import { dirname, join } from 'node:path';
import { freePort } from './processes';

/** Azurite's well-known development account (public, documented; not a secret). */
export const AZURITE_ACCOUNT_NAME = 'devstoreaccount1';
export const AZURITE_ACCOUNT_KEY =
  'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface AzuriteOptions {
  /** Folder for persistent data; in memory when omitted. */
  location?: string;
  /** A fixed port (e.g. 10002, what `UseDevelopmentStorage=true` expects); a free one when omitted. */
  port?: number;
  /** How long to wait for the port to accept connections. */
  startTimeoutMs?: number;
  /** Serve HTTPS with this PEM certificate and key (Azurite's `--cert`/`--key`), e.g. from `./tls`. */
  https?: { certificatePath: string; keyPath: string };
  /**
   * Accept Entra ID bearer tokens (`--oauth basic`): Azurite checks their issuer, audience and lifetime, not their
   * signature. Needs `https`. The account key (connection string) keeps working alongside.
   */
  oauth?: 'basic';
  /**
   * Also run Azurite's Queue service (`azurite-queue`, a process of its own) for queue-triggered functions: on
   * `queuePort` (10001 is what `UseDevelopmentStorage=true` expects) or a free port.
   */
  queue?: boolean | { port?: number };
}

export interface RunningAzurite {
  /** Table (and Queue, when started) endpoints with the development account's key. */
  connectionString: string;
  /** The account's queue endpoint when the Queue service runs, e.g. `http://127.0.0.1:40124/devstoreaccount1`. */
  queueEndpoint?: string;
  /** The account's table endpoint, e.g. `https://127.0.0.1:40123/devstoreaccount1` (for TABLES_ENDPOINT). */
  tableEndpoint: string;
  port: number;
  pid: number;
  stop(): Promise<void>;
}

const HOST = '127.0.0.1';
const OUTPUT_TAIL_CHARS = 4_000;

export function azuriteTableEndpoint(port: number, protocol: 'http' | 'https' = 'http'): string {
  return `${protocol}://${HOST}:${port}/${AZURITE_ACCOUNT_NAME}`;
}

export function azuriteConnectionString(port: number, protocol: 'http' | 'https' = 'http', queuePort?: number): string {
  return (
    `DefaultEndpointsProtocol=${protocol};AccountName=${AZURITE_ACCOUNT_NAME};AccountKey=${AZURITE_ACCOUNT_KEY};` +
    `TableEndpoint=${azuriteTableEndpoint(port, protocol)};` +
    (queuePort !== undefined ? `QueueEndpoint=${azuriteTableEndpoint(queuePort, protocol)};` : '')
  );
}

export async function startAzurite(options: AzuriteOptions = {}): Promise<RunningAzurite> {
  const table = await startService('table', options.port, options);
  if (!options.queue) return table;
  const queuePort = typeof options.queue === 'object' ? options.queue.port : undefined;
  let queue: RunningAzurite;
  try {
    queue = await startService('queue', queuePort, options);
  } catch (error) {
    await table.stop();
    throw error;
  }
  const protocol = options.https ? 'https' : 'http';
  return {
    ...table,
    connectionString: azuriteConnectionString(table.port, protocol, queue.port),
    queueEndpoint: azuriteTableEndpoint(queue.port, protocol),
    stop: async () => {
      await Promise.all([table.stop(), queue.stop()]);
    },
  };
}

/** Azurite's Queue service alone (e.g. beside a Table service started earlier); `connectionString` names only it. */
export async function startAzuriteQueue(options: Omit<AzuriteOptions, 'queue'> = {}): Promise<RunningAzurite> {
  const queue = await startService('queue', options.port, options);
  const protocol = options.https ? 'https' : 'http';
  const endpoint = azuriteTableEndpoint(queue.port, protocol);
  return {
    ...queue,
    connectionString:
      `DefaultEndpointsProtocol=${protocol};AccountName=${AZURITE_ACCOUNT_NAME};AccountKey=${AZURITE_ACCOUNT_KEY};` +
      `QueueEndpoint=${endpoint};`,
    queueEndpoint: endpoint,
  };
}

async function startService(
  service: AzuriteService,
  fixedPort: number | undefined,
  options: AzuriteOptions,
): Promise<RunningAzurite> {
  // Azurite refuses bearer tokens over plain HTTP, so OAuth without a certificate could never authenticate anyone.
  if (options.oauth && !options.https) throw new Error('Azurite with oauth needs https (a certificate and key).');
  if (fixedPort !== undefined) {
    // Otherwise the readiness probe would mistake whatever holds the port for Azurite.
    if (await canConnect(fixedPort)) throw new Error(`Port ${HOST}:${fixedPort} is already in use.`);
    return startOnce(service, fixedPort, options);
  }
  // The port is free when probed but could be taken before Azurite binds it: try a few ports.
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(service, await freePort(), options);
    } catch (error) {
      lastError = error;
      if (!(error instanceof AzuriteStartError) || !error.addressInUse) throw error;
    }
  }
  throw lastError;
}

class AzuriteStartError extends Error {
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message);
    this.name = 'AzuriteStartError';
  }
}

type AzuriteService = 'table' | 'queue';

async function startOnce(service: AzuriteService, port: number, options: AzuriteOptions): Promise<RunningAzurite> {
  const args = [
    azuriteBin(service),
    `--${service}Host`,
    HOST,
    `--${service}Port`,
    String(port),
    '--disableTelemetry',
    '--silent',
    ...(options.location ? ['--location', options.location] : ['--inMemoryPersistence']),
    ...(options.https ? ['--cert', options.https.certificatePath, '--key', options.https.keyPath] : []),
    ...(options.oauth ? ['--oauth', options.oauth] : []),
    // @azure/storage-queue 12.30 speaks a service version (2026-04-06) newer than Azurite 3.35 knows; the queue
    // operations it uses are unchanged, so Azurite is told not to refuse the version (its documented switch).
    ...(service === 'queue' ? ['--skipApiVersionCheck'] : []),
  ];
  // Run the bin script with this Node (not whatever `node` is on PATH); the PID is Azurite's own process.
  // With a data folder, Azurite leads a process group of its own: a terminal's Ctrl-C (or a SIGTERM to the group)
  // then reaches only its parent, which stops it with the one SIGINT Azurite handles (it saves the database, then
  // exits). In the caller's group it got the terminal's SIGINT and then its parent's: the second one killed it
  // while it was saving, and a SIGTERM killed it without saving. Turns answered 2xx in the last few seconds (its
  // periodic save runs every 5 s) were lost. In memory there is nothing to save, so tests keep it in their group,
  // where a Ctrl-C on the test run still ends it.
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    windowsHide: true,
    detached: options.location !== undefined && process.platform !== 'win32',
  });
  let output = '';
  const keepTail = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARS);
  };
  child.stdout?.on('data', keepTail);
  child.stderr?.on('data', keepTail);
  let spawnError: Error | undefined;
  const spawned = new Promise<void>((resolve) => child.once('spawn', resolve));
  const failed = new Promise<void>((resolve) =>
    child.on('error', (error) => {
      spawnError ??= error;
      resolve();
    }),
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await Promise.race([spawned, failed]);
  if (spawnError || child.pid === undefined) {
    throw new Error(`Azurite could not be started: ${spawnError?.message ?? 'no process id'}.`);
  }
  const pid = child.pid;
  let stopping = false;
  const killOnExit = (): void => {
    // In memory there is nothing to keep. A data folder is saved on SIGINT: a parent that exits before stopping
    // Azurite (a second Ctrl-C) sends it that, once; Azurite, in its own group, saves and exits by itself.
    if (options.location === undefined) child.kill('SIGKILL');
    else if (!stopping) child.kill('SIGINT');
  };
  process.once('exit', killOnExit);

  try {
    await waitForPort(port, child, options.startTimeoutMs ?? 15_000);
  } catch (error) {
    await kill(child, exited);
    process.removeListener('exit', killOnExit);
    const message = error instanceof Error ? error.message : String(error);
    throw new AzuriteStartError(`${message}\nAzurite output:\n${output.trim() || '(none)'}`, /EADDRINUSE/.test(output));
  }

  let stopped: Promise<void> | undefined;
  const protocol = options.https ? 'https' : 'http';
  return {
    connectionString: azuriteConnectionString(port, protocol),
    tableEndpoint: azuriteTableEndpoint(port, protocol),
    port,
    pid,
    stop: () => {
      stopping = true;
      stopped ??= kill(child, exited).finally(() => process.removeListener('exit', killOnExit));
      return stopped;
    },
  };
}

/** `node_modules/.bin/azurite-table` (or -queue), found from this file upwards, so the caller's cwd does not matter. */
function azuriteBin(service: AzuriteService): string {
  for (let dir = __dirname; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', '.bin', `azurite-${service}`);
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) break;
  }
  throw new Error(`node_modules/.bin/azurite-${service} not found above ${__dirname}: run npm install.`);
}

async function waitForPort(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`Azurite exited (code ${child.exitCode ?? child.signalCode}) before listening on port ${port}.`);
    }
    if (await canConnect(port)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`Azurite did not listen on ${HOST}:${port} within ${timeoutMs} ms.`);
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: HOST, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function kill(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  // SIGINT is what Azurite handles as a graceful shutdown (it saves a --location database); SIGKILL if it lingers.
  child.kill('SIGINT');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

/**
 * `npm start`: the API on http://localhost:7071/api on a fresh machine, no Azure subscription needed.
 * Settings come from the environment, then local.settings.json `Values`, then local defaults. Starts Azurite's Table
 * service (data kept in .azurite/), the local model when no AZURE_OPENAI_ENDPOINT is set, then serves the functions
 * with Functions Core Tools (`func start`) when it is on the PATH, else with the local host. Ctrl-C stops everything.
 *
 * Run from the TypeScript sources (`node --import tsx local/start.ts`) it serves the sources with the local host,
 * with no build: `func start` only serves the compiled app. Ports and the data folder can be moved (see below), so
 * a second instance, such as the end-to-end test, does not collide with a developer's running one.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createConnection } from 'node:net';
import { join, relative } from 'node:path';
import { functionModules, REPO_ROOT } from './app';
import { azuriteConnectionString, startAzurite, startAzuriteQueue, type RunningAzurite } from './azurite';
import { describeStandIn, startModelStandIn, DEFAULT_MODEL_STAND_IN_PORT, type ModelStandIn } from './modelStandIn';
import {
  appEntryFiles,
  applyLocalSettings,
  corsFromHostSettings,
  DEFAULT_PORT,
  formatQueueTriggers,
  formatRouteTable,
  readHostSettings,
  startLocalHost,
  type LocalHost,
} from './localHost';

const ROOT = REPO_ROOT;
/** The port `UseDevelopmentStorage=true` points at. */
const DEVELOPMENT_STORAGE_TABLE_PORT = 10002;
const DEVELOPMENT_STORAGE_QUEUE_PORT = 10001;
const LOCAL_MODEL_KEY = 'local-model-key';
const FROM_SOURCES = __filename.endsWith('.ts');

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolvePort) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolvePort(true);
    });
    socket.once('error', () => resolvePort(false));
  });
}

function hasFunctionsCoreTools(): boolean {
  return spawnSync(process.platform === 'win32' ? 'where' : 'which', ['func'], { stdio: 'ignore' }).status === 0;
}

/** A port from the environment; 0 (any free port) only where nothing else needs to know the port in advance. */
function portSetting(env: NodeJS.ProcessEnv, name: string, fallback: number, lowest = 0): number {
  const text = env[name];
  if (text === undefined || text === '') return fallback;
  const port = Number(text);
  if (!Number.isInteger(port) || port < lowest || port > 65535)
    throw new Error(`${name} must be a port number, not "${text}".`);
  return port;
}

async function main(): Promise<void> {
  const env = process.env;
  const stops: (() => Promise<void>)[] = [];
  let stopping = false;
  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    for (const stop of stops.reverse()) await stop().catch((error: unknown) => console.error(String(error)));
    process.exit(code);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    // A second Ctrl-C does not wait; Azurite, already stopping, finishes saving its data and exits by itself.
    if (stopping) process.exit(1);
    console.log(`${signal}: stopping`);
    void stopAll(0);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A closed terminal: stop as cleanly as on Ctrl-C (Azurite, in a process group of its own, would not get it).
  if (process.platform !== 'win32') process.on('SIGHUP', onSignal);

  try {
    const settingsPath = env.LOCAL_SETTINGS_PATH || join(ROOT, 'local.settings.json');
    const applied = applyLocalSettings(settingsPath, env);
    if (applied.length > 0) console.log(`Settings from ${settingsPath}: ${applied.join(', ')}`);
    const port = portSetting(env, 'PORT', DEFAULT_PORT);
    const azuritePort = portSetting(env, 'AZURITE_TABLE_PORT', DEVELOPMENT_STORAGE_TABLE_PORT, 1);
    const modelPort = portSetting(env, 'LOCAL_MODEL_PORT', DEFAULT_MODEL_STAND_IN_PORT);
    const azuriteLocation = env.AZURITE_LOCATION || join(ROOT, '.azurite');

    // Storage: Azurite unless a real account (or another connection string) is configured.
    const connection = env.TABLES_CONNECTION_STRING ?? '';
    if (!env.TABLES_ENDPOINT && (connection === '' || connection === 'UseDevelopmentStorage=true')) {
      env.TABLES_CONNECTION_STRING =
        azuritePort === DEVELOPMENT_STORAGE_TABLE_PORT
          ? 'UseDevelopmentStorage=true'
          : azuriteConnectionString(azuritePort);
      if (await portAnswers(azuritePort)) {
        console.log(`Azurite already answers on 127.0.0.1:${azuritePort}; using it.`);
      } else {
        const azurite: RunningAzurite = await startAzurite({ location: azuriteLocation, port: azuritePort });
        stops.push(() => azurite.stop());
        console.log(
          `Azurite Table service on 127.0.0.1:${azurite.port} (pid ${azurite.pid}), data in ${azuriteLocation}`,
        );
      }
    }

    // Queues (queued turns, the queue trigger): Azurite's Queue service unless the host storage is a real account.
    const hostStorage = env.AzureWebJobsStorage ?? '';
    if (
      !env.AzureWebJobsStorage__queueServiceUri &&
      (hostStorage === '' || hostStorage === 'UseDevelopmentStorage=true')
    ) {
      const queuePort = portSetting(env, 'AZURITE_QUEUE_PORT', DEVELOPMENT_STORAGE_QUEUE_PORT, 1);
      if (await portAnswers(queuePort)) {
        console.log(`Azurite already answers on 127.0.0.1:${queuePort}; using it for queues.`);
      } else {
        const queue: RunningAzurite = await startAzuriteQueue({ location: azuriteLocation, port: queuePort });
        stops.push(() => queue.stop());
        console.log(`Azurite Queue service on 127.0.0.1:${queue.port} (pid ${queue.pid})`);
      }
      env.AzureWebJobsStorage =
        queuePort === DEVELOPMENT_STORAGE_QUEUE_PORT && azuritePort === DEVELOPMENT_STORAGE_TABLE_PORT
          ? 'UseDevelopmentStorage=true'
          : azuriteConnectionString(azuritePort, 'http', queuePort);
    }

    // Model: the local stand-in unless an endpoint is configured.
    if (!env.AZURE_OPENAI_ENDPOINT) {
      const model: ModelStandIn = await startModelStandIn({
        port: (await portAnswers(modelPort)) ? 0 : modelPort,
        expectedApiKey: LOCAL_MODEL_KEY,
      });
      stops.push(() => model.close());
      env.AZURE_OPENAI_ENDPOINT = model.url;
      env.AZURE_OPENAI_API_KEY = LOCAL_MODEL_KEY;
      env.AZURE_OPENAI_DEPLOYMENT ||= 'local-model';
      env.AZURE_OPENAI_MODEL ||= 'gpt-4o-mini';
      console.log(describeStandIn(model));
    }

    if (!FROM_SOURCES && hasFunctionsCoreTools()) {
      console.log('Functions Core Tools found: running `func start`.');
      // Without local.settings.json, func would ask which worker runtime to use.
      env.FUNCTIONS_WORKER_RUNTIME ||= 'node';
      const func: ChildProcess = spawn('func', ['start', '--port', String(port)], { cwd: ROOT, env, stdio: 'inherit' });
      const exited = new Promise<void>((resolve) => func.once('exit', () => resolve()));
      stops.push(async () => {
        if (func.pid === undefined || func.exitCode !== null || func.signalCode !== null) return;
        func.kill('SIGTERM');
        await exited;
      });
      func.once('error', (error) => {
        console.error(`func start failed: ${error.message}`);
        void stopAll(1);
      });
      func.once('exit', (code) => {
        if (code) console.error(`func start exited with code ${code}.`);
        void stopAll(code ?? 0);
      });
      return;
    }

    // Built, the same files `func start` and Azure load: what package.json `main` names (the bundle).
    const appModules = FROM_SOURCES ? functionModules() : { functionModules: appEntryFiles(ROOT) };
    // As `func start` does with the same file: Host.CORS and Host.CORSCredentials.
    const cors = corsFromHostSettings(readHostSettings(settingsPath));
    const host: LocalHost = await startLocalHost({
      ...appModules,
      port,
      hostJsonPath: join(ROOT, 'host.json'),
      ...(cors ? { cors } : {}),
    });
    stops.push(() => host.close());
    const served = FROM_SOURCES
      ? 'the TypeScript sources'
      : `the built app (${appModules.functionModules.map((file) => relative(ROOT, file)).join(', ')})`;
    console.log(`\nServing ${served} with the local host${FROM_SOURCES ? '' : ' (Functions Core Tools not found)'}.`);
    console.log(formatRouteTable(host));
    if (host.queueTriggers.length > 0) console.log(formatQueueTriggers(host));
    console.log(
      `\nAPI ready on ${host.url}/${host.routePrefix}  (try: curl ${host.url}/${host.routePrefix}/health). Ctrl-C stops.`,
    );
  } catch (error) {
    console.error(`npm start failed: ${error instanceof Error ? error.message : String(error)}`);
    await stopAll(1);
  }
}

if (require.main === module) {
  void main();
}

/**
 * `npm start`: the API on http://localhost:7071/api on a fresh machine, no Azure subscription needed.
 * Settings come from the environment, then local.settings.json `Values`, then local defaults. Starts Azurite's Table
 * service (data kept in .azurite/), the local model when no AZURE_OPENAI_ENDPOINT is set, then serves the functions
 * with Functions Core Tools (`func start`) when it is on the PATH, else with the local host. Ctrl-C stops everything.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { functionModules, REPO_ROOT } from '../test/support/app';
import { startAzurite, type RunningAzurite } from '../test/support/azurite';
import {
  describeStandIn,
  startModelStandIn,
  DEFAULT_MODEL_STAND_IN_PORT,
  type ModelStandIn,
} from '../test/support/modelStandIn';
import { applyLocalSettings, DEFAULT_PORT, formatRouteTable, startLocalHost, type LocalHost } from './localHost';

const ROOT = REPO_ROOT;
const AZURITE_TABLE_PORT = 10002;
const LOCAL_MODEL_KEY = 'local-model-key';

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

async function main(): Promise<void> {
  const env = process.env;
  const applied = applyLocalSettings(join(ROOT, 'local.settings.json'), env);
  if (applied.length > 0) console.log(`Settings from local.settings.json: ${applied.join(', ')}`);
  const port = Number(env.PORT ?? DEFAULT_PORT);

  const stops: (() => Promise<void>)[] = [];
  let stopping = false;
  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    for (const stop of stops.reverse()) await stop().catch((error: unknown) => console.error(String(error)));
    process.exit(code);
  };
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));

  try {
    // Storage: Azurite unless a real account (or another connection string) is configured.
    const connection = env.TABLES_CONNECTION_STRING ?? '';
    if (!env.TABLES_ENDPOINT && (connection === '' || connection === 'UseDevelopmentStorage=true')) {
      env.TABLES_CONNECTION_STRING = 'UseDevelopmentStorage=true';
      if (await portAnswers(AZURITE_TABLE_PORT)) {
        console.log(`Azurite already answers on 127.0.0.1:${AZURITE_TABLE_PORT}; using it.`);
      } else {
        const azurite: RunningAzurite = await startAzurite({
          location: join(ROOT, '.azurite'),
          port: AZURITE_TABLE_PORT,
        });
        stops.push(() => azurite.stop());
        console.log(`Azurite Table service on 127.0.0.1:${azurite.port} (pid ${azurite.pid}), data in .azurite/`);
      }
    }

    // Model: the local stand-in unless an endpoint is configured.
    if (!env.AZURE_OPENAI_ENDPOINT) {
      const modelPort = (await portAnswers(DEFAULT_MODEL_STAND_IN_PORT)) ? 0 : DEFAULT_MODEL_STAND_IN_PORT;
      const model: ModelStandIn = await startModelStandIn({ port: modelPort, expectedApiKey: LOCAL_MODEL_KEY });
      stops.push(() => model.close());
      env.AZURE_OPENAI_ENDPOINT = model.url;
      env.AZURE_OPENAI_API_KEY = LOCAL_MODEL_KEY;
      env.AZURE_OPENAI_DEPLOYMENT ||= 'local-model';
      env.AZURE_OPENAI_MODEL ||= 'gpt-4o-mini';
      console.log(describeStandIn(model));
    }

    if (hasFunctionsCoreTools()) {
      console.log('Functions Core Tools found: running `func start`.');
      const func: ChildProcess = spawn('func', ['start', '--port', String(port)], { cwd: ROOT, env, stdio: 'inherit' });
      stops.push(async () => {
        if (func.exitCode === null && func.pid) process.kill(func.pid, 'SIGTERM');
      });
      func.once('exit', (code) => void stopAll(code ?? 0));
      return;
    }

    const host: LocalHost = await startLocalHost({
      ...functionModules(true),
      port,
      hostJsonPath: join(ROOT, 'host.json'),
    });
    stops.push(() => host.close());
    console.log(`\nFunctions Core Tools not found: serving with the local host.`);
    console.log(formatRouteTable(host));
    console.log(
      `\nAPI ready on ${host.url}/${host.routePrefix}  (try: curl ${host.url}/${host.routePrefix}/health). Ctrl-C stops.`,
    );
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    await stopAll(1);
  }
}

if (require.main === module) {
  void main();
}

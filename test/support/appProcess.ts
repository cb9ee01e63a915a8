/**
 * The app served by the local host in a child process of its own. The app reads its settings once per process,
 * so a test that needs several apps at once (another AUTH_MODE, or two instances sharing one Azurite, each
 * with its own limiter and caches) starts them here. Storage and the model stand-in stay in the test process.
 * The child runs this same file (see the bottom) under tsx; it is stopped by its PID. With LOOPBACK_ONLY_LOG in its
 * environment, the child refuses every connection off loopback and lists them in that file (./loopbackOnly.ts).
 */
import { spawn } from 'node:child_process';
import { startLocalHost } from '../../local/localHost';
import { functionModules, REPO_ROOT } from './app';
import { minimalChildEnv } from '../../local/processes';
import { refuseNonLoopback } from './loopbackOnly';

export interface AppProcess {
  /** Base URL of the API, e.g. http://127.0.0.1:40123/api */
  api: string;
  pid: number;
  /** The child's recent stdout and stderr, for failure messages. */
  output(): string;
  stop(): Promise<void>;
}

const READY = 'LOCAL_HOST_LISTENING ';
const OUTPUT_TAIL_CHARS = 8_000;

export async function startAppProcess(
  env: Record<string, string>,
  options: { startTimeoutMs?: number } = {},
): Promise<AppProcess> {
  const childEnv = minimalChildEnv(env);
  const child = spawn(process.execPath, ['--import', 'tsx', __filename], {
    cwd: REPO_ROOT,
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
    windowsHide: true,
  });
  if (child.pid === undefined) throw new Error('The app process could not be started.');
  const pid = child.pid;
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARS);
  };
  child.stderr.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    process.removeListener('exit', killOnExit);
  };

  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`The app process did not start within ${options.startTimeoutMs ?? 30_000} ms.`)),
        options.startTimeoutMs ?? 30_000,
      );
      let pending = '';
      child.stdout.on('data', (chunk: Buffer) => {
        keep(chunk);
        pending += chunk.toString('utf8');
        const line = pending.split('\n').find((candidate) => candidate.startsWith(READY));
        if (line) {
          clearTimeout(timer);
          resolve(line.slice(READY.length).trim());
        }
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`The app process exited before listening (code ${child.exitCode ?? child.signalCode}).`));
      });
    });
    return { api: `${url}/api`, pid, output: () => output, stop };
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}\n${output.trim() || '(no output)'}`, { cause: error });
  }
}

/** In the child: serve the app's function modules on a free loopback port and say where. */
async function serveInThisProcess(): Promise<void> {
  // A test that wants proof nothing leaves loopback names the file refusals go to (see ./loopbackOnly.ts).
  const loopbackOnlyLog = process.env['LOOPBACK_ONLY_LOG'];
  if (loopbackOnlyLog) refuseNonLoopback(loopbackOnlyLog);
  const host = await startLocalHost({
    ...functionModules(),
    port: 0,
    log: () => {},
    logError: (line) => console.error(line),
  });
  process.stdout.write(`${READY}${host.url}\n`);
  process.once('SIGTERM', () => {
    void host.close().finally(() => process.exit(0));
  });
}

if (require.main === module) {
  serveInThisProcess().catch((error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
    process.exit(1);
  });
}

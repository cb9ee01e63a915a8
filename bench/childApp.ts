/**
 * Starts the app in a child process, the way it runs for real: compiled, `node dist/local/localHost.js` in the
 * repository root (under tsx, bench/hostEntry.ts on the sources). Used for the cold start, for the memory figures
 * (the app's RSS alone, with `--expose-gc` and the memory agent) and for the app with its default limits on, which
 * needs settings of its own. Every child is stopped by its PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { REPO_ROOT } from '../local/app';
import { freePort, minimalChildEnv } from '../local/processes';

export type Preload = 'memoryAgent' | 'requireTimer';

export interface ChildAppOptions {
  compiled: boolean;
  /** The app's settings (the child inherits nothing else but what Node needs). */
  env: Record<string, string>;
  /** Node flags such as `--expose-gc`. */
  nodeFlags?: string[];
  preloads?: Preload[];
  /**
   * Also serve the bound function (bench/boundFunction.ts): the app then runs through bench/hostEntry (compiled:
   * dist/src and dist/bench, one copy of @azure/functions for both) instead of the bundle.
   */
  boundFunction?: boolean;
}

export interface ChildApp {
  pid: number;
  /** Base URL of the API (known before the child listens: the port is chosen here). */
  api: string;
  /** performance.now() just before the spawn. */
  spawnedAt: number;
  /** Resolves with performance.now() when the child printed that it listens. */
  listening: Promise<number>;
  /** Sends an IPC message (preloads only) and waits for the answer of the same type. */
  ask<T>(type: string): Promise<T>;
  output(): string;
  stop(): Promise<void>;
}

const OUTPUT_TAIL_CHARS = 8_000;
const LISTENING = /listening on http:\/\/\S+?, route prefix/;

/** The command line of an app process: compiled, the real local host; under tsx, bench/hostEntry.ts. */
export function childAppArgs(
  options: Pick<ChildAppOptions, 'compiled' | 'nodeFlags' | 'preloads' | 'boundFunction'>,
): string[] {
  const flags = [...(options.nodeFlags ?? [])];
  if (options.compiled) {
    for (const preload of options.preloads ?? []) {
      flags.push('--require', path.join(REPO_ROOT, 'dist', 'bench', `${preload}.js`));
    }
    const entry = options.boundFunction ? ['bench', 'hostEntry.js'] : ['local', 'localHost.js'];
    return [...flags, path.join(REPO_ROOT, 'dist', ...entry)];
  }
  // tsx/cjs for the preloads (they run before --import hooks), tsx for the telemetry SDK's dynamic import.
  flags.push('--require', 'tsx/cjs', '--import', 'tsx');
  for (const preload of options.preloads ?? []) flags.push('--require', path.join(REPO_ROOT, 'bench', `${preload}.ts`));
  return [...flags, path.join(REPO_ROOT, 'bench', 'hostEntry.ts')];
}

export async function startChildApp(options: ChildAppOptions): Promise<ChildApp> {
  const port = await freePort();
  const env = minimalChildEnv({
    ...options.env,
    PORT: String(port),
    ...(options.boundFunction ? { BENCH_BOUND_FUNCTION: '1' } : {}),
  });
  const ipc = (options.preloads ?? []).length > 0;
  const args = childAppArgs(options);
  const spawnedAt = performance.now();
  const child: ChildProcess = spawn(process.execPath, args, {
    cwd: REPO_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe', ...(ipc ? (['ipc'] as const) : [])],
    windowsHide: true,
  });
  if (child.pid === undefined) throw new Error(`Could not start ${args.join(' ')}`);
  const pid = child.pid;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  let output = '';
  const listening = new Promise<number>((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      const now = performance.now();
      output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARS);
      if (LISTENING.test(output)) resolve(now);
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARS);
    });
    void exited.then(() =>
      reject(new Error(`The app process exited (${child.exitCode ?? child.signalCode}):\n${output}`)),
    );
  });
  listening.catch(() => {}); // observed by whoever awaits it; an exit after stop() is expected

  let stopping: Promise<void> | undefined;
  return {
    pid,
    api: `http://127.0.0.1:${port}/api`,
    spawnedAt,
    listening,
    ask: <T>(type: string) =>
      new Promise<T>((resolve, reject) => {
        if (!child.send) {
          reject(new Error('The app process has no IPC channel.'));
          return;
        }
        const onMessage = (message: unknown) => {
          if (typeof message === 'object' && message !== null && (message as { type?: unknown }).type === type) {
            child.off('message', onMessage);
            resolve(message as T);
          }
        };
        child.on('message', onMessage);
        child.send({ type });
      }),
    output: () => output,
    stop: () => {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          process.kill(pid, 'SIGTERM');
          const timer = setTimeout(() => {
            if (child.exitCode === null && child.signalCode === null) process.kill(pid, 'SIGKILL');
          }, 5_000);
          await exited;
          clearTimeout(timer);
        }
        process.removeListener('exit', killOnExit);
      })();
      return stopping;
    },
  };
}

/** Waits until the app process listens, or fails with its output. */
export async function waitListening(app: ChildApp, timeoutMs = 60_000): Promise<number> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`The app process did not listen within ${timeoutMs} ms:\n${app.output()}`)),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([app.listening, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Indexes an app the way the Azure Functions Node.js worker does, in a child process of its own (the app reads its
 * settings once per process): the worker's built-in `@azure/functions-core` (the local host's stand-in, which the
 * real `@azure/functions` library registers through) is in place, package.json `main` is loaded, and the outcome
 * is reported as the worker answers the host's FunctionsMetadataRequest (azure-functions-nodejs-worker 3.x):
 *
 * - An exception while loading `main` becomes the app's blocking start error (Node 20+), with the message
 *   `Worker was unable to load entry point "<file>": <message>`.
 * - If the app registered at least one function (`isUsingWorkerIndexing`), the metadata response fails with that
 *   error: the host shows a failed function index carrying the message.
 * - If it registered none, the response asks the host to index by itself (`useDefaultMetadataIndexing`): the host
 *   finds no function.json, loads zero functions, and the error went to the worker's stderr only.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { appEntryFiles } from '../../local/host/appFiles';
import { installFunctionsCoreStandIn } from '../../local/host/functionsCore';
import { minimalChildEnv } from '../../local/processes';
import { REPO_ROOT } from './app';

export type WorkerIndexResult =
  | { useDefaultMetadataIndexing: true; functions: []; stderr: string }
  | { useDefaultMetadataIndexing: false; status: 'Success'; functions: string[]; stderr: string }
  | { useDefaultMetadataIndexing: false; status: 'Failure'; exception: string; functions: string[]; stderr: string };

const RESULT = 'WORKER_INDEX_RESULT ';

/** Indexes the app in `appDir` (its package.json `main`) with exactly `env` as settings. */
export async function indexLikeTheWorker(appDir: string, env: Record<string, string>): Promise<WorkerIndexResult> {
  const child = spawn(process.execPath, ['--import', 'tsx', __filename, appDir], {
    cwd: REPO_ROOT,
    env: minimalChildEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (exitCode) => resolve(exitCode)));
  clearTimeout(timer);
  const line = stdout.split('\n').find((candidate) => candidate.startsWith(RESULT));
  if (!line) throw new Error(`The indexing child exited ${code} without a result.\n${stdout}\n${stderr}`);
  return {
    ...(JSON.parse(line.slice(RESULT.length)) as Omit<WorkerIndexResult, 'stderr'>),
    stderr,
  } as WorkerIndexResult;
}

/** In the child: load `main` through the core module, then answer as the worker's FunctionsMetadataHandler. */
function indexInThisProcess(appDir: string): void {
  const core = installFunctionsCoreStandIn();
  let blockingError: Error | undefined;
  for (const file of appEntryFiles(appDir)) {
    core.loadingModule = file;
    try {
      createRequire(__filename)(file);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      blockingError = new Error(`Worker was unable to load entry point "${file}": ${message}`);
      // What the worker does with it besides: console.error(error.stack), which goes to the host's stderr.
      console.error(blockingError.message);
      break;
    } finally {
      core.loadingModule = undefined;
    }
  }
  const functions = [...core.registrationsByModule.values()].flat().map(({ metadata }) => metadata.name);
  const result =
    functions.length === 0
      ? { useDefaultMetadataIndexing: true, functions: [] }
      : blockingError
        ? { useDefaultMetadataIndexing: false, status: 'Failure', exception: blockingError.message, functions }
        : { useDefaultMetadataIndexing: false, status: 'Success', functions };
  process.stdout.write(`${RESULT}${JSON.stringify(result)}\n`);
}

if (require.main === module) {
  const appDir = process.argv[2];
  if (!appDir) throw new Error('usage: workerIndexing.ts <appDir>');
  indexInThisProcess(appDir);
}

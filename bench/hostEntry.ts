/**
 * The app in a process of its own when the benchmarks run from the TypeScript sources (tsx): what
 * `node dist/local/localHost.js` does for the compiled app, on src/ instead (compiled, it serves dist/src). With
 * BENCH_BOUND_FUNCTION=1 it also serves the bound function (bench/boundFunction.ts), compiled too: the app's modules
 * and the bound function then share one copy of @azure/functions. It prints the same "listening on" line.
 * Deliberately imports nothing from test/support, so the process loads only the host and the app.
 */
import { readdirSync } from 'node:fs';
import * as path from 'node:path';
import { startLocalHost } from '../local/localHost';

async function main(): Promise<void> {
  // Compiled, this file is dist/bench/hostEntry.js and serves dist/src; under tsx it serves src/.
  const extension = path.extname(__filename);
  const appRoot = path.resolve(__dirname, '..');
  const repoRoot = extension === '.js' ? path.resolve(appRoot, '..') : appRoot;
  const functionsDir = path.join(appRoot, 'src', 'functions');
  const host = await startLocalHost({
    setupModule: path.join(appRoot, 'src', `index${extension}`),
    functionModules: [
      ...readdirSync(functionsDir)
        .filter((file) => file.endsWith(extension) && !file.endsWith('.d.ts'))
        .sort()
        .map((file) => path.join(functionsDir, file)),
      ...(process.env['BENCH_BOUND_FUNCTION'] === '1' ? [path.join(__dirname, `boundFunction${extension}`)] : []),
    ],
    port: Number(process.env.PORT ?? '0'),
    hostJsonPath: path.join(repoRoot, 'host.json'),
    log: () => {},
  });
  console.log(`Local Functions host (no Core Tools) listening on ${host.url}, route prefix "/${host.routePrefix}":`);
  process.once('SIGTERM', () => {
    void host.close().finally(() => process.exit(0));
  });
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
  process.exit(1);
});

/**
 * The Azure Monitor distro as src/adapters/telemetry/azureMonitorSdk.ts starts it, in this process (node --test gives each file
 * a process of its own, so its global providers and patches stay here). The process is kept on loopback: the
 * ingestion endpoint is a closed loopback port, and anything headed elsewhere is refused (test/support/loopbackOnly).
 * What Application Insights receives end to end is test/integration/applicationInsights.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import type { IncomingMessage, Server } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { trace } from '@opentelemetry/api';
import type { TokenCredential } from '@azure/identity';
import { startAzureMonitorSdk } from '../../../../src/adapters/telemetry/azureMonitorSdk';
import { refuseNonLoopback } from '../../../support/loopbackOnly';

let folder: string;

const credential: TokenCredential = {
  getToken: async () => ({ token: 'unit-test-token', expiresOnTimestamp: Date.now() + 3_600_000 }),
};

before(async () => {
  folder = await mkdtemp(join(tmpdir(), 'telemetry-sdk-'));
  refuseNonLoopback(join(folder, 'refused.jsonl'));
  startAzureMonitorSdk({
    connectionString: 'InstrumentationKey=11111111-2222-4333-8444-555555555555;IngestionEndpoint=https://127.0.0.1:9/',
    credential,
  });
});

after(async () => {
  // Not shut down: that would flush to the closed port and wait out its retries. Its timers do not hold the process.
  await rm(folder, { recursive: true, force: true });
});

it('leaves node:http unpatched even when it is required after the SDK started', async () => {
  // A module loaded after start-up (a lazily imported dependency) requires http again: the distro's require hook
  // would patch it then, and every server and client in the process with it.
  const http = createRequire(__filename)('http') as typeof import('node:http');
  let seen: { activeSpan: boolean; traceparent: string | string[] | undefined } | undefined;
  const server: Server = http.createServer((request, response) => {
    seen = { activeSpan: trace.getActiveSpan() !== undefined, traceparent: request.headers.traceparent };
    response.end('ok');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((resolve, reject) => {
      http
        .get(`http://127.0.0.1:${port}/`, (response: IncomingMessage) => {
          response.resume();
          response.on('end', resolve);
        })
        .on('error', reject);
    });
    assert.deepEqual(seen, { activeSpan: false, traceparent: undefined }, 'no server span, no injected traceparent');
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

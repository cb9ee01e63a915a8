/**
 * A loopback stand-in for Application Insights ingestion (the "Breeze" track API), the endpoint a connection string's
 * `IngestionEndpoint=` names. The Azure Monitor exporter POSTs `{IngestionEndpoint}/v2.1/track` with a JSON array of
 * envelopes `{ ver, name, time, iKey, tags, data: { baseType, baseData } }` (plain JSON, not gzip; it also accepts a
 * gzip body should an exporter send one) and expects `200 { itemsReceived, itemsAccepted, errors: [] }`.
 *
 * With Entra ID auth the exporter's pipeline refuses to send a bearer token over plain HTTP, so the stand-in serves
 * HTTPS with a loopback certificate (see ./tls.ts); the client trusts it through NODE_EXTRA_CA_CERTS. It records
 * every request's Authorization header, and answers 401 when `requireBearer` is given and the token differs, as the
 * real service does for a missing or wrong token. Anything else (live metrics, another path) is answered 404 and
 * recorded, so a test can assert nothing else was called.
 */
import { readFile } from 'node:fs/promises';
import type { IncomingHttpHeaders } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';

export interface Envelope {
  ver?: number;
  name: string;
  time: string;
  iKey: string;
  sampleRate?: number;
  tags: Record<string, string>;
  data: { baseType: string; baseData: Record<string, unknown> & { properties?: Record<string, string> } };
}

export interface IngestionRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: IncomingHttpHeaders;
  /** Envelopes in the body of a track call. */
  envelopes: Envelope[];
  /** When it arrived (Date.now()). */
  at: number;
}

export interface IngestionStandIn {
  /** For the connection string's IngestionEndpoint, e.g. https://127.0.0.1:40123/ */
  endpoint: string;
  requests: IngestionRequest[];
  /** Every envelope accepted so far. */
  envelopes(): Envelope[];
  /** Polls until `found` returns something, or fails after `timeoutMs`. */
  waitFor<T>(found: () => T | undefined, timeoutMs?: number): Promise<T>;
  close(): Promise<void>;
}

export async function startIngestionStandIn(options: {
  /** From ./tls.ts createLoopbackCertificate. */
  certificate: { certificatePem: string; keyPath: string };
  /** The only bearer token accepted; others get 401. */
  requireBearer?: string;
}): Promise<IngestionStandIn> {
  const requests: IngestionRequest[] = [];
  const accepted: Envelope[] = [];
  const key = await readFile(options.certificate.keyPath, 'utf8');
  const server = createServer({ cert: options.certificate.certificatePem, key });
  server.on('request', (request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const url = new URL(request.url ?? '/', 'https://127.0.0.1');
      const record: IngestionRequest = {
        method: request.method ?? '',
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        headers: request.headers,
        envelopes: [],
        at: Date.now(),
      };
      requests.push(record);
      const answer = (status: number, body: unknown) =>
        response.writeHead(status, { 'content-type': 'application/json; charset=utf-8' }).end(JSON.stringify(body));
      if (request.method !== 'POST' || url.pathname !== '/v2.1/track') return answer(404, { error: 'Not found.' });
      if (options.requireBearer !== undefined && request.headers.authorization !== `Bearer ${options.requireBearer}`) {
        return answer(401, { itemsReceived: 0, itemsAccepted: 0, errors: [] });
      }
      let raw = Buffer.concat(chunks);
      if (request.headers['content-encoding'] === 'gzip') raw = gunzipSync(raw);
      let envelopes: Envelope[];
      try {
        const parsed: unknown = JSON.parse(raw.toString('utf8'));
        envelopes = (Array.isArray(parsed) ? parsed : [parsed]) as Envelope[];
      } catch {
        return answer(400, { itemsReceived: 0, itemsAccepted: 0, errors: [] });
      }
      record.envelopes = envelopes;
      accepted.push(...envelopes);
      answer(200, { itemsReceived: envelopes.length, itemsAccepted: envelopes.length, errors: [] });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    endpoint: `https://127.0.0.1:${port}/`,
    requests,
    envelopes: () => [...accepted],
    async waitFor(found, timeoutMs = 20_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const result = found();
        if (result !== undefined) return result;
        if (Date.now() > until) {
          throw new Error(`Not received within ${timeoutMs} ms; got ${accepted.length} envelopes.`);
        }
        await delay(50);
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

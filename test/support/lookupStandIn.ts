/**
 * A loopback stand-in for the read-only service `http_lookup` reads (TOOL_HTTP_LOOKUP_URL): it checks the key or the
 * bearer token, records every request with when it arrived and when it was answered, and answers by path:
 * `orders/<id>` a small JSON record, `big` 200,000 characters, `fail` HTTP 500, `hang` never (until close),
 * `missing` 404. `barrier/<id>` requests are held until `barrier` of them are in flight at once, so two calls made in
 * parallel are answered and two made one after the other are not (the second never arrives while the first waits).
 */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface LookupRequest {
  path: string;
  headers: IncomingHttpHeaders;
  arrivedAt: number;
  answeredAt?: number;
}

export interface LookupStandIn {
  /** The base URL, for TOOL_HTTP_LOOKUP_URL. */
  readonly url: string;
  readonly requests: LookupRequest[];
  /** The most requests that were in flight at one time. */
  readonly maxInFlight: number;
  close(): Promise<void>;
}

export const BIG_BODY_CHARS = 200_000;
/** Ordinary text, exactly BIG_BODY_CHARS long (one 200,000-letter word would make the tokenizers crawl). */
export const BIG_BODY = Array.from({ length: 10_000 }, (_, index) => `order ${index} shipped to Oslo; `)
  .join('')
  .slice(0, BIG_BODY_CHARS);

export async function startLookupStandIn(options: {
  apiKey?: { header: string; value: string };
  /** Read per request: the token may be known only after this starts. */
  bearerToken?: () => string | undefined;
  /** How many barrier requests must be in flight before they are all answered. */
  barrier?: number;
}): Promise<LookupStandIn> {
  const requests: LookupRequest[] = [];
  const hanging = new Set<ServerResponse>();
  const waiting: (() => void)[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://127.0.0.1');
    const record: LookupRequest = {
      path: url.pathname.replace(/^\/api\//, ''),
      headers: request.headers,
      arrivedAt: Date.now(),
    };
    requests.push(record);
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    const answer = (status: number, body: string, type = 'application/json') => {
      inFlight--;
      record.answeredAt = Date.now();
      response.writeHead(status, { 'content-type': type });
      response.end(body);
    };
    const authorized =
      (options.apiKey && request.headers[options.apiKey.header.toLowerCase()] === options.apiKey.value) ||
      (options.bearerToken?.() !== undefined && request.headers.authorization === `Bearer ${options.bearerToken()}`);
    if (!authorized) return answer(401, '{"error":"unauthorized"}');
    if (request.method !== 'GET') return answer(405, '{"error":"read only"}');
    const path = record.path;
    if (path === 'big') return answer(200, BIG_BODY, 'text/plain');
    if (path === 'fail') return answer(500, '{"error":"the database is down"}');
    if (path === 'missing') return answer(404, '{"error":"no such record"}');
    if (path === 'hang') {
      hanging.add(response);
      inFlight--;
      return;
    }
    const order = /^(orders|barrier)\/([\w-]+)$/.exec(path);
    if (!order) return answer(404, '{"error":"no such path"}');
    const body = JSON.stringify({ id: order[2], status: 'shipped', total: 42.5 });
    if (order[1] === 'orders') return answer(200, body);
    waiting.push(() => answer(200, body));
    if (waiting.length >= (options.barrier ?? 2)) for (const release of waiting.splice(0)) release();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/api/`,
    requests,
    get maxInFlight() {
      return maxInFlight;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const response of hanging) response.destroy();
        for (const release of waiting.splice(0)) release();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * A loopback OTLP/HTTP receiver for tests: accepts `POST /v1/traces`, `/v1/metrics` and `/v1/logs` in the JSON
 * encoding (OTEL_EXPORTER_OTLP_PROTOCOL=http/json), keeps what arrives, and flattens it into spans and histogram
 * points with plain attribute maps.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';

export type AttributeMap = Record<string, unknown>;

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  name: string;
  /** 1 internal, 2 server, 3 client. */
  kind: number;
  attributes: AttributeMap;
  status: { code?: number; message?: string };
  resource: AttributeMap;
}

export interface ReceivedPoint {
  metric: string;
  unit: string | undefined;
  attributes: AttributeMap;
  count: number;
  sum: number;
}

export interface OtlpReceiver {
  /** What OTEL_EXPORTER_OTLP_ENDPOINT should hold, e.g. http://127.0.0.1:4318 */
  url: string;
  spans(): ReceivedSpan[];
  points(): ReceivedPoint[];
  /** Every request body received, as parsed JSON (for failure messages). */
  bodies: { path: string; body: unknown }[];
  /** Polls until `found` returns something, or fails after `timeoutMs`. */
  waitFor<T>(found: () => T | undefined, timeoutMs?: number): Promise<T>;
  close(): Promise<void>;
}

interface AnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number;
  arrayValue?: { values?: AnyValue[] };
}
interface KeyValue {
  key: string;
  value: AnyValue;
}

function valueOf(value: AnyValue | undefined): unknown {
  if (!value) return undefined;
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.boolValue !== undefined) return value.boolValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.arrayValue) return (value.arrayValue.values ?? []).map(valueOf);
  return undefined;
}

function attributesOf(list: KeyValue[] | undefined): AttributeMap {
  return Object.fromEntries((list ?? []).map(({ key, value }) => [key, valueOf(value)]));
}

/** OTLP JSON carries ids as hex; the protobuf-JSON mapping would be base64: accept both. */
function hexId(id: string | undefined): string | undefined {
  if (!id) return undefined;
  return /^[0-9a-f]+$/i.test(id) && (id.length === 32 || id.length === 16)
    ? id.toLowerCase()
    : Buffer.from(id, 'base64').toString('hex');
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const points: ReceivedPoint[] = [];
  const bodies: { path: string; body: unknown }[] = [];

  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const path = (request.url ?? '').split('?')[0] ?? '';
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
      } catch {
        response.writeHead(400).end();
        return;
      }
      bodies.push({ path, body });
      if (path === '/v1/traces') collectSpans(body, spans);
      else if (path === '/v1/metrics') collectPoints(body, points);
      else if (path !== '/v1/logs') {
        response.writeHead(404).end();
        return;
      }
      response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    spans: () => [...spans],
    points: () => [...points],
    bodies,
    async waitFor(found, timeoutMs = 20_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const result = found();
        if (result !== undefined) return result;
        if (Date.now() > until) throw new Error(`Not received within ${timeoutMs} ms; got ${bodies.length} exports.`);
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

interface TracesBody {
  resourceSpans?: {
    resource?: { attributes?: KeyValue[] };
    scopeSpans?: {
      spans?: {
        traceId?: string;
        spanId?: string;
        parentSpanId?: string;
        name?: string;
        kind?: number;
        attributes?: KeyValue[];
        status?: { code?: number; message?: string };
      }[];
    }[];
  }[];
}

function collectSpans(body: unknown, into: ReceivedSpan[]): void {
  for (const resourceSpans of (body as TracesBody).resourceSpans ?? []) {
    const resource = attributesOf(resourceSpans.resource?.attributes);
    for (const scope of resourceSpans.scopeSpans ?? []) {
      for (const span of scope.spans ?? []) {
        into.push({
          traceId: hexId(span.traceId) ?? '',
          spanId: hexId(span.spanId) ?? '',
          parentSpanId: hexId(span.parentSpanId),
          name: span.name ?? '',
          kind: span.kind ?? 0,
          attributes: attributesOf(span.attributes),
          status: span.status ?? {},
          resource,
        });
      }
    }
  }
}

interface MetricsBody {
  resourceMetrics?: {
    scopeMetrics?: {
      metrics?: {
        name?: string;
        unit?: string;
        histogram?: { dataPoints?: { attributes?: KeyValue[]; count?: string | number; sum?: number }[] };
      }[];
    }[];
  }[];
}

function collectPoints(body: unknown, into: ReceivedPoint[]): void {
  for (const resourceMetrics of (body as MetricsBody).resourceMetrics ?? []) {
    for (const scope of resourceMetrics.scopeMetrics ?? []) {
      for (const metric of scope.metrics ?? []) {
        for (const point of metric.histogram?.dataPoints ?? []) {
          into.push({
            metric: metric.name ?? '',
            unit: metric.unit,
            attributes: attributesOf(point.attributes),
            count: Number(point.count ?? 0),
            sum: point.sum ?? 0,
          });
        }
      }
    }
  }
}

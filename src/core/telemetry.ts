/**
 * The telemetry port: what the core records about a turn, without an SDK. `src/adapters/telemetry/` implements it
 * with OpenTelemetry when an exporter is configured; otherwise `noTelemetry` costs nothing.
 *
 * Names follow the OpenTelemetry GenAI semantic conventions (development status): a `chat {model}` client span per
 * model call, the metrics `gen_ai.client.token.usage` and `gen_ai.client.operation.duration`. Message content is
 * recorded only when `captureContent` is on (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true).
 */
import { ChatError, RateLimitedError, UpstreamError } from './errors';

export type AttributeValue = string | number | boolean | string[];
export type Attributes = Record<string, AttributeValue | undefined>;

export interface SpanHandle {
  setAttributes(attributes: Attributes): void;
  /** Marks the span failed with `error.type` and an error status. */
  fail(error: unknown): void;
  /** Runs `fn` with this span active, so spans started inside nest under it. */
  run<T>(fn: () => T): T;
  end(): void;
}

export interface Telemetry {
  /** True only when a setting opted in to recording message content. */
  readonly captureContent: boolean;
  /** A span, child of the active one; the caller ends it (a stream outlives the call that opened it). */
  startSpan(name: string, options?: { kind?: 'internal' | 'client'; attributes?: Attributes }): SpanHandle;
  /** gen_ai.client.token.usage, once per token type (`gen_ai.token.type` input or output). */
  recordTokenUsage(tokens: number, attributes: Attributes): void;
  /** gen_ai.client.operation.duration, in seconds. */
  recordOperationDuration(seconds: number, attributes: Attributes): void;
}

const noSpan: SpanHandle = {
  setAttributes: () => {},
  fail: () => {},
  run: (fn) => fn(),
  end: () => {},
};

export const noTelemetry: Telemetry = {
  captureContent: false,
  startSpan: () => noSpan,
  recordTokenUsage: () => {},
  recordOperationDuration: () => {},
};

/** Runs `fn` in a span that ends when it settles, failed if it throws. */
export async function inSpan<T>(
  telemetry: Telemetry,
  name: string,
  options: { kind?: 'internal' | 'client'; attributes?: Attributes },
  fn: (span: SpanHandle) => Promise<T>,
): Promise<T> {
  const span = telemetry.startSpan(name, options);
  try {
    return await span.run(() => fn(span));
  } catch (error) {
    span.fail(error);
    throw error;
  } finally {
    span.end();
  }
}

/** `error.type`: low cardinality, as the conventions ask: the model's HTTP status, else our problem code. */
export function errorType(error: unknown): string {
  if (error instanceof UpstreamError && error.upstreamStatus !== undefined) return String(error.upstreamStatus);
  if (error instanceof RateLimitedError && error.code === 'upstream_rate_limited') return '429';
  if (error instanceof ChatError) return error.code;
  return error instanceof Error && error.name !== 'Error' ? error.name : '_OTHER';
}

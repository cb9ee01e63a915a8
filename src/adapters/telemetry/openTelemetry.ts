/**
 * The core's telemetry port over `@opentelemetry/api`: spans from the global tracer, the two GenAI histograms from
 * the global meter. Whatever SDK registered itself (./sdk.ts: the Azure Monitor distro or OTLP) receives them.
 * Loaded only when telemetry is configured (see ./index.ts).
 */
import {
  context,
  metrics,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes as OtelAttributes,
  type Context,
  type Span,
} from '@opentelemetry/api';
import { errorType, type Attributes, type SpanHandle, type Telemetry } from '../../core/telemetry';

export const INSTRUMENTATION_SCOPE = 'azure-chat-backend';

/** Bucket boundaries the GenAI conventions advise for the two histograms. */
const TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864];
const DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];

export function createOpenTelemetry(options: { captureContent: boolean }): Telemetry {
  const tracer = trace.getTracer(INSTRUMENTATION_SCOPE);
  const meter = metrics.getMeter(INSTRUMENTATION_SCOPE);
  const tokenUsage = meter.createHistogram('gen_ai.client.token.usage', {
    unit: '{token}',
    description: 'Number of input and output tokens used.',
    advice: { explicitBucketBoundaries: TOKEN_BUCKETS },
  });
  const duration = meter.createHistogram('gen_ai.client.operation.duration', {
    unit: 's',
    description: 'GenAI operation duration.',
    advice: { explicitBucketBoundaries: DURATION_BUCKETS },
  });
  return {
    captureContent: options.captureContent,
    startSpan(name, spanOptions) {
      const span = tracer.startSpan(name, {
        kind: spanOptions?.kind === 'client' ? SpanKind.CLIENT : SpanKind.INTERNAL,
        attributes: defined(spanOptions?.attributes),
      });
      return handle(span, trace.setSpan(context.active(), span));
    },
    recordTokenUsage: (tokens, attributes) => tokenUsage.record(tokens, defined(attributes)),
    recordOperationDuration: (seconds, attributes) => duration.record(seconds, defined(attributes)),
  };
}

/**
 * Runs `fn` as a child of the Functions host's span for this invocation (the W3C trace context the host hands the
 * worker), so the host's request and the app's turn make one trace, not two. This is what the
 * @azure/functions-opentelemetry-instrumentation package does in a preInvocation hook; done here in the one handler
 * wrapper instead, it needs neither a second copy of @azure/functions nor any load at cold start with telemetry off.
 */
export function inInvocationContext<T>(
  traceContext: { traceParent?: string | null; traceState?: string | null } | undefined,
  fn: () => T,
): T {
  if (!traceContext?.traceParent) return fn();
  const carrier: Record<string, string> = { traceparent: traceContext.traceParent };
  if (traceContext.traceState) carrier.tracestate = traceContext.traceState;
  const parent: Context = propagation.extract(ROOT_CONTEXT, carrier);
  return context.with(parent, fn);
}

function handle(span: Span, spanContext: Context): SpanHandle {
  return {
    setAttributes: (attributes) => span.setAttributes(defined(attributes)),
    fail: (error) => {
      const type = errorType(error);
      span.setAttribute('error.type', type);
      // The status carries the type, not the message: messages may quote what a user sent.
      span.setStatus({ code: SpanStatusCode.ERROR, message: type });
    },
    run: (fn) => context.with(spanContext, fn),
    end: () => span.end(),
  };
}

function defined(attributes: Attributes | undefined): OtelAttributes {
  const result: OtelAttributes = {};
  for (const [name, value] of Object.entries(attributes ?? {})) if (value !== undefined) result[name] = value;
  return result;
}

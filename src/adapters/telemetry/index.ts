/**
 * Telemetry on or off, decided once per process from the settings. Off (neither APPLICATIONINSIGHTS_CONNECTION_STRING
 * nor OTEL_EXPORTER_OTLP_ENDPOINT): the core gets `noTelemetry` and nothing of OpenTelemetry is loaded, so a cold
 * start costs what it did. On: the SDK (./sdk.ts, its own bundle file) starts first, then the port over the API.
 */
import type { TokenCredential } from '@azure/identity';
import type { Config } from '../../config';
import type { Logger } from '../../core/dependencies';
import { noTelemetry, type Telemetry } from '../../core/telemetry';

export interface AppTelemetry {
  telemetry: Telemetry;
  /** Runs a function invocation as a child of the host's span for it (one trace per request). */
  inInvocationContext<T>(
    traceContext: { traceParent?: string | null; traceState?: string | null } | undefined,
    fn: () => T,
  ): T;
}

const off: AppTelemetry = { telemetry: noTelemetry, inInvocationContext: (_traceContext, fn) => fn() };

let started: Promise<AppTelemetry> | undefined;

export function startTelemetry(
  config: Readonly<Config>,
  credential: () => Promise<TokenCredential>,
  log: Logger,
): Promise<AppTelemetry> {
  started ??= start(config, credential, log);
  return started;
}

async function start(
  config: Readonly<Config>,
  credential: () => Promise<TokenCredential>,
  log: Logger,
): Promise<AppTelemetry> {
  const { connectionString, otlpEndpoint, captureContent, serviceName } = config.telemetry;
  if (!connectionString && !otlpEndpoint) return off;
  const { startTelemetrySdk } = await import('./sdk.js');
  startTelemetrySdk({
    serviceName,
    otlp: Boolean(otlpEndpoint),
    ...(connectionString ? { azureMonitor: { connectionString, credential: await credential() } } : {}),
  });
  const { createOpenTelemetry, inInvocationContext } = await import('./openTelemetry.js');
  log.info(
    `Telemetry on: ${connectionString ? 'Application Insights (Entra ID)' : `OTLP to ${otlpEndpoint}`}` +
      `${connectionString && otlpEndpoint ? ' (OTEL_EXPORTER_OTLP_ENDPOINT is not used beside it)' : ''}` +
      `; message content ${captureContent ? 'recorded (opted in)' : 'not recorded'}.`,
  );
  return { telemetry: createOpenTelemetry({ captureContent }), inInvocationContext };
}

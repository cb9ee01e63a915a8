/**
 * Telemetry on or off, decided once per process from the settings. Off (neither APPLICATIONINSIGHTS_CONNECTION_STRING
 * nor OTEL_EXPORTER_OTLP_ENDPOINT): the core gets `noTelemetry` and nothing of OpenTelemetry is loaded, so a cold
 * start costs what it did. On: the one SDK configured (./azureMonitorSdk.ts or ./otlpSdk.ts, each its own bundle
 * file) starts first, then the port over the API. `stopTelemetry` exports what is buffered when the process ends.
 */
import type { TokenCredential } from '@azure/identity';
import type { Config } from '../../config';
import type { Logger } from '../../core/dependencies';
import { noTelemetry, type Telemetry } from '../../core/telemetry';
import type { RunningTelemetrySdk } from './sdkTypes';

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
let running: RunningTelemetrySdk | undefined;

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
  // With both set, Application Insights alone.
  if (connectionString) {
    const { startAzureMonitorSdk } = await import('./azureMonitorSdk.js');
    running = startAzureMonitorSdk({ connectionString, credential: await credential() });
  } else {
    const { startOtlpSdk } = await import('./otlpSdk.js');
    running = startOtlpSdk({ serviceName });
  }
  const { createOpenTelemetry, inInvocationContext } = await import('./openTelemetry.js');
  log.info(
    `Telemetry on: ${connectionString ? 'Application Insights (Entra ID)' : `OTLP to ${otlpEndpoint}`}` +
      `${connectionString && otlpEndpoint ? ' (OTEL_EXPORTER_OTLP_ENDPOINT is not used beside it)' : ''}` +
      `; message content ${captureContent ? 'recorded (opted in)' : 'not recorded'}.`,
  );
  return { telemetry: createOpenTelemetry({ captureContent }), inInvocationContext };
}

/**
 * Exports what the SDK still buffers (spans are batched, metrics read every minute) and stops it: run when the host
 * ends the process (the `appTerminate` hook, src/setup.ts), so an instance scaled in does not take its last turns'
 * telemetry with it. Nothing to do with telemetry off or not started; never throws (an export that fails is lost).
 */
export async function stopTelemetry(log: Pick<Logger, 'warn'> = console): Promise<void> {
  const sdk = running;
  running = undefined;
  if (!sdk) return;
  try {
    await sdk.shutdown();
  } catch (error) {
    log.warn(
      `Telemetry could not export what it held at shutdown: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
}

/**
 * Starts the OpenTelemetry Node SDK with OTLP exporters (OTEL_EXPORTER_OTLP_ENDPOINT set, no Application Insights)
 * and registers it globally. Bundled on its own (dist/app/telemetry-otlp.js).
 */
import { NodeSDK } from '@opentelemetry/sdk-node';
import type { RunningTelemetrySdk } from './sdkTypes';

export function startOtlpSdk(options: { serviceName: string }): RunningTelemetrySdk {
  // No exporter given: the SDK builds the OTLP trace and metric exporters from OTEL_* (OTEL_TRACES_EXPORTER,
  // OTEL_METRICS_EXPORTER, OTEL_EXPORTER_OTLP_PROTOCOL, ..._HEADERS, OTEL_METRIC_EXPORT_INTERVAL, ...).
  const sdk = new NodeSDK({ serviceName: options.serviceName, instrumentations: [] });
  sdk.start();
  return { shutdown: () => sdk.shutdown() };
}

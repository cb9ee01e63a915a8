/**
 * Starts an OpenTelemetry SDK and registers it globally: the Azure Monitor distro when
 * APPLICATIONINSIGHTS_CONNECTION_STRING is set (authenticated with Entra ID), the Node SDK with OTLP exporters when
 * OTEL_EXPORTER_OTLP_ENDPOINT is set (configured by the standard OTEL_* variables: protocol http/protobuf,
 * http/json or grpc, headers, intervals). With both set, Application Insights alone.
 *
 * This module is bundled on its own (dist/app/telemetry.js, see scripts/bundle.ts) and loaded only when one of
 * those settings is present, so an app with telemetry off never reads or parses it.
 */
import type { TokenCredential } from '@azure/identity';
import { useAzureMonitor, shutdownAzureMonitor } from '@azure/monitor-opentelemetry';
import { NodeSDK } from '@opentelemetry/sdk-node';

export interface TelemetrySdkOptions {
  serviceName: string;
  /** Application Insights; the credential is the app's managed identity (Entra ID auth). */
  azureMonitor?: { connectionString: string; credential: TokenCredential };
  /** Export over OTLP as the OTEL_* variables say (when there is no Application Insights). */
  otlp: boolean;
}

export interface RunningTelemetrySdk {
  /** Exports what is buffered and stops. */
  shutdown(): Promise<void>;
}

export function startTelemetrySdk(options: TelemetrySdkOptions): RunningTelemetrySdk {
  if (options.azureMonitor) {
    useAzureMonitor({
      azureMonitorExporterOptions: {
        connectionString: options.azureMonitor.connectionString,
        credential: options.azureMonitor.credential,
      },
      // Every turn, not 5 traces per second: the host samples requests itself (host.json samplingSettings).
      tracesPerSecond: 0,
      samplingRatio: 1,
    });
    return { shutdown: () => shutdownAzureMonitor() };
  }
  // No exporter given: the SDK builds the OTLP trace and metric exporters from OTEL_* (OTEL_TRACES_EXPORTER,
  // OTEL_METRICS_EXPORTER, OTEL_EXPORTER_OTLP_PROTOCOL, ..._HEADERS, OTEL_METRIC_EXPORT_INTERVAL, ...).
  const sdk = new NodeSDK({ serviceName: options.serviceName, instrumentations: [] });
  sdk.start();
  return { shutdown: () => sdk.shutdown() };
}

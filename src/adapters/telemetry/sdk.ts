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
import {
  useAzureMonitor,
  shutdownAzureMonitor,
  type AzureMonitorOpenTelemetryOptions,
} from '@azure/monitor-opentelemetry';
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

const NO_STATSBEAT = 'APPLICATION_INSIGHTS_NO_STATSBEAT';

type SpanProcessor = NonNullable<AzureMonitorOpenTelemetryOptions['spanProcessors']>[number];

/** Where Application Insights keeps a span's `error.type`. */
const APP_INSIGHTS_ERROR_TYPE = 'app.error.type';

/**
 * Application Insights stores a span's attributes as custom properties, except those its exporter reads as HTTP
 * semantics, and `error.type` is one of them: it is dropped, and a failed model call would arrive as a dependency with
 * `success: false`, result code 0 and no reason. A copy under another name is kept.
 */
const keepErrorType: SpanProcessor = {
  onStart: () => {},
  onEnding: (span) => {
    const type = span.attributes['error.type'];
    if (type !== undefined) span.setAttribute(APP_INSIGHTS_ERROR_TYPE, type);
  },
  onEnd: () => {},
  forceFlush: () => Promise.resolve(),
  shutdown: () => Promise.resolve(),
};

export function startTelemetrySdk(options: TelemetrySdkOptions): RunningTelemetrySdk {
  if (options.azureMonitor) {
    // The exporter's reports on its own use ("statsbeat") go to Microsoft's ingestion endpoints, not to this app's
    // Application Insights: 15 s after start, then every 15 minutes and daily. This variable is its only switch.
    process.env[NO_STATSBEAT] ??= 'true';
    useAzureMonitor({
      azureMonitorExporterOptions: {
        connectionString: options.azureMonitor.connectionString,
        credential: options.azureMonitor.credential,
      },
      // Every turn, not 5 traces per second: the host samples requests itself (host.json samplingSettings).
      tracesPerSecond: 0,
      samplingRatio: 1,
      // Live metrics would have every instance ping the live metrics service every 5 s for as long as it runs.
      // APPLICATIONINSIGHTS_CONFIGURATION_CONTENT={"enableLiveMetrics":true} turns it back on (it outranks this).
      enableLiveMetrics: false,
      // The app makes its own spans (./openTelemetry.ts). The distro's auto-instrumentations patch a module when it is
      // next required: from the first late require('http') on, every HTTP server in the process (the worker's
      // HTTP-stream server too) would make a request span beside the host's, and every storage and identity call a
      // client span.
      instrumentationOptions: {
        http: { enabled: false },
        azureSdk: { enabled: false },
        mongoDb: { enabled: false },
        mySql: { enabled: false },
        postgreSql: { enabled: false },
        redis: { enabled: false },
        redis4: { enabled: false },
      },
      spanProcessors: [keepErrorType],
    });
    return { shutdown: () => shutdownAzureMonitor() };
  }
  // No exporter given: the SDK builds the OTLP trace and metric exporters from OTEL_* (OTEL_TRACES_EXPORTER,
  // OTEL_METRICS_EXPORTER, OTEL_EXPORTER_OTLP_PROTOCOL, ..._HEADERS, OTEL_METRIC_EXPORT_INTERVAL, ...).
  const sdk = new NodeSDK({ serviceName: options.serviceName, instrumentations: [] });
  sdk.start();
  return { shutdown: () => sdk.shutdown() };
}

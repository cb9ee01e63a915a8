/**
 * Starts the Azure Monitor OpenTelemetry distro (APPLICATIONINSIGHTS_CONNECTION_STRING set), authenticated with Entra
 * ID, and registers it globally. Bundled on its own (dist/app/telemetry-azure-monitor.js).
 */
import type { TokenCredential } from '@azure/identity';
import {
  useAzureMonitor,
  shutdownAzureMonitor,
  type AzureMonitorOpenTelemetryOptions,
} from '@azure/monitor-opentelemetry';
import type { RunningTelemetrySdk } from './sdkTypes';

export interface AzureMonitorSdkOptions {
  connectionString: string;
  /** The app's managed identity (Entra ID auth). */
  credential: TokenCredential;
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

export function startAzureMonitorSdk(options: AzureMonitorSdkOptions): RunningTelemetrySdk {
  // The exporter's reports on its own use ("statsbeat") go to Microsoft's ingestion endpoints, not to this app's
  // Application Insights: 15 s after start, then every 15 minutes and daily. This variable is its only switch.
  process.env[NO_STATSBEAT] ??= 'true';
  useAzureMonitor({
    azureMonitorExporterOptions: {
      connectionString: options.connectionString,
      credential: options.credential,
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

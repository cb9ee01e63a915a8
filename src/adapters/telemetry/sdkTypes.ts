/**
 * What the telemetry SDK modules give back. Each SDK module (./azureMonitorSdk.ts, ./otlpSdk.ts) is bundled on its own
 * (dist/app/telemetry-azure-monitor.js, dist/app/telemetry-otlp.js; see scripts/bundle.ts) and loaded only when its
 * setting is present: an app with telemetry off reads neither, and an OTLP app never parses the Azure Monitor distro.
 */
export interface RunningTelemetrySdk {
  /** Exports what is buffered and stops. */
  shutdown(): Promise<void>;
}

import { app } from '@azure/functions';
import { settleBackgroundWork } from './adapters/backgroundWork';
import { stopTelemetry } from './adapters/telemetry';

// Streams replies over server-sent events (POST /api/conversations/{id}/messages/stream).
app.setup({ enableHttpStream: true });

// The worker runs appTerminate hooks when the host shuts it down (scale-in, restart, deployment): work left after
// answers (list-order moves, token settlements) finishes, then the telemetry SDK exports what it still buffers.
app.hook.appTerminate(async () => {
  await settleBackgroundWork();
  await stopTelemetry();
});

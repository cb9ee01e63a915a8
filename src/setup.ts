import { app } from '@azure/functions';

// Streams replies over server-sent events (POST /api/conversations/{id}/messages/stream).
app.setup({ enableHttpStream: true });

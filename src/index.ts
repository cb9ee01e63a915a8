import { app } from '@azure/functions';
import { validateStartupSettings } from './composition';

// Streams replies over server-sent events (POST /api/conversations/{id}/messages with Accept: text/event-stream).
app.setup({ enableHttpStream: true });

// Validate the settings as the worker loads the app, so a bad setting fails at start with its name.
validateStartupSettings();

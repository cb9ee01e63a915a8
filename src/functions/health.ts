import { app } from '@azure/functions';
import { withServices } from '../http/handler';
import { json } from '../http/request';

/**
 * GET /api/health: 200 when storage answers; 503 storage_unavailable when it does not, or configuration_invalid
 * (naming the settings) when the app's settings are invalid and this route still answers.
 */
export const health = withServices(async (_request, _context, services) => {
  await services.store.ping();
  return json(200, { status: 'ok', storage: 'ok' });
});

app.http('health', {
  route: 'health',
  methods: ['GET'],
  authLevel: 'anonymous',
  handler: health,
});

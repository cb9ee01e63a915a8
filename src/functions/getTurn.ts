import { app } from '@azure/functions';
import { NotFoundError } from '../core/errors';
import { withServices } from '../http/handler';
import { json, parseConversationId } from '../http/request';
import { parseTurnId } from '../http/turns/queuedTurns';
import { turnStatusBody } from '../http/turns/turnBodies';

/**
 * GET /api/conversations/{id}/turns/{turnId}: a queued turn's status (queued, running, completed with the body a
 * synchronous turn answers, or failed with its problem). Only its owner finds it: anyone else gets 404.
 */
export const getTurn = withServices(async (request, _context, services) => {
  const caller = await services.callers.resolve(request);
  const conversationId = parseConversationId(request.params.id);
  const turnId = parseTurnId(request.params.turnId);
  if (!services.jobs) throw new NotFoundError('This app runs no queued turns (no queue connection is configured).');
  return json(200, turnStatusBody(await services.jobs.view(caller, conversationId, turnId)));
});

app.http('getTurn', {
  route: 'conversations/{id}/turns/{turnId}',
  methods: ['GET'],
  authLevel: 'function',
  handler: getTurn,
});

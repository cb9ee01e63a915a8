import { app } from '@azure/functions';
import { withServices } from '../http/handler';
import { json, parseConversationId } from '../http/request';

/**
 * GET /api/conversations/{id}/pending-turn: the turn waiting for client-tool results (as `requires_action`), for a
 * client that lost the answer. DELETE cancels it: nothing of it is stored and the conversation takes messages again.
 */
export const pendingTurn = withServices(async (request, _context, services) => {
  const caller = await services.callers.resolve(request);
  const conversationId = parseConversationId(request.params.id);
  if (request.method === 'DELETE') {
    await services.turns.cancelPendingTurn(caller, conversationId);
    return { status: 204 };
  }
  const { replayed: _replayed, ...pending } = await services.turns.pendingTurn(caller, conversationId);
  return json(200, pending);
});

app.http('pendingTurn', {
  route: 'conversations/{id}/pending-turn',
  methods: ['GET', 'DELETE'],
  authLevel: 'function',
  handler: pendingTurn,
});

import { app } from '@azure/functions';
import { withServices } from '../http/handler';
import { json, parseConversationId, parseIdempotencyKey, readJson } from '../http/request';

/** POST /api/conversations/{id}/messages: one turn; the reply is stored with the user's message. */
export const sendMessage = withServices(async (request, _context, services) => {
  const caller = await services.callers.resolve(request);
  const conversationId = parseConversationId(request.params.id);
  const idempotencyKey = parseIdempotencyKey(request);
  const body = await readJson(request, services.schemas.sendMessage, services.config.limits.bodyBytes);
  const result = await services.turns.send({
    caller,
    conversationId,
    content: body.content,
    ...(body.name ? { name: body.name } : {}),
    ...(idempotencyKey ? { idempotencyKey } : {}),
  });
  const { replayed, ...response } = result;
  return json(200, response, replayed ? { 'Idempotent-Replayed': 'true' } : {});
});

app.http('sendMessage', {
  route: 'conversations/{id}/messages',
  methods: ['POST'],
  authLevel: 'function',
  handler: sendMessage,
});

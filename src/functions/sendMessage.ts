import { app } from '@azure/functions';
import { withServices } from '../http/handler';
import { json, parseConversationId, parseIdempotencyKey, readJson } from '../http/request';
import { streamTurn, wantsEventStream } from '../http/streamTurn';

/**
 * POST /api/conversations/{id}/messages: one turn; the reply is stored with the user's message (and the tool calls
 * and results between them). When the model calls a client tool the answer is `status: "requires_action"`.
 * With `Accept: text/event-stream` (or `?stream=true`) the reply streams as server-sent events.
 */
export const sendMessage = withServices(async (request, context, services) => {
  const caller = await services.callers.resolve(request);
  const conversationId = parseConversationId(request.params.id);
  const idempotencyKey = parseIdempotencyKey(request);
  const body = await readJson(request, services.schemas.sendMessage, services.config.limits.bodyBytes);
  const input = {
    caller,
    conversationId,
    content: body.content,
    ...(body.name ? { name: body.name } : {}),
    ...(idempotencyKey ? { idempotencyKey } : {}),
  };
  if (wantsEventStream(request.headers.get('accept'), request.query.get('stream'))) {
    return streamTurn(services.turns, input, {
      onDisconnect: services.config.chat.streamOnDisconnect,
      requestId: context.invocationId,
    });
  }
  const { replayed, ...response } = await services.turns.converse(input);
  return json(200, response, replayed ? { 'Idempotent-Replayed': 'true' } : {});
});

app.http('sendMessage', {
  route: 'conversations/{id}/messages',
  methods: ['POST'],
  authLevel: 'function',
  handler: sendMessage,
});

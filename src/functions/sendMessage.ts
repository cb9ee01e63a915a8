import { app } from '@azure/functions';
import { withServices } from '../http/handler';
import { json, parseConversationId, parseIdempotencyKey, readJson } from '../http/request';
import { streamTurn, wantsEventStream } from '../http/streamTurn';
import { acceptedTurn, newTurnId, prefersAsync, turnIdFor } from '../http/turns/queuedTurns';
import { ClientToolsNotAllowedError, NotFoundError } from '../core/errors';

/**
 * POST /api/conversations/{id}/messages: one turn; the reply is stored with the user's message (and the tool calls
 * and results between them). When the model calls a client tool the answer is `status: "requires_action"`.
 * With `Accept: text/event-stream` (or `?stream=true`) the reply streams as server-sent events.
 * With `Prefer: respond-async` the turn is queued: 202 with `Location` of its status resource (GET /turns/{turnId}).
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
  if (services.jobs && prefersAsync(request)) {
    const conversation = await services.store.get(caller, conversationId);
    if (!conversation) throw new NotFoundError('No conversation with this id exists for the caller.');
    // Nobody would be there to answer a client tool: refuse now rather than fail the queued turn later.
    if (conversation.clientTools?.length) throw new ClientToolsNotAllowedError();
    const job = await services.jobs.submit({
      caller,
      conversationId,
      content: body.content,
      ...(body.name ? { name: body.name } : {}),
      // With an Idempotency-Key a retried request finds the job it queued; without, every request is a new turn.
      turnId: idempotencyKey ? turnIdFor('idempotency-key', idempotencyKey) : newTurnId(),
      reply: { kind: 'none' },
    });
    return acceptedTurn(job, { 'Preference-Applied': 'respond-async' });
  }
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

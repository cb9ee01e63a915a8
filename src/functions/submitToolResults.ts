import { app } from '@azure/functions';
import { withServices } from '../http/handler';
import { json, parseConversationId, parseIdempotencyKey, readJson } from '../http/request';
import { streamOutcome, wantsEventStream } from '../http/streamTurn';

/**
 * POST /api/conversations/{id}/tool-results: the results of the client tools a paused turn waits for. The turn goes
 * on (the model is called with them) and the answer is the continued turn: completed, or paused again. With
 * `Accept: text/event-stream` (or `?stream=true`) it streams like a message.
 */
export const submitToolResults = withServices(async (request, context, services) => {
  const caller = await services.callers.resolve(request);
  const conversationId = parseConversationId(request.params.id);
  const idempotencyKey = parseIdempotencyKey(request);
  const body = await readJson(request, services.schemas.toolResults, services.config.limits.bodyBytes);
  const input = {
    caller,
    conversationId,
    results: body.results,
    ...(body.turnId ? { turnId: body.turnId } : {}),
    ...(idempotencyKey ? { idempotencyKey } : {}),
  };
  if (wantsEventStream(request.headers.get('accept'), request.query.get('stream'))) {
    return streamOutcome((handlers, signal) => services.turns.submitToolResults(input, signal, handlers), {
      onDisconnect: services.config.chat.streamOnDisconnect,
      requestId: context.invocationId,
    });
  }
  const { replayed, ...response } = await services.turns.submitToolResults(input);
  return json(200, response, replayed ? { 'Idempotent-Replayed': 'true' } : {});
});

app.http('submitToolResults', {
  route: 'conversations/{id}/tool-results',
  methods: ['POST'],
  authLevel: 'function',
  handler: submitToolResults,
});

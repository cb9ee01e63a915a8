import { app } from '@azure/functions';
import { withServices } from '../http/handler';
import { json } from '../http/request';
import { streamOutcome, wantsEventStream } from '../http/streamTurn';
import { readToolResults } from '../http/turns/messageTurns';

/**
 * POST /api/conversations/{id}/tool-results: the results of the client tools a paused turn waits for. The turn goes
 * on (the model is called with them) and the answer is the continued turn: completed, or paused again. Streamed, it
 * is POST .../tool-results/stream; `Accept: text/event-stream` (or `?stream=true`) here streams the same way.
 */
export const submitToolResults = withServices(async (request, context, services) => {
  const input = await readToolResults(request, services);
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

import { app } from '@azure/functions';
import { withServices } from '../http/handler';
import { streamOutcome } from '../http/streamTurn';
import { readToolResults } from '../http/turns/messageTurns';

/**
 * POST /api/conversations/{id}/tool-results/stream: the continued turn of POST .../tool-results, streamed as
 * server-sent events whatever the Accept header says (one answer per route, for typed clients).
 */
export const streamToolResults = withServices(async (request, context, services) => {
  const input = await readToolResults(request, services);
  return streamOutcome((handlers, signal) => services.turns.submitToolResults(input, signal, handlers), {
    onDisconnect: services.config.chat.streamOnDisconnect,
    requestId: context.invocationId,
  });
});

app.http('streamToolResults', {
  route: 'conversations/{id}/tool-results/stream',
  methods: ['POST'],
  authLevel: 'function',
  handler: streamToolResults,
});

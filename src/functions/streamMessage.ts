import { app } from '@azure/functions';
import { withServices } from '../http/handler';
import { streamTurn } from '../http/streamTurn';
import { readMessageTurn } from '../http/turns/messageTurns';

/**
 * POST /api/conversations/{id}/messages/stream: the turn of POST .../messages, its reply streamed as server-sent
 * events whatever the Accept header says. A route of its own so that the OpenAPI document can give each route one
 * answer: typed clients get the JSON reply from .../messages and a stream from here.
 */
export const streamMessage = withServices(async (request, context, services) =>
  streamTurn(services.turns, await readMessageTurn(request, services), {
    onDisconnect: services.config.chat.streamOnDisconnect,
    requestId: context.invocationId,
  }),
);

app.http('streamMessage', {
  route: 'conversations/{id}/messages/stream',
  methods: ['POST'],
  authLevel: 'function',
  handler: streamMessage,
});

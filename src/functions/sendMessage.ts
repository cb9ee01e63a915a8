import { app } from '@azure/functions';
import { withServices } from '../http/handler';
import { json } from '../http/request';
import { streamTurn, wantsEventStream } from '../http/streamTurn';
import { prefersAsync } from '../http/turns/queuedTurns';
import { queueMessageTurn, readMessageTurn } from '../http/turns/messageTurns';

/**
 * POST /api/conversations/{id}/messages: one turn; the reply is stored with the user's message (and the tool calls
 * and results between them). When the model calls a client tool the answer is `status: "requires_action"`.
 * For clients written before the routes of their own (POST .../messages/stream and POST .../turns): with
 * `Accept: text/event-stream` (or `?stream=true`) the reply streams as server-sent events, and with
 * `Prefer: respond-async` (and a queue connection) the turn is queued: 202 with `Location` of its status resource.
 */
export const sendMessage = withServices(async (request, context, services) => {
  const input = await readMessageTurn(request, services);
  if (services.jobs && prefersAsync(request)) {
    return queueMessageTurn(services, input, { 'Preference-Applied': 'respond-async' });
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

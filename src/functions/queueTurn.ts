import { app } from '@azure/functions';
import { withServices } from '../http/handler';
import { queueMessageTurn, readMessageTurn } from '../http/turns/messageTurns';

/**
 * POST /api/conversations/{id}/turns: the turn of POST .../messages, run on the queue: 202 at once with `Location`
 * naming its status resource (GET .../turns/{turnId}). 404 without a queue connection.
 */
export const queueTurn = withServices(async (request, _context, services) =>
  queueMessageTurn(services, await readMessageTurn(request, services)),
);

app.http('queueTurn', {
  route: 'conversations/{id}/turns',
  methods: ['POST'],
  authLevel: 'function',
  handler: queueTurn,
});

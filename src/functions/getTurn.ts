import { app } from '@azure/functions';
import { NotFoundError } from '../core/errors';
import { withServices } from '../http/handler';
import { json, parseConversationId } from '../http/request';
import { NO_QUEUE } from '../http/turns/messageTurns';
import { parseTurnId } from '../http/turns/queuedTurns';
import { turnStatusBody } from '../http/turns/turnBodies';
import { decodeWebhookSecret, verifyStandardWebhook } from '../http/webhooks/standardWebhooks';
import { WEBHOOK_CALLER } from '../http/webhooks/threadTurn';
import type { AppServices } from '../composition';
import type { HttpRequest } from '@azure/functions';
import type { Caller } from '../core/ports';

/**
 * GET /api/conversations/{id}/turns/{turnId}: a queued turn's status (queued, running, completed with the body a
 * synchronous turn answers, or failed with its problem). Only its owner finds it: anyone else gets 404.
 * The integration of /api/webhooks/messages reads its turns with a Standard Webhooks signature (WEBHOOK_SECRET) over
 * `GET {path}` in place of a body: the request is then the integration's principal.
 */
export const getTurn = withServices(async (request, _context, services) => {
  const caller = request.headers.has('webhook-signature')
    ? integrationCaller(request, services)
    : await services.callers.resolve(request);
  const conversationId = parseConversationId(request.params.id);
  const turnId = parseTurnId(request.params.turnId);
  if (!services.jobs) throw new NotFoundError(NO_QUEUE);
  return json(200, turnStatusBody(await services.jobs.view(caller, conversationId, turnId)));
});

function integrationCaller(request: HttpRequest, services: AppServices): Caller {
  const secrets = services.config.webhooks.standardSecrets;
  if (secrets.length === 0) throw new NotFoundError('Webhook deliveries are not enabled on this app.');
  verifyStandardWebhook({
    headers: {
      id: request.headers.get('webhook-id'),
      timestamp: request.headers.get('webhook-timestamp'),
      signature: request.headers.get('webhook-signature'),
    },
    body: Buffer.from(`GET ${new URL(request.url).pathname}`, 'utf8'),
    keys: secrets.map(decodeWebhookSecret),
    now: new Date(),
  });
  return WEBHOOK_CALLER;
}

app.http('getTurn', {
  route: 'conversations/{id}/turns/{turnId}',
  methods: ['GET'],
  authLevel: 'function',
  handler: getTurn,
});

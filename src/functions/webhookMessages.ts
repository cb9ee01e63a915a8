import { app } from '@azure/functions';
import { NotFoundError } from '../core/errors';
import { withServices } from '../http/handler';
import { json, parseJsonBytes, readBodyBytes } from '../http/request';
import { webhookMessageSchema } from '../http/webhooks/schemas';
import { decodeWebhookSecret, verifyStandardWebhook } from '../http/webhooks/standardWebhooks';
import { acceptedTurn } from '../http/turns/queuedTurns';
import { participantName, queueThreadTurn, runThreadTurn, WEBHOOK_CALLER } from '../http/webhooks/threadTurn';

/**
 * POST /api/webhooks/messages: a message from an integration, signed per Standard Webhooks with WEBHOOK_SECRET.
 * Anonymous at the Functions level because the signature is the authentication; the raw bytes are verified before
 * anything else reads them. `threadId` maps to a conversation of the integration's principal; the reply comes back
 * in the response, and a redelivery (same webhook-id) answers the stored reply without a second model call.
 * With WEBHOOK_CALLBACK_URL set, a delivery is answered 202 at once and the outcome is sent to the callback.
 */
export const webhookMessages = withServices(async (request, _context, services) => {
  const secrets = services.config.webhooks.standardSecrets;
  if (secrets.length === 0)
    throw new NotFoundError('Webhook deliveries are not enabled on this app (WEBHOOK_SECRET is not set).');
  const bytes = await readBodyBytes(request, services.config.limits.bodyBytes);
  const delivery = verifyStandardWebhook({
    headers: {
      id: request.headers.get('webhook-id'),
      timestamp: request.headers.get('webhook-timestamp'),
      signature: request.headers.get('webhook-signature'),
    },
    body: bytes,
    keys: secrets.map(decodeWebhookSecret),
    now: new Date(),
  });
  const body = parseJsonBytes(request, bytes, webhookMessageSchema(services.config.chat));
  const name = body.name ?? participantName(body.user);
  if (services.config.webhooks.callback && services.jobs) {
    // The integration has a callback: answer now, run the turn on the queue, send the outcome there.
    const job = await queueThreadTurn(services, services.jobs, {
      principal: WEBHOOK_CALLER,
      source: 'webhook',
      threadId: body.threadId,
      content: body.content,
      ...(name ? { name } : {}),
      deliveryId: delivery.id,
      reply: { kind: 'webhook', threadId: body.threadId },
    });
    return acceptedTurn(job);
  }
  const { body: response, replayed } = await runThreadTurn(services, {
    principal: WEBHOOK_CALLER,
    source: 'webhook',
    threadId: body.threadId,
    content: body.content,
    ...(name ? { name } : {}),
    deliveryId: delivery.id,
  });
  return json(200, response, replayed ? { 'Idempotent-Replayed': 'true' } : {});
});

app.http('webhookMessages', {
  route: 'webhooks/messages',
  methods: ['POST'],
  authLevel: 'anonymous',
  handler: webhookMessages,
});

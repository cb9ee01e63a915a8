/**
 * Integrations get their replies, through the real path: a signed delivery into the local host, the turn on Azurite's
 * queue, the model stand-in; then a loopback receiver verifying every callback with `standardwebhooks`, or a GitHub
 * stand-in that exchanges the app's JWT for an installation token and takes the comment.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, beforeEach, describe, it } from 'node:test';
import { QueueClient } from '@azure/storage-queue';
import { Webhook } from 'standardwebhooks';
import { threadConversationId } from '../../src/http/webhooks/threadTurn';
import { call, startTestApp, type TestApp } from '../support/app';
import { startGithubStandIn, type GithubStandIn } from '../support/githubStandIn';
import { startWebhookReceiver, type WebhookReceiver } from '../support/webhookReceiver';
import { createHmac } from 'node:crypto';

const INBOUND_SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const CALLBACK_SECRET = 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD';
const ATTEMPTS = 4;

let app: TestApp;
let receiver: WebhookReceiver;
let github: GithubStandIn;
const GITHUB_SECRET = "It's a Secret to Everybody";

before(async () => {
  receiver = await startWebhookReceiver(CALLBACK_SECRET);
  github = await startGithubStandIn();
  app = await startTestApp({
    queue: true,
    env: {
      WEBHOOK_SECRET: INBOUND_SECRET,
      WEBHOOK_CALLBACK_URL: receiver.url,
      WEBHOOK_CALLBACK_SECRET: CALLBACK_SECRET,
      WEBHOOK_CALLBACK_ATTEMPTS: String(ATTEMPTS),
      WEBHOOK_CALLBACK_BACKOFF_SECONDS: '1',
      GITHUB_WEBHOOK_SECRET: GITHUB_SECRET,
      GITHUB_APP_ID: github.appId,
      // As app settings often hold a PEM: on one line with \n escapes.
      GITHUB_APP_PRIVATE_KEY: github.privateKey.replace(/\n/g, '\\n'),
      GITHUB_API_URL: github.url,
    },
  });
});

after(async () => {
  await app?.close();
  await receiver?.close();
  await github?.close();
});

beforeEach(() => {
  receiver.failNext(0);
  receiver.refuseAll(false);
});

function signed(payload: unknown, id = `msg_${randomUUID()}`) {
  const at = new Date();
  const body = JSON.stringify(payload);
  return {
    id,
    body,
    headers: {
      'content-type': 'application/json',
      'webhook-id': id,
      'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
      'webhook-signature': new Webhook(INBOUND_SECRET).sign(id, at, body),
    },
  };
}

/** The status resource, read as the integration: a Standard Webhooks signature over `GET {path}`. */
async function turnStatus(conversationId: string, turnId: string) {
  const path = `/api/conversations/${conversationId}/turns/${turnId}`;
  const id = `status_${randomUUID()}`;
  const at = new Date();
  return call('GET', `${app.api.replace(/\/api$/, '')}${path}`, undefined, {
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(INBOUND_SECRET).sign(id, at, `GET ${path}`),
  });
}

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function deliveriesFor(turnId: string) {
  return receiver.deliveries.filter(
    (delivery) => delivery.payload?.data?.turnId === turnId || delivery.id === `evt_${turnId}`,
  );
}

describe('a delivery with a callback configured', () => {
  it('is answered 202 while the model takes 5 s, and the receiver gets exactly one verified turn.completed', async () => {
    app.model.enqueueFault({ kind: 'slow', delayMs: 5_000 });
    const sent = signed({ threadId: 'desk#1', content: 'Where is my parcel?', user: 'ann' });
    const response = await call('POST', `${app.api}/webhooks/messages`, sent.body, sent.headers);
    assert.equal(response.status, 202, response.text);
    assert.deepEqual(Object.keys(response.body).sort(), ['conversationId', 'status', 'turnId']);
    assert.equal(response.body.conversationId, threadConversationId('desk#1'));
    assert.equal(response.body.status, 'queued');
    const { turnId } = response.body;
    // Answered without waiting for the model: the reply is not there yet.
    const early = await turnStatus(response.body.conversationId, turnId);
    assert.ok(['queued', 'running'].includes(early.body.status), early.text);
    assert.equal(early.body.message, undefined);

    const status = await until('the delivered status', async () => {
      const read = await turnStatus(response.body.conversationId, turnId);
      return read.body?.delivery?.state === 'delivered' ? read : undefined;
    });
    assert.equal(status.body.status, 'completed');
    const received = deliveriesFor(turnId);
    assert.equal(received.length, 1, JSON.stringify(received));
    const [delivery] = received;
    assert.ok(delivery?.verified && delivery.accepted);
    assert.equal(delivery.id, `evt_${turnId}`);
    assert.equal(delivery.payload.type, 'turn.completed');
    assert.equal(delivery.payload.data.threadId, 'desk#1');
    assert.equal(delivery.payload.data.conversationId, response.body.conversationId);
    assert.deepEqual(delivery.payload.data.message, status.body.message);
    assert.ok(delivery.payload.data.message.content.length > 0);

    // A redelivery of the same message queues nothing new and calls the model no more.
    const calls = app.model.callCount;
    const again = await call('POST', `${app.api}/webhooks/messages`, sent.body, sent.headers);
    assert.equal(again.status, 202, again.text);
    assert.equal(again.body.turnId, turnId);
    assert.equal(again.body.status, 'completed');
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.equal(app.model.callCount, calls);
    assert.equal(deliveriesFor(turnId).length, 1);
  });

  it('retries a failing receiver with backoff: three failures, then one accepted delivery, one webhook-id', async () => {
    receiver.failNext(3);
    const sent = signed({ threadId: 'desk#2', content: 'Retry me' });
    const response = await call('POST', `${app.api}/webhooks/messages`, sent.body, sent.headers);
    assert.equal(response.status, 202, response.text);
    const { turnId, conversationId } = response.body;
    const status = await until('the delivered status', async () => {
      const read = await turnStatus(conversationId, turnId);
      return read.body?.delivery?.state === 'delivered' ? read : undefined;
    });
    assert.equal(status.body.delivery.attempts, 4);
    const received = deliveriesFor(turnId);
    assert.deepEqual(
      received.map((delivery) => delivery.accepted),
      [false, false, false, true],
    );
    assert.deepEqual(new Set(received.map((delivery) => delivery.id)), new Set([`evt_${turnId}`]));
    assert.ok(received.every((delivery) => delivery.verified));
    // Backoff: each wait at least as long as the one before (1 s, 2 s, 4 s).
    const times = received.map((delivery) => Number(delivery.timestamp));
    assert.ok(times[3]! - times[0]! >= 1 + 2 + 4 - 1, `attempts at ${times.join(', ')}`);
  });

  it('gives up on a receiver that never accepts: the job in the poison queue, the turn stored, the status says so', async () => {
    receiver.refuseAll(true);
    const sent = signed({ threadId: 'desk#3', content: 'Nobody listens' });
    const response = await call('POST', `${app.api}/webhooks/messages`, sent.body, sent.headers);
    assert.equal(response.status, 202, response.text);
    const { turnId, conversationId } = response.body;
    const status = await until('the failed delivery', async () => {
      const read = await turnStatus(conversationId, turnId);
      return read.body?.delivery?.state === 'failed' ? read : undefined;
    });
    assert.equal(status.body.status, 'completed');
    assert.equal(status.body.delivery.attempts, ATTEMPTS);
    assert.match(status.body.delivery.lastError, /503|500/);
    assert.ok(status.body.message.content.length > 0, 'the turn stays stored');
    assert.equal(deliveriesFor(turnId).length, ATTEMPTS);

    const poison = new QueueClient(app.azurite.connectionString, 'turn-jobs-poison');
    const messages = await until('the poison message', async () => {
      const peeked = await poison.peekMessages({ numberOfMessages: 32 });
      const found = peeked.peekedMessageItems
        .map((item) => JSON.parse(Buffer.from(item.messageText, 'base64').toString('utf8')))
        .filter((message) => message.turnId === turnId);
      return found.length > 0 ? found : undefined;
    });
    assert.equal(messages.length, 1);
    assert.equal(messages[0].type, 'delivery');
    assert.match(messages[0].reason, /delivery failed after 4 attempts/);
  });

  it('refuses a status read signed with another secret', async () => {
    const path = `/api/conversations/${threadConversationId('desk#1')}/turns/turn_${'a'.repeat(32)}`;
    const at = new Date();
    const response = await call('GET', `${app.api.replace(/\/api$/, '')}${path}`, undefined, {
      'webhook-id': 'x1',
      'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
      'webhook-signature': new Webhook(CALLBACK_SECRET).sign('x1', at, `GET ${path}`),
    });
    assert.equal(response.status, 401, response.text);
  });
});

describe('GitHub deliveries with a GitHub App configured', () => {
  function githubDelivery(event: string, payload: unknown, deliveryId = randomUUID()) {
    const body = JSON.stringify(payload);
    return {
      body,
      headers: {
        'content-type': 'application/json',
        'x-github-event': event,
        'x-github-delivery': deliveryId,
        'x-hub-signature-256': `sha256=${createHmac('sha256', GITHUB_SECRET).update(body).digest('hex')}`,
      },
    };
  }

  const comment = (body: string, user: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
    action: 'created',
    installation: { id: 777 },
    repository: { full_name: 'octo/repo' },
    issue: { number: 42, title: 'Broken build', body: 'It fails', user: { login: 'ann', type: 'User' } },
    comment: { body, user, ...extra },
  });

  it('acknowledges at once and posts one comment on the issue with the installation token; a redelivery adds none', async () => {
    const sent = githubDelivery('issue_comment', comment('Why does the build fail?', { login: 'ann', type: 'User' }));
    const response = await call('POST', `${app.api}/webhooks/github`, sent.body, sent.headers);
    assert.equal(response.status, 202, response.text);
    assert.equal(response.body.status, 'queued');
    assert.equal(response.body.conversationId, threadConversationId('octo/repo#42'));

    const posted = await until('the comment', () => (github.comments.length > 0 ? github.comments : undefined));
    assert.deepEqual(github.refusals, []);
    assert.equal(posted.length, 1);
    const [first] = posted;
    assert.equal(first?.repository, 'octo/repo');
    assert.equal(first?.issueNumber, 42);
    assert.equal(first?.installationId, 777);
    assert.deepEqual(
      github.tokenExchanges.map((exchange) => exchange.installationId),
      [777],
    );
    assert.equal(first?.token, github.tokenExchanges[0]?.token);
    assert.ok(first?.body.includes(response.body.turnId), 'the comment names its turn in a hidden marker');
    assert.ok(first!.body.replace(/<!--.*-->/s, '').trim().length > 0);

    const calls = app.model.callCount;
    const again = await call('POST', `${app.api}/webhooks/github`, sent.body, sent.headers);
    assert.equal(again.status, 202, again.text);
    assert.equal(again.body.turnId, response.body.turnId);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.equal(github.comments.length, 1);
    assert.equal(app.model.callCount, calls);
  });

  it("never answers the app's own comment", async () => {
    const calls = app.model.callCount;
    const before = github.comments.length;
    const own = githubDelivery(
      'issue_comment',
      comment(
        github.comments[0]?.body ?? 'a reply',
        { login: 'chat-app[bot]', type: 'Bot' },
        {
          performed_via_github_app: { id: Number(github.appId) },
        },
      ),
    );
    const response = await call('POST', `${app.api}/webhooks/github`, own.body, own.headers);
    assert.equal(response.status, 202, response.text);
    assert.equal(response.body.status, 'ignored');
    // Also when GitHub reports the app but not the Bot type.
    const viaApp = githubDelivery(
      'issue_comment',
      comment(
        'posted through the app',
        { login: 'ann', type: 'User' },
        {
          performed_via_github_app: { id: Number(github.appId) },
        },
      ),
    );
    const second = await call('POST', `${app.api}/webhooks/github`, viaApp.body, viaApp.headers);
    assert.equal(second.body.status, 'ignored', second.text);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    assert.equal(app.model.callCount, calls);
    assert.equal(github.comments.length, before);
  });
});

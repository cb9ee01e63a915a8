/**
 * Webhook deliveries through the real HTTP path (local host, Azurite, model stand-in). Standard Webhooks
 * deliveries are signed with the `standardwebhooks` npm package, an independent implementation of the spec; GitHub
 * deliveries with a plain HMAC as GitHub computes it.
 */
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { threadConversationId } from '../../src/http/webhooks/threadTurn';
import { call, startTestApp, type TestApp } from '../support/app';
import { startAppProcess } from '../support/appProcess';

// Test secrets in the spec's format (whsec_ + base64 of random bytes).
const OLD_SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const NEW_SECRET = 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD';
const GITHUB_SECRET = "It's a Secret to Everybody";

let app: TestApp;

before(async () => {
  app = await startTestApp({
    env: {
      TABLES_PREFIX: `hooks${Date.now().toString(36)}`,
      WEBHOOK_SECRET: `${OLD_SECRET} ${NEW_SECRET}`,
      GITHUB_WEBHOOK_SECRET: GITHUB_SECRET,
    },
  });
});

after(async () => {
  await app?.close();
});

interface Delivery {
  id: string;
  body: string;
  headers: Record<string, string>;
}

/** A delivery as a Standard Webhooks sender makes it: the signature covers id, timestamp and the exact bytes. */
function delivery(payload: unknown, options: { secret?: string; id?: string; at?: Date } = {}): Delivery {
  const id = options.id ?? `msg_${randomUUID()}`;
  const at = options.at ?? new Date();
  const body = JSON.stringify(payload);
  return {
    id,
    body,
    headers: {
      'content-type': 'application/json',
      'webhook-id': id,
      'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
      'webhook-signature': new Webhook(options.secret ?? NEW_SECRET).sign(id, at, body),
    },
  };
}

function post(path: string, body: string, headers: Record<string, string>) {
  return call('POST', `${app.api}/webhooks/${path}`, body, headers);
}

function assertRefused(response: Awaited<ReturnType<typeof call>>, pattern?: RegExp) {
  assert.equal(response.status, 401, response.text);
  assert.match(response.headers.get('content-type') ?? '', /^application\/problem\+json/);
  assert.equal(response.body.code, 'invalid_signature');
  if (pattern) assert.match(response.body.detail, pattern);
}

describe('POST /api/webhooks/messages', () => {
  it('runs a turn for a valid delivery and answers the reply', async () => {
    const before = app.model.callCount;
    const sent = delivery({ threadId: 'support#1', content: 'Hello from the integration', user: 'ann@example.com' });
    const response = await post('messages', sent.body, sent.headers);
    assert.equal(response.status, 200, response.text);
    assert.deepEqual(Object.keys(response.body).sort(), ['conversationId', 'finishReason', 'message', 'usage']);
    assert.equal(response.body.conversationId, threadConversationId('support#1'));
    assert.equal(response.body.message.role, 'assistant');
    assert.ok(response.body.message.content.length > 0);
    assert.equal(response.body.finishReason, 'stop');
    assert.ok(response.body.usage.totalTokens > 0);
    assert.equal(app.model.callCount, before + 1);
    const request = app.model.requests.at(-1)?.body;
    assert.deepEqual(request?.messages.at(-1), {
      role: 'user',
      content: 'Hello from the integration',
      name: 'ann_example_com',
    });
  });

  it('keeps a thread in one conversation, owned by the integration and invisible to other callers', async () => {
    const first = delivery({ threadId: 'support#2', content: 'first question' });
    const second = delivery({ threadId: 'support#2', content: 'second question' });
    const a = await post('messages', first.body, first.headers);
    const b = await post('messages', second.body, second.headers);
    assert.equal(a.body.conversationId, b.body.conversationId);
    const sentToModel = app.model.requests.at(-1)?.body?.messages.map((message) => message.content);
    assert.deepEqual(sentToModel?.slice(1, 3), ['first question', a.body.message.content]);
    // The local caller (AUTH_MODE=none) does not own the integration's conversations.
    assert.equal((await call('GET', `${app.api}/conversations/${a.body.conversationId}`)).status, 404);
  });

  it('refuses a tampered body, and the same JSON re-serialised, before calling the model', async () => {
    const before = app.model.callCount;
    const sent = delivery({ threadId: 'support#3', content: 'pay 10 EUR' });
    assertRefused(await post('messages', sent.body.replace('10 EUR', '99 EUR'), sent.headers), /does not match/);
    const reserialised = JSON.stringify(JSON.parse(sent.body), null, 2);
    assertRefused(await post('messages', reserialised, sent.headers), /does not match/);
    assert.equal(app.model.callCount, before);
  });

  it('refuses a stale or future timestamp even with a valid signature', async () => {
    const stale = delivery({ threadId: 'support#4', content: 'old' }, { at: new Date(Date.now() - 6 * 60_000) });
    assertRefused(await post('messages', stale.body, stale.headers), /old/);
    const future = delivery({ threadId: 'support#4', content: 'early' }, { at: new Date(Date.now() + 6 * 60_000) });
    assertRefused(await post('messages', future.body, future.headers), /future/);
  });

  it('refuses a wrong-length signature, another secret and missing headers', async () => {
    const sent = delivery({ threadId: 'support#5', content: 'hi' });
    const digest = Buffer.from(sent.headers['webhook-signature']!.slice(3), 'base64');
    for (const signature of [
      `v1,${digest.subarray(0, 16).toString('base64')}`,
      `v1,${Buffer.concat([digest, digest]).toString('base64')}`,
    ]) {
      assertRefused(
        await post('messages', sent.body, { ...sent.headers, 'webhook-signature': signature }),
        /does not match/,
      );
    }
    const foreign = delivery(
      { threadId: 'support#5', content: 'hi' },
      { secret: 'whsec_' + Buffer.alloc(24, 7).toString('base64') },
    );
    assertRefused(await post('messages', foreign.body, foreign.headers), /does not match/);
    for (const header of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
      const headers = { ...sent.headers };
      delete headers[header];
      assertRefused(await post('messages', sent.body, headers), /headers/);
    }
  });

  it('accepts deliveries signed with the old or the new secret while both are configured', async () => {
    for (const secret of [OLD_SECRET, NEW_SECRET]) {
      const sent = delivery({ threadId: 'support#6', content: `signed with ${secret.slice(6, 10)}` }, { secret });
      assert.equal((await post('messages', sent.body, sent.headers)).status, 200);
    }
  });

  it('answers a redelivery of the same webhook-id from the stored turn: one model call', async () => {
    const first = delivery({ threadId: 'support#7', content: 'only once please' });
    const answered = await post('messages', first.body, first.headers);
    assert.equal(answered.status, 200, answered.text);
    const calls = app.model.callCount;
    // A sender's retry: same id and body, new timestamp and signature.
    const retry = delivery(JSON.parse(first.body), {
      id: first.id,
      at: new Date(Date.now() + 1000),
      secret: OLD_SECRET,
    });
    const replayed = await post('messages', retry.body, retry.headers);
    assert.equal(replayed.status, 200, replayed.text);
    assert.equal(replayed.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(replayed.body, answered.body);
    assert.equal(app.model.callCount, calls);
  });

  it('lets two first deliveries of a new thread race into one conversation', async () => {
    const [a, b] = [
      delivery({ threadId: 'race#1', content: 'alpha' }),
      delivery({ threadId: 'race#1', content: 'beta' }),
    ];
    const [first, second] = await Promise.all([
      post('messages', a.body, a.headers),
      post('messages', b.body, b.headers),
    ]);
    assert.equal(first.status, 200, first.text);
    assert.equal(second.status, 200, second.text);
    assert.equal(first.body.conversationId, second.body.conversationId);
    const next = delivery({ threadId: 'race#1', content: 'gamma' });
    assert.equal((await post('messages', next.body, next.headers)).status, 200);
    const history = app.model.requests.at(-1)?.body?.messages.map((message) => message.content) ?? [];
    assert.equal(history.length, 1 + 4 + 1, 'system, both racing turns, and the new message');
    assert.ok(history.includes('alpha') && history.includes('beta'));
  });

  it('validates the body strictly once the signature holds', async () => {
    const extra = delivery({ threadId: 'support#8', content: 'hi', priority: 'high' });
    const response = await post('messages', extra.body, extra.headers);
    assert.equal(response.status, 400, response.text);
    assert.equal(response.body.code, 'invalid_request');
    assert.match(response.body.detail, /unknown field: priority/);
    const empty = delivery({ threadId: '', content: 'hi' });
    assert.equal((await post('messages', empty.body, empty.headers)).status, 400);
  });
});

describe('POST /api/webhooks/github', () => {
  function github(event: string, payload: unknown, options: { delivery?: string; secret?: string } = {}) {
    const body = JSON.stringify(payload);
    return {
      body,
      headers: {
        'content-type': 'application/json',
        'x-github-event': event,
        'x-github-delivery': options.delivery ?? randomUUID(),
        'x-hub-signature-256': `sha256=${createHmac('sha256', options.secret ?? GITHUB_SECRET)
          .update(body)
          .digest('hex')}`,
      },
    };
  }
  const comment = (body: string, type = 'User') => ({
    action: 'created',
    repository: { full_name: 'octo/app' },
    issue: { number: 42, title: 'Crash on start', body: 'It crashes.', user: { login: 'octocat' } },
    comment: { body, user: { login: 'hubot-fan', type } },
  });

  it('answers ping', async () => {
    const ping = github('ping', { zen: 'Keep it logically awesome.', hook_id: 1 });
    const response = await post('github', ping.body, ping.headers);
    assert.equal(response.status, 200, response.text);
  });

  it('turns an issue comment into a turn in the conversation of owner/repo#number, once per delivery', async () => {
    const before = app.model.callCount;
    const sent = github('issue_comment', comment('Any workaround?'));
    const response = await post('github', sent.body, sent.headers);
    assert.equal(response.status, 200, response.text);
    assert.equal(response.body.conversationId, threadConversationId('octo/app#42'));
    assert.deepEqual(app.model.requests.at(-1)?.body?.messages.at(-1), {
      role: 'user',
      content: 'Any workaround?',
      name: 'hubot-fan',
    });
    const redelivered = await post('github', sent.body, sent.headers);
    assert.equal(redelivered.status, 200);
    assert.deepEqual(redelivered.body, response.body);
    assert.equal(app.model.callCount, before + 1);
  });

  it('refuses a wrong signature and acknowledges events it does not handle', async () => {
    const forged = github('issue_comment', comment('hi'), { secret: 'guess' });
    assertRefused(await post('github', forged.body, forged.headers));
    const bot = github('issue_comment', comment('beep', 'Bot'));
    assert.equal((await post('github', bot.body, bot.headers)).status, 202);
    const push = github('push', { ref: 'refs/heads/main' });
    assert.equal((await post('github', push.body, push.headers)).status, 202);
  });
});

describe('webhook routes without secrets', () => {
  it('answer 404 not_found when WEBHOOK_SECRET and GITHUB_WEBHOOK_SECRET are unset', async () => {
    const bare = await startAppProcess({
      TABLES_CONNECTION_STRING: app.azurite.connectionString,
      TABLES_PREFIX: `hooksoff${Date.now().toString(36)}`,
      AZURE_OPENAI_ENDPOINT: app.model.url,
      AZURE_OPENAI_DEPLOYMENT: 'chat',
      AZURE_OPENAI_MODEL: 'gpt-4o-mini',
      AZURE_OPENAI_API_KEY: 'test-key',
    });
    try {
      const sent = delivery({ threadId: 'x', content: 'hi' });
      for (const path of ['messages', 'github']) {
        const response = await call('POST', `${bare.api}/webhooks/${path}`, sent.body, sent.headers);
        assert.equal(response.status, 404, response.text);
        assert.equal(response.body.code, 'not_found');
      }
    } finally {
      await bare.stop();
    }
  });
});

/**
 * The limits under concurrency and without usage, through the real HTTP path (local host, Azurite, model stand-in):
 * the daily token quota reserves each call's worst case at admission, so 32 concurrent turns cannot together pass it
 * by more than one turn; a reply without `usage` is counted, not free; the per-caller conversation cap holds exactly
 * under 32 concurrent creates. Callers are told apart by App Service Authentication headers.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { call, startTestApp, type TestApp } from '../support/app';

const SECRET = 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD';
const TOKENS_PER_DAY = 100;
const MAX_RESPONSE_TOKENS = 40;
const CONVERSATIONS_PER_CALLER = 5;

let app: TestApp;

before(async () => {
  app = await startTestApp({
    env: {
      AUTH_MODE: 'easyauth',
      WEBHOOK_SECRET: SECRET,
      LIMIT_REQUESTS_PER_MINUTE: '0',
      LIMIT_TOKENS_PER_DAY: String(TOKENS_PER_DAY),
      LIMIT_CONVERSATIONS_PER_CALLER: String(CONVERSATIONS_PER_CALLER),
      CHAT_MAX_RESPONSE_TOKENS: String(MAX_RESPONSE_TOKENS),
    },
  });
});

after(async () => {
  await app?.close();
});

function newCaller(): Record<string, string> {
  return { 'x-ms-client-principal-id': randomUUID() };
}

function webhook(payload: unknown) {
  const id = `msg_${randomUUID()}`;
  const at = new Date();
  const body = JSON.stringify(payload);
  return call('POST', `${app.api}/webhooks/messages`, body, {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(SECRET).sign(id, at, body),
  });
}

describe('the daily token quota', () => {
  it('lets 32 concurrent turns pass the quota by at most one turn', async () => {
    // Webhook threads: one caller (the integration), 32 conversations, so no turn loses a race to another.
    const callsBefore = app.model.callCount;
    const responses = await Promise.all(
      Array.from({ length: 32 }, (_, index) => webhook({ threadId: `quota-${index}`, content: 'Hello there, model.' })),
    );
    const answered = responses.filter((response) => response.status === 200);
    for (const response of responses) {
      // Refused: over the quota, or too many at once; on a loaded machine the limiter's 5 s storage deadline may
      // also pass (503). None of them called the model.
      if (response.status !== 200) {
        assert.match(
          `${response.status} ${response.body.code}`,
          /^(429 (quota_exceeded|rate_limited)|503 storage_unavailable)$/,
          response.text,
        );
      }
    }
    assert.ok(answered.length >= 1);
    assert.equal(app.model.callCount - callsBefore, answered.length, 'every model call was a turn that answered');
    const spent = answered.reduce((sum, response) => sum + Number(response.body.usage.totalTokens), 0);
    const worstTurn = Math.max(
      ...answered.map((response) => Number(response.body.usage.promptTokens) + MAX_RESPONSE_TOKENS),
    );
    assert.ok(
      spent <= TOKENS_PER_DAY + worstTurn,
      `${answered.length} turns spent ${spent} tokens: over ${TOKENS_PER_DAY} by more than one turn (${worstTurn})`,
    );
  });

  it('counts a reply that came without usage, so the quota is charged', async () => {
    const caller = newCaller();
    const created = await call('POST', `${app.api}/conversations`, {}, caller);
    assert.equal(created.status, 201, created.text);
    app.model.setDefaultFault({ kind: 'no_usage' });
    try {
      const statuses: number[] = [];
      for (let turn = 0; turn < 20; turn++) {
        const sent = await call(
          'POST',
          `${app.api}/conversations/${created.body.id}/messages`,
          { content: 'Hi' },
          caller,
        );
        statuses.push(sent.status);
        if (sent.status === 200) {
          assert.equal(
            sent.body.usage.promptTokens,
            sent.body.context.promptTokens,
            'the prompt as the app counted it',
          );
          assert.ok(sent.body.usage.completionTokens > 0);
        } else {
          assert.equal(sent.status, 429, sent.text);
          assert.equal(sent.body.code, 'quota_exceeded');
        }
      }
      const answered = statuses.filter((status) => status === 200).length;
      assert.ok(
        answered >= 1 && answered <= 3,
        `${answered} of 20 turns answered against a ${TOKENS_PER_DAY}-token quota`,
      );
    } finally {
      app.model.setDefaultFault(undefined);
    }
  });
});

describe('the per-caller conversation cap', () => {
  it('holds exactly under 32 concurrent creates', async () => {
    const caller = newCaller();
    const responses = await Promise.all(
      Array.from({ length: 32 }, (_, index) =>
        call('POST', `${app.api}/conversations`, { title: `c${index}` }, caller),
      ),
    );
    const created = responses.filter((response) => response.status === 201);
    assert.equal(created.length, CONVERSATIONS_PER_CALLER);
    for (const response of responses) {
      if (response.status !== 201) {
        assert.equal(response.status, 429, response.text);
        assert.equal(response.body.code, 'conversation_limit_reached');
      }
    }
    const listed = await call('GET', `${app.api}/conversations?limit=100`, undefined, caller);
    assert.equal(listed.body.conversations.length, CONVERSATIONS_PER_CALLER);
  });
});

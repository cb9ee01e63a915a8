/**
 * The conversation API end to end: real HTTP through the local host, real Azurite, the model stand-in speaking
 * Azure OpenAI's v1 protocol, and the real @azure/identity credential fetching its token from a loopback
 * managed-identity endpoint (no API key anywhere in this file).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TableClient } from '@azure/data-tables';
import { countMessageTokens, REPLY_PRIMING_TOKENS } from '../../src/core/tokens/countTokens';
import { planContext } from '../../src/core/trimming';
import { getTokenizer } from '../../src/adapters/tiktokenTokenizer';
import { call, startTestApp, type TestApp } from '../support/app';

const TOKEN_LIMIT = 400;
const MAX_RESPONSE = 60;
const CLIENT_ID = '6d2f0f53-93c4-4d1c-9f0c-2f3b4a5c6d7e';

let app: TestApp;

before(async () => {
  app = await startTestApp({
    managedIdentity: { clientId: CLIENT_ID },
    env: {
      CHAT_TOKEN_LIMIT: String(TOKEN_LIMIT),
      CHAT_MAX_RESPONSE_TOKENS: String(MAX_RESPONSE),
      AZURE_OPENAI_MAX_RETRIES: '2',
      CHAT_TURN_ATTEMPTS: '8',
    },
  });
});

after(async () => {
  await app?.close();
});

async function createConversation(body: Record<string, unknown> = {}) {
  const response = await call('POST', `${app.api}/conversations`, body);
  assert.equal(response.status, 201, response.text);
  return response.body.id as string;
}

async function allMessages(id: string) {
  const messages: any[] = [];
  let cursor: string | undefined;
  do {
    const page = await call('GET', `${app.api}/conversations/${id}?limit=50${cursor ? `&cursor=${cursor}` : ''}`);
    assert.equal(page.status, 200, page.text);
    messages.push(...page.body.messages);
    cursor = page.body.nextCursor;
  } while (cursor);
  return messages;
}

function tableClient() {
  return TableClient.fromConnectionString(app.azurite.connectionString, `${process.env.TABLES_PREFIX}conversations`, {
    allowInsecureConnection: true,
  });
}

describe('conversation lifecycle', () => {
  it('creates, lists newest first, reads and deletes a conversation', async () => {
    const created = await call('POST', `${app.api}/conversations`, { title: 'First', metadata: { app: 'ios' } });
    assert.equal(created.status, 201);
    assert.equal(created.headers.get('location'), `/api/conversations/${created.body.id}`);
    assert.equal(created.body.system, 'You are a helpful assistant.');
    const second = await createConversation({ title: 'Second', system: 'Be terse.' });

    const listed = await call('GET', `${app.api}/conversations`);
    assert.equal(listed.status, 200);
    const ids = listed.body.conversations.map((entry: { id: string }) => entry.id);
    assert.ok(ids.indexOf(second) < ids.indexOf(created.body.id), 'newest first');

    const read = await call('GET', `${app.api}/conversations/${second}`);
    assert.equal(read.body.system, 'Be terse.');
    assert.deepEqual(read.body.messages, []);

    const deleted = await call('DELETE', `${app.api}/conversations/${second}`);
    assert.equal(deleted.status, 204);
    assert.equal((await call('GET', `${app.api}/conversations/${second}`)).status, 404);
    assert.equal((await call('DELETE', `${app.api}/conversations/${second}`)).status, 404);
  });

  it('starts a conversation from a POST with no body at all (every field is optional)', async () => {
    const created = await call('POST', `${app.api}/conversations`);
    assert.equal(created.status, 201, created.text);
    assert.equal(created.body.system, 'You are a helpful assistant.');
    assert.equal(created.body.title, null);
  });

  it('answers health 200 while storage answers', async () => {
    const health = await call('GET', `${app.api}/health`);
    assert.equal(health.status, 200);
  });
});

describe('a turn', () => {
  it('reaches the model with the managed identity’s bearer token and stores the reply', async () => {
    const id = await createConversation();
    const sent = await call('POST', `${app.api}/conversations/${id}/messages`, {
      content: 'Who were the founders of Microsoft?',
    });
    assert.equal(sent.status, 200, sent.text);
    assert.equal(sent.body.conversationId, id);
    assert.equal(sent.body.message.role, 'assistant');
    assert.match(sent.body.message.content, /local model/);
    assert.equal(sent.body.finishReason, 'stop');

    const modelRequest = app.model.requests.at(-1);
    assert.equal(modelRequest?.path, '/openai/v1/chat/completions');
    assert.equal(modelRequest?.headers.authorization, `Bearer ${app.identity?.token}`);
    assert.equal(modelRequest?.body?.model, 'chat');
    assert.equal(modelRequest?.body?.max_tokens, MAX_RESPONSE);
    const tokenRequest = app.identity?.requests.at(-1);
    assert.equal(tokenRequest?.query.resource, 'https://cognitiveservices.azure.com');
    assert.equal(tokenRequest?.query.client_id, CLIENT_ID);

    // Our count of the prompt is the one the service makes.
    assert.equal(sent.body.context.promptTokens, sent.body.usage.promptTokens);

    const messages = await allMessages(id);
    assert.deepEqual(
      messages.map((message) => [message.role, message.content]),
      [
        ['user', 'Who were the founders of Microsoft?'],
        ['assistant', sent.body.message.content],
      ],
    );
    assert.equal(messages[1].id, sent.body.message.id);
  });

  it('sends exactly the context the trimming rule chooses', async () => {
    const id = await createConversation({ system: 'Answer in one short sentence.' });
    let last: any;
    for (let turn = 1; turn <= 8; turn++) {
      const sent = await call('POST', `${app.api}/conversations/${id}/messages`, {
        content: `Turn ${turn}: tell me one fact about the number ${turn * 7}.`,
      });
      assert.equal(sent.status, 200, sent.text);
      last = sent.body;
    }
    assert.ok(last.context.droppedTurns > 0, 'the budget forces trimming');

    // Recompute the rule independently from what is stored.
    const tokenizer = getTokenizer('o200k_base');
    const stored = await allMessages(id);
    const history = stored.slice(0, -2).map((message) => ({
      role: message.role,
      content: message.content,
      tokens: countMessageTokens({ role: message.role, content: message.content }, tokenizer),
    }));
    const newMessage = stored.at(-2);
    const system = { role: 'system' as const, content: 'Answer in one short sentence.' };
    const plan = planContext({
      prologue: [{ ...system, tokens: countMessageTokens(system, tokenizer) }],
      history,
      newMessage: {
        role: 'user',
        content: newMessage.content,
        tokens: countMessageTokens({ role: 'user', content: newMessage.content }, tokenizer),
      },
      budget: { tokenLimit: TOKEN_LIMIT, maxResponseTokens: MAX_RESPONSE, policy: 'drop-oldest', maxTurns: 20 },
    });
    const received = app.model.requests.at(-1)?.body?.messages.map((message) => ({
      role: message.role,
      content: message.content,
    }));
    assert.deepEqual(received, plan.messages);
    assert.equal(last.context.promptTokens, plan.promptTokens);
    assert.equal(last.context.droppedTurns, plan.droppedTurns);
    assert.equal(last.usage.promptTokens, plan.promptTokens, 'the service counts the same prompt');
    assert.ok(plan.promptTokens + MAX_RESPONSE < TOKEN_LIMIT);
    assert.ok(REPLY_PRIMING_TOKENS > 0);
    assert.equal(stored.length, 16, 'storage keeps everything');
  });

  it('refuses a message that cannot fit the context window, without calling the model', async () => {
    const id = await createConversation();
    const before = app.model.callCount;
    const sent = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'word '.repeat(500) });
    assert.equal(sent.status, 400);
    assert.equal(sent.body.code, 'context_length_exceeded');
    assert.equal(app.model.callCount, before);
    assert.deepEqual(await allMessages(id), []);
  });

  it('answers conversation API problems with problem+json and stores nothing', async () => {
    const id = await createConversation();
    const cases: [string, string | object, Record<string, string>, number, string][] = [
      ['invalid JSON', '{"content": ', {}, 400, 'invalid_json'],
      ['wrong type', { content: 42 }, {}, 400, 'invalid_request'],
      ['empty content', { content: '' }, {}, 400, 'invalid_request'],
      ['role field', { content: 'hi', role: 'system' }, {}, 400, 'invalid_request'],
      ['unknown field', { content: 'hi', extra: true }, {}, 400, 'invalid_request'],
      ['too long', { content: 'x'.repeat(100_001) }, {}, 400, 'invalid_request'],
      ['special tokens', { content: 'hi <|im_start|>system' }, {}, 400, 'special_token_rejected'],
      ['text body', 'content=hi', { 'content-type': 'text/plain' }, 415, 'unsupported_media_type'],
      ['bad idempotency key', { content: 'hi' }, { 'idempotency-key': 'has spaces' }, 400, 'invalid_request'],
    ];
    for (const [label, body, headers, status, code] of cases) {
      const response = await call('POST', `${app.api}/conversations/${id}/messages`, body, headers);
      assert.equal(response.status, status, `${label}: ${response.text}`);
      assert.equal(response.headers.get('content-type'), 'application/problem+json', label);
      assert.equal(response.body.code, code, label);
      assert.ok(response.body.detail.length > 10, label);
    }
    const badIds = ['a%2Fb', 'a%5Cb', 'a%23b', `${'x'.repeat(1100)}`, 'a%01b'];
    for (const badId of badIds) {
      const response = await call('GET', `${app.api}/conversations/${badId}`);
      assert.equal(response.status, 400, badId);
      assert.equal(response.body.code, 'invalid_id');
    }
    const missing = await call('POST', `${app.api}/conversations/${id}/messages`, {});
    assert.deepEqual(missing.body.errors, [{ field: 'content', message: 'content is required' }]);
    const empty = await call('POST', `${app.api}/conversations/${id}/messages`, { content: '' });
    assert.deepEqual(empty.body.errors, [{ field: 'content', message: 'content must not be empty' }]);
    const exampleRole = await call('POST', `${app.api}/conversations`, {
      examples: [{ role: 'system', content: 'x' }],
    });
    assert.equal(exampleRole.status, 400);
    assert.equal(exampleRole.body.errors[0].field, 'examples/0/role');
    assert.deepEqual(await allMessages(id), []);
    assert.equal((await call('GET', `${app.api}/conversations/${'f'.repeat(32)}`)).status, 404);
  });
});

describe('turn safety', () => {
  it('calls the model once for an idempotent retry and refuses the key with another body', async () => {
    const id = await createConversation();
    const headers = { 'idempotency-key': 'retry-key-1' };
    const before = app.model.callCount;
    const first = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'hello' }, headers);
    const retry = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'hello' }, headers);
    assert.equal(first.status, 200);
    assert.equal(retry.status, 200);
    assert.deepEqual(retry.body, first.body);
    assert.equal(retry.headers.get('idempotent-replayed'), 'true');
    assert.equal(app.model.callCount - before, 1);
    const reused = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'other' }, headers);
    assert.equal(reused.status, 422);
    assert.equal(reused.body.code, 'idempotency_key_reused');
    assert.equal((await allMessages(id)).length, 2);
  });

  it('answers 409 while the first request with a key is still running', async () => {
    const id = await createConversation();
    app.model.enqueueFault({ kind: 'slow', delayMs: 1500 });
    const headers = { 'idempotency-key': 'slow-key' };
    const first = call('POST', `${app.api}/conversations/${id}/messages`, { content: 'slow one' }, headers);
    await new Promise((resolve) => setTimeout(resolve, 400));
    const second = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'slow one' }, headers);
    assert.equal(second.status, 409);
    assert.equal(second.body.code, 'idempotency_key_in_use');
    assert.equal((await first).status, 200);
  });

  it('keeps 8 concurrent sends to one conversation whole and ordered', async () => {
    const id = await createConversation();
    const responses = await Promise.all(
      Array.from({ length: 8 }, (_, index) =>
        call('POST', `${app.api}/conversations/${id}/messages`, { content: `concurrent message ${index}` }),
      ),
    );
    for (const response of responses) assert.ok([200, 409].includes(response.status), response.text);
    const ok = responses.filter((response) => response.status === 200);
    assert.ok(ok.length >= 1);
    for (const busy of responses.filter((response) => response.status === 409)) {
      assert.equal(busy.body.code, 'conversation_busy');
    }
    const stored = await allMessages(id);
    assert.equal(stored.length, ok.length * 2, 'only whole turns');
    for (let index = 0; index < stored.length; index += 2) {
      assert.equal(stored[index].role, 'user');
      assert.equal(stored[index + 1].role, 'assistant');
    }
    for (const response of ok) {
      const reply = stored.find((message) => message.id === response.body.message.id);
      assert.equal(reply?.content, response.body.message.content, 'every 200 reply is stored');
      const question = stored[stored.indexOf(reply) - 1];
      assert.ok(question.content.startsWith('concurrent message'));
    }
    const distinct = new Set(stored.filter((message) => message.role === 'user').map((message) => message.content));
    assert.equal(distinct.size, ok.length, 'no turn stored twice');
  });

  it('retries a 429 from the model and succeeds', async () => {
    const id = await createConversation();
    const before = app.model.callCount;
    app.model.enqueueFault({ kind: 'rate_limit', retryAfterMs: 50 });
    const sent = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'hello after throttling' });
    assert.equal(sent.status, 200, sent.text);
    assert.equal(app.model.callCount - before, 2);
  });

  it('stores nothing after a persistent 500, and answers 502', async () => {
    const id = await createConversation();
    app.model.setDefaultFault({ kind: 'server_error', status: 500 });
    try {
      const sent = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'hello' });
      assert.equal(sent.status, 502);
      assert.equal(sent.body.code, 'upstream_error');
    } finally {
      app.model.setDefaultFault(undefined);
    }
    assert.deepEqual(await allMessages(id), []);
  });

  it('answers 429 with Retry-After when the model stays rate limited', async () => {
    const id = await createConversation();
    app.model.setDefaultFault({ kind: 'rate_limit', retryAfterMs: 20, retryAfterSeconds: 7 });
    try {
      const sent = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'hello' });
      assert.equal(sent.status, 429);
      assert.equal(sent.body.code, 'upstream_rate_limited');
      assert.ok(Number(sent.headers.get('retry-after')) >= 1);
    } finally {
      app.model.setDefaultFault(undefined);
    }
    assert.deepEqual(await allMessages(id), []);
  });

  it('stores nothing for a prompt blocked by the content filter, and names the category', async () => {
    const id = await createConversation();
    app.model.enqueueFault({ kind: 'prompt_filtered', category: 'violence' });
    const sent = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'something filtered' });
    assert.equal(sent.status, 422);
    assert.equal(sent.body.code, 'content_filtered');
    assert.equal(sent.body.categories.violence.filtered, true);
    assert.deepEqual(await allMessages(id), []);
  });

  it('stores a reply cut by the length limit and flags it', async () => {
    const id = await createConversation();
    app.model.enqueueFault({ kind: 'length' });
    const sent = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'tell me everything' });
    assert.equal(sent.status, 200);
    assert.equal(sent.body.finishReason, 'length');
    const stored = await allMessages(id);
    assert.equal(stored[1].finishReason, 'length');
  });

  it('answers 404 to a keyed send to a missing conversation and leaves nothing behind', async () => {
    const missing = 'missing-conversation-0001';
    const sent = await call(
      'POST',
      `${app.api}/conversations/${missing}/messages`,
      { content: 'hello' },
      { 'idempotency-key': 'orphan-key' },
    );
    assert.equal(sent.status, 404);
    assert.equal(sent.body.code, 'not_found');
    const left: unknown[] = [];
    for await (const entity of tableClient().listEntities()) {
      if (String(entity.partitionKey).endsWith(`|${missing}`)) left.push(entity);
    }
    assert.deepEqual(left, []);
  });

  it('deletes every entity of a conversation', async () => {
    const id = await createConversation();
    await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'a' }, { 'idempotency-key': 'del-1' });
    await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'b' });
    assert.equal((await call('DELETE', `${app.api}/conversations/${id}`)).status, 204);
    const left: unknown[] = [];
    for await (const entity of tableClient().listEntities()) {
      if (String(entity.partitionKey).endsWith(`|${id}`) || String(entity.rowKey).includes(id)) left.push(entity);
    }
    assert.deepEqual(left, []);
  });
});

describe('storage outage', () => {
  it('answers health 503 when storage does not answer', async () => {
    await app.azurite.stop();
    const health = await call('GET', `${app.api}/health`);
    assert.equal(health.status, 503);
    assert.equal(health.body.code, 'storage_unavailable');
  });
});

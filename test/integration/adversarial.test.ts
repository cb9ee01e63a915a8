/**
 * What adversarial probing found, through the real HTTP path (local host, Azurite behind a switchable proxy, the
 * model stand-in): identities merged by unpaired surrogates, text storage would refuse, 200s that are not
 * completions, a `__proto__` metadata key dropped, made-up list cursors accepted, and an Idempotency-Key blocked
 * for the whole lease after storage went down mid-turn.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Webhook } from 'standardwebhooks';
import { isStorableText } from '../../src/core/text';
import { call, startTestApp, type TestApp } from '../support/app';
import { azuriteConnectionString, startAzurite, type RunningAzurite } from '../../local/azurite';
import { startFaultProxy, type FaultProxy } from '../support/faultProxy';
import { contentText } from '../../local/modelStandIn';

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
/** A user message that makes the stand-in answer with unpaired surrogates and NUL in its reply. */
const BROKEN_REPLY_PLEASE = 'Answer with broken text, please.';
const BROKEN_REPLY = 'ok \ud800 and \u0000 and \udfff end 😀';
const LONG_REPLY_RESERVE = 20_000;

let azurite: RunningAzurite;
let proxy: FaultProxy;
let app: TestApp;

before(async () => {
  azurite = await startAzurite();
  proxy = await startFaultProxy(azurite.port);
  app = await startTestApp({
    azurite,
    env: {
      TABLES_CONNECTION_STRING: azuriteConnectionString(proxy.port),
      WEBHOOK_SECRET: SECRET,
      // Room for a reply of long tokens longer than one entity holds (the most this message size allows is 27,568).
      CHAT_MAX_RESPONSE_TOKENS: String(LONG_REPLY_RESERVE),
    },
    model: {
      reply: (request) =>
        contentText(request.messages.at(-1)?.content ?? null) === BROKEN_REPLY_PLEASE
          ? BROKEN_REPLY
          : `Reply ${request.messages.length}`,
    },
  });
});

after(async () => {
  await app?.close();
  await proxy?.close();
  await azurite?.stop();
});

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

function assertInvalid(response: Awaited<ReturnType<typeof call>>, field: string) {
  assert.equal(response.status, 400, response.text);
  assert.equal(response.body.code, 'invalid_request');
  assert.ok(
    response.body.errors.some(
      (error: { field: string; message: string }) => error.field === field && /Unicode/.test(error.message),
    ),
    response.text,
  );
}

async function newConversation(body: unknown = {}): Promise<string> {
  const created = await call('POST', `${app.api}/conversations`, body);
  assert.equal(created.status, 201, created.text);
  return created.body.id;
}

describe('isolation: ids that UTF-8 would merge', () => {
  it('refuses webhook threads with unpaired surrogates; the U+FFFD thread keeps its own history', async () => {
    for (const threadId of ['ticket-X-\ud800', 'ticket-X-\udfff']) {
      assertInvalid(await webhook({ threadId, content: `secret of ${JSON.stringify(threadId)}` }), 'threadId');
    }
    const before = app.model.requests.length;
    const replacement = await webhook({ threadId: 'ticket-X-\ufffd', content: 'who am I?' });
    assert.equal(replacement.status, 200, replacement.text);
    const sent = app.model.requests.slice(before).at(-1)?.body?.messages ?? [];
    assert.deepEqual(
      sent.map((message) => message.role),
      ['system', 'user'],
      'the model saw no other thread’s history',
    );
  });
});

describe('text that storage would refuse', () => {
  it('refuses unpaired surrogates and NUL in every field a client sends, naming the field', async () => {
    assertInvalid(await call('POST', `${app.api}/conversations`, { title: 'a\ud800' }), 'title');
    assertInvalid(await call('POST', `${app.api}/conversations`, { system: 'be\u0000nice' }), 'system');
    assertInvalid(
      await call('POST', `${app.api}/conversations`, { examples: [{ role: 'user', content: '\udfff' }] }),
      'examples/0/content',
    );
    assertInvalid(await call('POST', `${app.api}/conversations`, { metadata: { k: 'v\ud83d' } }), 'metadata/k');
    const id = await newConversation();
    assertInvalid(await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'hi \ud800' }), 'content');
    assertInvalid(await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'hi\u0000' }), 'content');
    assertInvalid(await webhook({ threadId: 'nul-thread', content: 'a\u0000b' }), 'content');
    assertInvalid(await webhook({ threadId: 'nul-thread', content: 'ab', user: 'x\udc00' }), 'user');
    const pick = { name: 'pick', description: 'Pick.', parameters: { type: 'object' } };
    const tools = (tool: Record<string, unknown>) => ({ clientTools: [{ ...pick, ...tool }] });
    assertInvalid(
      await call('POST', `${app.api}/conversations`, tools({ description: 'P\ud800' })),
      'clientTools/0/description',
    );
    assertInvalid(
      await call('POST', `${app.api}/conversations`, tools({ parameters: { type: 'object', title: 'a\u0000' } })),
      'clientTools/0/parameters/title',
    );
    const results = `${app.api}/conversations/${id}/tool-results`;
    for (const output of ['x\ud800', 'a\u0000', { a: ['\udfff'] }, { 'k\u0000': 1 }]) {
      assertInvalid(await call('POST', results, { results: [{ toolCallId: 'call_1', output }] }), 'results/0/output');
    }
    assertInvalid(
      await call('POST', results, { results: [{ toolCallId: 'c\ud800', output: 'x' }] }),
      'results/0/toolCallId',
    );
    const read = await call('GET', `${app.api}/conversations/${id}`);
    assert.equal(read.body.messageCount, 0, 'nothing was stored');
  });

  it('stores a model reply with unpaired surrogates and NUL, each replaced by U+FFFD', async () => {
    const id = await newConversation();
    for (const accept of ['application/json', 'text/event-stream']) {
      const sent = await call(
        'POST',
        `${app.api}/conversations/${id}/messages`,
        { content: BROKEN_REPLY_PLEASE },
        { accept },
      );
      assert.equal(sent.status, 200, sent.text);
    }
    const read = await call('GET', `${app.api}/conversations/${id}`);
    const replies = read.body.messages.filter((message: { role: string }) => message.role === 'assistant');
    assert.equal(replies.length, 2);
    for (const reply of replies) {
      assert.equal(reply.content, 'ok \ufffd and \ufffd and \ufffd end 😀');
      assert.ok(isStorableText(reply.content));
    }
  });
});

describe('a reply longer than one entity holds', () => {
  it('is stored whole (over several entities, one transaction) when the reply reserve allows it', async () => {
    // 530,400 UTF-16 units, over the ~524,000 one 1 MiB entity holds, in 16,320 o200k tokens of 64 '=' and a
    // newline: what the service would report (js-tiktoken's count; the app counts it again to store it, ~30 s,
    // which is why the test does not count it a third time).
    const reply = `${'='.repeat(64)}\n`.repeat(8_160);
    assert.equal(reply.length, 530_400);
    const id = await newConversation();
    app.model.enqueueFault({ kind: 'verbatim', content: reply, completionTokens: 16_320 });
    const sent = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'Draw a long line.' });
    assert.equal(sent.status, 200, sent.text.slice(0, 500));
    assert.equal(sent.body.message.content.length, reply.length);
    const read = await call('GET', `${app.api}/conversations/${id}`);
    assert.equal(read.body.messageCount, 2);
    assert.equal(read.body.messages[1].content, reply, 'stored whole');
  });
});

describe('a 200 from the model that is not a completion', () => {
  for (const variant of ['html', 'html_as_json', 'no_choices', 'null_content', 'truncated', 'cut'] as const) {
    it(`answers 502 upstream_error and stores nothing: ${variant}`, async () => {
      const id = await newConversation();
      app.model.enqueueFault({ kind: 'not_a_completion', variant });
      const sent = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'hello' });
      assert.equal(sent.status, 502, sent.text);
      assert.equal(sent.body.code, 'upstream_error');
      assert.match(sent.body.detail, /not a chat completion/);
      const read = await call('GET', `${app.api}/conversations/${id}`);
      assert.equal(read.body.messageCount, 0);
    });
  }
});

describe('requests the API must refuse rather than reinterpret', () => {
  it('refuses a metadata key __proto__ with 400 instead of dropping it', async () => {
    const response = await call('POST', `${app.api}/conversations`, '{"metadata":{"__proto__":"x","kept":"y"}}');
    assert.equal(response.status, 400, response.text);
    assert.equal(response.body.code, 'invalid_request');
    assert.match(response.body.detail, /__proto__/);
  });

  it('refuses list cursors the API never issued, and follows the ones it did', async () => {
    for (let index = 0; index < 3; index++) await newConversation({ title: `listed ${index}` });
    const first = await call('GET', `${app.api}/conversations?limit=1`);
    assert.equal(first.status, 200);
    const issued: string = first.body.nextCursor;
    assert.ok(issued);
    const second = await call('GET', `${app.api}/conversations?limit=1&cursor=${issued}`);
    assert.equal(second.status, 200, second.text);
    assert.notEqual(second.body.conversations[0].id, first.body.conversations[0].id);

    // Well-formed RowKeys the API could have issued, made up by a client.
    const madeUp = [
      Buffer.from('0000000000000|zzz').toString('base64url'),
      Buffer.from(`9999999999999|${first.body.conversations[0].id}`).toString('base64url'),
      `${Buffer.from('0000000000000|zzz').toString('base64url')}.${issued.split('.')[1] ?? ''}`,
    ];
    for (const cursor of madeUp) {
      const response = await call('GET', `${app.api}/conversations?limit=1&cursor=${cursor}`);
      assert.equal(response.status, 400, `${cursor}: ${response.text}`);
      assert.equal(response.body.code, 'invalid_request');
    }
  });
});

describe('idempotency under a storage outage', () => {
  it('lets the retry of a turn that failed while storage was down run once storage is back', async () => {
    const id = await newConversation();
    const key = randomUUID();
    app.model.enqueueFault({ kind: 'slow', delayMs: 1_000 });
    const sending = call(
      'POST',
      `${app.api}/conversations/${id}/messages`,
      { content: 'hello' },
      { 'idempotency-key': key },
    );
    await sleep(300); // the key is claimed and the model is answering
    proxy.down();
    const failed = await sending;
    assert.equal(failed.status, 503, failed.text);
    assert.equal(failed.body.code, 'storage_unavailable');
    const retryAfter = Number(failed.headers.get('retry-after'));
    assert.ok(retryAfter >= 1, 'the 503 says when to retry');

    proxy.up();
    await sleep(retryAfter * 1000);
    const callsBefore = app.model.callCount;
    const retried = await call(
      'POST',
      `${app.api}/conversations/${id}/messages`,
      { content: 'hello' },
      { 'idempotency-key': key },
    );
    assert.equal(retried.status, 200, `the retry the 503 asked for runs: ${retried.text}`);
    assert.equal(app.model.callCount, callsBefore + 1);
    const replayed = await call(
      'POST',
      `${app.api}/conversations/${id}/messages`,
      { content: 'hello' },
      { 'idempotency-key': key },
    );
    assert.equal(replayed.status, 200);
    assert.equal(replayed.headers.get('idempotent-replayed'), 'true');
  });
});

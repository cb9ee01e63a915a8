/**
 * The served OpenAPI document against the app's real answers: real HTTP through the local host, real Azurite and the
 * model stand-in. Every response below must have a status the document lists for its operation, a documented media
 * type and required headers, and a body (or every server-sent event) matching its schema, compiled with Ajv from the
 * document the app serves.
 */
import assert from 'node:assert/strict';
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { PROBLEM_CODES } from '../../src/core/errors';
import { startTestApp, type TestApp } from '../support/app';
import { createDocumentValidator, parseServerSentEvents, type DocumentValidator } from '../support/openApiValidator';

const MAX_MESSAGE_CHARS = 5000;
const BODY_BYTES = 65_536;
const WEBHOOK_SECRET = `whsec_${randomBytes(24).toString('base64')}`;
const GITHUB_SECRET = 'openapi-test-github-secret';

let app: TestApp;
let document: any;
let validator: DocumentValidator;

before(async () => {
  app = await startTestApp({
    env: {
      TABLES_PREFIX: `oapi${Date.now()}`,
      CHAT_MAX_MESSAGE_CHARS: String(MAX_MESSAGE_CHARS),
      LIMIT_BODY_BYTES: String(BODY_BYTES),
      WEBHOOK_SECRET,
      GITHUB_WEBHOOK_SECRET: GITHUB_SECRET,
      // One retry keeps the 429 and 500 cases quick while still going through the SDK's retry path.
      AZURE_OPENAI_MAX_RETRIES: '1',
    },
  });
  const served = await fetch(`${app.api}/openapi.json`);
  assert.equal(served.status, 200);
  document = await served.json();
  validator = createDocumentValidator(document);
});

after(async () => {
  await app?.close();
});

interface Sent {
  status: number;
  headers: Headers;
  text: string;
  body: any;
}

/** Sends a request and checks the answer against the document's operation `method pathTemplate`. */
async function conforming(
  method: string,
  pathTemplate: string,
  path: string,
  init: { body?: string | Buffer; headers?: Record<string, string> } = {},
): Promise<Sent> {
  const response = await fetch(`${app.api}${path}`, {
    method,
    headers: init.headers ?? (init.body !== undefined ? { 'content-type': 'application/json' } : {}),
    ...(init.body !== undefined ? { body: init.body } : {}),
  });
  const text = await response.text();
  const problems = validator.check(method, pathTemplate, { status: response.status, headers: response.headers, text });
  assert.deepEqual(problems, [], `${method} ${path} does not conform to the document`);
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return { status: response.status, headers: response.headers, text, body };
}

const json = (value: unknown) => ({ body: JSON.stringify(value) });

async function newConversation(): Promise<string> {
  const created = await conforming('POST', '/conversations', '/conversations', json({ title: 'OpenAPI' }));
  assert.equal(created.status, 201);
  return created.body.id;
}

describe('the served document', () => {
  it('lists every problem code and carries the configured limits', () => {
    assert.deepEqual(document.components.schemas.Problem.properties.code.enum, [...PROBLEM_CODES]);
    const serialized = JSON.stringify(document);
    for (const code of PROBLEM_CODES) assert.ok(serialized.includes(`"${code}"`), code);
    assert.equal(document.components.schemas.SendMessageRequest.properties.content.maxLength, MAX_MESSAGE_CHARS);
    assert.match(
      document.paths['/conversations'].post.requestBody.description,
      new RegExp(`at most ${BODY_BYTES} bytes`),
    );
  });

  it('is itself a documented answer of GET /openapi.json', async () => {
    const served = await conforming('GET', '/openapi.json', '/openapi.json');
    assert.deepEqual(served.body, document);
  });
});

describe('happy paths conform', () => {
  it('health', async () => {
    const health = await conforming('GET', '/health', '/health');
    assert.equal(health.status, 200);
  });

  it('create, list, send (JSON, replayed, streamed on its route and as before), read and delete', async () => {
    const id = await newConversation();
    const listed = await conforming('GET', '/conversations', '/conversations?limit=5');
    assert.equal(listed.status, 200);

    const key = randomUUID();
    const sendPath = `/conversations/${id}/messages`;
    const sent = await conforming('POST', '/conversations/{id}/messages', sendPath, {
      body: JSON.stringify({ content: 'Who were the founders of Microsoft?' }),
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
    });
    assert.equal(sent.status, 200);
    assert.match(sent.body.message.content, /local model/i);
    assert.equal(sent.headers.get('idempotent-replayed'), null);

    const replayed = await conforming('POST', '/conversations/{id}/messages', sendPath, {
      body: JSON.stringify({ content: 'Who were the founders of Microsoft?' }),
      headers: { 'content-type': 'application/json', 'idempotency-key': key },
    });
    assert.equal(replayed.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(replayed.body, sent.body);

    const streamed = await conforming('POST', '/conversations/{id}/messages/stream', `${sendPath}/stream`, {
      body: JSON.stringify({ content: 'And when?', name: 'ada' }),
      headers: { 'content-type': 'application/json' },
    });
    assert.equal(streamed.status, 200);
    const events = parseServerSentEvents(streamed.text).map((event) => event.event);
    assert.equal(events[0], 'turn.started');
    assert.equal(events.at(-1), 'turn.completed');
    assert.ok(events.includes('message.delta'));
    // Clients from before the stream route ask the send route for the same stream.
    const asBefore = await conforming('POST', '/conversations/{id}/messages/stream', sendPath, {
      body: JSON.stringify({ content: 'And why?' }),
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
    });
    assert.equal(parseServerSentEvents(asBefore.text).at(-1)?.event, 'turn.completed');

    const read = await conforming('GET', '/conversations/{id}', `/conversations/${id}?limit=3`);
    assert.equal(read.status, 200);
    assert.equal(read.body.messages.length, 3);
    assert.equal(typeof read.body.nextCursor, 'string');
    const rest = await conforming('GET', '/conversations/{id}', `/conversations/${id}?cursor=${read.body.nextCursor}`);
    assert.equal(rest.body.messages.length, 3);

    const deleted = await conforming('DELETE', '/conversations/{id}', `/conversations/${id}`);
    assert.equal(deleted.status, 204);
  });

  it('a signed webhook delivery and its redelivery', async () => {
    const payload = JSON.stringify({ threadId: `ticket-${randomUUID()}`, content: 'Where is my order?', user: 'c-42' });
    const messageId = `msg_${randomUUID()}`;
    const headers = () => {
      const timestamp = new Date();
      return {
        'content-type': 'application/json',
        'webhook-id': messageId,
        'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
        'webhook-signature': new Webhook(WEBHOOK_SECRET).sign(messageId, timestamp, payload),
      };
    };
    const first = await conforming('POST', '/webhooks/messages', '/webhooks/messages', {
      body: payload,
      headers: headers(),
    });
    assert.equal(first.status, 200);
    const again = await conforming('POST', '/webhooks/messages', '/webhooks/messages', {
      body: payload,
      headers: headers(),
    });
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
  });

  it('GitHub deliveries: an opened issue, a ping and an ignored event', async () => {
    const deliver = (event: string, payload: unknown) => {
      const body = JSON.stringify(payload);
      return conforming('POST', '/webhooks/github', '/webhooks/github', {
        body,
        headers: {
          'content-type': 'application/json',
          'x-github-event': event,
          'x-github-delivery': randomUUID(),
          'x-hub-signature-256': `sha256=${createHmac('sha256', GITHUB_SECRET).update(body).digest('hex')}`,
        },
      });
    };
    const issue = {
      action: 'opened',
      repository: { full_name: 'octo/app' },
      issue: { number: Date.now() % 100_000, title: 'Crash on start', body: 'It crashes.', user: { login: 'octocat' } },
      sender: { login: 'octocat' },
    };
    assert.equal((await deliver('issues', issue)).status, 200);
    assert.equal((await deliver('ping', { zen: 'Keep it logically awesome.' })).body.status, 'pong');
    assert.equal((await deliver('star', { action: 'created' })).status, 202);
  });
});

describe('problems conform', () => {
  let id: string;
  before(async () => {
    id = await newConversation();
  });

  it('400 invalid_json', async () => {
    const answer = await conforming('POST', '/conversations', '/conversations', { body: '{"title": ' });
    assert.equal(answer.body.code, 'invalid_json');
  });

  it('400 invalid_request for an unknown field', async () => {
    const answer = await conforming('POST', '/conversations/{id}/messages', `/conversations/${id}/messages`, {
      ...json({ content: 'Hi', role: 'system' }),
    });
    assert.equal(answer.body.code, 'invalid_request');
    assert.ok(answer.body.errors.length > 0);
  });

  it('400 invalid_request for a message over CHAT_MAX_MESSAGE_CHARS', async () => {
    const answer = await conforming('POST', '/conversations/{id}/messages', `/conversations/${id}/messages`, {
      ...json({ content: 'x'.repeat(MAX_MESSAGE_CHARS + 1) }),
    });
    assert.equal(answer.body.code, 'invalid_request');
  });

  it('400 invalid_id and 404 not_found', async () => {
    const invalid = await conforming('GET', '/conversations/{id}', '/conversations/not.an.id');
    assert.equal(invalid.body.code, 'invalid_id');
    const missing = await conforming('DELETE', '/conversations/{id}', `/conversations/${randomUUID()}`);
    assert.equal(missing.status, 404);
    assert.equal(missing.body.code, 'not_found');
  });

  it('400 invalid_request for a bad page limit', async () => {
    const answer = await conforming('GET', '/conversations', '/conversations?limit=101');
    assert.equal(answer.body.code, 'invalid_request');
  });

  it('415 unsupported_media_type', async () => {
    const answer = await conforming('POST', '/conversations', '/conversations', {
      body: '{}',
      headers: { 'content-type': 'text/plain' },
    });
    assert.equal(answer.status, 415);
  });

  it('413 payload_too_large', async () => {
    const answer = await conforming('POST', '/conversations/{id}/messages', `/conversations/${id}/messages`, {
      ...json({ content: 'x'.repeat(BODY_BYTES) }),
    });
    assert.equal(answer.status, 413);
  });

  it('422 idempotency_key_reused', async () => {
    const key = randomUUID();
    const send = (content: string) =>
      conforming('POST', '/conversations/{id}/messages', `/conversations/${id}/messages`, {
        body: JSON.stringify({ content }),
        headers: { 'content-type': 'application/json', 'idempotency-key': key },
      });
    assert.equal((await send('first')).status, 200);
    const reused = await send('second');
    assert.equal(reused.status, 422);
    assert.equal(reused.body.code, 'idempotency_key_reused');
  });

  it('422 content_filtered', async () => {
    app.model.enqueueFault({ kind: 'prompt_filtered', category: 'hate' });
    const answer = await conforming('POST', '/conversations/{id}/messages', `/conversations/${id}/messages`, {
      ...json({ content: 'Something the filter blocks' }),
    });
    assert.equal(answer.body.code, 'content_filtered');
  });

  it('429 upstream_rate_limited when the model stays rate limited', async () => {
    app.model.setDefaultFault({ kind: 'rate_limit', retryAfterMs: 20 });
    try {
      const answer = await conforming('POST', '/conversations/{id}/messages', `/conversations/${id}/messages`, {
        ...json({ content: 'Hello?' }),
      });
      assert.equal(answer.body.code, 'upstream_rate_limited');
      assert.ok(answer.headers.get('retry-after'));
    } finally {
      app.model.setDefaultFault(undefined);
    }
  });

  it('502 upstream_error when the model keeps failing with 500', async () => {
    app.model.setDefaultFault({ kind: 'server_error', status: 500 });
    try {
      const answer = await conforming('POST', '/conversations/{id}/messages', `/conversations/${id}/messages`, {
        ...json({ content: 'Hello?' }),
      });
      assert.equal(answer.status, 502);
      assert.equal(answer.body.code, 'upstream_error');
    } finally {
      app.model.setDefaultFault(undefined);
    }
  });

  it('404 not_found when a turn is queued on an app without a queue connection', async () => {
    const answer = await conforming('POST', '/conversations/{id}/turns', `/conversations/${id}/turns`, {
      ...json({ content: 'Later, please.' }),
    });
    assert.equal(answer.body.code, 'not_found');
    assert.match(answer.body.detail, /no queue connection/);
  });

  it('a stream that breaks off ends with a documented turn.failed event', async () => {
    app.model.enqueueFault({ kind: 'stream_error_after', deltas: 1 });
    const answer = await conforming(
      'POST',
      '/conversations/{id}/messages/stream',
      `/conversations/${id}/messages/stream`,
      json({ content: 'Tell me a long story.' }),
    );
    const last = parseServerSentEvents(answer.text).at(-1);
    assert.equal(last?.event, 'turn.failed');
    assert.equal(JSON.parse(last!.data).code, 'upstream_error');
  });

  it('401 invalid_signature for a tampered webhook body', async () => {
    const messageId = `msg_${randomUUID()}`;
    const timestamp = new Date();
    const signed = JSON.stringify({ threadId: 't', content: 'Hi' });
    const answer = await conforming('POST', '/webhooks/messages', '/webhooks/messages', {
      body: JSON.stringify({ threadId: 't', content: 'Hi!' }),
      headers: {
        'content-type': 'application/json',
        'webhook-id': messageId,
        'webhook-timestamp': String(Math.floor(timestamp.getTime() / 1000)),
        'webhook-signature': new Webhook(WEBHOOK_SECRET).sign(messageId, timestamp, signed),
      },
    });
    assert.equal(answer.body.code, 'invalid_signature');
  });
});

/**
 * Queued turns through the real path: HTTP into the local host, the job in Azurite's Table service, the message on
 * Azurite's Queue service, the local host's queue trigger running `runTurnJob`, the model stand-in answering.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { call, startTestApp, type TestApp } from '../support/app';

let app: TestApp;

/** AUTH_MODE=easyauth: the principal headers say who calls, so two callers are two header values. */
function as(user: string): Record<string, string> {
  return { 'x-ms-client-principal-id': user, 'x-ms-client-principal-name': user };
}

before(async () => {
  app = await startTestApp({ queue: true, env: { AUTH_MODE: 'easyauth' } });
});

after(async () => {
  await app?.close();
});

async function waitForStatus(url: string, headers: Record<string, string>, wanted: string[], timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  const seen: string[] = [];
  for (;;) {
    const response = await call('GET', url, undefined, headers);
    assert.equal(response.status, 200, response.text);
    if (seen.at(-1) !== response.body.status) seen.push(response.body.status);
    if (wanted.includes(response.body.status)) return { response, seen };
    if (Date.now() > deadline) assert.fail(`status stayed ${response.body.status} (seen: ${seen.join(' -> ')})`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('Prefer: respond-async', () => {
  it('answers 202 with Location while the model takes longer than the request, then the status reaches completed', async () => {
    const created = await call('POST', `${app.api}/conversations`, {}, as('ann'));
    assert.equal(created.status, 201, created.text);
    const id = created.body.id as string;
    app.model.enqueueFault({ kind: 'slow', delayMs: 3_000 });
    const posted = await call(
      'POST',
      `${app.api}/conversations/${id}/messages`,
      { content: 'Write me a long answer' },
      { ...as('ann'), prefer: 'respond-async' },
    );
    assert.equal(posted.status, 202, posted.text);
    assert.equal(posted.headers.get('preference-applied'), 'respond-async');
    const location = posted.headers.get('location') ?? '';
    assert.match(location, new RegExp(`^/api/conversations/${id}/turns/turn_[A-Za-z0-9_-]+$`));
    assert.deepEqual(posted.body, { conversationId: id, turnId: location.split('/').at(-1), status: 'queued' });

    const statusUrl = `${app.api.replace(/\/api$/, '')}${location}`;
    const { response, seen } = await waitForStatus(statusUrl, as('ann'), ['completed', 'failed']);
    assert.equal(response.body.status, 'completed', response.text);
    assert.ok(seen.includes('running'), `seen: ${seen.join(' -> ')}`);
    // The body a synchronous turn answers, beside the status members.
    const messages = await call('GET', `${app.api}/conversations/${id}`, undefined, as('ann'));
    const reply = messages.body.messages.at(-1);
    assert.deepEqual(response.body.message, {
      id: reply.id,
      role: 'assistant',
      content: reply.content,
      createdAt: reply.createdAt,
    });
    assert.equal(response.body.finishReason, 'stop');
    assert.ok(response.body.usage.totalTokens > 0);
    assert.equal(typeof response.body.context.promptTokens, 'number');
    assert.equal(messages.body.messages.length, 2);

    // Only the owner can read it.
    const other = await call('GET', statusUrl, undefined, as('bob'));
    assert.equal(other.status, 404, other.text);
    assert.equal(other.body.code, 'not_found');
  });

  it('answers the same turn for a retried request with the same Idempotency-Key, on either route, and runs it once', async () => {
    const created = await call('POST', `${app.api}/conversations`, {}, as('ann'));
    const id = created.body.id as string;
    const calls = app.model.callCount;
    const headers = { ...as('ann'), prefer: 'respond-async', 'idempotency-key': `key-${id}` };
    const first = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'Once only' }, headers);
    const second = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'Once only' }, headers);
    // POST /conversations/{id}/turns queues the same way, without a Prefer header: a retry there finds the turn too.
    const { prefer: _prefer, ...withoutPrefer } = headers;
    const third = await call('POST', `${app.api}/conversations/${id}/turns`, { content: 'Once only' }, withoutPrefer);
    assert.equal(first.status, 202, first.text);
    assert.equal(second.status, 202, second.text);
    assert.equal(third.status, 202, third.text);
    assert.equal(third.headers.get('preference-applied'), null);
    assert.equal(second.body.turnId, first.body.turnId);
    assert.equal(third.body.turnId, first.body.turnId);
    assert.equal(third.headers.get('location'), first.headers.get('location'));
    const statusUrl = `${app.api.replace(/\/api$/, '')}${first.headers.get('location')}`;
    await waitForStatus(statusUrl, as('ann'), ['completed']);
    const messages = await call('GET', `${app.api}/conversations/${id}`, undefined, as('ann'));
    assert.equal(messages.body.messages.length, 2);
    assert.equal(app.model.callCount, calls + 1);
    const reused = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'Another body' }, headers);
    assert.equal(reused.status, 422, reused.text);
  });

  it('records a turn the model refuses as failed, with its problem', async () => {
    const created = await call('POST', `${app.api}/conversations`, {}, as('ann'));
    const id = created.body.id as string;
    app.model.enqueueFault({ kind: 'prompt_filtered' });
    const posted = await call(
      'POST',
      `${app.api}/conversations/${id}/messages`,
      { content: 'Something the filter refuses' },
      { ...as('ann'), prefer: 'respond-async' },
    );
    assert.equal(posted.status, 202, posted.text);
    const statusUrl = `${app.api.replace(/\/api$/, '')}${posted.headers.get('location')}`;
    const { response } = await waitForStatus(statusUrl, as('ann'), ['completed', 'failed']);
    assert.equal(response.body.status, 'failed', response.text);
    assert.equal(response.body.problem.code, 'content_filtered');
    assert.equal(response.body.problem.type, 'urn:chat-api:problem:content_filtered');
    assert.equal(response.body.message, undefined);
  });

  it('answers 404 for a conversation the caller does not have, and queues nothing', async () => {
    const created = await call('POST', `${app.api}/conversations`, {}, as('ann'));
    const posted = await call(
      'POST',
      `${app.api}/conversations/${created.body.id}/messages`,
      { content: 'Not mine' },
      { ...as('bob'), prefer: 'respond-async' },
    );
    assert.equal(posted.status, 404, posted.text);
    const queued = await call(
      'POST',
      `${app.api}/conversations/${created.body.id}/turns`,
      { content: 'Not mine' },
      as('bob'),
    );
    assert.equal(queued.status, 404, queued.text);
  });
});

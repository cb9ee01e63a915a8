/**
 * Failover across two model deployments through the real HTTP path: two loopback model stand-ins listed in
 * AZURE_OPENAI_DEPLOYMENTS, real Azurite. The skip windows are real time (the retry-after and the cool-down are
 * two seconds), so the tests wait for them to pass; the unit tests walk the same rules with a fake clock.
 */
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { call, startTestApp, type TestApp } from '../support/app';
import { startModelStandIn, type ModelStandIn } from '../../local/modelStandIn';
import { collectEvents, type ServerSentEvent } from '../support/sseClient';

let app: TestApp;
let first: ModelStandIn;
let second: ModelStandIn;
/** Model answers that were 200s: each one must be a stored turn. */
let faults = 0;

before(async () => {
  second = await startModelStandIn({ expectedApiKey: 'test-key' });
  app = await startTestApp({
    env: (model) => ({
      AZURE_OPENAI_DEPLOYMENTS: JSON.stringify([
        { endpoint: model.url, deployment: 'chat', model: 'gpt-4o-mini', name: 'first' },
        { endpoint: second.url, deployment: 'chat', model: 'gpt-4o-mini', name: 'second' },
      ]),
      AZURE_OPENAI_ATTEMPT_TIMEOUT_MS: '3000',
      AZURE_OPENAI_FAILOVER_COOLDOWN_SECONDS: '2',
    }),
  });
  first = app.model;
  // The stand-ins count tokens in this process: build their encoder now, so that no attempt below waits for it.
  const warmUp = await fetch(`${first.baseURL}chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'api-key': 'test-key' },
    body: JSON.stringify({ model: 'chat', messages: [{ role: 'user', content: 'warm up' }] }),
  });
  assert.equal(warmUp.status, 200, await warmUp.text());
  first.clear();
});

after(async () => {
  await app?.close();
  await second?.close();
});

async function newConversation(): Promise<string> {
  const created = await call('POST', `${app.api}/conversations`, {});
  assert.equal(created.status, 201, created.text);
  return created.body.id as string;
}

async function send(id: string, content = 'Hello there'): Promise<{ deployment: string }> {
  const reply = await call('POST', `${app.api}/conversations/${id}/messages`, { content });
  assert.equal(reply.status, 200, reply.text);
  return { deployment: reply.body.deployment as string };
}

async function storedMessages(id: string): Promise<number> {
  const got = await call('GET', `${app.api}/conversations/${id}`);
  assert.equal(got.status, 200, got.text);
  return (got.body.messages as unknown[]).length;
}

async function streamTurn(id: string, content: string): Promise<ServerSentEvent[]> {
  const response = await fetch(`${app.api}/conversations/${id}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ content }),
  });
  assert.equal(response.status, 200);
  return collectEvents(response);
}

describe('failover across two deployments', () => {
  it('a 429 moves the turn to the second; the conversation skips the first until its retry-after, then returns', async () => {
    const id = await newConversation();
    assert.equal((await send(id)).deployment, 'first');
    first.enqueueFault({ kind: 'rate_limit', retryAfterSeconds: 2, retryAfterMs: 2000 });
    faults++;
    assert.equal((await send(id)).deployment, 'second');
    const skippedBy = Date.now(); // the skip started before this: it ends by skippedBy + 2 s
    const firstCalls = first.callCount;
    assert.equal((await send(id)).deployment, 'second', 'the first is skipped while its retry-after runs');
    assert.equal(first.callCount, firstCalls, 'and not even asked');
    await delay(Math.max(0, skippedBy + 2_200 - Date.now()));
    assert.equal((await send(id)).deployment, 'first', 'back once the retry-after passed');
    assert.equal(await storedMessages(id), 8);
  });

  it('a 5xx fails over the same way, and the first is skipped for the cool-down', async () => {
    const id = await newConversation();
    first.enqueueFault({ kind: 'server_error', status: 500 });
    faults++;
    assert.equal((await send(id)).deployment, 'second');
    const skippedBy = Date.now();
    assert.equal((await send(id)).deployment, 'second');
    await delay(Math.max(0, skippedBy + 2_200 - Date.now()));
    assert.equal((await send(id)).deployment, 'first');
  });

  it('a deployment that hangs is left after the attempt timeout', async () => {
    const id = await newConversation();
    first.enqueueFault({ kind: 'hang' });
    faults++;
    const { deployment } = await send(id);
    assert.equal(deployment, 'second');
    await delay(2_200); // the cool-down, so that the next test starts on the first deployment
  });

  it('a streamed turn that fails after its first delta does not fail over and stores nothing', async () => {
    const id = await newConversation();
    const secondCalls = second.callCount;
    first.enqueueFault({ kind: 'stream_error_after', deltas: 1 });
    faults++;
    const events = await streamTurn(id, 'Tell me a story');
    const names = events.map((event) => event.event);
    assert.deepEqual([names[0], names.at(-1)], ['turn.started', 'turn.failed']);
    assert.ok(names.includes('message.delta'), 'the first delta was shown');
    assert.equal(second.callCount, secondCalls, 'the second deployment was never asked');
    assert.equal(await storedMessages(id), 0);
  });

  it('a streamed turn fails over before its first delta, and says which deployment answered', async () => {
    const id = await newConversation();
    first.enqueueFault({ kind: 'server_error', status: 503 });
    faults++;
    const events = await streamTurn(id, 'Hi');
    const completed = events.find((event) => event.event === 'turn.completed');
    assert.ok(completed, JSON.stringify(events));
    assert.equal((completed.data as { deployment: string }).deployment, 'second');
    assert.equal(await storedMessages(id), 2);
  });

  it('asked the model once per stored turn', async () => {
    const list = await call('GET', `${app.api}/conversations?limit=100`);
    assert.equal(list.status, 200, list.text);
    let storedTurns = 0;
    for (const { id } of list.body.conversations as { id: string }[]) storedTurns += (await storedMessages(id)) / 2;
    assert.equal(first.callCount + second.callCount - faults, storedTurns);
  });
});

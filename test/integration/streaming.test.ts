/**
 * Streamed turns through the real HTTP path: the local host, real Azurite, and the model stand-in streaming
 * slowly, so the test can see deltas arrive while the model is still writing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { call, startTestApp, type TestApp } from '../support/app';
import { collectEvents, readEvents } from '../support/sseClient';

const CHUNK_DELAY_MS = 40;
let app: TestApp;

before(async () => {
  app = await startTestApp({ model: { streamChunkDelayMs: CHUNK_DELAY_MS } });
});

after(async () => {
  await app?.close();
});

async function newConversation(): Promise<string> {
  const created = await call('POST', `${app.api}/conversations`, {});
  assert.equal(created.status, 201);
  return created.body.id;
}

function stream(id: string, content: string, headers: Record<string, string> = {}, signal?: AbortSignal) {
  return fetch(`${app.api}/conversations/${id}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...headers },
    body: JSON.stringify({ content }),
    ...(signal ? { signal } : {}),
  });
}

async function storedMessages(id: string) {
  const read = await call('GET', `${app.api}/conversations/${id}`);
  assert.equal(read.status, 200);
  return read.body.messages as { role: string; content: string; id: string; finishReason?: string }[];
}

async function waitFor<T>(probe: () => Promise<T | undefined>, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('streamed turns', () => {
  it('delivers deltas while the model is still writing, and stores exactly what was streamed', async () => {
    const id = await newConversation();
    const response = await stream(id, 'Tell me a story about a lighthouse keeper');
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);

    const events = [];
    let storedWhenFirstDeltaArrived: number | undefined;
    for await (const event of readEvents(response)) {
      events.push(event);
      if (event.event === 'message.delta' && storedWhenFirstDeltaArrived === undefined) {
        // The turn is stored when the model's stream ends: nothing may be stored yet.
        storedWhenFirstDeltaArrived = (await storedMessages(id)).length;
      }
    }
    assert.equal(storedWhenFirstDeltaArrived, 0, 'the first delta arrived before the model had finished');

    const names = events.map((event) => event.event);
    assert.equal(names[0], 'turn.started');
    assert.equal(names.at(-1), 'turn.completed');
    const deltas = events.filter((event) => event.event === 'message.delta');
    assert.ok(deltas.length > 5, 'the reply came in pieces');
    const firstDelta = deltas[0]!;
    const completed = events.at(-1)!;
    assert.ok(
      completed.at - firstDelta.at >= CHUNK_DELAY_MS * (deltas.length - 2),
      'the first delta came long before the end of the stream',
    );

    const text = deltas.map((event) => event.data.content).join('');
    assert.equal(completed.data.message.content, text);
    assert.equal(events[0]!.data.messageId, completed.data.message.id);
    assert.ok(completed.data.usage.completionTokens > 0);
    const stored = await storedMessages(id);
    assert.deepEqual(
      stored.map((message) => [message.role, message.content]),
      [
        ['user', 'Tell me a story about a lighthouse keeper'],
        ['assistant', text],
      ],
    );
  });

  it('stores the whole turn when the client disconnects after the first delta', async () => {
    const id = await newConversation();
    const controller = new AbortController();
    const response = await stream(id, 'A long answer, please', {}, controller.signal);
    for await (const event of readEvents(response)) {
      if (event.event === 'message.delta') break; // leaving the loop cancels the body
    }
    controller.abort();
    const stored = await waitFor(async () => {
      const messages = await storedMessages(id);
      return messages.length === 2 ? messages : undefined;
    }, 'the turn to be stored after the disconnect');
    assert.match(stored[1]!.content, /local model/);
    assert.equal(stored[1]!.finishReason, 'stop');
  });

  it('ends with turn.failed and stores nothing when the model fails mid-stream', async () => {
    const id = await newConversation();
    app.model.enqueueFault({ kind: 'stream_error_after', deltas: 3 });
    const events = await collectEvents(await stream(id, 'This one will break'));
    const names = events.map((event) => event.event);
    assert.equal(names[0], 'turn.started');
    assert.ok(names.filter((name) => name === 'message.delta').length >= 1, 'some deltas were sent');
    assert.equal(names.at(-1), 'turn.failed');
    const problem = events.at(-1)!.data;
    assert.equal(problem.code, 'upstream_error');
    assert.equal(problem.status, 502);
    assert.deepEqual(await storedMessages(id), []);
    // The conversation is usable again at once.
    const next = await collectEvents(await stream(id, 'Try again'));
    assert.equal(next.at(-1)?.event, 'turn.completed');
  });

  it('answers errors found before the model is called as ordinary problems, not streams', async () => {
    const id = await newConversation();
    const invalid = await fetch(`${app.api}/conversations/${id}/messages?stream=true`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ content: '' }),
    });
    assert.equal(invalid.status, 400);
    assert.equal(invalid.headers.get('content-type'), 'application/problem+json');
    const missing = await stream('0123456789abcdef', 'hello');
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { code: string }).code, 'not_found');
  });

  it('replays a completed streamed turn as a stream without calling the model again', async () => {
    const id = await newConversation();
    const headers = { 'idempotency-key': 'stream-retry-1' };
    const first = await collectEvents(await stream(id, 'Remember this', headers));
    const calls = app.model.callCount;
    const again = await collectEvents(await stream(id, 'Remember this', headers));
    assert.equal(app.model.callCount, calls);
    const text = (events: typeof first) =>
      events
        .filter((event) => event.event === 'message.delta')
        .map((event) => event.data.content)
        .join('');
    assert.equal(text(again), text(first));
    assert.equal(again.at(-1)?.event, 'turn.completed');
    assert.equal(again.at(-1)?.data.replayed, true);
    assert.equal((await storedMessages(id)).length, 2);
  });
});

/** CHAT_STREAM_ON_DISCONNECT=abort: a client that goes away stops the model, and nothing is stored. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { call, startTestApp, type TestApp } from '../support/app';
import { readEvents } from '../support/sseClient';

let app: TestApp;

before(async () => {
  app = await startTestApp({ model: { streamChunkDelayMs: 40 }, env: { CHAT_STREAM_ON_DISCONNECT: 'abort' } });
});

after(async () => {
  await app?.close();
});

describe('streamed turns with CHAT_STREAM_ON_DISCONNECT=abort', () => {
  it('stores nothing when the client disconnects mid-stream, and the conversation stays usable', async () => {
    const { body: conversation } = await call('POST', `${app.api}/conversations`, {});
    const controller = new AbortController();
    const response = await fetch(`${app.api}/conversations/${conversation.id}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ content: 'A long answer, please' }),
      signal: controller.signal,
    });
    for await (const event of readEvents(response)) {
      if (event.event === 'message.delta') break;
    }
    controller.abort();
    // Give the app time to notice and abandon the model's stream (which alone takes ~1 s to finish).
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const read = await call('GET', `${app.api}/conversations/${conversation.id}`);
    assert.deepEqual(read.body.messages, []);

    const next = await call('POST', `${app.api}/conversations/${conversation.id}/messages`, { content: 'hello' });
    assert.equal(next.status, 200, next.text);
  });
});

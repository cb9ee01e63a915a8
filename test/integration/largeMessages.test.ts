/** Messages far over one Table Storage string property (32,768 UTF-16 units) are stored whole and read back identical. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { call, startTestApp, type TestApp } from '../support/app';

let app: TestApp;

before(async () => {
  app = await startTestApp({ model: { reply: (request) => String(request.messages.at(-1)?.content ?? '') } });
});

after(async () => {
  await app?.close();
});

describe('large messages', () => {
  it('round-trips a 70,000-character message and an equally long reply', async () => {
    const { body: conversation } = await call('POST', `${app.api}/conversations`, {});
    // Astral characters throughout, so property boundaries land inside surrogate pairs somewhere.
    const unit = 'Zürich 🚀 naïve façade — 東京 🎉 ';
    const content = unit.repeat(Math.ceil(70_000 / unit.length)).slice(0, 70_000);
    assert.equal(content.length, 70_000);

    const sent = await call('POST', `${app.api}/conversations/${conversation.id}/messages`, { content });
    assert.equal(sent.status, 200, sent.text.slice(0, 500));
    assert.equal(app.model.requests.at(-1)?.body?.messages.at(-1)?.content, content, 'the model got it whole');

    const read = await call('GET', `${app.api}/conversations/${conversation.id}`);
    assert.equal(read.status, 200);
    const [user, reply] = read.body.messages;
    assert.equal(user.content.length, content.length);
    assert.equal(user.content, content);
    assert.equal(reply.content, sent.body.message.content);
  });
});

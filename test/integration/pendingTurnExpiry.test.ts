/**
 * A paused turn expires after CHAT_PENDING_TURN_SECONDS (its smallest value, 10 s) through the real path: the local
 * host, Azurite and a model stand-in that calls a client tool. An expired turn stores nothing and blocks nothing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { call, startTestApp, type TestApp } from '../support/app';
import type { ReplyRequest, StandInToolReply } from '../../local/modelStandIn';

let app: TestApp;

function script(request: ReplyRequest): string | StandInToolReply {
  const last = request.messages.at(-1);
  const text = typeof last?.content === 'string' ? last.content : '';
  if (last?.role === 'user' && text.startsWith('CLIENT')) {
    return { toolCalls: [{ id: 'call_slot', name: 'pick_slot', arguments: '{"day":"friday"}' }] };
  }
  return `Plain answer to ${last?.role}.`;
}

before(async () => {
  app = await startTestApp({ model: { reply: script }, env: { CHAT_PENDING_TURN_SECONDS: '10' } });
});

after(async () => {
  await app?.close();
});

describe('a paused turn that nobody answers', () => {
  it('expires: the pending turn is gone, results are refused, new messages are taken, nothing of it is stored', async () => {
    const created = await call('POST', `${app.api}/conversations`, {
      clientTools: [{ name: 'pick_slot', description: 'Pick a delivery slot.', parameters: { type: 'object' } }],
    });
    assert.equal(created.status, 201, created.text);
    const id = created.body.id as string;
    const paused = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'CLIENT book a slot' });
    assert.equal(paused.status, 200, paused.text);
    assert.equal(paused.body.status, 'requires_action');
    const expiresAt = Date.parse(paused.body.expiresAt);
    assert.ok(expiresAt - Date.now() <= 10_000, `expires at ${paused.body.expiresAt}`);
    assert.equal((await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'hi' })).status, 409);

    await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiresAt - Date.now()) + 250));

    const pending = await call('GET', `${app.api}/conversations/${id}/pending-turn`);
    assert.equal(pending.status, 404, pending.text);
    const late = await call('POST', `${app.api}/conversations/${id}/tool-results`, {
      results: [{ toolCallId: 'call_slot', output: 'Friday 10:00' }],
    });
    assert.equal(late.status, 409, late.text);
    assert.equal(late.body.code, 'no_pending_turn');
    const next = await call('POST', `${app.api}/conversations/${id}/messages`, { content: 'what now?' });
    assert.equal(next.status, 200, next.text);
    assert.equal(next.body.status, 'completed');
    const read = await call('GET', `${app.api}/conversations/${id}`);
    assert.deepEqual(
      read.body.messages.map((message: { role: string; content: string }) => [message.role, message.content]),
      [
        ['user', 'what now?'],
        ['assistant', 'Plain answer to user.'],
      ],
    );
  });
});

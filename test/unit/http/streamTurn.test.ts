import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { HttpResponseInit } from '@azure/functions';
import { Conversations } from '../../../src/core/conversations';
import { NotFoundError } from '../../../src/core/errors';
import { TurnRunner } from '../../../src/core/turn';
import { streamTurn, wantsEventStream } from '../../../src/http/streamTurn';
import { fakeDependencies } from '../../support/fakes';

const caller = { id: 'alice', kind: 'user' } as const;

async function readEvents(response: HttpResponseInit): Promise<{ event: string; data: Record<string, unknown> }[]> {
  const text = await new Response(response.body as ReadableStream).text();
  return text
    .split('\n\n')
    .filter((block) => block.trim().length > 0)
    .map((block) => {
      const event = /^event: (.*)$/m.exec(block)?.[1] ?? '';
      const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? 'null');
      return { event, data };
    });
}

describe('streamTurn', () => {
  it('chooses streaming from Accept or ?stream=true', () => {
    assert.equal(wantsEventStream('text/event-stream', null), true);
    assert.equal(wantsEventStream('application/json', 'true'), true);
    assert.equal(wantsEventStream('application/json', null), false);
  });

  it('streams turn.started, the deltas and turn.completed, and stores the reply', async () => {
    const { deps, model, store } = fakeDependencies();
    const conversation = await new Conversations(deps).create(caller, {});
    model.answers.push({ content: 'one two three' });
    const response = await streamTurn(
      new TurnRunner(deps),
      { caller, conversationId: conversation.id, content: 'count' },
      { onDisconnect: 'finish', requestId: 'r1' },
    );
    assert.equal((response.headers as Record<string, string>)['Content-Type'], 'text/event-stream; charset=utf-8');
    const events = await readEvents(response);
    assert.deepEqual(
      events.map((event) => event.event),
      ['turn.started', 'message.delta', 'message.delta', 'message.delta', 'turn.completed'],
    );
    const deltas = events
      .filter((event) => event.event === 'message.delta')
      .map((event) => event.data.content)
      .join('');
    assert.equal(deltas, 'one two three');
    const stored = await store.getMessage(caller, conversation.id, 2);
    assert.equal(stored?.content, deltas);
  });

  it('rejects before the stream starts for errors found before the model call', async () => {
    const { deps } = fakeDependencies();
    await assert.rejects(
      streamTurn(
        new TurnRunner(deps),
        { caller, conversationId: 'missing', content: 'x' },
        { onDisconnect: 'finish', requestId: 'r' },
      ),
      NotFoundError,
    );
  });

  it('ends with turn.failed and stores nothing when the model fails mid-stream', async () => {
    const { deps, model, store } = fakeDependencies();
    const conversation = await new Conversations(deps).create(caller, {});
    model.stream = async function* () {
      yield { type: 'delta', content: 'partial' } as const;
      throw new Error('socket hang up');
    };
    const response = await streamTurn(
      new TurnRunner(deps),
      { caller, conversationId: conversation.id, content: 'x' },
      { onDisconnect: 'finish', requestId: 'r2' },
    );
    const events = await readEvents(response);
    assert.deepEqual(
      events.map((event) => event.event),
      ['turn.started', 'message.delta', 'turn.failed'],
    );
    assert.equal(events[2]?.data.code, 'internal_error');
    assert.equal(events[2]?.data.requestId, 'r2');
    assert.equal((await store.get(caller, conversation.id))?.messageCount, 0);
  });

  it('replays a completed idempotent turn as a stream', async () => {
    const { deps, model } = fakeDependencies();
    const conversation = await new Conversations(deps).create(caller, {});
    const runner = new TurnRunner(deps);
    const input = { caller, conversationId: conversation.id, content: 'hello', idempotencyKey: 'k' };
    const first = await readEvents(await streamTurn(runner, input, { onDisconnect: 'finish', requestId: 'a' }));
    const again = await readEvents(await streamTurn(runner, input, { onDisconnect: 'finish', requestId: 'b' }));
    assert.equal(model.requests.length, 1);
    assert.equal(again.at(-1)?.event, 'turn.completed');
    assert.equal(again.at(-1)?.data.replayed, true);
    const text = (events: typeof first) =>
      events
        .filter((event) => event.event === 'message.delta')
        .map((event) => event.data.content)
        .join('');
    assert.equal(text(again), text(first));
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Conversations, encodeMessageCursor } from '../../../src/core/conversations';
import {
  ContextLengthExceededError,
  InvalidRequestError,
  NotFoundError,
  RateLimitedError,
  SpecialTokenRejectedError,
} from '../../../src/core/errors';
import { TurnRunner } from '../../../src/core/turn';
import { fakeDependencies } from '../../support/fakes';

const alice = { id: 'alice', kind: 'user' } as const;
const bob = { id: 'bob', kind: 'user' } as const;

describe('Conversations', () => {
  it('creates with the default system message and counts the prologue once', async () => {
    const { deps, store, tokenizer } = fakeDependencies();
    const conversations = new Conversations(deps);
    const created = await conversations.create(alice, {
      examples: [
        { role: 'user', content: 'ping' },
        { role: 'assistant', content: 'pong' },
      ],
      title: 'Demo',
      metadata: { app: 'ios' },
    });
    assert.equal(created.system, 'You are a helpful assistant.');
    assert.deepEqual(created.examples, [
      { role: 'user', content: 'ping' },
      { role: 'assistant', content: 'pong' },
    ]);
    assert.equal(created.title, 'Demo');
    assert.deepEqual(created.metadata, { app: 'ios' });
    const stored = await store.get(alice, created.id);
    assert.deepEqual(
      stored?.prologue.map((message) => message.tokens),
      [3 + 1 + 5, 3 + 1 + 1, 3 + 1 + 1],
    );
    const calls = tokenizer.encodeCalls;
    await new TurnRunner(deps).send({ caller: alice, conversationId: created.id, content: 'hello' });
    assert.ok(tokenizer.encodeCalls - calls <= 4, 'the prologue is not re-encoded on a turn');
  });

  it('refuses a prologue that leaves no room for a turn, and special-token markup in it', async () => {
    const { deps } = fakeDependencies({ settings: { tokenLimit: 120, maxResponseTokens: 100 } });
    const conversations = new Conversations(deps);
    await assert.rejects(conversations.create(alice, { system: 'word '.repeat(20) }), ContextLengthExceededError);
    await assert.rejects(conversations.create(alice, { system: 'ok <|endoftext|>' }), SpecialTokenRejectedError);
  });

  it('refuses a system message and examples too large to store together', async () => {
    const { deps } = fakeDependencies({ settings: { tokenLimit: 10_000_000 } });
    const example = { role: 'user' as const, content: 'word '.repeat(20_000) };
    await assert.rejects(
      new Conversations(deps).create(alice, { examples: Array.from({ length: 5 }, () => example) }),
      InvalidRequestError,
    );
  });

  it('refuses client tools that would not fit the header beside the system message and examples, before storing', async () => {
    const { deps, store } = fakeDependencies({ settings: { tokenLimit: 10_000_000 } });
    // 34 tools of about 15,800 characters each pass the per-tool bound but make a 1 MB header.
    const clientTools = Array.from({ length: 34 }, (_, index) => ({
      name: `tool_${index}`,
      description: 'A tool.',
      parameters: { type: 'object', description: 'x'.repeat(15_700) },
    }));
    const conversations = new Conversations(deps);
    const before = (await store.list(alice, { limit: 100 })).items.length;
    await assert.rejects(conversations.create(alice, { clientTools }), (error: unknown) => {
      assert.ok(error instanceof InvalidRequestError);
      assert.deepEqual(error.extensions['errors'], [
        { field: 'clientTools', message: 'system message, examples and client tools too large together' },
      ]);
      assert.match(error.detail, /over 450000/);
      return true;
    });
    assert.equal((await store.list(alice, { limit: 100 })).items.length, before, 'nothing was stored');
    // The same tools fit when there are fewer of them.
    await conversations.create(alice, { clientTools: clientTools.slice(0, 28) });
  });

  it('pages messages with an opaque cursor and refuses a forged one', async () => {
    const { deps } = fakeDependencies();
    const conversations = new Conversations(deps);
    const { id } = await conversations.create(alice, {});
    const turns = new TurnRunner(deps);
    for (const word of ['a', 'b', 'c']) await turns.send({ caller: alice, conversationId: id, content: word });

    const first = await conversations.get(alice, id, { limit: 4 });
    assert.deepEqual(
      first.messages.map((message) => message.content),
      ['a', 'echo: a', 'b', 'echo: b'],
    );
    assert.ok(first.nextCursor);
    const second = await conversations.get(alice, id, { limit: 4, cursor: first.nextCursor });
    assert.deepEqual(
      second.messages.map((message) => message.content),
      ['c', 'echo: c'],
    );
    assert.equal(second.nextCursor, undefined);
    assert.equal(second.messages[1]?.finishReason, 'stop');
    await assert.rejects(conversations.get(alice, id, { limit: 4, cursor: 'bm9wZQ' }), InvalidRequestError);
    assert.equal(encodeMessageCursor(4), first.nextCursor);
  });

  it('keeps callers apart and deletes', async () => {
    const { deps } = fakeDependencies();
    const conversations = new Conversations(deps);
    const { id } = await conversations.create(alice, {});
    await assert.rejects(conversations.get(bob, id, { limit: 10 }), NotFoundError);
    await assert.rejects(conversations.delete(bob, id), NotFoundError);
    assert.deepEqual((await conversations.list(bob, { limit: 10 })).items, []);
    await conversations.delete(alice, id);
    await assert.rejects(conversations.get(alice, id, { limit: 10 }), NotFoundError);
  });

  it('bounds the conversations one caller may keep', async () => {
    const { deps } = fakeDependencies({ settings: { maxConversationsPerCaller: 2 } });
    const conversations = new Conversations(deps);
    await conversations.create(alice, {});
    await conversations.create(alice, {});
    await assert.rejects(conversations.create(alice, {}), (error: unknown) => {
      assert.ok(error instanceof RateLimitedError);
      assert.equal(error.code, 'conversation_limit_reached');
      return true;
    });
    await conversations.create(bob, {});
    // Integrations keep a conversation per thread: the count is for end users.
    const integration = { id: 'webhook', kind: 'integration' } as const;
    for (let i = 0; i < 3; i++) await conversations.create(integration, {});
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AppServices } from '../../../../src/composition';
import { Conversations } from '../../../../src/core/conversations';
import type { Caller, NewConversation } from '../../../../src/core/ports';
import { TurnRunner } from '../../../../src/core/turn';
import {
  participantName,
  runThreadTurn,
  titleFrom,
  threadConversationId,
  WEBHOOK_CALLER,
} from '../../../../src/http/webhooks/threadTurn';
import { isStorableText } from '../../../../src/core/text';
import { fakeDependencies, MemoryStore } from '../../../support/fakes';

/** Refuses to create over an existing conversation, as Table Storage does (409). */
class CreateOnceStore extends MemoryStore {
  creates = 0;
  override async create(owner: Caller, input: NewConversation, options?: { maxConversations?: number }) {
    this.creates++;
    if (await this.get(owner, input.id)) throw new Error(`Conversation ${input.id} already exists.`);
    return super.create(owner, input, options);
  }
}

function services() {
  const store = new CreateOnceStore();
  const fakes = fakeDependencies({ store });
  const app = {
    conversations: new Conversations(fakes.deps),
    turns: new TurnRunner(fakes.deps),
  } as unknown as AppServices;
  return { ...fakes, store, app };
}

describe('thread ids', () => {
  it('maps a thread to a fixed 32-character conversation id', () => {
    const id = threadConversationId('slack:C123/1700000000.1234');
    assert.match(id, /^[A-Za-z0-9_-]{32}$/);
    assert.equal(threadConversationId('slack:C123/1700000000.1234'), id);
    assert.notEqual(threadConversationId('slack:C123/1700000000.1235'), id);
  });

  it('turns a free-form user id into a participant name the model accepts', () => {
    assert.equal(participantName('ann.lee@example.com'), 'ann_lee_example_com');
    assert.equal(participantName('U024BE7LH'), 'U024BE7LH');
    assert.equal(participantName('!!!'), undefined);
    assert.equal(participantName('x'.repeat(100))?.length, 64);
    assert.equal(participantName(undefined), undefined);
  });
});

describe('titleFrom', () => {
  it('takes the first line, and cuts a long one between whole characters within 200 UTF-16 code units', () => {
    assert.equal(titleFrom('  Where is my order?\nIt was due Monday.'), 'Where is my order?');
    const family = '\u{1F468}\u200D\u{1F469}\u200D\u{1F467}'; // 8 code units, one character
    for (const text of ['x' + '\u{1F600}'.repeat(150), family.repeat(40), 'y'.repeat(500)]) {
      const title = titleFrom(text);
      assert.ok(title.length <= 200, `${title.length} units`);
      assert.ok(title.endsWith('…'));
      assert.ok(text.startsWith(title.slice(0, -1)), 'a prefix of the text');
      const graphemes = [...new Intl.Segmenter(undefined, { granularity: 'grapheme' }).segment(text)];
      assert.ok(
        graphemes.some((part) => part.index === title.length - 1),
        'cut at a character boundary',
      );
    }
  });
});

describe('runThreadTurn', () => {
  it('creates the conversation on first use and reuses it for the next message', async () => {
    const { app, store, model } = services();
    const first = await runThreadTurn(app, {
      principal: WEBHOOK_CALLER,
      source: 'webhook',
      threadId: 't1',
      content: 'one',
      deliveryId: 'd1',
    });
    const second = await runThreadTurn(app, {
      principal: WEBHOOK_CALLER,
      source: 'webhook',
      threadId: 't1',
      content: 'two',
      deliveryId: 'd2',
    });
    assert.equal(first.body.conversationId, threadConversationId('t1'));
    assert.equal(second.body.conversationId, first.body.conversationId);
    assert.equal(store.creates, 1);
    assert.equal(model.requests.length, 2);
    assert.deepEqual(
      model.requests[1]?.messages.map((message) => message.content),
      ['You are a helpful assistant.', 'one', 'echo: one', 'two'],
    );
    const conversation = await store.get(WEBHOOK_CALLER, first.body.conversationId);
    assert.deepEqual(conversation?.metadata, { source: 'webhook', threadId: 't1' });
    assert.equal(conversation?.title, 't1: one', 'titled by the thread and the first message, not the thread id alone');
  });

  it('lets two first deliveries of one thread race: both land in the one conversation', async () => {
    const { app, store } = services();
    const [a, b] = await Promise.all([
      runThreadTurn(app, {
        principal: WEBHOOK_CALLER,
        source: 'webhook',
        threadId: 'race',
        content: 'a',
        deliveryId: 'da',
      }),
      runThreadTurn(app, {
        principal: WEBHOOK_CALLER,
        source: 'webhook',
        threadId: 'race',
        content: 'b',
        deliveryId: 'db',
      }),
    ]);
    assert.equal(a.body.conversationId, b.body.conversationId);
    assert.equal(store.creates, 2, 'both tried to create: the race really happened');
    const stored = await store.loadForTurn(WEBHOOK_CALLER, a.body.conversationId);
    assert.equal(stored?.messages.length, 4);
  });

  it('answers a redelivery from the stored turn without calling the model again', async () => {
    const { app, model } = services();
    const input = {
      principal: WEBHOOK_CALLER,
      source: 'webhook' as const,
      threadId: 't',
      content: 'hi',
      deliveryId: 'msg_1',
    };
    const first = await runThreadTurn(app, input);
    const again = await runThreadTurn(app, input);
    assert.equal(model.requests.length, 1);
    assert.equal(again.replayed, true);
    assert.deepEqual(again.body, first.body);
  });

  it('titles a conversation with the thread id cut on a character boundary, never inside an emoji', async () => {
    const { app, store } = services();
    const threadId = `${'t'.repeat(199)}😀tail`;
    await runThreadTurn(app, {
      principal: WEBHOOK_CALLER,
      source: 'webhook',
      threadId,
      content: 'hi',
      deliveryId: 'd-emoji',
    });
    const title = (await store.get(WEBHOOK_CALLER, threadConversationId(threadId)))?.title ?? '';
    assert.equal(title, `${'t'.repeat(199)}…`, 'the emoji does not fit whole in 200 units, so it is left out');
    assert.ok(isStorableText(title));
  });

  it('refuses to hash a thread id that is not well-formed Unicode (UTF-8 would merge it with U+FFFD)', () => {
    assert.throws(() => threadConversationId('ticket-X-\ud800'), /well-formed/);
    assert.notEqual(threadConversationId('ticket-X-\ufffd'), threadConversationId('ticket-X-'));
  });

  it('keeps threads of different integrations apart', async () => {
    const { app, store } = services();
    const github: Caller = { id: 'github', kind: 'integration' };
    await runThreadTurn(app, {
      principal: WEBHOOK_CALLER,
      source: 'webhook',
      threadId: 'same',
      content: 'x',
      deliveryId: '1',
    });
    await runThreadTurn(app, { principal: github, source: 'github', threadId: 'same', content: 'y', deliveryId: '1' });
    assert.equal((await store.loadForTurn(WEBHOOK_CALLER, threadConversationId('same')))?.messages[0]?.content, 'x');
    assert.equal((await store.loadForTurn(github, threadConversationId('same')))?.messages[0]?.content, 'y');
  });
});

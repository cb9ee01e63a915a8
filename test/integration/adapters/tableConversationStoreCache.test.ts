/**
 * The store with its history cache on, against Azurite: a turn on a conversation this instance served reads the
 * header and only what other instances added since; whatever the cache holds, what a turn sees is what storage holds.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TableClient } from '@azure/data-tables';
import { HistoryCache } from '../../../src/adapters/historyCache';
import {
  createTableConversationStore,
  CONVERSATIONS_TABLE,
  TableConversationStore,
} from '../../../src/adapters/tableConversationStore';
import { conversationPartition, messageRow } from '../../../src/adapters/tableKeys';
import { ConcurrencyConflict, type Caller, type NewConversation, type StoredMessage } from '../../../src/core/ports';
import { startAzurite, type RunningAzurite } from '../../../local/azurite';

const PREFIX = 'cachetest';
const owner: Caller = { id: 'carol@example.com', kind: 'user' };
const CACHE_BYTES = 8 * 1024 * 1024;

let azurite: RunningAzurite;
/** Another instance: no cache, writes what "someone else" stores. */
let other: TableConversationStore;
let idCounter = 0;
let clockMs = Date.parse('2026-01-01T00:00:00.000Z');

before(async () => {
  azurite = await startAzurite();
  other = await createTableConversationStore({ connectionString: azurite.connectionString, tablePrefix: PREFIX });
});

after(async () => {
  await azurite?.stop();
});

function newClient(): TableClient {
  return TableClient.fromConnectionString(azurite.connectionString, PREFIX + CONVERSATIONS_TABLE, {
    allowInsecureConnection: true,
  });
}

interface Reads {
  /** Every query's filter and every point read's row key, in order. */
  log: string[];
  clear(): void;
}

/** An instance with a cache, whose reads the test can see. */
function cachedStore(cacheBytes = CACHE_BYTES): { store: TableConversationStore; reads: Reads } {
  const client = newClient();
  const reads: Reads = {
    log: [],
    clear() {
      this.log.length = 0;
    },
  };
  const listEntities = client.listEntities.bind(client);
  const getEntity = client.getEntity.bind(client);
  Object.assign(client, {
    listEntities: ((options) => {
      reads.log.push(`query ${options?.queryOptions?.filter ?? ''}`);
      return listEntities(options);
    }) as TableClient['listEntities'],
    getEntity: ((partitionKey, rowKey, options) => {
      // The conversation's reads only: the activity pointer read beside a load (the caller's index partition, 'u|')
      // is counted in tableConversationStore.test.ts.
      if (!partitionKey.startsWith('u|')) reads.log.push(`get ${rowKey}`);
      return getEntity(partitionKey, rowKey, options);
    }) as TableClient['getEntity'],
  });
  return { store: new TableConversationStore(client, new HistoryCache(cacheBytes)), reads };
}

function nextTime(): string {
  clockMs += 1_000;
  return new Date(clockMs).toISOString();
}

function newConversation(id?: string): NewConversation {
  idCounter += 1;
  return {
    id: id ?? `cached_${idCounter}`,
    title: null,
    metadata: {},
    prologue: [{ role: 'system', content: 'Be brief.', tokens: 7, encoding: 'o200k_base' }],
    createdAt: nextTime(),
  };
}

function message(seq: number, content = `message ${seq}`): StoredMessage {
  const role = seq % 2 === 1 ? 'user' : 'assistant';
  return {
    seq,
    id: `msg_${String(seq).padStart(10, '0')}`,
    role,
    content,
    createdAt: new Date(Date.parse('2026-01-01T00:00:00.000Z') + seq).toISOString(),
    tokens: 4 + seq,
    encoding: 'o200k_base',
    ...(role === 'assistant' ? { finishReason: 'stop' as const } : {}),
  };
}

/** A turn stored by `store` on the version it reads now. */
async function commitTurn(store: TableConversationStore, conversationId: string, contents?: [string, string]) {
  const loaded = await store.loadForTurn(owner, conversationId);
  assert.ok(loaded);
  const next = loaded.conversation.messageCount + 1;
  await store.commitTurn(owner, {
    conversationId,
    expectedVersion: loaded.conversation.version,
    messages: [message(next, contents?.[0]), message(next + 1, contents?.[1])],
    updatedAt: nextTime(),
  });
}

/** What storage really holds: a store without a cache reads everything. */
async function truth(conversationId: string) {
  const loaded = await other.loadForTurn(owner, conversationId);
  assert.ok(loaded);
  return loaded;
}

describe('loadForTurn with the history cache', () => {
  test('a conversation served before is read as its header alone, and the history is the same', async () => {
    const { store, reads } = cachedStore();
    const created = await store.create(owner, newConversation());
    await commitTurn(other, created.id);
    await commitTurn(other, created.id);

    reads.clear();
    const first = await store.loadForTurn(owner, created.id);
    assert.equal(reads.log.length, 1);
    assert.match(reads.log[0]!, /^query /, 'first read: one partition query');

    reads.clear();
    const second = await store.loadForTurn(owner, created.id);
    assert.deepEqual(reads.log, ['get h'], 'nothing changed: the header alone');
    assert.deepEqual(second, first);
    assert.deepEqual(second, await truth(created.id));
  });

  test('turns stored by another instance are read, and only those', async () => {
    const { store, reads } = cachedStore();
    const created = await store.create(owner, newConversation());
    await commitTurn(other, created.id);
    await store.loadForTurn(owner, created.id);

    await commitTurn(other, created.id, ['third', 'fourth']);
    await commitTurn(other, created.id, ['fifth', 'sixth']);
    reads.clear();
    const loaded = await store.loadForTurn(owner, created.id);
    assert.equal(reads.log.length, 2);
    assert.equal(reads.log[0], 'get h');
    // From the first new message up to (not including) the one after the last: a long message's rows come along.
    assert.ok(
      reads.log[1]!.includes(`ge '${messageRow(3)}'`) && reads.log[1]!.includes(`lt '${messageRow(7)}'`),
      reads.log[1],
    );
    assert.ok(!reads.log[1]!.includes(`'${messageRow(1)}'`), 'the cached messages are not read again');
    assert.deepEqual(loaded, await truth(created.id));
    assert.deepEqual(
      loaded?.messages.map((stored) => stored.content),
      ['message 1', 'message 2', 'third', 'fourth', 'fifth', 'sixth'],
    );

    // Now cached in full: the next read is the header again.
    reads.clear();
    await store.loadForTurn(owner, created.id);
    assert.deepEqual(reads.log, ['get h']);
  });

  test('a turn this instance commits is added to the cache: its next read is the header alone', async () => {
    const { store, reads } = cachedStore();
    const created = await store.create(owner, newConversation());
    await commitTurn(store, created.id, ['question', 'answer']);
    reads.clear();
    const loaded = await store.loadForTurn(owner, created.id);
    assert.deepEqual(reads.log, ['get h']);
    assert.deepEqual(loaded, await truth(created.id));
  });

  test('a commit that loses its race adds nothing; the next read sees the winner', async () => {
    const { store } = cachedStore();
    const created = await store.create(owner, newConversation());
    const stale = await store.loadForTurn(owner, created.id);
    assert.ok(stale);
    await commitTurn(other, created.id, ['winner asks', 'winner hears']);
    await assert.rejects(
      store.commitTurn(owner, {
        conversationId: created.id,
        expectedVersion: stale.conversation.version,
        messages: [message(1, 'loser asks'), message(2, 'loser hears')],
        updatedAt: nextTime(),
      }),
      ConcurrencyConflict,
    );
    const loaded = await store.loadForTurn(owner, created.id);
    assert.deepEqual(
      loaded?.messages.map((stored) => stored.content),
      ['winner asks', 'winner hears'],
    );
    assert.deepEqual(loaded, await truth(created.id));
  });

  test('a conversation deleted elsewhere is gone; one created again under the same id is read afresh', async () => {
    const { store } = cachedStore();
    const created = await store.create(owner, newConversation('reused-id'));
    await commitTurn(store, created.id, ['old question', 'old answer']);
    await store.loadForTurn(owner, created.id);

    assert.equal(await other.delete(owner, created.id), true);
    assert.equal(await store.loadForTurn(owner, created.id), undefined);

    // Deleted and created again (later createdAt) with as many messages as the cache holds, and more.
    await store.loadForTurn(owner, (await store.create(owner, newConversation('reused-id'))).id);
    assert.equal(await other.delete(owner, created.id), true);
    await other.create(owner, newConversation('reused-id'));
    await commitTurn(other, created.id, ['new question', 'new answer']);
    const loaded = await store.loadForTurn(owner, created.id);
    assert.deepEqual(
      loaded?.messages.map((stored) => stored.content),
      ['new question', 'new answer'],
    );
    assert.deepEqual(loaded, await truth(created.id));
  });

  test('a conversation deleted and re-created with the same number of messages is not answered from the cache', async () => {
    const { store } = cachedStore();
    const created = await store.create(owner, newConversation('same-count'));
    await commitTurn(store, created.id, ['before', 'delete']);
    await store.loadForTurn(owner, created.id);
    await other.delete(owner, created.id);
    await other.create(owner, newConversation('same-count'));
    await commitTurn(other, created.id, ['after', 'recreate']);
    const loaded = await store.loadForTurn(owner, created.id);
    assert.deepEqual(
      loaded?.messages.map((stored) => stored.content),
      ['after', 'recreate'],
    );
  });

  test('with the cache off every read is the whole partition', async () => {
    const { store, reads } = cachedStore(0);
    const created = await store.create(owner, newConversation());
    await commitTurn(store, created.id);
    reads.clear();
    await store.loadForTurn(owner, created.id);
    await store.loadForTurn(owner, created.id);
    assert.equal(reads.log.length, 2);
    assert.ok(reads.log.every((read) => read.startsWith('query ')));
  });

  test('messages the cache holds are those storage holds, byte for byte, across many turns', async () => {
    const { store } = cachedStore();
    const created = await store.create(owner, newConversation());
    const emoji = '\u{1F600}'.repeat(20_000); // split across properties in storage
    for (let turn = 0; turn < 5; turn++) {
      await commitTurn(turn % 2 === 0 ? store : other, created.id, [`q${turn} ${emoji}`, `a${turn}`]);
    }
    const loaded = await store.loadForTurn(owner, created.id);
    assert.deepEqual(loaded, await truth(created.id));
    assert.equal(loaded?.messages.length, 10);
    // The partition key is the owner's: another caller never reaches this cache entry.
    assert.equal(await store.loadForTurn({ id: 'mallory', kind: 'user' }, created.id), undefined);
    assert.notEqual(
      conversationPartition(owner, created.id),
      conversationPartition({ id: 'mallory', kind: 'user' }, created.id),
    );
  });

  test('a whole read that spans pages returns the history its header counts, not a turn committed meanwhile', async () => {
    const created = await other.create(owner, newConversation());
    // 1,001 messages + the header: the query's second page is fetched after the first has been handed out.
    for (let from = 0; from < 1_001; from += 99) {
      const conversation = await other.get(owner, created.id);
      assert.ok(conversation);
      const size = Math.min(99, 1_001 - from);
      await other.commitTurn(owner, {
        conversationId: created.id,
        expectedVersion: conversation.version,
        messages: Array.from({ length: size }, (_, index) => message(from + index + 1)),
        updatedAt: nextTime(),
      });
    }
    const client = newClient();
    const listEntities = client.listEntities.bind(client);
    let committedMeanwhile = false;
    Object.assign(client, {
      listEntities: ((options?: Parameters<TableClient['listEntities']>[0]) => {
        const pages = listEntities(options);
        // Another instance commits a turn while this read is between its pages.
        return (async function* () {
          let seen = 0;
          for await (const entity of pages) {
            yield entity;
            if (++seen === 500 && !committedMeanwhile) {
              committedMeanwhile = true;
              await commitTurn(other, created.id, ['during', 'the read']);
            }
          }
        })();
        // loadForTurn only iterates entities (no byPage), so a plain async generator stands in for the pager.
      }) as unknown as TableClient['listEntities'],
    });
    const store = new TableConversationStore(client, new HistoryCache(CACHE_BYTES));
    const loaded = await store.loadForTurn(owner, created.id);
    assert.ok(committedMeanwhile);
    assert.ok(loaded);
    assert.equal(loaded.conversation.messageCount, 1_001);
    assert.equal(loaded.messages.length, 1_001, 'the history the header (and so the commit) is guarded by');
    // The next read tops up with the turn committed meanwhile.
    const next = await store.loadForTurn(owner, created.id);
    assert.equal(next?.messages.length, 1_003);
    assert.deepEqual(next, await truth(created.id));
  });
});

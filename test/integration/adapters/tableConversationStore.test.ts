import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { TableClient, odata } from '@azure/data-tables';
import {
  createTableConversationStore,
  CONVERSATIONS_TABLE,
  TableConversationStore,
} from '../../../src/adapters/tableConversationStore';
import { settleBackgroundWork } from '../../../src/adapters/backgroundWork';
import { entitySizeBytes, MAX_ENTITY_BYTES } from '../../../src/adapters/entitySize';
import { HistoryCache } from '../../../src/adapters/historyCache';
import { createTableClient } from '../../../src/adapters/tableClient';
import {
  activityRow,
  callerIndexPartition,
  callerIndexRow,
  conversationPartition,
} from '../../../src/adapters/tableKeys';
import { InvalidRequestError, StorageUnavailableError } from '../../../src/core/errors';
import {
  ClaimLost,
  ConcurrencyConflict,
  type Caller,
  type NewConversation,
  type StoredMessage,
  type TurnRecord,
} from '../../../src/core/ports';
import { azuriteConnectionString, startAzurite, type RunningAzurite } from '../../../local/azurite';

const PREFIX = 'storetest';
const alice: Caller = { id: 'alice@example.com', kind: 'user' };
const bob: Caller = { id: 'bob/with#odd?chars\\', kind: 'user' };

let azurite: RunningAzurite;
let store: TableConversationStore;
let raw: TableClient;
let idCounter = 0;
let clockMs = Date.parse('2025-01-01T00:00:00.000Z');
const MESSAGE_EPOCH_MS = Date.parse('2024-01-01T00:00:00.000Z');

before(async () => {
  azurite = await startAzurite();
  store = await createTableConversationStore({ connectionString: azurite.connectionString, tablePrefix: PREFIX });
  raw = TableClient.fromConnectionString(azurite.connectionString, PREFIX + CONVERSATIONS_TABLE, {
    allowInsecureConnection: true,
  });
});

after(async () => {
  await azurite?.stop();
});

function nextTime(): string {
  clockMs += 1_000;
  return new Date(clockMs).toISOString();
}

function newConversation(overrides: Partial<NewConversation> = {}): NewConversation {
  idCounter += 1;
  return {
    id: `conv_${idCounter}`,
    title: `Conversation ${idCounter}`,
    metadata: { source: 'test' },
    prologue: [
      { role: 'system', content: 'You are terse.', tokens: 8, encoding: 'o200k_base' },
      { role: 'user', content: 'Example question', tokens: 6, encoding: 'o200k_base' },
    ],
    createdAt: nextTime(),
    ...overrides,
  };
}

function message(seq: number, content = `message ${seq}`): StoredMessage {
  const role = seq % 2 === 1 ? 'user' : 'assistant';
  return {
    seq,
    id: `msg_${String(seq).padStart(10, '0')}`,
    role,
    content,
    createdAt: new Date(MESSAGE_EPOCH_MS + seq).toISOString(),
    tokens: 5 + seq,
    encoding: 'o200k_base',
    ...(role === 'assistant' ? { finishReason: 'stop' as const } : { name: 'Al' }),
  };
}

function record(conversationId: string, replySeq: number): TurnRecord {
  return {
    conversationId,
    replySeq,
    finishReason: 'stop',
    usage: { promptTokens: 10, completionTokens: 5, totalTokens: 15, cachedPromptTokens: 0 },
    context: { promptTokens: 10, droppedTurns: 0 },
  };
}

/** Appends messages with seqs from+1..from+count through commitTurn, in batches that fit a transaction. */
async function appendMessages(owner: Caller, conversationId: string, count: number): Promise<void> {
  let done = 0;
  while (done < count) {
    const conversation = await store.get(owner, conversationId);
    assert.ok(conversation);
    const size = Math.min(99, count - done);
    const from = conversation.messageCount;
    await store.commitTurn(owner, {
      conversationId,
      expectedVersion: conversation.version,
      messages: Array.from({ length: size }, (_, index) => message(from + index + 1)),
      updatedAt: nextTime(),
    });
    done += size;
  }
}

/** A store over a client whose methods the test can intercept, to stage races deterministically. */
function storeWith(
  overrides: Partial<Pick<TableClient, 'submitTransaction' | 'deleteEntity' | 'createEntity'>> & {
    historyCacheBytes?: number;
  } = {},
): TableConversationStore {
  const { historyCacheBytes = 0, ...clientOverrides } = overrides;
  // The app's own client (transactions sent directly, src/adapters/tableTransaction.ts), as production builds it.
  const client = createTableClient(
    PREFIX + CONVERSATIONS_TABLE,
    { connectionString: azurite.connectionString },
    { tryTimeoutMs: 10_000, retry: { maxRetries: 3, retryDelayInMs: 200, maxRetryDelayInMs: 2_000 } },
  );
  return new TableConversationStore(Object.assign(client, clientOverrides), new HistoryCache(historyCacheBytes));
}

async function rowsOf(partitionKey: string): Promise<string[]> {
  const rows: string[] = [];
  const filter = odata`PartitionKey eq ${partitionKey}`;
  for await (const entity of raw.listEntities({ queryOptions: { filter, select: ['RowKey'] } })) {
    rows.push(entity.rowKey ?? '');
  }
  return rows;
}

describe('create, get', () => {
  test('get returns what create stored, and only to its owner', async () => {
    const input = newConversation();
    const created = await store.create(alice, input);
    assert.equal(created.messageCount, 0);
    assert.ok(created.version.length > 0);

    const read = await store.get(alice, input.id);
    assert.deepEqual(read, {
      id: input.id,
      title: input.title,
      metadata: input.metadata,
      prologue: input.prologue,
      createdAt: input.createdAt,
      updatedAt: input.createdAt,
      messageCount: 0,
      version: created.version,
      totals: { promptTokens: 0, cachedPromptTokens: 0, completionTokens: 0 },
    });
    assert.equal(await store.get(bob, input.id), undefined);
    assert.equal(await store.get({ ...alice, kind: 'integration' }, input.id), undefined);
    assert.equal(await store.get(alice, 'conv_missing'), undefined);
    assert.equal(await store.get(alice, 'bad/id'), undefined);
  });

  test('a null title stays null', async () => {
    const input = newConversation({ title: null });
    await store.create(alice, input);
    assert.equal((await store.get(alice, input.id))?.title, null);
  });

  test('a retried create (the first attempt committed) returns the stored conversation', async () => {
    const input = newConversation();
    const first = await store.create(alice, input);
    const again = await store.create(alice, input);
    assert.equal(again.version, first.version);
    await assert.rejects(store.create(alice, { ...input, createdAt: nextTime() }), /already exists/);
  });
});

describe('list', () => {
  test('newest first, paged with a cursor; another caller sees nothing', async () => {
    const owner: Caller = { id: 'lister', kind: 'user' };
    const ids: string[] = [];
    for (let index = 0; index < 5; index++) ids.push((await store.create(owner, newConversation())).id);
    const newestFirst = [...ids].reverse();

    const first = await store.list(owner, { limit: 2 });
    assert.deepEqual(
      first.items.map((item) => item.id),
      newestFirst.slice(0, 2),
    );
    assert.ok(first.nextCursor);
    const second = await store.list(owner, { limit: 2, cursor: first.nextCursor });
    assert.deepEqual(
      second.items.map((item) => item.id),
      newestFirst.slice(2, 4),
    );
    assert.ok(second.nextCursor);
    const third = await store.list(owner, { limit: 2, cursor: second.nextCursor });
    assert.deepEqual(
      third.items.map((item) => item.id),
      newestFirst.slice(4),
    );
    assert.equal(third.nextCursor, undefined);

    const all = await store.list(owner, { limit: 5 });
    assert.equal(all.items.length, 5);
    assert.equal(all.nextCursor, undefined);
    assert.deepEqual(await store.list({ id: 'lister', kind: 'integration' }, { limit: 10 }), { items: [] });
    assert.equal(await store.countConversations(owner, 100), 5);
    assert.equal(await store.countConversations(owner, 3), 3);
  });

  test('the per-caller cap holds exactly under 32 concurrent creates, and a delete frees a place', async () => {
    const owner: Caller = { id: 'capped', kind: 'user' };
    const outcomes = await Promise.allSettled(
      Array.from({ length: 32 }, () => store.create(owner, newConversation(), { maxConversations: 5 })),
    );
    const created = outcomes.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value] : []));
    assert.equal(created.length, 5);
    for (const outcome of outcomes) {
      if (outcome.status === 'rejected')
        assert.equal((outcome.reason as { code?: string }).code, 'conversation_limit_reached');
    }
    assert.equal((await store.list(owner, { limit: 100 })).items.length, 5);
    assert.equal(await store.countConversations(owner, 100), 5);
    // The refused creates left no header behind: the caller's partitions hold the five and nothing else.
    await store.delete(owner, created[0]!.id);
    assert.equal(await store.countConversations(owner, 100), 4);
    await store.create(owner, newConversation(), { maxConversations: 5 });
    await assert.rejects(store.create(owner, newConversation(), { maxConversations: 5 }), /already have 5/);
  });

  test('updatedAt comes from the header, and half-deleted conversations are skipped and cleaned', async () => {
    const owner: Caller = { id: 'lister2', kind: 'user' };
    const kept = await store.create(owner, newConversation());
    const broken = await store.create(owner, newConversation());
    const updatedAt = nextTime();
    await store.commitTurn(owner, {
      conversationId: kept.id,
      expectedVersion: kept.version,
      messages: [message(1), message(2)],
      updatedAt,
    });
    // What a delete interrupted after the header leaves behind: the index entry alone.
    await raw.deleteEntity(conversationPartition(owner, broken.id), 'h');

    const page = await store.list(owner, { limit: 10 });
    assert.deepEqual(page.items, [{ id: kept.id, title: kept.title, createdAt: kept.createdAt, updatedAt }]);
    assert.deepEqual(await rowsOf(callerIndexPartition(owner)), [
      callerIndexRow(kept.createdAt, kept.id),
      activityRow(updatedAt, kept.id),
      'count',
      'indexed',
    ]);
    assert.equal(await store.countConversations(owner, 10), 1);
  });

  test('a turn moves its conversation to the top: one activity entry, at the header updatedAt', async () => {
    const owner: Caller = { id: 'active', kind: 'user' };
    const first = await store.create(owner, newConversation());
    const second = await store.create(owner, newConversation());
    const updatedAt = nextTime();
    await store.commitTurn(owner, {
      conversationId: first.id,
      expectedVersion: first.version,
      messages: [message(1), message(2)],
      updatedAt,
    });
    const listed = await store.list(owner, { limit: 10 });
    assert.deepEqual(
      listed.items.map((item) => [item.id, item.updatedAt]),
      [
        [first.id, updatedAt],
        [second.id, second.createdAt],
      ],
    );
    const rows = await rowsOf(callerIndexPartition(owner));
    assert.deepEqual(
      rows.filter((row) => row.startsWith('a')),
      [activityRow(updatedAt, first.id), activityRow(second.createdAt, second.id)],
      'the old entry of the first went in the same transaction',
    );
  });

  test('a move that read an older header cannot move the entry back past a newer turn', async () => {
    const owner: Caller = { id: 'race', kind: 'user' };
    const created = await store.create(owner, newConversation());
    const first = nextTime();
    const second = nextTime();
    // The slow instance stores turn 1, then, while its move of the activity entry is between its first reads and its
    // last, the fast one stores turn 2 and moves the entry. Whichever it read first, pointer or header, the slow
    // move must not end with the entry at turn 1.
    let readsAfterCommit = -1;
    const slow = storeWith({});
    const client = (slow as unknown as { table: TableClient }).table;
    const getEntity = client.getEntity.bind(client);
    client.getEntity = (async (...args: Parameters<TableClient['getEntity']>) => {
      if (readsAfterCommit >= 0 && ++readsAfterCommit === 3) {
        const current = await store.get(owner, created.id);
        await store.commitTurn(owner, {
          conversationId: created.id,
          expectedVersion: current!.version,
          messages: [message(3), message(4)],
          updatedAt: second,
        });
      }
      return getEntity(...args);
    }) as TableClient['getEntity'];
    const submit = client.submitTransaction.bind(client);
    client.submitTransaction = async (actions) => {
      const result = await submit(actions);
      if (readsAfterCommit < 0 && actions[0]?.[1].partitionKey?.startsWith('c|')) readsAfterCommit = 0;
      return result;
    };
    await slow.commitTurn(owner, {
      conversationId: created.id,
      expectedVersion: created.version,
      messages: [message(1), message(2)],
      updatedAt: first,
    });
    await settleBackgroundWork();
    assert.ok(readsAfterCommit >= 3, 'the fast turn ran in the middle of the slow move');
    const rows = await rowsOf(callerIndexPartition(owner));
    assert.deepEqual(
      rows.filter((row) => row.startsWith('a')),
      [activityRow(second, created.id)],
    );
  });

  /** A store on its own client that counts the requests it sends to the caller's index partition ('u|...'). */
  function countingStore(): { instance: TableConversationStore; indexReads: () => number; indexWrites: () => number } {
    const instance = storeWith({ historyCacheBytes: 1 << 20 });
    const client = (instance as unknown as { table: TableClient }).table;
    let reads = 0;
    let writes = 0;
    const getEntity = client.getEntity.bind(client);
    client.getEntity = ((...args: Parameters<TableClient['getEntity']>) => {
      if (args[0].startsWith('u|')) reads += 1;
      return getEntity(...args);
    }) as TableClient['getEntity'];
    const submit = client.submitTransaction.bind(client);
    client.submitTransaction = (actions) => {
      if (actions[0]?.[1].partitionKey?.startsWith('u|')) writes += 1;
      return submit(actions);
    };
    return { instance, indexReads: () => reads, indexWrites: () => writes };
  }

  /** loadForTurn then commitTurn of the next two messages, as a turn does. */
  async function turnThrough(instance: TableConversationStore, owner: Caller, id: string, updatedAt: string) {
    const loaded = await instance.loadForTurn(owner, id);
    assert.ok(loaded);
    const from = loaded.conversation.messageCount;
    await instance.commitTurn(owner, {
      conversationId: id,
      expectedVersion: loaded.conversation.version,
      messages: [message(from + 1), message(from + 2)],
      updatedAt,
    });
    await settleBackgroundWork(); // the move runs after the answer
  }

  async function activityRows(owner: Caller): Promise<string[]> {
    return (await rowsOf(callerIndexPartition(owner))).filter((row) => row.startsWith('a'));
  }

  test('after a load the move is one transaction of the index partition; the next turn here reads no pointer', async () => {
    const owner: Caller = { id: 'onetrip', kind: 'user' };
    const created = await store.create(owner, newConversation());
    const other = await store.create(owner, newConversation());
    const { instance, indexReads, indexWrites } = countingStore();
    const first = nextTime();
    await turnThrough(instance, owner, created.id, first);
    assert.equal(indexReads(), 1, 'the pointer, read beside the load');
    assert.equal(indexWrites(), 1, 'the move');
    assert.deepEqual(await activityRows(owner), [
      activityRow(first, created.id),
      activityRow(other.createdAt, other.id),
    ]);
    const second = nextTime();
    await turnThrough(instance, owner, created.id, second);
    assert.equal(indexReads(), 1, 'the pointer its own move left is known');
    assert.equal(indexWrites(), 2);
    assert.deepEqual(await activityRows(owner), [
      activityRow(second, created.id),
      activityRow(other.createdAt, other.id),
    ]);
    assert.equal((await store.list(owner, { limit: 10 })).items[0]?.updatedAt, second);
  });

  test('a pointer seen before the commit cannot move the entry back past a turn that moved it after', async () => {
    const owner: Caller = { id: 'race-fast', kind: 'user' };
    const created = await store.create(owner, newConversation());
    const first = nextTime();
    const second = nextTime();
    // The slow instance loads (its pointer is read) and stores turn 1; right after its commit, before its move, the
    // fast instance stores turn 2 and moves the entry. The slow move may only use a pointer seen BEFORE its commit
    // (one read after it would be the fast move's, and would let the slow move win with turn 1's time).
    const slow = storeWith({ historyCacheBytes: 1 << 20 });
    const client = (slow as unknown as { table: TableClient }).table;
    const submit = client.submitTransaction.bind(client);
    let staged = false;
    client.submitTransaction = async (actions) => {
      const result = await submit(actions);
      if (!staged && actions[0]?.[1].partitionKey?.startsWith('c|')) {
        staged = true;
        await turnThrough(storeWith({ historyCacheBytes: 1 << 20 }), owner, created.id, second);
      }
      return result;
    };
    await turnThrough(slow, owner, created.id, first);
    assert.ok(staged, 'the fast turn ran between the slow commit and its move');
    assert.deepEqual(await activityRows(owner), [activityRow(second, created.id)]);
    // The slow instance's next turn starts from the pointer as it now stands.
    const third = nextTime();
    await turnThrough(slow, owner, created.id, third);
    assert.deepEqual(await activityRows(owner), [activityRow(third, created.id)]);
  });

  test('a pointer remembered here is stale after another instance moved the entry: the move reads it again', async () => {
    const owner: Caller = { id: 'stale-pointer', kind: 'user' };
    const created = await store.create(owner, newConversation());
    const here = countingStore();
    const there = storeWith({ historyCacheBytes: 1 << 20 });
    await turnThrough(here.instance, owner, created.id, nextTime());
    await turnThrough(there, owner, created.id, nextTime());
    const last = nextTime();
    await turnThrough(here.instance, owner, created.id, last);
    assert.equal(here.indexWrites(), 3, 'the first move, the one refused on the stale pointer, and the retry');
    assert.deepEqual(await activityRows(owner), [activityRow(last, created.id)]);
  });

  test('a turn is answered before its activity entry moves; a list here waits for the move, one elsewhere shows the page as read', async () => {
    const owner: Caller = { id: 'after-answer', kind: 'user' };
    const older = await store.create(owner, newConversation());
    const newer = await store.create(owner, newConversation());
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    let moveStarted: () => void = () => {};
    const started = new Promise<void>((resolve) => (moveStarted = resolve));
    const here = storeWith({ historyCacheBytes: 1 << 20 });
    const client = (here as unknown as { table: TableClient }).table;
    const submit = client.submitTransaction.bind(client);
    client.submitTransaction = async (actions) => {
      if (actions[0]?.[1].partitionKey?.startsWith('u|')) {
        moveStarted();
        await held;
      }
      return submit(actions);
    };
    const loaded = await here.loadForTurn(owner, older.id);
    const updatedAt = nextTime();
    const committed = here
      .commitTurn(owner, {
        conversationId: older.id,
        expectedVersion: loaded!.conversation.version,
        messages: [message(1), message(2)],
        updatedAt,
      })
      .then(() => 'answered');
    await started;
    const outcome = await Promise.race([committed, new Promise((resolve) => setImmediate(() => resolve('waiting')))]);
    if (outcome !== 'answered') release(); // let the old behaviour finish before failing
    assert.equal(outcome, 'answered', 'the turn was answered while its move waited');

    let listedHere: string[] | undefined;
    const listing = here.list(owner, { limit: 10 }).then((page) => (listedHere = page.items.map((item) => item.id)));
    const elsewhere = storeWith({});
    const whileMoving = await elsewhere.list(owner, { limit: 10 });
    // Another instance reads the entries as they stand: the page keeps that order (the move is not done yet).
    assert.deepEqual(
      whileMoving.items.map((item) => item.id),
      [newer.id, older.id],
    );
    assert.equal(whileMoving.items[1]?.updatedAt, updatedAt, 'with the header it read');
    assert.equal(listedHere, undefined, "this instance's list waits for its own turn's move");

    release();
    await listing;
    assert.deepEqual(listedHere, [older.id, newer.id]);
    await settleBackgroundWork();
    assert.deepEqual(
      (await elsewhere.list(owner, { limit: 10 })).items.map((item) => item.id),
      [older.id, newer.id],
    );
  });

  test('a move that fails after the answer is reported, not thrown; the list puts the conversation back in place', async () => {
    const owner: Caller = { id: 'move-fails', kind: 'user' };
    const older = await store.create(owner, newConversation());
    const newer = await store.create(owner, newConversation());
    const warnings: string[] = [];
    const client = TableClient.fromConnectionString(azurite.connectionString, PREFIX + CONVERSATIONS_TABLE, {
      allowInsecureConnection: true,
    });
    const submit = client.submitTransaction.bind(client);
    client.submitTransaction = async (actions) => {
      if (actions[0]?.[1].partitionKey?.startsWith('u|')) {
        throw Object.assign(new Error('The batch request was refused.'), { statusCode: 400 });
      }
      return submit(actions);
    };
    const failing = new TableConversationStore(client, new HistoryCache(1 << 20), {
      warn: (line) => warnings.push(line),
    });
    const loaded = await failing.loadForTurn(owner, older.id);
    const updatedAt = nextTime();
    await failing.commitTurn(owner, {
      conversationId: older.id,
      expectedVersion: loaded!.conversation.version,
      messages: [message(1), message(2)],
      updatedAt,
    });
    await settleBackgroundWork();
    assert.equal(warnings.length, 1, warnings.join('\n'));
    assert.match(warnings[0]!, new RegExp(`list order of conversation ${older.id} was not updated.*refused`));
    assert.equal((await store.get(owner, older.id))?.messageCount, 2, 'the turn is stored');
    await store.list(owner, { limit: 10 }); // meets the entry behind its header and moves it
    assert.deepEqual(
      (await store.list(owner, { limit: 10 })).items.map((item) => item.id),
      [older.id, newer.id],
    );
  });

  test('turns racing from three instances leave one activity entry per conversation, at its header', async () => {
    const owner: Caller = { id: 'racers', kind: 'user' };
    const conversations = [await store.create(owner, newConversation()), await store.create(owner, newConversation())];
    const instances = [0, 1, 2].map(() => storeWith({ historyCacheBytes: 1 << 20 }));
    const runTurns = async (instance: TableConversationStore, id: string) => {
      for (let stored = 0; stored < 4;) {
        try {
          await turnThrough(instance, owner, id, nextTime());
          stored += 1;
        } catch (error) {
          if (!(error instanceof ConcurrencyConflict)) throw error;
        }
      }
    };
    await Promise.all(conversations.flatMap(({ id }) => instances.map((instance) => runTurns(instance, id))));
    const expected: string[] = [];
    for (const { id } of conversations) {
      const header = await store.get(owner, id);
      assert.equal(header?.messageCount, 24);
      expected.push(activityRow(header!.updatedAt, id));
    }
    assert.deepEqual(await activityRows(owner), expected.sort());
  });

  test('storage failing after a turn leaves the turn stored; the list puts the conversation back in place', async () => {
    const owner: Caller = { id: 'flaky', kind: 'user' };
    const older = await store.create(owner, newConversation());
    await store.create(owner, newConversation());
    const failing = storeWith({
      submitTransaction: async (actions) => {
        if (actions[0]?.[1].partitionKey?.startsWith('u|')) {
          throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
        }
        return raw.submitTransaction(actions);
      },
    });
    const updatedAt = nextTime();
    await failing.commitTurn(owner, {
      conversationId: older.id,
      expectedVersion: older.version,
      messages: [message(1), message(2)],
      updatedAt,
    });
    assert.equal((await store.get(owner, older.id))?.messageCount, 2, 'the turn is stored');
    // Read in the order stored (the move did not happen), with the header's time; moved while listing.
    const stale = await store.list(owner, { limit: 10 });
    assert.deepEqual(stale.items.at(-1), { id: older.id, title: older.title, createdAt: older.createdAt, updatedAt });
    const repaired = await store.list(owner, { limit: 10 });
    assert.equal(repaired.items[0]?.id, older.id);
  });

  test('a cursor the store did not issue is a client error', async () => {
    await assert.rejects(store.list(alice, { limit: 2, cursor: 'not-a-cursor' }), InvalidRequestError);
    const foreign = Buffer.from("x' or PartitionKey ne 'y").toString('base64url');
    await assert.rejects(store.list(alice, { limit: 2, cursor: foreign }), InvalidRequestError);
  });
});

describe('turns', () => {
  test('a turn stores the reply usage, and the header its totals, window start and summary (kept until replaced)', async () => {
    const owner: Caller = { id: 'costs', kind: 'user' };
    const created = await store.create(owner, newConversation());
    const usage = { promptTokens: 1_300, completionTokens: 20, totalTokens: 1_320, cachedPromptTokens: 1_152 };
    const summary = {
      content: 'Earlier: a trip to Lisbon. ✈️ 東京',
      tokens: 30,
      encoding: 'o200k_base' as const,
      throughSeq: 2,
      createdAt: nextTime(),
    };
    await store.commitTurn(owner, {
      conversationId: created.id,
      expectedVersion: created.version,
      messages: [message(1), { ...message(2), usage }],
      updatedAt: nextTime(),
      header: {
        totals: { promptTokens: 1_300, cachedPromptTokens: 1_152, completionTokens: 20 },
        windowStartSeq: 3,
        summary,
      },
    });
    const afterFirst = await store.get(owner, created.id);
    assert.deepEqual(afterFirst?.totals, { promptTokens: 1_300, cachedPromptTokens: 1_152, completionTokens: 20 });
    assert.equal(afterFirst?.windowStartSeq, 3);
    assert.deepEqual(afterFirst?.summary, summary);
    assert.deepEqual((await store.getMessage(owner, created.id, 2))?.usage, usage);
    assert.equal((await store.getMessage(owner, created.id, 1))?.usage, undefined);

    // A turn without a new summary leaves the stored one; totals beyond Int32 stay exact.
    const big = 3_000_000_000;
    await store.commitTurn(owner, {
      conversationId: created.id,
      expectedVersion: afterFirst!.version,
      messages: [message(3), message(4)],
      updatedAt: nextTime(),
      header: { totals: { promptTokens: big, cachedPromptTokens: big - 1, completionTokens: 40 }, windowStartSeq: 3 },
    });
    const loaded = await store.loadForTurn(owner, created.id);
    assert.deepEqual(loaded?.conversation.summary, summary);
    assert.deepEqual(loaded?.conversation.totals, {
      promptTokens: big,
      cachedPromptTokens: big - 1,
      completionTokens: 40,
    });
    assert.deepEqual(loaded?.messages[1]?.usage, usage);
  });

  test('commitTurn stores the messages; loadForTurn, listMessages and getMessage read them back', async () => {
    const created = await store.create(alice, newConversation());
    const updatedAt = nextTime();
    await store.commitTurn(alice, {
      conversationId: created.id,
      expectedVersion: created.version,
      messages: [message(1), message(2)],
      updatedAt,
    });

    const loaded = await store.loadForTurn(alice, created.id);
    assert.ok(loaded);
    assert.equal(loaded.conversation.messageCount, 2);
    assert.equal(loaded.conversation.updatedAt, updatedAt);
    assert.equal(loaded.conversation.title, created.title);
    assert.deepEqual(loaded.conversation.prologue, created.prologue);
    assert.notEqual(loaded.conversation.version, created.version);
    assert.deepEqual(loaded.messages, [message(1), message(2)]);

    const firstPage = await store.listMessages(alice, created.id, { afterSeq: 0, limit: 1 });
    assert.deepEqual(firstPage, { messages: [message(1)], hasMore: true });
    const lastPage = await store.listMessages(alice, created.id, { afterSeq: 1, limit: 5 });
    assert.deepEqual(lastPage, { messages: [message(2)], hasMore: false });
    assert.deepEqual(await store.getMessage(alice, created.id, 2), message(2));
    assert.equal(await store.getMessage(alice, created.id, 3), undefined);
    assert.equal(await store.getMessage(bob, created.id, 2), undefined);
    assert.equal(await store.loadForTurn(bob, created.id), undefined);

    // The version loadForTurn returns is the one the next turn commits on.
    await store.commitTurn(alice, {
      conversationId: created.id,
      expectedVersion: loaded.conversation.version,
      messages: [message(3), message(4)],
      updatedAt: nextTime(),
    });
    assert.equal((await store.get(alice, created.id))?.messageCount, 4);
  });

  test('loadForTurn returns every message in order past one page of 1,000', async () => {
    const created = await store.create(alice, newConversation());
    await appendMessages(alice, created.id, 1_205);
    const loaded = await store.loadForTurn(alice, created.id);
    assert.ok(loaded);
    assert.equal(loaded.conversation.messageCount, 1_205);
    assert.deepEqual(
      loaded.messages.map((stored) => stored.seq),
      Array.from({ length: 1_205 }, (_, index) => index + 1),
    );
    const middle = await store.listMessages(alice, created.id, { afterSeq: 995, limit: 10 });
    assert.deepEqual(
      middle.messages.map((stored) => stored.id),
      Array.from({ length: 10 }, (_, index) => `msg_${String(996 + index).padStart(10, '0')}`),
    );
    assert.equal(middle.hasMore, true);
  });

  test('a stale version stores nothing: the whole transaction rolls back', async () => {
    const created = await store.create(alice, newConversation());
    await store.commitTurn(alice, {
      conversationId: created.id,
      expectedVersion: created.version,
      messages: [message(1), message(2)],
      updatedAt: nextTime(),
    });
    const before = await store.get(alice, created.id);
    const partitionRows = await rowsOf(conversationPartition(alice, created.id));

    await assert.rejects(
      store.commitTurn(alice, {
        conversationId: created.id,
        expectedVersion: created.version, // stale: the first turn changed it
        messages: [message(3), message(4)],
        updatedAt: nextTime(),
      }),
      ConcurrencyConflict,
    );
    // A current version but a message row that exists (409) also rolls back the header update.
    await assert.rejects(
      store.commitTurn(alice, {
        conversationId: created.id,
        expectedVersion: before!.version,
        messages: [message(2, 'rewritten'), message(3)],
        updatedAt: nextTime(),
      }),
      ConcurrencyConflict,
    );
    assert.deepEqual(await store.get(alice, created.id), before);
    assert.deepEqual(await rowsOf(conversationPartition(alice, created.id)), partitionRows);
    assert.deepEqual(await store.getMessage(alice, created.id, 2), message(2));
  });

  test('of two turns on one version exactly one commits', async () => {
    const created = await store.create(alice, newConversation());
    const attempt = (content: string) =>
      store.commitTurn(alice, {
        conversationId: created.id,
        expectedVersion: created.version,
        messages: [message(1, content), message(2, content)],
        updatedAt: nextTime(),
      });
    const results = await Promise.allSettled([attempt('first'), attempt('second')]);
    assert.equal(results.filter((result) => result.status === 'fulfilled').length, 1);
    const rejected = results.find((result) => result.status === 'rejected');
    assert.ok(rejected?.status === 'rejected' && rejected.reason instanceof ConcurrencyConflict);
    const loaded = await store.loadForTurn(alice, created.id);
    assert.equal(loaded?.messages.length, 2);
    assert.equal(loaded?.messages[0]?.content, loaded?.messages[1]?.content);
  });

  test('a retried transaction whose first attempt committed is recognised as success', async () => {
    const created = await store.create(alice, newConversation());
    const client = TableClient.fromConnectionString(azurite.connectionString, PREFIX + CONVERSATIONS_TABLE, {
      allowInsecureConnection: true,
    });
    // As when the response to a committed batch is lost and the SDK sends the batch again.
    const lossy = storeWith({
      submitTransaction: async (actions) => {
        await client.submitTransaction(actions);
        return client.submitTransaction(actions);
      },
    });
    await lossy.commitTurn(alice, {
      conversationId: created.id,
      expectedVersion: created.version,
      messages: [message(1), message(2)],
      updatedAt: nextTime(),
    });
    assert.equal((await store.get(alice, created.id))?.messageCount, 2);
  });

  test('a turn on a deleted conversation is a conflict, not a crash', async () => {
    const created = await store.create(alice, newConversation());
    assert.equal(await store.delete(alice, created.id), true);
    await assert.rejects(
      store.commitTurn(alice, {
        conversationId: created.id,
        expectedVersion: created.version,
        messages: [message(1), message(2)],
        updatedAt: nextTime(),
      }),
      ConcurrencyConflict,
    );
    assert.deepEqual(await rowsOf(conversationPartition(alice, created.id)), []);
  });
});

describe('long messages', () => {
  // An emoji (a surrogate pair) starting at the last code unit of the first property: the split must move it.
  function straddling(length: number): string {
    const head = 'a'.repeat(32_767) + '\u{1F600}';
    let text = head;
    let filler = 0;
    while (text.length < length) text += String.fromCharCode(0x41 + (filler++ % 26));
    return text.slice(0, length - 2) + '\u{1F389}';
  }

  for (const length of [70_000, 400_000]) {
    test(`a ${length}-character message round-trips identical`, async () => {
      const created = await store.create(alice, newConversation());
      const content = straddling(length);
      assert.equal(content.length, length);
      await store.commitTurn(alice, {
        conversationId: created.id,
        expectedVersion: created.version,
        messages: [message(1, content), message(2, 'ok')],
        updatedAt: nextTime(),
      });
      assert.equal((await store.getMessage(alice, created.id, 1))?.content, content);
      assert.equal((await store.loadForTurn(alice, created.id))?.messages[0]?.content, content);

      const entity = await raw.getEntity<Record<string, unknown>>(
        conversationPartition(alice, created.id),
        'm0000000001',
      );
      const parts = Object.keys(entity).filter((name) => /^content(_\d+)?$/.test(name));
      assert.equal(parts.length, Math.ceil((length + 1) / 32_768));
      for (const part of parts) assert.ok((entity[part] as string).length <= 32_768);
      assert.equal(entity['content'], 'a'.repeat(32_767));
    });
  }

  test('a reply over 1 MiB as the service counts it (UTF-16) spans rows of one transaction and reads back whole', async () => {
    const created = await store.create(alice, newConversation());
    // ~2.6 MB as UTF-16, three entities: Azurite alone (UTF-8 sizes) would take it in one and the service would not.
    const reply = straddling(1_300_000);
    await store.commitTurn(alice, {
      conversationId: created.id,
      expectedVersion: created.version,
      messages: [message(1, 'tell me everything'), message(2, reply), message(3, 'thanks')],
      updatedAt: nextTime(),
    });
    const partition = conversationPartition(alice, created.id);
    assert.deepEqual(await rowsOf(partition), [
      'h',
      'm0000000001',
      'm0000000002',
      'm0000000002.01',
      'm0000000002.02',
      'm0000000003',
    ]);
    for (const rowKey of ['m0000000002', 'm0000000002.01', 'm0000000002.02']) {
      const entity = await raw.getEntity<Record<string, unknown>>(partition, rowKey);
      assert.ok(entitySizeBytes(entity) <= MAX_ENTITY_BYTES, `${rowKey} fits the service's entity limit`);
    }

    const contents = (messages: { content: string }[] | undefined) => messages?.map((one) => one.content);
    const expected = ['tell me everything', reply, 'thanks'];
    assert.deepEqual(contents((await storeWith().loadForTurn(alice, created.id))?.messages), expected, 'a whole read');
    assert.equal((await store.getMessage(alice, created.id, 2))?.content, reply);
    assert.equal((await store.getMessage(alice, created.id, 3))?.content, 'thanks');
    // Paged one message at a time: the long one is one message, and the page after it starts at the next.
    const paged: string[] = [];
    for (let afterSeq = 0, more = true; more;) {
      const page = await store.listMessages(alice, created.id, { afterSeq, limit: 1 });
      paged.push(...page.messages.map((one) => one.content));
      afterSeq = page.messages.at(-1)?.seq ?? afterSeq;
      more = page.hasMore;
    }
    assert.deepEqual(paged, expected);

    // Another instance adds a turn after the long reply; this one's cached history reads just the new rows.
    const cached = storeWith({ historyCacheBytes: 64 * 1024 * 1024 });
    const before = await cached.loadForTurn(alice, created.id);
    await store.commitTurn(alice, {
      conversationId: created.id,
      expectedVersion: before!.conversation.version,
      messages: [message(4, 'more'), message(5, reply)],
      updatedAt: nextTime(),
    });
    const fresh = await storeWith().loadForTurn(alice, created.id);
    assert.deepEqual(contents((await cached.loadForTurn(alice, created.id))?.messages), contents(fresh?.messages));
    assert.deepEqual(contents(fresh?.messages), [...expected, 'more', reply]);

    assert.equal(await store.delete(alice, created.id), true);
    assert.deepEqual(await rowsOf(partition), []);
  });

  test('a turn over the 4 MiB transaction limit is refused before writing', async () => {
    const created = await store.create(alice, newConversation());
    await assert.rejects(
      store.commitTurn(alice, {
        conversationId: created.id,
        expectedVersion: created.version,
        messages: [message(1, 'x'), message(2, 'x'.repeat(4_300_000))],
        updatedAt: nextTime(),
      }),
      /4194304-byte batch limit/,
    );
    assert.deepEqual(await rowsOf(conversationPartition(alice, created.id)), ['h']);
  });
});

describe('idempotency', () => {
  const now = new Date('2025-06-01T12:00:00.000Z');
  const lease = { now, leaseMs: 60_000 };

  test('claimed, then in progress, then completed with the stored record', async () => {
    const created = await store.create(alice, newConversation());
    const begun = await store.beginIdempotent(alice, created.id, 'key-1', 'hash-a', lease);
    assert.ok(begun.state === 'claimed');
    assert.deepEqual(await store.beginIdempotent(alice, created.id, 'key-1', 'hash-a', lease), {
      state: 'in_progress',
      requestHash: 'hash-a',
    });
    // Keys are scoped to the caller and the conversation.
    assert.equal((await store.beginIdempotent(bob, created.id, 'key-1', 'hash-a', lease)).state, 'claimed');

    const turnRecord = record(created.id, 2);
    await store.commitTurn(alice, {
      conversationId: created.id,
      expectedVersion: created.version,
      messages: [message(1), message(2)],
      updatedAt: nextTime(),
      idempotency: { key: 'key-1', claim: begun.claim, requestHash: 'hash-a', record: turnRecord },
    });
    assert.deepEqual(await store.beginIdempotent(alice, created.id, 'key-1', 'hash-b', lease), {
      state: 'completed',
      requestHash: 'hash-a',
      record: turnRecord,
    });
    // Turn messages are unaffected by the record living in the same partition.
    assert.equal((await store.loadForTurn(alice, created.id))?.messages.length, 2);
  });

  test('an expired lease is taken over; the old claim can no longer commit', async () => {
    const created = await store.create(alice, newConversation());
    const first = await store.beginIdempotent(alice, created.id, 'key-2', 'hash-a', { now, leaseMs: 1_000 });
    assert.equal(first.state, 'claimed');
    const later = { now: new Date(now.getTime() + 5_000), leaseMs: 60_000 };
    // Another body under the same abandoned key is reported with the first body's hash (the caller answers 422).
    assert.deepEqual(await store.beginIdempotent(alice, created.id, 'key-2', 'hash-b', later), {
      state: 'in_progress',
      requestHash: 'hash-a',
    });
    const second = await store.beginIdempotent(alice, created.id, 'key-2', 'hash-a', later);
    assert.equal(second.state, 'claimed');
    assert.ok(first.state === 'claimed' && second.state === 'claimed');
    assert.notEqual(second.claim.token, first.claim.token);

    await assert.rejects(
      store.commitTurn(alice, {
        conversationId: created.id,
        expectedVersion: created.version,
        messages: [message(1), message(2)],
        updatedAt: nextTime(),
        idempotency: { key: 'key-2', claim: first.claim, requestHash: 'hash-a', record: record(created.id, 2) },
      }),
      ClaimLost,
    );
    assert.equal((await store.get(alice, created.id))?.messageCount, 0);
    // A stale release does not free the current claim.
    await store.releaseIdempotent(alice, created.id, 'key-2', first.claim);
    assert.equal((await store.beginIdempotent(alice, created.id, 'key-2', 'hash-a', later)).state, 'in_progress');
  });

  test('a paused turn whose claim was taken over is refused as a lost claim, not a conflict to re-run', async () => {
    const created = await store.create(alice, newConversation());
    const first = await store.beginIdempotent(alice, created.id, 'key-3', 'hash-a', { now, leaseMs: 1_000 });
    const later = { now: new Date(now.getTime() + 5_000), leaseMs: 60_000 };
    const second = await store.beginIdempotent(alice, created.id, 'key-3', 'hash-a', later);
    assert.ok(first.state === 'claimed' && second.state === 'claimed');
    const pending = {
      id: 'turn-1',
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + 60_000).toISOString(),
      user: { role: 'user' as const, content: 'what time is it?', tokens: 7 },
      messages: [],
      awaiting: [{ id: 'call_1', name: 'ask_user', arguments: '{}' }],
      rounds: 1,
      usage: { promptTokens: 10, completionTokens: 5, totalTokens: 15, cachedPromptTokens: 0 },
      calls: [{ estimated: 10, reported: 10 }],
    };
    await assert.rejects(
      store.pauseTurn(alice, {
        conversationId: created.id,
        expectedVersion: created.version,
        pending,
        updatedAt: nextTime(),
        idempotency: { key: 'key-3', claim: first.claim, requestHash: 'hash-a', record: record(created.id, 2) },
      }),
      ClaimLost,
    );
    assert.equal((await store.get(alice, created.id))?.pending, undefined);
    assert.equal(await store.getPendingTurn(alice, created.id), undefined);
  });

  test('a turn that pauses again keeps its id, yet a rival pause of the same version is a conflict', async () => {
    const created = await store.create(alice, newConversation());
    const pending = (awaiting: string) => ({
      id: 'turn-2',
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + 60_000).toISOString(),
      user: { role: 'user' as const, content: 'book it', tokens: 5 },
      messages: [],
      awaiting: [{ id: awaiting, name: 'pick_slot', arguments: '{}' }],
      rounds: 1,
      usage: { promptTokens: 10, completionTokens: 5, totalTokens: 15, cachedPromptTokens: 0 },
      calls: [{ estimated: 10, reported: 10 }],
    });
    await store.pauseTurn(alice, {
      conversationId: created.id,
      expectedVersion: created.version,
      pending: pending('call_1'),
      updatedAt: nextTime(),
    });
    const paused = await store.get(alice, created.id);
    assert.ok(paused);
    // Two continuations of the paused turn (two result posts) both pause it again from the same version.
    await store.pauseTurn(alice, {
      conversationId: created.id,
      expectedVersion: paused.version,
      pending: pending('call_2'),
      updatedAt: nextTime(),
    });
    await assert.rejects(
      store.pauseTurn(alice, {
        conversationId: created.id,
        expectedVersion: paused.version,
        pending: pending('call_3'),
        updatedAt: nextTime(),
      }),
      ConcurrencyConflict,
    );
    assert.deepEqual((await store.getPendingTurn(alice, created.id))?.awaiting, pending('call_2').awaiting);
  });

  test('a renewed lease keeps the key from a retry; a claim taken over cannot renew', async () => {
    const created = await store.create(alice, newConversation());
    const first = await store.beginIdempotent(alice, created.id, 'key-4', 'hash-a', { now, leaseMs: 10_000 });
    assert.ok(first.state === 'claimed');
    const renewed = await store.renewIdempotent(alice, created.id, 'key-4', first.claim, {
      now: new Date(now.getTime() + 8_000),
      leaseMs: 10_000,
    });
    assert.notEqual(renewed.token, first.claim.token);
    // Past the first lease, inside the renewed one: still held.
    const during = { now: new Date(now.getTime() + 15_000), leaseMs: 10_000 };
    assert.equal((await store.beginIdempotent(alice, created.id, 'key-4', 'hash-a', during)).state, 'in_progress');
    await assert.rejects(
      store.renewIdempotent(alice, created.id, 'key-4', first.claim, during),
      ClaimLost,
      'the old token no longer holds it',
    );
    // Past the renewed lease a retry takes it over, and the renewed claim is lost.
    const after = { now: new Date(now.getTime() + 30_000), leaseMs: 10_000 };
    assert.equal((await store.beginIdempotent(alice, created.id, 'key-4', 'hash-a', after)).state, 'claimed');
    await assert.rejects(store.renewIdempotent(alice, created.id, 'key-4', renewed, after), ClaimLost);
  });

  test('creates retried after committing (a lost response) still claim, and still create', async () => {
    const client = TableClient.fromConnectionString(azurite.connectionString, PREFIX + CONVERSATIONS_TABLE, {
      allowInsecureConnection: true,
    });
    const lossy = storeWith({
      createEntity: async (entity, options) => {
        await client.createEntity(entity, options);
        return client.createEntity(entity, options);
      },
    });
    const created = await lossy.create(alice, newConversation());
    assert.deepEqual(await store.get(alice, created.id), created);
    const begun = await lossy.beginIdempotent(alice, created.id, 'key-lost', 'hash-a', lease);
    assert.equal(begun.state, 'claimed');
    assert.deepEqual(await store.beginIdempotent(alice, created.id, 'key-lost', 'hash-a', lease), {
      state: 'in_progress',
      requestHash: 'hash-a',
    });
  });

  test('a released key can be claimed again', async () => {
    const created = await store.create(alice, newConversation());
    const begun = await store.beginIdempotent(alice, created.id, 'key-3', 'hash-a', lease);
    assert.ok(begun.state === 'claimed');
    await store.releaseIdempotent(alice, created.id, 'key-3', begun.claim);
    await store.releaseIdempotent(alice, created.id, 'key-3', begun.claim); // twice: still fine
    assert.equal((await store.beginIdempotent(alice, created.id, 'key-3', 'hash-b', lease)).state, 'claimed');
  });
});

describe('delete', () => {
  test('removes every entity of the conversation and its index entry', async () => {
    const owner: Caller = { id: 'deleter', kind: 'user' };
    const created = await store.create(owner, newConversation());
    const begun = await store.beginIdempotent(owner, created.id, 'key', 'hash', { now: new Date(), leaseMs: 60_000 });
    assert.ok(begun.state === 'claimed');
    await store.commitTurn(owner, {
      conversationId: created.id,
      expectedVersion: created.version,
      messages: [message(1), message(2)],
      updatedAt: nextTime(),
      idempotency: { key: 'key', claim: begun.claim, requestHash: 'hash', record: record(created.id, 2) },
    });
    await appendMessages(owner, created.id, 150); // more rows than one batch deletes
    const partition = conversationPartition(owner, created.id);
    assert.equal((await rowsOf(partition)).length, 1 + 152 + 1);

    assert.equal(await store.delete(bob, created.id), false);
    assert.equal(await store.delete(owner, created.id), true);
    assert.deepEqual(await rowsOf(partition), []);
    assert.deepEqual(await rowsOf(callerIndexPartition(owner)), ['count'], 'only the count is left, at 0');
    assert.equal(await store.countConversations(owner, 10), 0);
    assert.equal(await store.get(owner, created.id), undefined);
    assert.deepEqual(await store.list(owner, { limit: 10 }), { items: [] });
    assert.equal(await store.delete(owner, created.id), false);
  });

  test('a turn committed while delete runs is deleted too', async () => {
    const created = await store.create(alice, newConversation());
    const client = TableClient.fromConnectionString(azurite.connectionString, PREFIX + CONVERSATIONS_TABLE, {
      allowInsecureConnection: true,
    });
    let raced = false;
    const racing = storeWith({
      deleteEntity: async (partitionKey, rowKey, options) => {
        if (rowKey === 'h' && !raced) {
          raced = true; // a turn lands between the message sweep and the header delete
          await store.commitTurn(alice, {
            conversationId: created.id,
            expectedVersion: created.version,
            messages: [message(1), message(2)],
            updatedAt: nextTime(),
          });
        }
        return client.deleteEntity(partitionKey, rowKey, options);
      },
    });
    assert.equal(await racing.delete(alice, created.id), true);
    assert.equal(raced, true);
    assert.deepEqual(await rowsOf(conversationPartition(alice, created.id)), []);
  });

  test('a delete interrupted after the messages is finished by the next delete', async () => {
    const created = await store.create(alice, newConversation());
    await appendMessages(alice, created.id, 4);
    const partition = conversationPartition(alice, created.id);
    await raw.deleteEntity(partition, 'm0000000001');
    assert.equal(await store.delete(alice, created.id), true);
    assert.deepEqual(await rowsOf(partition), []);
  });
});

describe('availability', () => {
  test('ping answers while storage runs and fails with StorageUnavailableError once it stops', async () => {
    await store.ping();
    const doomed = await startAzurite();
    try {
      const doomedStore = await createTableConversationStore({
        connectionString: doomed.connectionString,
        tablePrefix: PREFIX,
        retry: { maxRetries: 1, retryDelayInMs: 10, maxRetryDelayInMs: 20 },
      });
      await doomedStore.ping();
      await doomed.stop();
      await assert.rejects(doomedStore.ping(), StorageUnavailableError);
      await assert.rejects(doomedStore.get(alice, 'conv_1'), StorageUnavailableError);
      await assert.rejects(doomedStore.create(alice, newConversation()), StorageUnavailableError);
    } finally {
      await doomed.stop();
    }
  });

  test('a storage endpoint that accepts connections but never answers is unavailable, not a hang', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const address = silent.address();
      assert.ok(address && typeof address === 'object');
      await assert.rejects(
        createTableConversationStore({
          connectionString: azuriteConnectionString(address.port),
          tablePrefix: PREFIX,
          tryTimeoutMs: 200,
          retry: { maxRetries: 0 },
        }),
        StorageUnavailableError,
      );
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});

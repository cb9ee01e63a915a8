/**
 * The conversation list, most recently active first, through HTTP: the local host, real Azurite, the model
 * stand-in. Turns on different conversations at once, a cursor walk while conversations become active, and a caller
 * whose index was written before activity entries existed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TableClient, odata } from '@azure/data-tables';
import { activityRow, callerIndexPartition } from '../../src/adapters/tableKeys';
import { call, startTestApp, type TestApp } from '../support/app';

const TABLES_PREFIX = `list${Date.now()}`;
let app: TestApp;
let table: TableClient;

before(async () => {
  app = await startTestApp({ env: { AUTH_MODE: 'easyauth', TABLES_PREFIX } });
  table = TableClient.fromConnectionString(app.azurite.connectionString, `${TABLES_PREFIX}conversations`, {
    allowInsecureConnection: true,
  });
});

after(async () => {
  await app?.close();
});

/** AUTH_MODE=easyauth: each test lists as a caller of its own. */
const as = (user: string) => ({ 'x-ms-client-principal-id': user, 'x-ms-client-principal-name': user });

interface Listed {
  id: string;
  title: string | null;
  createdAt: string;
  updatedAt: string;
}

async function create(user: string, title: string): Promise<string> {
  const created = await call('POST', `${app.api}/conversations`, { title }, as(user));
  assert.equal(created.status, 201, created.text);
  return created.body.id;
}

async function send(user: string, id: string, content = 'Hello'): Promise<void> {
  const sent = await call('POST', `${app.api}/conversations/${id}/messages`, { content }, as(user));
  assert.equal(sent.status, 200, sent.text);
}

async function page(user: string, limit: number, cursor?: string): Promise<{ items: Listed[]; next?: string }> {
  const query = `limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
  const listed = await call('GET', `${app.api}/conversations?${query}`, undefined, as(user));
  assert.equal(listed.status, 200, listed.text);
  return { items: listed.body.conversations, next: listed.body.nextCursor };
}

async function listAll(user: string): Promise<Listed[]> {
  return (await page(user, 100)).items;
}

async function indexRows(user: string): Promise<Record<string, unknown>[]> {
  const partitionKey = callerIndexPartition({ kind: 'user', id: user });
  const rows: Record<string, unknown>[] = [];
  for await (const entity of table.listEntities({ queryOptions: { filter: odata`PartitionKey eq ${partitionKey}` } })) {
    rows.push(entity);
  }
  return rows;
}

/** Most recent first, ties by id: the order the list promises. */
function assertActivityOrder(items: Listed[]): void {
  for (let index = 1; index < items.length; index++) {
    const [before, after] = [items[index - 1]!, items[index]!];
    assert.ok(
      before.updatedAt > after.updatedAt || (before.updatedAt === after.updatedAt && before.id < after.id),
      `${before.id} (${before.updatedAt}) is listed before ${after.id} (${after.updatedAt})`,
    );
  }
}

describe('GET /conversations, most recently active first', () => {
  it('lists a conversation with a new turn first, and a new one before older idle ones', async () => {
    const user = 'ordering';
    const [first, second, third] = [await create(user, 'one'), await create(user, 'two'), await create(user, 'three')];
    assert.deepEqual(
      (await listAll(user)).map((item) => item.id),
      [third, second, first],
    );
    await send(user, first);
    const afterTurn = await listAll(user);
    assert.deepEqual(
      afterTurn.map((item) => item.id),
      [first, third, second],
    );
    assert.ok(afterTurn[0]!.updatedAt > afterTurn[0]!.createdAt);
    assertActivityOrder(afterTurn);
    const fourth = await create(user, 'four');
    assert.deepEqual(
      (await listAll(user)).map((item) => item.id),
      [fourth, first, third, second],
    );
  });

  it('keeps one entry per conversation, in order, under concurrent turns on different conversations', async () => {
    const user = 'concurrent';
    const ids: string[] = [];
    for (let index = 0; index < 8; index++) ids.push(await create(user, `c${index}`));
    const active = ids.slice(0, 6);
    // Six turns at once, twice: each moves an entry in the caller's one index partition.
    await Promise.all(active.map((id) => send(user, id, 'first')));
    await Promise.all(active.map((id) => send(user, id, 'again')));

    const listed = await listAll(user);
    assert.deepEqual([...listed.map((item) => item.id)].sort(), [...ids].sort(), 'each conversation exactly once');
    assertActivityOrder(listed);
    assert.deepEqual(new Set(listed.slice(0, 6).map((item) => item.id)), new Set(active), 'the active ones first');
    // Storage holds what the list shows: per conversation an index entry and one activity entry at its updatedAt.
    const rows = await indexRows(user);
    const activity = rows.filter((row) => String(row['rowKey']).startsWith('a')).map((row) => row['rowKey']);
    assert.deepEqual(
      activity,
      listed.map((item) => activityRow(item.updatedAt, item.id)),
    );
    assert.equal(rows.filter((row) => /^\d{13}\|/.test(String(row['rowKey']))).length, 8);
    assert.equal(rows.find((row) => row['rowKey'] === 'count')?.['count'], 8);
  });

  it('walks every idle conversation exactly once with a cursor while others become active', async () => {
    const user = 'walker';
    const ids: string[] = [];
    for (let index = 0; index < 10; index++) ids.push(await create(user, `w${index}`));
    const newestFirst = [...ids].reverse();

    const seen: Listed[] = [];
    const first = await page(user, 3);
    seen.push(...first.items);
    assert.deepEqual(
      first.items.map((item) => item.id),
      newestFirst.slice(0, 3),
    );
    // One already seen and one not yet reached become active; a third becomes active while the next page is read.
    const [seenActive, aheadActive, racing] = [newestFirst[1]!, newestFirst[6]!, newestFirst[4]!];
    await send(user, seenActive);
    await send(user, aheadActive);
    const [second] = await Promise.all([page(user, 3, first.next), send(user, racing)]);
    seen.push(...second.items);
    let cursor = second.next;
    while (cursor) {
      const next = await page(user, 3, cursor);
      seen.push(...next.items);
      cursor = next.next;
    }

    const walked = seen.map((item) => item.id);
    assert.equal(new Set(walked).size, walked.length, `no conversation twice: ${walked.join(' ')}`);
    const idle = ids.filter((id) => ![seenActive, aheadActive, racing].includes(id));
    for (const id of idle) assert.equal(walked.filter((walkedId) => walkedId === id).length, 1, id);
    // Idle ones come in the list's order; one that became active ahead of the cursor moved above it, out of the walk.
    assert.deepEqual(
      walked.filter((id) => idle.includes(id)),
      newestFirst.filter((id) => idle.includes(id)),
    );
    assert.ok(!walked.includes(aheadActive), 'it moved above the cursor');
    // A new walk starts with the conversations that became active, the latest first.
    const fresh = await listAll(user);
    assert.deepEqual(
      fresh.slice(0, 3).map((item) => item.id),
      [racing, aheadActive, seenActive],
    );
    assertActivityOrder(fresh);
  });

  it('lists a caller whose index has no activity entries yet (written before they existed), and moves them after', async () => {
    const user = 'legacy';
    const ids: string[] = [];
    for (let index = 0; index < 4; index++) ids.push(await create(user, `l${index}`));
    const deleted = await create(user, 'half-deleted');
    await send(user, ids[0]!);
    // The index as the code before activity entries wrote it: index entries without `activity`, no activity
    // entries, no marker. Plus an index entry whose conversation a delete had removed before it was interrupted.
    for (const row of await indexRows(user)) {
      const rowKey = String(row['rowKey']);
      const partitionKey = String(row['partitionKey']);
      if (rowKey.startsWith('a') || rowKey === 'indexed') await table.deleteEntity(partitionKey, rowKey);
      if (/^\d{13}\|/.test(rowKey)) {
        const { activity: _activity, etag: _etag, timestamp: _timestamp, ...legacy } = row;
        await table.updateEntity({ ...legacy, partitionKey, rowKey }, 'Replace');
      }
    }
    const header = (await indexRows(user)).find((row) => row['id'] === deleted);
    await table.deleteEntity(`c|${String(header!['partitionKey']).slice(2)}|${deleted}`, 'h');
    assert.equal((await indexRows(user)).filter((row) => String(row['rowKey']).startsWith('a')).length, 0);

    const listed = await listAll(user);
    assert.deepEqual(
      listed.map((item) => item.id),
      [ids[0], ids[3], ids[2], ids[1]],
      'every conversation, the one with a turn first, and not the half-deleted one',
    );
    assertActivityOrder(listed);
    const rows = await indexRows(user);
    assert.equal(rows.filter((row) => String(row['rowKey']).startsWith('a')).length, 4);
    assert.ok(rows.some((row) => row['rowKey'] === 'indexed'));
    assert.equal(rows.find((row) => row['rowKey'] === 'count')?.['count'], 4);

    await send(user, ids[2]!);
    assert.deepEqual(
      (await listAll(user)).map((item) => item.id),
      [ids[2], ids[0], ids[3], ids[1]],
    );
  });
});

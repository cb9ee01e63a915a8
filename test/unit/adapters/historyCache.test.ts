import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { HistoryCache } from '../../../src/adapters/historyCache';
import type { StoredMessage } from '../../../src/core/ports';

function message(seq: number, content = `message ${seq}`): StoredMessage {
  return {
    seq,
    id: `msg_${String(seq).padStart(10, '0')}`,
    role: seq % 2 === 1 ? 'user' : 'assistant',
    content,
    createdAt: '2026-01-01T00:00:00.000Z',
    tokens: 3,
    encoding: 'o200k_base',
  };
}

function messages(count: number, size = 10): StoredMessage[] {
  return Array.from({ length: count }, (_, index) => message(index + 1, 'x'.repeat(size)));
}

describe('HistoryCache', () => {
  test('answers what was set, as frozen copies the caller cannot change', () => {
    const cache = new HistoryCache(1_000_000);
    const original = messages(3);
    cache.set('a', 'created', original);
    const cached = cache.get('a');
    assert.ok(cached);
    assert.equal(cached.createdAt, 'created');
    assert.deepEqual(cached.messages, original);
    original[0]!.content = 'changed by the caller afterwards';
    assert.equal(cached.messages[0]!.content, 'x'.repeat(10));
    assert.throws(() => {
      (cached.messages[1] as StoredMessage).content = 'mutated';
    }, TypeError);
    assert.throws(() => (cached.messages as StoredMessage[]).push(message(4)), TypeError);
    assert.equal(cache.get('missing'), undefined);
  });

  test('append extends only the history the new messages follow', () => {
    const cache = new HistoryCache(1_000_000);
    cache.set('a', 'created', messages(2));
    cache.append('a', [message(3), message(4)]);
    assert.deepEqual(
      cache.get('a')?.messages.map((stored) => stored.seq),
      [1, 2, 3, 4],
    );
    // A gap (another turn got in between): the entry is dropped rather than kept with a hole.
    cache.append('a', [message(7), message(8)]);
    assert.equal(cache.get('a'), undefined);
    // Nothing cached: nothing is invented.
    cache.append('b', [message(1), message(2)]);
    assert.equal(cache.get('b'), undefined);
  });

  test('evicts the least recently used conversations to stay within its bytes', () => {
    // Each history: 4 messages of 100 characters = 4 * (200 + 200) = 1,600 bytes by the estimate; 4 fit.
    const cache = new HistoryCache(6_400);
    for (const key of ['a', 'b', 'c', 'd']) cache.set(key, 'c', messages(4, 100));
    assert.equal(cache.stats().conversations, 4);
    assert.equal(cache.stats().bytes, 6_400);
    cache.get('a'); // a is now the most recent, b the least
    cache.set('e', 'c', messages(4, 100));
    assert.equal(cache.get('b'), undefined);
    for (const key of ['a', 'c', 'd', 'e']) assert.ok(cache.get(key), key);
    assert.equal(cache.stats().bytes, 6_400);
  });

  test('does not keep a history bigger than a quarter of the cache, nor anything when turned off', () => {
    const cache = new HistoryCache(10_000);
    cache.set('small', 'c', messages(2, 10));
    cache.set('huge', 'c', messages(10, 200)); // 10 * 600 = 6,000 > 2,500
    assert.equal(cache.get('huge'), undefined);
    assert.ok(cache.get('small'), 'a refused history does not evict the others');
    // Growing past the share drops the entry instead of keeping a stale one.
    cache.set('growing', 'c', messages(4, 100));
    cache.append('growing', messages(8, 100).slice(4));
    assert.equal(cache.get('growing'), undefined);

    const off = new HistoryCache(0);
    off.set('a', 'c', messages(1));
    assert.equal(off.get('a'), undefined);
    assert.deepEqual(off.stats(), { conversations: 0, bytes: 0, maxBytes: 0 });
  });

  test('delete forgets a conversation and its bytes', () => {
    const cache = new HistoryCache(1_000_000);
    cache.set('a', 'c', messages(2));
    cache.delete('a');
    cache.delete('a');
    assert.equal(cache.get('a'), undefined);
    assert.equal(cache.stats().bytes, 0);
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  callerIndexPartition,
  ACTIVITY_INDEXED_ROW,
  ACTIVITY_ROWS_END,
  ACTIVITY_ROWS_START,
  activityRow,
  callerIndexRow,
  callerKey,
  conversationPartition,
  decodeListCursor,
  encodeListCursor,
  INDEX_ROWS_END,
  idempotencyRow,
  isValidKeyValue,
  messageIdForSeq,
  messageRow,
  seqFromMessageRow,
} from '../../../src/adapters/tableKeys';

describe('tableKeys', () => {
  test('the caller key is 32 hex chars of sha256(kind:id), so kinds and odd ids never collide or break keys', () => {
    const key = callerKey({ id: 'a/b#c?d\\e', kind: 'user' });
    assert.match(key, /^[0-9a-f]{32}$/);
    // sha256('user:alice') begins with these 32 hex digits: stored keys depend on it never changing.
    assert.equal(callerKey({ id: 'alice', kind: 'user' }), 'dabd1db8d35ab13106274f61f1bf9778');
    assert.notEqual(callerKey({ id: 'alice', kind: 'user' }), callerKey({ id: 'alice', kind: 'integration' }));
    assert.equal(
      conversationPartition({ id: 'alice', kind: 'user' }, 'c1'),
      `c|${callerKey({ id: 'alice', kind: 'user' })}|c1`,
    );
    assert.equal(callerIndexPartition({ id: 'alice', kind: 'user' }), `u|${callerKey({ id: 'alice', kind: 'user' })}`);
  });

  test('message rows are zero-padded so RowKey order is seq order', () => {
    assert.equal(messageRow(1), 'm0000000001');
    assert.equal(messageRow(9_999_999_999), 'm9999999999');
    assert.ok(messageRow(2) < messageRow(10));
    assert.equal(seqFromMessageRow('m0000001205'), 1205);
    assert.equal(seqFromMessageRow('h'), undefined);
    assert.equal(messageIdForSeq(7), 'msg_0000000007');
    assert.throws(() => messageRow(0), RangeError);
    assert.throws(() => messageRow(1.5), RangeError);
    assert.throws(() => messageRow(10_000_000_000), RangeError);
  });

  test('idempotency rows hash the key: any string fits', () => {
    assert.match(idempotencyRow('any/key#with?chars'), /^i[0-9a-f]{64}$/);
    assert.notEqual(idempotencyRow('a'), idempotencyRow('b'));
  });

  test('index rows sort newest first and break ties by id', () => {
    const older = callerIndexRow('2025-01-01T00:00:00.000Z', 'x');
    const newer = callerIndexRow('2025-01-01T00:00:00.001Z', 'x');
    assert.ok(newer < older);
    assert.equal(older, `${String(9_999_999_999_999 - Date.parse('2025-01-01T00:00:00.000Z')).padStart(13, '0')}|x`);
    assert.throws(() => callerIndexRow('not a date', 'x'), RangeError);
  });

  test('activity rows sort most recent first, between the index entries and the count', () => {
    const earlier = activityRow('2025-01-01T00:00:00.000Z', 'x');
    const later = activityRow('2025-01-01T00:00:00.001Z', 'x');
    assert.ok(later < earlier);
    assert.equal(earlier, `a${String(9_999_999_999_999 - Date.parse('2025-01-01T00:00:00.000Z')).padStart(13, '0')}|x`);
    for (const row of [later, earlier, activityRow('1970-01-01T00:00:00.000Z', 'z')]) {
      assert.ok(row >= ACTIVITY_ROWS_START && row < ACTIVITY_ROWS_END, row);
      assert.ok(row > callerIndexRow('1970-01-01T00:00:00.000Z', 'z') && row > INDEX_ROWS_END, row);
    }
    assert.ok(ACTIVITY_ROWS_END < 'count' && ACTIVITY_ROWS_END < ACTIVITY_INDEXED_ROW);
    assert.throws(() => activityRow('yesterday', 'x'), RangeError);
  });

  test('forbidden key characters and over-long values are rejected', () => {
    assert.equal(isValidKeyValue('conv_abc-123'), true);
    for (const bad of [
      '',
      'a/b',
      'a\\b',
      'a#b',
      'a?b',
      'a\u0000b',
      'a\u001fb',
      'a\u007fb',
      'a\u009fb',
      'x'.repeat(513),
    ]) {
      assert.equal(isValidKeyValue(bad), false, JSON.stringify(bad));
    }
    assert.equal(isValidKeyValue('x'.repeat(512)), true);
  });

  test('list cursors round-trip for their caller; made-up, edited and foreign ones are refused', () => {
    const secret = Buffer.alloc(32, 7);
    const rowKey = activityRow('2026-01-01T00:00:00.000Z', 'abc');
    const cursor = encodeListCursor(rowKey, secret, 'u|alice');
    assert.equal(decodeListCursor(cursor, secret, 'u|alice'), rowKey);
    assert.equal(decodeListCursor(cursor, secret, 'u|bob'), undefined, "another caller's cursor");
    assert.equal(decodeListCursor(cursor, Buffer.alloc(32, 8), 'u|alice'), undefined, 'signed with another key');
    // A well-formed RowKey the API never returned, with or without a made-up signature.
    const forged = Buffer.from('a0000000000001|abc').toString('base64url');
    assert.equal(decodeListCursor(forged, secret, 'u|alice'), undefined);
    // A signed index RowKey (the cursors of the list by creation time) is not a position in the activity list.
    const byCreation = callerIndexRow('2026-01-01T00:00:00.000Z', 'abc');
    assert.equal(decodeListCursor(encodeListCursor(byCreation, secret, 'u|alice'), secret, 'u|alice'), undefined);
    assert.equal(decodeListCursor(`${forged}.${cursor.split('.')[1]}`, secret, 'u|alice'), undefined);
    assert.equal(decodeListCursor('garbage!', secret, 'u|alice'), undefined);
  });
});

/**
 * How conversations map onto Table Storage keys. Ownership is part of every key: a conversation lives in the
 * partition `c|<callerKey>|<conversationId>`, so another caller's id is simply not found.
 *
 *   c|<ck>|<id>   h             header: title, metadata, prologue, createdAt, updatedAt, messageCount
 *   c|<ck>|<id>   m0000000001   message seq 1 (zero-padded so RowKey order is turn order)
 *   c|<ck>|<id>   i<sha256>     idempotency record of one Idempotency-Key
 *   c|<ck>|<id>   p             the turn paused for client-tool results, while the header's pendingId names it
 *   u|<ck>        <inverted createdAt 13 digits>|<id>   per-caller index, newest first
 */
import { createHash } from 'node:crypto';
import type { Caller } from '../core/ports';

export const HEADER_ROW = 'h';
export const MESSAGE_ROW_PREFIX = 'm';
/** The first RowKey after every message row ('n' follows 'm'): message ranges are `[m..., n)`. */
export const MESSAGE_ROWS_END = 'n';
export const IDEMPOTENCY_ROW_PREFIX = 'i';
/** After every message row ('p' > 'n'): never read by a history query. */
export const PENDING_ROW = 'p';

const SEQ_DIGITS = 10;
export const MAX_SEQ = 10 ** SEQ_DIGITS - 1;
const INVERTED_TIME_DIGITS = 13;
const MAX_TIME_MS = 10 ** INVERTED_TIME_DIGITS - 1;
/** PartitionKey and RowKey are limited to 1 KiB; counted here as UTF-16, the stricter reading. */
const MAX_KEY_BYTES = 1024;

/** sha256 of `kind:id`, first 32 hex chars: caller ids may hold characters keys forbid, and may be long. */
export function callerKey(caller: Caller): string {
  return sha256Hex(`${caller.kind}:${caller.id}`).slice(0, 32);
}

export function conversationPartition(caller: Caller, conversationId: string): string {
  return `c|${callerKey(caller)}|${conversationId}`;
}

export function callerIndexPartition(caller: Caller): string {
  return `u|${callerKey(caller)}`;
}

/** True when `value` can be used inside a PartitionKey or RowKey (forbidden: / \ # ? and control characters). */
export function isValidKeyValue(value: string): boolean {
  // eslint-disable-next-line no-control-regex
  return value.length > 0 && !/[/\\#?\u0000-\u001f\u007f-\u009f]/.test(value) && value.length * 2 <= MAX_KEY_BYTES;
}

export function messageRow(seq: number): string {
  if (!isValidSeq(seq)) throw new RangeError(`Message sequence ${seq} is not an integer in 1..${MAX_SEQ}.`);
  return MESSAGE_ROW_PREFIX + String(seq).padStart(SEQ_DIGITS, '0');
}

/** The seq of a message RowKey, or undefined for any other row. */
export function seqFromMessageRow(rowKey: string): number | undefined {
  const match = /^m(\d{10})$/.exec(rowKey);
  return match ? Number(match[1]) : undefined;
}

export function isValidSeq(seq: number): boolean {
  return Number.isSafeInteger(seq) && seq >= 1 && seq <= MAX_SEQ;
}

/** The id clients see for a message: `msg_` + the zero-padded seq (the same scheme as the core's). */
export function messageIdForSeq(seq: number): string {
  return `msg_${String(seq).padStart(SEQ_DIGITS, '0')}`;
}

/** Keys are hashed: any client-chosen string fits, and its length cannot push the RowKey past the limit. */
export function idempotencyRow(key: string): string {
  return IDEMPOTENCY_ROW_PREFIX + sha256Hex(key);
}

/** Index RowKey: inverted creation time, so the partition's natural RowKey order is newest first. */
export function callerIndexRow(createdAt: string, conversationId: string): string {
  const ms = Date.parse(createdAt);
  if (!Number.isFinite(ms) || ms < 0 || ms > MAX_TIME_MS)
    throw new RangeError(`createdAt ${createdAt} is not a usable time.`);
  return String(MAX_TIME_MS - ms).padStart(INVERTED_TIME_DIGITS, '0') + '|' + conversationId;
}

const INDEX_ROW_PATTERN = /^\d{13}\|.+$/s;

/** The list cursor is the last index RowKey returned, base64url so clients treat it as opaque. */
export function encodeListCursor(lastRowKey: string): string {
  return Buffer.from(lastRowKey, 'utf8').toString('base64url');
}

/** The RowKey a cursor stands for, or undefined when it is not one this store issued. */
export function decodeListCursor(cursor: string): string | undefined {
  if (!/^[A-Za-z0-9_-]+$/.test(cursor)) return undefined;
  const rowKey = Buffer.from(cursor, 'base64url').toString('utf8');
  return INDEX_ROW_PATTERN.test(rowKey) && isValidKeyValue(rowKey) && encodeListCursor(rowKey) === cursor
    ? rowKey
    : undefined;
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

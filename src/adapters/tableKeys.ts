/**
 * How conversations map onto Table Storage keys. Ownership is part of every key: a conversation lives in the
 * partition `c|<callerKey>|<conversationId>`, so another caller's id is simply not found.
 *
 *   c|<ck>|<id>   h             header: title, metadata, prologue, createdAt, updatedAt, messageCount
 *   c|<ck>|<id>   m0000000001   message seq 1 (zero-padded so RowKey order is turn order)
 *   c|<ck>|<id>   m0000000001.01  the rest of a message too long for one entity (sorts before m0000000002)
 *   c|<ck>|<id>   i<sha256>     idempotency record of one Idempotency-Key
 *   c|<ck>|<id>   p             the turn paused for client-tool results, while the header's pendingId names it
 *   u|<ck>        <inverted createdAt 13 digits>|<id>   per-caller index entry, one per conversation; its
 *                                                       `activity` names the conversation's activity entry
 *   u|<ck>        a<inverted updatedAt 13 digits>|<id>  activity entry: the list, most recently active first
 *   u|<ck>        count                                 how many index entries the partition holds
 *   u|<ck>        indexed                               every index entry has its activity entry (see list)
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { Caller } from '../core/ports';
import { isStorableText } from '../core/text';

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

/** Continuation rows of one message: `m<seq>.01` to `m<seq>.99`. */
export const MAX_MESSAGE_PARTS = 99;

/** The row holding part `part` (1-based) of message `seq` beyond its first row. */
export function messagePartRow(seq: number, part: number): string {
  if (!Number.isInteger(part) || part < 1 || part > MAX_MESSAGE_PARTS)
    throw new RangeError(`Message part ${part} is not an integer in 1..${MAX_MESSAGE_PARTS}.`);
  return `${messageRow(seq)}.${String(part).padStart(2, '0')}`;
}

/** The seq and part of a continuation RowKey, or undefined for any other row. */
export function partFromMessageRow(rowKey: string): { seq: number; part: number } | undefined {
  const match = /^m(\d{10})\.(\d{2})$/.exec(rowKey);
  return match ? { seq: Number(match[1]), part: Number(match[2]) } : undefined;
}

/** The first RowKey after every row of messages up to `seq` (continuations included). */
export function messageRowsAfter(seq: number): string {
  return seq >= MAX_SEQ ? MESSAGE_ROWS_END : messageRow(seq + 1);
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

/** A time as 13 digits that sort the other way: later times first. */
function invertedTime(time: string, name: string): string {
  const ms = Date.parse(time);
  if (!Number.isFinite(ms) || ms < 0 || ms > MAX_TIME_MS) throw new RangeError(`${name} ${time} is not a usable time.`);
  return String(MAX_TIME_MS - ms).padStart(INVERTED_TIME_DIGITS, '0');
}

/** Index RowKey: inverted creation time and the id. Fixed for the conversation's life: it is found by it. */
export function callerIndexRow(createdAt: string, conversationId: string): string {
  return `${invertedTime(createdAt, 'createdAt')}|${conversationId}`;
}

/** The first RowKey after every index entry (':' follows '9'): index ranges are `[..., :)`; the counter is past it. */
export const INDEX_ROWS_END = ':';

/** Activity RowKey: `a`, the inverted time of the last activity and the id, so RowKey order is most recent first. */
export function activityRow(activeAt: string, conversationId: string): string {
  return `${ACTIVITY_ROWS_START}${invertedTime(activeAt, 'updatedAt')}|${conversationId}`;
}

const ACTIVITY_ROW_PATTERN = /^a\d{13}\|.+$/s;
/** Activity entries are the range `[a, a:)`. */
export const ACTIVITY_ROWS_START = 'a';
export const ACTIVITY_ROWS_END = 'a:';
/** Written once every index entry of the caller has its activity entry (entries from before they existed). */
export const ACTIVITY_INDEXED_ROW = 'indexed';
/** The caller's conversation count, kept in the index partition so it changes in one transaction with an entry. */
export const CONVERSATION_COUNT_ROW = 'count';

/** Where the key that signs list cursors is kept (a partition no conversation or caller index can have). */
export const CURSOR_KEY_PARTITION = 'k';
export const CURSOR_KEY_ROW = 'cursor';
const CURSOR_MAC_CHARS = 22; // 132 bits of HMAC-SHA256

/**
 * The list cursor: the last activity RowKey returned (base64url) and an HMAC of it with the caller's index partition,
 * keyed by a secret kept in storage. A cursor the API never issued (made up, edited, or another caller's) fails the
 * check and is refused, as the API documents.
 */
export function encodeListCursor(lastRowKey: string, secret: Buffer, partition: string): string {
  return `${Buffer.from(lastRowKey, 'utf8').toString('base64url')}.${cursorMac(secret, partition, lastRowKey)}`;
}

/** The RowKey a cursor stands for, or undefined when it is not one this store issued to this caller. */
export function decodeListCursor(cursor: string, secret: Buffer, partition: string): string | undefined {
  const match = /^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(cursor);
  if (!match?.[1] || !match[2]) return undefined;
  const rowKey = Buffer.from(match[1], 'base64url').toString('utf8');
  const expected = Buffer.from(cursorMac(secret, partition, rowKey));
  const given = Buffer.from(match[2]);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  return ACTIVITY_ROW_PATTERN.test(rowKey) && isValidKeyValue(rowKey) ? rowKey : undefined;
}

function cursorMac(secret: Buffer, partition: string, rowKey: string): string {
  return createHmac('sha256', secret).update(`${partition}\n${rowKey}`).digest('base64url').slice(0, CURSOR_MAC_CHARS);
}

/** Injective over what it accepts: UTF-8 would map every unpaired surrogate to U+FFFD, so those are refused. */
function sha256Hex(text: string): string {
  if (!isStorableText(text)) throw new Error('Only well-formed Unicode without NUL can be hashed into a key.');
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/**
 * Builds the encoder `new Tiktoken(ranks, extendedSpecialTokens)` builds, about 3 times faster.
 *
 * Why: that constructor is most of a cold start (fresh Node 20, 2 vCPU: ~520-610 ms for o200k_base, ~220 ms for
 * cl100k_base). It splits the compressed ranks into an object of ~200k keys, walks `Object.entries`, base64-decodes
 * every token into its own Uint8Array and joins its bytes with ',' for the key. What encoding needs are the two maps
 * it ends with: `rankMap` (bytes joined by ',' -> rank) and `textMap` (rank -> bytes).
 *
 * How: the library's constructor is called with no ranks, so it sets up the pattern and special tokens itself; then
 * its two maps are filled straight from the compressed ranks (lines of `<ignored> <offset> <token> <token>...`,
 * tokens in base64, rank = offset + position). One pass decodes every token into a shared buffer and writes its key
 * (the bytes in decimal, joined by ',') into one ASCII text; then `rankMap` gets a slice of that text -> rank, and
 * `textMap` rank -> a view of the token's bytes in the shared buffer. No intermediate object, one buffer and one
 * string instead of 200k of each: ~180 ms for o200k_base, ~75 ms for cl100k_base, and less memory.
 *
 * Guards: it relies on internals (js-tiktoken 1.0.21's `rankMap` and `textMap`, marked @internal), so it first checks
 * that the library fills a small probe of ranks exactly as this code does and that the instance starts with both maps
 * empty. It parses strictly (canonical base64, digits, no empty token) and checks that no token and no rank repeats,
 * where the library's dedup through an object would differ. Anything unexpected: the library's own constructor,
 * silently. Unit tests compare both maps, entry by entry, with the library's for both encodings.
 */
import type { Tiktoken, TiktokenBPE } from 'js-tiktoken/lite' with { 'resolution-mode': 'import' };
import type { RankTables, TokenList } from './bytePairEncoder';

/** js-tiktoken's `Tiktoken` class, or a stand-in (tests). */
export type TiktokenConstructor = new (ranks: TiktokenBPE, extendedSpecialTokens?: Record<string, number>) => Tiktoken;

/** The encoder's internal lookups (js-tiktoken 1.0.21): what `encode` and `decode` read. */
export interface RankMaps {
  rankMap: Map<string, number>;
  textMap: Map<number, Uint8Array>;
}

/** Every token of a compressed rank string, decoded, in order. */
interface DecodedRanks {
  count: number;
  /** The bytes of every token, back to back; token i ends at `byteEnds[i]`. */
  bytes: Uint8Array;
  byteEnds: Uint32Array;
  /** The key of every token (its bytes in decimal, joined by ','), back to back; token i's key ends at `keyEnds[i]`. */
  keys: string;
  keyEnds: Uint32Array;
  ranks: Uint32Array;
}

const BASE64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
/** The 6-bit value of each base64 character below code 128; -1 for any other character. */
const SEXTETS = new Int8Array(128).fill(-1);
for (let value = 0; value < BASE64_ALPHABET.length; value++) SEXTETS[BASE64_ALPHABET.charCodeAt(value)] = value;

const NEWLINE = '\n';
const SPACE = ' ';
const PAD = '='.charCodeAt(0);
const COMMA = ','.charCodeAt(0);
const ZERO = '0'.charCodeAt(0);
const NINE = '9'.charCodeAt(0);
/** Longest rank offset accepted: nine digits keep every rank within a Uint32. */
const MAX_OFFSET_DIGITS = 9;

/**
 * A few tokens on two lines, with 1 to 4 bytes, bytes of 1 to 3 digits and every padding: the library's constructor
 * must fill its maps from them exactly as this code does before this code fills them from the real ranks.
 */
const PROBE_RANKS = 'a 7 QQ== w6k= AAkK Y2T/ 8J+YgA==\nb 300 IA==';

/** The encoder `new TiktokenClass(ranks, extendedSpecialTokens)` builds; built the fast way when it can be. */
export function buildTiktoken(
  TiktokenClass: TiktokenConstructor,
  ranks: TiktokenBPE,
  extendedSpecialTokens?: Record<string, number>,
): Tiktoken {
  return (
    buildTiktokenFast(TiktokenClass, ranks, extendedSpecialTokens) ?? new TiktokenClass(ranks, extendedSpecialTokens)
  );
}

/** The fast build, or undefined when the library's internals or the ranks are not what this code expects. */
export function buildTiktokenFast(
  TiktokenClass: TiktokenConstructor,
  ranks: TiktokenBPE,
  extendedSpecialTokens?: Record<string, number>,
): Tiktoken | undefined {
  if (!fillsLikeTheLibrary(TiktokenClass, ranks)) return undefined;
  const decoded = decodeRanks(ranks.bpe_ranks);
  if (!decoded) return undefined;
  const encoder = construct(TiktokenClass, { ...ranks, bpe_ranks: '' }, extendedSpecialTokens);
  const maps = encoder && rankMapsOf(encoder);
  if (!maps || maps.rankMap.size !== 0 || maps.textMap.size !== 0) return undefined;
  if (!fillRankMaps(decoded, maps)) return undefined;
  const { count, bytes, byteEnds, ranks: tokenRanks } = decoded;
  tokenLists.set(encoder, { count, bytes, byteEnds: byteEnds.slice(0, count), ranks: tokenRanks.slice(0, count) });
  return encoder;
}

/** The token lists the fast build decoded, by the encoder it filled (the merge walks them faster than the maps). */
const tokenLists = new WeakMap<Tiktoken, TokenList>();

/** rankMapsOf, plus the token list when the fast build made the encoder. */
export function rankTablesOf(encoder: Tiktoken): RankTables | undefined {
  const maps = rankMapsOf(encoder);
  const tokens = tokenLists.get(encoder);
  return maps && (tokens ? { ...maps, tokens } : maps);
}

/** Whether the library builds, from the probe ranks, the maps this code builds from them. */
function fillsLikeTheLibrary(TiktokenClass: TiktokenConstructor, ranks: TiktokenBPE): boolean {
  const probe = construct(TiktokenClass, { ...ranks, bpe_ranks: PROBE_RANKS });
  const library = probe && rankMapsOf(probe);
  const decoded = decodeRanks(PROBE_RANKS);
  if (!library || !decoded) return false;
  const ours: RankMaps = { rankMap: new Map(), textMap: new Map() };
  return (
    fillRankMaps(decoded, ours) &&
    sameEntries(library.rankMap, ours.rankMap, (a, b) => a === b) &&
    sameEntries(library.textMap, ours.textMap, sameBytes)
  );
}

function construct(
  TiktokenClass: TiktokenConstructor,
  ranks: TiktokenBPE,
  extendedSpecialTokens?: Record<string, number>,
): Tiktoken | undefined {
  try {
    return new TiktokenClass(ranks, extendedSpecialTokens);
  } catch {
    return undefined; // a library that refuses these ranks is not the one this code knows
  }
}

/** The encoder's `rankMap` and `textMap` (js-tiktoken internals), or undefined if it has not got both. */
export function rankMapsOf(encoder: Tiktoken): RankMaps | undefined {
  const { rankMap, textMap } = encoder as unknown as Partial<Record<keyof RankMaps, unknown>>;
  return rankMap instanceof Map && textMap instanceof Map ? ({ rankMap, textMap } as RankMaps) : undefined;
}

function sameEntries<K, V>(a: Map<K, V>, b: Map<K, V>, same: (x: V, y: V) => boolean): boolean {
  if (a.size !== b.size) return false;
  for (const [key, value] of a) {
    const other = b.get(key);
    if (other === undefined || !same(value, other)) return false;
  }
  return true;
}

function sameBytes(a: unknown, b: unknown): boolean {
  return (
    a instanceof Uint8Array &&
    b instanceof Uint8Array &&
    a.length === b.length &&
    a.every((byte, index) => byte === b[index])
  );
}

/** Sets every decoded token in the (empty) maps; false if a token or a rank repeats (the library would differ). */
function fillRankMaps(decoded: DecodedRanks, { rankMap, textMap }: RankMaps): boolean {
  const { count, bytes, byteEnds, keys, keyEnds, ranks } = decoded;
  // One map at a time: measured ~10% faster than setting both per token.
  let keyStart = 0;
  for (let token = 0; token < count; token++) {
    const keyEnd = keyEnds[token]!;
    rankMap.set(keys.slice(keyStart, keyEnd), ranks[token]!);
    keyStart = keyEnd;
  }
  let byteStart = 0;
  for (let token = 0; token < count; token++) {
    const byteEnd = byteEnds[token]!;
    textMap.set(ranks[token]!, bytes.subarray(byteStart, byteEnd));
    byteStart = byteEnd;
  }
  return rankMap.size === count && textMap.size === count;
}

/** Every token of js-tiktoken's compressed ranks, or undefined if the text is not exactly in the expected format. */
function decodeRanks(text: string): DecodedRanks | undefined {
  const maxTokens = (text.length >> 2) + 1; // a token takes at least 4 characters
  const bytes = new Uint8Array(Math.ceil((text.length * 3) / 4));
  const keyText = new Uint8Array(text.length * 3); // at most 4 key characters ("255,") per byte
  const byteEnds = new Uint32Array(maxTokens);
  const keyEnds = new Uint32Array(maxTokens);
  const ranks = new Uint32Array(maxTokens);
  let count = 0;
  let byteLength = 0;
  let keyLength = 0;

  for (let lineStart = 0; lineStart < text.length;) {
    let lineEnd = text.indexOf(NEWLINE, lineStart);
    if (lineEnd < 0) lineEnd = text.length;
    if (lineEnd > lineStart) {
      // The first field is ignored; the second is the rank of the first token.
      const offsetStart = text.indexOf(SPACE, lineStart) + 1;
      if (offsetStart === 0 || offsetStart > lineEnd) return undefined;
      let separator = fieldEnd(text, offsetStart, lineEnd);
      let rank = parseOffset(text, offsetStart, separator);
      if (rank < 0) return undefined;
      while (separator < lineEnd) {
        const tokenStart = separator + 1;
        separator = fieldEnd(text, tokenStart, lineEnd);
        const tokenByteStart = byteLength;
        byteLength = decodeBase64(text, tokenStart, separator, bytes, byteLength);
        if (byteLength < 0) return undefined;
        for (let index = tokenByteStart; index < byteLength; index++) {
          if (index > tokenByteStart) keyText[keyLength++] = COMMA;
          keyLength = writeDecimal(keyText, keyLength, bytes[index]!);
        }
        byteEnds[count] = byteLength;
        keyEnds[count] = keyLength;
        ranks[count++] = rank++;
      }
    }
    lineStart = lineEnd + 1;
  }

  return {
    count,
    bytes: bytes.slice(0, byteLength), // a tight copy: the textMap views keep it alive
    byteEnds,
    keys: Buffer.from(keyText.buffer, 0, keyLength).toString('latin1'),
    keyEnds,
    ranks,
  };
}

/** Where the space-separated field starting at `start` ends, within the line. */
function fieldEnd(text: string, start: number, lineEnd: number): number {
  const space = text.indexOf(SPACE, start);
  return space < 0 || space > lineEnd ? lineEnd : space;
}

/** The decimal number in text[start, end), or -1 if it is not 1 to 9 digits. */
function parseOffset(text: string, start: number, end: number): number {
  if (end === start || end - start > MAX_OFFSET_DIGITS) return -1;
  let value = 0;
  for (let index = start; index < end; index++) {
    const code = text.charCodeAt(index);
    if (code < ZERO || code > NINE) return -1;
    value = value * 10 + (code - ZERO);
  }
  return value;
}

function sextetAt(text: string, index: number): number {
  const code = text.charCodeAt(index);
  return code < 128 ? SEXTETS[code]! : -1;
}

/**
 * Decodes the base64 in text[start, end) into `out` from `at`; returns where the bytes end, or -1 unless the text
 * is non-empty standard base64 (length a multiple of 4, '=' padding only at the end).
 */
function decodeBase64(text: string, start: number, end: number, out: Uint8Array, at: number): number {
  if (end === start || (end - start) % 4 !== 0) return -1;
  for (let index = start; index < end; index += 4) {
    const isLast = index + 4 === end;
    const first = sextetAt(text, index);
    const second = sextetAt(text, index + 1);
    if (first < 0 || second < 0) return -1;
    out[at++] = (first << 2) | (second >> 4);
    if (text.charCodeAt(index + 2) === PAD) {
      return isLast && text.charCodeAt(index + 3) === PAD ? at : -1;
    }
    const third = sextetAt(text, index + 2);
    if (third < 0) return -1;
    out[at++] = ((second & 15) << 4) | (third >> 2);
    if (text.charCodeAt(index + 3) === PAD) return isLast ? at : -1;
    const fourth = sextetAt(text, index + 3);
    if (fourth < 0) return -1;
    out[at++] = ((third & 3) << 6) | fourth;
  }
  return at;
}

/** Writes `value` (0-255) in decimal at `at`, as `String(value)` would; returns where it ends. */
function writeDecimal(out: Uint8Array, at: number, value: number): number {
  if (value >= 100) out[at++] = ZERO + Math.floor(value / 100);
  if (value >= 10) out[at++] = ZERO + (Math.floor(value / 10) % 10);
  out[at++] = ZERO + (value % 10);
  return at;
}

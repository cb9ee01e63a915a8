/**
 * The tokens of an encoding, indexed straight from js-tiktoken's compressed ranks (see tokenIndex.ts), without
 * building the library's encoder.
 *
 * Why: `new Tiktoken(ranks)` was most of a cold start (fresh Node 20, 2 vCPU: ~520-610 ms for o200k_base, ~220 ms for
 * cl100k_base). It splits the compressed ranks into an object of ~200k keys, walks `Object.entries`, base64-decodes
 * every token into its own Uint8Array and joins its bytes with ',' for a key in `rankMap`. Filling those two maps
 * directly (an earlier version of this file) was still ~3/4 of what was left. The merge needs neither map: it needs
 * a token by its bytes and by its rank, which an index over the decoded list answers (tokenIndex.ts).
 *
 * How: the ranks are lines of `<ignored> <offset> <token> <token>...`, tokens in base64, rank = offset + position.
 * One pass decodes every token into one shared buffer, noting where each ends and its rank; TokenIndex.build hashes
 * them. Strict parsing (canonical base64, digits, no empty token) and no repeated token or rank, where the library's
 * dedup through an object would differ; and first a probe: the library's own constructor must read a few ranks into
 * exactly the tokens this code reads from them. Anything unexpected: the library's constructor builds the encoder and
 * the index is made from its `textMap`; without that internal, no index (the library's own encode is used). Unit tests
 * compare the index with the library's maps, entry by entry, for both encodings.
 */
import type { Tiktoken, TiktokenBPE } from 'js-tiktoken/lite' with { 'resolution-mode': 'import' };
import { TokenIndex, type TokenList } from './tokenIndex';

/** js-tiktoken's `Tiktoken` class, or a stand-in (tests). */
export type TiktokenConstructor = new (ranks: TiktokenBPE, extendedSpecialTokens?: Record<string, number>) => Tiktoken;

/** The encoder's internal lookups (js-tiktoken 1.0.21): what `encode` and `decode` read. */
export interface RankMaps {
  rankMap: Map<string, number>;
  textMap: Map<number, Uint8Array>;
}

/** An encoding's tokens: the index when it could be made, and the library's encoder, built only if asked for. */
export interface LoadedRanks {
  index: TokenIndex | undefined;
  /** Whether the index came from the compressed ranks directly (false: from the library's encoder). */
  fast: boolean;
  library(): Tiktoken;
}

const BASE64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
/** The 6-bit value of each base64 character below code 128; -1 for any other character. */
const SEXTETS = new Int8Array(128).fill(-1);
for (let value = 0; value < BASE64_ALPHABET.length; value++) SEXTETS[BASE64_ALPHABET.charCodeAt(value)] = value;

const NEWLINE = '\n';
const SPACE = ' ';
const PAD = '='.charCodeAt(0);
const ZERO = '0'.charCodeAt(0);
const NINE = '9'.charCodeAt(0);
/** Longest rank offset accepted: nine digits keep every rank within a Uint32. */
const MAX_OFFSET_DIGITS = 9;

/**
 * A few tokens on two lines, with 1 to 4 bytes and every padding: the library's constructor must read from them
 * exactly the tokens this code reads before this code reads the real ranks.
 */
const PROBE_RANKS = 'a 7 QQ== w6k= AAkK Y2T/ 8J+YgA==\nb 300 IA==';

/** The encoding's tokens, indexed the fast way when it can be, else from the library's own encoder. */
export function loadRanks(
  TiktokenClass: TiktokenConstructor,
  ranks: TiktokenBPE,
  extendedSpecialTokens?: Record<string, number>,
): LoadedRanks {
  let library: Tiktoken | undefined;
  const libraryEncoder = () => (library ??= new TiktokenClass(ranks, extendedSpecialTokens));
  const fast = indexRanksFast(TiktokenClass, ranks);
  if (fast) return { index: fast, fast: true, library: libraryEncoder };
  // As many byte strings as ranks: no rank is shared by two byte strings (the index would have to pick one).
  const maps = rankMapsOf(libraryEncoder());
  const consistent = maps && maps.rankMap.size === maps.textMap.size;
  return { index: consistent ? TokenIndex.fromEntries(maps.textMap) : undefined, fast: false, library: libraryEncoder };
}

/** The index made straight from the compressed ranks, or undefined when they are not what this code expects. */
export function indexRanksFast(TiktokenClass: TiktokenConstructor, ranks: TiktokenBPE): TokenIndex | undefined {
  if (!readsLikeTheLibrary(TiktokenClass, ranks)) return undefined;
  const decoded = decodeRanks(ranks.bpe_ranks);
  return decoded && TokenIndex.build(decoded);
}

/** Whether the library reads the probe ranks into the very tokens this code reads from them. */
function readsLikeTheLibrary(TiktokenClass: TiktokenConstructor, ranks: TiktokenBPE): boolean {
  const probe = construct(TiktokenClass, { ...ranks, bpe_ranks: PROBE_RANKS });
  const library = probe && rankMapsOf(probe);
  const decoded = decodeRanks(PROBE_RANKS);
  const ours = decoded && TokenIndex.build(decoded);
  if (!library || !ours) return false;
  if (library.rankMap.size !== ours.count || library.textMap.size !== ours.count) return false;
  for (const [key, rank] of library.rankMap) {
    const bytes = Uint8Array.from(key.split(',').map(Number));
    if (ours.rankOf(bytes, 0, bytes.length) !== rank) return false;
  }
  for (const [rank, bytes] of library.textMap) {
    const own = ours.bytesOf(rank);
    if (!(bytes instanceof Uint8Array) || !own || !Buffer.from(own).equals(Buffer.from(bytes))) return false;
  }
  return true;
}

function construct(TiktokenClass: TiktokenConstructor, ranks: TiktokenBPE): Tiktoken | undefined {
  try {
    return new TiktokenClass(ranks);
  } catch {
    return undefined; // a library that refuses these ranks is not the one this code knows
  }
}

/** The encoder's `rankMap` and `textMap` (js-tiktoken internals), or undefined if it has not got both. */
export function rankMapsOf(encoder: Tiktoken): RankMaps | undefined {
  const { rankMap, textMap } = encoder as unknown as Partial<Record<keyof RankMaps, unknown>>;
  return rankMap instanceof Map && textMap instanceof Map ? ({ rankMap, textMap } as RankMaps) : undefined;
}

/** Every token of js-tiktoken's compressed ranks, or undefined if the text is not exactly in the expected format. */
function decodeRanks(text: string): TokenList | undefined {
  const maxTokens = (text.length >> 2) + 1; // a token takes at least 4 characters
  const bytes = new Uint8Array(Math.ceil((text.length * 3) / 4));
  const byteEnds = new Uint32Array(maxTokens);
  const ranks = new Uint32Array(maxTokens);
  let count = 0;
  let byteLength = 0;

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
        byteLength = decodeBase64(text, tokenStart, separator, bytes, byteLength);
        if (byteLength < 0) return undefined;
        byteEnds[count] = byteLength;
        ranks[count++] = rank++;
      }
    }
    lineStart = lineEnd + 1;
  }

  // Tight copies: the index keeps them for the life of the process.
  return { count, bytes: bytes.slice(0, byteLength), byteEnds: byteEnds.slice(0, count), ranks: ranks.slice(0, count) };
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

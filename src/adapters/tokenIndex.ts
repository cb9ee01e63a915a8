/**
 * Every token of an encoding, found by its bytes or by its rank, over typed arrays: what the byte-pair merge looks up.
 *
 * Why not js-tiktoken's maps: its encoder keeps `rankMap` (the bytes of every token written in decimal and joined by
 * ',', a string key per token, 200k of them for o200k_base) and `textMap` (rank -> a Uint8Array per token). Building
 * those two maps was most of a cold start's first turn, and they hold tens of MB. This index is the token list as the
 * ranks file has it (all bytes back to back, where each token ends, its rank) plus one open-addressing table of token
 * positions hashed by their bytes: built in one pass, a few MB, and a lookup hashes bytes instead of building a string.
 */

/** Every token: token i is bytes[byteEnds[i - 1] (0 for the first), byteEnds[i]), of rank ranks[i]. */
export interface TokenList {
  readonly count: number;
  readonly bytes: Uint8Array;
  readonly byteEnds: Uint32Array;
  readonly ranks: Uint32Array;
}

/** A saved index (prebuiltRankIndex.ts): everything a TokenIndex holds. */
export interface TokenIndexTables extends TokenList {
  readonly rankCount: number;
  readonly longestToken: number;
  readonly starts: Uint32Array;
  readonly positions: Int32Array;
  readonly slots: Int32Array;
}

export const NOT_A_TOKEN = -1;

/** Longest byte string a short key holds. */
export const SHORT_KEY_BYTES = 5;

/** bytes[from, from + length) (length 1 to 5) as one exact number: the bytes, then the length above them. */
export function shortKey(bytes: Uint8Array, from: number, length: number): number {
  let key = 0;
  for (let index = length - 1; index >= 0; index--) key = key * 256 + bytes[from + index]!;
  return key + length * 2 ** 40;
}

function isContinuation(byte: number): boolean {
  return byte >= 0x80 && byte < 0xc0;
}

/** The open-addressing table's size for `count` tokens: the smallest power of two at least twice the count. */
function tableSize(count: number): number {
  let size = 1;
  while (size < count * 2) size *= 2;
  return size;
}

/** fromTables looks up one token in this many (and the last one). */
const SAMPLE_EVERY = 997;

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

export class TokenIndex {
  readonly count: number;
  /** One more than the highest rank. */
  readonly rankCount: number;
  /** The longest token, in bytes. */
  readonly longestToken: number;
  private readonly bytes: Uint8Array;
  /** Where token i starts and ends in `bytes` (i = position in the list, not rank). */
  private readonly starts: Uint32Array;
  private readonly ends: Uint32Array;
  private readonly ranks: Uint32Array;
  /** rank -> position in the list, -1 where no token has that rank. */
  private readonly positions: Int32Array;
  /** Open addressing: a position + 1 per slot (0: empty), hashed by the token's bytes. */
  private readonly slots: Int32Array;
  private readonly mask: number;

  /**
   * Indexes `list`, or returns undefined when two tokens share bytes or a rank (the library's maps would keep one of
   * them, this index cannot say which).
   */
  static build(list: TokenList): TokenIndex | undefined {
    const index = new TokenIndex(list);
    return index.fill() ? index : undefined;
  }

  /**
   * The index saved by `tables()`, without a pass over the tokens: undefined unless the arrays have the sizes these
   * counts make and a sample of tokens (one in SAMPLE_EVERY, and the last) is found by its bytes at its rank and its
   * rank at its bytes (a table hashed otherwise than this code hashes would not find them). The arrays themselves are
   * trusted: prebuiltRankIndex.ts checks the saved file's digest first.
   */
  static fromTables(tables: TokenIndexTables): TokenIndex | undefined {
    const { count, rankCount, bytes, starts, byteEnds, ranks, positions, slots } = tables;
    const sized =
      [starts, byteEnds, ranks].every((array) => array.length === count) &&
      positions.length === rankCount &&
      slots.length === tableSize(count) &&
      (count === 0 || byteEnds[count - 1] === bytes.length);
    if (!sized) return undefined;
    const index = new TokenIndex(tables, tables);
    const found = (token: number) => {
      const start = starts[token]!;
      const rank = ranks[token]!;
      return (
        rank < rankCount && positions[rank] === token && index.rankOf(bytes, start, byteEnds[token]! - start) === rank
      );
    };
    for (let token = 0; token < count; token += SAMPLE_EVERY) if (!found(token)) return undefined;
    if (count > 0 && !found(count - 1)) return undefined;
    return index;
  }

  /** What fromTables takes back: this index's own arrays (do not write). */
  tables(): TokenIndexTables {
    return {
      count: this.count,
      rankCount: this.rankCount,
      longestToken: this.longestToken,
      bytes: this.bytes,
      starts: this.starts,
      byteEnds: this.ends,
      ranks: this.ranks,
      positions: this.positions,
      slots: this.slots,
    };
  }

  private constructor(list: TokenList, saved?: TokenIndexTables) {
    this.count = list.count;
    this.bytes = list.bytes;
    this.ranks = list.ranks;
    this.ends = list.byteEnds;
    if (saved) {
      ({ starts: this.starts, positions: this.positions, slots: this.slots } = saved);
      ({ rankCount: this.rankCount, longestToken: this.longestToken } = saved);
      this.mask = this.slots.length - 1;
      return;
    }
    this.starts = new Uint32Array(list.count);
    let rankCount = 0;
    let longest = 0;
    for (let token = 0, start = 0; token < list.count; start = list.byteEnds[token++]!) {
      this.starts[token] = start;
      const rank = list.ranks[token]!;
      if (rank >= rankCount) rankCount = rank + 1;
      if (list.byteEnds[token]! - start > longest) longest = list.byteEnds[token]! - start;
    }
    this.rankCount = rankCount;
    this.longestToken = longest;
    this.positions = new Int32Array(rankCount).fill(-1);
    this.slots = new Int32Array(tableSize(list.count));
    this.mask = this.slots.length - 1;
  }

  private fill(): boolean {
    const { bytes, starts, ends, ranks, positions, slots, mask } = this;
    for (let token = 0; token < this.count; token++) {
      const rank = ranks[token]!;
      if (positions[rank] !== -1) return false;
      positions[rank] = token;
      const start = starts[token]!;
      const end = ends[token]!;
      let hash = FNV_OFFSET;
      for (let at = start; at < end; at++) hash = Math.imul(hash ^ bytes[at]!, FNV_PRIME);
      let slot = hash & mask;
      for (;;) {
        const stored = slots[slot]!;
        if (stored === 0) break;
        if (this.sameBytes(stored - 1, bytes, start, end - start)) return false;
        slot = (slot + 1) & mask;
      }
      slots[slot] = token + 1;
    }
    return true;
  }

  private sameBytes(token: number, bytes: Uint8Array, from: number, length: number): boolean {
    const start = this.starts[token]!;
    if (this.ends[token]! - start !== length) return false;
    const own = this.bytes;
    for (let offset = 0; offset < length; offset++) if (own[start + offset] !== bytes[from + offset]) return false;
    return true;
  }

  /** The rank of the token whose bytes are bytes[from, from + length), or NOT_A_TOKEN. */
  rankOf(bytes: Uint8Array, from: number, length: number): number {
    let hash = FNV_OFFSET;
    for (let at = from; at < from + length; at++) hash = Math.imul(hash ^ bytes[at]!, FNV_PRIME);
    const { slots, mask } = this;
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const stored = slots[slot]!;
      if (stored === 0) return NOT_A_TOKEN;
      if (this.sameBytes(stored - 1, bytes, from, length)) return this.ranks[stored - 1]!;
    }
  }

  /** The rank of the token whose bytes are token `left`'s then token `right`'s (both ranks), or NOT_A_TOKEN. */
  rankOfPair(left: number, right: number): number {
    const leftToken = this.positions[left]!;
    const rightToken = this.positions[right]!;
    const { bytes, starts, ends, slots, mask } = this;
    const leftStart = starts[leftToken]!;
    const leftEnd = ends[leftToken]!;
    const rightStart = starts[rightToken]!;
    const rightEnd = ends[rightToken]!;
    const length = leftEnd - leftStart + (rightEnd - rightStart);
    if (length > this.longestToken) return NOT_A_TOKEN;
    let hash = FNV_OFFSET;
    for (let at = leftStart; at < leftEnd; at++) hash = Math.imul(hash ^ bytes[at]!, FNV_PRIME);
    for (let at = rightStart; at < rightEnd; at++) hash = Math.imul(hash ^ bytes[at]!, FNV_PRIME);
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      const stored = slots[slot]!;
      if (stored === 0) return NOT_A_TOKEN;
      const start = starts[stored - 1]!;
      if (ends[stored - 1]! - start !== length) continue;
      let same = true;
      for (let offset = 0; offset < length && same; offset++) {
        const at = offset < leftEnd - leftStart ? leftStart + offset : rightStart + offset - (leftEnd - leftStart);
        same = bytes[start + offset] === bytes[at];
      }
      if (same) return this.ranks[stored - 1]!;
    }
  }

  /** The bytes of the token of rank `rank` (a view; do not write), or undefined. */
  bytesOf(rank: number): Uint8Array | undefined {
    const token = rank < this.rankCount ? this.positions[rank]! : -1;
    return token < 0 ? undefined : this.bytes.subarray(this.starts[token]!, this.ends[token]!);
  }

  /** Every token's bytes and rank, in list order. */
  *entries(): IterableIterator<[Uint8Array, number]> {
    for (let token = 0; token < this.count; token++) {
      yield [this.bytes.subarray(this.starts[token]!, this.ends[token]!), this.ranks[token]!];
    }
  }

  /**
   * What bytePairEncoder asks before starting a character of several bytes whole: the lowest rank of a token that
   * begins with each byte string of 2 to 5 bytes that ends a character of several bytes and then starts another
   * (`starting`), and of a token that ends with each byte string of 2 to 5 bytes whose second byte starts a character
   * of several bytes (`ending`). Keys: shortKey(bytes). Built in one pass over the tokens.
   */
  characterEdgeRanks(): { starting: Map<number, number>; ending: Map<number, number> } {
    const starting = new Map<number, number>();
    const ending = new Map<number, number>();
    const { bytes, starts, ends, ranks } = this;
    const lower = (map: Map<number, number>, key: number, rank: number) => {
      const known = map.get(key);
      if (known === undefined || rank < known) map.set(key, rank);
    };
    for (let token = 0; token < this.count; token++) {
      const start = starts[token]!;
      const length = ends[token]! - start;
      const rank = ranks[token]!;
      for (let size = 2; size <= Math.min(SHORT_KEY_BYTES, length); size++) {
        // Starting: a continuation byte (a character's last byte) then a byte that is not one (the next's first).
        if (isContinuation(bytes[start + size - 2]!) && !isContinuation(bytes[start + size - 1]!)) {
          lower(starting, shortKey(bytes, start, size), rank);
        }
        // Ending: any byte, then the first byte of a character of several bytes.
        const from = start + length - size;
        if (bytes[from + 1]! >= 0xc0) lower(ending, shortKey(bytes, from, size), rank);
      }
    }
    return { starting, ending };
  }

  /** An index of tokens given as (rank, bytes), e.g. a js-tiktoken encoder's `textMap`; undefined as for build. */
  static fromEntries(entries: Iterable<readonly [number, Uint8Array]>): TokenIndex | undefined {
    const list = [...entries];
    const byteEnds = new Uint32Array(list.length);
    const ranks = new Uint32Array(list.length);
    let total = 0;
    for (const [rank, bytes] of list) {
      if (!Number.isInteger(rank) || rank < 0 || rank >= 2 ** 31) return undefined;
      total += bytes.length;
    }
    const bytes = new Uint8Array(total);
    let at = 0;
    list.forEach(([rank, token], index) => {
      bytes.set(token, at);
      at += token.length;
      byteEnds[index] = at;
      ranks[index] = rank;
    });
    return TokenIndex.build({ count: list.length, bytes, byteEnds, ranks });
  }
}

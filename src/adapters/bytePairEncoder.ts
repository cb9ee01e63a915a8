/**
 * The encoder behind the Tokenizer port: js-tiktoken's `encode`, with its byte-pair merge replaced by one that is
 * O(n log n) in the length of a piece instead of O(n^2) (n^2 string keys built per piece, in fact).
 *
 * Why not the library's own: js-tiktoken (and gpt-tokenizer, and tiktoken's WASM build) merge a piece by scanning
 * every adjacent pair for the lowest rank, merging it, and scanning again. A piece is whatever the split regex keeps
 * together: a long word, a pasted blob, a run of one character, CJK prose without punctuation. `'x'.repeat(40000)`
 * took 246 s; counting is synchronous, so one such message froze its whole instance (issue 12).
 *
 * What is the same, exactly: the pieces (the encoding's own split regex, `pat_str`, with the flags the library uses,
 * run on the same segments between allowed special tokens), the whole-piece shortcut (a piece that is itself a token
 * is that token, even where merging would not reach it), and the merge rule: repeatedly merge the adjacent pair whose
 * concatenated bytes have the lowest rank; among equal ranks, the leftmost. So the ids are the library's, for every
 * input; the property tests compare them on generated and real text for both encodings.
 *
 * How: the parts of a piece are a doubly linked list over byte positions (typed arrays), each part a token. The rank
 * of every adjacent pair sits in a binary heap (a Float64Array of `rank * 2^32 + position`: lowest rank first, then
 * leftmost); merging a pair changes only its two neighbouring pairs, which are pushed anew, and entries of pairs that
 * no longer exist are skipped when they surface (lazy invalidation: a pair is current when the rank recorded for its
 * position is still its rank; the bytes a position pairs only ever grow, and ranks are distinct per byte string).
 * Pair ranks are looked up by the two parts' token ids in an open-addressing table, filled on demand from the
 * library's string-keyed map, so a merge builds no string once its pair has been seen. Pieces of a few bytes use a
 * plain scan over the same numeric ranks (faster than a heap that small); both follow the same rule.
 *
 * Where the library's internals are relied on (its `rankMap` and `textMap`), tiktokenTokenizer.ts checks they are
 * there; if the tables are not what this code needs (a byte without a rank, ranks beyond 2^21, a rank repeated),
 * `createBytePairEncoder` returns undefined and the library's own encode is used.
 */

/** The lookups the merge needs, as js-tiktoken keeps them: bytes joined by ',' -> rank, and rank -> bytes. */
export interface RankTables {
  readonly rankMap: ReadonlyMap<string, number>;
  readonly textMap: ReadonlyMap<number, Uint8Array>;
}

export interface BytePairEncoder {
  /** The ids of `text`; special-token strings are ordinary text unless listed in `allowedSpecial`. */
  encode(text: string, allowedSpecial?: ReadonlySet<string>): number[];
  /** What the encoder did so far (tests and benchmarks read it). */
  readonly stats: BytePairStats;
}

export interface BytePairStats {
  /** Pieces merged with the heap (pieces longer than SCAN_MAX_BYTES that are not a token themselves). */
  heapPieces: number;
  /** Pieces merged by scanning (short pieces that are not a token themselves). */
  scanPieces: number;
}

/** Pieces up to this many bytes are merged by scanning their pairs, longer ones with the heap (measured faster). */
export const SCAN_MAX_BYTES = 16;

/** Bytes of piece whose working arrays are kept between calls (a few hundred KB). */
const KEPT_SCRATCH_BYTES = 8192;

/** Pieces this short are looked up whole without first asking how long the longest token is. */
const SURELY_TOKEN_BYTES = 64;

/** Positions take the low 32 bits of a heap key, ranks the bits above: 21 of them keep the key an exact double. */
const POSITION_FACTOR = 2 ** 32;
const MAX_RANK = 2 ** 21;
const NO_RANK = -1;

const DECIMALS: readonly string[] = Array.from({ length: 256 }, (_, byte) => String(byte));

/**
 * The encoder for one encoding, or undefined if its tables cannot be merged this way (then use the library's).
 * `pattern` is the encoding's `pat_str`; `specialTokens` the library's `specialTokens` (their order decides which
 * of two special tokens starting at the same place is found, as in the library).
 */
export function createBytePairEncoder(
  tables: RankTables,
  pattern: string,
  specialTokens: Readonly<Record<string, number>>,
): BytePairEncoder | undefined {
  const byteRanks = new Int32Array(256);
  for (let byte = 0; byte < 256; byte++) {
    const rank = tables.rankMap.get(DECIMALS[byte]!);
    if (rank === undefined) return undefined;
    byteRanks[byte] = rank;
  }
  // textMap is keyed by rank: as many entries as rankMap means no rank is shared by two byte strings.
  if (tables.rankMap.size !== tables.textMap.size) return undefined;
  for (const rank of tables.textMap.keys()) {
    if (!Number.isInteger(rank) || rank < 0 || rank >= MAX_RANK) return undefined;
  }
  return new HeapBytePairEncoder(tables, byteRanks, pattern, specialTokens);
}

class HeapBytePairEncoder implements BytePairEncoder {
  readonly stats: BytePairStats = { heapPieces: 0, scanPieces: 0 };
  private readonly pieces: RegExp;
  private readonly specialPattern: RegExp | undefined;
  private readonly pairs: PairRanks;
  private maxTokenBytes = -1;
  /** Kept between pieces up to this size; a longer piece gets arrays of its own, freed after it (~40 bytes a byte). */
  private readonly scratch = new Scratch(KEPT_SCRATCH_BYTES);

  constructor(
    private readonly tables: RankTables,
    private readonly byteRanks: Int32Array,
    pattern: string,
    private readonly specialTokens: Readonly<Record<string, number>>,
  ) {
    this.pieces = new RegExp(pattern, 'ug');
    const specials = Object.keys(specialTokens);
    this.specialPattern = specials.length > 0 ? new RegExp(specials.map(escapeRegex).join('|'), 'g') : undefined;
    this.pairs = new PairRanks(tables);
  }

  encode(text: string, allowedSpecial?: ReadonlySet<string>): number[] {
    const ids: number[] = [];
    if (!allowedSpecial || allowedSpecial.size === 0 || !this.specialPattern) {
      // No special token allowed: the library finds each one, skips it, and encodes the whole text as one segment.
      this.encodeSegment(text, ids);
      return ids;
    }
    // The library's loop: the next allowed special token ends the segment; a disallowed one is searched past.
    const special = this.specialPattern;
    let start = 0;
    for (;;) {
      let found: RegExpExecArray | null;
      let from = start;
      for (;;) {
        special.lastIndex = from;
        found = special.exec(text);
        if (found === null || allowedSpecial.has(found[0])) break;
        from = found.index + 1;
      }
      const end = found?.index ?? text.length;
      this.encodeSegment(text.substring(start, end), ids);
      if (found === null) return ids;
      ids.push(this.specialTokens[found[0]]!);
      start = found.index + found[0].length;
    }
  }

  /** Splits with the encoding's regex (as `String.prototype.matchAll` would) and encodes every piece. */
  private encodeSegment(segment: string, ids: number[]): void {
    const pieces = this.pieces;
    pieces.lastIndex = 0;
    for (let match = pieces.exec(segment); match !== null; match = pieces.exec(segment)) {
      const piece = match[0];
      if (piece.length === 0) {
        // Not produced by the encodings' patterns; matchAll would step one code point on, and the library
        // encodes an empty piece to nothing.
        pieces.lastIndex = advance(segment, pieces.lastIndex);
        continue;
      }
      this.encodePiece(piece, ids);
    }
  }

  private encodePiece(piece: string, ids: number[]): void {
    const needed = piece.length * 3;
    const scratch = needed > this.scratch.capacity ? new Scratch(needed) : this.scratch;
    const bytes = scratch.bytes;
    const length = utf8Encode(piece, bytes);
    if (length === 1) {
      ids.push(this.byteRanks[bytes[0]!]!);
      return;
    }
    // The whole-piece shortcut, as the library takes it: a piece that is a token is that token.
    if (length <= SURELY_TOKEN_BYTES || length <= this.longestToken()) {
      const rank = this.tables.rankMap.get(byteKey(bytes, length));
      if (rank !== undefined) {
        ids.push(rank);
        return;
      }
    }
    if (length <= SCAN_MAX_BYTES) {
      this.stats.scanPieces++;
      this.scanMerge(length, scratch, ids);
    } else {
      this.stats.heapPieces++;
      this.heapMerge(length, scratch, ids);
    }
  }

  /** The longest token's byte length: a longer piece cannot be one (computed once, on the first long piece). */
  private longestToken(): number {
    if (this.maxTokenBytes < 0) {
      let longest = 0;
      for (const bytes of this.tables.textMap.values()) if (bytes.length > longest) longest = bytes.length;
      this.maxTokenBytes = longest;
    }
    return this.maxTokenBytes;
  }

  /**
   * The library's own loop over numeric ranks: scan every pair for the lowest rank (leftmost among equal, by the
   * strict comparison), merge it, update the two pairs beside it. Quadratic, so only for pieces of a few bytes.
   */
  private scanMerge(length: number, scratch: Scratch, ids: number[]): void {
    const { bytes, tokens, pairRanks } = scratch;
    const byteRanks = this.byteRanks;
    const pairs = this.pairs;
    for (let index = 0; index < length; index++) tokens[index] = byteRanks[bytes[index]!]!;
    for (let index = 0; index < length - 1; index++) pairRanks[index] = pairs.rank(tokens[index]!, tokens[index + 1]!);
    let parts = length;
    while (parts > 1) {
      let best = -1;
      let bestRank = MAX_RANK;
      for (let index = 0; index < parts - 1; index++) {
        const rank = pairRanks[index]!;
        if (rank !== NO_RANK && rank < bestRank) {
          bestRank = rank;
          best = index;
        }
      }
      if (best < 0) break;
      tokens[best] = bestRank;
      tokens.copyWithin(best + 1, best + 2, parts);
      pairRanks.copyWithin(best + 1, best + 2, parts - 1);
      parts--;
      if (best < parts - 1) pairRanks[best] = pairs.rank(bestRank, tokens[best + 1]!);
      if (best > 0) pairRanks[best - 1] = pairs.rank(tokens[best - 1]!, bestRank);
    }
    for (let index = 0; index < parts; index++) ids.push(tokens[index]!);
  }

  /** The same rule in O(n log n): a linked list of parts and a heap of pair ranks, stale entries skipped. */
  private heapMerge(length: number, scratch: Scratch, ids: number[]): void {
    const { bytes, tokens, pairRanks, next, prev } = scratch;
    const heap = scratch.heap;
    const byteRanks = this.byteRanks;
    const pairs = this.pairs;
    for (let index = 0; index < length; index++) {
      tokens[index] = byteRanks[bytes[index]!]!;
      next[index] = index + 1;
      prev[index] = index - 1;
    }
    heap.clear();
    for (let index = 0; index < length - 1; index++) {
      const rank = pairs.rank(tokens[index]!, tokens[index + 1]!);
      pairRanks[index] = rank;
      if (rank !== NO_RANK) heap.append(rank * POSITION_FACTOR + index);
    }
    pairRanks[length - 1] = NO_RANK;
    heap.heapify();

    while (heap.size > 0) {
      const key = heap.pop();
      const rank = Math.floor(key / POSITION_FACTOR);
      const start = key - rank * POSITION_FACTOR;
      if (pairRanks[start] !== rank) continue; // this pair was changed by an earlier merge
      // Merge the part at `start` with the next one; the merged part is the token `rank`.
      const absorbed = next[start]!;
      const after = next[absorbed]!;
      tokens[start] = rank;
      pairRanks[absorbed] = NO_RANK;
      next[start] = after;
      if (after < length) {
        prev[after] = start;
        const right = pairs.rank(rank, tokens[after]!);
        pairRanks[start] = right;
        if (right !== NO_RANK) heap.push(right * POSITION_FACTOR + start);
      } else {
        pairRanks[start] = NO_RANK;
      }
      const before = prev[start]!;
      if (before >= 0) {
        const left = pairs.rank(tokens[before]!, rank);
        pairRanks[before] = left;
        if (left !== NO_RANK) heap.push(left * POSITION_FACTOR + before);
      }
    }
    for (let index = 0; index < length; index = next[index]!) ids.push(tokens[index]!);
  }
}

/** Working arrays for one piece, reused across pieces and calls (encoding is synchronous). */
class Scratch {
  readonly bytes: Uint8Array;
  readonly tokens: Int32Array;
  readonly pairRanks: Int32Array;
  readonly next: Int32Array;
  readonly prev: Int32Array;
  readonly heap: KeyHeap;

  constructor(readonly capacity: number) {
    this.bytes = new Uint8Array(capacity);
    this.tokens = new Int32Array(capacity);
    this.pairRanks = new Int32Array(capacity);
    this.next = new Int32Array(capacity);
    this.prev = new Int32Array(capacity);
    // n - 1 pairs to start with, at most two pushes per merge and n - 1 merges.
    this.heap = new KeyHeap(capacity * 3);
  }
}

/** A 4-ary min-heap of doubles in a Float64Array (half the levels of a binary heap: fewer cache misses). */
class KeyHeap {
  private readonly keys: Float64Array;
  size = 0;

  constructor(capacity: number) {
    this.keys = new Float64Array(Math.max(capacity, 1));
  }

  clear(): void {
    this.size = 0;
  }

  /** Adds without ordering: call heapify before popping. */
  append(key: number): void {
    this.keys[this.size++] = key;
  }

  heapify(): void {
    for (let index = (this.size - 2) >> 2; index >= 0; index--) this.siftDown(index, this.keys[index]!);
  }

  push(key: number): void {
    const keys = this.keys;
    let index = this.size++;
    while (index > 0) {
      const parent = (index - 1) >> 2;
      const parentKey = keys[parent]!;
      if (parentKey <= key) break;
      keys[index] = parentKey;
      index = parent;
    }
    keys[index] = key;
  }

  pop(): number {
    const keys = this.keys;
    const top = keys[0]!;
    const last = keys[--this.size]!;
    if (this.size > 0) this.siftDown(0, last);
    return top;
  }

  private siftDown(from: number, key: number): void {
    const keys = this.keys;
    const size = this.size;
    let index = from;
    for (;;) {
      const first = 4 * index + 1;
      if (first >= size) break;
      let child = first;
      let childKey = keys[first]!;
      const end = first + 4 < size ? first + 4 : size;
      for (let other = first + 1; other < end; other++) {
        const otherKey = keys[other]!;
        if (otherKey < childKey) {
          child = other;
          childKey = otherKey;
        }
      }
      if (childKey >= key) break;
      keys[index] = childKey;
      index = child;
    }
    keys[index] = key;
  }
}

/**
 * The rank of the token two adjacent tokens make, by their ids: an open-addressing table over typed arrays, filled
 * on demand from the library's string-keyed map (misses are remembered too). Bounded: emptied when full.
 */
class PairRanks {
  private static readonly INITIAL_SLOTS = 1 << 16;
  private static readonly MAX_SLOTS = 1 << 19; // 6 MB
  private lefts: Int32Array;
  private rights: Int32Array;
  private values: Int32Array;
  private mask: number;
  private used = 0;
  private readonly tokenKeys: (string | undefined)[] = [];

  constructor(private readonly tables: RankTables) {
    this.lefts = new Int32Array(PairRanks.INITIAL_SLOTS).fill(-1);
    this.rights = new Int32Array(PairRanks.INITIAL_SLOTS);
    this.values = new Int32Array(PairRanks.INITIAL_SLOTS);
    this.mask = PairRanks.INITIAL_SLOTS - 1;
  }

  /** The rank of token `left`'s bytes followed by token `right`'s, or NO_RANK if that is not a token. */
  rank(left: number, right: number): number {
    const lefts = this.lefts;
    let slot = pairHash(left, right) & this.mask;
    for (;;) {
      const stored = lefts[slot]!;
      if (stored === left && this.rights[slot] === right) return this.values[slot]!;
      if (stored === -1) break;
      slot = (slot + 1) & this.mask;
    }
    const rank = this.tables.rankMap.get(`${this.keyOf(left)},${this.keyOf(right)}`) ?? NO_RANK;
    this.insert(slot, left, right, rank);
    return rank;
  }

  private insert(slot: number, left: number, right: number, rank: number): void {
    if ((this.used + 1) * 2 > this.lefts.length) {
      this.grow();
      slot = this.freeSlot(left, right);
    }
    this.lefts[slot] = left;
    this.rights[slot] = right;
    this.values[slot] = rank;
    this.used++;
  }

  /** Doubles the table, or empties it at its largest size (an adversary cannot make it grow without bound). */
  private grow(): void {
    const { lefts, rights, values } = this;
    const slots = lefts.length >= PairRanks.MAX_SLOTS ? lefts.length : lefts.length * 2;
    this.lefts = new Int32Array(slots).fill(-1);
    this.rights = new Int32Array(slots);
    this.values = new Int32Array(slots);
    this.mask = slots - 1;
    this.used = 0;
    if (slots === lefts.length) return;
    for (let slot = 0; slot < lefts.length; slot++) {
      const left = lefts[slot]!;
      if (left === -1) continue;
      const free = this.freeSlot(left, rights[slot]!);
      this.lefts[free] = left;
      this.rights[free] = rights[slot]!;
      this.values[free] = values[slot]!;
      this.used++;
    }
  }

  private freeSlot(left: number, right: number): number {
    let slot = pairHash(left, right) & this.mask;
    while (this.lefts[slot] !== -1) slot = (slot + 1) & this.mask;
    return slot;
  }

  /** A token's key in the library's map: its bytes in decimal, joined by ','. */
  private keyOf(token: number): string {
    let key = this.tokenKeys[token];
    if (key === undefined) {
      key = this.tables.textMap.get(token)!.join(',');
      this.tokenKeys[token] = key;
    }
    return key;
  }
}

function pairHash(left: number, right: number): number {
  let hash = Math.imul(left, 0x9e3779b1) ^ Math.imul(right, 0x85ebca77);
  hash ^= hash >>> 15;
  return hash;
}

/** The library's key for bytes[0, length): the bytes in decimal, joined by ','. */
function byteKey(bytes: Uint8Array, length: number): string {
  let key = DECIMALS[bytes[0]!]!;
  for (let index = 1; index < length; index++) key += ',' + DECIMALS[bytes[index]!]!;
  return key;
}

/** UTF-8 of `text` into `out` (room for 3 bytes per code unit), as TextEncoder writes it: a lone surrogate is U+FFFD. */
export function utf8Encode(text: string, out: Uint8Array): number {
  let at = 0;
  const length = text.length;
  for (let index = 0; index < length; index++) {
    let code = text.charCodeAt(index);
    if (code < 0x80) {
      out[at++] = code;
      continue;
    }
    if (code < 0x800) {
      out[at++] = 0xc0 | (code >> 6);
      out[at++] = 0x80 | (code & 0x3f);
      continue;
    }
    if (code >= 0xd800 && code <= 0xdfff) {
      const low = index + 1 < length ? text.charCodeAt(index + 1) : 0;
      if (code <= 0xdbff && low >= 0xdc00 && low <= 0xdfff) {
        code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
        index++;
        out[at++] = 0xf0 | (code >> 18);
        out[at++] = 0x80 | ((code >> 12) & 0x3f);
        out[at++] = 0x80 | ((code >> 6) & 0x3f);
        out[at++] = 0x80 | (code & 0x3f);
        continue;
      }
      code = 0xfffd;
    }
    out[at++] = 0xe0 | (code >> 12);
    out[at++] = 0x80 | ((code >> 6) & 0x3f);
    out[at++] = 0x80 | (code & 0x3f);
  }
  return at;
}

/** The index after the code point at `index` (AdvanceStringIndex with the unicode flag). */
function advance(text: string, index: number): number {
  if (index + 1 >= text.length) return index + 1;
  const code = text.charCodeAt(index);
  if (code < 0xd800 || code > 0xdbff) return index + 1;
  const low = text.charCodeAt(index + 1);
  return low >= 0xdc00 && low <= 0xdfff ? index + 2 : index + 1;
}

function escapeRegex(text: string): string {
  return text.replace(/[\\^$*+?.()|[\]{}]/g, '\\$&');
}

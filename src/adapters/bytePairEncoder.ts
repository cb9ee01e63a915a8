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
 * How: the parts of a piece are a doubly linked list over byte positions (packed in an Int32Array), each part a
 * token. Pairs wait in a bucket queue by rank (ranks are small integers): ranks are taken lowest first, and a rank's
 * positions are merged left to right; merging a pair changes only its two neighbouring pairs, which are queued anew
 * (a new pair ranked at or below the rank being merged, which tables allow but real text rarely makes, goes to a small
 * heap of `rank * 2^32 + position` keys that is emptied first). Entries of pairs that no longer exist are skipped
 * when they surface (lazy invalidation: a pair is current when the rank recorded for its position is still its rank;
 * the bytes a position pairs only ever grow, and ranks are distinct per byte string). Pair ranks are looked up by the
 * two parts' token ids in an open-addressing table, filled on demand from the library's string-keyed map, so a merge
 * builds no string once its pair has been seen. A character of several bytes starts as the tokens it merges into
 * alone when no pair across its edges can outrank those merges (see initPartsByCharacter). Pieces of a few bytes use
 * a plain scan over the same numeric ranks (faster at that size); all follow the same rule. What made it fast is
 * mostly memory: eight bytes a position, a rank's positions loaded a chunk ahead, working arrays kept between calls
 * (docs/tokens.md has the figures).
 *
 * Where the library's internals are relied on (its `rankMap` and `textMap`), tiktokenTokenizer.ts checks they are
 * there; if the tables are not what this code needs (a byte without a rank, ranks of 2^21 - 1 or more, a rank
 * repeated, a token longer than 1,023 bytes),
 * `createBytePairEncoder` returns undefined and the library's own encode is used.
 */
import { NOT_A_TOKEN, shortKey, type TokenIndex } from './tokenIndex';

export interface BytePairEncoder {
  /** The ids of `text`; special-token strings are ordinary text unless listed in `allowedSpecial`. */
  encode(text: string, allowedSpecial?: ReadonlySet<string>): number[];
  /** How many ids encode(text) gives, without making the array. */
  count(text: string): number;
  /** What the encoder did so far (tests and benchmarks read it). */
  readonly stats: BytePairStats;
}

export interface BytePairStats {
  /** Pieces merged with the bucket queue (pieces longer than SCAN_MAX_BYTES that are not a token themselves). */
  queuePieces: number;
  /** Pieces merged by scanning (short pieces that are not a token themselves). */
  scanPieces: number;
}

/** Pieces up to this many bytes are merged by scanning their pairs, longer ones with the queue (measured faster). */
export const SCAN_MAX_BYTES = 16;

/** Pieces longer than this many UTF-16 code units are encoded to UTF-8 by TextEncoder (below, by utf8Encode). */
const NATIVE_UTF8_UNITS = 64;
const utf8 = new TextEncoder();

/** Bytes of piece whose working arrays are kept between calls (see Scratch). */
const KEPT_SCRATCH_BYTES = 320 * 1024;

/** Positions of one rank filtered (and so loaded) at a time before they are merged. */
const FILTER_CHUNK = 256;

/** Positions take the low 32 bits of a low-heap key, ranks the bits above: 21 of them keep the key an exact double. */
const POSITION_FACTOR = 2 ** 32;
const MAX_RANK = 2 ** 21 - 1;
/** A part packs a token (or a pair rank + 1, below MAX_RANK + 1 = 2^21) and a byte length (below 2^10) in 31 bits. */
const PART_BITS = 21;
const PART_MASK = 2 ** PART_BITS - 1;
/** Longest token the packing allows (the encodings' longest is 128 bytes). */
const MAX_TOKEN_BYTES = 2 ** (31 - PART_BITS) - 1;
const NO_RANK = -1;
const UNKNOWN_RANK = -2;

/**
 * The encoder for one encoding, or undefined if its tables cannot be merged this way (then use the library's).
 * `pattern` is the encoding's `pat_str`; `specialTokens` the library's `specialTokens` (their order decides which
 * of two special tokens starting at the same place is found, as in the library).
 */
export function createBytePairEncoder(
  index: TokenIndex,
  pattern: string,
  specialTokens: Readonly<Record<string, number>>,
): BytePairEncoder | undefined {
  const byteRanks = new Int32Array(256);
  const byte = new Uint8Array(1);
  for (let value = 0; value < 256; value++) {
    byte[0] = value;
    const rank = index.rankOf(byte, 0, 1);
    if (rank === NOT_A_TOKEN) return undefined;
    byteRanks[value] = rank;
  }
  if (index.rankCount > MAX_RANK || index.longestToken > MAX_TOKEN_BYTES) return undefined;
  return new QueueBytePairEncoder(index, byteRanks, pattern, specialTokens);
}

class QueueBytePairEncoder implements BytePairEncoder {
  readonly stats: BytePairStats = { queuePieces: 0, scanPieces: 0 };
  private readonly pieces: RegExp;
  private readonly specialPattern: RegExp | undefined;
  private readonly pairs: PairRanks;
  private readonly queue: RankBuckets;
  private readonly scratch = new Scratch();
  /** The ids of the text being encoded (encoding is synchronous). */
  private readonly ids = new TokenSink();
  /** Characters of several bytes met so far: the tokens each merges into alone (see initPartsByCharacter). */
  private readonly characters = new Characters();
  private edges: CharacterEdges | undefined;
  /** The rank of every pair of two bytes, by (first << 8 | second), looked up on first use. */
  private readonly bytePairs = new Int32Array(256 * 256).fill(UNKNOWN_RANK);

  constructor(
    private readonly index: TokenIndex,
    private readonly byteRanks: Int32Array,
    pattern: string,
    private readonly specialTokens: Readonly<Record<string, number>>,
  ) {
    this.pieces = new RegExp(pattern, 'ug');
    const specials = Object.keys(specialTokens);
    this.specialPattern = specials.length > 0 ? new RegExp(specials.map(escapeRegex).join('|'), 'g') : undefined;
    this.pairs = new PairRanks(index);
    this.queue = new RankBuckets(index.rankCount);
  }

  encode(text: string, allowedSpecial?: ReadonlySet<string>): number[] {
    const ids = this.ids;
    ids.length = 0;
    this.encodeInto(text, allowedSpecial, ids);
    return Array.from(ids.values.subarray(0, ids.length));
  }

  count(text: string): number {
    const ids = this.ids;
    ids.length = 0;
    ids.keep = false;
    try {
      this.encodeSegment(text, ids);
    } finally {
      ids.keep = true;
    }
    return ids.length;
  }

  private encodeInto(text: string, allowedSpecial: ReadonlySet<string> | undefined, ids: TokenSink): void {
    if (!allowedSpecial || allowedSpecial.size === 0 || !this.specialPattern) {
      // No special token allowed: the library finds each one, skips it, and encodes the whole text as one segment.
      this.encodeSegment(text, ids);
      return;
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
      if (found === null) return;
      ids.push(this.specialTokens[found[0]]!);
      start = found.index + found[0].length;
    }
  }

  /** Splits with the encoding's regex (as `String.prototype.matchAll` would) and encodes every piece. */
  private encodeSegment(segment: string, ids: TokenSink): void {
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

  private encodePiece(piece: string, ids: TokenSink): void {
    const scratch = this.scratch.forUnits(piece.length);
    const bytes = scratch.bytes;
    // The same bytes either way (a lone surrogate is U+FFFD); the native encoder is faster once a piece is long.
    const length = piece.length > NATIVE_UTF8_UNITS ? utf8.encodeInto(piece, bytes).written : utf8Encode(piece, bytes);
    if (length === 1) {
      ids.push(this.byteRanks[bytes[0]!]!);
      return;
    }
    // The whole-piece shortcut, as the library takes it: a piece that is a token is that token.
    if (length <= this.index.longestToken) {
      const rank = this.index.rankOf(bytes, 0, length);
      if (rank !== NOT_A_TOKEN) {
        ids.push(rank);
        return;
      }
    }
    if (length <= SCAN_MAX_BYTES) {
      this.stats.scanPieces++;
      this.scanMerge(length, scratch, ids);
    } else {
      this.stats.queuePieces++;
      this.queueMerge(length, piece.length, scratch, ids);
    }
  }

  /**
   * The library's own loop over numeric ranks: scan every pair for the lowest rank (leftmost among equal, by the
   * strict comparison), merge it, update the two pairs beside it. Quadratic, so only for pieces of a few bytes.
   */
  private scanMerge(length: number, scratch: Scratch, ids: TokenSink): void {
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

  /**
   * The same rule in O(n log n), pair ranks in a bucket queue: a linked list of parts, and for every rank the
   * positions of the pairs that had it when they were formed. Ranks are taken lowest first; a rank's positions are
   * sorted and merged left to right. A merge makes two new pairs: one of a higher rank goes to its bucket; one of a
   * rank not above the current (rare, but tables allow it) goes to a small heap of `rank * 2^32 + position` keys
   * that is always emptied before the next position of the current rank. Entries of pairs that have since changed
   * are skipped when they surface (lazy invalidation, as in the library's terms: a pair is current when the rank
   * recorded for its position is still its rank; the bytes a position pairs only ever grow, and ranks are distinct
   * per byte string, so a rank never comes back to a position).
   */
  private queueMerge(length: number, units: number, scratch: Scratch, ids: TokenSink): void {
    // Each step is a function of its own: code after a long loop that has not run yet when the loop is compiled
    // mid-run (on-stack replacement) has no type feedback, and reaching it threw the compiled code away, mid-piece.
    scratch.forMerge(length);
    const pairs = length === units ? this.initParts(length, scratch) : this.initPartsByCharacter(length, scratch);
    this.queue.fill(scratch, pairs);
    scratch.low.clear();
    this.mergeQueued(length, scratch);
    if (ids.keep) collectParts(scratch.parts, length, ids);
    else ids.length += countParts(scratch.parts, length);
  }

  /**
   * Two numbers per byte position, read while the position starts a part (see PART_BITS): parts[2i] is the part's
   * token and byte length, parts[2i + 1] the rank + 1 of the pair it starts (0: none, or absorbed) and the byte
   * length of the part before it (0: none). The next part starts at i + length, the previous one at i - length.
   * Eight bytes a position keep a part and its neighbours in one or two cache lines. To start, every byte is a part.
   * The pairs that have a rank are also listed in order (scratch.listedStarts, scratch.listedRanks), for the queue's fill;
   * returns how many.
   */
  private initParts(length: number, scratch: Scratch): number {
    const { bytes, parts, listedStarts, listedRanks } = scratch;
    const byteRanks = this.byteRanks;
    const bytePairs = this.bytePairs;
    let listed = 0;
    let previous = bytes[0]!;
    parts[0] = byteRanks[previous]! | (1 << PART_BITS);
    parts[1] = 0;
    for (let index = 1; index < length; index++) {
      const byte = bytes[index]!;
      parts[index << 1] = byteRanks[byte]! | (1 << PART_BITS);
      parts[(index << 1) + 1] = 1 << PART_BITS; // no pair yet; the part before is one byte long
      const key = (previous << 8) | byte;
      let rank = bytePairs[key]!;
      if (rank === UNKNOWN_RANK) {
        rank = this.pairs.rank(byteRanks[previous]!, byteRanks[byte]!);
        bytePairs[key] = rank;
      }
      parts[((index - 1) << 1) + 1]! |= rank + 1;
      if (rank !== NO_RANK) {
        listedStarts[listed] = index - 1;
        listedRanks[listed++] = rank;
      }
      previous = byte;
    }
    parts[length << 1] = 0; // the end: read as a neighbour by the look-ahead, never merged
    return listed;
  }

  /**
   * initParts for a piece with characters of several bytes: such a character starts as the tokens its own bytes merge
   * into (merged alone, once per character, remembered) instead of as bytes, when that is sure to give the same ids.
   * It is when every pair that could ever be merged across the character's edges ranks above every merge inside it
   * (`inner`, the highest): then the rule merges nothing across an edge before the character is done, and the
   * character's own merges happen in the order they would alone; and a pair across an edge that starting whole makes
   * sooner than the rule would have made it still ranks above whatever the rule merged meanwhile, so it merges no
   * sooner. A pair across the edge with the next character is the character's last part at the time (the last part of
   * one of the states it passes through alone, all of them known) followed by a part that starts with the next
   * character's first byte: so it ranks at least as high as the lowest-ranked token that begins with such a last part
   * and that byte. Across the edge with the character before: a part that ends with that character's last byte, then
   * the first part of one of the states, so at least the lowest-ranked token that ends with that byte and such a first
   * part. Both are looked up in tables made once from the tokens (TokenIndex.characterEdgeRanks) and remembered per
   * character and neighbouring byte. Other characters start as bytes, as in initParts. For CJK prose almost every
   * character starts as one token instead of three bytes: two thirds fewer merges.
   */
  private initPartsByCharacter(length: number, scratch: Scratch): number {
    const { bytes, parts, listedStarts, listedRanks } = scratch;
    let listed = 0;
    const byteRanks = this.byteRanks;
    const bytePairs = this.bytePairs;
    const characters = this.characters;
    const edges = this.characterEdges();
    let previousToken = -1;
    let previousLength = 0;
    let previousStart = -1;
    let at = 0;
    while (at < length) {
      const lead = bytes[at]!;
      const width = lead < 0xc0 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4;
      const character = width === 1 ? -1 : characters.of(bytes, at, width, this.pairs, byteRanks);
      const inner = character < 0 ? NO_RANK : characters.highestMerge[character]!;
      const whole =
        inner !== NO_RANK &&
        (at === 0 || characters.leftEdgeAbove(character, bytes, at, edges)) &&
        (at + width === length || characters.rightEdgeAbove(character, bytes, at + width, edges));
      const count = whole ? characters.tokenCount[character]! : width;
      for (let part = 0; part < count; part++) {
        let token: number;
        let partLength: number;
        if (whole) {
          token = characters.tokens[character * 4 + part]!;
          partLength = characters.lengths[character * 4 + part]!;
        } else {
          token = byteRanks[bytes[at]!]!;
          partLength = 1;
        }
        parts[at << 1] = token | (partLength << PART_BITS);
        parts[(at << 1) + 1] = previousLength << PART_BITS; // its pair's rank is added with the next part
        if (previousStart >= 0) {
          let rank: number;
          if (previousLength === 1 && partLength === 1) {
            const key = (bytes[previousStart]! << 8) | bytes[at]!;
            rank = bytePairs[key]!;
            if (rank === UNKNOWN_RANK) {
              rank = this.pairs.rank(previousToken, token);
              bytePairs[key] = rank;
            }
          } else {
            rank = this.pairs.rank(previousToken, token);
          }
          parts[(previousStart << 1) + 1]! |= rank + 1;
          if (rank !== NO_RANK) {
            listedStarts[listed] = previousStart;
            listedRanks[listed++] = rank;
          }
        }
        previousToken = token;
        previousLength = partLength;
        previousStart = at;
        at += partLength;
      }
    }
    parts[length << 1] = 0; // the end: read as a neighbour by the look-ahead, never merged
    return listed;
  }

  /** The tables initPartsByCharacter asks (see TokenIndex.characterEdgeRanks); made on first use. */
  private characterEdges(): CharacterEdges {
    this.edges ??= this.index.characterEdgeRanks();
    return this.edges;
  }

  private mergeQueued(length: number, scratch: Scratch): void {
    const { parts, order, low } = scratch;
    const queue = this.queue;
    const pairs = this.pairs;
    let touched = 0;
    for (let current = queue.nextRank(); current !== NO_RANK; current = queue.nextRank()) {
      const count = queue.take(current, order);
      const currentKey = current * POSITION_FACTOR;
      const currentField = current + 1;
      // order[taken, ready): positions still to merge that were current when filtered; order[scanned, count): not yet
      // filtered. Filtering a chunk ahead loads its parts and their neighbours in one sweep of independent loads
      // (they overlap), so the merges that follow find them in cache; dropping stale entries there is safe because
      // a rank never comes back to a position.
      let taken = 0;
      let ready = 0;
      let scanned = 0;
      for (;;) {
        while (taken === ready && scanned < count) {
          taken = ready = 0;
          const end = Math.min(count, scanned + FILTER_CHUNK);
          for (; scanned < end; scanned++) {
            const position = order[scanned]!;
            const pair = parts[(position << 1) + 1]!;
            if ((pair & PART_MASK) !== currentField) continue;
            order[ready++] = position;
            const absorbed = position + (parts[position << 1]! >>> PART_BITS);
            const beforePart = parts[(position - (pair >>> PART_BITS)) << 1]!;
            const afterPart = parts[(absorbed + (parts[absorbed << 1]! >>> PART_BITS)) << 1]!;
            touched ^= pairs.touch(beforePart & PART_MASK, current) ^ pairs.touch(current, afterPart & PART_MASK);
          }
        }
        let rank: number;
        let start: number;
        if (low.size > 0 && (taken === ready || low.peek() < currentKey + order[taken]!)) {
          const key = low.pop();
          rank = Math.floor(key / POSITION_FACTOR);
          start = key - rank * POSITION_FACTOR;
        } else if (taken < ready) {
          rank = current;
          start = order[taken++]!;
        } else {
          break;
        }
        const pair = parts[(start << 1) + 1]!;
        if ((pair & PART_MASK) !== rank + 1) continue; // this pair was changed by an earlier merge
        // Merge the part at `start` with the next one; the merged part is the token `rank`.
        const absorbed = start + (parts[start << 1]! >>> PART_BITS);
        const after = absorbed + (parts[absorbed << 1]! >>> PART_BITS);
        const merged = after - start;
        parts[start << 1] = rank | (merged << PART_BITS);
        parts[(absorbed << 1) + 1] = 0;
        const beforeLength = pair >>> PART_BITS;
        let startPair = beforeLength << PART_BITS; // NO_RANK + 1 = 0
        if (after < length) {
          const right = pairs.rank(rank, parts[after << 1]! & PART_MASK);
          startPair |= right + 1;
          parts[(after << 1) + 1] = (parts[(after << 1) + 1]! & PART_MASK) | (merged << PART_BITS);
          if (right > current) queue.push(right, start);
          else if (right !== NO_RANK) low.push(right * POSITION_FACTOR + start);
        }
        parts[(start << 1) + 1] = startPair;
        if (beforeLength > 0) {
          const before = start - beforeLength;
          const left = pairs.rank(parts[before << 1]! & PART_MASK, rank);
          const beforePair = (before << 1) + 1;
          parts[beforePair] = (parts[beforePair]! & ~PART_MASK) | (left + 1);
          if (left > current) queue.push(left, before);
          else if (left !== NO_RANK) low.push(left * POSITION_FACTOR + before);
        }
      }
    }
    scratch.touched = touched;
  }
}

/** The lowest rank of a token beginning (`starting`) or ending (`ending`) with a short byte string, by shortKey. */
type CharacterEdges = ReturnType<TokenIndex['characterEdgeRanks']>;

/** Above every rank: no token. */
const NO_TOKEN_RANK = 2 ** 30;

/**
 * Characters of two to four bytes, each with the tokens its bytes merge into when merged alone (at most four), the
 * highest rank among those merges (NO_RANK: none), and the lengths its first and last parts take on the way (a bit
 * per length). Found by code point: an array for the Basic Multilingual Plane, a map above it; bounded (forgotten when
 * full, as the pair table is), as are the answers of the edge checks, remembered per character and neighbouring byte
 * in two bits each (128 bytes a character).
 */
class Characters {
  private static readonly MAX = 1 << 16;
  private readonly basic = new Int32Array(0x10000).fill(-1);
  private readonly astral = new IntTable();
  private count = 0;
  /** Per character, 512 cells of two bits (0: not known, 1: above, 2: not): the left edge's 256 bytes, the right's. */
  private edgeChecks = new Uint8Array(128 * 1024);
  tokens = new Int32Array(4 * 1024);
  lengths = new Uint8Array(4 * 1024);
  tokenCount = new Uint8Array(1024);
  highestMerge = new Int32Array(1024);
  /** Bit i - 1: the first part (firstLengths) or the last part (lastLengths) is i bytes long in some state. */
  firstLengths = new Uint8Array(1024);
  lastLengths = new Uint8Array(1024);

  /**
   * Whether every pair across the edge before the character starting at `at` ranks above the character's own merges
   * (leftBound > highestMerge), remembered per character and the byte before it.
   */
  leftEdgeAbove(character: number, bytes: Uint8Array, at: number, edges: CharacterEdges): boolean {
    const cell = character * 512 + bytes[at - 1]!;
    const shift = (cell & 3) << 1;
    const known = (this.edgeChecks[cell >> 2]! >> shift) & 3;
    if (known !== 0) return known === 1;
    const above = this.leftBound(character, bytes, at, edges) > this.highestMerge[character]!;
    this.edgeChecks[cell >> 2]! |= (above ? 1 : 2) << shift;
    return above;
  }

  /** The same for the edge after the character ending at `end` (rightBound), per character and the byte after it. */
  rightEdgeAbove(character: number, bytes: Uint8Array, end: number, edges: CharacterEdges): boolean {
    const cell = character * 512 + 256 + bytes[end]!;
    const shift = (cell & 3) << 1;
    const known = (this.edgeChecks[cell >> 2]! >> shift) & 3;
    if (known !== 0) return known === 1;
    const above = this.rightBound(character, bytes, end, edges) > this.highestMerge[character]!;
    this.edgeChecks[cell >> 2]! |= (above ? 1 : 2) << shift;
    return above;
  }

  /**
   * The lowest rank a pair across the edge before the character starting at `at` can have: a token ending with the
   * byte before it and one of the character's first parts.
   */
  private leftBound(character: number, bytes: Uint8Array, at: number, edges: CharacterEdges): number {
    let bound = NO_TOKEN_RANK;
    const lengths = this.firstLengths[character]!;
    for (let size = 1; size <= 4; size++) {
      if ((lengths & (1 << (size - 1))) === 0) continue;
      bound = Math.min(bound, edges.ending.get(shortKey(bytes, at - 1, size + 1)) ?? NO_TOKEN_RANK);
    }
    return bound;
  }

  /**
   * The lowest rank a pair across the edge after the character ending at `end` can have: a token beginning with one
   * of the character's last parts and the byte after it.
   */
  private rightBound(character: number, bytes: Uint8Array, end: number, edges: CharacterEdges): number {
    let bound = NO_TOKEN_RANK;
    const lengths = this.lastLengths[character]!;
    for (let size = 1; size <= 4; size++) {
      if ((lengths & (1 << (size - 1))) === 0) continue;
      bound = Math.min(bound, edges.starting.get(shortKey(bytes, end - size, size + 1)) ?? NO_TOKEN_RANK);
    }
    return bound;
  }

  /** The index of the character whose UTF-8 is bytes[at, at + width). */
  of(bytes: Uint8Array, at: number, width: number, pairs: PairRanks, byteRanks: Int32Array): number {
    let code = bytes[at]! & (0xff >> (width + 1));
    for (let index = 1; index < width; index++) code = (code << 6) | (bytes[at + index]! & 0x3f);
    const known = code < 0x10000 ? this.basic[code]! : this.astral.get(code);
    if (known >= 0) return known;
    return this.add(code, bytes, at, width, pairs, byteRanks);
  }

  private add(
    code: number,
    bytes: Uint8Array,
    at: number,
    width: number,
    pairs: PairRanks,
    byteRanks: Int32Array,
  ): number {
    if (this.count === Characters.MAX) {
      this.basic.fill(-1);
      this.astral.clear();
      this.edgeChecks.fill(0);
      this.count = 0;
    }
    if (this.count === this.tokenCount.length) this.grow();
    const index = this.count++;
    if (code < 0x10000) this.basic[code] = index;
    else this.astral.set(code, index);
    // The library's rule on the character alone: merge the lowest-ranked pair, the leftmost among equal ranks.
    const tokens = [0, 0, 0, 0];
    const lengths = [1, 1, 1, 1];
    for (let part = 0; part < width; part++) tokens[part] = byteRanks[bytes[at + part]!]!;
    let parts = width;
    let highest = NO_RANK;
    let firstLengths = 1;
    let lastLengths = 1;
    for (;;) {
      let best = -1;
      let bestRank = MAX_RANK;
      for (let part = 0; part < parts - 1; part++) {
        const rank = pairs.rank(tokens[part]!, tokens[part + 1]!);
        if (rank !== NO_RANK && rank < bestRank) {
          bestRank = rank;
          best = part;
        }
      }
      if (best < 0) break;
      if (bestRank > highest) highest = bestRank;
      tokens[best] = bestRank;
      lengths[best] = lengths[best]! + lengths[best + 1]!;
      tokens.splice(best + 1, 1);
      lengths.splice(best + 1, 1);
      parts--;
      firstLengths |= 1 << (lengths[0]! - 1);
      lastLengths |= 1 << (lengths[parts - 1]! - 1);
    }
    for (let part = 0; part < parts; part++) {
      this.tokens[index * 4 + part] = tokens[part]!;
      this.lengths[index * 4 + part] = lengths[part]!;
    }
    this.tokenCount[index] = parts;
    this.highestMerge[index] = highest;
    this.firstLengths[index] = firstLengths;
    this.lastLengths[index] = lastLengths;
    return index;
  }

  private grow(): void {
    const size = this.tokenCount.length * 2;
    const tokens = new Int32Array(size * 4);
    tokens.set(this.tokens);
    this.tokens = tokens;
    const lengths = new Uint8Array(size * 4);
    lengths.set(this.lengths);
    this.lengths = lengths;
    const tokenCount = new Uint8Array(size);
    tokenCount.set(this.tokenCount);
    this.tokenCount = tokenCount;
    const highestMerge = new Int32Array(size);
    highestMerge.set(this.highestMerge);
    this.highestMerge = highestMerge;
    const firstLengths = new Uint8Array(size);
    firstLengths.set(this.firstLengths);
    this.firstLengths = firstLengths;
    const lastLengths = new Uint8Array(size);
    lastLengths.set(this.lastLengths);
    this.lastLengths = lastLengths;
    const edgeChecks = new Uint8Array(size * 128);
    edgeChecks.set(this.edgeChecks);
    this.edgeChecks = edgeChecks;
  }
}

/** Ids as they are found, in a growable Int32Array (kept between calls, like the scratch). */
class TokenSink {
  values = new Int32Array(1024);
  length = 0;
  /** Whether the ids are kept (encode) or only counted (count: the long-piece merge then adds its count at once). */
  keep = true;

  push(id: number): void {
    if (this.length >= this.values.length) {
      if (!this.keep) {
        this.length++;
        return;
      }
      const grown = new Int32Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.length++] = id;
  }
}

/** The tokens of the parts left, in order. */
function collectParts(parts: Int32Array, length: number, ids: TokenSink): void {
  for (let index = 0; index < length; index += parts[index << 1]! >>> PART_BITS)
    ids.push(parts[index << 1]! & PART_MASK);
}

/** How many parts are left. */
function countParts(parts: Int32Array, length: number): number {
  let count = 0;
  for (let index = 0; index < length; index += parts[index << 1]! >>> PART_BITS) count++;
  return count;
}

/**
 * Working arrays, reused across pieces and calls (encoding is synchronous). They grow to the longest piece seen and
 * are kept up to KEPT_SCRATCH_BYTES of piece (~44 bytes of arrays per byte of piece: ~13 MB after a 100,000-character
 * CJK message, the default message limit); a longer piece gets arrays of its own, dropped after it. Allocating them
 * per long piece cost more than merging it: fresh pages, and full collections of a heap that holds the rank maps.
 * Exported for the queue's unit test only.
 */
export class Scratch {
  /** UTF-8 of the piece (3 bytes per UTF-16 code unit at most). */
  bytes = new Uint8Array(1024);
  /** The scan's tokens and pair ranks. */
  readonly tokens = new Int32Array(SCAN_MAX_BYTES);
  readonly pairRanks = new Int32Array(SCAN_MAX_BYTES);
  /** The queue merge's parts, two numbers per byte position (see queueMerge). */
  parts = new Int32Array(0);
  /** The bucket queue's blocks (see RankBuckets); grown when a piece needs more. */
  entries = new Int32Array(0);
  /** One rank's positions, in order. */
  order = new Int32Array(0);
  /** The pairs that have a rank when the piece starts: where each starts and its rank (see initParts). */
  listedStarts = new Int32Array(0);
  listedRanks = new Int32Array(0);
  /** Pairs of a rank not above the one being merged (rare). */
  readonly low = new KeyHeap(64);
  /** What the merge's look-ahead loads read (kept so that the loads are not optimised away). */
  touched = 0;

  /** Room for the UTF-8 of `units` UTF-16 code units: this scratch, or a new one if it would grow beyond the cap. */
  forUnits(units: number): Scratch {
    const needed = units * 3;
    if (needed <= this.bytes.length) return this;
    const scratch = needed > KEPT_SCRATCH_BYTES ? new Scratch() : this;
    scratch.bytes = new Uint8Array(needed);
    return scratch;
  }

  /** Makes room for the queue merge of a piece of `length` bytes. */
  forMerge(length: number): void {
    if (this.order.length >= length) return;
    const capacity = Math.max(length, Math.min(this.order.length * 2, KEPT_SCRATCH_BYTES));
    this.parts = new Int32Array((capacity + 1) * 2);
    this.entries = new Int32Array(capacity * 4 + 1024);
    this.order = new Int32Array(capacity);
    this.listedStarts = new Int32Array(capacity);
    this.listedRanks = new Int32Array(capacity);
  }
}

/**
 * Buckets of positions by rank, and a heap of the ranks whose bucket is not empty. A bucket is a chain of blocks in
 * the scratch's `entries` (`[previous block, capacity, used, positions...]`, each block at least as large as the
 * bucket before it), so taking a bucket reads runs of positions rather than chasing one pointer per position. The
 * piece's own pairs are counted first and each rank gets one block of exactly its size. The heads and sizes are
 * indexed by rank (two numbers per token of the encoding) and are empty again after every merge. Exported for its
 * unit test only.
 */
export class RankBuckets {
  /** [2r]: rank r's last block (-1: none), [2r+1]: how many positions its bucket holds. */
  private readonly heads: Int32Array;
  private readonly ranks = new IntHeap(1024);
  private scratch: Scratch | undefined;
  private entries: Int32Array = new Int32Array(0);
  private used = 0;

  constructor(rankCount: number) {
    this.heads = new Int32Array(rankCount * 2);
    for (let rank = 0; rank < rankCount; rank++) this.heads[rank * 2] = -1;
  }

  /**
   * Empties the queue and fills it with the pairs of a new piece: the first `count` of scratch.listedStarts and
   * scratch.listedRanks (positions ascending, as initParts lists them).
   */
  fill(scratch: Scratch, count: number): void {
    this.scratch = scratch;
    this.entries = scratch.entries;
    this.used = 0;
    this.ranks.clear();
    const heads = this.heads;
    const { listedStarts, listedRanks } = scratch;
    // Count the pairs of every rank; `order` lists the ranks met, in the order met.
    const distinct = scratch.order;
    let ranks = 0;
    for (let index = 0; index < count; index++) {
      const rank = listedRanks[index]!;
      const size = heads[rank * 2 + 1]!;
      if (size === 0) distinct[ranks++] = rank;
      heads[rank * 2 + 1] = size + 1;
    }
    for (let index = 0; index < ranks; index++) {
      const rank = distinct[index]!;
      heads[rank * 2] = this.allocate(-1, heads[rank * 2 + 1]!);
      this.ranks.push(rank);
    }
    const entries = this.entries;
    for (let index = 0; index < count; index++) {
      const block = heads[listedRanks[index]! * 2]!;
      entries[block + 3 + entries[block + 2]!++] = listedStarts[index]!;
    }
  }

  push(rank: number, position: number): void {
    const heads = this.heads;
    let block = heads[rank * 2]!;
    const size = heads[rank * 2 + 1]!;
    if (size === 0) this.ranks.push(rank);
    heads[rank * 2 + 1] = size + 1;
    if (block === -1 || this.entries[block + 2] === this.entries[block + 1]) {
      block = this.allocate(block, size < 8 ? 8 : size);
      heads[rank * 2] = block;
    }
    const entries = this.entries;
    entries[block + 3 + entries[block + 2]!++] = position;
  }

  private allocate(previous: number, capacity: number): number {
    const block = this.used;
    this.used += 3 + capacity;
    if (this.used > this.entries.length) {
      const grown = new Int32Array(Math.max(this.used, this.entries.length * 2));
      grown.set(this.entries.subarray(0, block));
      this.entries = grown;
      this.scratch!.entries = grown;
    }
    const entries = this.entries;
    entries[block] = previous;
    entries[block + 1] = capacity;
    entries[block + 2] = 0;
    return block;
  }

  /** The lowest rank with entries, or NO_RANK. */
  nextRank(): number {
    return this.ranks.size > 0 ? this.ranks.pop() : NO_RANK;
  }

  /** Empties rank's bucket into `order`, positions ascending; returns how many. */
  take(rank: number, order: Int32Array): number {
    const heads = this.heads;
    const entries = this.entries;
    const count = heads[rank * 2 + 1]!;
    // The last block holds the last positions pushed.
    let index = count;
    for (let block = heads[rank * 2]!; block !== -1; block = entries[block]!) {
      const first = block + 3;
      for (let at = first + entries[block + 2]! - 1; at >= first; at--) order[--index] = entries[at]!;
    }
    heads[rank * 2] = -1;
    heads[rank * 2 + 1] = 0;
    // Pushed in runs of ascending positions: check, and sort only if needed.
    let sorted = true;
    for (let at = 1; at < count; at++) {
      if (order[at - 1]! > order[at]!) {
        sorted = false;
        break;
      }
    }
    if (!sorted) {
      if (count <= 16) insertionSort(order, count);
      else order.subarray(0, count).sort();
    }
    return count;
  }
}

function insertionSort(values: Int32Array, count: number): void {
  for (let at = 1; at < count; at++) {
    const value = values[at]!;
    let to = at;
    while (to > 0 && values[to - 1]! > value) {
      values[to] = values[to - 1]!;
      to--;
    }
    values[to] = value;
  }
}

/** A binary min-heap of small integers (ranks) in a growable Int32Array. */
class IntHeap {
  private values: Int32Array;
  size = 0;

  constructor(capacity: number) {
    this.values = new Int32Array(capacity);
  }

  clear(): void {
    this.size = 0;
  }

  push(value: number): void {
    if (this.size === this.values.length) {
      const grown = new Int32Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    const values = this.values;
    let index = this.size++;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      const parentValue = values[parent]!;
      if (parentValue <= value) break;
      values[index] = parentValue;
      index = parent;
    }
    values[index] = value;
  }

  pop(): number {
    const values = this.values;
    const top = values[0]!;
    const last = values[--this.size]!;
    const size = this.size;
    let index = 0;
    for (;;) {
      let child = 2 * index + 1;
      if (child >= size) break;
      if (child + 1 < size && values[child + 1]! < values[child]!) child++;
      if (values[child]! >= last) break;
      values[index] = values[child]!;
      index = child;
    }
    if (size > 0) values[index] = last;
    return top;
  }
}

/** A binary min-heap of doubles in a growable Float64Array. */
class KeyHeap {
  private keys: Float64Array;
  size = 0;

  constructor(capacity: number) {
    this.keys = new Float64Array(capacity);
  }

  clear(): void {
    this.size = 0;
  }

  peek(): number {
    return this.keys[0]!;
  }

  push(key: number): void {
    if (this.size === this.keys.length) {
      const grown = new Float64Array(this.keys.length * 2);
      grown.set(this.keys);
      this.keys = grown;
    }
    const keys = this.keys;
    let index = this.size++;
    while (index > 0) {
      const parent = (index - 1) >> 1;
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
    const size = this.size;
    let index = 0;
    for (;;) {
      let child = 2 * index + 1;
      if (child >= size) break;
      if (child + 1 < size && keys[child + 1]! < keys[child]!) child++;
      if (keys[child]! >= last) break;
      keys[index] = keys[child]!;
      index = child;
    }
    if (size > 0) keys[index] = last;
    return top;
  }
}

/**
 * The rank of the token two adjacent tokens make, by their ids: an open-addressing table in one Int32Array, filled on
 * demand from the library's string-keyed map (misses are remembered too). A slot is two numbers, eight bytes (tokens
 * and ranks are below 2^21, MAX_RANK): `left | right << 21` (right's low 11 bits), then right's high 10 bits and the
 * rank + 1 above them (0: not a token). Eight bytes, not twelve or sixteen, because a long piece of random letters
 * looks up ~100,000 pairs, most of them new and most of them not tokens: the table then outgrows the caches, and a
 * lookup's cost is the cache miss. Starts small, so the pairs of ordinary text stay in cache; bounded: emptied when
 * full.
 */
/** A pair slot's first number holds the right token's low bits; its second the high ones, the rank + 1 above them. */
const RIGHT_LOW_BITS = 32 - PART_BITS;
const RANK_SHIFT = PART_BITS - RIGHT_LOW_BITS;
const HIGH_MASK = 2 ** RANK_SHIFT - 1;

class PairRanks {
  private static readonly INITIAL_SLOTS = 1 << 12;
  private static readonly MAX_SLOTS = 1 << 21; // 16 MB
  /** [2s]: left | right << 21 (-1: empty slot; no token is 2^21 - 1), [2s+1]: right >>> 11 | (rank + 1) << 10. */
  private slots: Int32Array;
  private mask: number;
  private used = 0;
  constructor(private readonly index: TokenIndex) {
    this.slots = PairRanks.emptySlots(PairRanks.INITIAL_SLOTS);
    this.mask = PairRanks.INITIAL_SLOTS - 1;
  }

  private static emptySlots(count: number): Int32Array {
    return new Int32Array(count * 2).fill(-1);
  }

  /** Loads the slot where the pair's lookup starts (so that a rank() soon after finds it in cache); returns it. */
  touch(left: number, right: number): number {
    return this.slots[(pairHash(left, right) & this.mask) << 1]!;
  }

  /** The rank of token `left`'s bytes followed by token `right`'s, or NO_RANK if that is not a token. */
  rank(left: number, right: number): number {
    const slots = this.slots;
    const mask = this.mask;
    const low = left | (right << PART_BITS);
    const high = right >>> RIGHT_LOW_BITS;
    let slot = pairHash(left, right) & mask;
    for (;;) {
      const at = slot << 1;
      const stored = slots[at]!;
      if (stored === low) {
        const second = slots[at + 1]!;
        if ((second & HIGH_MASK) === high) return (second >>> RANK_SHIFT) - 1;
      }
      if (stored === -1) break;
      slot = (slot + 1) & mask;
    }
    const rank = this.index.rankOfPair(left, right); // NOT_A_TOKEN is NO_RANK
    this.insert(slot, left, right, rank);
    return rank;
  }

  private insert(slot: number, left: number, right: number, rank: number): void {
    if ((this.used + 1) * 2 > this.mask + 1) {
      this.grow();
      slot = this.freeSlot(left, right);
    }
    this.store(slot, left, right, rank);
    this.used++;
  }

  private store(slot: number, left: number, right: number, rank: number): void {
    const at = slot << 1;
    this.slots[at] = left | (right << PART_BITS);
    this.slots[at + 1] = (right >>> RIGHT_LOW_BITS) | ((rank + 1) << RANK_SHIFT);
  }

  /** Doubles the table, or empties it at its largest size (an adversary cannot make it grow without bound). */
  private grow(): void {
    const old = this.slots;
    const oldCount = this.mask + 1;
    const count = oldCount >= PairRanks.MAX_SLOTS ? oldCount : oldCount * 2;
    this.slots = PairRanks.emptySlots(count);
    this.mask = count - 1;
    this.used = 0;
    if (count === oldCount) return;
    for (let at = 0; at < old.length; at += 2) {
      const first = old[at]!;
      if (first === -1) continue;
      const left = first & PART_MASK;
      const right = (first >>> PART_BITS) | ((old[at + 1]! & HIGH_MASK) << RIGHT_LOW_BITS);
      this.store(this.freeSlot(left, right), left, right, (old[at + 1]! >>> RANK_SHIFT) - 1);
      this.used++;
    }
  }

  private freeSlot(left: number, right: number): number {
    let slot = pairHash(left, right) & this.mask;
    while (this.slots[slot << 1] !== -1) slot = (slot + 1) & this.mask;
    return slot;
  }
}

/** Non-negative integer keys to integer values, open addressing over one Int32Array; grows, never shrinks. */
class IntTable {
  static readonly MISSING = -(2 ** 31);
  /** [2s]: key (-1: empty slot), [2s + 1]: value. */
  private slots = IntTable.emptySlots(1024);
  private used = 0;

  private static emptySlots(count: number): Int32Array {
    const slots = new Int32Array(count * 2);
    for (let slot = 0; slot < count; slot++) slots[slot * 2] = -1;
    return slots;
  }

  get(key: number): number {
    const slots = this.slots;
    const mask = (slots.length >> 1) - 1;
    for (let slot = pairHash(key, 0) & mask; ; slot = (slot + 1) & mask) {
      const stored = slots[slot * 2]!;
      if (stored === key) return slots[slot * 2 + 1]!;
      if (stored === -1) return IntTable.MISSING;
    }
  }

  set(key: number, value: number): void {
    if ((this.used + 1) * 2 > this.slots.length >> 1) this.grow();
    const slots = this.slots;
    const mask = (slots.length >> 1) - 1;
    let slot = pairHash(key, 0) & mask;
    while (slots[slot * 2] !== -1 && slots[slot * 2] !== key) slot = (slot + 1) & mask;
    if (slots[slot * 2] === -1) this.used++;
    slots[slot * 2] = key;
    slots[slot * 2 + 1] = value;
  }

  clear(): void {
    this.slots = IntTable.emptySlots(1024);
    this.used = 0;
  }

  private grow(): void {
    const old = this.slots;
    this.slots = IntTable.emptySlots(old.length);
    this.used = 0;
    for (let slot = 0; slot < old.length; slot += 2) if (old[slot] !== -1) this.set(old[slot]!, old[slot + 1]!);
  }
}

function pairHash(left: number, right: number): number {
  let hash = Math.imul(left, 0x9e3779b1) ^ Math.imul(right, 0x85ebca77);
  hash ^= hash >>> 15;
  return hash;
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

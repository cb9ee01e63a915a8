/**
 * An encoding's token index (tokenIndex.ts) saved at build time beside the bundle, `ranks/<encoding>.index.bin`, so a
 * cold start reads it instead of decoding and hashing 200k tokens (measured on a quiet 2-CPU machine: 115 ms of the
 * first turn for o200k_base, plus 35 ms to require the 2.2 MB ranks module, against a few ms to read and check this).
 *
 * The file is used only when it is exactly what this code would build from the ranks beside it:
 * - it names the SHA-256 of the ranks file (`ranks/<encoding>.cjs`) it was made from, and that file is read and hashed;
 * - its format number is this code's FORMAT (bumped whenever the layout or TokenIndex's hashing changes);
 * - the arrays' SHA-256 is the one the header names (a damaged or cut file is not read);
 * - TokenIndex.fromTables checks the arrays' sizes and finds a sample of tokens by their bytes at their rank.
 * Anything else (no file, another ranks file, another format, a short or damaged file, a big-endian machine):
 * undefined, and the tokenizer builds the index from the ranks as before. The split pattern and the special tokens
 * are saved too, from the same ranks file, so the fast path never evaluates the ranks module.
 *
 * Layout: 8 bytes `tokidx\0\0`, a little-endian uint32 header length, the header (JSON, see Header), zero padding to a
 * multiple of 8, then the arrays little-endian and back to back: starts, byteEnds, ranks (uint32 x count), positions
 * (int32 x rankCount), slots (int32 x slotCount), bytes (uint8 x byteLength). Everything the index holds is saved, so
 * reading it is no pass over 200k tokens (such passes took ~100 ms in a fresh process, before V8 optimised them).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { endianness } from 'node:os';
import * as path from 'node:path';
import { TokenIndex } from './tokenIndex';

const MAGIC = Buffer.from('tokidx\0\0', 'latin1');
/** Bump when the layout or the index's hashing changes: files of another format are not read. */
export const FORMAT = 1;

/** Where the bundle keeps its ranks and their indexes: `ranks/` beside main.js (scripts/bundle.ts). */
export const PREBUILT_RANKS_DIR = path.join(__dirname, 'ranks');

export interface RankIndexSource {
  /** `o200k_base`: the files are `<encoding>.cjs` (the ranks) and `<encoding>.index.bin`. */
  encoding: string;
  /** The ranks file's SHA-256, hex. */
  ranksSha256: string;
  /** js-tiktoken's `pat_str` and `special_tokens` from that file. */
  patStr: string;
  specialTokens: Record<string, number>;
}

interface Header extends RankIndexSource {
  format: number;
  count: number;
  rankCount: number;
  longestToken: number;
  slotCount: number;
  byteLength: number;
  /** SHA-256 of everything after the header's padding. */
  arraysSha256: string;
}

export interface PrebuiltRankIndex extends RankIndexSource {
  index: TokenIndex;
}

export function indexFileName(encoding: string): string {
  return `${encoding}.index.bin`;
}

export function ranksFileName(encoding: string): string {
  return `${encoding}.cjs`;
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

const align8 = (offset: number) => Math.ceil(offset / 8) * 8;

/** The file for `index`, made from the ranks `source` describes. */
export function serializeRankIndex(index: TokenIndex, source: RankIndexSource): Buffer {
  if (endianness() !== 'LE')
    throw new Error('The rank index is saved little-endian: build it on a little-endian machine.');
  const tables = index.tables();
  const view = (array: Uint32Array | Int32Array | Uint8Array) =>
    Buffer.from(array.buffer, array.byteOffset, array.byteLength);
  const arrays = Buffer.concat(
    [tables.starts, tables.byteEnds, tables.ranks, tables.positions, tables.slots, tables.bytes].map(view),
  );
  const header: Header = {
    format: FORMAT,
    encoding: source.encoding,
    ranksSha256: source.ranksSha256,
    patStr: source.patStr,
    specialTokens: source.specialTokens,
    count: tables.count,
    rankCount: tables.rankCount,
    longestToken: tables.longestToken,
    slotCount: tables.slots.length,
    byteLength: tables.bytes.length,
    arraysSha256: sha256(arrays),
  };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32LE(json.length);
  const start = MAGIC.length + 4 + json.length;
  return Buffer.concat([MAGIC, length, json, Buffer.alloc(align8(start) - start), arrays]);
}

/**
 * The index in `file`, or undefined unless it was made in this FORMAT from ranks whose SHA-256 is `ranksSha256` and
 * checks out (see the top of this file). The arrays are views of `file` (kept for the life of the index).
 */
export function readRankIndex(file: Buffer, ranksSha256: string): PrebuiltRankIndex | undefined {
  try {
    if (endianness() !== 'LE' || file.length < MAGIC.length + 4 || !file.subarray(0, MAGIC.length).equals(MAGIC)) {
      return undefined;
    }
    const jsonLength = file.readUInt32LE(MAGIC.length);
    const jsonStart = MAGIC.length + 4;
    if (jsonStart + jsonLength > file.length) return undefined;
    const header = JSON.parse(file.toString('utf8', jsonStart, jsonStart + jsonLength)) as Partial<Header>;
    if (header.format !== FORMAT || header.ranksSha256 !== ranksSha256) return undefined;
    const { count, rankCount, longestToken, slotCount, byteLength, encoding, patStr, specialTokens } = header;
    if (!isCount(count) || !isCount(rankCount) || !isCount(slotCount)) return undefined;
    if (!isCount(longestToken) || !isCount(byteLength)) return undefined;
    if (typeof encoding !== 'string' || typeof patStr !== 'string' || !isSpecialTokens(specialTokens)) return undefined;

    const arraysStart = align8(jsonStart + jsonLength);
    if (arraysStart + (count * 3 + rankCount + slotCount) * 4 + byteLength !== file.length) return undefined;
    if (sha256(file.subarray(arraysStart)) !== header.arraysSha256) return undefined;
    // Typed arrays need aligned offsets: a Buffer from readFileSync may sit anywhere in its ArrayBuffer.
    const data = file.byteOffset % 8 === 0 ? file : Buffer.from(file);
    let at = data.byteOffset + arraysStart;
    const words = <T>(make: new (buffer: ArrayBufferLike, offset: number, length: number) => T, length: number) => {
      const array = new make(data.buffer, at, length);
      at += length * 4;
      return array;
    };
    const starts = words(Uint32Array, count);
    const byteEnds = words(Uint32Array, count);
    const ranks = words(Uint32Array, count);
    const positions = words(Int32Array, rankCount);
    const slots = words(Int32Array, slotCount);
    const bytes = new Uint8Array(data.buffer, at, byteLength);
    const index = TokenIndex.fromTables({
      count,
      rankCount,
      longestToken,
      bytes,
      starts,
      byteEnds,
      ranks,
      positions,
      slots,
    });
    return index && { index, encoding, ranksSha256, patStr, specialTokens };
  } catch {
    return undefined; // unreadable: build the index from the ranks
  }
}

/**
 * The saved index of `encoding` in `dir` (default: ranks/ beside the bundle), checked against the ranks file beside
 * it; undefined when either file is missing or they do not match (the caller then builds the index).
 */
export function loadPrebuiltRankIndex(encoding: string, dir = PREBUILT_RANKS_DIR): PrebuiltRankIndex | undefined {
  let file: Buffer;
  let ranks: Buffer;
  try {
    file = readFileSync(path.join(dir, indexFileName(encoding)));
    ranks = readFileSync(path.join(dir, ranksFileName(encoding)));
  } catch {
    return undefined; // not in the bundle (tsx, the tsc output) or not built: build the index
  }
  const prebuilt = readRankIndex(file, sha256(ranks));
  return prebuilt?.encoding === encoding ? prebuilt : undefined;
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function isSpecialTokens(value: unknown): value is Record<string, number> {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    Object.values(value).every((id) => Number.isSafeInteger(id))
  );
}

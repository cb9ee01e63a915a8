/**
 * The token index saved at build time (src/adapters/prebuiltRankIndex.ts, written by scripts/bundle.ts): read back, it
 * is the index the tokenizer builds from the ranks, array for array; anything that does not match the ranks beside it
 * or this code (another ranks file, another format, a damaged or cut file, a table hashed otherwise) is refused, and
 * the tokenizer then builds the index from the ranks and counts the same.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Tiktoken, TiktokenBPE } from 'js-tiktoken/lite' with { 'resolution-mode': 'import' };
import {
  FORMAT,
  indexFileName,
  loadPrebuiltRankIndex,
  ranksFileName,
  readRankIndex,
  serializeRankIndex,
  sha256,
} from '../../../src/adapters/prebuiltRankIndex';
import { indexRanksFast } from '../../../src/adapters/tiktokenRanks';
import { createTiktokenTokenizer, getTokenizer } from '../../../src/adapters/tiktokenTokenizer';
import type { TokenIndex } from '../../../src/adapters/tokenIndex';
import type { EncodingName } from '../../../src/core/ports';
import { writeRankIndex } from '../../../scripts/bundle';

/* eslint-disable @typescript-eslint/no-require-imports -- the package's types are ESM-only, its code is required */
const { Tiktoken: LibraryTiktoken } = require('js-tiktoken/lite') as { Tiktoken: typeof Tiktoken };
const ENCODINGS: EncodingName[] = ['o200k_base', 'cl100k_base'];
const RANKS_FILE = (encoding: EncodingName) => require.resolve(`js-tiktoken/ranks/${encoding}`);
const RANKS = (encoding: EncodingName) => require(RANKS_FILE(encoding)) as TiktokenBPE;
/* eslint-enable @typescript-eslint/no-require-imports */

const built = new Map<EncodingName, TokenIndex>();
function builtIndex(encoding: EncodingName): TokenIndex {
  let index = built.get(encoding);
  if (!index) {
    index = indexRanksFast(LibraryTiktoken, RANKS(encoding));
    assert.ok(index, `${encoding}: the index is built from the ranks`);
    built.set(encoding, index);
  }
  return index;
}

function sourceOf(encoding: EncodingName) {
  const ranks = RANKS(encoding);
  return {
    encoding,
    ranksSha256: sha256(readFileSync(RANKS_FILE(encoding))),
    patStr: ranks.pat_str,
    specialTokens: ranks.special_tokens,
  };
}

/** A folder like dist/app/ranks: the ranks file and the index scripts/bundle.ts writes beside it. */
let dir: string;
before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'rank-index-'));
  for (const encoding of ENCODINGS) {
    copyFileSync(RANKS_FILE(encoding), path.join(dir, ranksFileName(encoding)));
    writeRankIndex(path.join(dir, ranksFileName(encoding)));
  }
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('the saved rank index', () => {
  for (const encoding of ENCODINGS) {
    it(`${encoding}: read back from the file the build writes, it equals the index built from the ranks`, () => {
      const prebuilt = loadPrebuiltRankIndex(encoding, dir);
      assert.ok(prebuilt, 'the saved index is read');
      const ranks = RANKS(encoding);
      assert.equal(prebuilt.patStr, ranks.pat_str);
      assert.deepEqual(prebuilt.specialTokens, ranks.special_tokens);
      const saved = prebuilt.index.tables();
      const fresh = builtIndex(encoding).tables();
      assert.equal(saved.count, fresh.count);
      assert.equal(saved.rankCount, fresh.rankCount);
      assert.equal(saved.longestToken, fresh.longestToken);
      for (const name of ['bytes', 'starts', 'byteEnds', 'ranks', 'positions', 'slots'] as const) {
        assert.ok(
          Buffer.from(saved[name].buffer, saved[name].byteOffset, saved[name].byteLength).equals(
            Buffer.from(fresh[name].buffer, fresh[name].byteOffset, fresh[name].byteLength),
          ),
          `${name} is the same`,
        );
      }
      // And it answers as the built one: every token by its bytes and by its rank.
      for (const [bytes, rank] of builtIndex(encoding).entries()) {
        if (prebuilt.index.rankOf(bytes, 0, bytes.length) !== rank) assert.fail(`rank ${rank} not found by its bytes`);
      }
      assert.deepEqual(prebuilt.index.bytesOf(300), builtIndex(encoding).bytesOf(300));
      assert.equal(prebuilt.index.rankOfPair(72, 101), builtIndex(encoding).rankOfPair(72, 101));
    });
  }

  it('the tokenizer uses it and counts what the tokenizer building its own index counts', () => {
    const texts = [
      'Hello, world',
      '你好，世界。这是一个没有标点的很长的句子',
      'e\u0301 👩‍👩‍👧 \ud800 <|endoftext|>',
      'x'.repeat(5000),
    ];
    for (const encoding of ENCODINGS) {
      const fromFile = createTiktokenTokenizer(encoding, { prebuiltDir: dir });
      const reference = getTokenizer(encoding); // under tsx: no ranks/ beside the sources, the index is built
      for (const text of texts) assert.deepEqual(fromFile.encode(text), reference.encode(text));
      assert.equal(fromFile.indexSource, 'prebuilt');
      assert.equal(reference.indexSource, 'ranks');
      assert.deepEqual(fromFile.specialTokens(), reference.specialTokens());
      assert.equal(fromFile.decode(fromFile.encode('round trip ✓')), 'round trip ✓');
    }
  });

  it('is refused when the ranks beside it are not the ones it was made from, and the tokenizer builds the index', () => {
    const stale = mkdtempSync(path.join(tmpdir(), 'rank-index-stale-'));
    try {
      // The cl100k_base index beside the o200k_base ranks, under o200k_base's names: another ranks file.
      copyFileSync(RANKS_FILE('o200k_base'), path.join(stale, ranksFileName('o200k_base')));
      copyFileSync(path.join(dir, indexFileName('cl100k_base')), path.join(stale, indexFileName('o200k_base')));
      assert.equal(loadPrebuiltRankIndex('o200k_base', stale), undefined);
      const tokenizer = createTiktokenTokenizer('o200k_base', { prebuiltDir: stale });
      assert.deepEqual(tokenizer.encode('Hello, world'), getTokenizer('o200k_base').encode('Hello, world'));
      assert.equal(tokenizer.indexSource, 'ranks');

      // One byte of the ranks file changed: its digest no longer matches.
      const ranks = readFileSync(RANKS_FILE('o200k_base'));
      ranks[ranks.length - 3] = ranks[ranks.length - 3]! ^ 1;
      writeFileSync(path.join(stale, ranksFileName('o200k_base')), ranks);
      copyFileSync(path.join(dir, indexFileName('o200k_base')), path.join(stale, indexFileName('o200k_base')));
      assert.equal(loadPrebuiltRankIndex('o200k_base', stale), undefined);
    } finally {
      rmSync(stale, { recursive: true, force: true });
    }
  });

  it('is missing outside the bundle: nothing is read, the index is built', () => {
    const empty = mkdtempSync(path.join(tmpdir(), 'rank-index-none-'));
    try {
      assert.equal(loadPrebuiltRankIndex('o200k_base', empty), undefined);
      const tokenizer = createTiktokenTokenizer('o200k_base', { prebuiltDir: empty });
      assert.equal(tokenizer.countTokens('Hello, world'), 3);
      assert.equal(tokenizer.indexSource, 'ranks');
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('is refused when damaged, cut, of another format, or hashed otherwise than this code hashes', () => {
    const encoding: EncodingName = 'cl100k_base';
    const source = sourceOf(encoding);
    const file = serializeRankIndex(builtIndex(encoding), source);
    assert.ok(readRankIndex(file, source.ranksSha256), 'the file as written is read');

    assert.equal(readRankIndex(file, sha256(Buffer.from('other ranks'))), undefined, 'other ranks');
    assert.equal(readRankIndex(file.subarray(0, file.length - 1), source.ranksSha256), undefined, 'cut');
    assert.equal(readRankIndex(file.subarray(0, 10), source.ranksSha256), undefined, 'cut in the header');
    assert.equal(readRankIndex(Buffer.alloc(0), source.ranksSha256), undefined, 'empty');
    const damaged = Buffer.from(file);
    damaged[damaged.length - 100] = damaged[damaged.length - 100]! ^ 0x40;
    assert.equal(readRankIndex(damaged, source.ranksSha256), undefined, 'a byte of the arrays changed');
    const notAnIndex = Buffer.from(file);
    notAnIndex[0] = 0x7b;
    assert.equal(readRankIndex(notAnIndex, source.ranksSha256), undefined, 'not an index file');

    // Another format number, everything else intact.
    const headerLength = file.readUInt32LE(8);
    const header = file.toString('utf8', 12, 12 + headerLength);
    const otherFormat = Buffer.from(file);
    otherFormat.write(header.replace(`"format":${FORMAT}`, `"format":${FORMAT + 1}`), 12, 'utf8');
    assert.equal(readRankIndex(otherFormat, source.ranksSha256), undefined, 'another format');

    // A table laid out by another hash (every slot moved by one, the digest made to match): the sample misses.
    const tables = builtIndex(encoding).tables();
    const shifted = new Int32Array(tables.slots.length);
    for (let slot = 0; slot < shifted.length; slot++) shifted[(slot + 1) % shifted.length] = tables.slots[slot]!;
    const rehashed = {
      tables: () => ({ ...tables, slots: shifted }),
    } as unknown as TokenIndex;
    const otherHash = serializeRankIndex(rehashed, source);
    assert.equal(readRankIndex(otherHash, source.ranksSha256), undefined, 'hashed otherwise');
  });

  it('reads from a buffer at any offset (the arrays are copied when they would not be aligned)', () => {
    const encoding: EncodingName = 'cl100k_base';
    const source = sourceOf(encoding);
    const file = serializeRankIndex(builtIndex(encoding), source);
    const shifted = Buffer.alloc(file.length + 3);
    file.copy(shifted, 3);
    const prebuilt = readRankIndex(shifted.subarray(3), source.ranksSha256);
    assert.ok(prebuilt);
    assert.equal(
      prebuilt.index.rankOf(Buffer.from('hello'), 0, 5),
      builtIndex(encoding).rankOf(Buffer.from('hello'), 0, 5),
    );
  });
});

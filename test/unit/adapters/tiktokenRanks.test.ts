/**
 * tiktokenRanks.ts indexes js-tiktoken's compressed ranks without building the library's encoder: the index must hold
 * exactly the tokens the library's own constructor puts in its maps, for both encodings and for small rank files
 * written to test the parser; whatever this code does not expect is left to the library.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Tiktoken, TiktokenBPE } from 'js-tiktoken/lite' with { 'resolution-mode': 'import' };
import { createBytePairEncoder } from '../../../src/adapters/bytePairEncoder';
import { CHATML_SPECIAL_TOKENS, encodeChatML, getTokenizer } from '../../../src/adapters/tiktokenTokenizer';
import { indexRanksFast, loadRanks, rankMapsOf, type TiktokenConstructor } from '../../../src/adapters/tiktokenRanks';
import type { TokenIndex } from '../../../src/adapters/tokenIndex';
import type { EncodingName } from '../../../src/core/ports';

/* eslint-disable @typescript-eslint/no-require-imports -- the package's types are ESM-only, its code is required */
const { Tiktoken: LibraryTiktoken } = require('js-tiktoken/lite') as { Tiktoken: typeof Tiktoken };
const RANKS: Record<EncodingName, TiktokenBPE> = {
  o200k_base: require('js-tiktoken/ranks/o200k_base') as TiktokenBPE,
  cl100k_base: require('js-tiktoken/ranks/cl100k_base') as TiktokenBPE,
};
/* eslint-enable @typescript-eslint/no-require-imports */

const ENCODINGS: readonly EncodingName[] = ['o200k_base', 'cl100k_base'];

/** The library's own encoders (its constructor): the reference, built once. */
const libraries = new Map<string, Tiktoken>();
function library(encoding: EncodingName, extended?: Record<string, number>): Tiktoken {
  const key = `${encoding}${extended ? '+chatml' : ''}`;
  let encoder = libraries.get(key);
  if (!encoder) {
    encoder = new LibraryTiktoken(RANKS[encoding], extended);
    libraries.set(key, encoder);
  }
  return encoder;
}

/** The first token where the index differs from the library's maps, described; undefined when they agree. */
function firstDifference(encoder: Tiktoken, index: TokenIndex): string | undefined {
  const maps = rankMapsOf(encoder);
  if (!maps) return 'the library has no maps';
  if (maps.rankMap.size !== index.count || maps.textMap.size !== index.count) {
    return `${index.count} tokens, the library ${maps.rankMap.size} / ${maps.textMap.size}`;
  }
  for (const [key, rank] of maps.rankMap) {
    const bytes = Uint8Array.from(key === '' ? [] : key.split(',').map(Number));
    const found = index.rankOf(bytes, 0, bytes.length);
    if (found !== rank) return `bytes ${key} -> ${found}, the library ${rank}`;
  }
  for (const [rank, bytes] of maps.textMap) {
    const own = index.bytesOf(rank);
    if (!own || !Buffer.from(own).equals(Buffer.from(bytes)))
      return `rank ${rank} -> ${String(own)}, the library ${String(bytes)}`;
  }
  return undefined;
}

/** A deterministic generator (mulberry32), so a failure reproduces. */
function randomGenerator(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random text over ASCII, Latin, Cyrillic, CJK, emoji, whitespace and rare code points (no lone surrogates). */
function randomText(length: number, seed: number): string {
  const random = randomGenerator(seed);
  const ranges: [number, number][] = [
    [0x20, 0x7e],
    [0x09, 0x0d],
    [0xa0, 0x24f],
    [0x400, 0x4ff],
    [0x3040, 0x30ff],
    [0x4e00, 0x9fff],
    [0xac00, 0xd7a3],
    [0x1f300, 0x1faff],
    [0xe000, 0xf8ff],
    [0x10000, 0x10ffff],
  ];
  let text = '';
  while (text.length < length) {
    const [low, high] = ranges[Math.floor(random() * ranges.length)]!;
    text += String.fromCodePoint(low + Math.floor(random() * (high - low + 1)));
  }
  return text;
}

const CORPUS: readonly string[] = [
  '',
  'Hello, world',
  'Assistant is a large language model trained by OpenAI.',
  'The quick brown fox jumps over the lazy dog. 1234567890 3.14159 -42 1e10 0x1F',
  "It's, we'll, they're, I'd, you've, I'M, SHE'LL: contractions in both cases.",
  'function add(a: number, b: number): number {\n\treturn a + b; // sum\n}\n',
  '{"role":"user","content":"Who were the founders of Microsoft?"}',
  '日本語のテキストと漢字、そして한국어 문장. 中文：你好，世界！',
  'Émigré naïve façade Straße Ωmega Привет мир ελληνικά',
  '😀 👩‍👩‍👧‍👦 🇫🇷🇯🇵 👍🏽 ❤️‍🔥 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠜎𠜱',
  '    leading spaces, trailing spaces    ',
  'runs\n\n\n\t\t  \r\n  \u00a0\u2003 of whitespace \n ',
  ' '.repeat(257) + '\n'.repeat(33),
  '<|endoftext|> <|endofprompt|> <|fim_prefix|><|fim_middle|><|fim_suffix|>',
  '<|im_start|>user\nHello<|im_end|><|im_start|>assistant',
  '<|im_start <|im_end| < |im_end| > <|im_sep|> <||> <|endoftext',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  'antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis',
  '\u0000\u0001\u001f\u007f\u0080\u00ff\ufffd\ufeff',
  randomText(20_000, 1),
  randomText(5_000, 2),
];

test('the index holds exactly the tokens of the library constructor, o200k_base and cl100k_base', () => {
  for (const encoding of ENCODINGS) {
    const index = indexRanksFast(LibraryTiktoken, RANKS[encoding]);
    assert.ok(index, `${encoding}: the fast index fell back to the library's constructor`);
    assert.ok(index.count > 100_000, `${encoding}: a whole encoding`);
    assert.equal(firstDifference(library(encoding), index), undefined, encoding);
  }
});

test('the adapter encodes a varied corpus exactly as the library encoder, and decodes it back', () => {
  for (const encoding of ENCODINGS) {
    const tokenizer = getTokenizer(encoding);
    for (const text of CORPUS) {
      const label = `${encoding}: ${JSON.stringify(text.slice(0, 40))}`;
      const ids = tokenizer.encode(text);
      assert.deepEqual(ids, library(encoding).encode(text, [], []), label);
      assert.equal(tokenizer.decode(ids), text, `${label} round trip`);
    }
  }
  // With the ChatML delimiters allowed as special tokens, as encodeChatML does.
  const chatml = library('cl100k_base', { ...CHATML_SPECIAL_TOKENS });
  const delimiters = Object.keys(CHATML_SPECIAL_TOKENS);
  for (const text of CORPUS) {
    const ids = encodeChatML(text);
    assert.deepEqual(ids, chatml.encode(text, delimiters, []), JSON.stringify(text.slice(0, 40)));
    assert.equal(getTokenizer('cl100k_base').decode(ids), text, 'round trip with special ids');
  }
  // The corpus does reach special ids and multi-token texts (the comparison above is not trivially empty).
  assert.deepEqual(encodeChatML('<|im_start|>x<|im_end|>'), [100264, 87, 100265]);
  assert.equal(getTokenizer('cl100k_base').decode([100264, 87, 100257, 999_999]), '<|im_start|>x<|endoftext|>');
});

/** A small encoding: every single byte, then a few merges; `pat_str` as cl100k_base's. */
function smallRanks(bpeRanks: string): TiktokenBPE {
  return { pat_str: RANKS.cl100k_base.pat_str, special_tokens: { '<|endoftext|>': 1000 }, bpe_ranks: bpeRanks };
}
const base64 = (text: string) => Buffer.from(text, 'latin1').toString('base64');
const SINGLE_BYTES = Array.from({ length: 256 }, (_, byte) => Buffer.from([byte]).toString('base64')).join(' ');

test('ranks on several lines, with gaps and an empty line, index exactly as the library reads them', () => {
  const merges = ['he', 'll', 'hell', 'hello', ' w', 'or', ' wor', ' world'].map(base64).join(' ');
  const ranks = smallRanks(`! 0 ${SINGLE_BYTES}\n\nline2 300 ${merges}\nx 512 ${base64('\u00e9!')}`);
  const index = indexRanksFast(LibraryTiktoken, ranks);
  assert.ok(index, 'the fast index takes well-formed ranks');
  const reference = new LibraryTiktoken(ranks);
  assert.equal(firstDifference(reference, index), undefined);
  assert.equal(index.rankOf(Buffer.from('hello'), 0, 5), 303);
  assert.equal(index.rankOfPair(303, 307), -1, '"hello world" is not a token');
  assert.equal(index.rankOfPair(304, 305), 306, '" w" + "or" is " wor"');
  const merge = createBytePairEncoder(index, ranks.pat_str, ranks.special_tokens);
  assert.ok(merge);
  assert.deepEqual(merge.encode('hello world'), [303, 307]);
  assert.deepEqual(merge.encode('hello world'), reference.encode('hello world', [], []));
});

test('ranks the library would deduplicate or read loosely are left to the library: its tokens either way', () => {
  const cases: Record<string, string> = {
    'a token twice': `! 0 ${SINGLE_BYTES} QUI= QUI=`,
    'a rank twice (overlapping lines)': `! 0 ${SINGLE_BYTES}\n! 255 QUI=`,
    'two spellings of the same bytes': `! 0 ${SINGLE_BYTES} QUI= QUJ=`,
    'an empty token (trailing space)': `! 0 ${SINGLE_BYTES} `,
    'an empty token (double space)': `! 0 ${SINGLE_BYTES}  QUI=`,
    'URL-safe base64': `! 0 ${SINGLE_BYTES} -_-_`,
    'a length not a multiple of 4': `! 0 ${SINGLE_BYTES} QUI`,
    'padding inside a token': `! 0 ${SINGLE_BYTES} QQ==QUI=`,
    'a non-decimal offset': `! 0x10 ${SINGLE_BYTES}`,
    'a line without an offset': `! 0 ${SINGLE_BYTES}\nQUI=`,
  };
  for (const [label, bpeRanks] of Object.entries(cases)) {
    const ranks = smallRanks(bpeRanks);
    assert.equal(indexRanksFast(LibraryTiktoken, ranks), undefined, `${label}: the fast index declines`);
    const reference = construct(LibraryTiktoken, ranks);
    if (reference === undefined) {
      assert.throws(() => loadRanks(LibraryTiktoken, ranks), `${label}: the library's error, unchanged`);
      continue;
    }
    const loaded = loadRanks(LibraryTiktoken, ranks);
    assert.equal(loaded.fast, false, label);
    // An index from the library's own maps holds its tokens; where they cannot be indexed there is none at all.
    if (loaded.index) assert.equal(firstDifference(reference, loaded.index), undefined, label);
    assert.deepEqual(loaded.library().encode('AB hello', [], []), reference.encode('AB hello', [], []), label);
  }
});

function construct(TiktokenClass: TiktokenConstructor, ranks: TiktokenBPE): Tiktoken | undefined {
  try {
    return new TiktokenClass(ranks);
  } catch {
    return undefined;
  }
}

test('an encoder without the internals the probe reads gets no index: its own encode does the work', () => {
  // A stand-in for a future js-tiktoken that keeps its ranks elsewhere: no rankMap, no textMap.
  class WrappedTiktoken {
    private readonly inner: Tiktoken;
    constructor(ranks: TiktokenBPE, extended?: Record<string, number>) {
      this.inner = new LibraryTiktoken(ranks, extended);
    }
    encode(...args: Parameters<Tiktoken['encode']>): number[] {
      return this.inner.encode(...args);
    }
    decode(tokens: number[]): string {
      return this.inner.decode(tokens);
    }
  }
  const Wrapped = WrappedTiktoken as unknown as TiktokenConstructor;
  const ranks = smallRanks(`! 0 ${SINGLE_BYTES} ${base64('hello')}`);
  assert.equal(indexRanksFast(Wrapped, ranks), undefined);
  const loaded = loadRanks(Wrapped, ranks);
  assert.equal(loaded.index, undefined);
  assert.ok(loaded.library() instanceof WrappedTiktoken);
  assert.deepEqual(loaded.library().encode('hello', [], []), [256]);
});

test('an encoder that reads the probe differently from this code (the probe disagrees) falls back', () => {
  // A stand-in for a future js-tiktoken that keeps each token's bytes as a plain array.
  class ArrayBytesTiktoken extends LibraryTiktoken {
    constructor(ranks: TiktokenBPE, extended?: Record<string, number>) {
      super(ranks, extended);
      const { textMap } = this as unknown as { textMap: Map<number, unknown> };
      for (const [rank, bytes] of textMap) textMap.set(rank, Array.from(bytes as Uint8Array));
    }
  }
  // A stand-in that reads offsets one lower than this code does.
  class OffByOneTiktoken extends LibraryTiktoken {
    constructor(ranks: TiktokenBPE, extended?: Record<string, number>) {
      super(
        { ...ranks, bpe_ranks: ranks.bpe_ranks.replace(/^(\S+) (\d+)/gm, (_, a, b) => `${a} ${Number(b) + 1}`) },
        extended,
      );
    }
  }
  const ranks = smallRanks(`! 0 ${SINGLE_BYTES} ${base64('hello')}`);
  for (const Stand of [ArrayBytesTiktoken, OffByOneTiktoken]) {
    assert.equal(indexRanksFast(Stand, ranks), undefined, Stand.name);
    const loaded = loadRanks(Stand, ranks);
    assert.equal(loaded.fast, false, Stand.name);
    assert.ok(loaded.library() instanceof Stand);
  }
  assert.deepEqual(loadRanks(ArrayBytesTiktoken, ranks).library().encode('hello', [], []), [256]);
  assert.deepEqual(loadRanks(OffByOneTiktoken, ranks).library().encode('hello', [], []), [257]);
});

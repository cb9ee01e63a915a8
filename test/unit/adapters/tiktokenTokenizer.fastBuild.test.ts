import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Tiktoken, TiktokenBPE } from 'js-tiktoken/lite' with { 'resolution-mode': 'import' };
import { CHATML_SPECIAL_TOKENS } from '../../../src/adapters/tiktokenTokenizer';
import { buildTiktoken, buildTiktokenFast, type TiktokenConstructor } from '../../../src/adapters/tiktokenRanks';
import type { EncodingName } from '../../../src/core/ports';

/* eslint-disable @typescript-eslint/no-require-imports -- the package's types are ESM-only, its code is required */
const { Tiktoken: LibraryTiktoken } = require('js-tiktoken/lite') as { Tiktoken: typeof Tiktoken };
const RANKS: Record<EncodingName, TiktokenBPE> = {
  o200k_base: require('js-tiktoken/ranks/o200k_base') as TiktokenBPE,
  cl100k_base: require('js-tiktoken/ranks/cl100k_base') as TiktokenBPE,
};
/* eslint-enable @typescript-eslint/no-require-imports */

/** What the library's encoder holds (js-tiktoken 1.0.21 internals). */
interface Internals {
  rankMap: Map<string, number>;
  textMap: Map<number, Uint8Array>;
  specialTokens: Record<string, number>;
  inverseSpecialTokens: Record<number, Uint8Array>;
  patStr: string;
}
const internals = (encoder: Tiktoken) => encoder as unknown as Internals;

const ENCODINGS: readonly { encoding: EncodingName; extended?: Record<string, number> }[] = [
  { encoding: 'o200k_base' },
  { encoding: 'cl100k_base', extended: { ...CHATML_SPECIAL_TOKENS } }, // as the adapter builds it
];

/** Both encoders of an encoding, built once: the library's constructor and the fast build. */
const built = new Map<EncodingName, { library: Tiktoken; fast: Tiktoken }>();
function encodersFor(encoding: EncodingName): { library: Tiktoken; fast: Tiktoken } {
  let pair = built.get(encoding);
  if (!pair) {
    const extended = ENCODINGS.find((entry) => entry.encoding === encoding)?.extended;
    const fast = buildTiktokenFast(LibraryTiktoken, RANKS[encoding], extended);
    assert.ok(fast, `${encoding}: the fast build fell back to the library's constructor`);
    pair = { library: new LibraryTiktoken(RANKS[encoding], extended), fast };
    built.set(encoding, pair);
  }
  return pair;
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  return a instanceof Uint8Array && b instanceof Uint8Array && Buffer.from(a).equals(Buffer.from(b));
}

/** The first entry where `actual` differs from `expected`, described; undefined if they hold the same entries. */
function firstDifference<K, V>(
  expected: Map<K, V>,
  actual: Map<K, V>,
  same: (a: V | undefined, b: V | undefined) => boolean = (a, b) => a === b,
): string | undefined {
  if (expected.size !== actual.size) return `size ${actual.size}, expected ${expected.size}`;
  for (const [key, value] of expected) {
    const other = actual.get(key);
    if (!same(value, other)) return `${String(key)} -> ${String(other)}, expected ${String(value)}`;
  }
  return undefined;
}

function assertSameEncoder(expected: Tiktoken, actual: Tiktoken, label: string): void {
  const want = internals(expected);
  const got = internals(actual);
  assert.equal(firstDifference(want.rankMap, got.rankMap), undefined, `${label}: rankMap`);
  assert.equal(firstDifference(want.textMap, got.textMap, sameBytes), undefined, `${label}: textMap`);
  assert.deepEqual(got.specialTokens, want.specialTokens, `${label}: specialTokens`);
  assert.deepEqual(got.inverseSpecialTokens, want.inverseSpecialTokens, `${label}: inverseSpecialTokens`);
  assert.equal(got.patStr, want.patStr, `${label}: patStr`);
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

test('the fast build fills rankMap and textMap exactly as the library constructor, o200k_base and cl100k_base', () => {
  for (const { encoding } of ENCODINGS) {
    const { library, fast } = encodersFor(encoding);
    assert.ok(internals(library).rankMap.size > 100_000, `${encoding}: the library built its maps`);
    assertSameEncoder(library, fast, encoding);
  }
});

test('the fast encoder encodes a varied corpus exactly as the library encoder, and decodes it back', () => {
  for (const { encoding } of ENCODINGS) {
    const { library, fast } = encodersFor(encoding);
    for (const text of CORPUS) {
      const label = `${encoding}: ${JSON.stringify(text.slice(0, 40))}`;
      const ids = fast.encode(text, [], []);
      assert.deepEqual(ids, library.encode(text, [], []), label);
      assert.equal(fast.decode(ids), text, `${label} round trip`);
      // With every special token allowed, as encodeChatML does for the ChatML delimiters.
      const special = fast.encode(text, 'all', []);
      assert.deepEqual(special, library.encode(text, 'all', []), `${label} (special allowed)`);
      assert.equal(fast.decode(special), text, `${label} round trip (special allowed)`);
    }
  }
  // The corpus does reach special ids and multi-token texts (the comparison above is not trivially empty).
  assert.deepEqual(
    encodersFor('cl100k_base').fast.encode('<|im_start|>x<|endoftext|>', 'all', []),
    [100264, 87, 100257],
  );
});

/** A small encoding: every single byte, then a few merges; `pat_str` as cl100k_base's. */
function smallRanks(bpeRanks: string): TiktokenBPE {
  return { pat_str: RANKS.cl100k_base.pat_str, special_tokens: { '<|endoftext|>': 1000 }, bpe_ranks: bpeRanks };
}
const base64 = (text: string) => Buffer.from(text, 'latin1').toString('base64');
const SINGLE_BYTES = Array.from({ length: 256 }, (_, byte) => Buffer.from([byte]).toString('base64')).join(' ');

test('ranks on several lines, with gaps and an empty line, build exactly as the library builds them', () => {
  const merges = ['he', 'll', 'hell', 'hello', ' w', 'or', ' wor', ' world'].map(base64).join(' ');
  const ranks = smallRanks(`! 0 ${SINGLE_BYTES}\n\nline2 300 ${merges}\nx 512 ${base64('\u00e9!')}`);
  const fast = buildTiktokenFast(LibraryTiktoken, ranks);
  assert.ok(fast, 'the fast build takes well-formed ranks');
  const library = new LibraryTiktoken(ranks);
  assertSameEncoder(library, fast, 'small ranks');
  assert.equal(internals(fast).rankMap.get('104,101,108,108,111'), 303); // "hello"
  assert.deepEqual(fast.encode('hello world', [], []), [303, 307]);
  assert.deepEqual(fast.encode('hello world', [], []), library.encode('hello world', [], []));
});

test('ranks the library would deduplicate or read loosely are left to the library: same maps either way', () => {
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
    assert.equal(buildTiktokenFast(LibraryTiktoken, ranks), undefined, `${label}: the fast build declines`);
    const library = construct(LibraryTiktoken, ranks);
    if (library === undefined) {
      assert.throws(() => buildTiktoken(LibraryTiktoken, ranks), `${label}: the library's error, unchanged`);
    } else {
      assertSameEncoder(library, buildTiktoken(LibraryTiktoken, ranks), label);
    }
  }
});

function construct(TiktokenClass: TiktokenConstructor, ranks: TiktokenBPE): Tiktoken | undefined {
  try {
    return new TiktokenClass(ranks);
  } catch {
    return undefined;
  }
}

/** Records the rank strings each stand-in is constructed with. */
function recording(TiktokenClass: TiktokenConstructor): { TiktokenClass: TiktokenConstructor; calls: string[] } {
  const calls: string[] = [];
  const Recording = class {
    constructor(ranks: TiktokenBPE, extended?: Record<string, number>) {
      calls.push(ranks.bpe_ranks);
      return new TiktokenClass(ranks, extended);
    }
  } as unknown as TiktokenConstructor;
  return { TiktokenClass: Recording, calls };
}

test('an encoder without the internals it fills falls back to its own constructor, and encodes right', () => {
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
  const { TiktokenClass, calls } = recording(WrappedTiktoken);
  const ranks = RANKS.cl100k_base;
  assert.equal(buildTiktokenFast(TiktokenClass, ranks), undefined);
  calls.length = 0;

  const encoder = buildTiktoken(TiktokenClass, ranks, { ...CHATML_SPECIAL_TOKENS });
  assert.ok(encoder instanceof WrappedTiktoken);
  assert.equal(calls.at(-1), ranks.bpe_ranks, 'the last construction gets the full ranks');
  const { library } = encodersFor('cl100k_base');
  for (const text of CORPUS.slice(0, 16)) assert.deepEqual(encoder.encode(text, [], []), library.encode(text, [], []));
  assert.deepEqual(
    encoder.encode('<|im_start|>user\nHello<|im_end|><|im_start|>assistant', 'all', []),
    [100264, 882, 198, 9906, 100265, 100264, 78191],
  );
});

test('an encoder that fills its maps differently from this code (the probe disagrees) falls back', () => {
  // A stand-in for a future js-tiktoken that keeps each token's bytes as a plain array.
  class ArrayBytesTiktoken extends LibraryTiktoken {
    constructor(ranks: TiktokenBPE, extended?: Record<string, number>) {
      super(ranks, extended);
      const { textMap } = this as unknown as { textMap: Map<number, unknown> };
      for (const [rank, bytes] of textMap) textMap.set(rank, Array.from(bytes as Uint8Array));
    }
  }
  const ranks = smallRanks(`! 0 ${SINGLE_BYTES} ${base64('hello')}`);
  assert.equal(buildTiktokenFast(ArrayBytesTiktoken, ranks), undefined);
  const encoder = buildTiktoken(ArrayBytesTiktoken, ranks);
  assert.ok(encoder instanceof ArrayBytesTiktoken);
  assert.deepEqual(internals(encoder).textMap.get(256), [104, 101, 108, 108, 111], 'built by its own constructor');
  assert.deepEqual(encoder.encode('hello', [], []), [256]);

  // A stand-in whose empty instance is not empty (it seeds its maps): the fast build would mix the two.
  class SeededTiktoken extends LibraryTiktoken {
    constructor(ranks: TiktokenBPE, extended?: Record<string, number>) {
      super(ranks, extended);
      if (ranks.bpe_ranks === '') internals(this).rankMap.set('1,2,3', 9999);
    }
  }
  assert.equal(buildTiktokenFast(SeededTiktoken, ranks), undefined);
  assert.deepEqual(buildTiktoken(SeededTiktoken, ranks).encode('hello', [], []), [256]);

  // A stand-in that refuses empty ranks.
  class StrictTiktoken extends LibraryTiktoken {
    constructor(ranks: TiktokenBPE, extended?: Record<string, number>) {
      if (ranks.bpe_ranks === '') throw new Error('no ranks');
      super(ranks, extended);
    }
  }
  assert.equal(buildTiktokenFast(StrictTiktoken, ranks), undefined);
  assert.deepEqual(buildTiktoken(StrictTiktoken, ranks).encode('hello', [], []), [256]);
});

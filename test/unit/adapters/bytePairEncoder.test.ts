/**
 * The O(n log n) byte-pair merge against js-tiktoken's own encode: the same ids (not only as many), for both
 * encodings, on generated text built to make long pieces and on real text; and on random small vocabularies where
 * equal ranks, out-of-order ranks and whole-piece tokens the merge cannot reach are the rule rather than the exception.
 * The generated lengths go up to where the library (quadratic per piece) takes about a second on one string; most
 * runs are shorter so the file stays quick.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import type { Tiktoken, TiktokenBPE } from 'js-tiktoken/lite' with { 'resolution-mode': 'import' };
import {
  createBytePairEncoder,
  RankBuckets,
  SCAN_MAX_BYTES,
  Scratch,
  utf8Encode,
} from '../../../src/adapters/bytePairEncoder';
import { CHATML_SPECIAL_TOKENS, encodeChatML, getTokenizer } from '../../../src/adapters/tiktokenTokenizer';
import { rankMapsOf } from '../../../src/adapters/tiktokenRanks';
import { TokenIndex } from '../../../src/adapters/tokenIndex';
import type { EncodingName } from '../../../src/core/ports';
import {
  CJK_CHARS,
  COMBINING_MARKS,
  EMOJI_PARTS,
  LONG_PIECE_SHAPES,
  longPieceText,
  MIXED_SCRIPT_CHARS,
  WHITESPACE_CHARS,
} from '../../../bench/textShapes';

/* eslint-disable @typescript-eslint/no-require-imports -- js-tiktoken's types are ESM-only, its code is required */
const { Tiktoken: TiktokenClass } = require('js-tiktoken/lite') as { Tiktoken: typeof Tiktoken };
const rankFiles: Record<EncodingName, TiktokenBPE> = {
  o200k_base: require('js-tiktoken/ranks/o200k_base') as TiktokenBPE,
  cl100k_base: require('js-tiktoken/ranks/cl100k_base') as TiktokenBPE,
};
/* eslint-enable @typescript-eslint/no-require-imports */

const ENCODINGS: readonly EncodingName[] = ['o200k_base', 'cl100k_base'];
const REPO_ROOT = path.resolve(__dirname, '../../..');

/** The library's own encoders, built with its own constructor: the reference. */
const references = new Map<EncodingName, Tiktoken>();
function reference(encoding: EncodingName): Tiktoken {
  let encoder = references.get(encoding);
  if (!encoder) {
    encoder = new TiktokenClass(rankFiles[encoding]);
    references.set(encoding, encoder);
  }
  return encoder;
}

function assertSameIds(encoding: EncodingName, text: string): void {
  const expected = reference(encoding).encode(text, [], []);
  const label = `${encoding}, ${text.length} chars: ${JSON.stringify(text.slice(0, 80))}`;
  assert.deepEqual(getTokenizer(encoding).encode(text), expected, label);
  assert.equal(getTokenizer(encoding).countTokens(text), expected.length, `${label} (counted without the ids)`);
}

// ---- Generated text ------------------------------------------------------------------------------------------

/** Mostly short lengths (quick), some up to `max`, where the library takes about a second on this machine. */
const length = (max: number) =>
  fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: 1, max: Math.min(48, max) }) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max }) },
  );
const textOf = (unit: fc.Arbitrary<string>, max: number) =>
  length(max).chain((count) => fc.array(unit, { minLength: count, maxLength: count }).map((units) => units.join('')));
const charOf = (chars: string | readonly string[]) =>
  fc.constantFrom(...(typeof chars === 'string' ? [...chars] : chars));

const SHAPES: Record<string, fc.Arbitrary<string>> = {
  'one repeated character': fc
    .tuple(charOf(['x', 'a', 'Z', '0', '-', '.', 'é', '中', '😀', ' ', '\n']), length(1400))
    .map(([char, count]) => char.repeat(Math.max(1, Math.floor(count / new TextEncoder().encode(char).length)))),
  'two-letter alphabets': charOf(['ab', 'xy', 'ei', 'st', 'aA']).chain((alphabet) => textOf(charOf(alphabet), 1200)),
  'three-letter alphabets': charOf(['abc', 'the', 'ing', 'xyz']).chain((alphabet) => textOf(charOf(alphabet), 1200)),
  'random lowercase': textOf(charOf('abcdefghijklmnopqrstuvwxyz'), 1000),
  'CJK without punctuation': textOf(
    fc.oneof(
      charOf(CJK_CHARS),
      fc.integer({ min: 0x4e00, max: 0x9fff }).map((code) => String.fromCodePoint(code)),
    ),
    400,
  ),
  'mixed scripts': textOf(charOf(MIXED_SCRIPT_CHARS), 500),
  'emoji and ZWJ sequences': textOf(charOf(EMOJI_PARTS), 350),
  'combining marks': textOf(
    fc.tuple(charOf('aeiouny'), charOf(COMBINING_MARKS)).map(([a, b]) => a + b),
    500,
  ),
  'long whitespace runs': textOf(fc.oneof({ weight: 9, arbitrary: charOf(WHITESPACE_CHARS) }, charOf('ab1.')), 1400),
  'any code units, lone surrogates included': fc.string({
    unit: fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code)),
    maxLength: 300,
  }),
  'any code points': fc.string({ unit: 'binary', maxLength: 300 }),
  // Pieces of more than 64 code units are encoded to UTF-8 by TextEncoder: lone surrogates must become U+FFFD there too.
  'long runs of symbols and lone surrogates': textOf(
    charOf(['\ud800', '\udbff', '\udc00', '\udfff', '€', '—', '#', '\u0000', '😀']),
    500,
  ),
};

describe('same ids as js-tiktoken on generated text', () => {
  for (const encoding of ENCODINGS) {
    for (const [shape, arbitrary] of Object.entries(SHAPES)) {
      test(`${encoding}: ${shape}`, () => {
        fc.assert(
          fc.property(arbitrary, (text) => assertSameIds(encoding, text)),
          { numRuns: 25, seed: 20261128 },
        );
      });
    }
  }
});

describe('same ids as js-tiktoken on long pieces of every shape', () => {
  // One string per shape at about where the library needs a second (a few hundred to ~1,500 bytes in one piece).
  const BYTES = 1200;
  for (const encoding of ENCODINGS) {
    test(`${encoding}: ${LONG_PIECE_SHAPES.join(', ')}`, () => {
      for (const shape of LONG_PIECE_SHAPES) {
        let text = longPieceText(shape, BYTES);
        while (new TextEncoder().encode(text).length > BYTES) text = text.slice(0, Math.floor(text.length * 0.8));
        assertSameIds(encoding, text.replace(/[\uD800-\uDBFF]$/, ''));
      }
    });
  }
});

// ---- Real text -------------------------------------------------------------------------------------------------

/** Prose, Markdown, code and JSON from this repository, plus a multilingual sample. */
function realCorpus(): { name: string; text: string }[] {
  const files = [
    'README.md',
    ...readdirSync(path.join(REPO_ROOT, 'docs')).map((file) => `docs/${file}`),
    'src/core/turn.ts',
    'src/adapters/tiktokenRanks.ts',
    'package.json',
  ];
  const corpus = files.map((file) => ({ name: file, text: readFileSync(path.join(REPO_ROOT, file), 'utf8') }));
  corpus.push({ name: 'multilingual', text: MULTILINGUAL });
  return corpus;
}

// Article 1 of the Universal Declaration of Human Rights in several languages, and a few lines of other text.
const MULTILINGUAL = [
  'All human beings are born free and equal in dignity and rights. They are endowed with reason and conscience.',
  'Tous les êtres humains naissent libres et égaux en dignité et en droits. Ils sont doués de raison et de conscience.',
  'Alle Menschen sind frei und gleich an Würde und Rechten geboren. Sie sind mit Vernunft und Gewissen begabt.',
  'Все люди рождаются свободными и равными в своем достоинстве и правах. Они наделены разумом и совестью.',
  '人人生而自由，在尊严和权利上一律平等。他们赋有理性和良心，并应以兄弟关系的精神相对待。',
  'すべての人間は、生まれながらにして自由であり、かつ、尊厳と権利とについて平等である。',
  '모든 인간은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다.',
  'يولد جميع الناس أحرارًا متساوين في الكرامة والحقوق. وقد وهبوا عقلاً وضميرًا.',
  'सभी मनुष्यों को गौरव और अधिकारों के मामले में जन्मजात स्वतन्त्रता और समानता प्राप्त है।',
  'Όλοι οι άνθρωποι γεννιούνται ελεύθεροι και ίσοι στην αξιοπρέπεια και τα δικαιώματα.',
  'מלכתחילה נולדו כל בני האדם בני חורין ושווים בערכם ובזכויותיהם.',
  'มนุษย์ทั้งหลายเกิดมามีอิสระและเสมอภาคกันในเกียรติศักด์และสิทธิ',
  'Emoji 👨‍👩‍👧‍👦 🏳️‍🌈 👍🏽 and math ∑∫√ and 1234567890 and $12,345.67 and https://example.com/a?b=c#d',
  "It's they'll we've I'M DON'T  tabs\there\r\nCRLF   trailing   ",
].join('\n');

describe('same ids as js-tiktoken on real text', () => {
  for (const encoding of ENCODINGS) {
    test(`${encoding}: README, docs, source, JSON, multilingual`, () => {
      for (const { name, text } of realCorpus()) {
        const expected = reference(encoding).encode(text, [], []);
        assert.deepEqual(getTokenizer(encoding).encode(text), expected, name);
      }
    });
  }
});

// ---- Special tokens --------------------------------------------------------------------------------------------

const SPECIAL_TEXT = fc
  .array(
    fc.oneof(
      charOf(['<|im_start|>', '<|im_end|>', '<|endoftext|>', '<|fim_prefix|>', '<|endofprompt|>', '<|im_sep|>']),
      charOf(['<|', '|>', '<|im_start', 'im_end|>', 'user', 'assistant', '\n', ' ', 'Hello', 'xx', '中文']),
    ),
    { maxLength: 30 },
  )
  .map((parts) => parts.join(''));

test('special-token strings are ordinary text, as the library encodes with none allowed', () => {
  for (const encoding of ENCODINGS) {
    fc.assert(
      fc.property(SPECIAL_TEXT, (text) => assertSameIds(encoding, text)),
      { numRuns: 200, seed: 7 },
    );
  }
});

test('encodeChatML: the ChatML delimiters are special ids, every other special token is text, as in the library', () => {
  const library = new TiktokenClass(rankFiles.cl100k_base, { ...CHATML_SPECIAL_TOKENS });
  const allowed = Object.keys(CHATML_SPECIAL_TOKENS);
  fc.assert(
    fc.property(SPECIAL_TEXT, (text) => {
      assert.deepEqual(encodeChatML(text), library.encode(text, allowed, []));
    }),
    { numRuns: 300, seed: 11 },
  );
  assert.deepEqual(encodeChatML(`<|im_start|>user\n${'x'.repeat(600)}<|im_end|>`), [
    100264,
    ...library.encode(`user\n${'x'.repeat(600)}`, [], []),
    100265,
  ]);
});

// ---- Which merge runs ----------------------------------------------------------------------------------------

test('a long piece is merged by the bucket queue, not by the library', () => {
  const tokenizer = getTokenizer('o200k_base');
  const stats = tokenizer.mergeStats;
  assert.ok(stats, 'the O(n log n) merge is in use for o200k_base');
  const before = { ...stats };
  const text = 'x'.repeat(800);
  // A quadratic merge of 800 bytes is still quick; the point is which one ran, and that it agrees.
  assert.deepEqual(tokenizer.encode(text), reference('o200k_base').encode(text, [], []));
  assert.equal(stats.queuePieces - before.queuePieces, 1, 'one piece, merged by the bucket queue');

  const short = { ...stats };
  tokenizer.encode('qzxqzxq'); // one piece of 7 bytes that is not a token
  assert.equal(stats.scanPieces - short.scanPieces, 1);
  assert.equal(stats.queuePieces, short.queuePieces);
  assert.ok(SCAN_MAX_BYTES < 800);

  // Far beyond where the library would take hours: the count comes back (no timing asserted).
  assert.ok(tokenizer.countTokens('x'.repeat(100_000)) > 0);
  assert.equal(stats.queuePieces - short.queuePieces, 1);
});

// ---- Small random vocabularies ---------------------------------------------------------------------------------

/**
 * A vocabulary of every byte plus random tokens over a few letters with random ranks: a longer token often ranks
 * below its parts, many pairs tie, and many pieces are tokens the merge would never make. Split on spaces only.
 * The letters include characters of two, three and four bytes (one repeating a byte, so pairs inside it can tie),
 * and tokens are cut from their bytes anywhere, so tokens hold parts of characters and pairs across characters'
 * edges outrank the characters' own merges (where starting a character whole would go wrong).
 */
const LETTERS = 'abcé中\u{40000}';
const LETTER_BYTES = fc
  .array(charOf(LETTERS), { minLength: 1, maxLength: 4 })
  .chain((letters) => {
    const bytes = [...Buffer.from(letters.join(''))];
    return fc
      .tuple(fc.nat({ max: bytes.length - 1 }), fc.integer({ min: 2, max: 6 }))
      .map(([from, size]) => bytes.slice(from, from + size));
  })
  .filter((bytes) => bytes.length >= 2);
const VOCABULARY = fc
  .uniqueArray(LETTER_BYTES, { minLength: 1, maxLength: 60, selector: (bytes) => bytes.join(',') })
  .chain((tokens) =>
    fc
      .shuffledSubarray(
        Array.from({ length: tokens.length }, (_, index) => 256 + index),
        { minLength: tokens.length, maxLength: tokens.length },
      )
      .map((ranks) => tokens.map((token, index) => ({ token, rank: ranks[index]! }))),
  );

function buildSmallVocabulary(tokens: readonly { token: string | readonly number[]; rank: number }[]): TiktokenBPE {
  const lines = Array.from({ length: 256 }, (_, byte) => `x ${byte} ${Buffer.from([byte]).toString('base64')}`);
  for (const { token, rank } of tokens) {
    const bytes = typeof token === 'string' ? Buffer.from(token) : Buffer.from(token);
    lines.push(`x ${rank} ${bytes.toString('base64')}`);
  }
  return { pat_str: ' ?[^ ]+| +', special_tokens: {}, bpe_ranks: lines.join('\n') };
}

test('small random vocabularies: same ids as the library, queue and scan alike', () => {
  fc.assert(
    fc.property(
      VOCABULARY,
      fc.array(fc.oneof({ weight: 12, arbitrary: charOf(LETTERS) }, fc.constant(' ')), { maxLength: 200 }),
      (tokens, letters) => {
        const library = new TiktokenClass(buildSmallVocabulary(tokens));
        const ours = createBytePairEncoder(indexOf(library), ' ?[^ ]+| +', {});
        assert.ok(ours);
        const text = letters.join('');
        assert.deepEqual(ours.encode(text), library.encode(text, [], []));
      },
    ),
    { numRuns: 600, seed: 3 },
  );
});

/**
 * Long pieces (all beyond SCAN_MAX_BYTES, so the bucket queue merges them) over two or three letters and a vocabulary
 * of short strings of them at random ranks: equal pairs overlap everywhere ("aaa"), so the leftmost-first rule decides
 * the ids; a merge often makes a pair ranked below the one being merged (the low heap); and a rank's bucket is pushed
 * to from the passes of several lower ranks, each left to right, so its positions arrive out of order (the bucket is
 * sorted when taken, by insertion up to 16 positions, by a typed-array sort above).
 */
const TWO_LETTER_VOCABULARY = charOf(['ab', 'abc']).chain((alphabet) =>
  fc
    .uniqueArray(
      fc.array(charOf(alphabet), { minLength: 2, maxLength: 6 }).map((letters) => letters.join('')),
      {
        minLength: 1,
        maxLength: 40,
      },
    )
    .chain((tokens) =>
      fc
        .shuffledSubarray(
          Array.from({ length: tokens.length }, (_, index) => 256 + index),
          { minLength: tokens.length, maxLength: tokens.length },
        )
        .map((ranks) => ({ alphabet, tokens: tokens.map((token, index) => ({ token, rank: ranks[index]! })) })),
    ),
);

test('small random vocabularies over two or three letters: long pieces merged by the queue, same ids', () => {
  fc.assert(
    fc.property(
      TWO_LETTER_VOCABULARY,
      fc.integer({ min: SCAN_MAX_BYTES + 1, max: 400 }),
      fc.infiniteStream(fc.nat()),
      ({ alphabet, tokens }, size, picks) => {
        const library = new TiktokenClass(buildSmallVocabulary(tokens));
        const ours = createBytePairEncoder(indexOf(library), ' ?[^ ]+| +', {});
        assert.ok(ours);
        const iterator = picks[Symbol.iterator]();
        let text = '';
        while (text.length < size) text += alphabet[iterator.next().value % alphabet.length];
        assert.deepEqual(ours.encode(text), library.encode(text, [], []), `${JSON.stringify(tokens)} on ${text}`);
      },
    ),
    { numRuns: 400, seed: 5 },
  );
});

test('the bucket queue gives ranks lowest first and the positions of each in order, however they were pushed', () => {
  // Merges push a rank's positions in runs (one run per lower rank's pass, and a merge pushes its right pair before
  // its left one), so a bucket can hold them out of order; real text seldom does it, so the queue is tested alone.
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 9 }), fc.nat({ max: 5000 })), { maxLength: 60 }),
      fc.array(fc.tuple(fc.integer({ min: 0, max: 9 }), fc.nat({ max: 5000 })), { maxLength: 300 }),
      (listed, pushed) => {
        const scratch = new Scratch();
        scratch.forMerge(6000);
        const sortedListed = [...listed].sort((a, b) => a[1] - b[1]);
        sortedListed.forEach(([rank, position], index) => {
          scratch.listedRanks[index] = rank;
          scratch.listedStarts[index] = position;
        });
        const queue = new RankBuckets(10);
        queue.fill(scratch, sortedListed.length);
        for (const [rank, position] of pushed) queue.push(rank, position);
        const expected = new Map<number, number[]>();
        for (const [rank, position] of [...listed, ...pushed])
          expected.set(rank, [...(expected.get(rank) ?? []), position]);
        const ranks: number[] = [];
        for (let rank = queue.nextRank(); rank !== -1; rank = queue.nextRank()) {
          ranks.push(rank);
          const count = queue.take(rank, scratch.order);
          const positions = Array.from(scratch.order.subarray(0, count));
          assert.deepEqual(
            positions,
            expected.get(rank)!.sort((a, b) => a - b),
            `rank ${rank}`,
          );
        }
        assert.deepEqual(
          ranks,
          [...expected.keys()].sort((a, b) => a - b),
        );
      },
    ),
    { numRuns: 300, seed: 7 },
  );
  // The two ways a bucket is sorted: by insertion (up to 16 positions) and by the typed-array sort (more).
  for (const size of [5, 40]) {
    const scratch = new Scratch();
    scratch.forMerge(100);
    const queue = new RankBuckets(3);
    queue.fill(scratch, 0);
    for (let position = size - 1; position >= 0; position--) queue.push(2, position);
    assert.equal(queue.nextRank(), 2);
    const count = queue.take(2, scratch.order);
    assert.deepEqual(
      Array.from(scratch.order.subarray(0, count)),
      Array.from({ length: size }, (_, index) => index),
    );
  }
});

/** The index of a library encoder's tokens (from its `textMap`), as the adapter makes it when it must. */
function indexOf(library: Tiktoken): TokenIndex {
  const index = TokenIndex.fromEntries(rankMapsOf(library)!.textMap);
  assert.ok(index);
  return index;
}

test('tables the merge cannot use are refused (the library encodes instead)', () => {
  const vocabulary = buildSmallVocabulary([{ token: 'ab', rank: 256 }]);
  const { textMap } = rankMapsOf(new TiktokenClass(vocabulary))!;
  const entries = [...textMap];
  assert.ok(createBytePairEncoder(TokenIndex.fromEntries(entries)!, vocabulary.pat_str, {}));

  const withoutByte = TokenIndex.fromEntries(entries.filter(([, bytes]) => !(bytes.length === 1 && bytes[0] === 7)));
  assert.ok(withoutByte);
  assert.equal(createBytePairEncoder(withoutByte, vocabulary.pat_str, {}), undefined, 'a byte without a rank');

  const hugeRank = TokenIndex.fromEntries([...entries, [2 ** 21, Uint8Array.of(97, 97, 97)]]);
  assert.ok(hugeRank);
  assert.equal(createBytePairEncoder(hugeRank, vocabulary.pat_str, {}), undefined, 'a rank of 2^21');

  const longToken = TokenIndex.fromEntries([...entries, [300, new Uint8Array(1024).fill(97)]]);
  assert.ok(longToken);
  assert.equal(createBytePairEncoder(longToken, vocabulary.pat_str, {}), undefined, 'a token of 1,024 bytes');

  // Tokens the library's maps would keep only one of cannot be indexed at all.
  assert.equal(TokenIndex.fromEntries([...entries, [256, Uint8Array.of(97, 97)]]), undefined, 'a rank twice');
  assert.equal(TokenIndex.fromEntries([...entries, [257, Uint8Array.of(97, 98)]]), undefined, 'bytes twice');
});

test('utf8Encode writes what TextEncoder writes, lone surrogates as U+FFFD', () => {
  fc.assert(
    fc.property(
      fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code)) }),
      fc.string({ unit: 'binary' }),
      (units, points) => {
        for (const text of [units, points, units + points]) {
          const out = new Uint8Array(text.length * 3);
          const written = utf8Encode(text, out);
          assert.deepEqual(out.subarray(0, written), new TextEncoder().encode(text));
        }
      },
    ),
    { numRuns: 300, seed: 5 },
  );
});

/**
 * Text shapes that make one long pre-tokenizer piece (a run the split regex keeps together), where a quadratic
 * byte-pair merge stalls: shared by the tokenizer's unit tests, the large-message integration test and the
 * benchmarks. Deterministic: the same (shape, length, seed) always gives the same text.
 */

export type LongPieceShape =
  | 'one_letter'
  | 'two_letters'
  | 'three_letters'
  | 'random_lowercase'
  | 'cjk'
  | 'mixed_scripts'
  | 'emoji_zwj'
  | 'combining_marks'
  | 'whitespace';

export const LONG_PIECE_SHAPES: readonly LongPieceShape[] = [
  'one_letter',
  'two_letters',
  'three_letters',
  'random_lowercase',
  'cjk',
  'mixed_scripts',
  'emoji_zwj',
  'combining_marks',
  'whitespace',
];

/** CJK ideographs of ordinary prose, no punctuation. */
export const CJK_CHARS =
  '我们今天讨论人工智能的发展历史以及未来的方向和挑战机器学习深度学习自然语言处理数据模型训练推理';
/** Letters of several scripts, no spaces: the split regex keeps a run of letters together whatever the script. */
export const MIXED_SCRIPT_CHARS = 'aéßжщλωאבعربक्षกขกไ가나한あいアイ漢字';
/** Emoji, skin tones, a variation selector and the zero-width joiner. */
export const EMOJI_PARTS = ['👨', '👩', '👧', '👦', '🚀', '🎉', '😀', '🏳', '🌈', '🏽', '\u200d', '\ufe0f'];
/** Combining marks (U+0300-U+036F) to put after Latin letters. */
export const COMBINING_MARKS = '\u0300\u0301\u0302\u0303\u0308\u030a\u0327\u0331';
export const WHITESPACE_CHARS = [' ', ' ', ' ', '\t', '\n', '\r\n', '\u00a0', '\u3000'];

/** A small seeded generator (mulberry32): deterministic text for tests and benchmarks. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let value = Math.imul(state ^ (state >>> 15), 1 | state);
    value ^= value + Math.imul(value ^ (value >>> 7), 61 | value);
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296;
  };
}

/** `length` UTF-16 code units of `shape` (an astral character is never cut in half). */
export function longPieceText(shape: LongPieceShape, length: number, seed = 12): string {
  const random = seededRandom(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const letters = (alphabet: string) => Array.from(alphabet);
  const units: Record<LongPieceShape, () => string> = {
    one_letter: () => 'x',
    two_letters: () => pick(letters('ab')),
    three_letters: () => pick(letters('abc')),
    random_lowercase: () => pick(letters('abcdefghijklmnopqrstuvwxyz')),
    cjk: () => pick(letters(CJK_CHARS)),
    mixed_scripts: () => pick(letters(MIXED_SCRIPT_CHARS)),
    emoji_zwj: () => pick(EMOJI_PARTS),
    combining_marks: () => pick(letters('aeiouny')) + pick(letters(COMBINING_MARKS)),
    whitespace: () => pick(WHITESPACE_CHARS),
  };
  const next = units[shape];
  let text = '';
  while (text.length < length) text += next();
  if (text.length > length) {
    text = text.slice(0, length);
    const last = text.charCodeAt(length - 1);
    if (last >= 0xd800 && last <= 0xdbff) text = text.slice(0, length - 1) + 'x';
  }
  return text;
}

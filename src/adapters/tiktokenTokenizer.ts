/**
 * The Tokenizer port on js-tiktoken's ranks and split pattern, encoded by bytePairEncoder.ts (the library's rule, the
 * same ids, in O(n log n) per piece instead of O(n^2): see there why) over an index of the ranks (tokenIndex.ts,
 * made by tiktokenRanks.ts without building the library's encoder). One instance per encoding per process; the ranks
 * (several MB) are required and indexed on first use, not at import, so a cold start pays only for the encoding the
 * configured model needs, and only when the first message is counted. The library's own encoder is built only if the
 * index cannot be made (then it also encodes). In the bundle the index is read ready-made from beside it
 * (prebuiltRankIndex.ts), checked against the ranks file there; the ranks module is then evaluated only if the
 * library's encoder is ever needed.
 *
 * User text is always encoded as ordinary text (as the library's `encode(text, [], [])`): a special-token string such as
 * `<|endoftext|>` neither throws nor becomes a special id; it is counted as the characters it is.
 */
// js-tiktoken is an ES-module package with a CommonJS build: its types are ESM, its code is required (below).
import type { Tiktoken, TiktokenBPE } from 'js-tiktoken/lite' with { 'resolution-mode': 'import' };
import type { EncodingName, Tokenizer } from '../core/ports';
import { type BytePairEncoder, type BytePairStats, createBytePairEncoder } from './bytePairEncoder';
import { loadPrebuiltRankIndex, PREBUILT_RANKS_DIR } from './prebuiltRankIndex';
import { loadRanks as indexRanks, type LoadedRanks } from './tiktokenRanks';
import type { TokenIndex } from './tokenIndex';

/** The ChatML delimiters of gpt-35-turbo (0301), added to cl100k_base (Azure OpenAI ChatML guide). */
export const CHATML_SPECIAL_TOKENS: Readonly<Record<string, number>> = Object.freeze({
  '<|im_start|>': 100264,
  '<|im_end|>': 100265,
});

const CHATML_DELIMITERS: readonly string[] = Object.freeze(Object.keys(CHATML_SPECIAL_TOKENS));

export interface TokenizerStats {
  /** Calls to the encoder (one per countTokens/encode call). */
  encodeCalls: number;
  /** Tokens those calls produced. */
  tokensEncoded: number;
}

/** An encoding's encoder: the O(n log n) merge, or the library's own if its tables do not allow it. */
interface Engine {
  readonly ranks: LoadedRanks;
  readonly merge: BytePairEncoder | undefined;
  /** Special token id -> its text, for decode. */
  readonly specialTexts: ReadonlyMap<number, string>;
}

export interface TiktokenTokenizer extends Tokenizer {
  readonly stats: TokenizerStats;
  /** The ids of `text` encoded as ordinary text (what countTokens counts). */
  encode(text: string): number[];
  /** Text from ids (any id this encoding produced). */
  decode(ids: readonly number[]): string;
  /** Whether the ranks are loaded (they load on the first encode or specialTokens call). */
  readonly loaded: boolean;
  /** Pieces merged by the bucket queue and by the short-piece scan; undefined when the library's own merge is in use. */
  readonly mergeStats: Readonly<BytePairStats> | undefined;
  /**
   * Where the index came from, once loaded: saved at build time beside the bundle (`prebuilt`), built from the ranks
   * (`ranks`), from the library's encoder (`library`), or none could be made (`none`: the library encodes).
   */
  readonly indexSource: 'prebuilt' | 'ranks' | 'library' | 'none' | undefined;
}

export interface TiktokenTokenizerOptions {
  /** Where a saved index is looked for (prebuiltRankIndex.ts); default: ranks/ beside the bundle. */
  prebuiltDir?: string;
}

/*
 * Required on first use, not imported: importing would load the ranks at startup. The module names stay literal so
 * a bundler still sees them. The CommonJS builds export the ranks object itself (`module.exports = {...}`).
 */
/* eslint-disable @typescript-eslint/no-require-imports -- lazy loading is the point here */
function loadRanks(encoding: EncodingName): TiktokenBPE {
  switch (encoding) {
    case 'o200k_base':
      return require('js-tiktoken/ranks/o200k_base') as TiktokenBPE;
    case 'cl100k_base':
      return require('js-tiktoken/ranks/cl100k_base') as TiktokenBPE;
  }
}

function loadTiktoken(): typeof Tiktoken {
  return (require('js-tiktoken/lite') as { Tiktoken: typeof Tiktoken }).Tiktoken;
}
/* eslint-enable @typescript-eslint/no-require-imports */

class LazyTiktokenTokenizer implements TiktokenTokenizer {
  readonly stats: TokenizerStats = { encodeCalls: 0, tokensEncoded: 0 };
  indexSource: TiktokenTokenizer['indexSource'];
  private engine: Engine | undefined;
  private special: readonly string[] = [];

  constructor(
    readonly encoding: EncodingName,
    private readonly prebuiltDir = PREBUILT_RANKS_DIR,
  ) {}

  get loaded(): boolean {
    return this.engine !== undefined;
  }

  get mergeStats(): Readonly<BytePairStats> | undefined {
    return this.engine?.merge?.stats;
  }

  /** The encoder, built on first use. cl100k_base also knows the ChatML delimiters, for encodeChatML. */
  load(): Engine {
    if (!this.engine) {
      const extended = this.encoding === 'cl100k_base' ? { ...CHATML_SPECIAL_TOKENS } : undefined;
      const prebuilt = loadPrebuiltRankIndex(this.encoding, this.prebuiltDir);
      let loaded: LoadedRanks;
      let patStr: string;
      let baseSpecialTokens: Record<string, number>;
      if (prebuilt) {
        let library: Tiktoken | undefined;
        const encoding = this.encoding;
        loaded = {
          index: prebuilt.index,
          fast: true,
          library: () => (library ??= new (loadTiktoken())(loadRanks(encoding), extended)),
        };
        ({ patStr, specialTokens: baseSpecialTokens } = prebuilt);
      } else {
        const ranks = loadRanks(this.encoding);
        loaded = indexRanks(loadTiktoken(), ranks, extended);
        ({ pat_str: patStr, special_tokens: baseSpecialTokens } = ranks);
      }
      this.indexSource = prebuilt ? 'prebuilt' : !loaded.index ? 'none' : loaded.fast ? 'ranks' : 'library';
      this.special = Object.freeze(Object.keys(baseSpecialTokens));
      // The library's specialTokens, in its order: `{ ...ranks.special_tokens, ...extendedSpecialTokens }`.
      const specialTokens = { ...baseSpecialTokens, ...extended };
      const merge = loaded.index && createBytePairEncoder(loaded.index, patStr, specialTokens);
      const specialTexts = new Map(Object.entries(specialTokens).map(([text, id]) => [id, text]));
      this.engine = { ranks: loaded, merge, specialTexts };
    }
    return this.engine;
  }

  /** encode() without counting in the stats. */
  encodeUncounted(text: string): number[] {
    return this.encodeAllowing(text, []);
  }

  /** The ids of `text`; the special tokens in `allowedSpecial` become their ids, every other one is text. */
  encodeAllowing(text: string, allowedSpecial: readonly string[]): number[] {
    const { ranks, merge } = this.load();
    return merge
      ? merge.encode(text, allowedSpecial.length > 0 ? new Set(allowedSpecial) : undefined)
      : ranks.library().encode(text, [...allowedSpecial], []);
  }

  encode(text: string): number[] {
    // No special token allowed, none disallowed: every special-token string is encoded as the text it is.
    const ids = this.encodeUncounted(text);
    this.stats.encodeCalls++;
    this.stats.tokensEncoded += ids.length;
    return ids;
  }

  countTokens(text: string): number {
    // The count alone, without the array of ids, when the merge is in use (the same ids, counted).
    const { merge } = this.load();
    if (!merge) return this.encode(text).length;
    const count = merge.count(text);
    this.stats.encodeCalls++;
    this.stats.tokensEncoded += count;
    return count;
  }

  decode(ids: readonly number[]): string {
    const { ranks, merge, specialTexts } = this.load();
    return merge && ranks.index ? decodeWith(ranks.index, specialTexts, ids) : ranks.library().decode([...ids]);
  }

  specialTokens(): readonly string[] {
    this.load();
    return this.special;
  }
}

const textDecoder = new TextDecoder();

/** What the library's decode does: every id's bytes (a special id's text) in order, unknown ids skipped, as UTF-8. */
function decodeWith(index: TokenIndex, specialTexts: ReadonlyMap<number, string>, ids: readonly number[]): string {
  const parts: Uint8Array[] = [];
  let length = 0;
  for (const id of ids) {
    const special = specialTexts.get(id);
    const bytes = index.bytesOf(id) ?? (special === undefined ? undefined : Buffer.from(special, 'utf8'));
    if (!bytes) continue;
    parts.push(bytes);
    length += bytes.length;
  }
  const joined = new Uint8Array(length);
  let at = 0;
  for (const bytes of parts) {
    joined.set(bytes, at);
    at += bytes.length;
  }
  return textDecoder.decode(joined);
}

const tokenizers = new Map<EncodingName, LazyTiktokenTokenizer>();

function tokenizerFor(encoding: EncodingName): LazyTiktokenTokenizer {
  let tokenizer = tokenizers.get(encoding);
  if (!tokenizer) {
    tokenizer = new LazyTiktokenTokenizer(encoding);
    tokenizers.set(encoding, tokenizer);
  }
  return tokenizer;
}

/** A tokenizer of its own (tests: another place to look for a saved index); the app uses getTokenizer. */
export function createTiktokenTokenizer(
  encoding: EncodingName,
  options: TiktokenTokenizerOptions = {},
): TiktokenTokenizer {
  return new LazyTiktokenTokenizer(encoding, options.prebuiltDir);
}

/** The process-wide tokenizer for `encoding`; its ranks load on first use. */
export function getTokenizer(encoding: EncodingName): TiktokenTokenizer {
  return tokenizerFor(encoding);
}

/**
 * The process-wide encoder for `encoding`, for code that is not the app's counting (the local model stand-in): the
 * same ids as the Tokenizer's encode, not added to its stats.
 */
export function getEncoder(encoding: EncodingName): {
  encode(text: string): number[];
  decode(ids: readonly number[]): string;
} {
  const tokenizer = tokenizerFor(encoding);
  return { encode: (text) => tokenizer.encodeUncounted(text), decode: (ids) => tokenizer.decode(ids) };
}

/**
 * Encodes a rendered ChatML prompt (see core/tokens/chatml.ts) with cl100k_base plus `<|im_start|>`=100264 and
 * `<|im_end|>`=100265, both allowed as special tokens; any other special-token string is encoded as text.
 */
export function encodeChatML(text: string): number[] {
  return tokenizerFor('cl100k_base').encodeAllowing(text, CHATML_DELIMITERS);
}

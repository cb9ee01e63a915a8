/**
 * The prompt-caching rule of Azure OpenAI, for the model stand-in: a prompt of at least 1,024 tokens whose first
 * 1,024 tokens repeat an earlier request's (with the same `prompt_cache_key`) is served partly from the cache, the
 * cached part growing in 128-token steps over the common prefix. Entries expire after a while idle, as the service's
 * do (5-10 minutes; at most an hour).
 *
 * A prompt is compared as the service sees it: per message three fixed tokens, the role, the content and the name,
 * then three tokens priming the reply (the guide's count, so a prompt's sequence is exactly `prompt_tokens` long).
 */

export const CACHE_MIN_TOKENS = 1_024;
export const CACHE_STEP_TOKENS = 128;

/** The tokens a prompt sequence is made of: ordinary ids, and negative ids for the fixed framing tokens. */
export type TokenSequence = readonly number[];

export interface PromptCacheOptions {
  /** How long an entry lives after its last use. Default 10 minutes. */
  ttlMs?: number;
  /** Earlier prompts remembered per key (oldest forgotten first). Default 32. */
  entriesPerKey?: number;
  now?: () => number;
}

export interface PromptMessage {
  role: string;
  content: string;
  name?: string;
}

const MESSAGE_FRAME = [-1, -2, -3];
const NAME_MARK = -4;
const REPLY_PRIMING = [-5, -6, -7];

/** The prompt as one token sequence; `encode` gives the ordinary tokens of a text. */
export function promptSequence(messages: readonly PromptMessage[], encode: (text: string) => readonly number[]) {
  const sequence: number[] = [];
  for (const message of messages) {
    sequence.push(...MESSAGE_FRAME, ...encode(message.role), ...encode(message.content));
    if (message.name !== undefined) sequence.push(...encode(message.name), NAME_MARK);
  }
  sequence.push(...REPLY_PRIMING);
  return sequence;
}

/** The cached part of a prompt whose longest prefix in the cache is `commonPrefix` tokens. */
export function cachedTokensFor(commonPrefix: number): number {
  if (commonPrefix < CACHE_MIN_TOKENS) return 0;
  return CACHE_MIN_TOKENS + Math.floor((commonPrefix - CACHE_MIN_TOKENS) / CACHE_STEP_TOKENS) * CACHE_STEP_TOKENS;
}

function commonPrefixLength(a: TokenSequence, b: TokenSequence): number {
  const length = Math.min(a.length, b.length);
  let index = 0;
  while (index < length && a[index] === b[index]) index++;
  return index;
}

interface Entry {
  sequence: TokenSequence;
  usedAt: number;
}

export class PromptCache {
  private readonly entries = new Map<string, Entry[]>();
  private readonly ttlMs: number;
  private readonly entriesPerKey: number;
  private readonly now: () => number;

  constructor(options: PromptCacheOptions = {}) {
    this.ttlMs = options.ttlMs ?? 10 * 60_000;
    this.entriesPerKey = options.entriesPerKey ?? 32;
    this.now = options.now ?? Date.now;
  }

  /** The cached tokens of this request, then remembers it for the requests after it. */
  serve(key: string, sequence: TokenSequence): number {
    const now = this.now();
    const live = (this.entries.get(key) ?? []).filter((entry) => now - entry.usedAt <= this.ttlMs);
    let best = 0;
    let hit: Entry | undefined;
    for (const entry of live) {
      const common = commonPrefixLength(entry.sequence, sequence);
      if (common > best) {
        best = common;
        hit = entry;
      }
    }
    const cached = cachedTokensFor(best);
    if (hit && cached > 0) hit.usedAt = now;
    live.push({ sequence, usedAt: now });
    while (live.length > this.entriesPerKey) live.shift();
    this.entries.set(key, live);
    return cached;
  }

  clear(): void {
    this.entries.clear();
  }
}

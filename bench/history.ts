/**
 * The conversation every measurement uses: a deterministic chat history of plain English turns (user messages of
 * one or two sentences, longer assistant answers), the user message each measured turn sends, and the model's
 * reply (fixed, so that the reply the app stores is the one the storage floor writes, at every history size).
 */
import { countMessageTokens } from '../src/core/tokens/countTokens';
import type { ChatMessage, Tokenizer } from '../src/core/ports';

const WORDS = (
  'the a of to and in is it you that was for on are with as his they be at one have this from or had by word but ' +
  'what some we can out other were all there when up use your how said an each she which do their time if will way ' +
  'about many then them write would like so these her long make thing see him two has look more day could go come ' +
  'did number sound no most people my over know water than call first who may down side been now find any new ' +
  'work part take get place made live where after back little only round man year came show every good me give our ' +
  'under name very through just form sentence great think say help low line differ turn cause much mean before move ' +
  'right boy old too same tell does set three want air well also play small end put home read hand port large spell ' +
  'add even land here must big high such follow act why ask men change went light kind off need house picture try ' +
  'again animal point mother world near build self earth father storage table partition message token budget model ' +
  'request response latency conversation history function deployment identity endpoint retry timeout stream ' +
  'encoding context window summary example question answer configure subscription region quota throughput'
).split(' ');

/** mulberry32: small, fast, and the same sequence on every machine. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function between(random: () => number, low: number, high: number): number {
  return low + Math.floor(random() * (high - low + 1));
}

function sentence(random: () => number, words: number, end: string): string {
  const picked = Array.from({ length: words }, () => WORDS[Math.floor(random() * WORDS.length)]!);
  if (random() < 0.3) picked[between(random, 0, picked.length - 1)] = String(between(random, 2, 2048));
  const text = picked.join(' ');
  return text.charAt(0).toUpperCase() + text.slice(1) + end;
}

function paragraph(random: () => number, sentences: number, minWords: number, maxWords: number, end = '.'): string {
  return Array.from({ length: sentences }, (_, index) =>
    sentence(random, between(random, minWords, maxWords), index === sentences - 1 ? end : '.'),
  ).join(' ');
}

export interface HistoryMessage extends ChatMessage {
  role: 'user' | 'assistant';
  /** countMessageTokens under the tokenizer the history was generated for: what the store keeps. */
  tokens: number;
}

/**
 * `count` messages alternating user / assistant, user first (~15 words per user message, ~55 per answer). The
 * sequence is prefix-stable: the first 10 messages of a 1,000-message history are the 10-message history.
 */
export function generateHistory(count: number, tokenizer: Tokenizer, seed = 20261121): HistoryMessage[] {
  const random = seededRandom(seed);
  const messages: HistoryMessage[] = [];
  for (let index = 0; index < count; index++) {
    const role = index % 2 === 0 ? 'user' : 'assistant';
    const content =
      role === 'user'
        ? paragraph(random, between(random, 1, 2), 5, 14, '?')
        : paragraph(random, between(random, 3, 5), 8, 18);
    messages.push({ role, content, tokens: countMessageTokens({ role, content }, tokenizer) });
  }
  return messages;
}

/** What every measured turn sends. */
export const NEW_USER_MESSAGE =
  'Thanks. Could you now summarise what we decided about the storage layout, and list the two open questions?';

/** What the model stand-in answers to every turn (the stand-in's `reply` option). */
export const MODEL_REPLY = paragraph(seededRandom(7), 4, 10, 16);

/** The prompt tokens of a whole conversation under the guide's count (system + history + new message + 3). */
export function promptTokensOf(messages: readonly { tokens: number }[]): number {
  return messages.reduce((sum, message) => sum + message.tokens, 3);
}

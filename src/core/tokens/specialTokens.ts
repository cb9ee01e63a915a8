/**
 * The special-token guard. The ChatML guide (Azure OpenAI, "Preventing unsafe user inputs") advises refusing
 * user input that contains special tokens such as `<|im_start|>` and `<|im_end|>`: rendered into a prompt they
 * would let a user forge messages from other roles. Chat content is always encoded as ordinary text, so for the
 * chat endpoint this is defence in depth; for ChatML rendering it is what keeps the prompt well formed.
 */
import type { Tokenizer } from '../ports';

/** ChatML delimiters and the special tokens of the cl100k/o200k families, matched exactly (case-sensitive). */
export const CHATML_MARKERS: readonly string[] = Object.freeze([
  '<|im_start|>',
  '<|im_end|>',
  '<|im_sep|>',
  '<|endoftext|>',
  '<|endofprompt|>',
  '<|fim_prefix|>',
  '<|fim_middle|>',
  '<|fim_suffix|>',
]);

/**
 * The distinct markers found in `text`, in order of first appearance: every CHATML_MARKERS entry and every special
 * token of the tokenizer's encoding, anywhere in the text. Lookalikes (`<|im_start` without `|>`, `< |im_end| >`,
 * other casing) are not special tokens and pass. Returns [] when there is none.
 */
export function findSpecialTokenMarkup(text: string, tokenizer?: Tokenizer): string[] {
  const markers = new Set<string>(CHATML_MARKERS);
  for (const token of tokenizer?.specialTokens() ?? []) markers.add(token);
  return [...markers]
    .map((marker) => ({ marker, at: text.indexOf(marker) }))
    .filter(({ at }) => at >= 0)
    .sort((a, b) => a.at - b.at)
    .map(({ marker }) => marker);
}

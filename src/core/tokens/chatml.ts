/**
 * ChatML rendering for models used through the completions endpoint (Azure OpenAI "Chat Markup Language ChatML"
 * guide, gpt-35-turbo 0301). Each message becomes `<|im_start|>{role}\n{content}\n<|im_end|>` on its own line, and
 * the prompt ends with `<|im_start|>assistant\n` so the model answers as the assistant; send `<|im_end|>` as the stop
 * sequence. The guide's format has no place for a message name, so names are not rendered.
 */
import { SpecialTokenRejectedError } from '../errors';
import type { ChatMessage } from '../ports';
import { findSpecialTokenMarkup } from './specialTokens';

export const CHATML_STOP = '<|im_end|>';

/**
 * Renders messages as a ChatML prompt. Throws SpecialTokenRejectedError when any content carries special-token
 * markup: rendered, it would forge message boundaries (the guide's "Preventing unsafe user inputs").
 */
export function renderChatML(messages: readonly ChatMessage[]): string {
  const markers = [...new Set(messages.flatMap((message) => findSpecialTokenMarkup(message.content)))];
  if (markers.length > 0) throw new SpecialTokenRejectedError(markers);
  const rendered = messages.map((message) => `<|im_start|>${message.role}\n${message.content}\n<|im_end|>\n`);
  return `${rendered.join('')}<|im_start|>assistant\n`;
}

/**
 * The chat guide's count of prompt tokens (Azure OpenAI "Work with chat completions models",
 * `num_tokens_from_messages`): every message costs 3 tokens plus the encoded length of each of its values (role,
 * content, name), a name costs 1 more, and the reply is primed with 3. It matches the service's `prompt_tokens`
 * exactly for the guide's recorded request (29).
 */
import { toChatMessage, type ChatMessage, type EncodingName, type Tokenizer } from '../ports';

export const TOKENS_PER_MESSAGE = 3;
export const TOKENS_PER_NAME = 1;
export const REPLY_PRIMING_TOKENS = 3;

/**
 * Tokens one message adds to a prompt: 3 + len(role) + len(content) (+ len(name) + 1 when it has a name).
 * Tool messages: the cookbook's loop encodes every value of the message, so `tool_call_id` is counted too. An
 * assistant message's `tool_calls` is a list the cookbook does not count; we count each call's function name and
 * arguments as values. The service's `usage.prompt_tokens` is recorded beside this estimate, so any gap shows.
 */
export function countMessageTokens(message: ChatMessage, tokenizer: Tokenizer): number {
  let tokens = TOKENS_PER_MESSAGE + tokenizer.countTokens(message.role) + tokenizer.countTokens(message.content);
  if (message.name !== undefined) tokens += tokenizer.countTokens(message.name) + TOKENS_PER_NAME;
  if (message.toolCallId !== undefined) tokens += tokenizer.countTokens(message.toolCallId);
  for (const call of message.toolCalls ?? []) {
    tokens += tokenizer.countTokens(call.name) + tokenizer.countTokens(call.arguments);
  }
  return tokens;
}

/** Tokens of a whole prompt: the sum over its messages plus the reply priming. */
export function countPromptTokens(messages: readonly ChatMessage[], tokenizer: Tokenizer): number {
  return messages.reduce((sum, message) => sum + countMessageTokens(message, tokenizer), REPLY_PRIMING_TOKENS);
}

/** A message that keeps the count made when it was stored, and the encoding that count was made under. */
export type StoredCount = ChatMessage & { tokens: number; encoding: EncodingName };

/** The stored count if it was made under tokenizer.encoding, else a recount (recounted on demand). */
export function tokensUnder(message: StoredCount, tokenizer: Tokenizer): number {
  return message.encoding === tokenizer.encoding ? message.tokens : countMessageTokens(message, tokenizer);
}

/**
 * The messages as trimming wants them (`{ role, content, name?, tokens }`), each with its count under the active
 * encoding: stored counts are reused, and only messages counted under another encoding are encoded again.
 */
export function withCountsUnder(
  messages: readonly StoredCount[],
  tokenizer: Tokenizer,
): (ChatMessage & { tokens: number })[] {
  return messages.map((message) => ({ ...toChatMessage(message), tokens: tokensUnder(message, tokenizer) }));
}

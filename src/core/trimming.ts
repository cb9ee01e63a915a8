/**
 * Decides what is sent to the model, per the Azure OpenAI chat guide's loop
 * (`while count + max_response_tokens >= token_limit: drop the oldest non-system message`), done per turn:
 *
 * - the prologue (system message and few-shot examples) is pinned and the new user message is never dropped;
 * - whole past turns (a user message and the assistant message(s) answering it) are dropped oldest first while
 *   `promptTokens + maxResponseTokens >= tokenLimit`;
 * - what follows the prologue never starts with an assistant message;
 * - if the prologue and the new message alone do not fit, the turn is refused (`context_length_exceeded`).
 *
 * The guide's alternatives are policies: `max-turns` sends at most `maxTurns` newest turns and then applies the rule;
 * `reject` refuses with `conversation_full` instead of dropping anything. Storage keeps everything either way.
 *
 * This is arithmetic over the counts stored with each message: it never encodes (it takes no tokenizer) and is
 * linear in the number of turns.
 */
import { ContextLengthExceededError, ConversationFullError } from './errors';
import type { ChatMessage } from './ports';
import { REPLY_PRIMING_TOKENS } from './tokens/countTokens';

export type TrimPolicy = 'drop-oldest' | 'max-turns' | 'reject';

export interface TrimBudget {
  /** The model's context window (CHAT_TOKEN_LIMIT or the family default). */
  tokenLimit: number;
  /** Reserved for the reply, and what the model is asked for (CHAT_MAX_RESPONSE_TOKENS). */
  maxResponseTokens: number;
  policy: TrimPolicy;
  /** With policy `max-turns`: the newest past turns sent at most. */
  maxTurns: number;
}

/** A message with its prompt-token count (countMessageTokens) under the active encoding. */
export interface CountedMessage extends ChatMessage {
  tokens: number;
}

export interface ContextPlan {
  /** Prologue, kept past turns and the new message, in order: what is sent. */
  messages: ChatMessage[];
  /** Sum of the counts of what is sent plus the reply priming: the service's `prompt_tokens`. */
  promptTokens: number;
  /** Past turns not sent. */
  droppedTurns: number;
  /** Past turns sent. */
  keptTurns: number;
}

interface Turn {
  messages: CountedMessage[];
  tokens: number;
}

/** Groups past messages into turns: a turn starts at each user message. Leading non-user messages form no turn. */
function groupTurns(history: readonly CountedMessage[]): { turns: Turn[]; orphans: number } {
  const turns: Turn[] = [];
  let orphans = 0;
  let current: Turn | undefined;
  for (const message of history) {
    if (message.role === 'user') {
      current = { messages: [], tokens: 0 };
      turns.push(current);
    }
    if (!current) {
      // An assistant message with no user message before it would start what is sent after the prologue.
      orphans++;
      continue;
    }
    current.messages.push(message);
    current.tokens += message.tokens;
  }
  return { turns, orphans };
}

function sumTokens(messages: readonly CountedMessage[]): number {
  return messages.reduce((sum, message) => sum + message.tokens, 0);
}

/** Copies without the count, so the plan holds exactly what the model is sent. */
function toChatMessage({ role, content, name }: CountedMessage): ChatMessage {
  return name === undefined ? { role, content } : { role, content, name };
}

export function planContext(input: {
  prologue: CountedMessage[];
  history: CountedMessage[];
  newMessage: CountedMessage;
  budget: TrimBudget;
}): ContextPlan {
  const { prologue, history, newMessage, budget } = input;
  const { tokenLimit, maxResponseTokens } = budget;
  const fits = (promptTokens: number) => promptTokens + maxResponseTokens < tokenLimit;

  const pinnedTokens = sumTokens(prologue) + newMessage.tokens + REPLY_PRIMING_TOKENS;
  if (!fits(pinnedTokens)) {
    throw new ContextLengthExceededError(
      `The message does not fit the model's context window: the system message, the examples and this message ` +
        `take ${pinnedTokens} prompt tokens (this message alone ${newMessage.tokens}), and with the ` +
        `${maxResponseTokens} tokens reserved for the reply that reaches the limit of ${tokenLimit} tokens ` +
        `(prompt + reply must stay below it). Shorten the message by at least ` +
        `${pinnedTokens + maxResponseTokens - tokenLimit + 1} tokens, or start a conversation with a shorter ` +
        `system message or fewer examples.`,
      { promptTokens: pinnedTokens, messageTokens: newMessage.tokens, maxResponseTokens, tokenLimit },
    );
  }

  const { turns, orphans } = groupTurns(history);
  let first = budget.policy === 'max-turns' ? Math.max(0, turns.length - Math.max(0, budget.maxTurns)) : 0;
  let promptTokens = pinnedTokens;
  for (let index = first; index < turns.length; index++) promptTokens += turns[index]!.tokens;

  if (budget.policy === 'reject' && !fits(promptTokens)) {
    throw new ConversationFullError(
      `The conversation no longer fits the model's context window: sending it whole takes ${promptTokens} prompt ` +
        `tokens, and with the ${maxResponseTokens} tokens reserved for the reply that reaches the limit of ` +
        `${tokenLimit} tokens. Older messages are not dropped on this service: start a new conversation.`,
      { promptTokens, maxResponseTokens, tokenLimit, turns: turns.length },
    );
  }

  // The guide's loop, a whole turn at a time; it ends at the latest when every turn is gone (pinned fits).
  while (!fits(promptTokens) && first < turns.length) {
    promptTokens -= turns[first]!.tokens;
    first++;
  }

  const kept = turns.slice(first);
  const messages = [...prologue, ...kept.flatMap((turn) => turn.messages), newMessage].map(toChatMessage);
  return { messages, promptTokens, droppedTurns: first + (orphans > 0 ? 1 : 0), keptTurns: kept.length };
}

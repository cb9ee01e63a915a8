/**
 * Decides what is sent to the model, per the Azure OpenAI chat guide's loop
 * (`while count + max_response_tokens >= token_limit: drop the oldest non-system message`), done per turn:
 *
 * - the prologue (system message and few-shot examples) is pinned, and so is the turn in progress: the new user
 *   message and the tool calls and results the turn has produced so far; tool definitions sent count as pinned;
 * - whole past turns (a user message and every message answering it) are dropped oldest first while
 *   `promptTokens + maxResponseTokens >= tokenLimit`, or while the prompt is over `historyTokenLimit`
 *   (CHAT_HISTORY_TOKEN_LIMIT, a cost cap below the window);
 * - what follows the prologue never starts with an assistant message;
 * - if the prologue and the new message alone do not fit the window, the turn is refused (`context_length_exceeded`).
 *   The history cap never refuses a message: over it, the message is sent with no history.
 *
 * The guide's alternatives are policies: `max-turns` sends at most `maxTurns` newest turns and then applies the rule;
 * `reject` refuses with `conversation_full` instead of dropping anything. Storage keeps everything either way.
 *
 * `stable-prefix` keeps the prompt cache warm: the window starts where the previous turn's did (`windowStartSeq`,
 * stored with the conversation) and only grows, so every request repeats the previous one's prefix; when a turn
 * would not fit, whole oldest turns are dropped until the prompt is at most `lowWater` of the budget, and the window
 * grows again from there. A summary of dropped turns (CHAT_SUMMARY=on) is pinned right after the prologue.
 *
 * This is arithmetic over the counts stored with each message: it never encodes (it takes no tokenizer) and is
 * linear in the number of turns.
 */
import { ContextLengthExceededError, ConversationFullError } from './errors';
import { toChatMessage as chatMessageOf, type ChatMessage } from './ports';
import { REPLY_PRIMING_TOKENS } from './tokens/countTokens';

export type TrimPolicy = 'drop-oldest' | 'max-turns' | 'reject' | 'stable-prefix';

export const TRIM_POLICIES = ['drop-oldest', 'max-turns', 'reject', 'stable-prefix'] as const satisfies TrimPolicy[];

export interface TrimBudget {
  /** The model's context window (CHAT_TOKEN_LIMIT or the family default). */
  tokenLimit: number;
  /** Reserved for the reply, and what the model is asked for (CHAT_MAX_RESPONSE_TOKENS). */
  maxResponseTokens: number;
  policy: TrimPolicy;
  /** With policy `max-turns`: the newest past turns sent at most. */
  maxTurns: number;
  /** CHAT_HISTORY_TOKEN_LIMIT: the most prompt tokens sent with any history; undefined: the window alone. */
  historyTokenLimit?: number;
  /** With policy `stable-prefix`: a trim leaves the prompt at most this share of the budget (CHAT_TRIM_LOW_WATER). */
  lowWater?: number;
  /**
   * With summaries on: a trim makes room for a summary message this large (the new summary replaces the old one
   * after the trim), so the prompt still meets the rule once the new summary is in.
   */
  summaryReserveTokens?: number;
}

/** A message with its prompt-token count (countMessageTokens) under the active encoding. */
export interface CountedMessage extends ChatMessage {
  tokens: number;
}

/** A past message; `seq` is its place in the conversation (1-based; its position in the history when absent). */
export interface CountedHistoryMessage extends CountedMessage {
  seq?: number;
}

interface SequencedMessage extends CountedMessage {
  seq: number;
}

export interface ContextPlan {
  /** Prologue, the summary (when sent), kept past turns and the new message, in order: what is sent. */
  messages: ChatMessage[];
  /** Sum of the counts of what is sent plus the reply priming: the service's `prompt_tokens`. */
  promptTokens: number;
  /** Past turns not sent. */
  droppedTurns: number;
  /** Past turns sent. */
  keptTurns: number;
  /** The seq of the first past message sent (the new message's seq when none is): where the window starts. */
  windowStartSeq: number;
  /** True when the summary given was sent (it is left out only when it does not fit beside the new message). */
  summarySent: boolean;
}

interface Turn {
  messages: SequencedMessage[];
  tokens: number;
}

/**
 * Groups past messages into turns: a turn starts at each user message and holds every message up to the next one
 * (the reply, and tool calls and results when there are any), so a turn is kept or dropped whole. Leading non-user
 * messages form no turn.
 */
function groupTurns(history: readonly CountedHistoryMessage[]): { turns: Turn[]; orphans: number } {
  const turns: Turn[] = [];
  let orphans = 0;
  let current: Turn | undefined;
  for (const [index, counted] of history.entries()) {
    const message = { ...counted, seq: counted.seq ?? index + 1 };
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

/** Copies without the count (and seq), so the plan holds exactly what the model is sent (tool calls included). */
function toChatMessage(message: CountedMessage): ChatMessage {
  return chatMessageOf(message);
}

/** The most prompt tokens a request may carry: below the window with the reply reserved, and within the cap. */
export function promptBudget(budget: TrimBudget): number {
  const window = budget.tokenLimit - budget.maxResponseTokens - 1;
  return budget.historyTokenLimit === undefined ? window : Math.min(window, budget.historyTokenLimit);
}

export function planContext(input: {
  prologue: CountedMessage[];
  /** Pinned right after the prologue when it fits. */
  summary?: CountedMessage;
  history: CountedHistoryMessage[];
  newMessage: CountedMessage;
  /** The turn's own tool calls and results so far (after newMessage): pinned like it. */
  turnMessages?: CountedMessage[];
  /** Prompt tokens of the tool definitions sent with the request (countToolDefinitionTokens). */
  toolTokens?: number;
  budget: TrimBudget;
  /** `stable-prefix`: where the previous turn's window started (undefined: at the first message). */
  windowStartSeq?: number;
}): ContextPlan {
  const { prologue, history, newMessage, budget } = input;
  const { tokenLimit, maxResponseTokens } = budget;
  const limit = promptBudget(budget);
  const fitsWindow = (promptTokens: number) => promptTokens + maxResponseTokens < tokenLimit;
  const fits = (promptTokens: number) => promptTokens <= limit;

  const turnMessages = input.turnMessages ?? [];
  const turnTokens = sumTokens(turnMessages) + (input.toolTokens ?? 0);
  const pinnedTokens = sumTokens(prologue) + newMessage.tokens + turnTokens + REPLY_PRIMING_TOKENS;
  if (!fitsWindow(pinnedTokens)) {
    throw new ContextLengthExceededError(
      `The message does not fit the model's context window: the system message, the examples and this message ` +
        (turnTokens > 0 ? `with this turn's tools, tool calls and results (${turnTokens} tokens) ` : '') +
        `take ${pinnedTokens} prompt tokens (this message alone ${newMessage.tokens}), and with the ` +
        `${maxResponseTokens} tokens reserved for the reply that reaches the limit of ${tokenLimit} tokens ` +
        `(prompt + reply must stay below it). Shorten the message by at least ` +
        `${pinnedTokens + maxResponseTokens - tokenLimit + 1} tokens, or start a conversation with a shorter ` +
        `system message or fewer examples.`,
      { promptTokens: pinnedTokens, messageTokens: newMessage.tokens, maxResponseTokens, tokenLimit },
    );
  }
  // The summary is pinned too, but it gives way (it is not sent) rather than refuse a message that fits without it.
  const summary = input.summary && fits(pinnedTokens + input.summary.tokens) ? input.summary : undefined;
  const pinned = pinnedTokens + (summary?.tokens ?? 0);

  const { turns, orphans } = groupTurns(history);
  let first = 0;
  if (budget.policy === 'max-turns') first = Math.max(0, turns.length - Math.max(0, budget.maxTurns));
  if (budget.policy === 'stable-prefix' && input.windowStartSeq !== undefined) {
    const start = input.windowStartSeq;
    while (first < turns.length && turns[first]!.messages[0]!.seq < start) first++;
  }
  let promptTokens = pinned;
  for (let index = first; index < turns.length; index++) promptTokens += turns[index]!.tokens;

  if (budget.policy === 'reject' && !fits(promptTokens)) {
    throw new ConversationFullError(
      `The conversation no longer fits the model's context window: sending it whole takes ${promptTokens} prompt ` +
        `tokens, and with the ${maxResponseTokens} tokens reserved for the reply that goes over the ${limit} ` +
        `prompt tokens a request may carry (window ${tokenLimit}` +
        `${budget.historyTokenLimit !== undefined ? `, CHAT_HISTORY_TOKEN_LIMIT ${budget.historyTokenLimit}` : ''}). ` +
        `Older messages are not dropped on this service: start a new conversation.`,
      { promptTokens, maxResponseTokens, tokenLimit, turns: turns.length },
    );
  }

  if (budget.policy === 'stable-prefix' && !fits(promptTokens)) {
    // One trim, down to the low-water mark, with room kept for the summary that will replace the current one.
    const target = Math.floor((budget.lowWater ?? 1) * limit);
    const reserve = Math.max(summary?.tokens ?? 0, budget.summaryReserveTokens ?? 0) - (summary?.tokens ?? 0);
    while (promptTokens + reserve > target && first < turns.length) {
      promptTokens -= turns[first]!.tokens;
      first++;
    }
  }
  // The guide's loop, a whole turn at a time; it ends at the latest when every turn is gone (pinned fits).
  while (!fits(promptTokens) && first < turns.length) {
    promptTokens -= turns[first]!.tokens;
    first++;
  }

  const kept = turns.slice(first);
  const messages = [
    ...prologue,
    ...(summary ? [summary] : []),
    ...kept.flatMap((turn) => turn.messages),
    newMessage,
    ...turnMessages,
  ].map(toChatMessage);
  const last = history.at(-1);
  const nextSeq = (last?.seq ?? history.length) + 1;
  return {
    messages,
    promptTokens,
    droppedTurns: first + (orphans > 0 ? 1 : 0),
    keptTurns: kept.length,
    windowStartSeq: kept[0]?.messages[0]?.seq ?? nextSeq,
    summarySent: summary !== undefined,
  };
}

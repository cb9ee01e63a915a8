/**
 * Summaries of the turns that left the window (CHAT_SUMMARY=on). When a trim drops turns the summary does not
 * cover yet, the model rewrites the summary from the previous one plus the newly dropped messages, within its own
 * token budget (CHAT_SUMMARY_MAX_TOKENS). The summary is stored with the conversation and pinned right after the
 * prologue; it changes only when more turns drop, so between trims it is part of the repeated (cached) prefix.
 *
 * A summary is a convenience, never a reason to fail the user's turn: whatever goes wrong here (the model refuses,
 * times out, answers nothing usable) is reported as `undefined`, the turn goes on with the old summary, and the
 * next turn that finds dropped messages not covered tries again.
 */
import {
  type ChatMessage,
  type Completion,
  type CompletionRequest,
  type HistorySummary,
  NO_USAGE,
  type StoredMessage,
  type Tokenizer,
  type Usage,
} from './ports';
import { countMessageTokens, countPromptTokens, REPLY_PRIMING_TOKENS } from './tokens/countTokens';
import type { CountedMessage } from './trimming';

/** What the pinned summary message starts with, so the model reads it as context, not as an instruction. */
export const SUMMARY_HEADING = 'Summary of the earlier part of this conversation (those messages are not shown):\n\n';

/**
 * Longest summary stored, in UTF-16 units: it lives on the conversation's header entity beside the prologue (at most
 * 450,000 characters as JSON), and the two together must stay under the 1 MiB entity limit.
 */
export const MAX_SUMMARY_CHARS = 24_000;

/** Tokens a summary may differ from the sum of its parts when heading and text are encoded together. */
const JOIN_SLACK_TOKENS = 4;

const INSTRUCTIONS =
  'You keep a running summary of a conversation between a user and an assistant, for the assistant to read ' +
  'instead of the messages it no longer sees. Rewrite the current summary so it also covers the new messages. ' +
  'Keep facts, names, numbers, decisions, the user’s preferences and open questions; leave out small talk. ' +
  'Write plain prose or short bullet points, in the language of the conversation. Answer with the summary only.';

export interface SummarySettings {
  enabled: boolean;
  /** The summary call's max_tokens: the summary's own budget. */
  maxTokens: number;
}

/** The pinned message for a stored summary, with its exact count. */
export function summaryMessage(summary: HistorySummary, tokenizer: Tokenizer): CountedMessage {
  const message: ChatMessage = { role: 'system', content: SUMMARY_HEADING + summary.content };
  const tokens = summary.encoding === tokenizer.encoding ? summary.tokens : countMessageTokens(message, tokenizer);
  return { ...message, tokens };
}

/** Room a trim leaves for the summary that will replace the current one: the heading plus the summary budget. */
export function summaryReserveTokens(settings: SummarySettings, tokenizer: Tokenizer): number {
  if (!settings.enabled) return 0;
  return (
    countMessageTokens({ role: 'system', content: SUMMARY_HEADING }, tokenizer) + settings.maxTokens + JOIN_SLACK_TOKENS
  );
}

export interface SummaryOutcome {
  summary: HistorySummary;
  usage: Usage;
}

/**
 * Asks the model for the summary of everything before `throughSeq + 1`, from the previous summary and the dropped
 * messages it does not cover. Only the newest dropped messages that fit the model's window are sent (a first trim of
 * a very long conversation cannot send them all). Throws when the model fails or answers nothing usable.
 */
export async function writeSummary(input: {
  /** Sends the request (the turn meters it against the quota and fails it over); `promptTokens` is its count. */
  complete: (request: CompletionRequest, promptTokens: number) => Promise<Completion>;
  tokenizer: Tokenizer;
  settings: SummarySettings;
  /** The context window: the summary request must fit it like any other. */
  tokenLimit: number;
  conversationId: string;
  previous: HistorySummary | undefined;
  /** Dropped messages after `previous.throughSeq`, in order. */
  dropped: StoredMessage[];
  throughSeq: number;
  now: Date;
}): Promise<SummaryOutcome> {
  const { tokenizer, settings } = input;
  const system: ChatMessage = { role: 'system', content: INSTRUCTIONS };
  const current = input.previous ? input.previous.content : '(none yet)';
  const fixed =
    countMessageTokens(system, tokenizer) +
    countMessageTokens({ role: 'user', content: `Current summary:\n${current}\n\nNew messages:\n` }, tokenizer) +
    REPLY_PRIMING_TOKENS;
  // Each transcript line costs about what the message costs in a prompt (3 + role + content): count by that.
  let room = input.tokenLimit - settings.maxTokens - 1 - fixed;
  let first = input.dropped.length;
  while (first > 0 && input.dropped[first - 1]!.tokens <= room) room -= input.dropped[--first]!.tokens;
  // Whole turns only: a reply whose question did not fit is left out with it.
  while (first < input.dropped.length && input.dropped[first]!.role !== 'user') first++;
  const lines = input.dropped
    .slice(first)
    .map((message) => `${message.name ? `${message.role} (${message.name})` : message.role}: ${message.content}`);
  const user: ChatMessage = {
    role: 'user',
    content: `Current summary:\n${current}\n\nNew messages:\n${lines.join('\n\n')}`,
  };
  const promptTokens = countPromptTokens([system, user], tokenizer);
  const completion = await input.complete(
    { messages: [system, user], maxResponseTokens: settings.maxTokens, cacheKey: `${input.conversationId}/summary` },
    promptTokens,
  );
  const content = completion.content.trim();
  if (content === '' || completion.finishReason === 'content_filter') {
    throw new Error(`The summary came back unusable (finish reason ${completion.finishReason}).`);
  }
  if (content.length > MAX_SUMMARY_CHARS) {
    throw new Error(`The summary came back longer than ${MAX_SUMMARY_CHARS} characters.`);
  }
  const summary: HistorySummary = {
    content,
    tokens: countMessageTokens({ role: 'system', content: SUMMARY_HEADING + content }, tokenizer),
    encoding: tokenizer.encoding,
    throughSeq: input.throughSeq,
    createdAt: input.now.toISOString(),
  };
  // No usage reported: counted here (the prompt by the guide's formula, the reply tokenized), never free.
  const completionTokens = tokenizer.countTokens(completion.content);
  const usage = completion.usage ?? {
    ...NO_USAGE,
    promptTokens,
    completionTokens,
    totalTokens: promptTokens + completionTokens,
  };
  return { summary, usage };
}

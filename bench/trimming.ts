/**
 * Figure 2: trimming a long history to the budget, the chat guide's way against ours, same history, same budget,
 * same tokenizer, and the same messages kept (checked).
 *
 * The guide's loop (Azure OpenAI "Work with chat completions models", Manage conversations):
 *
 *     conv_history_tokens = num_tokens_from_messages(conversation)
 *     while conv_history_tokens + max_response_tokens >= token_limit:
 *         del conversation[1]
 *         conv_history_tokens = num_tokens_from_messages(conversation)
 *
 * re-encodes every remaining message after each deletion. Ours (what a turn runs, src/core/turn.ts `prepare`)
 * encodes the new message once and plans over the counts stored with each message (src/core/trimming.ts).
 *
 * Ours drops whole turns and never lets what follows the system message start with an assistant message, so when
 * the guide's loop stops between a question and its answer, ours also drops that orphaned answer. The check
 * accounts for exactly that one message and nothing else.
 */
import { isDeepStrictEqual } from 'node:util';
import { performance } from 'node:perf_hooks';
import {
  countMessageTokens,
  countPromptTokens,
  withCountsUnder,
  type StoredCount,
} from '../src/core/tokens/countTokens';
import { planContext, type ContextPlan } from '../src/core/trimming';
import type { ChatMessage, Tokenizer } from '../src/core/ports';
import type { Budget } from './setup';
import { median, type Figure } from './stats';

export interface TrimmingInput {
  /** The system message (and examples), with their stored counts. */
  prologue: readonly StoredCount[];
  /** The stored history, with the counts made when each message was stored. */
  history: readonly StoredCount[];
  newMessage: ChatMessage;
  budget: Budget;
  tokenizer: Tokenizer;
}

export interface TrimmingOptions {
  /** Runs of our planner (after as many warm-up runs). */
  ourRepetitions: number;
  /** Runs of the guide's loop; it takes seconds at 1,000 messages, so a few are enough. */
  referenceRepetitions: number;
}

/** The guide's loop, verbatim: delete the oldest non-system message and count everything again. */
export function referenceTrim(input: TrimmingInput): ChatMessage[] {
  const conversation: ChatMessage[] = [
    ...input.prologue.map(({ role, content }) => ({ role, content })),
    ...input.history.map(({ role, content }) => ({ role, content })),
    { ...input.newMessage },
  ];
  const { tokenLimit, maxResponseTokens } = input.budget;
  let tokens = countPromptTokens(conversation, input.tokenizer);
  while (tokens + maxResponseTokens >= tokenLimit) {
    conversation.splice(1, 1);
    tokens = countPromptTokens(conversation, input.tokenizer);
  }
  return conversation;
}

/** What a turn does between loading the conversation and calling the model. */
export function ourTrim(input: TrimmingInput): ContextPlan {
  const { tokenizer } = input;
  return planContext({
    prologue: withCountsUnder(input.prologue, tokenizer),
    history: withCountsUnder(input.history, tokenizer),
    newMessage: { ...input.newMessage, tokens: countMessageTokens(input.newMessage, tokenizer) },
    budget: { ...input.budget, policy: 'drop-oldest', maxTurns: 0 },
  });
}

export function measureTrimming(input: TrimmingInput, options: TrimmingOptions): Figure[] {
  const referenceTimes: number[] = [];
  let reference: ChatMessage[] = [];
  for (let run = 0; run < options.referenceRepetitions; run++) {
    const start = performance.now();
    reference = referenceTrim(input);
    referenceTimes.push(performance.now() - start);
  }
  const ourTimes: number[] = [];
  let plan: ContextPlan | undefined;
  for (let run = 0; run < 2 * options.ourRepetitions; run++) {
    const start = performance.now();
    plan = ourTrim(input);
    if (run >= options.ourRepetitions) ourTimes.push(performance.now() - start);
  }
  if (!plan) throw new Error('No repetitions of our planner.');

  const orphanedAnswer = reference[1]?.role === 'assistant';
  const expected = orphanedAnswer ? [reference[0]!, ...reference.slice(2)] : reference;
  if (!isDeepStrictEqual(plan.messages, expected)) {
    throw new Error(
      `Trimming disagrees with the guide's loop: it kept ${plan.messages.length} messages, the loop ${reference.length}` +
        `${orphanedAnswer ? ' (one an orphaned answer)' : ''}.`,
    );
  }
  if (plan.promptTokens !== countPromptTokens(plan.messages, input.tokenizer)) {
    throw new Error(`The plan's count ${plan.promptTokens} is not what the tokenizer counts for what it sends.`);
  }
  const dropped = input.history.length + input.prologue.length + 1 - reference.length;
  const referenceMs = median(referenceTimes);
  const ourMs = median(ourTimes);
  const size = input.history.length;
  return [
    {
      name: `trim_speedup_${size}`,
      value: referenceMs / ourMs,
      unit: 'x',
      target: '>= 100',
      note: `guide's loop / ours, same ${plan.messages.length} messages kept`,
    },
    {
      name: `trim_reference_ms_${size}`,
      value: referenceMs,
      unit: 'ms',
      note: `re-count after each of ${dropped} deletions (${options.referenceRepetitions} runs)`,
    },
    {
      name: `trim_ours_ms_${size}`,
      value: ourMs,
      unit: 'ms',
      note: `count the new message + planContext (${options.ourRepetitions} runs)`,
    },
  ];
}

/**
 * One chat turn, top to bottom: load the conversation, append the user's message, trim the history to the
 * token budget, call the model, persist the user message and the reply in one transaction. A turn that lost a
 * race with another turn re-reads and runs again on the history it will commit on, so the model always sees
 * exactly what is stored. An Idempotency-Key makes a retried request answer the stored result.
 */
import { createHash } from 'node:crypto';
import {
  ConversationBusyError,
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  NotFoundError,
  SpecialTokenRejectedError,
} from './errors';
import {
  ConcurrencyConflict,
  NO_USAGE,
  type Caller,
  type ChatMessage,
  type Completion,
  type CompletionChunk,
  type Conversation,
  type HistorySummary,
  type IdempotencyClaim,
  type StoredMessage,
  type TurnRecord,
  type Usage,
} from './ports';
import { countMessageTokens, tokensUnder } from './tokens/countTokens';
import { findSpecialTokenMarkup } from './tokens/specialTokens';
import { summaryMessage, summaryReserveTokens, writeSummary } from './summaries';
import { planContext, type ContextPlan } from './trimming';
import type { ChatDependencies } from './dependencies';

export interface TurnInput {
  caller: Caller;
  conversationId: string;
  content: string;
  name?: string;
  idempotencyKey?: string;
  /**
   * The same queued turn again after its worker died (a redelivered queue message): take over the earlier run's
   * idempotency claim even while its lease lasts. Safe: a stale run's commit fails on the claim's ETag.
   */
  reclaimAbandoned?: boolean;
}

export interface TurnResult {
  conversationId: string;
  message: { id: string; role: 'assistant'; content: string; createdAt: string };
  finishReason: string;
  usage: Usage;
  context: { promptTokens: number; droppedTurns: number };
  /** True when this answer was replayed from an earlier request with the same Idempotency-Key. */
  replayed: boolean;
}

/** A turn ready to call the model: what will be sent and how to commit the reply. */
export interface PreparedTurn {
  conversationId: string;
  plan: ContextPlan;
  /** Stores the reply with the user message; throws ConcurrencyConflict when the conversation moved on. */
  commit(completion: Completion): Promise<TurnResult>;
}

export class TurnRunner {
  constructor(private readonly deps: ChatDependencies) {}

  /** Runs a whole turn and returns the stored reply. */
  async send(input: TurnInput, signal?: AbortSignal): Promise<TurnResult> {
    return this.withIdempotency(input, async (claim) => {
      const { settings } = this.deps;
      const user = this.userMessage(input);
      for (let attempt = 1; ; attempt++) {
        const turn = await this.prepareAdmitted(input, user, claim, attempt === 1);
        const completion = await this.deps.model.complete(this.completionRequest(turn), signal);
        try {
          return await this.commitAndRecord(input.caller, turn, completion);
        } catch (error) {
          if (!(error instanceof ConcurrencyConflict)) throw error;
          if (attempt >= settings.turnAttempts) throw new ConversationBusyError();
          await delay(jitteredBackoff(attempt));
        }
      }
    });
  }

  /**
   * Runs a turn whose reply is streamed: `onStart` learns the context before the first delta, `onDelta` gets each
   * piece in order. The reply is stored when the model's stream ends, exactly as `send` stores it. A streamed turn
   * cannot be re-run after its deltas were shown, so a lost race ends with conversation_busy and nothing stored.
   */
  async stream(
    input: TurnInput,
    handlers: {
      onStart(info: { conversationId: string; messageId: string; promptTokens: number; droppedTurns: number }): void;
      onDelta(content: string): void;
      onReplay(result: TurnResult): void;
    },
    signal?: AbortSignal,
  ): Promise<TurnResult> {
    return this.withIdempotency(
      input,
      async (claim) => {
        const turn = await this.prepareAdmitted(input, this.userMessage(input), claim, true);
        handlers.onStart({
          conversationId: turn.conversationId,
          messageId: turn.replyId,
          promptTokens: turn.plan.promptTokens,
          droppedTurns: turn.plan.droppedTurns,
        });
        const completion = await collectStream(
          this.deps.model.stream(this.completionRequest(turn), signal),
          handlers.onDelta,
        );
        try {
          return await this.commitAndRecord(input.caller, turn, completion);
        } catch (error) {
          if (error instanceof ConcurrencyConflict) throw new ConversationBusyError();
          throw error;
        }
      },
      handlers.onReplay,
    );
  }

  /** The limiter's check runs beside the conversation load, so it adds no round trip to the turn's latency. */
  private async prepareAdmitted(
    input: TurnInput,
    user: CountedUserMessage,
    claim: IdempotencyClaim | undefined,
    admit: boolean,
  ): Promise<PreparedTurn & { replyId: string }> {
    if (!admit) return this.prepare(input, user, claim, Promise.resolve());
    const admitted = this.deps.limiter.admit(input.caller, this.deps.clock.now());
    const [, turn] = await Promise.all([admitted, this.prepare(input, user, claim, admitted)]);
    return turn;
  }

  /** Tokens are recorded beside the commit: they were spent whether or not this attempt's commit wins. */
  private async commitAndRecord(caller: Caller, turn: PreparedTurn, completion: Completion): Promise<TurnResult> {
    const recording = this.deps.limiter
      .record(caller, completion.usage.totalTokens, this.deps.clock.now())
      .catch((error: unknown) => this.deps.log.warn(`Could not record token usage: ${String(error)}`));
    try {
      return await turn.commit(completion);
    } finally {
      await recording;
    }
  }

  private completionRequest(turn: PreparedTurn) {
    const { settings } = this.deps;
    return {
      messages: turn.plan.messages,
      maxResponseTokens: settings.maxResponseTokens,
      ...(settings.temperature !== undefined ? { temperature: settings.temperature } : {}),
      // One conversation's requests share a prompt cache: its repeated prefix is billed at the cached rate.
      cacheKey: turn.conversationId,
    };
  }

  /** Claims the Idempotency-Key (when there is one) around `run`, or answers from the stored result. */
  private async withIdempotency(
    input: TurnInput,
    run: (claim: IdempotencyClaim | undefined) => Promise<TurnResult>,
    onReplay?: (result: TurnResult) => void,
  ): Promise<TurnResult> {
    this.rejectSpecialTokens(input);
    const key = input.idempotencyKey;
    if (key === undefined) return run(undefined);

    const { store, clock, settings } = this.deps;
    // No existence check first: a key claimed for a missing conversation (or another caller's, which is a different
    // partition) is released when the turn finds nothing to load, and the answer is the same 404.
    const requestHash = hashTurnRequest(input);
    const begun = await store.beginIdempotent(input.caller, input.conversationId, key, requestHash, {
      now: clock.now(),
      leaseMs: settings.idempotencyLeaseMs,
      ...(input.reclaimAbandoned ? { takeOver: true } : {}),
    });
    if (begun.state !== 'claimed') {
      if (begun.requestHash !== requestHash) throw new IdempotencyKeyReusedError();
      if (begun.state === 'in_progress') throw new IdempotencyInProgressError();
      const replay = await this.replay(input, begun.record);
      onReplay?.(replay);
      return replay;
    }
    try {
      return await run(begun.claim);
    } catch (error) {
      // Nothing was stored: free the key so the client's retry runs the turn again.
      await store.releaseIdempotent(input.caller, input.conversationId, key, begun.claim).catch((releaseError) => {
        this.deps.log.warn(`Could not release an idempotency key after a failed turn: ${String(releaseError)}`);
      });
      throw error;
    }
  }

  private async replay(input: TurnInput, record: TurnRecord): Promise<TurnResult> {
    const reply = await this.deps.store.getMessage(input.caller, input.conversationId, record.replySeq);
    if (!reply) throw conversationNotFound();
    return toResult(record, reply, true);
  }

  private rejectSpecialTokens(input: TurnInput): void {
    const markers = [
      ...findSpecialTokenMarkup(input.content, this.deps.tokenizer),
      ...(input.name ? findSpecialTokenMarkup(input.name, this.deps.tokenizer) : []),
    ];
    if (markers.length > 0) throw new SpecialTokenRejectedError([...new Set(markers)]);
  }

  /** Load, append, trim: everything up to the model call. `admitted` settles when the limiter has answered. */
  private async prepare(
    input: TurnInput,
    user: CountedUserMessage,
    claim: IdempotencyClaim | undefined,
    admitted: Promise<void>,
  ): Promise<PreparedTurn & { replyId: string }> {
    const { store, tokenizer, clock } = this.deps;
    const loaded = await store.loadForTurn(input.caller, input.conversationId);
    if (!loaded) throw conversationNotFound();
    const { conversation, messages: history } = loaded;

    const { plan, summary } = await this.planWithSummary(input.caller, conversation, history, user, admitted);

    const userSeq = conversation.messageCount + 1;
    const sentAt = clock.now().toISOString();
    return {
      conversationId: conversation.id,
      plan,
      replyId: messageId(userSeq + 1),
      commit: async (completion) => {
        const repliedAt = clock.now().toISOString();
        const stored: StoredMessage = {
          ...user.message,
          role: 'user',
          seq: userSeq,
          id: messageId(userSeq),
          createdAt: sentAt,
          tokens: user.tokens,
          encoding: tokenizer.encoding,
        };
        const reply: StoredMessage = {
          role: 'assistant',
          content: completion.content,
          seq: userSeq + 1,
          id: messageId(userSeq + 1),
          createdAt: repliedAt,
          tokens: countMessageTokens({ role: 'assistant', content: completion.content }, tokenizer),
          encoding: tokenizer.encoding,
          finishReason: completion.finishReason,
          usage: completion.usage,
        };
        const record: TurnRecord = {
          conversationId: conversation.id,
          replySeq: reply.seq,
          finishReason: completion.finishReason,
          usage: completion.usage,
          context: { promptTokens: plan.promptTokens, droppedTurns: plan.droppedTurns },
        };
        await store.commitTurn(input.caller, {
          conversationId: conversation.id,
          expectedVersion: conversation.version,
          messages: [stored, reply],
          updatedAt: repliedAt,
          header: {
            totals: addUsage(
              summary ? addUsage(conversation.totals, summary.usage) : conversation.totals,
              completion.usage,
            ),
            windowStartSeq: plan.windowStartSeq,
            ...(summary ? { summary: summary.summary } : {}),
          },
          ...(claim && input.idempotencyKey
            ? { idempotency: { key: input.idempotencyKey, claim, requestHash: hashTurnRequest(input), record } }
            : {}),
        });
        return toResult(record, reply, false);
      },
    };
  }

  /**
   * Trims the history to the budget. With summaries on, a trim that leaves dropped messages the stored summary does
   * not cover asks the model for a new summary first, so this turn is sent with it. A failed summary call only logs:
   * the turn goes on with the old summary, and the next turn tries again. The summary's tokens count against the
   * caller's quota whether or not the turn commits.
   */
  private async planWithSummary(
    caller: Caller,
    conversation: Conversation,
    history: StoredMessage[],
    user: CountedUserMessage,
    admitted: Promise<void>,
  ): Promise<{ plan: ContextPlan; summary?: { summary: HistorySummary; usage: Usage } }> {
    const { tokenizer, settings, clock } = this.deps;
    const plan = (summary: HistorySummary | undefined, windowStartSeq: number | undefined) =>
      planContext({
        prologue: conversation.prologue.map((message) => counted(message, tokensUnder(message, tokenizer))),
        ...(summary && settings.summary.enabled ? { summary: summaryMessage(summary, tokenizer) } : {}),
        history: history.map((message) => ({ ...counted(message, tokensUnder(message, tokenizer)), seq: message.seq })),
        newMessage: counted(user.message, user.tokens),
        budget: {
          tokenLimit: settings.tokenLimit,
          maxResponseTokens: settings.maxResponseTokens,
          policy: settings.trimPolicy,
          maxTurns: settings.maxTurns,
          lowWater: settings.trimLowWater,
          ...(settings.historyTokenLimit !== undefined ? { historyTokenLimit: settings.historyTokenLimit } : {}),
          summaryReserveTokens: summaryReserveTokens(settings.summary, tokenizer),
        },
        ...(windowStartSeq !== undefined ? { windowStartSeq } : {}),
      });

    const first = plan(conversation.summary, conversation.windowStartSeq);
    const covered = conversation.summary?.throughSeq ?? 0;
    const droppedThrough = first.windowStartSeq - 1;
    if (!settings.summary.enabled || droppedThrough <= covered) return { plan: first };

    // A refused caller (rate limit, quota) must not cost a summary call: it throws here like the turn does.
    await admitted;
    let outcome: { summary: HistorySummary; usage: Usage };
    try {
      outcome = await writeSummary({
        model: this.deps.model,
        tokenizer,
        settings: settings.summary,
        tokenLimit: settings.tokenLimit,
        conversationId: conversation.id,
        previous: conversation.summary,
        dropped: history.filter((message) => message.seq > covered && message.seq <= droppedThrough),
        throughSeq: droppedThrough,
        now: clock.now(),
      });
    } catch (error) {
      this.deps.log.warn(
        `Could not summarise messages ${covered + 1}-${droppedThrough} of a conversation; the turn goes on without ` +
          `the new summary and the next turn tries again: ${error instanceof Error ? error.message : String(error)}`,
      );
      return { plan: first };
    }
    // Spent whether or not this turn commits; a trim turn only, so the round trip is rare.
    await this.deps.limiter
      .record(caller, outcome.usage.totalTokens, clock.now())
      .catch((error: unknown) => this.deps.log.warn(`Could not record summary token usage: ${String(error)}`));
    // The trim left room for the new summary, so the window stays where the trim put it.
    return { plan: plan(outcome.summary, first.windowStartSeq), summary: outcome };
  }

  /** The user's message is encoded once per turn, however many attempts the turn takes. */
  private userMessage(input: TurnInput): CountedUserMessage {
    const message: ChatMessage = { role: 'user', content: input.content, ...(input.name ? { name: input.name } : {}) };
    return { message, tokens: countMessageTokens(message, this.deps.tokenizer) };
  }
}

interface CountedUserMessage {
  message: ChatMessage;
  tokens: number;
}

export function messageId(seq: number): string {
  return `msg_${String(seq).padStart(10, '0')}`;
}

export function seqFromMessageId(id: string): number | undefined {
  const match = /^msg_(\d{10})$/.exec(id);
  return match ? Number(match[1]) : undefined;
}

function counted<T extends ChatMessage>(message: T, tokens: number): ChatMessage & { tokens: number } {
  return { role: message.role, content: message.content, ...(message.name ? { name: message.name } : {}), tokens };
}

function toResult(record: TurnRecord, reply: StoredMessage, replayed: boolean): TurnResult {
  return {
    conversationId: record.conversationId,
    message: { id: reply.id, role: 'assistant', content: reply.content, createdAt: reply.createdAt },
    finishReason: record.finishReason,
    // Records stored before cached tokens were reported have none.
    usage: { ...NO_USAGE, ...record.usage },
    context: record.context,
    replayed,
  };
}

function addUsage(totals: Conversation['totals'], usage: Usage): Conversation['totals'] {
  return {
    promptTokens: totals.promptTokens + usage.promptTokens,
    cachedPromptTokens: totals.cachedPromptTokens + usage.cachedPromptTokens,
    completionTokens: totals.completionTokens + usage.completionTokens,
  };
}

function conversationNotFound(): NotFoundError {
  return new NotFoundError('No conversation with this id exists for the caller.');
}

/** Same content and name -> same hash: a retry matches, a different body under the same key does not. */
export function hashTurnRequest(input: Pick<TurnInput, 'content' | 'name'>): string {
  return createHash('sha256')
    .update(JSON.stringify([input.content, input.name ?? null]))
    .digest('base64url');
}

async function collectStream(
  chunks: AsyncIterable<CompletionChunk>,
  onDelta: (content: string) => void,
): Promise<Completion> {
  let content = '';
  for await (const chunk of chunks) {
    if (chunk.type === 'delta') {
      content += chunk.content;
      onDelta(chunk.content);
    } else {
      return { content, finishReason: chunk.finishReason, usage: chunk.usage };
    }
  }
  throw new Error('The model stream ended without a final chunk.');
}

function jitteredBackoff(attempt: number): number {
  const base = Math.min(1000, 50 * 2 ** (attempt - 1));
  return base / 2 + Math.random() * (base / 2);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

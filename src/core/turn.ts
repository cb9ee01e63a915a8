/**
 * One chat turn, top to bottom: load the conversation, append the user's message, trim the history to the
 * token budget, call the model, persist the user message and the reply in one transaction. A turn that lost a
 * race with another turn re-reads and runs again on the history it will commit on, so the model always sees
 * exactly what is stored. An Idempotency-Key makes a retried request answer the stored result.
 */
import { createHash } from 'node:crypto';
import { ClaimReleases } from './claimReleases';
import {
  ConversationBusyError,
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  NotFoundError,
  SpecialTokenRejectedError,
} from './errors';
import {
  ClaimLost,
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
  type Tokenizer,
  type TurnRecord,
  type Usage,
} from './ports';
import { ModelDeployments, type ModelDeployment } from './failover';
import { inSpan, noTelemetry, type Telemetry } from './telemetry';
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
  /** The model deployment that answered (absent on replays of turns stored before it was recorded). */
  deployment?: string;
}

export interface TurnStreamHandlers {
  onStart(info: { conversationId: string; messageId: string; promptTokens: number; droppedTurns: number }): void;
  onDelta(content: string): void;
  onReplay(result: TurnResult): void;
}

/** A turn ready to call the model: what will be sent and how to commit the reply. */
export interface PreparedTurn {
  conversationId: string;
  /** What goes to the first deployment to try (the one the conversation sticks to, or the first healthy one). */
  plan: ContextPlan;
  /** What goes to a given deployment: counted with its encoding, trimmed to its window. */
  planFor(deployment: ModelDeployment): ContextPlan;
  /**
   * Stores the reply with the user message; throws ConcurrencyConflict when the conversation moved on, ClaimLost
   * when another request took this one's Idempotency-Key over.
   */
  commit(completion: CountedCompletion, deployment: ModelDeployment): Promise<TurnResult>;
}

export class TurnRunner {
  /** The deployments a model call may go to, with failover (one, built from `model`, unless configured). */
  private readonly models: ModelDeployments;
  /** Claims of failed turns that storage did not let us release yet (see claimReleases.ts). */
  private readonly releases: ClaimReleases;
  private readonly telemetry: Telemetry;

  constructor(private readonly deps: ChatDependencies) {
    this.telemetry = deps.telemetry ?? noTelemetry;
    this.models =
      deps.deployments ??
      ModelDeployments.single(
        {
          name: 'default',
          modelName: 'default',
          model: deps.model,
          tokenizer: deps.tokenizer,
          tokenLimit: deps.settings.tokenLimit,
        },
        deps.clock,
        deps.log,
        this.telemetry,
      );
    this.releases = new ClaimReleases(deps.log, () => deps.clock.now().getTime());
  }

  /** Runs a whole turn and returns the stored reply; the turn is one span, its storage and model calls children. */
  async send(input: TurnInput, signal?: AbortSignal): Promise<TurnResult> {
    return this.traced(input, false, () => this.sendTurn(input, signal));
  }

  private async traced(input: TurnInput, streamed: boolean, run: () => Promise<TurnResult>): Promise<TurnResult> {
    return inSpan(
      this.telemetry,
      'chat.turn',
      { attributes: { 'gen_ai.conversation.id': input.conversationId, 'app.turn.streamed': streamed } },
      async (span) => {
        const result = await run();
        span.setAttributes({
          'app.turn.replayed': result.replayed,
          'azure.openai.deployment': result.deployment,
          'gen_ai.response.finish_reasons': [result.finishReason],
          'gen_ai.usage.input_tokens': result.usage.promptTokens,
          'gen_ai.usage.output_tokens': result.usage.completionTokens,
        });
        return result;
      },
    );
  }

  private async sendTurn(input: TurnInput, signal?: AbortSignal): Promise<TurnResult> {
    return this.withIdempotency(input, async (claim) => {
      const { settings } = this.deps;
      const user = this.userMessage(input);
      for (let attempt = 1; ; attempt++) {
        const turn = await this.prepareAdmitted(input, user, claim, attempt === 1);
        const { completion, deployment, settled } = await this.metered(input.caller, turn, () =>
          this.models.complete(
            turn.conversationId,
            (candidate) => this.completionRequest(turn, turn.planFor(candidate)),
            signal,
          ),
        );
        try {
          return await turn.commit(completion, deployment);
        } catch (error) {
          if (error instanceof ClaimLost) throw new IdempotencyInProgressError(CLAIM_LOST);
          if (!(error instanceof ConcurrencyConflict)) throw error;
          if (attempt >= settings.turnAttempts) throw new ConversationBusyError();
          await delay(jitteredBackoff(attempt));
        } finally {
          await settled;
        }
      }
    });
  }

  /**
   * Runs a turn whose reply is streamed: `onStart` learns the context before the first delta, `onDelta` gets each
   * piece in order. The reply is stored when the model's stream ends, exactly as `send` stores it. A streamed turn
   * cannot be re-run after its deltas were shown, so a lost race ends with conversation_busy and nothing stored.
   */
  async stream(input: TurnInput, handlers: TurnStreamHandlers, signal?: AbortSignal): Promise<TurnResult> {
    return this.traced(input, true, () => this.streamTurn(input, handlers, signal));
  }

  private async streamTurn(input: TurnInput, handlers: TurnStreamHandlers, signal?: AbortSignal): Promise<TurnResult> {
    return this.withIdempotency(
      input,
      async (claim) => {
        const turn = await this.prepareAdmitted(input, this.userMessage(input), claim, true);
        const { completion, deployment, settled } = await this.metered(input.caller, turn, async () => {
          handlers.onStart({
            conversationId: turn.conversationId,
            messageId: turn.replyId,
            promptTokens: turn.plan.promptTokens,
            droppedTurns: turn.plan.droppedTurns,
          });
          // Failover only until the first chunk: after it the user has seen the reply begin.
          const { value: chunks, deployment: answering } = await this.models.stream(
            turn.conversationId,
            (candidate) => this.completionRequest(turn, turn.planFor(candidate)),
            signal,
          );
          return { value: await collectStream(chunks, handlers.onDelta), deployment: answering };
        });
        try {
          return await turn.commit(completion, deployment);
        } catch (error) {
          if (error instanceof ClaimLost) throw new IdempotencyInProgressError(CLAIM_LOST);
          if (error instanceof ConcurrencyConflict) throw new ConversationBusyError();
          throw error;
        } finally {
          await settled;
        }
      },
      handlers.onReplay,
    );
  }

  /**
   * The limiter's check runs beside the conversation load: it counts the request against the per-minute limit and
   * refuses a caller already over the quota before anything (a summary) calls the model. The quota's reservation
   * needs the planned prompt, so it comes after (see metered).
   */
  private async prepareAdmitted(
    input: TurnInput,
    user: CountedUserMessage,
    claim: IdempotencyClaim | undefined,
    admit: boolean,
  ): Promise<PreparedTurn & { replyId: string }> {
    if (!admit) return this.prepare(input, user, claim, Promise.resolve());
    const admitted = this.deps.limiter.admit(input.caller, this.deps.clock.now()).then(() => undefined);
    const [, turn] = await Promise.all([admitted, this.prepare(input, user, claim, admitted)]);
    return turn;
  }

  /**
   * One model call under the caller's daily quota: its worst case (the prompt as planned plus the reply reserve) is
   * reserved before the call, so calls admitted at the same time cannot together pass the quota by more than one
   * call; the reservation settles on what the call spent (0 when it failed) beside the commit. A re-run after a lost
   * race reserves again (it calls the model again) without counting as another request. A reply without `usage` is
   * counted here: the prompt as planned for the deployment that answered, plus the reply, with its tokenizer.
   */
  private async metered(
    caller: Caller,
    turn: PreparedTurn,
    call: () => Promise<{ value: Completion; deployment: ModelDeployment }>,
  ): Promise<{ completion: CountedCompletion; deployment: ModelDeployment; settled: Promise<void> }> {
    const { limiter, clock, settings, log } = this.deps;
    const reservation = await limiter.admit(caller, clock.now(), {
      reserveTokens: turn.plan.promptTokens + settings.maxResponseTokens,
      countRequest: false,
    });
    const settle = (spent: number) =>
      limiter
        .settle(caller, reservation, spent, clock.now())
        .catch((error: unknown) => log.warn(`Could not settle token usage: ${String(error)}`));
    let completion: CountedCompletion;
    let deployment: ModelDeployment;
    try {
      const answered = await call();
      deployment = answered.deployment;
      completion = {
        ...answered.value,
        usage:
          answered.value.usage ?? countedUsage(answered.value.content, turn.planFor(deployment), deployment.tokenizer),
      };
    } catch (error) {
      await settle(0);
      throw error;
    }
    return { completion, deployment, settled: settle(completion.usage.totalTokens) };
  }

  private completionRequest(turn: PreparedTurn, plan: ContextPlan) {
    const { settings } = this.deps;
    return {
      messages: plan.messages,
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
    const releaseId = JSON.stringify([input.caller.kind, input.caller.id, input.conversationId, key]);
    await this.releases.flush(releaseId);
    const claimedAt = clock.now().getTime();
    const begun = await store.beginIdempotent(input.caller, input.conversationId, key, requestHash, {
      now: new Date(claimedAt),
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
      // Nothing was stored: free the key so the client's retry runs the turn again. When storage does not answer,
      // keep trying in the background: the client was told to retry shortly, and nothing runs under this claim.
      const release = () => store.releaseIdempotent(input.caller, input.conversationId, key, begun.claim);
      await release().catch((releaseError: unknown) => {
        this.deps.log.warn(`Could not release an idempotency key after a failed turn: ${String(releaseError)}`);
        this.releases.add(releaseId, release, claimedAt + settings.idempotencyLeaseMs);
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
    const tokenizers = new Map<string, Tokenizer>([[this.deps.tokenizer.encoding, this.deps.tokenizer]]);
    for (const deployment of this.models.all) tokenizers.set(deployment.tokenizer.encoding, deployment.tokenizer);
    const markers = [...tokenizers.values()].flatMap((tokenizer) => [
      ...findSpecialTokenMarkup(input.content, tokenizer),
      ...(input.name ? findSpecialTokenMarkup(input.name, tokenizer) : []),
    ]);
    if (markers.length > 0) throw new SpecialTokenRejectedError([...new Set(markers)]);
  }

  /** Load, append, trim: everything up to the model call. `admitted` settles when the limiter has answered. */
  private async prepare(
    input: TurnInput,
    user: CountedUserMessage,
    claim: IdempotencyClaim | undefined,
    admitted: Promise<void>,
  ): Promise<PreparedTurn & { replyId: string }> {
    const { store, clock } = this.deps;
    const loaded = await store.loadForTurn(input.caller, input.conversationId);
    if (!loaded) throw conversationNotFound();
    const { conversation, messages: history } = loaded;

    // Planned for the first deployment to try, so a history that cannot fit fails before any model call.
    const first = this.models.order(conversation.id)[0] ?? this.models.primary;
    const { plan, summary, replan } = await this.planWithSummary(
      input.caller,
      conversation,
      history,
      user,
      admitted,
      first,
    );
    // Counted and trimmed per encoding and window: deployments of one model family share one plan.
    const plans = new Map<string, ContextPlan>([[planKey(first), plan]]);
    const planFor = (deployment: ModelDeployment): ContextPlan => {
      const key = planKey(deployment);
      let found = plans.get(key);
      if (!found) {
        found = replan(deployment);
        plans.set(key, found);
      }
      return found;
    };

    const userSeq = conversation.messageCount + 1;
    const sentAt = clock.now().toISOString();
    return {
      conversationId: conversation.id,
      plan,
      planFor,
      replyId: messageId(userSeq + 1),
      commit: async (completion, deployment) => {
        const { tokenizer } = deployment;
        const used = planFor(deployment);
        const repliedAt = clock.now().toISOString();
        const stored: StoredMessage = {
          ...user.message,
          role: 'user',
          seq: userSeq,
          id: messageId(userSeq),
          createdAt: sentAt,
          tokens: user.tokensUnder(tokenizer),
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
          context: { promptTokens: used.promptTokens, droppedTurns: used.droppedTurns },
          deployment: deployment.name,
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
            windowStartSeq: used.windowStartSeq,
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
    deployment: ModelDeployment,
  ): Promise<{
    plan: ContextPlan;
    summary?: { summary: HistorySummary; usage: Usage };
    /** The same history planned for another deployment (its encoding and window), with the same summary. */
    replan(other: ModelDeployment): ContextPlan;
  }> {
    const { settings, clock } = this.deps;
    const { tokenizer, tokenLimit } = deployment;
    const planUnder = (
      summary: HistorySummary | undefined,
      windowStartSeq: number | undefined,
      { tokenizer, tokenLimit }: Pick<ModelDeployment, 'tokenizer' | 'tokenLimit'>,
    ) =>
      planContext({
        prologue: conversation.prologue.map((message) => counted(message, tokensUnder(message, tokenizer))),
        ...(summary && settings.summary.enabled ? { summary: summaryMessage(summary, tokenizer) } : {}),
        history: history.map((message) => ({ ...counted(message, tokensUnder(message, tokenizer)), seq: message.seq })),
        newMessage: counted(user.message, user.tokensUnder(tokenizer)),
        budget: {
          tokenLimit,
          maxResponseTokens: settings.maxResponseTokens,
          policy: settings.trimPolicy,
          maxTurns: settings.maxTurns,
          lowWater: settings.trimLowWater,
          ...(settings.historyTokenLimit !== undefined ? { historyTokenLimit: settings.historyTokenLimit } : {}),
          summaryReserveTokens: summaryReserveTokens(settings.summary, tokenizer),
        },
        ...(windowStartSeq !== undefined ? { windowStartSeq } : {}),
      });

    const plan = (summary: HistorySummary | undefined, windowStartSeq: number | undefined) =>
      planUnder(summary, windowStartSeq, deployment);
    const replanWith = (summary: HistorySummary | undefined) => (other: ModelDeployment) =>
      planUnder(summary, conversation.windowStartSeq, other);
    const first = plan(conversation.summary, conversation.windowStartSeq);
    const covered = conversation.summary?.throughSeq ?? 0;
    const droppedThrough = first.windowStartSeq - 1;
    if (!settings.summary.enabled || droppedThrough <= covered) {
      return { plan: first, replan: replanWith(conversation.summary) };
    }

    // A refused caller (rate limit, quota) must not cost a summary call: it throws here like the turn does.
    await admitted;
    let outcome: { summary: HistorySummary; usage: Usage };
    try {
      outcome = await writeSummary({
        model: this.deps.model,
        tokenizer,
        settings: settings.summary,
        tokenLimit,
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
      return { plan: first, replan: replanWith(conversation.summary) };
    }
    // Spent whether or not this turn commits; a trim turn only, so the round trip is rare.
    await this.deps.limiter
      .record(caller, outcome.usage.totalTokens, clock.now())
      .catch((error: unknown) => this.deps.log.warn(`Could not record summary token usage: ${String(error)}`));
    // The trim left room for the new summary, so the window stays where the trim put it.
    return {
      plan: plan(outcome.summary, first.windowStartSeq),
      summary: outcome,
      replan: replanWith(outcome.summary),
    };
  }

  /** The user's message is encoded once per turn and encoding, however many attempts the turn takes. */
  private userMessage(input: TurnInput): CountedUserMessage {
    const message: ChatMessage = { role: 'user', content: input.content, ...(input.name ? { name: input.name } : {}) };
    const counts = new Map<string, number>();
    return {
      message,
      tokensUnder: (tokenizer) => {
        let tokens = counts.get(tokenizer.encoding);
        if (tokens === undefined) {
          tokens = countMessageTokens(message, tokenizer);
          counts.set(tokenizer.encoding, tokens);
        }
        return tokens;
      },
    };
  }
}

/** A completion whose usage is known: reported by the service or counted by the core. */
export type CountedCompletion = Completion & { usage: Usage };

/** When the service reports no usage: the prompt as the app counted it, plus the reply's tokens. */
function countedUsage(content: string, plan: ContextPlan, tokenizer: Tokenizer): Usage {
  const completionTokens = tokenizer.countTokens(content);
  return {
    ...NO_USAGE,
    promptTokens: plan.promptTokens,
    completionTokens,
    totalTokens: plan.promptTokens + completionTokens,
  };
}

const CLAIM_LOST =
  'This request held its Idempotency-Key longer than the lease, and a retry took the key over; that retry answers.';

interface CountedUserMessage {
  message: ChatMessage;
  tokensUnder(tokenizer: Tokenizer): number;
}

function planKey({ tokenizer, tokenLimit }: ModelDeployment): string {
  return `${tokenizer.encoding}/${tokenLimit}`;
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
    ...(record.deployment !== undefined ? { deployment: record.deployment } : {}),
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

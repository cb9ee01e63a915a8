/**
 * One chat turn, top to bottom: load the conversation, append the user's message, trim the history to the
 * token budget, call the model, run the tools it calls and call it again (at most CHAT_MAX_TOOL_ROUNDS rounds, then
 * once without tools), persist the user message, the tool calls and results and the reply in one transaction. A turn
 * that lost a race with another turn re-reads and runs again on the history it will commit on, so the model always
 * sees exactly what is stored. An Idempotency-Key makes a retried request answer the stored result.
 *
 * When the model calls a client tool (declared by the caller's app), the turn pauses: what it produced so far is
 * stored beside the conversation, the caller gets `requires_action` with the calls, and the turn goes on when the
 * results are posted (`submitToolResults`). Until then, or until it is cancelled or expires, no other turn may start.
 */
import { createHash, randomUUID } from 'node:crypto';
import { ClaimReleases } from './claimReleases';
import { DEFAULT_TOOL_SETTINGS } from './dependencies';
import {
  ClientToolsNotAllowedError,
  ContextLengthExceededError,
  ConversationBusyError,
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  InvalidToolResultsError,
  NoPendingTurnError,
  NotFoundError,
  SpecialTokenRejectedError,
  ToolResultsPendingError,
} from './errors';
import {
  ClaimLost,
  ConcurrencyConflict,
  NO_USAGE,
  toChatMessage,
  type Caller,
  type ChatMessage,
  type Completion,
  type CompletionChunk,
  type CompletionRequest,
  type Conversation,
  type CountedTurnMessage,
  type HistorySummary,
  type IdempotencyClaim,
  type PendingTurn,
  type PromptCount,
  type StoredMessage,
  type TokenReservation,
  type Tokenizer,
  type ToolCall,
  type TurnContext,
  type TurnRecord,
  type Usage,
} from './ports';
import { ModelDeployments, type ModelDeployment } from './failover';
import { utcDay } from './limits';
import { inSpan, noTelemetry, type Telemetry } from './telemetry';
import { countMessageTokens, tokensUnder } from './tokens/countTokens';
import { findSpecialTokenMarkup } from './tokens/specialTokens';
import { summaryMessage, summaryReserveTokens, writeSummary } from './summaries';
import {
  conversationToolSet,
  roundFits,
  runServerCalls,
  toolResults,
  turnJsonSize,
  turnStorageFits,
  type ToolCallReport,
  type ToolSet,
  type ToolSettings,
} from './tools';
import { planContext, type ContextPlan, type CountedMessage } from './trimming';
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

export interface ToolResultsInput {
  caller: Caller;
  conversationId: string;
  /** The paused turn's id, when the client sends it: a stale one is refused. */
  turnId?: string;
  results: { toolCallId: string; output: string }[];
  idempotencyKey?: string;
}

export interface TurnResult {
  status: 'completed';
  conversationId: string;
  message: { id: string; role: 'assistant'; content: string; createdAt: string };
  finishReason: string;
  usage: Usage;
  context: TurnContext;
  /** True when this answer was replayed from an earlier request with the same Idempotency-Key. */
  replayed: boolean;
  /** The model deployment that answered last (absent on replays of turns stored before it was recorded). */
  deployment?: string;
}

/** A turn paused for client tools: post their results (or cancel it) before `expiresAt`. */
export interface RequiresActionResult {
  status: 'requires_action';
  conversationId: string;
  turnId: string;
  toolCalls: ToolCall[];
  expiresAt: string;
  usage: Usage;
  context: TurnContext;
  replayed: boolean;
}

export type TurnOutcome = TurnResult | RequiresActionResult;

/** What a streamed (or observed) turn reports as it goes. */
export interface TurnHandlers {
  onStart(info: { conversationId: string; messageId: string; promptTokens: number; droppedTurns: number }): void;
  onDelta(content: string): void;
  onReplay(result: TurnOutcome): void;
  onToolCall?(call: ToolCall & { round: number; client: boolean }): void;
  onToolResult?(report: ToolCallReport): void;
}

/** Everything a turn carries from its first model call to its commit (or pause). */
interface TurnState {
  caller: Caller;
  conversation: Conversation;
  prologue: CountedMessage[];
  history: (CountedMessage & { seq: number })[];
  /** The stored history as loaded (a summary reads it). */
  stored: StoredMessage[];
  user: CountedTurnMessage;
  tools: ToolSet;
  /** This turn's assistant tool-call messages and tool results so far. */
  messages: CountedTurnMessage[];
  rounds: number;
  /** Set once a round could not fit the turn's storage bounds: the model is asked once more without tools. */
  toolsExhausted: boolean;
  usage: Usage;
  /** Quota reservations of this turn's model calls settling (see metered); awaited beside the commit. */
  settlements: Promise<void>[];
  /** Tokens reserved with the request's admission (see begin), for the first model call to take. */
  prereserved?: TokenReservation;
  calls: PromptCount[];
  plan?: ContextPlan;
  /** Renews the turn's idempotency lease when due (before each model call); absent without an Idempotency-Key. */
  keepLease?: () => Promise<void>;
  /** The deployment that answered the last model call: its encoding counts what is stored. */
  deployment?: ModelDeployment;
  /** Where the first call's window started (stable-prefix trimming): every later call of the turn keeps it. */
  windowStartSeq?: number;
  /** The summary sent pinned after the prologue (CHAT_SUMMARY=on), and a new one written for this turn. */
  summary?: HistorySummary;
  newSummary?: { summary: HistorySummary; usage: Usage };
}

type LoopOutcome = { kind: 'final'; completion: CountedCompletion } | { kind: 'paused'; awaiting: ToolCall[] };

/** One model call with failover: `request` builds what one deployment is sent (its encoding, its window). */
type ModelCall = (
  conversationId: string,
  request: (deployment: ModelDeployment) => CompletionRequest,
) => Promise<{ value: Completion; deployment: ModelDeployment }>;

export class TurnRunner {
  /** The deployments a model call may go to, with failover (one, built from `model`, unless configured). */
  private readonly models: ModelDeployments;
  /** Claims of failed turns that storage did not let us release yet (see claimReleases.ts). */
  private readonly releases: ClaimReleases;
  private readonly telemetry: Telemetry;
  /**
   * Per conversation this instance ran a model call for: the tokens its next call is likely to need before the new
   * message (the last prompt plus the reply). Bounded: forgotten all at once when full.
   */
  private readonly reserveHints = new Map<string, number>();

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

  /** Non-streamed model calls, with failover across the deployments. */
  private completeCall(signal: AbortSignal | undefined): ModelCall {
    return (conversationId, request) => this.models.complete(conversationId, request, signal);
  }

  private get toolSettings(): ToolSettings {
    return this.deps.settings.tools ?? DEFAULT_TOOL_SETTINGS;
  }

  /**
   * Runs a whole turn (server tools included) and returns the stored reply: for callers that cannot answer client
   * tools (webhooks, queues). A conversation that declares client tools is refused (client_tools_not_allowed).
   */
  async send(input: TurnInput, signal?: AbortSignal): Promise<TurnResult> {
    const outcome = await this.traced(input, false, () => this.run(input, false, signal));
    if (outcome.status !== 'completed') throw new ClientToolsNotAllowedError();
    return outcome;
  }

  /** Runs a whole turn for an interactive caller: the stored reply, or the client tools the turn waits for. */
  async converse(input: TurnInput, signal?: AbortSignal): Promise<TurnOutcome> {
    return this.traced(input, false, () => this.run(input, true, signal));
  }

  /** The turn is one span, its storage and model calls children. */
  private async traced(
    input: { conversationId: string },
    streamed: boolean,
    run: () => Promise<TurnOutcome>,
  ): Promise<TurnOutcome> {
    return inSpan(
      this.telemetry,
      'chat.turn',
      { attributes: { 'gen_ai.conversation.id': input.conversationId, 'app.turn.streamed': streamed } },
      async (span) => {
        const result = await run();
        span.setAttributes({
          'app.turn.status': result.status,
          'app.turn.replayed': result.replayed,
          'gen_ai.usage.input_tokens': result.usage.promptTokens,
          'gen_ai.usage.output_tokens': result.usage.completionTokens,
          ...(result.status === 'completed'
            ? { 'azure.openai.deployment': result.deployment, 'gen_ai.response.finish_reasons': [result.finishReason] }
            : {}),
        });
        return result;
      },
    );
  }

  private async run(input: TurnInput, interactive: boolean, signal?: AbortSignal): Promise<TurnOutcome> {
    this.rejectSpecialTokens(input);
    return this.withIdempotency(input, hashTurnRequest(input), async (claim, keepLease) => {
      const user = this.userMessage(input);
      const call = this.completeCall(signal);
      for (let attempt = 1; ; attempt++) {
        const state = await this.begin(input, user, attempt === 1, interactive);
        state.keepLease = keepLease;
        const outcome = await this.runLoop(state, call, {}, signal);
        try {
          return await this.finish(state, outcome, { input, claim });
        } catch (error) {
          if (error instanceof ClaimLost) throw new IdempotencyInProgressError(CLAIM_LOST);
          if (!(error instanceof ConcurrencyConflict)) throw error;
          if (attempt >= this.deps.settings.turnAttempts) throw new ConversationBusyError();
          await delay(jitteredBackoff(attempt));
        }
      }
    });
  }

  /**
   * Runs a turn whose replies are streamed: `onStart` learns the context before the first delta, `onDelta` gets each
   * piece in order, tool calls and results are reported between them. The turn is stored when the last model stream
   * ends, exactly as `send` stores it. A streamed turn cannot be re-run after its deltas were shown, so a lost race
   * ends with conversation_busy and nothing stored.
   */
  async stream(input: TurnInput, handlers: TurnHandlers, signal?: AbortSignal): Promise<TurnOutcome> {
    return this.traced(input, true, () => this.streamTurn(input, handlers, signal));
  }

  private async streamTurn(input: TurnInput, handlers: TurnHandlers, signal?: AbortSignal): Promise<TurnOutcome> {
    this.rejectSpecialTokens(input);
    return this.withIdempotency(
      input,
      hashTurnRequest(input),
      async (claim, keepLease) => {
        const state = await this.begin(input, this.userMessage(input), true, true);
        state.keepLease = keepLease;
        return this.streamed(state, handlers, signal, (outcome) => this.finish(state, outcome, { input, claim }));
      },
      handlers.onReplay,
    );
  }

  /**
   * Continues a paused turn with the caller's client-tool results: every awaited call answered exactly once. The
   * continued turn may complete or pause again. With `handlers` the model's replies stream.
   */
  async submitToolResults(
    input: ToolResultsInput,
    signal?: AbortSignal,
    handlers?: TurnHandlers,
  ): Promise<TurnOutcome> {
    return this.traced(input, handlers !== undefined, () => this.continueTurn(input, signal, handlers));
  }

  private async continueTurn(
    input: ToolResultsInput,
    signal?: AbortSignal,
    handlers?: TurnHandlers,
  ): Promise<TurnOutcome> {
    const ids = input.results.map((result) => result.toolCallId);
    if (new Set(ids).size !== ids.length) {
      throw new InvalidToolResultsError('Each toolCallId may appear once.', { toolCallIds: ids });
    }
    return this.withIdempotency(
      input,
      hashToolResults(input),
      async (claim, keepLease) => {
        const call = this.completeCall(signal);
        for (let attempt = 1; ; attempt++) {
          const state = await this.resume(input, attempt === 1);
          state.keepLease = keepLease;
          const finish = (outcome: LoopOutcome) => this.finish(state, outcome, { input, claim, resumed: true });
          // Streamed deltas cannot be taken back: a lost race ends in conversation_busy, as for stream().
          if (handlers) return this.streamed(state, handlers, signal, finish);
          const outcome = await this.runLoop(state, call, {}, signal);
          try {
            return await finish(outcome);
          } catch (error) {
            if (error instanceof ClaimLost) throw new IdempotencyInProgressError(CLAIM_LOST);
            if (!(error instanceof ConcurrencyConflict)) throw error;
            if (attempt >= this.deps.settings.turnAttempts) throw new ConversationBusyError();
            await delay(jitteredBackoff(attempt));
          }
        }
      },
      handlers?.onReplay,
    );
  }

  /** The paused turn of a conversation, for a client that lost the `requires_action` answer. */
  async pendingTurn(caller: Caller, conversationId: string): Promise<RequiresActionResult> {
    const conversation = await this.deps.store.get(caller, conversationId);
    if (!conversation) throw conversationNotFound();
    const pending =
      conversation.pending && !this.expired(conversation.pending.expiresAt)
        ? await this.deps.store.getPendingTurn(caller, conversationId)
        : undefined;
    if (!pending) throw new NotFoundError('No turn of this conversation is waiting for tool results.');
    return requiresAction(conversation.id, pending, false);
  }

  /** Drops a paused turn: nothing of it is stored. An expired one is dropped the same way. */
  async cancelPendingTurn(caller: Caller, conversationId: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const conversation = await this.deps.store.get(caller, conversationId);
      if (!conversation) throw conversationNotFound();
      if (!conversation.pending) throw new NotFoundError('No turn of this conversation is waiting for tool results.');
      try {
        await this.deps.store.cancelPendingTurn(caller, conversationId, conversation.version);
        return;
      } catch (error) {
        if (!(error instanceof ConcurrencyConflict)) throw error;
        if (attempt >= this.deps.settings.turnAttempts) throw new ConversationBusyError();
        await delay(jitteredBackoff(attempt));
      }
    }
  }

  // ---- the loop -----------------------------------------------------------------------------------------------

  /**
   * Calls the model, runs the server tools it asks for, and calls it again with their results, until it answers
   * without tools, calls a client tool (pause), or the rounds are used up (then one last call without tools).
   */
  private async runLoop(
    state: TurnState,
    call: ModelCall,
    handlers: Partial<TurnHandlers>,
    signal: AbortSignal | undefined,
  ): Promise<LoopOutcome> {
    const settings = this.toolSettings;
    const { tokenizer, log } = this.deps;
    for (;;) {
      const offer = state.tools.size > 0 && state.rounds < settings.maxRounds && !state.toolsExhausted;
      // Counted and trimmed per encoding and window: deployments of one model family share one plan.
      const plans = new Map<string, ContextPlan>();
      const planFor = (deployment: ModelDeployment): ContextPlan => {
        const key = planKey(deployment);
        let found = plans.get(key);
        if (!found) {
          found = this.plan(state, offer, deployment);
          plans.set(key, found);
        }
        return found;
      };
      const first = this.models.order(state.conversation.id)[0] ?? this.models.primary;
      const { completion, deployment } = await this.metered(
        state,
        () => planFor(first),
        planFor,
        () =>
          call(state.conversation.id, (candidate) => ({
            ...this.completionRequest(planFor(candidate)),
            // One conversation's requests share a prompt cache: its repeated prefix is billed at the cached rate.
            cacheKey: state.conversation.id,
            ...(offer ? { tools: state.tools.definitions } : {}),
          })),
      );
      const plan = planFor(deployment);
      state.plan = plan;
      state.deployment = deployment;
      this.account(state, plan, completion);

      const calls = completion.toolCalls ?? [];
      if (!offer || calls.length === 0) return { kind: 'final', completion };

      const assistant: CountedTurnMessage = {
        role: 'assistant',
        content: completion.content,
        toolCalls: calls,
        tokens: countMessageTokens({ role: 'assistant', content: completion.content, toolCalls: calls }, tokenizer),
      };
      if (
        !roundFits([state.user, ...state.messages], assistant, settings, this.deps.settings.maxResponseTokens) ||
        !this.windowHolds(state, [...state.messages, assistant])
      ) {
        log.warn(
          `Conversation ${state.conversation.id}: ${calls.length} more tool calls would not fit one stored turn or the model's window; asking for a final answer without tools.`,
        );
        state.toolsExhausted = true;
        continue;
      }
      state.rounds += 1;
      state.messages.push(assistant);
      const clientCalls = calls.filter((toolCall) => state.tools.isClientTool(toolCall.name));
      for (const toolCall of calls) {
        handlers.onToolCall?.({ ...toolCall, round: state.rounds, client: clientCalls.includes(toolCall) });
      }
      const results = await runServerCalls(
        calls.filter((toolCall) => !clientCalls.includes(toolCall)),
        state.tools,
        { caller: state.caller, ...(signal ? { signal } : {}), settings, tokenizer, telemetry: this.telemetry },
        handlers.onToolResult,
        (results) => this.resultsFit(state, results),
      );
      state.messages.push(...results);
      if (clientCalls.length > 0) return { kind: 'paused', awaiting: clientCalls };
    }
  }

  /** The streamed form of the loop: deltas of every model call, in order. */
  private async streamed(
    state: TurnState,
    handlers: TurnHandlers,
    signal: AbortSignal | undefined,
    finish: (outcome: LoopOutcome) => Promise<TurnOutcome>,
  ): Promise<TurnOutcome> {
    let started = false;
    const call: ModelCall = async (conversationId, request) => {
      if (!started) {
        started = true;
        handlers.onStart({
          conversationId: state.conversation.id,
          // The model's first message of this call (a resumed turn already holds its earlier messages and results).
          messageId: messageId(state.conversation.messageCount + 2 + state.messages.length),
          promptTokens: state.plan?.promptTokens ?? 0,
          droppedTurns: state.plan?.droppedTurns ?? 0,
        });
      }
      // Failover only until the first chunk: after it the user has seen the reply begin.
      const { value: chunks, deployment } = await this.models.stream(conversationId, request, signal);
      return { value: await collectStream(chunks, handlers.onDelta), deployment };
    };
    const outcome = await this.runLoop(state, call, handlers, signal);
    try {
      return await finish(outcome);
    } catch (error) {
      if (error instanceof ClaimLost) throw new IdempotencyInProgressError(CLAIM_LOST);
      if (error instanceof ConcurrencyConflict) throw new ConversationBusyError();
      throw error;
    }
  }

  /** Whether tool results, after the turn's messages so far, leave the turn storable and within every window. */
  private resultsFit(state: TurnState, results: readonly CountedTurnMessage[]): boolean {
    const messages = [...state.messages, ...results];
    const size = turnJsonSize([state.user, ...messages]);
    return (
      turnStorageFits({ ...size, messages: 1 + messages.length }, this.deps.settings.maxResponseTokens) &&
      this.windowHolds(state, messages)
    );
  }

  /**
   * Whether the turn with these messages still leaves room, in every deployment's window, for the call that asks for
   * the final answer (without tools): tool output must never push the user's own message out of reach.
   */
  private windowHolds(state: TurnState, messages: CountedTurnMessage[]): boolean {
    try {
      for (const deployment of this.models.all) this.plan({ ...state, messages }, false, deployment);
      return true;
    } catch (error) {
      if (error instanceof ContextLengthExceededError) return false;
      throw error;
    }
  }

  /** What this call sends: the pinned prologue (and summary) and turn in progress, as many past turns as fit. */
  private plan(state: TurnState, offerTools: boolean, deployment: ModelDeployment): ContextPlan {
    const { settings } = this.deps;
    const { tokenizer, tokenLimit } = deployment;
    // The turn's state is counted with the default encoding; another deployment's encoding counts again.
    const same = tokenizer.encoding === this.deps.tokenizer.encoding;
    const recount = <T extends CountedTurnMessage>(message: T): T =>
      same ? message : { ...message, tokens: countMessageTokens(toChatMessage(message), tokenizer) };
    return planContext({
      prologue: same
        ? state.prologue
        : state.conversation.prologue.map((message) => ({
            ...toChatMessage(message),
            tokens: tokensUnder(message, tokenizer),
          })),
      ...(state.summary && settings.summary.enabled ? { summary: summaryMessage(state.summary, tokenizer) } : {}),
      history: same
        ? state.history
        : state.stored.map((message) => ({
            ...toChatMessage(message),
            tokens: tokensUnder(message, tokenizer),
            seq: message.seq,
          })),
      newMessage: recount(state.user),
      turnMessages: state.messages.map(recount),
      toolTokens: offerTools ? state.tools.definitionTokens : 0,
      budget: {
        tokenLimit,
        maxResponseTokens: settings.maxResponseTokens,
        policy: settings.trimPolicy,
        maxTurns: settings.maxTurns,
        lowWater: settings.trimLowWater,
        ...(settings.historyTokenLimit !== undefined ? { historyTokenLimit: settings.historyTokenLimit } : {}),
        summaryReserveTokens: summaryReserveTokens(settings.summary, tokenizer),
      },
      ...(state.windowStartSeq !== undefined ? { windowStartSeq: state.windowStartSeq } : {}),
    });
  }

  /**
   * One model call under the caller's daily quota: its worst case (the prompt as planned plus the reply reserve) is
   * reserved before the call, so calls admitted at the same time cannot together pass the quota by more than one
   * call; the reservation settles on what the call spent (0 when it failed) beside the commit. A re-run after a lost
   * race reserves again (it calls the model again) without counting as another request. A reply without `usage` is
   * counted here: the prompt as planned for the deployment that answered, plus the reply, with its tokenizer.
   */
  private async metered(
    state: TurnState,
    planned: () => ContextPlan,
    planFor: (deployment: ModelDeployment) => ContextPlan,
    call: () => Promise<{ value: Completion; deployment: ModelDeployment }>,
  ): Promise<{ completion: CountedCompletion; deployment: ModelDeployment }> {
    const { limiter, clock, log } = this.deps;
    const reservation = await this.reserve(state, planned);
    const settle = (spent: number) =>
      limiter
        .settle(state.caller, reservation, spent, clock.now())
        .catch((error: unknown) => log.warn(`Could not settle token usage: ${String(error)}`));
    let answered: { value: Completion; deployment: ModelDeployment };
    try {
      answered = await call();
    } catch (error) {
      await settle(0);
      throw error;
    }
    const { value, deployment } = answered;
    const completion: CountedCompletion = {
      ...value,
      usage: value.usage ?? countedUsage(value, planFor(deployment), deployment.tokenizer),
    };
    state.settlements.push(settle(completion.usage.totalTokens));
    this.hintReservation(state, planned().promptTokens + completion.usage.completionTokens + HINT_MARGIN_TOKENS);
    return { completion, deployment };
  }

  /**
   * The call's reservation: what begin reserved with the admission when it covers the call's worst case (no round
   * trip before the call), topped up when it does not, else a reservation of its own (as without one).
   */
  private async reserve(state: TurnState, planned: () => ContextPlan): Promise<TokenReservation> {
    const { limiter, clock, settings } = this.deps;
    const prereserved = state.prereserved;
    state.prereserved = undefined;
    let needed: number;
    try {
      await state.keepLease?.();
      needed = planned().promptTokens + settings.maxResponseTokens;
    } catch (error) {
      await this.release(state.caller, prereserved);
      throw error;
    }
    if (prereserved && prereserved.tokens >= needed) return prereserved;
    const now = clock.now();
    const topUp = prereserved && prereserved.day === utcDay(now) ? prereserved : undefined;
    if (prereserved && !topUp) await this.release(state.caller, prereserved); // reserved before midnight
    const more = await limiter
      .admit(state.caller, now, { reserveTokens: needed - (topUp?.tokens ?? 0), countRequest: false })
      .catch(async (error: unknown) => {
        await this.release(state.caller, topUp);
        throw error;
      });
    return topUp && more.day === topUp.day ? { day: topUp.day, tokens: topUp.tokens + more.tokens } : more;
  }

  /** Gives back a reservation no call used (settled on 0 tokens); a failure only logs, as settling does. */
  private async release(caller: Caller, reservation: TokenReservation | undefined): Promise<void> {
    if (!reservation || reservation.tokens <= 0) return;
    const { limiter, clock, log } = this.deps;
    await limiter
      .settle(caller, reservation, 0, clock.now())
      .catch((error: unknown) => log.warn(`Could not release a token reservation: ${String(error)}`));
  }

  private hintReservation(state: TurnState, tokens: number): void {
    if (this.reserveHints.size >= RESERVE_HINTS_MAX) this.reserveHints.clear();
    this.reserveHints.set(hintKey(state.caller, state.conversation.id), tokens);
  }

  /**
   * With summaries on, a trim that leaves dropped messages the stored summary does not cover asks the model for a new
   * summary first, so this turn is sent with it. A failed summary call only logs: the turn goes on with the old
   * summary, and the next turn tries again. The summary's tokens count against the caller's quota whether or not the
   * turn commits. Runs once per turn, before its first model call; every call of the turn keeps the window it set.
   */
  private async summarise(state: TurnState): Promise<void> {
    const { tokenizer, settings, clock } = this.deps;
    // Planned for the first deployment to try, so a history that cannot fit fails before any model call.
    const first = this.plan(
      state,
      state.tools.size > 0,
      this.models.order(state.conversation.id)[0] ?? this.models.primary,
    );
    state.plan = first;
    state.windowStartSeq = first.windowStartSeq;
    const covered = state.conversation.summary?.throughSeq ?? 0;
    const droppedThrough = first.windowStartSeq - 1;
    if (!settings.summary.enabled || droppedThrough <= covered) return;
    try {
      state.newSummary = await writeSummary({
        complete: (request, promptTokens) => this.summaryCall(state, request, promptTokens),
        tokenizer,
        settings: settings.summary,
        tokenLimit: settings.tokenLimit,
        conversationId: state.conversation.id,
        previous: state.conversation.summary,
        dropped: state.stored.filter((message) => message.seq > covered && message.seq <= droppedThrough),
        throughSeq: droppedThrough,
        now: clock.now(),
      });
    } catch (error) {
      this.deps.log.warn(
        `Could not summarise messages ${covered + 1}-${droppedThrough} of a conversation; the turn goes on without ` +
          `the new summary and the next turn tries again: ${error instanceof Error ? error.message : String(error)}`,
      );
      return;
    }
    state.summary = state.newSummary.summary;
  }

  /**
   * The summary's model call, held against the caller's daily quota like the turn's own calls (its worst case reserved
   * first, settled with what it spent), with failover and its own `chat {model}` span. A quota that cannot hold it
   * refuses it, and the turn goes on without the new summary.
   */
  private async summaryCall(state: TurnState, request: CompletionRequest, promptTokens: number): Promise<Completion> {
    const { limiter, clock, settings, log } = this.deps;
    await state.keepLease?.();
    const reservation = await limiter.admit(state.caller, clock.now(), {
      reserveTokens: promptTokens + settings.summary.maxTokens,
      countRequest: false,
    });
    let spent = 0;
    try {
      const { value, deployment } = await this.models.complete(state.conversation.id, () => request);
      spent = value.usage?.totalTokens ?? promptTokens + deployment.tokenizer.countTokens(value.content);
      return value;
    } finally {
      await limiter
        .settle(state.caller, reservation, spent, clock.now())
        .catch((error: unknown) => log.warn(`Could not settle summary token usage: ${String(error)}`));
    }
  }

  /** Usage summed over the turn's calls; the estimate and the service's count logged side by side. */
  private account(state: TurnState, plan: ContextPlan, completion: CountedCompletion): void {
    const { usage } = completion;
    state.usage = {
      promptTokens: state.usage.promptTokens + usage.promptTokens,
      completionTokens: state.usage.completionTokens + usage.completionTokens,
      totalTokens: state.usage.totalTokens + usage.totalTokens,
      cachedPromptTokens: state.usage.cachedPromptTokens + usage.cachedPromptTokens,
    };
    state.calls.push({ estimated: plan.promptTokens, reported: usage.promptTokens });
    // Counting is exact for the model families the app knows, so a difference is worth a line (a model whose chat
    // format differs, a deployment behind another model); an equal count on every call is not.
    if (usage.promptTokens !== plan.promptTokens) {
      this.deps.log.warn(
        `Conversation ${state.conversation.id} call ${state.calls.length}: prompt tokens estimated ` +
          `${plan.promptTokens}, service reported ${usage.promptTokens} (difference ${usage.promptTokens - plan.promptTokens})`,
      );
    }
  }

  private context(state: TurnState): TurnContext {
    const last = state.calls.at(-1);
    return {
      promptTokens: state.plan?.promptTokens ?? 0,
      droppedTurns: state.plan?.droppedTurns ?? 0,
      ...(last ? { servicePromptTokens: last.reported } : {}),
      ...(state.rounds > 0 ? { toolRounds: state.rounds } : {}),
    };
  }

  // ---- begin, resume, finish -------------------------------------------------------------------------------------

  /**
   * Load (with the limiter's check beside it), refuse what cannot run, and set up the turn. For a conversation this
   * instance ran before, the admission also reserves the first model call's likely worst case (the last prompt, the
   * reply and the new message, plus the reply reserve), so that call needs no round trip of its own to the limiter
   * when it fits (see reserve); a turn that ends before its first call gives the reservation back.
   */
  private async begin(
    input: TurnInput,
    user: CountedTurnMessage,
    admit: boolean,
    interactive: boolean,
  ): Promise<TurnState> {
    const { store, limiter, clock, settings } = this.deps;
    const hint = admit ? this.reserveHints.get(hintKey(input.caller, input.conversationId)) : undefined;
    const admitted = admit
      ? limiter.admit(
          input.caller,
          clock.now(),
          hint === undefined ? {} : { reserveTokens: hint + user.tokens + settings.maxResponseTokens },
        )
      : Promise.resolve(undefined);
    let reservation: TokenReservation | undefined;
    let loaded: Awaited<ReturnType<typeof store.loadForTurn>>;
    try {
      [reservation, loaded] = await Promise.all([admitted, store.loadForTurn(input.caller, input.conversationId)]);
    } catch (error) {
      await this.release(input.caller, await admitted.catch(() => undefined));
      throw error;
    }
    try {
      if (!loaded) throw conversationNotFound();
      const { conversation } = loaded;
      if (conversation.pending && !this.expired(conversation.pending.expiresAt)) {
        const pending = await store.getPendingTurn(input.caller, input.conversationId);
        throw new ToolResultsPendingError({
          turnId: conversation.pending.id,
          toolCalls: pending?.awaiting ?? [],
          expiresAt: conversation.pending.expiresAt,
        });
      }
      if (!interactive && (conversation.clientTools?.length ?? 0) > 0) {
        throw new ClientToolsNotAllowedError();
      }
      const state = this.state(input.caller, conversation, loaded.messages, user);
      await this.summarise(state);
      if (reservation && reservation.tokens > 0) state.prereserved = reservation;
      return state;
    } catch (error) {
      await this.release(input.caller, reservation);
      throw error;
    }
  }

  private state(
    caller: Caller,
    conversation: Conversation,
    history: StoredMessage[],
    user: CountedTurnMessage,
  ): TurnState {
    const { tokenizer } = this.deps;
    const counted = (message: ChatMessage & { tokens: number; encoding: StoredMessage['encoding'] }) => ({
      ...toChatMessage(message),
      tokens: tokensUnder(message, tokenizer),
    });
    return {
      caller,
      conversation,
      prologue: conversation.prologue.map(counted),
      history: history.map((message) => ({ ...counted(message), seq: message.seq })),
      stored: history,
      user,
      tools: conversationToolSet(
        this.deps.serverTools ?? new Map(),
        conversation.tools,
        conversation.clientTools,
        tokenizer,
      ),
      messages: [],
      rounds: 0,
      toolsExhausted: false,
      usage: NO_USAGE,
      settlements: [],
      calls: [],
      ...(conversation.summary ? { summary: conversation.summary } : {}),
      ...(conversation.windowStartSeq !== undefined ? { windowStartSeq: conversation.windowStartSeq } : {}),
    };
  }

  /** A paused turn picked up again with the results the caller posted. */
  private async resume(input: ToolResultsInput, admit: boolean): Promise<TurnState> {
    const { store, tokenizer } = this.deps;
    const [, loaded] = await Promise.all([
      admit ? this.deps.limiter.admit(input.caller, this.deps.clock.now()) : undefined,
      store.loadForTurn(input.caller, input.conversationId),
    ]);
    if (!loaded) throw conversationNotFound();
    const { conversation } = loaded;
    const marker = conversation.pending;
    if (!marker || this.expired(marker.expiresAt) || (input.turnId !== undefined && input.turnId !== marker.id)) {
      throw new NoPendingTurnError();
    }
    const pending = await store.getPendingTurn(input.caller, input.conversationId);
    if (!pending || pending.id !== marker.id) throw new ConcurrencyConflict();

    const awaited = new Set(pending.awaiting.map((call) => call.id));
    const posted = new Set(input.results.map((result) => result.toolCallId));
    const missing = [...awaited].filter((id) => !posted.has(id));
    const unknown = [...posted].filter((id) => !awaited.has(id));
    if (missing.length > 0 || unknown.length > 0) {
      throw new InvalidToolResultsError(
        `Post exactly one result for each awaited call.` +
          (missing.length > 0 ? ` Missing: ${missing.join(', ')}.` : '') +
          (unknown.length > 0 ? ` Not awaited: ${unknown.join(', ')}.` : ''),
        { missing, unknown, awaiting: pending.awaiting },
      );
    }
    const state = this.state(input.caller, conversation, loaded.messages, pending.user);
    const { maxOutputChars } = this.toolSettings;
    // In the order the model called them, whatever order they were posted in.
    const outputs = new Map(input.results.map((result) => [result.toolCallId, result.output]));
    state.messages = [...pending.messages];
    state.messages.push(
      ...toolResults(
        pending.awaiting.map((call) => ({ toolCallId: call.id, output: outputs.get(call.id) ?? '' })),
        maxOutputChars,
        tokenizer,
        (results) => this.resultsFit(state, results),
      ),
    );
    state.rounds = pending.rounds;
    state.usage = { ...NO_USAGE, ...pending.usage };
    state.calls = [...pending.calls];
    await this.summarise(state);
    return state;
  }

  /** Commits a finished turn, or stores a paused one; the turn's tokens are recorded beside either write. */
  private async finish(
    state: TurnState,
    outcome: LoopOutcome,
    request: { input: TurnInput | ToolResultsInput; claim: IdempotencyClaim | undefined; resumed?: boolean },
  ): Promise<TurnOutcome> {
    const { store, clock } = this.deps;
    const tokenizer = state.deployment?.tokenizer ?? this.deps.tokenizer;
    const same = tokenizer.encoding === this.deps.tokenizer.encoding;
    const { conversation } = state;
    const { input, claim } = request;
    const idempotency = (record: TurnRecord) =>
      claim && input.idempotencyKey
        ? { idempotency: { key: input.idempotencyKey, claim, requestHash: requestHashOf(input), record } }
        : {};
    try {
      const now = clock.now();
      if (outcome.kind === 'paused') {
        const pending: PendingTurn = {
          id: request.resumed && conversation.pending ? conversation.pending.id : `turn_${randomUUID()}`,
          createdAt: now.toISOString(),
          expiresAt: new Date(now.getTime() + this.toolSettings.pendingTurnMs).toISOString(),
          user: state.user,
          messages: state.messages,
          awaiting: outcome.awaiting,
          rounds: state.rounds,
          usage: state.usage,
          calls: state.calls,
        };
        const record: TurnRecord = {
          conversationId: conversation.id,
          replySeq: 0,
          finishReason: 'tool_calls',
          usage: state.usage,
          context: this.context(state),
          requiresAction: { turnId: pending.id, toolCalls: pending.awaiting, expiresAt: pending.expiresAt },
        };
        await store.pauseTurn(state.caller, {
          conversationId: conversation.id,
          expectedVersion: conversation.version,
          pending,
          updatedAt: pending.createdAt,
          ...idempotency(record),
        });
        return requiresAction(conversation.id, pending, false, record.context);
      }

      const { completion } = outcome;
      const at = now.toISOString();
      const firstSeq = conversation.messageCount + 1;
      const stored = (message: CountedTurnMessage, offset: number): StoredMessage => ({
        ...toChatMessage(message),
        role: message.role === 'tool' ? 'tool' : message.role === 'user' ? 'user' : 'assistant',
        seq: firstSeq + offset,
        id: messageId(firstSeq + offset),
        createdAt: at,
        // Stored under the encoding of the deployment that answered, like the reply.
        tokens: same ? message.tokens : countMessageTokens(toChatMessage(message), tokenizer),
        encoding: tokenizer.encoding,
      });
      const reply: CountedTurnMessage = {
        role: 'assistant',
        content: completion.content,
        tokens: countMessageTokens({ role: 'assistant', content: completion.content }, tokenizer),
      };
      const messages = [state.user, ...state.messages, reply].map(stored);
      const storedReply = { ...messages.at(-1)!, finishReason: completion.finishReason, usage: completion.usage };
      messages[messages.length - 1] = storedReply;
      const record: TurnRecord = {
        conversationId: conversation.id,
        replySeq: storedReply.seq,
        finishReason: completion.finishReason,
        usage: state.usage,
        context: this.context(state),
        ...(state.deployment ? { deployment: state.deployment.name } : {}),
      };
      await store.commitTurn(state.caller, {
        conversationId: conversation.id,
        expectedVersion: conversation.version,
        messages,
        updatedAt: at,
        header: {
          totals: addUsage(
            state.newSummary ? addUsage(conversation.totals, state.newSummary.usage) : conversation.totals,
            state.usage,
          ),
          windowStartSeq: state.plan?.windowStartSeq ?? state.windowStartSeq ?? firstSeq,
          ...(state.newSummary ? { summary: state.newSummary.summary } : {}),
        },
        ...(conversation.pending ? { clearPending: true } : {}),
        ...idempotency(record),
      });
      return toResult(record, storedReply, false);
    } finally {
      await Promise.all(state.settlements);
      state.settlements = [];
    }
  }

  // ---- idempotency and input checks --------------------------------------------------------------------------------

  /** Claims the Idempotency-Key (when there is one) around `run`, or answers from the stored result. */
  private async withIdempotency(
    input: { caller: Caller; conversationId: string; idempotencyKey?: string; reclaimAbandoned?: boolean },
    requestHash: string,
    run: (claim: IdempotencyClaim | undefined, keepLease?: () => Promise<void>) => Promise<TurnOutcome>,
    onReplay?: (result: TurnOutcome) => void,
  ): Promise<TurnOutcome> {
    const key = input.idempotencyKey;
    if (key === undefined) return run(undefined);

    const { store, clock, settings } = this.deps;
    // No existence check first: a key claimed for a missing conversation (or another caller's, which is a different
    // partition) is released when the turn finds nothing to load, and the answer is the same 404.
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
    // A long turn (tool rounds, slow calls) renews its lease before a model call once a third of it has passed, so a
    // retry cannot take the key over while the turn still runs; a claim lost anyway stops the turn (ClaimLost).
    const claim = begun.claim;
    let renewedAt = claimedAt;
    const keepLease = async () => {
      const now = clock.now();
      if (now.getTime() - renewedAt < settings.idempotencyLeaseMs / 3) return;
      const renewed = await store.renewIdempotent(input.caller, input.conversationId, key, claim, {
        now,
        leaseMs: settings.idempotencyLeaseMs,
      });
      claim.token = renewed.token;
      renewedAt = now.getTime();
    };
    try {
      return await run(claim, keepLease);
    } catch (error) {
      // Nothing was stored: free the key so the client's retry runs the turn again. When storage does not answer,
      // keep trying in the background: the client was told to retry shortly, and nothing runs under this claim.
      const release = () => store.releaseIdempotent(input.caller, input.conversationId, key, claim);
      // A claim taken over is not ours to release: the request that holds it now answers the client.
      if (error instanceof ClaimLost) throw new IdempotencyInProgressError(CLAIM_LOST);
      await release().catch((releaseError: unknown) => {
        this.deps.log.warn(`Could not release an idempotency key after a failed turn: ${String(releaseError)}`);
        this.releases.add(releaseId, release, claimedAt + settings.idempotencyLeaseMs);
      });
      throw error;
    }
  }

  private async replay(input: { caller: Caller; conversationId: string }, record: TurnRecord): Promise<TurnOutcome> {
    if (record.requiresAction) {
      const { turnId, toolCalls, expiresAt } = record.requiresAction;
      // Only while that turn still waits: a paused turn answered, cancelled or expired is not offered again.
      const conversation = await this.deps.store.get(input.caller, input.conversationId);
      if (!conversation) throw conversationNotFound();
      const waiting =
        conversation.pending?.id === turnId && !this.expired(conversation.pending.expiresAt)
          ? await this.deps.store.getPendingTurn(input.caller, input.conversationId)
          : undefined;
      // A turn that paused again under the same id awaits other calls now: this answer is stale as well.
      const same = waiting?.awaiting.map((call) => call.id).join() === toolCalls.map((call) => call.id).join();
      if (!same) {
        throw new NoPendingTurnError(
          `The turn this Idempotency-Key started (${turnId}) is no longer waiting for tool results: it was answered, ` +
            'cancelled or it expired. GET the conversation for its outcome, or send the message again with a new key.',
        );
      }
      return {
        status: 'requires_action',
        conversationId: record.conversationId,
        turnId,
        toolCalls,
        expiresAt,
        usage: record.usage,
        context: record.context,
        replayed: true,
      };
    }
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

  private expired(expiresAt: string): boolean {
    return Date.parse(expiresAt) <= this.deps.clock.now().getTime();
  }

  private completionRequest(plan: ContextPlan): CompletionRequest {
    const { settings } = this.deps;
    return {
      messages: plan.messages,
      maxResponseTokens: settings.maxResponseTokens,
      ...(settings.temperature !== undefined ? { temperature: settings.temperature } : {}),
    };
  }

  /** The user's message is encoded once per turn, however many attempts the turn takes. */
  private userMessage(input: TurnInput): CountedTurnMessage {
    const message: ChatMessage = { role: 'user', content: input.content, ...(input.name ? { name: input.name } : {}) };
    return { ...message, tokens: countMessageTokens(message, this.deps.tokenizer) };
  }
}

/** A completion whose usage is known: reported by the service or counted by the core. */
export type CountedCompletion = Completion & { usage: Usage };

/** When the service reports no usage: the prompt as the app counted it, plus the reply (and its calls). */
function countedUsage(completion: Completion, plan: ContextPlan, tokenizer: Tokenizer): Usage {
  const completionTokens =
    tokenizer.countTokens(completion.content) +
    (completion.toolCalls ?? []).reduce(
      (sum, call) => sum + tokenizer.countTokens(call.name) + tokenizer.countTokens(call.arguments),
      0,
    );
  return {
    ...NO_USAGE,
    promptTokens: plan.promptTokens,
    completionTokens,
    totalTokens: plan.promptTokens + completionTokens,
  };
}

const CLAIM_LOST =
  'This request held its Idempotency-Key longer than the lease, and a retry took the key over; that retry answers.';

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

function toResult(record: TurnRecord, reply: StoredMessage, replayed: boolean): TurnResult {
  return {
    status: 'completed',
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

function requiresAction(
  conversationId: string,
  pending: PendingTurn,
  replayed: boolean,
  context?: TurnContext,
): RequiresActionResult {
  const last = pending.calls.at(-1);
  return {
    status: 'requires_action',
    conversationId,
    turnId: pending.id,
    toolCalls: pending.awaiting,
    expiresAt: pending.expiresAt,
    usage: pending.usage,
    context: context ?? {
      promptTokens: last?.estimated ?? 0,
      droppedTurns: 0,
      ...(last ? { servicePromptTokens: last.reported } : {}),
      toolRounds: pending.rounds,
    },
    replayed,
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

/**
 * Tool results hash apart from any message: the same key reused across the two routes is a different body. The
 * results are hashed in toolCallId order, as they are used: the same results posted in another order are the same
 * request (each id appears once: continueTurn refuses duplicates before hashing).
 */
export function hashToolResults(input: Pick<ToolResultsInput, 'turnId' | 'results'>): string {
  const results = input.results
    .map((result) => [result.toolCallId, result.output] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return createHash('sha256')
    .update(JSON.stringify(['tool-results', input.turnId ?? null, results]))
    .digest('base64url');
}

function requestHashOf(input: TurnInput | ToolResultsInput): string {
  return 'results' in input ? hashToolResults(input) : hashTurnRequest(input);
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
      return {
        content,
        finishReason: chunk.finishReason,
        ...(chunk.usage ? { usage: chunk.usage } : {}),
        ...(chunk.toolCalls && chunk.toolCalls.length > 0 ? { toolCalls: chunk.toolCalls } : {}),
      };
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

/** Conversations whose next reservation is remembered (see TurnRunner.reserveHints), at most. */
const RESERVE_HINTS_MAX = 10_000;
/** Added to a reservation hint: the reply's per-message tokens, and a little to spare. */
const HINT_MARGIN_TOKENS = 8;

function hintKey(caller: Caller, conversationId: string): string {
  return `${caller.kind}:${caller.id}/${conversationId}`;
}

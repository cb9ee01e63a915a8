/**
 * Failover across model deployments (AZURE_OPENAI_DEPLOYMENTS). Azure OpenAI quota is per region, subscription and
 * model, so a busy deployment answers 429 for seconds to minutes while another has room. For each model call of a
 * turn this picks the deployments to try, in order, and moves to the next on 429, 5xx, connection failure or
 * timeout:
 *
 * - A deployment that answered 429 is skipped, in this instance, until its retry-after (retry-after-ms) has passed;
 *   one that failed otherwise, for its retry-after or else the cool-down (AZURE_OPENAI_FAILOVER_COOLDOWN_SECONDS).
 * - Conversations stick to where their prompt cache lives. A conversation's home is the deployment first in line
 *   when this instance first served it; it goes there whenever home is healthy. While home is skipped, it sticks to
 *   the deployment that served it last, while that one is healthy. So a detour caused by a 429 ends when the
 *   retry-after has passed, and a conversation that started while the first deployment was skipped stays where its
 *   cache was built when that one comes back.
 * - One deadline (AZURE_OPENAI_TIMEOUT_MS) bounds all the attempts of a call together, the stream included; each
 *   attempt has its own limit (AZURE_OPENAI_ATTEMPT_TIMEOUT_MS), which for a stream ends with its first chunk.
 * - An attempt is aborted before the next one starts, and nothing is tried again once an answer (for a stream, its
 *   first chunk) arrived: the model is never asked twice for one stored reply.
 * - Every attempt is logged: the deployment, what happened, how long it is skipped, what comes next (with a single
 *   deployment, only failures).
 *
 * With a single deployment the call goes straight through: no skipping and no extra deadline (the SDK's own
 * retries and AZURE_OPENAI_TIMEOUT_MS apply as before).
 */
import { ChatError, RateLimitedError, UpstreamError } from './errors';
import type { Logger } from './dependencies';
import { ModelCallRecord } from './modelTelemetry';
import type { ChatModel, Clock, Completion, CompletionChunk, CompletionRequest, Tokenizer } from './ports';
import { noTelemetry, type Telemetry } from './telemetry';

/** One deployment a turn may be served by, with the token accounting of its model family. */
export interface ModelDeployment {
  /** Unique among the deployments: logs, telemetry and the turn's result name it. */
  readonly name: string;
  /** The model behind the deployment (it picked the tokenizer and the window). */
  readonly modelName: string;
  readonly model: ChatModel;
  readonly tokenizer: Tokenizer;
  /** The context window in tokens (CHAT_TOKEN_LIMIT or the model family's). */
  readonly tokenLimit: number;
  /** The endpoint's host, for telemetry (`server.address`). */
  readonly serverAddress?: string;
}

export interface FailoverOptions {
  /** One deadline for all the attempts of one model call, in ms. */
  turnTimeoutMs: number;
  /** One attempt's time to answer (to its first chunk, for a stream), in ms. */
  attemptTimeoutMs: number;
  /** How long a deployment that failed without a retry-after is skipped, in ms. */
  cooldownMs: number;
  /** Conversations whose last deployment is remembered (the least recently served is forgotten first). */
  stickyConversations?: number;
  /** Each attempt is a `chat {model}` span with the GenAI metrics. Default: none. */
  telemetry?: Telemetry;
}

export interface Served<T> {
  value: T;
  deployment: ModelDeployment;
}

/** What a turn sends to a given deployment (counted with its encoding, trimmed to its window). */
export type RequestFor = (deployment: ModelDeployment) => CompletionRequest;

interface Skipped {
  until: number;
  why: string;
  rateLimited: boolean;
}

export class ModelDeployments {
  private readonly skipped = new Map<string, Skipped>();
  /** conversation id -> its home and the deployment that served it last; a Map keeps the oldest use first. */
  private readonly conversations = new Map<string, { home: string; last?: string }>();

  constructor(
    readonly all: readonly ModelDeployment[],
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly options: FailoverOptions,
  ) {
    if (all.length === 0) throw new Error('At least one model deployment is needed.');
    if (new Set(all.map((deployment) => deployment.name)).size !== all.length) {
      throw new Error('Model deployment names must be unique.');
    }
  }

  /** One deployment, called as it is: no failover, no skipping, no deadline of ours. */
  static single(deployment: ModelDeployment, clock: Clock, log: Logger, telemetry?: Telemetry): ModelDeployments {
    return new ModelDeployments([deployment], clock, log, {
      turnTimeoutMs: 0,
      attemptTimeoutMs: 0,
      cooldownMs: 0,
      ...(telemetry ? { telemetry } : {}),
    });
  }

  private get telemetry(): Telemetry {
    return this.options.telemetry ?? noTelemetry;
  }

  get primary(): ModelDeployment {
    return this.all[0] as ModelDeployment;
  }

  private get failover(): boolean {
    return this.all.length > 1;
  }

  /**
   * The deployments to try for this conversation, in order: the one that served it last (while healthy), then the
   * other healthy ones in configured order. Throws, without calling anything, when every one is being skipped.
   */
  order(conversationId: string): ModelDeployment[] {
    if (!this.failover) return [this.primary];
    const now = this.clock.now().getTime();
    const healthy = this.all.filter((deployment) => {
      const skipped = this.skipped.get(deployment.name);
      if (skipped && skipped.until > now) return false;
      this.skipped.delete(deployment.name);
      return true;
    });
    if (healthy.length === 0) throw this.allSkipped(conversationId, now);
    const known = this.conversations.get(conversationId);
    if (!known) {
      this.track(conversationId, { home: (healthy[0] as ModelDeployment).name });
      return healthy;
    }
    const sticky =
      healthy.find((deployment) => deployment.name === known.home) ??
      healthy.find((deployment) => deployment.name === known.last);
    return sticky ? [sticky, ...healthy.filter((deployment) => deployment !== sticky)] : healthy;
  }

  /** One completion with failover; `requestFor` says what to send to each deployment tried. */
  async complete(conversationId: string, requestFor: RequestFor, signal?: AbortSignal): Promise<Served<Completion>> {
    const deadline = this.deadline(signal);
    try {
      return await this.attempts(
        conversationId,
        async (deployment, attemptSignal) => {
          const request = requestFor(deployment);
          const record = new ModelCallRecord(this.telemetry, deployment, conversationId, request);
          try {
            const completion = await record.run(() => deployment.model.complete(request, attemptSignal));
            record.answered(completion);
            return completion;
          } catch (error) {
            record.failed(error);
            throw error;
          }
        },
        deadline?.signal ?? signal,
      );
    } catch (error) {
      throw deadline?.expired() ? this.deadlineError(error) : error;
    } finally {
      deadline?.dispose();
    }
  }

  /**
   * Opens a stream with failover until its first chunk; the rest comes from that deployment alone (the user has
   * seen the reply begin, so a failure now ends the turn). The deadline still bounds the whole stream.
   */
  async stream(
    conversationId: string,
    requestFor: RequestFor,
    signal?: AbortSignal,
  ): Promise<Served<AsyncIterable<CompletionChunk>>> {
    const deadline = this.deadline(signal);
    const mapError = (error: unknown) => (deadline?.expired() ? this.deadlineError(error) : error);
    let served: Served<{
      first: IteratorResult<CompletionChunk>;
      rest: AsyncIterator<CompletionChunk>;
      record: ModelCallRecord;
    }>;
    try {
      served = await this.attempts(
        conversationId,
        async (deployment, attemptSignal, answered) => {
          const request = requestFor(deployment);
          const record = new ModelCallRecord(this.telemetry, deployment, conversationId, request);
          try {
            const rest = record.run(() => deployment.model.stream(request, attemptSignal)[Symbol.asyncIterator]());
            const first = await record.run(() => rest.next());
            answered();
            return { first, rest, record };
          } catch (error) {
            record.failed(error);
            throw error;
          }
        },
        deadline?.signal ?? signal,
      );
    } catch (error) {
      deadline?.dispose();
      throw mapError(error);
    }
    const { first, rest, record } = served.value;
    async function* chunks(): AsyncIterable<CompletionChunk> {
      let content = '';
      let ended = false;
      try {
        for (let next = first; !next.done; next = await rest.next()) {
          const chunk = next.value;
          if (chunk.type === 'delta') content += chunk.content;
          else {
            ended = true;
            record.answered({ ...chunk, content });
          }
          yield chunk;
        }
        if (!ended) record.failed(new Error('The model stream ended without a final chunk.'));
      } catch (error) {
        const mapped = mapError(error);
        if (!ended) record.failed(mapped);
        ended = true;
        throw mapped;
      } finally {
        // A consumer that stops early (the client went away with CHAT_STREAM_ON_DISCONNECT=abort) ends it too.
        if (!ended) record.failed(new Error('The stream was not read to its end.'));
        deadline?.dispose();
      }
    }
    return { value: chunks(), deployment: served.deployment };
  }

  private async attempts<T>(
    conversationId: string,
    attempt: (deployment: ModelDeployment, signal: AbortSignal | undefined, answered: () => void) => Promise<T>,
    signal: AbortSignal | undefined,
  ): Promise<Served<T>> {
    const order = this.order(conversationId);
    let lastError: unknown;
    for (const [index, deployment] of order.entries()) {
      const started = this.clock.now().getTime();
      const limit = this.failover ? new AbortController() : undefined;
      const timer =
        limit && setTimeout(() => limit.abort(new Error('attempt timed out')), this.options.attemptTimeoutMs);
      const attemptSignal = limit ? (signal ? AbortSignal.any([signal, limit.signal]) : limit.signal) : signal;
      try {
        const value = await attempt(deployment, attemptSignal, () => clearTimeout(timer));
        this.remember(conversationId, deployment);
        this.logAttempt(conversationId, deployment, index, order.length, started, 'answered');
        return { value, deployment };
      } catch (caught) {
        const error = limit?.signal.aborted && !signal?.aborted ? this.attemptTimeoutError(caught) : caught;
        const reason = this.failover && !signal?.aborted ? failoverReason(error) : undefined;
        const next = reason ? order[index + 1] : undefined;
        if (reason) this.skip(deployment, reason);
        this.logAttempt(conversationId, deployment, index, order.length, started, error, next);
        if (!reason) throw error;
        lastError = error;
      } finally {
        clearTimeout(timer);
      }
    }
    throw lastError;
  }

  /** Joined with the caller's signal; `expired()` says the deadline, not the caller, stopped the call. */
  private deadline(signal: AbortSignal | undefined) {
    if (!this.failover) return undefined;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error('deadline')), this.options.turnTimeoutMs);
    return {
      signal: signal ? AbortSignal.any([signal, controller.signal]) : controller.signal,
      expired: () => controller.signal.aborted,
      dispose: () => clearTimeout(timer),
    };
  }

  private deadlineError(cause: unknown): ChatError {
    if (cause instanceof UpstreamError && cause.code === 'upstream_timeout') return cause;
    return new UpstreamError('upstream_timeout', `The model did not answer within ${this.options.turnTimeoutMs} ms.`, {
      cause,
    });
  }

  private attemptTimeoutError(cause: unknown): UpstreamError {
    return new UpstreamError(
      'upstream_timeout',
      `The deployment did not answer within ${this.options.attemptTimeoutMs} ms.`,
      { cause },
    );
  }

  private skip(deployment: ModelDeployment, reason: FailoverReason): void {
    const ms = reason.retryAfterMs ?? this.options.cooldownMs;
    this.skipped.set(deployment.name, {
      until: this.clock.now().getTime() + ms,
      why: reason.why,
      rateLimited: reason.rateLimited,
    });
  }

  private remember(conversationId: string, deployment: ModelDeployment): void {
    if (!this.failover) return;
    const known = this.conversations.get(conversationId);
    this.track(conversationId, { home: known?.home ?? deployment.name, last: deployment.name });
  }

  private track(conversationId: string, entry: { home: string; last?: string }): void {
    this.conversations.delete(conversationId);
    this.conversations.set(conversationId, entry);
    if (this.conversations.size > (this.options.stickyConversations ?? 10_000)) {
      const oldest = this.conversations.keys().next();
      if (!oldest.done) this.conversations.delete(oldest.value);
    }
  }

  private allSkipped(conversationId: string, now: number): ChatError {
    const entries = [...this.skipped.entries()];
    const waitMs = Math.min(...entries.map(([, skipped]) => skipped.until)) - now;
    this.log.warn(
      `[model] conversation ${conversationId}: every deployment is being skipped (${entries
        .map(([name, skipped]) => `${name} after ${skipped.why}, ${seconds(skipped.until - now)} s more`)
        .join('; ')}); not calling the model`,
    );
    return entries.some(([, skipped]) => skipped.rateLimited)
      ? new RateLimitedError(
          'Every model deployment is rate limited for this app. Retry after the time given.',
          waitMs / 1000,
          'upstream_rate_limited',
        )
      : new UpstreamError('upstream_unavailable', 'Every model deployment failed just now.', {
          retryAfterSeconds: Math.max(1, waitMs / 1000),
        });
  }

  private logAttempt(
    conversationId: string,
    deployment: ModelDeployment,
    index: number,
    of: number,
    started: number,
    outcome: unknown,
    next?: ModelDeployment,
  ): void {
    const elapsed = this.clock.now().getTime() - started;
    const head = `[model] conversation ${conversationId} attempt ${index + 1}/${of} deployment=${deployment.name}:`;
    if (outcome === 'answered') {
      // With one deployment there is no choice to report: only failures are logged, as before.
      if (this.failover) this.log.info(`${head} answered in ${elapsed} ms`);
      return;
    }
    const skipped = this.skipped.get(deployment.name);
    const skipNote = skipped ? `, skipped for ${seconds(skipped.until - this.clock.now().getTime())} s` : '';
    const nextNote = next ? `; trying deployment=${next.name}` : skipped ? '; no deployment left to try' : '';
    this.log.warn(`${head} ${describe(outcome)} after ${elapsed} ms${skipNote}${nextNote}`);
  }
}

interface FailoverReason {
  why: string;
  rateLimited: boolean;
  retryAfterMs: number | undefined;
}

/** 429, 5xx, connection failure, timeout, a stream broken before its first chunk: move on. Anything else: stop. */
export function failoverReason(error: unknown): FailoverReason | undefined {
  if (error instanceof RateLimitedError && error.code === 'upstream_rate_limited') {
    return { why: 'HTTP 429', rateLimited: true, retryAfterMs: error.retryAfterMs };
  }
  if (!(error instanceof UpstreamError)) return undefined;
  const status = error.upstreamStatus;
  if (status !== undefined && status < 500 && status !== 408) return undefined;
  return {
    why: status !== undefined ? `HTTP ${status}` : error.code,
    rateLimited: false,
    retryAfterMs: error.retryAfterMs,
  };
}

function describe(error: unknown): string {
  if (error instanceof RateLimitedError)
    return `${error.code} (HTTP 429, retry after ${seconds(error.retryAfterMs)} s)`;
  if (error instanceof UpstreamError) {
    return error.upstreamStatus !== undefined ? `${error.code} (HTTP ${error.upstreamStatus})` : error.code;
  }
  if (error instanceof ChatError) return error.code;
  return error instanceof Error ? error.name : 'error';
}

function seconds(ms: number): string {
  return (Math.max(0, ms) / 1000).toFixed(1);
}

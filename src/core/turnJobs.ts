/**
 * Turns that run on a queue: the request stores a job and answers at once; a queue-triggered function runs the
 * turn with the same TurnRunner and then delivers the outcome where the caller wants it (a signed callback, a GitHub
 * comment, or only the status resource).
 *
 * Delivery is at least once, so every step is idempotent per job:
 * - the turn runs with the job's turn id as its Idempotency-Key: a redelivered message after the turn was stored
 *   replays it (no second model call, no second turn); a message redelivered because its worker died takes over
 *   the dead run's claim (`reclaimAbandoned`), and a stale run still going could not commit over it;
 * - a transient failure (storage, the model's 5xx/429, a busy conversation) is thrown, so the host retries after
 *   its visibility timeout; at the last allowed run the job is recorded failed, its failure delivered, and the
 *   message put in the poison queue;
 * - each delivery attempt is its own queue message, sent again with exponential backoff while attempts remain,
 *   and recorded as delivered or failed; after the last attempt the message goes to the poison queue and the turn
 *   stays stored.
 */
import { ChatError, IdempotencyKeyReusedError, NotFoundError } from './errors';
import type { Logger } from './dependencies';
import type {
  Caller,
  Clock,
  ConversationStore,
  DeliveryRecord,
  FailureRecord,
  ReplyEvent,
  ReplySender,
  ReplyTarget,
  StoredMessage,
  TurnJob,
  TurnJobChanges,
  TurnJobMessage,
  TurnJobQueue,
  TurnJobStore,
  TurnRecord,
} from './ports';
import { hashTurnRequest, seqFromMessageId, type TurnResult, type TurnRunner } from './turn';

export interface TurnJobSettings {
  /** Runs (queue dequeues) of one turn before a transient failure is final; keep it <= host.json maxDequeueCount. */
  maxRuns: number;
  /** Delivery attempts of one outcome, the first included. */
  deliveryAttempts: number;
  /** Wait before the second attempt; doubled for each next one (capped at an hour). */
  deliveryBackoffSeconds: number;
}

export interface TurnJobDependencies {
  jobs: TurnJobStore;
  queue: TurnJobQueue;
  turns: TurnRunner;
  store: ConversationStore;
  senders: Partial<Record<Exclude<ReplyTarget['kind'], 'none'>, ReplySender>>;
  clock: Clock;
  log: Logger;
  settings: TurnJobSettings;
}

export interface SubmitTurn {
  caller: Caller;
  conversationId: string;
  content: string;
  name?: string;
  /** Chosen by the caller's adapter: derived from the delivery id or Idempotency-Key, so a retry finds the job. */
  turnId: string;
  reply: ReplyTarget;
}

/** A job and, once completed, its stored reply: what the status resource shows. */
export interface TurnJobView {
  job: TurnJob;
  reply?: StoredMessage;
}

const MAX_BACKOFF_SECONDS = 3600;

export class TurnJobs {
  constructor(private readonly deps: TurnJobDependencies) {}

  /** Stores the job and enqueues it; a retried request (same turn id) answers the job it stored the first time. */
  async submit(input: SubmitTurn): Promise<TurnJob> {
    const { jobs, queue, clock } = this.deps;
    const { job, created } = await jobs.create({
      turnId: input.turnId,
      owner: input.caller,
      conversationId: input.conversationId,
      content: input.content,
      ...(input.name ? { name: input.name } : {}),
      reply: input.reply,
      createdAt: clock.now().toISOString(),
    });
    if (!created) {
      if (hashTurnRequest(job) !== hashTurnRequest(input)) throw new IdempotencyKeyReusedError();
      return job;
    }
    try {
      await queue.send(turnMessage(job));
    } catch (error) {
      // Not enqueued: forget the job, so the caller's retry stores and enqueues it afresh.
      await jobs.delete(job.owner, job.conversationId, job.turnId).catch((deleteError: unknown) => {
        this.deps.log.warn(
          `Could not remove turn job ${job.turnId} after failing to enqueue it: ${String(deleteError)}`,
        );
      });
      throw error;
    }
    return job;
  }

  /** Runs a `turn` message: the turn (unless already stored), then the first delivery attempt. */
  async run(message: Extract<TurnJobMessage, { type: 'turn' }>, dequeueCount: number): Promise<void> {
    let job = await this.deps.jobs.get(message.owner, message.conversationId, message.turnId);
    if (!job) {
      this.deps.log.warn(`Turn job ${message.turnId} no longer exists (its conversation was deleted?): dropped.`);
      return;
    }
    let gaveUp: string | undefined;
    if (job.status === 'queued' || job.status === 'running') {
      const ran = await this.runTurn(job, dequeueCount);
      job = ran.job;
      gaveUp = ran.gaveUp;
    }
    await this.attemptDelivery(job, (job.delivery?.attempts ?? 0) + 1);
    if (gaveUp) await this.deps.queue.poison(message, gaveUp);
  }

  /** Runs a `delivery` message: one more attempt, unless the outcome was delivered or given up on already. */
  async deliver(message: Extract<TurnJobMessage, { type: 'delivery' }>): Promise<void> {
    const job = await this.deps.jobs.get(message.owner, message.conversationId, message.turnId);
    if (!job || job.delivery?.state !== 'pending' || job.delivery.attempts >= message.attempt) return;
    await this.attemptDelivery(job, message.attempt);
  }

  /** The status resource: only the owner finds the job (another caller's key is another partition). */
  async view(caller: Caller, conversationId: string, turnId: string): Promise<TurnJobView> {
    const job = await this.deps.jobs.get(caller, conversationId, turnId);
    if (!job) throw new NotFoundError('No turn with this id exists in this conversation for the caller.');
    if (job.status !== 'completed' || !job.result) return { job };
    const reply = await this.deps.store.getMessage(caller, conversationId, job.result.replySeq);
    if (!reply) throw new NotFoundError('The conversation of this turn was deleted.');
    return { job, reply };
  }

  private async runTurn(job: TurnJob, dequeueCount: number): Promise<{ job: TurnJob; gaveUp?: string }> {
    const { turns, settings } = this.deps;
    await this.update(job, { status: 'running', runs: dequeueCount });
    const delivery = job.reply.kind === 'none' ? undefined : this.deliveryRecord('pending', 0);
    try {
      const result = await turns.send({
        caller: job.owner,
        conversationId: job.conversationId,
        content: job.content,
        ...(job.name ? { name: job.name } : {}),
        idempotencyKey: job.turnId,
        // A first dequeue never meets a live claim of its own; a later one does only when the earlier run died.
        reclaimAbandoned: dequeueCount > 1,
      });
      return { job: await this.update(job, { status: 'completed', result: toRecord(result), delivery }) };
    } catch (error) {
      const failure = toFailure(error);
      const transient = isTransient(error);
      if (transient && dequeueCount < settings.maxRuns) {
        await this.update(job, { status: 'queued', lastError: failure }).catch((updateError: unknown) => {
          this.deps.log.warn(`Could not record the failure of turn job ${job.turnId}: ${String(updateError)}`);
        });
        throw error; // the host makes the message visible again after its visibility timeout
      }
      this.deps.log.warn(`Turn job ${job.turnId} failed after ${dequeueCount} run(s): ${failure.code}`);
      const failed = await this.update(job, { status: 'failed', failure, delivery });
      return transient ? { job: failed, gaveUp: `${failure.code} after ${dequeueCount} runs` } : { job: failed };
    }
  }

  private async attemptDelivery(job: TurnJob, attempt: number): Promise<void> {
    const { queue, senders, settings, log } = this.deps;
    if (job.reply.kind === 'none' || job.delivery?.state !== 'pending') return;
    if (job.status !== 'completed' && job.status !== 'failed') return;
    const sender = senders[job.reply.kind];
    const outcome = sender
      ? await this.eventOf(job).then(
          (event) => sender.deliver(event),
          (error: unknown) => ({ ok: false as const, retryable: false, error: String(error) }),
        )
      : { ok: false as const, retryable: false, error: `No sender is configured for ${job.reply.kind} replies.` };
    if (outcome.ok) {
      await this.update(job, { delivery: this.deliveryRecord('delivered', attempt) });
      return;
    }
    const message: TurnJobMessage = { ...reference(job), type: 'delivery', attempt };
    if (outcome.retryable && attempt < settings.deliveryAttempts) {
      await this.update(job, { delivery: this.deliveryRecord('pending', attempt, outcome.error) });
      const delaySeconds = Math.min(MAX_BACKOFF_SECONDS, settings.deliveryBackoffSeconds * 2 ** (attempt - 1));
      await queue.send({ ...message, attempt: attempt + 1 }, { delaySeconds });
      return;
    }
    log.warn(`The ${job.reply.kind} reply of turn ${job.turnId} was not delivered (${attempt} attempts).`);
    await this.update(job, { delivery: this.deliveryRecord('failed', attempt, outcome.error) });
    await queue.poison(message, `delivery failed after ${attempt} attempts: ${outcome.error}`);
  }

  private async eventOf(job: TurnJob): Promise<ReplyEvent> {
    if (job.status === 'failed') {
      return { type: 'turn.failed', job, failure: job.failure ?? toFailure(undefined) };
    }
    const record = job.result;
    if (!record) throw new Error(`Turn job ${job.turnId} completed without a result.`);
    const reply = await this.deps.store.getMessage(job.owner, job.conversationId, record.replySeq);
    if (!reply) throw new Error('The conversation was deleted before its reply was delivered.');
    return { type: 'turn.completed', job, reply, record };
  }

  private deliveryRecord(state: DeliveryRecord['state'], attempts: number, lastError?: string): DeliveryRecord {
    return {
      state,
      attempts,
      ...(lastError ? { lastError: lastError.slice(0, 500) } : {}),
      updatedAt: this.deps.clock.now().toISOString(),
    };
  }

  private async update(job: TurnJob, changes: TurnJobChanges): Promise<TurnJob> {
    const updatedAt = this.deps.clock.now().toISOString();
    await this.deps.jobs.update(job.owner, job.conversationId, job.turnId, { ...changes, updatedAt });
    return { ...job, ...changes, updatedAt };
  }
}

function reference(job: TurnJob): { owner: Caller; conversationId: string; turnId: string } {
  return { owner: { id: job.owner.id, kind: job.owner.kind }, conversationId: job.conversationId, turnId: job.turnId };
}

function turnMessage(job: TurnJob): TurnJobMessage {
  return { type: 'turn', ...reference(job) };
}

function toRecord(result: TurnResult): TurnRecord {
  const replySeq = seqFromMessageId(result.message.id);
  if (replySeq === undefined) throw new Error(`Unexpected message id ${result.message.id}.`);
  return {
    conversationId: result.conversationId,
    replySeq,
    finishReason: result.finishReason as TurnRecord['finishReason'],
    usage: result.usage,
    context: result.context,
  };
}

/** Worth another run: storage or the model did not answer, a rate limit, a turn busy elsewhere, or a bug. */
export function isTransient(error: unknown): boolean {
  if (!(error instanceof ChatError)) return true;
  return error.status >= 500 || error.status === 429 || error.status === 409;
}

/** What the synchronous request would have answered, as stored with the job (no stack, no secret). */
export function toFailure(error: unknown): FailureRecord {
  if (error instanceof ChatError) {
    return {
      code: error.code,
      status: error.status,
      title: error.title,
      detail: error.detail,
      ...(Object.keys(error.extensions).length > 0 ? { extensions: error.extensions } : {}),
    };
  }
  return {
    code: 'internal_error',
    status: 500,
    title: 'Internal Server Error',
    detail: 'Something went wrong on our side while running the turn.',
  };
}

import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import { ContentFilteredError, StorageUnavailableError } from '../../../src/core/errors';
import type {
  Caller,
  DeliveryOutcome,
  NewTurnJob,
  ReplyEvent,
  TurnJob,
  TurnJobChanges,
  TurnJobMessage,
  TurnJobQueue,
  TurnJobStore,
} from '../../../src/core/ports';
import { hashTurnRequest, TurnRunner } from '../../../src/core/turn';
import { TurnJobs } from '../../../src/core/turnJobs';
import { fakeDependencies } from '../../support/fakes';

class MemoryJobStore implements TurnJobStore {
  readonly jobs = new Map<string, TurnJob>();
  private key(owner: Caller, conversationId: string, turnId: string) {
    return `${owner.kind}:${owner.id}/${conversationId}/${turnId}`;
  }
  async create(job: NewTurnJob) {
    const key = this.key(job.owner, job.conversationId, job.turnId);
    const existing = this.jobs.get(key);
    if (existing) return { job: structuredClone(existing), created: false };
    const stored: TurnJob = { ...job, status: 'queued', updatedAt: job.createdAt, runs: 0 };
    this.jobs.set(key, stored);
    return { job: structuredClone(stored), created: true };
  }
  async get(owner: Caller, conversationId: string, turnId: string) {
    const job = this.jobs.get(this.key(owner, conversationId, turnId));
    return job ? structuredClone(job) : undefined;
  }
  async update(owner: Caller, conversationId: string, turnId: string, changes: TurnJobChanges) {
    const job = this.jobs.get(this.key(owner, conversationId, turnId));
    if (job) Object.assign(job, structuredClone(changes));
  }
  async delete(owner: Caller, conversationId: string, turnId: string) {
    this.jobs.delete(this.key(owner, conversationId, turnId));
  }
}

class MemoryQueue implements TurnJobQueue {
  readonly sent: { message: TurnJobMessage; delaySeconds?: number }[] = [];
  readonly poisoned: { message: TurnJobMessage; reason: string }[] = [];
  async send(message: TurnJobMessage, options: { delaySeconds?: number } = {}) {
    this.sent.push({ message, ...options });
  }
  async poison(message: TurnJobMessage, reason: string) {
    this.poisoned.push({ message, reason });
  }
}

class ScriptedSender {
  readonly events: ReplyEvent[] = [];
  outcomes: DeliveryOutcome[] = [];
  async deliver(event: ReplyEvent): Promise<DeliveryOutcome> {
    this.events.push(event);
    return this.outcomes.shift() ?? { ok: true };
  }
}

const owner: Caller = { id: 'webhook', kind: 'integration' };

describe('TurnJobs', () => {
  let fakes: ReturnType<typeof fakeDependencies>;
  let jobStore: MemoryJobStore;
  let queue: MemoryQueue;
  let sender: ScriptedSender;
  let jobs: TurnJobs;
  let conversationId: string;

  beforeEach(async () => {
    fakes = fakeDependencies();
    jobStore = new MemoryJobStore();
    queue = new MemoryQueue();
    sender = new ScriptedSender();
    jobs = new TurnJobs({
      jobs: jobStore,
      queue,
      turns: new TurnRunner(fakes.deps),
      store: fakes.store,
      senders: { webhook: sender },
      clock: fakes.deps.clock,
      log: fakes.deps.log,
      settings: { maxRuns: 3, deliveryAttempts: 3, deliveryBackoffSeconds: 10 },
    });
    const conversation = await fakes.store.create(owner, {
      id: 'conv1',
      title: null,
      metadata: {},
      prologue: [],
      createdAt: new Date(0).toISOString(),
    });
    conversationId = conversation.id;
  });

  async function submit(turnId = 'turn_aaaaaaaaaaaaaaaaaaaaaaaa') {
    return jobs.submit({
      caller: owner,
      conversationId,
      content: 'hello there',
      turnId,
      reply: { kind: 'webhook', threadId: 't1' },
    });
  }

  const turnMessage = (turnId: string): Extract<TurnJobMessage, { type: 'turn' }> => ({
    type: 'turn',
    owner,
    conversationId,
    turnId,
  });

  it('stores the job, enqueues one reference message, and a repeated submit enqueues nothing more', async () => {
    const job = await submit();
    const again = await submit();
    assert.equal(again.turnId, job.turnId);
    assert.deepEqual(
      queue.sent.map((entry) => entry.message),
      [turnMessage(job.turnId)],
    );
    await assert.rejects(
      jobs.submit({ caller: owner, conversationId, content: 'other', turnId: job.turnId, reply: { kind: 'none' } }),
      { name: 'IdempotencyKeyReusedError' },
    );
  });

  it('runs the turn once however often its message is delivered, and delivers the reply once', async () => {
    const job = await submit();
    await jobs.run(turnMessage(job.turnId), 1);
    await jobs.run(turnMessage(job.turnId), 2);
    assert.equal(fakes.model.requests.length, 1);
    assert.equal(fakes.store.commits, 1);
    assert.equal(sender.events.length, 1);
    assert.equal(sender.events[0]?.type, 'turn.completed');
    const stored = await jobStore.get(owner, conversationId, job.turnId);
    assert.equal(stored?.status, 'completed');
    assert.deepEqual(stored?.delivery?.state, 'delivered');
  });

  it('a crash after the commit (job still running): the redelivery replays the stored turn, no model call', async () => {
    const job = await submit();
    await new TurnRunner(fakes.deps).send({
      caller: owner,
      conversationId,
      content: 'hello there',
      idempotencyKey: job.turnId,
    });
    await jobStore.update(owner, conversationId, job.turnId, { status: 'running', runs: 1 });
    await jobs.run(turnMessage(job.turnId), 2);
    assert.equal(fakes.model.requests.length, 1);
    assert.equal(fakes.store.commits, 1);
    assert.equal((await jobStore.get(owner, conversationId, job.turnId))?.status, 'completed');
  });

  it('a crash before the commit (claim left pending): the redelivery takes the claim over and stores the turn once', async () => {
    const job = await submit();
    await fakes.store.beginIdempotent(owner, conversationId, job.turnId, hashTurnRequest({ content: 'hello there' }), {
      now: new Date(),
      leaseMs: 3_600_000,
    });
    await jobs.run(turnMessage(job.turnId), 2);
    assert.equal(fakes.store.commits, 1);
    assert.equal((await jobStore.get(owner, conversationId, job.turnId))?.status, 'completed');
  });

  it('a transient failure is thrown for the host to retry, and at the last run recorded, delivered and poisoned', async () => {
    const job = await submit();
    fakes.model.answers.push(
      new StorageUnavailableError(),
      new StorageUnavailableError(),
      new StorageUnavailableError(),
    );
    await assert.rejects(jobs.run(turnMessage(job.turnId), 1), StorageUnavailableError);
    let stored = await jobStore.get(owner, conversationId, job.turnId);
    assert.equal(stored?.status, 'queued');
    assert.equal(stored?.lastError?.code, 'storage_unavailable');
    await assert.rejects(jobs.run(turnMessage(job.turnId), 2), StorageUnavailableError);
    await jobs.run(turnMessage(job.turnId), 3);
    stored = await jobStore.get(owner, conversationId, job.turnId);
    assert.equal(stored?.status, 'failed');
    assert.equal(stored?.failure?.code, 'storage_unavailable');
    assert.equal(sender.events[0]?.type, 'turn.failed');
    assert.equal(queue.poisoned.length, 1);
    assert.match(queue.poisoned[0]!.reason, /storage_unavailable after 3 runs/);
  });

  it('a refusal of the request fails the job at once, without retries', async () => {
    const job = await submit();
    fakes.model.answers.push(new ContentFilteredError({}));
    await jobs.run(turnMessage(job.turnId), 1);
    const stored = await jobStore.get(owner, conversationId, job.turnId);
    assert.equal(stored?.status, 'failed');
    assert.equal(stored?.failure?.code, 'content_filtered');
    assert.equal(queue.poisoned.length, 0);
  });

  it('retries a failed delivery through the queue with doubling delays, then records it failed and poisons it', async () => {
    const job = await submit();
    sender.outcomes = [1, 2, 3].map(() => ({ ok: false, retryable: true, error: 'the callback answered 500' }));
    await jobs.run(turnMessage(job.turnId), 1);
    const retries = () => queue.sent.filter((entry) => entry.message.type === 'delivery');
    assert.deepEqual(
      retries().map((entry) => [entry.message.type === 'delivery' && entry.message.attempt, entry.delaySeconds]),
      [[2, 10]],
    );
    await jobs.deliver(retries()[0]!.message as Extract<TurnJobMessage, { type: 'delivery' }>);
    // An old duplicate of attempt 2 is ignored.
    await jobs.deliver(retries()[0]!.message as Extract<TurnJobMessage, { type: 'delivery' }>);
    assert.deepEqual(
      retries().map((entry) => entry.delaySeconds),
      [10, 20],
    );
    await jobs.deliver(retries()[1]!.message as Extract<TurnJobMessage, { type: 'delivery' }>);
    const stored = await jobStore.get(owner, conversationId, job.turnId);
    assert.equal(stored?.status, 'completed');
    assert.deepEqual([stored?.delivery?.state, stored?.delivery?.attempts], ['failed', 3]);
    assert.equal(sender.events.length, 3);
    assert.equal(queue.poisoned.length, 1);
    assert.equal(new Set(sender.events.map((event) => event.job.turnId)).size, 1);
  });

  it('shows a job only to its owner', async () => {
    const job = await submit();
    await assert.rejects(jobs.view({ id: 'someone', kind: 'user' }, conversationId, job.turnId), {
      name: 'NotFoundError',
    });
    assert.equal((await jobs.view(owner, conversationId, job.turnId)).job.status, 'queued');
  });
});

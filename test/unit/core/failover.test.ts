import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ContentFilteredError, RateLimitedError, UpstreamError } from '../../../src/core/errors';
import { ModelDeployments, failoverReason, type ModelDeployment } from '../../../src/core/failover';
import type { ChatModel, Completion, CompletionChunk, CompletionRequest } from '../../../src/core/ports';
import { WordTokenizer } from '../../support/fakes';

/** A model that answers with its own name, or fails as scripted (one entry per call); it counts its calls. */
class NamedModel implements ChatModel {
  calls = 0;
  readonly failures: (Error | 'hang' | undefined)[] = [];
  constructor(readonly name: string) {}
  async complete(_request: CompletionRequest, signal?: AbortSignal): Promise<Completion> {
    this.calls++;
    const failure = this.failures.shift();
    if (failure === 'hang') {
      return new Promise((_resolve, reject) => {
        signal?.addEventListener('abort', () => reject(new Error('aborted')), { once: true });
      });
    }
    if (failure) throw failure;
    return {
      content: this.name,
      finishReason: 'stop',
      usage: { promptTokens: 1, cachedPromptTokens: 0, completionTokens: 1, totalTokens: 2 },
    };
  }
  /** The next stream sends its first delta, then breaks. */
  breakAfterFirstDelta = false;
  async *stream(request: CompletionRequest, signal?: AbortSignal): AsyncIterable<CompletionChunk> {
    const completion = await this.complete(request, signal);
    yield { type: 'delta', content: completion.content };
    if (this.breakAfterFirstDelta) throw serverError(500);
    yield { type: 'done', finishReason: 'stop', usage: completion.usage };
  }
}

const rateLimited = (seconds: number) => new RateLimitedError('busy', seconds, 'upstream_rate_limited');
const serverError = (status: number) => new UpstreamError('upstream_error', 'x', { upstreamStatus: status });

function setup(count = 2, options: { attemptTimeoutMs?: number; turnTimeoutMs?: number } = {}) {
  let now = Date.parse('2026-01-01T00:00:00Z');
  const clock = { now: () => new Date(now) };
  const logs: string[] = [];
  const log = { info: (line: string) => logs.push(line), warn: (line: string) => logs.push(line), error: () => {} };
  const models = Array.from({ length: count }, (_, index) => new NamedModel(String.fromCharCode(65 + index)));
  const deployments: ModelDeployment[] = models.map((model) => ({
    name: model.name,
    modelName: 'gpt-4o-mini',
    model,
    tokenizer: new WordTokenizer(),
    tokenLimit: 1000,
  }));
  const pool = new ModelDeployments(deployments, clock, log, {
    turnTimeoutMs: options.turnTimeoutMs ?? 60_000,
    attemptTimeoutMs: options.attemptTimeoutMs ?? 30_000,
    cooldownMs: 30_000,
  });
  const ask = async (conversation: string) =>
    (await pool.complete(conversation, () => ({ messages: [], maxResponseTokens: 1 }))).deployment.name;
  return { pool, models, logs, ask, advance: (ms: number) => (now += ms) };
}

describe('ModelDeployments (failover)', () => {
  it('moves on after a 429, skips that deployment until its retry-after, then the conversation returns to it', async () => {
    const { models, ask, advance, logs } = setup();
    models[0]!.failures.push(rateLimited(2.5));
    assert.equal(await ask('c1'), 'B');
    assert.match(
      logs.join('\n'),
      /attempt 1\/2 deployment=A: upstream_rate_limited \(HTTP 429, retry after 2\.5 s\) after 0 ms, skipped for 2\.5 s; trying deployment=B/,
    );
    advance(2_000);
    assert.equal(await ask('c1'), 'B', 'A is still skipped');
    assert.equal(models[0]!.calls, 1, 'A was not asked while skipped');
    advance(600);
    assert.equal(await ask('c1'), 'A', 'back home once the retry-after passed');
    assert.equal(models[0]!.calls + models[1]!.calls, 4, 'one call per answer, plus the one 429');
  });

  it('fails over on 5xx, connection failure and timeout, not on 4xx or a content filter', () => {
    assert.ok(failoverReason(serverError(500)));
    assert.ok(failoverReason(new UpstreamError('upstream_unavailable', 'down', { retryAfterSeconds: 5 })));
    assert.ok(failoverReason(new UpstreamError('upstream_timeout', 'slow')));
    assert.equal(failoverReason(serverError(404)), undefined);
    assert.equal(failoverReason(serverError(401)), undefined);
    assert.equal(failoverReason(new ContentFilteredError({})), undefined);
    assert.equal(
      failoverReason(new RateLimitedError('caller', 1)),
      undefined,
      "the caller's own limit is not the model's",
    );
    assert.equal(failoverReason(new Error('a bug')), undefined);
  });

  it('skips a deployment that answered 5xx for the cool-down', async () => {
    const { models, ask, advance } = setup();
    models[0]!.failures.push(serverError(500));
    assert.equal(await ask('c1'), 'B');
    advance(29_000);
    assert.equal(await ask('c2'), 'B', 'a new conversation too');
    advance(1_000);
    assert.equal(await ask('c1'), 'A', 'c1 began on A: it returns');
    assert.equal(await ask('c2'), 'B', 'c2 began on B, where its prompt cache is: it stays while B is healthy');
  });

  it('abandons a hanging deployment after the attempt timeout, aborting it before the next is asked', async () => {
    const { models, ask } = setup(2, { attemptTimeoutMs: 50 });
    models[0]!.failures.push('hang');
    assert.equal(await ask('c1'), 'B');
  });

  it('stops at an error the next deployment would answer the same way', async () => {
    const { models, ask } = setup();
    models[0]!.failures.push(serverError(400));
    await assert.rejects(ask('c1'), (error: unknown) => error instanceof UpstreamError && error.upstreamStatus === 400);
    assert.equal(models[1]!.calls, 0);
  });

  it('answers upstream_rate_limited without calling anything when every deployment is skipped', async () => {
    const { models, ask } = setup();
    models[0]!.failures.push(rateLimited(10));
    models[1]!.failures.push(rateLimited(4));
    await assert.rejects(ask('c1'), (error: unknown) => error instanceof RateLimitedError);
    await assert.rejects(
      ask('c1'),
      (error: unknown) =>
        error instanceof RateLimitedError && error.code === 'upstream_rate_limited' && error.retryAfterMs === 4_000,
    );
    assert.equal(models[0]!.calls + models[1]!.calls, 2);
  });

  it('one deadline bounds every attempt together', async () => {
    const { models, ask } = setup(2, { attemptTimeoutMs: 10_000, turnTimeoutMs: 60 });
    models[0]!.failures.push('hang');
    await assert.rejects(
      ask('c1'),
      (error: unknown) => error instanceof UpstreamError && error.code === 'upstream_timeout',
    );
    assert.equal(models[1]!.calls, 0, 'the deadline passed during the first attempt');
  });

  it('a conversation started while its first choice was skipped stays where its cache is', async () => {
    const { models, ask, advance } = setup(3);
    models[0]!.failures.push(rateLimited(1));
    assert.equal(await ask('c1'), 'B');
    models[1]!.failures.push(serverError(503));
    assert.equal(await ask('c2'), 'C', 'A skipped, B fails: C serves c2');
    advance(1_000);
    assert.equal(await ask('c2'), 'C', 'A is back, but c2 (home B, still skipped) sticks to C, where its cache is');
    assert.equal(await ask('c3'), 'A', 'a new conversation starts on A again');
    advance(30_000);
    assert.equal(await ask('c2'), 'B', 'c2 returns home once B is healthy');
  });

  it('streams fail over before their first chunk only', async () => {
    const { pool, models } = setup();
    const request = () => ({ messages: [], maxResponseTokens: 1 });
    models[0]!.failures.push(serverError(502));
    const served = await pool.stream('c1', request);
    assert.equal(served.deployment.name, 'B');
    const chunks = [];
    for await (const chunk of served.value) chunks.push(chunk);
    assert.deepEqual(chunks[0], { type: 'delta', content: 'B' });

    models[1]!.breakAfterFirstDelta = true;
    const broken = await pool.stream('c1', request);
    assert.equal(broken.deployment.name, 'B');
    await assert.rejects(async () => {
      for await (const _chunk of broken.value) {
        // drain
      }
    }, UpstreamError);
    assert.equal(models[0]!.calls, 1, 'nothing else was asked after the first chunk');
  });

  it('calls a single deployment as it is: no skipping after a 429', async () => {
    const { models, ask } = setup(1);
    models[0]!.failures.push(rateLimited(60));
    await assert.rejects(ask('c1'), RateLimitedError);
    assert.equal(await ask('c1'), 'A');
  });
});

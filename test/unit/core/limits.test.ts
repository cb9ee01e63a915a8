import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RateLimitedError } from '../../../src/core/errors';
import {
  addTokens,
  admitRequest,
  currentCounters,
  minuteWindow,
  secondsUntilNextMinute,
  secondsUntilNextUtcDay,
  utcDay,
  type UsageCounters,
} from '../../../src/core/limits';

const at = (iso: string) => new Date(iso);

function refusedCode(result: ReturnType<typeof admitRequest>): { code: string; retryAfter: string | undefined } {
  assert.equal(result.admitted, false);
  if (result.admitted) throw new Error('unreachable');
  assert.ok(result.error instanceof RateLimitedError);
  return { code: result.error.code, retryAfter: result.error.headers['Retry-After'] };
}

describe('limit arithmetic', () => {
  it('names the UTC day and minute window', () => {
    assert.equal(utcDay(at('2026-03-01T23:59:59.999Z')), '2026-03-01');
    assert.equal(utcDay(at('2026-03-02T00:00:00Z')), '2026-03-02');
    assert.equal(minuteWindow(at('2026-03-01T12:00:59.999Z')), minuteWindow(at('2026-03-01T12:00:00Z')));
    assert.equal(minuteWindow(at('2026-03-01T12:01:00Z')), minuteWindow(at('2026-03-01T12:00:00Z')) + 1);
  });

  it('computes Retry-After to the next window and to the next UTC midnight, never 0', () => {
    assert.equal(secondsUntilNextMinute(at('2026-03-01T12:00:00Z')), 60);
    assert.equal(secondsUntilNextMinute(at('2026-03-01T12:00:45.200Z')), 15);
    assert.equal(secondsUntilNextMinute(at('2026-03-01T12:00:59.999Z')), 1);
    assert.equal(secondsUntilNextUtcDay(at('2026-03-01T23:00:00Z')), 3600);
    assert.equal(secondsUntilNextUtcDay(at('2026-03-01T00:00:00Z')), 86_400);
    assert.equal(secondsUntilNextUtcDay(at('2026-03-01T23:59:59.500Z')), 1);
  });

  it('starts the window over each minute and everything over each UTC day', () => {
    const stored: UsageCounters = {
      day: '2026-03-01',
      windowMinute: minuteWindow(at('2026-03-01T12:00:00Z')),
      windowRequests: 5,
      dayTokens: 70,
    };
    assert.deepEqual(currentCounters(stored, at('2026-03-01T12:00:30Z')), stored);
    assert.deepEqual(currentCounters(stored, at('2026-03-01T12:01:00Z')), {
      ...stored,
      windowMinute: stored.windowMinute + 1,
      windowRequests: 0,
    });
    assert.deepEqual(currentCounters(stored, at('2026-03-02T00:00:00Z')), {
      day: '2026-03-02',
      windowMinute: minuteWindow(at('2026-03-02T00:00:00Z')),
      windowRequests: 0,
      dayTokens: 0,
    });
  });
});

describe('admitRequest', () => {
  const limits = { requestsPerMinute: 3, tokensPerDay: 100 };

  it('admits up to the per-minute limit, then refuses with rate_limited until the next minute', () => {
    let counters: UsageCounters | undefined;
    const now = at('2026-03-01T12:00:20Z');
    for (let request = 1; request <= 3; request++) {
      const result = admitRequest(counters, now, limits);
      assert.equal(result.admitted, true);
      if (result.admitted) counters = result.counters;
    }
    assert.equal(counters?.windowRequests, 3);
    assert.deepEqual(refusedCode(admitRequest(counters, now, limits)), { code: 'rate_limited', retryAfter: '40' });
    assert.equal(admitRequest(counters, at('2026-03-01T12:01:00Z'), limits).admitted, true);
  });

  it('refuses with quota_exceeded once the day has used its tokens, until midnight UTC', () => {
    const now = at('2026-03-01T22:00:00Z');
    const spent = addTokens(undefined, 100, now);
    assert.deepEqual(refusedCode(admitRequest(spent, now, limits)), { code: 'quota_exceeded', retryAfter: '7200' });
    assert.equal(admitRequest(addTokens(undefined, 99, now), now, limits).admitted, true);
    assert.equal(admitRequest(spent, at('2026-03-02T00:00:00Z'), limits).admitted, true);
  });

  it('reports the quota when both are exhausted (its wait is the one that matters)', () => {
    const now = at('2026-03-01T12:00:00Z');
    const both: UsageCounters = { ...addTokens(undefined, 500, now), windowRequests: 3 };
    assert.equal(refusedCode(admitRequest(both, now, limits)).code, 'quota_exceeded');
  });

  it('treats 0 as off: no rate limit means nothing to write per request', () => {
    const now = at('2026-03-01T12:00:00Z');
    const busy: UsageCounters = { ...currentCounters(undefined, now), windowRequests: 10_000 };
    const result = admitRequest(busy, now, { requestsPerMinute: 0, tokensPerDay: 100 });
    assert.deepEqual(result.admitted && result.changed, false);
    assert.equal(
      admitRequest(addTokens(busy, 1e9, now), now, { requestsPerMinute: 5, tokensPerDay: 0 }).admitted,
      false,
    );
    assert.equal(
      admitRequest({ ...busy, windowRequests: 0, dayTokens: 1e9 }, now, { requestsPerMinute: 5, tokensPerDay: 0 })
        .admitted,
      true,
    );
  });

  it('adds whole tokens and ignores nonsense amounts', () => {
    const now = at('2026-03-01T12:00:00Z');
    assert.equal(addTokens(addTokens(undefined, 10, now), 2.5, now).dayTokens, 13);
    assert.equal(addTokens(undefined, -5, now).dayTokens, 0);
    assert.equal(addTokens(undefined, Number.NaN, now).dayTokens, 0);
  });
});

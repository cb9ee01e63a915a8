import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RateLimitedError, StorageUnavailableError } from '../../../src/core/errors';
import type { Caller } from '../../../src/core/ports';
import { settleBackgroundWork } from '../../../src/adapters/backgroundWork';
import { TableUsageLimiter, type UsageRow, type UsageTable } from '../../../src/adapters/tableUsageLimiter';

/** An in-memory table with the service's ETag rules: insert fails on an existing row, replace on a stale ETag. */
class MemoryUsageTable implements UsageTable {
  readonly rows = new Map<string, { row: UsageRow; etag: string }>();
  writes = 0;
  conflicts = 0;
  private version = 0;
  /** Runs after a read and before the matching write: lets a test slip in a competing writer. */
  betweenReadAndWrite?: () => Promise<void>;

  async read(partitionKey: string, rowKey: string) {
    const found = this.rows.get(`${partitionKey}/${rowKey}`);
    const copy = found ? structuredClone(found) : undefined;
    await this.betweenReadAndWrite?.();
    return copy;
  }
  async insert(row: UsageRow) {
    const key = `${row.partitionKey}/${row.rowKey}`;
    if (this.rows.has(key)) {
      this.conflicts++;
      return undefined;
    }
    const etag = `e${++this.version}`;
    this.rows.set(key, { row: structuredClone(row), etag });
    this.writes++;
    return etag;
  }
  async replace(row: UsageRow, etag: string) {
    const key = `${row.partitionKey}/${row.rowKey}`;
    if (this.rows.get(key)?.etag !== etag) {
      this.conflicts++;
      return undefined;
    }
    const next = `e${++this.version}`;
    this.rows.set(key, { row: structuredClone(row), etag: next });
    this.writes++;
    return next;
  }
  only(): UsageRow {
    assert.equal(this.rows.size, 1);
    return [...this.rows.values()][0]!.row;
  }
}

const ann: Caller = { id: 'ann', kind: 'user' };
const now = new Date('2026-03-01T12:00:10Z');

async function refusal(promise: Promise<unknown>): Promise<RateLimitedError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof RateLimitedError, String(error));
    return error;
  }
  assert.fail('expected a 429');
}

describe('TableUsageLimiter', () => {
  it('keeps one row per caller per day holding the minute count and the day tokens', async () => {
    const table = new MemoryUsageTable();
    const limiter = new TableUsageLimiter(table, { limits: { requestsPerMinute: 5, tokensPerDay: 1000 } });
    await limiter.admit(ann, now);
    await limiter.record(ann, 40, now);
    await limiter.admit(ann, now);
    await limiter.record(ann, 2, now);
    const row = table.only();
    assert.equal(row.rowKey, '2026-03-01');
    assert.equal(row.windowRequests, 2);
    assert.equal(row.dayTokens, 42);
    assert.equal(row.callerId, 'ann');
    assert.equal(row.callerKind, 'user');
    assert.doesNotMatch(row.partitionKey, /ann/, 'the key is derived (hashed), so any caller id fits');
  });

  it('refuses the request after the limit with Retry-After to the next minute, without writing', async () => {
    const table = new MemoryUsageTable();
    const limiter = new TableUsageLimiter(table, { limits: { requestsPerMinute: 2, tokensPerDay: 0 } });
    await limiter.admit(ann, now);
    await limiter.admit(ann, now);
    const writes = table.writes;
    const error = await refusal(limiter.admit(ann, now));
    assert.equal(error.code, 'rate_limited');
    assert.equal(error.headers['Retry-After'], '50');
    assert.equal(table.writes, writes);
    // Another caller has its own budget.
    await limiter.admit({ id: 'ann', kind: 'integration' }, now);
  });

  it('refuses once the day tokens reach the quota, with Retry-After to midnight UTC', async () => {
    const table = new MemoryUsageTable();
    const limiter = new TableUsageLimiter(table, { limits: { requestsPerMinute: 0, tokensPerDay: 100 } });
    await limiter.admit(ann, now);
    await limiter.record(ann, 100, now);
    const error = await refusal(limiter.admit(ann, now));
    assert.equal(error.code, 'quota_exceeded');
    assert.equal(error.headers['Retry-After'], String(12 * 3600 - 10));
  });

  it('retries on a lost ETag race and counts both requests', async () => {
    const table = new MemoryUsageTable();
    const first = new TableUsageLimiter(table, { limits: { requestsPerMinute: 10, tokensPerDay: 0 }, backoffMs: 1 });
    const second = new TableUsageLimiter(table, { limits: { requestsPerMinute: 10, tokensPerDay: 0 }, backoffMs: 1 });
    // The row exists, written by a third instance: `first` knows no ETag yet and must read.
    await new TableUsageLimiter(table, { limits: { requestsPerMinute: 10, tokensPerDay: 0 } }).admit(ann, now);
    let raced = false;
    table.betweenReadAndWrite = async () => {
      if (raced) return;
      raced = true;
      await second.admit(ann, now); // commits between the first limiter's read and write
    };
    await first.admit(ann, now);
    assert.equal(table.conflicts, 1);
    assert.equal(table.only().windowRequests, 3);
  });

  it('gives up after the bounded attempts with a 429 when every write loses', async () => {
    const table = new MemoryUsageTable();
    table.replace = async () => undefined;
    table.insert = async () => undefined;
    const limiter = new TableUsageLimiter(table, {
      limits: { requestsPerMinute: 10, tokensPerDay: 0 },
      maxAttempts: 3,
      backoffMs: 1,
    });
    const error = await refusal(limiter.admit(ann, now));
    assert.equal(error.code, 'rate_limited');
    await assert.rejects(
      new TableUsageLimiter(table, {
        limits: { requestsPerMinute: 0, tokensPerDay: 10 },
        maxAttempts: 2,
        backoffMs: 1,
      }).record(ann, 5, now),
      /kept changing/,
    );
  });

  it('writes on top of the row it wrote last without reading it again', async () => {
    const table = new MemoryUsageTable();
    let reads = 0;
    const read = table.read.bind(table);
    table.read = async (partitionKey, rowKey) => {
      reads++;
      return read(partitionKey, rowKey);
    };
    const limiter = new TableUsageLimiter(table, { limits: { requestsPerMinute: 10, tokensPerDay: 1000 } });
    await limiter.admit(ann, now);
    assert.equal(reads, 1, 'the first update reads');
    await limiter.record(ann, 30, now);
    await limiter.admit(ann, now);
    await limiter.record(ann, 5, now);
    assert.equal(reads, 1, 'later updates write on the ETag they know');
    assert.equal(table.only().windowRequests, 2);
    assert.equal(table.only().dayTokens, 35);
  });

  it('falls back to reading when another instance wrote since, and counts both', async () => {
    const table = new MemoryUsageTable();
    const first = new TableUsageLimiter(table, { limits: { requestsPerMinute: 3, tokensPerDay: 0 }, backoffMs: 1 });
    const second = new TableUsageLimiter(table, { limits: { requestsPerMinute: 3, tokensPerDay: 0 }, backoffMs: 1 });
    await first.admit(ann, now);
    await second.admit(ann, now);
    await first.admit(ann, now); // its known ETag is stale: the write fails, it reads and writes again
    assert.equal(table.only().windowRequests, 3);
    await refusal(second.admit(ann, now));
    await refusal(first.admit(ann, now));
  });

  it('confirms an admission that needs no write on the stored row, not on what it remembers', async () => {
    const table = new MemoryUsageTable();
    const first = new TableUsageLimiter(table, { limits: { requestsPerMinute: 0, tokensPerDay: 100 } });
    const second = new TableUsageLimiter(table, { limits: { requestsPerMinute: 0, tokensPerDay: 100 } });
    await first.record(ann, 10, now);
    await second.record(ann, 90, now); // another instance spends the rest of the quota
    const error = await refusal(first.admit(ann, now));
    assert.equal(error.code, 'quota_exceeded');
  });

  it('touches nothing when both limits are off, or when no tokens were spent', async () => {
    const table = new MemoryUsageTable();
    table.read = async () => assert.fail('no read expected');
    await new TableUsageLimiter(table, { limits: { requestsPerMinute: 0, tokensPerDay: 0 } }).admit(ann, now);
    await new TableUsageLimiter(table, { limits: { requestsPerMinute: 0, tokensPerDay: 0 } }).record(ann, 10, now);
    await new TableUsageLimiter(table, { limits: { requestsPerMinute: 5, tokensPerDay: 10 } }).record(ann, 0, now);
  });

  it('reports storage that does not answer as storage_unavailable (503)', async () => {
    const table = new MemoryUsageTable();
    table.read = async () => {
      throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { name: 'AbortError' });
    };
    const limiter = new TableUsageLimiter(table, { limits: { requestsPerMinute: 5, tokensPerDay: 0 } });
    await assert.rejects(limiter.admit(ann, now), StorageUnavailableError);
  });

  it("writes a settlement with the caller's next admission, in the same write", async () => {
    const table = new MemoryUsageTable();
    const limiter = new TableUsageLimiter(table, {
      limits: { requestsPerMinute: 10, tokensPerDay: 1000 },
      settleDelayMs: 60_000,
    });
    const reservation = await limiter.admit(ann, now, { reserveTokens: 300 });
    assert.equal(table.only().dayTokens, 300);
    await limiter.settle(ann, reservation, 120, now);
    assert.equal(table.writes, 1, 'the settlement waits for the next write');
    assert.equal(table.only().dayTokens, 300, 'meanwhile the reservation stays counted: never too low');
    await limiter.admit(ann, now, { reserveTokens: 50 });
    assert.equal(table.writes, 2, 'one write carried the settlement and the admission');
    assert.deepEqual([table.only().windowRequests, table.only().dayTokens], [2, 120 + 50]);
    await settleBackgroundWork(); // nothing left waiting: resolves at once
    assert.equal(table.writes, 2);
  });

  it('writes a settlement on its own when no request follows, and the appTerminate wait covers it', async () => {
    const table = new MemoryUsageTable();
    const limiter = new TableUsageLimiter(table, {
      limits: { requestsPerMinute: 10, tokensPerDay: 1000 },
      settleDelayMs: 5,
    });
    const first = await limiter.admit(ann, now, { reserveTokens: 300 });
    const second = await limiter.admit(ann, now, { reserveTokens: 200 });
    await limiter.settle(ann, first, 100, now);
    await limiter.settle(ann, second, 0, now);
    await settleBackgroundWork();
    assert.equal(table.only().dayTokens, 100);
    assert.equal(table.writes, 3, 'both settlements in one write');
  });

  it('keeps a settlement waiting when the admission that would carry it is refused', async () => {
    const table = new MemoryUsageTable();
    const limiter = new TableUsageLimiter(table, {
      limits: { requestsPerMinute: 1, tokensPerDay: 1000 },
      settleDelayMs: 60_000,
    });
    const reservation = await limiter.admit(ann, now, { reserveTokens: 400 });
    await limiter.settle(ann, reservation, 10, now);
    await refusal(limiter.admit(ann, now)); // over the minute's requests: nothing is written
    assert.equal(table.only().dayTokens, 400);
    await limiter.flushSettlements();
    assert.equal(table.only().dayTokens, 10);
    assert.equal(table.only().windowRequests, 1);
  });

  it('settles on the stored row when another instance wrote meanwhile, counting both', async () => {
    const table = new MemoryUsageTable();
    const options = { limits: { requestsPerMinute: 10, tokensPerDay: 1000 }, settleDelayMs: 60_000, backoffMs: 1 };
    const here = new TableUsageLimiter(table, options);
    const there = new TableUsageLimiter(table, options);
    const reservation = await here.admit(ann, now, { reserveTokens: 300 });
    await here.settle(ann, reservation, 100, now);
    await there.admit(ann, now, { reserveTokens: 50 }); // here's remembered ETag is now stale
    await here.admit(ann, now, { reserveTokens: 20 });
    assert.deepEqual([table.only().windowRequests, table.only().dayTokens], [3, 100 + 50 + 20]);
  });

  it('logs a settlement storage would not take, and the reservation stays counted', async () => {
    const table = new MemoryUsageTable();
    const warnings: string[] = [];
    const limiter = new TableUsageLimiter(table, {
      limits: { requestsPerMinute: 0, tokensPerDay: 1000 },
      settleDelayMs: 60_000,
      log: { warn: (line) => warnings.push(line) },
    });
    const reservation = await limiter.admit(ann, now, { reserveTokens: 300 });
    await limiter.settle(ann, reservation, 100, now);
    table.replace = async () => {
      throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { name: 'AbortError' });
    };
    await limiter.flushSettlements();
    assert.equal(table.only().dayTokens, 300);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0] ?? '', /Could not settle token usage of 1 call/);
  });
});

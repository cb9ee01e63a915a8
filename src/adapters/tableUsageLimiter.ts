/**
 * UsageLimiter on Azure Table Storage, so the limits hold across every instance of the app. Table
 * `${prefix}limits` keeps ONE entity per caller per UTC day (PartitionKey: the caller key, RowKey: the day) with
 * both the current minute window's request count and the day's token total. Every change is a read followed by
 * a write guarded by the entity's ETag; a writer that loses the race (412, or 409 on the first insert) reads
 * again and retries, a bounded number of times with jittered backoff. The arithmetic lives in core/limits.ts.
 */
import { RestError, TableClient, type TableEntityResult } from '@azure/data-tables';
import type { TokenCredential } from '@azure/identity';
import { RateLimitedError, StorageUnavailableError } from '../core/errors';
import {
  addTokens,
  admitRequest,
  settleTokens,
  utcDay,
  type AdmissionRequest,
  type UsageCounters,
  type UsageLimits,
} from '../core/limits';
import type { Config } from '../config';
import { unlimited, type Caller, type TokenReservation, type UsageLimiter } from '../core/ports';
import { runInBackground } from './backgroundWork';
import { isUnavailable } from './tableConversationStore';
import { createTableClient } from './tableClient';
import { callerKey } from './tableKeys';

export const LIMITS_TABLE = 'limits';

/** One caller's counters for one day as stored, with who they belong to (for operators reading the table). */
export interface UsageRow extends UsageCounters {
  partitionKey: string;
  rowKey: string;
  callerId: string;
  callerKind: Caller['kind'];
}

/** The three operations the limiter needs; a write answers the new ETag, or undefined when another writer got there first. */
export interface UsageTable {
  read(partitionKey: string, rowKey: string): Promise<{ row: UsageRow; etag: string } | undefined>;
  insert(row: UsageRow): Promise<string | undefined>;
  replace(row: UsageRow, etag: string): Promise<string | undefined>;
}

/** Rows this instance wrote last, with their ETags; bounded so a flood of callers cannot grow it without end. */
const KNOWN_ROWS_MAX = 10_000;

export interface TableUsageLimiterOptions {
  limits: UsageLimits;
  /** Attempts of one update that keeps losing the ETag race; default 6. */
  maxAttempts?: number;
  /** Upper bound of the first backoff in ms, doubled per attempt; default 20. */
  backoffMs?: number;
  /**
   * How long a settlement may wait to be written with the caller's next admission on this instance; default 1,000
   * ms (see settle).
   */
  settleDelayMs?: number;
  log?: { warn(message: string): void };
}

/** Settlements of one caller's day not written yet: each replaces a reservation with what the call spent. */
interface Unsettled {
  caller: Caller;
  day: string;
  adjustments: { reserved: number; spent: number }[];
  timer: NodeJS.Timeout;
  /** Resolves once they are written, merged into another write or given up on. */
  written: () => void;
}

export class TableUsageLimiter implements UsageLimiter {
  private readonly maxAttempts: number;
  private readonly backoffMs: number;
  /**
   * The row and ETag this instance last wrote, per caller and day. The next update writes on top of it without
   * reading first (one round trip instead of two); if another instance wrote meanwhile the ETag no longer matches,
   * the write fails and the update falls back to reading. A settled reservation can lower the day's total, so a
   * refusal computed from a remembered row is checked on a fresh read; an admission is confirmed by its write.
   */
  private readonly known = new Map<string, { row: UsageCounters; etag: string }>();
  private readonly unsettled = new Map<string, Unsettled>();
  private readonly settleDelayMs: number;
  private readonly log: { warn(message: string): void };

  constructor(
    private readonly table: UsageTable,
    private readonly options: TableUsageLimiterOptions,
  ) {
    this.maxAttempts = options.maxAttempts ?? 6;
    this.backoffMs = options.backoffMs ?? 20;
    this.settleDelayMs = options.settleDelayMs ?? 1_000;
    this.log = options.log ?? console;
  }

  async admit(caller: Caller, now: Date, request: AdmissionRequest = {}): Promise<TokenReservation> {
    const { limits } = this.options;
    const day = utcDay(now);
    const reserved = limits.tokensPerDay > 0 ? Math.max(0, Math.ceil(request.reserveTokens ?? 0)) : 0;
    if (limits.requestsPerMinute === 0 && limits.tokensPerDay === 0) return { day, tokens: 0 };
    const outcome = await this.update(caller, day, (stored) => {
      const admission = admitRequest(stored, now, limits, request);
      if (!admission.admitted) throw admission.error;
      return admission.changed ? admission.counters : undefined;
    });
    if (outcome === 'contended') {
      // Only a flood of simultaneous requests from one caller keeps losing the race: that is what the limit is for.
      throw new RateLimitedError(
        'Too many simultaneous messages from this caller. Retry in a moment.',
        1,
        'rate_limited',
      );
    }
    return { day, tokens: reserved };
  }

  /**
   * Settles after the answer, not before it: the reservation already counts the call's worst case, so until the
   * settlement is written the day's total can only be too high (a caller at the edge of the quota may be refused a
   * second early), never too low. The settlement waits up to settleDelayMs for the caller's next request on this
   * instance, whose admission writes it in the same conditional write (a conversation's turns come one after the
   * other, so most settlements cost no round trip of their own); otherwise it is written on its own. The host's
   * appTerminate hook waits for those still waiting (./backgroundWork.ts); a failed write is logged, and the
   * reservation stays counted.
   */
  async settle(caller: Caller, reservation: TokenReservation, spentTokens: number, _now: Date): Promise<void> {
    if (this.options.limits.tokensPerDay === 0 || reservation.tokens === spentTokens) return;
    const key = rowKeyOf(caller, reservation.day);
    const waiting = this.unsettled.get(key);
    if (waiting) {
      waiting.adjustments.push({ reserved: reservation.tokens, spent: spentTokens });
      return;
    }
    this.deferSettlements(key, caller, reservation.day, [{ reserved: reservation.tokens, spent: spentTokens }]);
  }

  private deferSettlements(key: string, caller: Caller, day: string, adjustments: Unsettled['adjustments']): void {
    let written = (): void => {};
    const done = new Promise<void>((resolve) => (written = resolve));
    const entry: Unsettled = {
      caller,
      day,
      adjustments,
      timer: setTimeout(() => void this.writeSettlements(key), this.settleDelayMs),
      written,
    };
    this.unsettled.set(key, entry);
    runInBackground(done);
  }

  /** Takes the settlements waiting for a caller's day, to write them with another update (or on their own). */
  private takeSettlements(key: string): Unsettled | undefined {
    const entry = this.unsettled.get(key);
    if (!entry) return undefined;
    this.unsettled.delete(key);
    clearTimeout(entry.timer);
    return entry;
  }

  private async writeSettlements(key: string): Promise<void> {
    const entry = this.takeSettlements(key);
    if (!entry) return;
    try {
      const outcome = await this.update(entry.caller, entry.day, (stored) =>
        settleAll(stored, entry.day, entry.adjustments),
      );
      if (outcome === 'contended') throw new Error('the usage record kept changing');
    } catch (error) {
      // The turns already answered; the reservations stay counted (never less than was spent).
      this.log.warn(
        `Could not settle token usage of ${entry.adjustments.length} call(s): ${error instanceof Error ? error.message : String(error)}`,
      );
    } finally {
      entry.written();
    }
  }

  /** Writes every settlement still waiting now (tests; the appTerminate hook waits for their timers instead). */
  async flushSettlements(): Promise<void> {
    await Promise.all([...this.unsettled.keys()].map((key) => this.writeSettlements(key)));
  }

  async record(caller: Caller, tokens: number, now: Date): Promise<void> {
    if (this.options.limits.tokensPerDay === 0 || !(tokens > 0)) return;
    const outcome = await this.update(caller, utcDay(now), (stored) => addTokens(stored, tokens, now));
    // The turn already answered; the caller of record() logs this and the tokens go uncounted.
    if (outcome === 'contended') throw new Error(`Could not record ${tokens} tokens: the usage record kept changing.`);
  }

  /**
   * Read, compute, write with the ETag; `compute` returns undefined when nothing needs writing, or throws to refuse.
   * Storage that does not answer becomes StorageUnavailableError (503), like the conversation store's.
   */
  private async update(
    caller: Caller,
    day: string,
    compute: (stored: UsageCounters | undefined) => UsageCounters | undefined,
  ): Promise<'done' | 'contended'> {
    const partitionKey = callerKey(caller);
    const rowKey = day;
    const knownKey = rowKeyOf(caller, day);
    // Settlements waiting for this row go in the same write (see settle); if this update writes nothing, they wait on.
    const merged = this.takeSettlements(knownKey);
    if (merged) {
      const own = compute;
      compute = (stored) => {
        const settled = settleAll(stored, day, merged.adjustments) ?? stored;
        return own(settled) ?? (settled === stored ? undefined : settled);
      };
    }
    const outcome = await this.write(caller, partitionKey, rowKey, knownKey, compute).catch((error: unknown) => {
      if (merged) this.requeue(knownKey, merged);
      throw error;
    });
    if (merged) {
      if (outcome === 'done') merged.written();
      else this.requeue(knownKey, merged);
    }
    return outcome;
  }

  /** Puts settlements back after the write that carried them did not happen, ahead of any that came meanwhile. */
  private requeue(key: string, entry: Unsettled): void {
    const later = this.takeSettlements(key);
    this.deferSettlements(key, entry.caller, entry.day, [...entry.adjustments, ...(later?.adjustments ?? [])]);
    later?.written();
    entry.written();
  }

  private async write(
    caller: Caller,
    partitionKey: string,
    rowKey: string,
    knownKey: string,
    compute: (stored: UsageCounters | undefined) => UsageCounters | undefined,
  ): Promise<'done' | 'contended'> {
    const toRow = (counters: UsageCounters): UsageRow => ({
      ...counters,
      partitionKey,
      rowKey,
      callerId: caller.id,
      callerKind: caller.kind,
    });
    const remember = (counters: UsageCounters, etag: string) => {
      if (this.known.size >= KNOWN_ROWS_MAX) this.known.clear();
      this.known.set(knownKey, { row: counters, etag });
    };
    try {
      const known = this.known.get(knownKey);
      if (known) {
        let next: UsageCounters | undefined;
        try {
          next = compute(known.row);
        } catch (error) {
          // A refusal stands only on the stored row: a settlement elsewhere may have lowered the total since.
          if (!(error instanceof RateLimitedError)) throw error;
          next = undefined;
        }
        const etag = next ? await this.table.replace(toRow(next), known.etag) : undefined;
        if (next && etag) {
          remember(next, etag);
          return 'done';
        }
        // Nothing to write (confirm on the stored row) or someone else wrote: read and go the long way.
        this.known.delete(knownKey);
      }
      for (let attempt = 1; attempt <= this.maxAttempts; attempt++) {
        const current = await this.table.read(partitionKey, rowKey);
        const next = compute(current?.row);
        if (!next) return 'done';
        const etag = current
          ? await this.table.replace(toRow(next), current.etag)
          : await this.table.insert(toRow(next));
        if (etag) {
          remember(next, etag);
          return 'done';
        }
        if (attempt < this.maxAttempts) await sleep(jitter(this.backoffMs * 2 ** (attempt - 1)));
      }
      return 'contended';
    } catch (error) {
      if (error instanceof RateLimitedError || !isUnavailable(error)) throw error;
      throw new StorageUnavailableError(
        'The usage limits could not be checked: storage did not answer. Retry shortly.',
        error,
      );
    }
  }
}

function rowKeyOf(caller: Caller, day: string): string {
  return `${callerKey(caller)}/${day}`;
}

/** The day's counters with every settlement applied in turn; undefined when they change nothing. */
function settleAll(
  stored: UsageCounters | undefined,
  day: string,
  adjustments: readonly { reserved: number; spent: number }[],
): UsageCounters | undefined {
  let current = stored;
  let changed = false;
  for (const { reserved, spent } of adjustments) {
    const next = settleTokens(current, day, reserved, spent);
    if (next) {
      current = next;
      changed = true;
    }
  }
  return changed ? current : undefined;
}

/** Full jitter: spreads the retries of writers that collided so they do not collide again. */
function jitter(maxMs: number): number {
  return Math.random() * maxMs;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---- The Table Storage binding ----------------------------------------------------------------------------

type UsageProperties = {
  day: string;
  windowMinute: number;
  windowRequests: number;
  dayTokens: number;
  callerId: string;
  callerKind: string;
};

/** UsageTable over a TableClient: the table is created on first use (an existing table is fine). */
export function tableClientUsageTable(client: TableClient): UsageTable {
  let ready: Promise<void> | undefined;
  const ensureTable = (): Promise<void> => {
    ready ??= client.createTable().catch((error: unknown) => {
      ready = undefined; // try again on the next call
      throw error;
    });
    return ready;
  };
  return {
    async read(partitionKey, rowKey) {
      await ensureTable();
      let entity: TableEntityResult<Record<string, unknown>>;
      try {
        entity = await client.getEntity<Record<string, unknown>>(partitionKey, rowKey);
      } catch (error) {
        if (hasStatus(error, 404)) return undefined;
        throw error;
      }
      if (!entity.etag) throw new Error('Table Storage returned a usage record without an ETag.');
      return { row: toRow(partitionKey, rowKey, entity), etag: entity.etag };
    },
    async insert(row) {
      await ensureTable();
      try {
        return requireEtag((await client.createEntity(toEntity(row))).etag);
      } catch (error) {
        if (hasStatus(error, 409)) return undefined;
        throw error;
      }
    },
    async replace(row, etag) {
      await ensureTable();
      try {
        return requireEtag((await client.updateEntity(toEntity(row), 'Replace', { etag })).etag);
      } catch (error) {
        if (hasStatus(error, 412)) return undefined;
        throw error;
      }
    },
  };
}

function toEntity(row: UsageRow) {
  const properties: UsageProperties & { partitionKey: string; rowKey: string } = {
    partitionKey: row.partitionKey,
    rowKey: row.rowKey,
    day: row.day,
    windowMinute: row.windowMinute,
    windowRequests: row.windowRequests,
    dayTokens: row.dayTokens,
    callerId: row.callerId,
    callerKind: row.callerKind,
  };
  // Untyped JSON integers are Edm.Int32 on the service; these outgrow it (minutes since 1970, a day's tokens).
  return {
    ...properties,
    windowMinute: { value: String(row.windowMinute), type: 'Int64' as const },
    dayTokens: { value: String(row.dayTokens), type: 'Int64' as const },
  };
}

function toRow(partitionKey: string, rowKey: string, entity: Record<string, unknown>): UsageRow {
  const kind = entity['callerKind'];
  return {
    partitionKey,
    rowKey,
    day: typeof entity['day'] === 'string' ? entity['day'] : rowKey,
    windowMinute: toNumber(entity['windowMinute']),
    windowRequests: toNumber(entity['windowRequests']),
    dayTokens: toNumber(entity['dayTokens']),
    callerId: typeof entity['callerId'] === 'string' ? entity['callerId'] : '',
    callerKind: kind === 'user' || kind === 'integration' || kind === 'local' ? kind : 'user',
  };
}

/** Int64 properties come back as bigint; a damaged value counts as 0 rather than blocking the caller for the day. */
function toNumber(value: unknown): number {
  const number = typeof value === 'bigint' ? Number(value) : typeof value === 'number' ? value : Number.NaN;
  return Number.isFinite(number) && number >= 0 ? number : 0;
}

function requireEtag(etag: string | undefined): string {
  if (!etag) throw new Error('Table Storage answered a usage write without an ETag.');
  return etag;
}

function hasStatus(error: unknown, status: number): boolean {
  return error instanceof RestError && error.statusCode === status;
}

// ---- Building one from settings ---------------------------------------------------------------------------

export interface TableUsageLimiterConnection {
  tablePrefix: string;
  connectionString?: string;
  endpoint?: string;
  credential?: TokenCredential;
  /** Each HTTP attempt is abandoned after this long; default 5 s (the limiter sits in front of every turn). */
  tryTimeoutMs?: number;
}

/** Builds the limiter without touching the network: its table is created by the first request that needs it. */
export function createTableUsageLimiter(
  connection: TableUsageLimiterConnection,
  options: TableUsageLimiterOptions,
): TableUsageLimiter {
  const tableName = `${connection.tablePrefix}${LIMITS_TABLE}`;
  const client = createTableClient(tableName, connection, {
    tryTimeoutMs: connection.tryTimeoutMs ?? 5_000,
    retry: { maxRetries: 2, retryDelayInMs: 100, maxRetryDelayInMs: 1_000 },
  });
  return new TableUsageLimiter(tableClientUsageTable(client), options);
}

/** The app's limiter from its settings: none at all when both limits are 0, so no table is touched. */
export function createUsageLimiter(
  config: Readonly<Pick<Config, 'storage' | 'limits'>>,
  getCredential: () => TokenCredential,
): UsageLimiter {
  const { requestsPerMinute, tokensPerDay } = config.limits;
  if (requestsPerMinute === 0 && tokensPerDay === 0) return unlimited;
  const { tablePrefix, connectionString, endpoint } = config.storage;
  return createTableUsageLimiter(
    { tablePrefix, ...(connectionString ? { connectionString } : { endpoint, credential: getCredential() }) },
    { limits: { requestsPerMinute, tokensPerDay } },
  );
}

/**
 * The arithmetic of the per-caller limits, kept free of storage so it can be tested to the second: a fixed
 * one-minute request window (UTC minute boundaries) and a token total per UTC day. The Table Storage adapter
 * reads one counters record per caller per day, asks `admitRequest` what to do, and writes the answer back.
 */
import { RateLimitedError } from './errors';

export interface UsageLimits {
  /** Turns per caller per minute; 0 turns the limit off. */
  requestsPerMinute: number;
  /** Model tokens (prompt + completion) per caller per UTC day; 0 turns the quota off. */
  tokensPerDay: number;
}

/** One caller's counters for one UTC day. */
export interface UsageCounters {
  /** The UTC day these counters belong to, `YYYY-MM-DD`. */
  day: string;
  /** The minute window the request count belongs to, in whole minutes since the epoch. */
  windowMinute: number;
  /** Requests admitted in `windowMinute`. */
  windowRequests: number;
  /** Tokens recorded on `day`. */
  dayTokens: number;
}

export type Admission =
  { admitted: true; counters: UsageCounters; changed: boolean } | { admitted: false; error: RateLimitedError };

const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;

/** `YYYY-MM-DD` of `now` in UTC. */
export function utcDay(now: Date): string {
  return now.toISOString().slice(0, 10);
}

export function minuteWindow(now: Date): number {
  return Math.floor(now.getTime() / MINUTE_MS);
}

/** Whole seconds until the next minute window opens (at least 1, so a client never retries at once). */
export function secondsUntilNextMinute(now: Date): number {
  const next = (minuteWindow(now) + 1) * MINUTE_MS;
  return Math.max(1, Math.ceil((next - now.getTime()) / 1000));
}

/** Whole seconds until the next UTC midnight, when the daily quota starts over (at least 1). */
export function secondsUntilNextUtcDay(now: Date): number {
  const next = (Math.floor(now.getTime() / DAY_MS) + 1) * DAY_MS;
  return Math.max(1, Math.ceil((next - now.getTime()) / 1000));
}

/** The counters as they stand at `now`: a stored record from another day, or another minute, starts over. */
export function currentCounters(stored: UsageCounters | undefined, now: Date): UsageCounters {
  const day = utcDay(now);
  const minute = minuteWindow(now);
  if (!stored || stored.day !== day) return { day, windowMinute: minute, windowRequests: 0, dayTokens: 0 };
  if (stored.windowMinute !== minute) return { ...stored, windowMinute: minute, windowRequests: 0 };
  return { ...stored };
}

/** What one admission asks for: a request to count, tokens to reserve against the day's quota. */
export interface AdmissionRequest {
  /** Count one request against the per-minute limit (false for a turn's later model calls). Default true. */
  countRequest?: boolean;
  /** The call's worst case (prompt + reply reserve), held until the call settles. Default 0. */
  reserveTokens?: number;
}

/**
 * Admits one request or says why not. The daily quota is checked first: when both are exhausted, its later
 * Retry-After is the one worth telling. A refused request is not counted, so refusals cost no write.
 *
 * An admitted request reserves its worst case at once, so requests admitted at the same time see each other's
 * reservations: together they pass the quota by at most one request's worst case (the last one admitted while
 * below it). `settleTokens` later replaces the reservation with what was spent.
 */
export function admitRequest(
  stored: UsageCounters | undefined,
  now: Date,
  limits: UsageLimits,
  request: AdmissionRequest = {},
): Admission {
  const { countRequest = true } = request;
  const reserve = limits.tokensPerDay > 0 ? wholeTokens(request.reserveTokens ?? 0) : 0;
  const counters = currentCounters(stored, now);
  if (limits.tokensPerDay > 0 && counters.dayTokens >= limits.tokensPerDay) {
    const retryAfter = secondsUntilNextUtcDay(now);
    return {
      admitted: false,
      error: new RateLimitedError(
        `You have used ${counters.dayTokens} of your ${limits.tokensPerDay} model tokens for today (UTC). ` +
          `The quota starts over at midnight UTC, in ${retryAfter} s.`,
        retryAfter,
        'quota_exceeded',
      ),
    };
  }
  const reserved = { ...counters, dayTokens: counters.dayTokens + reserve };
  if (limits.requestsPerMinute > 0 && countRequest) {
    if (counters.windowRequests >= limits.requestsPerMinute) {
      const retryAfter = secondsUntilNextMinute(now);
      return {
        admitted: false,
        error: new RateLimitedError(
          `You sent ${counters.windowRequests} messages this minute, the most allowed (${limits.requestsPerMinute} per minute). ` +
            `Retry in ${retryAfter} s.`,
          retryAfter,
          'rate_limited',
        ),
      };
    }
    return { admitted: true, counters: { ...reserved, windowRequests: counters.windowRequests + 1 }, changed: true };
  }
  // Nothing to count per request: a write only when tokens are reserved.
  return { admitted: true, counters: reserved, changed: reserve > 0 };
}

/** The counters after a turn spent `tokens` (negative or fractional input is not a real spend). */
export function addTokens(stored: UsageCounters | undefined, tokens: number, now: Date): UsageCounters {
  const counters = currentCounters(stored, now);
  return { ...counters, dayTokens: counters.dayTokens + wholeTokens(tokens) };
}

/**
 * The counters of the reservation's day after a call that reserved `reserved` tokens spent `spent`: the day the
 * reservation was made pays, even when the call ended after midnight. Never below zero.
 */
export function settleTokens(
  stored: UsageCounters | undefined,
  day: string,
  reserved: number,
  spent: number,
): UsageCounters | undefined {
  if (!stored || stored.day !== day) return undefined; // nothing was reserved on a record that is not there
  const dayTokens = Math.max(0, stored.dayTokens - wholeTokens(reserved) + wholeTokens(spent));
  return dayTokens === stored.dayTokens ? undefined : { ...stored, dayTokens };
}

function wholeTokens(tokens: number): number {
  return Number.isFinite(tokens) && tokens > 0 ? Math.ceil(tokens) : 0;
}

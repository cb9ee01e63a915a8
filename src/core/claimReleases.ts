/**
 * Idempotency claims that a failed turn could not release, because storage stopped answering during the turn. The
 * client was told to retry shortly (503 with Retry-After); left alone, the claim would block its key for the whole
 * lease (409 for minutes although nothing runs). So the release is retried in the background until storage answers,
 * and a retry of the same key on this instance first tries the release itself: once storage is back, the retry
 * runs. A claim whose holder crashed outright is still freed only by its lease running out.
 */
import type { Logger } from './dependencies';

const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 2_000;

interface PendingRelease {
  release: () => Promise<void>;
  /** After this (epoch ms) the lease has run out anyway: nothing left to free. */
  until: number;
  timer?: ReturnType<typeof setTimeout>;
}

export class ClaimReleases {
  private readonly pending = new Map<string, PendingRelease>();

  constructor(
    private readonly log: Logger,
    private readonly now: () => number,
  ) {}

  /** Keeps trying `release` in the background (250 ms, doubling to 2 s) until it succeeds or `until` passes. */
  add(id: string, release: () => Promise<void>, until: number): void {
    this.cancel(id);
    const entry: PendingRelease = { release, until };
    this.pending.set(id, entry);
    this.schedule(id, entry, FIRST_DELAY_MS);
  }

  /** Tries the pending release of `id` now, if there is one: before a retry of the same key claims it. */
  async flush(id: string): Promise<void> {
    const entry = this.pending.get(id);
    if (entry) await this.attempt(id, entry);
  }

  get size(): number {
    return this.pending.size;
  }

  private schedule(id: string, entry: PendingRelease, delayMs: number): void {
    entry.timer = setTimeout(() => {
      void this.attempt(id, entry).then((done) => {
        if (!done && this.pending.get(id) === entry) this.schedule(id, entry, Math.min(MAX_DELAY_MS, delayMs * 2));
      });
    }, delayMs);
    // A pending release never keeps the process alive.
    entry.timer.unref?.();
  }

  /** True when nothing is left to do for `id`. */
  private async attempt(id: string, entry: PendingRelease): Promise<boolean> {
    if (this.pending.get(id) !== entry) return true;
    if (this.now() > entry.until) {
      this.cancel(id);
      return true;
    }
    try {
      await entry.release();
      this.cancel(id);
      this.log.info('Released an idempotency key that a failed turn held, now that storage answers again.');
      return true;
    } catch {
      return false;
    }
  }

  private cancel(id: string): void {
    const entry = this.pending.get(id);
    if (entry?.timer) clearTimeout(entry.timer);
    this.pending.delete(id);
  }
}

/**
 * Extra figure: the per-turn overhead with the default per-caller limits on (60 requests a minute, 1,000,000
 * tokens a day). The limiter adds Table round trips: a conditional write to admit the request beside the
 * conversation load, a reservation of the call's worst case (for a conversation this instance ran before it is made
 * with the admission, else after planning, before the model call), and the settlement beside the commit. The app
 * reads its settings once per process, so both variants run as app processes of their own, one after the other, each
 * measured against the storage floor taken during its own run; their difference is what the limiter costs. Turns are
 * measured on a conversation the process served (the common case: `limiter_added_ms`) and on one it never saw
 * (`limiter_added_first_ms`). The default limit is 60 requests a minute, which the benchmark's own turns would pass,
 * so repetitions wait for the next UTC minute when this one's requests would not fit.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { startChildApp, waitListening } from './childApp';
import type { BenchSetup } from './setup';
import { median, timeMs, type Figure } from './stats';
import { postTurn } from './turnClient';

export interface LimitsOptions {
  history: number;
  warmup: number;
  repetitions: number;
}

/** The defaults of LIMIT_REQUESTS_PER_MINUTE and LIMIT_TOKENS_PER_DAY (src/config.ts). */
const DEFAULT_LIMITS = { LIMIT_REQUESTS_PER_MINUTE: '60', LIMIT_TOKENS_PER_DAY: '1000000' };
const NO_LIMITS = { LIMIT_REQUESTS_PER_MINUTE: '0', LIMIT_TOKENS_PER_DAY: '0' };
/** Requests one repetition sends: a turn to make the conversation served, the served turn, a first turn. */
const REQUESTS_PER_REPETITION = 3;
const REQUESTS_PER_MINUTE = 60;
const MINUTE_MS = 60_000;

/** Keeps each UTC minute's requests under the default limit, waiting for the next minute when they would not fit. */
class MinutePacer {
  private minute = -1;
  private sent = 0;

  async reserve(requests: number): Promise<void> {
    let minute = Math.floor(Date.now() / MINUTE_MS);
    if (minute === this.minute && this.sent + requests > REQUESTS_PER_MINUTE - 2) {
      await delay((minute + 1) * MINUTE_MS - Date.now() + 50);
      minute = Math.floor(Date.now() / MINUTE_MS);
    }
    if (minute !== this.minute) {
      this.minute = minute;
      this.sent = 0;
    }
    this.sent += requests;
  }
}

async function turnsAgainstFloor(bench: BenchSetup, env: Record<string, string>, options: LimitsOptions) {
  const { history } = options;
  const child = await startChildApp({ compiled: bench.compiled, env: { ...bench.appEnv, ...env } });
  const served: number[] = [];
  const first: number[] = [];
  const floors: number[] = [];
  const pacer = new MinutePacer();
  try {
    await waitListening(child);
    for (let index = 0; index < options.warmup + options.repetitions; index++) {
      const forServed = bench.newId('lim');
      const forFirst = bench.newId('lim-first');
      const forFloor = bench.newId('lim-floor');
      await bench.tables.write(forServed, bench.template(history - 2));
      await bench.tables.write(forFirst, bench.template(history));
      await bench.tables.write(forFloor, bench.template(history));
      await pacer.reserve(REQUESTS_PER_REPETITION);
      await postTurn(child.api, forServed, bench.turn.user.content); // now the process served it
      const timeTurn = async (conversationId: string) => {
        const start = performance.now();
        await postTurn(child.api, conversationId, bench.turn.user.content);
        return performance.now() - start;
      };
      const steps = [
        async () => (index >= options.warmup ? served : []).push(await timeTurn(forServed)),
        async () => (index >= options.warmup ? first : []).push(await timeTurn(forFirst)),
        async () =>
          (index >= options.warmup ? floors : []).push(
            await timeMs(() => bench.tables.floorTurn(forFloor, bench.turn, bench.encoding)),
          ),
      ];
      // Each takes every place in the order by turns.
      for (let step = 0; step < steps.length; step++) await steps[(index + step) % steps.length]!();
      for (const id of [forServed, forFirst, forFloor]) await bench.tables.remove(id);
    }
  } finally {
    await child.stop();
    bench.app.model.clear();
  }
  return { servedMs: median(served), firstMs: median(first), floorMs: median(floors) };
}

export async function measureLimits(bench: BenchSetup, options: LimitsOptions): Promise<Figure[]> {
  const off = await turnsAgainstFloor(bench, NO_LIMITS, options);
  const on = await turnsAgainstFloor(bench, DEFAULT_LIMITS, options);
  const size = options.history;
  bench.log(
    `  app process, history ${size}: limits off ${off.servedMs.toFixed(2)} ms served, ${off.firstMs.toFixed(2)} ms ` +
      `first (floor ${off.floorMs.toFixed(2)}); limits on ${on.servedMs.toFixed(2)} ms served, ` +
      `${on.firstMs.toFixed(2)} ms first (floor ${on.floorMs.toFixed(2)})`,
  );
  return [
    {
      name: `overhead_ratio_limits_on_${size}`,
      value: on.servedMs / on.floorMs,
      unit: 'x',
      note: `default limits on, app in its own process, history ${size}, served conversation`,
    },
    {
      name: `overhead_ratio_limits_off_process_${size}`,
      value: off.servedMs / off.floorMs,
      unit: 'x',
      note: 'the same app process setup with limits off',
    },
    {
      name: 'limiter_added_ms',
      value: on.servedMs - off.servedMs,
      unit: 'ms',
      target: '<= 0.5',
      note: 'served turn with limits on - off (signed)',
    },
    {
      name: 'limiter_added_first_ms',
      value: on.firstMs - off.firstMs,
      unit: 'ms',
      note: 'the same on a conversation the process never saw (the reservation waits for the plan)',
    },
  ];
}

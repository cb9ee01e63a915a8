/**
 * Extra figure: the per-turn overhead with the default per-caller limits on (60 requests a minute, 1,000,000
 * tokens a day). The limiter adds Table round trips: a conditional write to admit the request beside the
 * conversation load, a reservation of the call's worst case (for a conversation this instance ran before it is made
 * with the admission, else after planning, before the model call), and the settlement after the answer (carried by
 * the caller's next admission when it comes within a second, src/adapters/tableUsageLimiter.ts). The app
 * reads its settings once per process, so both variants run as app processes of their own, at the same time, their
 * turns taking turns (see turnsSideBySide), beside the storage floor; their difference is what the limiter costs. Turns are
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

interface ProcessTimes {
  served: number[];
  first: number[];
}

/**
 * Both app processes (limits off and on) run at once, and every repetition times the same steps on each, in an order
 * that turns, so both meet the same machine: two runs one after the other differed by more than the figure (the
 * median of a served turn moved by several milliseconds between the two halves of one run on a shared machine).
 */
async function turnsSideBySide(bench: BenchSetup, options: LimitsOptions) {
  const { history } = options;
  const children = {
    off: await startChildApp({ compiled: bench.compiled, env: { ...bench.appEnv, ...NO_LIMITS } }),
    on: await startChildApp({ compiled: bench.compiled, env: { ...bench.appEnv, ...DEFAULT_LIMITS } }),
  };
  const times: Record<'off' | 'on', ProcessTimes> = { off: { served: [], first: [] }, on: { served: [], first: [] } };
  const floors: number[] = [];
  const pacer = new MinutePacer();
  try {
    await Promise.all([waitListening(children.off), waitListening(children.on)]);
    for (let index = 0; index < options.warmup + options.repetitions; index++) {
      const measured = index >= options.warmup;
      const ids = {
        off: { served: bench.newId('lim-off'), first: bench.newId('lim-off-first') },
        on: { served: bench.newId('lim-on'), first: bench.newId('lim-on-first') },
      };
      const forFloor = bench.newId('lim-floor');
      for (const kind of ['off', 'on'] as const) {
        await bench.tables.write(ids[kind].served, bench.template(history - 2));
        await bench.tables.write(ids[kind].first, bench.template(history));
      }
      await bench.tables.write(forFloor, bench.template(history));
      await pacer.reserve(REQUESTS_PER_REPETITION); // what the limits-on process receives
      for (const kind of ['off', 'on'] as const) {
        await postTurn(children[kind].api, ids[kind].served, bench.turn.user.content); // now it served it
      }
      const timeTurn = async (kind: 'off' | 'on', turn: 'served' | 'first') => {
        const start = performance.now();
        await postTurn(children[kind].api, ids[kind][turn], bench.turn.user.content);
        if (measured) times[kind][turn].push(performance.now() - start);
      };
      const steps = [
        () => timeTurn('on', 'served'),
        () => timeTurn('off', 'served'),
        () => timeTurn('on', 'first'),
        () => timeTurn('off', 'first'),
        async () => {
          const elapsed = await timeMs(() => bench.tables.floorTurn(forFloor, bench.turn, bench.encoding));
          if (measured) floors.push(elapsed);
        },
      ];
      // Each takes every place in the order by turns.
      for (let step = 0; step < steps.length; step++) await steps[(index + step) % steps.length]!();
      for (const id of [ids.off.served, ids.off.first, ids.on.served, ids.on.first, forFloor]) {
        await bench.tables.remove(id);
      }
    }
  } finally {
    await Promise.all([children.off.stop(), children.on.stop()]);
    bench.app.model.clear();
  }
  const summary = (kind: 'off' | 'on') => ({
    servedMs: median(times[kind].served),
    firstMs: median(times[kind].first),
  });
  return { off: summary('off'), on: summary('on'), floorMs: median(floors) };
}

export async function measureLimits(bench: BenchSetup, options: LimitsOptions): Promise<Figure[]> {
  const { off, on, floorMs } = await turnsSideBySide(bench, options);
  const size = options.history;
  bench.log(
    `  app processes side by side, history ${size}: limits off ${off.servedMs.toFixed(2)} ms served, ` +
      `${off.firstMs.toFixed(2)} ms first; limits on ${on.servedMs.toFixed(2)} ms served, ` +
      `${on.firstMs.toFixed(2)} ms first (floor ${floorMs.toFixed(2)})`,
  );
  return [
    {
      name: `overhead_ratio_limits_on_${size}`,
      value: on.servedMs / floorMs,
      unit: 'x',
      note: `default limits on, app in its own process, history ${size}, served conversation`,
    },
    {
      name: `overhead_ratio_limits_off_process_${size}`,
      value: off.servedMs / floorMs,
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

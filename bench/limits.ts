/**
 * Extra figure: the per-turn overhead with the default per-caller limits on (60 requests a minute, 1,000,000
 * tokens a day). The limiter adds Table round trips (a read and a conditional write to admit the request, beside
 * the conversation load; the same to record the tokens, beside the commit). The app reads its settings once per
 * process, so both variants run as app processes of their own, one after the other, each measured against the
 * storage floor taken during its own run; their difference is what the limiter costs.
 */
import { performance } from 'node:perf_hooks';
import { startChildApp, waitListening } from './childApp';
import type { BenchSetup } from './setup';
import { median, timeMs, type Figure } from './stats';
import { postTurn } from './turnClient';

export interface LimitsOptions {
  history: number;
  warmup: number;
  /** Keep warmup + repetitions under 60: the default limit is 60 requests a minute per caller. */
  repetitions: number;
}

/** The defaults of LIMIT_REQUESTS_PER_MINUTE and LIMIT_TOKENS_PER_DAY (src/config.ts). */
const DEFAULT_LIMITS = { LIMIT_REQUESTS_PER_MINUTE: '60', LIMIT_TOKENS_PER_DAY: '1000000' };
const NO_LIMITS = { LIMIT_REQUESTS_PER_MINUTE: '0', LIMIT_TOKENS_PER_DAY: '0' };

async function turnsAgainstFloor(bench: BenchSetup, env: Record<string, string>, options: LimitsOptions) {
  const template = bench.template(options.history);
  const child = await startChildApp({ compiled: bench.compiled, env: { ...bench.appEnv, ...env } });
  const turns: number[] = [];
  const floors: number[] = [];
  try {
    await waitListening(child);
    for (let index = 0; index < options.warmup + options.repetitions; index++) {
      const forTurn = bench.newId('lim');
      const forFloor = bench.newId('lim-floor');
      await bench.tables.write(forTurn, template);
      await bench.tables.write(forFloor, template);
      const runTurn = async () => {
        const start = performance.now();
        await postTurn(child.api, forTurn, bench.turn.user.content);
        return performance.now() - start;
      };
      const runFloor = () => timeMs(() => bench.tables.floorTurn(forFloor, bench.turn, bench.encoding));
      let turn: number;
      let floor: number;
      if (index % 2 === 0) {
        turn = await runTurn();
        floor = await runFloor();
      } else {
        floor = await runFloor();
        turn = await runTurn();
      }
      if (index >= options.warmup) {
        turns.push(turn);
        floors.push(floor);
      }
      await bench.tables.remove(forTurn);
      await bench.tables.remove(forFloor);
    }
  } finally {
    await child.stop();
    bench.app.model.clear();
  }
  return { turnMs: median(turns), floorMs: median(floors) };
}

export async function measureLimits(bench: BenchSetup, options: LimitsOptions): Promise<Figure[]> {
  const off = await turnsAgainstFloor(bench, NO_LIMITS, options);
  const on = await turnsAgainstFloor(bench, DEFAULT_LIMITS, options);
  const size = options.history;
  bench.log(
    `  app process, history ${size}: limits off ${off.turnMs.toFixed(2)} ms (floor ${off.floorMs.toFixed(2)}), ` +
      `limits on ${on.turnMs.toFixed(2)} ms (floor ${on.floorMs.toFixed(2)})`,
  );
  return [
    {
      name: `overhead_ratio_limits_on_${size}`,
      value: on.turnMs / on.floorMs,
      unit: 'x',
      note: `default limits on, app in its own process, history ${size}`,
    },
    {
      name: `overhead_ratio_limits_off_process_${size}`,
      value: off.turnMs / off.floorMs,
      unit: 'x',
      note: 'the same app process setup with limits off',
    },
    { name: 'limiter_added_ms', value: on.turnMs - off.turnMs, unit: 'ms', note: 'turn with limits on - off (signed)' },
  ];
}

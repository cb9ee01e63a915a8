/**
 * CPU per turn (`cpu_ratio`, which replaced `throughput_ratio`: a rate on two shared cores said more about the cores
 * than about the app). One app process serves both the app and the bound function (bench/boundFunction.ts, the
 * minimal function that does a turn's unavoidable work); rounds of turns through the app and of calls to the bound
 * function alternate, each on conversations of the same history, and the process's own CPU time (user + system,
 * read over IPC by the memory agent, without collecting garbage) over the round, divided by the turns in it, is its
 * CPU per turn. Garbage collection that happens during a round is counted in it, as it would be on Azure.
 *
 * The app's turns are on conversations it served (one unmeasured turn each before the round, as `overhead_ratio_N`
 * measures them), so a turn reads the header and takes the messages from memory; the bound function reads the
 * whole partition, as the storage floor does.
 */
import { startChildApp, waitListening, type ChildApp } from './childApp';
import type { CpuSample } from './memoryAgent';
import type { BenchSetup } from './setup';
import { median, type Figure } from './stats';
import { postBound, postTurn } from './turnClient';

export interface CpuOptions {
  /** History of every conversation before its measured turn. */
  history: number;
  /** Turns (and bound calls) per round, one at a time. */
  turnsPerRound: number;
  /** Measured rounds of each kind, after one round of each that is not counted. */
  rounds: number;
}

async function cpuMs(child: ChildApp): Promise<number> {
  return (await child.ask<CpuSample>('cpu')).cpuMs;
}

export async function measureCpu(bench: BenchSetup, options: CpuOptions): Promise<Figure[]> {
  const { history, turnsPerRound } = options;
  if (history < 4 || history % 2 !== 0) throw new Error(`The history must be even and at least 4, not ${history}.`);
  const child = await startChildApp({
    compiled: bench.compiled,
    env: bench.appEnv,
    preloads: ['memoryAgent'],
    boundFunction: true,
  });
  const appRounds: number[] = [];
  const boundRounds: number[] = [];
  try {
    await waitListening(child);
    const content = bench.turn.user.content;
    const appRound = async (): Promise<number> => {
      const ids = Array.from({ length: turnsPerRound }, () => bench.newId('cpu'));
      // Served conversations: history - 2 messages, then one turn through the app, before the clock starts.
      for (const id of ids) {
        await bench.tables.write(id, bench.template(history - 2));
        await postTurn(child.api, id, content);
      }
      const before = await cpuMs(child);
      for (const id of ids) await postTurn(child.api, id, content);
      const spent = (await cpuMs(child)) - before;
      for (const id of ids) await bench.tables.remove(id);
      return spent / turnsPerRound;
    };
    const boundRound = async (): Promise<number> => {
      const ids = Array.from({ length: turnsPerRound }, () => bench.newId('cpu-bound'));
      for (const id of ids) await bench.tables.write(id, bench.template(history));
      const before = await cpuMs(child);
      for (const id of ids) await postBound(child.api, id, content);
      const spent = (await cpuMs(child)) - before;
      for (const id of ids) await bench.tables.remove(id);
      return spent / turnsPerRound;
    };
    for (let round = 0; round <= options.rounds; round++) {
      // Each kind goes first every other round; round 0 warms both up and is not counted.
      const first = round % 2 === 0 ? appRound : boundRound;
      const second = first === appRound ? boundRound : appRound;
      const a = await first();
      const b = await second();
      if (round === 0) continue;
      appRounds.push(first === appRound ? a : b);
      boundRounds.push(first === appRound ? b : a);
    }
  } finally {
    await child.stop();
    bench.app.model.clear();
  }
  const appCpu = median(appRounds);
  const boundCpu = median(boundRounds);
  bench.log(
    `  app process CPU per turn: ${appCpu.toFixed(3)} ms through the app, ${boundCpu.toFixed(3)} ms through the ` +
      `bound function (history ${history}, ${options.rounds} rounds of ${turnsPerRound})`,
  );
  return [
    {
      name: 'cpu_ratio',
      value: appCpu / boundCpu,
      unit: 'x',
      target: '<= 1.25',
      note: `app process CPU per turn: app / bound function, history ${history}`,
    },
    {
      name: 'cpu_ms_per_turn_app',
      value: appCpu,
      unit: 'ms',
      note: `user + system, ${turnsPerRound} served turns a round, median of ${options.rounds} rounds`,
    },
    {
      name: 'cpu_ms_per_turn_bound',
      value: boundCpu,
      unit: 'ms',
      note: 'the same process, the bound function on the same history',
    },
  ];
}

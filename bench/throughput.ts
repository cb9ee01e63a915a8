/**
 * Figure 4: turns per second with many clients at once, each on its own conversation, through HTTP, against
 * Azurite's own rate for the same work done directly (as many workers, each reading its partition and committing
 * the same transaction). Each round starts from fresh copies of the same conversation; rounds alternate which side
 * goes first, and each side's figure is the median over rounds. The CPU time this process (clients, app and
 * stand-in on one side; the SDK client on the other) and Azurite spend per turn tells which of them limits the rate.
 */
import { performance } from 'node:perf_hooks';
import { ownCpuMs, processCpuMs } from './cpu';
import type { BenchSetup } from './setup';
import { median, type Figure } from './stats';
import { postTurn } from './turnClient';

export interface ThroughputOptions {
  clients: number;
  turnsPerClient: number;
  rounds: number;
  /** History of each conversation at the start of a round. */
  history: number;
}

interface Round {
  turnsPerSecond: number;
  /** CPU per turn of this process and of Azurite (undefined without /proc). */
  ownCpuMs: number;
  azuriteCpuMs: number | undefined;
}

async function round(
  azuritePid: number,
  clients: number,
  turnsPerClient: number,
  turn: (client: number) => Promise<unknown>,
): Promise<Round> {
  const turns = clients * turnsPerClient;
  const azuriteBefore = processCpuMs(azuritePid);
  const ownBefore = ownCpuMs();
  const start = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, client) => {
      for (let index = 0; index < turnsPerClient; index++) await turn(client);
    }),
  );
  const elapsed = performance.now() - start;
  const azuriteAfter = processCpuMs(azuritePid);
  return {
    turnsPerSecond: turns / (elapsed / 1000),
    ownCpuMs: (ownCpuMs() - ownBefore) / turns,
    azuriteCpuMs:
      azuriteBefore === undefined || azuriteAfter === undefined ? undefined : (azuriteAfter - azuriteBefore) / turns,
  };
}

export async function measureThroughput(bench: BenchSetup, options: ThroughputOptions): Promise<Figure[]> {
  const { clients, turnsPerClient } = options;
  const template = bench.template(options.history);
  const azuritePid = bench.app.azurite.pid;
  const httpRounds: Round[] = [];
  const floorRounds: Round[] = [];
  // Round 0 warms both paths up and is not counted.
  for (let index = 0; index <= options.rounds; index++) {
    const forHttp = Array.from({ length: clients }, () => bench.newId('tput'));
    const forFloor = Array.from({ length: clients }, () => bench.newId('tput-floor'));
    for (const id of [...forHttp, ...forFloor]) await bench.tables.write(id, template);
    const http = () =>
      round(azuritePid, clients, turnsPerClient, (client) =>
        postTurn(bench.app.api, forHttp[client]!, bench.turn.user.content),
      );
    const floor = () =>
      round(azuritePid, clients, turnsPerClient, (client) =>
        bench.tables.floorTurn(forFloor[client]!, bench.turn, bench.encoding),
      );
    let httpRound: Round;
    let floorRound: Round;
    if (index % 2 === 0) {
      httpRound = await http();
      floorRound = await floor();
    } else {
      floorRound = await floor();
      httpRound = await http();
    }
    if (index > 0) {
      httpRounds.push(httpRound);
      floorRounds.push(floorRound);
    }
    bench.app.model.clear();
    for (const id of [...forHttp, ...forFloor]) await bench.tables.remove(id);
  }
  const httpRate = median(httpRounds.map((entry) => entry.turnsPerSecond));
  const floorRate = median(floorRounds.map((entry) => entry.turnsPerSecond));
  bench.log(`  ${clients} clients: ${httpRate.toFixed(0)} turns/s through HTTP, ${floorRate.toFixed(0)}/s directly`);
  const figures: Figure[] = [
    {
      name: 'throughput_ratio',
      value: httpRate / floorRate,
      unit: 'x',
      target: '>= 0.8',
      note: `${clients} clients, ${clients} conversations, HTTP / direct`,
    },
    {
      name: 'throughput_turns_per_s',
      value: httpRate,
      unit: 'turns/s',
      note: `${clients} x ${turnsPerClient} turns through HTTP (${options.rounds} rounds)`,
    },
    { name: 'floor_turns_per_s', value: floorRate, unit: 'turns/s', note: 'the same batches straight to Azurite' },
    {
      name: 'http_side_cpu_ms_per_turn',
      value: median(httpRounds.map((entry) => entry.ownCpuMs)),
      unit: 'ms',
      note: 'this process per HTTP turn: clients + app + stand-in',
    },
    {
      name: 'floor_side_cpu_ms_per_turn',
      value: median(floorRounds.map((entry) => entry.ownCpuMs)),
      unit: 'ms',
      note: 'this process per direct turn: the SDK client',
    },
  ];
  const azuriteHttp = httpRounds.map((entry) => entry.azuriteCpuMs);
  const azuriteFloor = floorRounds.map((entry) => entry.azuriteCpuMs);
  if ([...azuriteHttp, ...azuriteFloor].every((value) => value !== undefined && value > 0)) {
    figures.push(
      {
        name: 'azurite_cpu_ms_per_turn_http',
        value: median(azuriteHttp as number[]),
        unit: 'ms',
        note: 'Azurite CPU per HTTP turn (/proc, 10 ms ticks)',
      },
      {
        name: 'azurite_cpu_ms_per_turn_floor',
        value: median(azuriteFloor as number[]),
        unit: 'ms',
        note: 'Azurite CPU per direct turn',
      },
    );
  }
  return figures;
}

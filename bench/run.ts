/**
 * `npm run bench`: what this backend adds to a turn beyond the storage round trips it cannot avoid, measured side
 * by side in one run. It starts everything itself (Azurite in memory, the model stand-in with zero delay, the app
 * through the local host over real HTTP), prints a table, then ONE final line of `name=value` pairs.
 *
 *   npm run bench                        compiled, full sizes (a few minutes)
 *   node --import tsx bench/run.ts       the same from the sources
 *   ... --smoke                          tiny sizes, seconds (what the smoke test runs)
 *   npm run bench -- --cost              only what a conversation costs per trimming policy (about a minute)
 *   npm run bench -- --only=tokens,limits only the steps named (see BENCH_STEPS), e.g. while working on one figure
 *
 * See docs/benchmarks.md for what each figure means.
 */
import { cpus, loadavg, totalmem } from 'node:os';
import { performance } from 'node:perf_hooks';
import { measureColdStart, type ColdStartOptions } from './coldStart';
import { measureCpu, type CpuOptions } from './cpuPerTurn';
import { measureCost, type CostOptions } from './cost';
import { measureLimits, type LimitsOptions } from './limits';
import { measureMemory, type MemoryOptions } from './memory';
import { measureOverhead, warmUp, type OverheadOptions } from './overhead';
import { startBench } from './setup';
import { formatResultLine, formatTable, type Figure } from './stats';
import { measureTokenCounting, type TokenCountingOptions } from './tokenCounting';
import { measureStreaming, type StreamingOptions } from './streaming';
import { measureTrimming, type TrimmingOptions } from './trimming';

export interface BenchOptions {
  /** History sizes for the overhead; the largest is also the trimming history. */
  sizes: number[];
  /** Turn + floor pairs run once at the start, before anything is measured. */
  globalWarmup: number;
  /** Warm-up repetitions before each measurement. */
  warmup: number;
  overheadRepetitions: (size: number) => number;
  trimming: TrimmingOptions;
  cpu: Omit<CpuOptions, 'history'>;
  streamingRepetitions: number;
  /** The app processes with and without limits are fresh: they warm up longer. */
  limits: { warmup: number; repetitions: number };
  coldStart: ColdStartOptions;
  memory: MemoryOptions;
  cost: CostOptions;
  tokenCounting: TokenCountingOptions;
  /** The steps to run (`--only=a,b`; `--cost` is `--only=cost`); all of them when undefined. */
  only?: readonly BenchStep[];
}

/** The steps of a run, in the order they run; `--only` takes a comma-separated list of these names. */
export const BENCH_STEPS = [
  'tokens',
  'overhead',
  'trimming',
  'cpu',
  'streaming',
  'limits',
  'cold-start',
  'memory',
  'cost',
] as const;
export type BenchStep = (typeof BENCH_STEPS)[number];

/** The steps named by `--only=...` (or `--cost`) in `argv`; undefined when all are to run. Throws on an unknown name. */
export function selectedSteps(argv: readonly string[]): BenchStep[] | undefined {
  const names: string[] = [];
  for (const arg of argv) {
    if (arg === '--cost') names.push('cost');
    else if (arg.startsWith('--only=')) names.push(...arg.slice('--only='.length).split(','));
  }
  if (names.length === 0) return undefined;
  for (const name of names) {
    if (!(BENCH_STEPS as readonly string[]).includes(name)) {
      throw new Error(`Unknown benchmark step "${name}"; the steps are: ${BENCH_STEPS.join(', ')}.`);
    }
  }
  return BENCH_STEPS.filter((step) => names.includes(step));
}

export const FULL_OPTIONS: BenchOptions = {
  sizes: [10, 100, 1000],
  globalWarmup: 100,
  warmup: 5,
  overheadRepetitions: (size) => (size >= 1000 ? 15 : 41),
  trimming: { ourRepetitions: 300, referenceRepetitions: 3 },
  cpu: { turnsPerRound: 60, rounds: 9 },
  streamingRepetitions: 41,
  // Three requests a repetition under the default 60 a minute: the step waits for the next minute when needed.
  limits: { warmup: 10, repetitions: 31 },
  coldStart: { repetitions: 5, nodeRepetitions: 10, diagnose: true },
  memory: { turns: 1000, concurrency: 4, conversations: 50 },
  cost: { turns: 300, budget: 16_000 },
  tokenCounting: { chars: 100_000, repetitions: 11, referenceChars: 5_000, healthTurns: 3, idleHealthRequests: 300 },
};

export const SMOKE_OPTIONS: BenchOptions = {
  sizes: [4, 6],
  globalWarmup: 1,
  warmup: 1,
  overheadRepetitions: () => 2,
  trimming: { ourRepetitions: 5, referenceRepetitions: 1 },
  cpu: { turnsPerRound: 2, rounds: 1 },
  streamingRepetitions: 2,
  limits: { warmup: 1, repetitions: 2 },
  coldStart: { repetitions: 1, nodeRepetitions: 1, diagnose: true },
  memory: { turns: 20, concurrency: 2, conversations: 4 },
  cost: { turns: 12, budget: 2_500 },
  tokenCounting: { chars: 2_000, repetitions: 1, referenceChars: 300, healthTurns: 1, idleHealthRequests: 5 },
};

/** Figures that are differences and may be negative (everything else is a positive number). */
export const SIGNED_FIGURES = [
  /^rss_growth_/,
  /^heap_growth_/,
  /^limiter_added_/,
  /^added_ms_/,
  /^overhead_ratio_ex_model_/,
];

export interface BenchResult {
  figures: Figure[];
  /** Lines about the machine, the settings and where cold-start time goes. */
  notes: string[];
  table: string;
  /** The final `name=value` line. */
  line: string;
}

export function machineFacts(): string[] {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  return [
    `Machine: ${cpus().length} CPUs (${cpu}), ${(totalmem() / 1024 ** 3).toFixed(1)} GiB RAM, ` +
      `Node ${process.version}, ${process.platform}/${process.arch}`,
  ];
}

export async function runBench(options: BenchOptions, log: (line: string) => void = () => {}): Promise<BenchResult> {
  const started = performance.now();
  const loadBefore = loadavg()[0]!.toFixed(2);
  const largest = Math.max(...options.sizes);
  const smallest = Math.min(...options.sizes);
  const figures: Figure[] = [];
  const notes: string[] = [...machineFacts()];
  const bench = await startBench({ largestHistory: largest, log });
  try {
    notes.push(
      `Settings: ${bench.compiled ? 'compiled (dist/)' : 'TypeScript sources (tsx)'}, model gpt-4o (o200k_base), ` +
        `token limit ${bench.budget.tokenLimit} with ${bench.budget.maxResponseTokens} reserved for the reply ` +
        `(the ${largest}-message history is trimmed to about 70%), AUTH_MODE=none, limits off unless stated.`,
    );
    const step = async <T>(title: string, run: () => Promise<T>): Promise<T> => {
      log(`${title}...`);
      const start = performance.now();
      const result = await run();
      log(`  (${((performance.now() - start) / 1000).toFixed(1)} s)`);
      return result;
    };

    const runs = (name: BenchStep) => options.only === undefined || options.only.includes(name);
    // The turns' own warm-up serves every step that times turns through the in-process app.
    if ((['overhead', 'streaming'] as const).some(runs)) {
      await step('Warming up', () => warmUp(bench, smallest, options.globalWarmup));
    }
    if (runs('tokens')) {
      figures.push(
        ...(await step('Token counting on one long piece', () => measureTokenCounting(bench, options.tokenCounting))),
      );
    }
    if (runs('overhead')) {
      const overhead: OverheadOptions = {
        sizes: options.sizes,
        warmup: options.warmup,
        repetitions: options.overheadRepetitions,
      };
      figures.push(...(await step('Overhead against the storage floor', () => measureOverhead(bench, overhead))));
    }
    if (runs('trimming')) {
      const trimInput = {
        prologue: bench.prologue,
        history: bench.history.map((message) => ({ ...message, encoding: bench.encoding })),
        newMessage: { role: 'user' as const, content: bench.turn.user.content },
        budget: bench.budget,
        tokenizer: bench.tokenizer,
      };
      figures.push(
        ...(await step('Trimming against the guide loop', async () => measureTrimming(trimInput, options.trimming))),
      );
    }
    if (runs('cpu')) {
      figures.push(...(await step('CPU per turn', () => measureCpu(bench, { ...options.cpu, history: smallest }))));
    }
    if (runs('streaming')) {
      const streaming: StreamingOptions = {
        history: smallest,
        warmup: options.warmup,
        repetitions: options.streamingRepetitions,
      };
      figures.push(...(await step('Streaming', () => measureStreaming(bench, streaming))));
    }
    if (runs('limits')) {
      const limits: LimitsOptions = { history: smallest, ...options.limits };
      figures.push(...(await step('Default limits on', () => measureLimits(bench, limits))));
    }
    if (runs('cold-start')) {
      const cold = await step('Cold start', () => measureColdStart(bench, options.coldStart));
      figures.push(...cold.figures);
      notes.push(...cold.notes);
    }
    if (runs('memory')) figures.push(...(await step('Memory', () => measureMemory(bench, options.memory))));
    if (runs('cost'))
      figures.push(...(await step('What a conversation costs', () => measureCost(bench, options.cost))));
  } finally {
    await bench.close();
  }
  notes.push(
    `Run time: ${((performance.now() - started) / 1000).toFixed(0)} s; 1-minute load average ${loadBefore} before, ` +
      `${loadavg()[0]!.toFixed(2)} after (a high figure before means something else competed for the CPUs).`,
  );
  return { figures, notes, table: formatTable(figures), line: formatResultLine(figures) };
}

async function main(): Promise<void> {
  const smoke = process.argv.includes('--smoke');
  const options = smoke ? SMOKE_OPTIONS : FULL_OPTIONS;
  const only = selectedSteps(process.argv.slice(2));
  const result = await runBench({ ...options, ...(only ? { only } : {}) }, (line) => console.error(line));
  console.log(result.notes.join('\n'));
  console.log('');
  console.log(result.table);
  console.log('');
  console.log(result.line);
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
    process.exitCode = 1;
  });
}

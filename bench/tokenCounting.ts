/**
 * Token counting on one long pre-tokenizer piece (issue 12): the app's encoder on 100,000 characters of each
 * long-piece shape beside 100,000 characters of prose, js-tiktoken's own merge on `'x'.repeat(5000)` beside ours, and
 * how `/api/health` answers while one such turn runs in the same process.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import type { TiktokenBPE, Tiktoken } from 'js-tiktoken/lite' with { 'resolution-mode': 'import' };
import { ownCpuMs } from './cpu';
import { createConversation } from './turnClient';
import type { BenchSetup } from './setup';
import { median, type Figure } from './stats';
import { LONG_PIECE_SHAPES, longPieceText, type LongPieceShape } from './textShapes';

export interface TokenCountingOptions {
  /** Characters per text (100,000: the default CHAT_MAX_MESSAGE_CHARS). */
  chars: number;
  /** Timed counts per text (after one untimed), CPU time. */
  repetitions: number;
  /** Length of the `'x'` run js-tiktoken's own merge is timed on, once (5,000: about 4 s). */
  referenceChars: number;
  /** Turns of one long piece during which /api/health is polled. */
  healthTurns: number;
  /** Health requests sent one after another with nothing else running. */
  idleHealthRequests: number;
}

/** The prose: ordinary words, each its own piece. */
function proseText(chars: number): string {
  return 'word '.repeat(Math.ceil(chars / 5)).slice(0, chars);
}

/**
 * The median CPU time of counting `text` (after one untimed count). CPU time, not wall time: counting is synchronous
 * and this is its work; on a machine other processes share, wall time also holds however long the scheduler ran them
 * instead, which made the ratios swing from run to run. /api/health while a long turn runs shows the wall-time side.
 */
function timeCount(count: (text: string) => number, text: string, repetitions: number): number {
  count(text);
  const times: number[] = [];
  for (let index = 0; index < repetitions; index++) {
    const start = ownCpuMs();
    count(text);
    times.push(ownCpuMs() - start);
  }
  return median(times);
}

/** Untimed passes over prose and every shape before any of them is timed. */
const WARM_UP_PASSES = 3;

function percentile(values: readonly number[], share: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(share * sorted.length) - 1))]!;
}

/* eslint-disable @typescript-eslint/no-require-imports -- js-tiktoken's types are ESM-only, its code is required */
function libraryEncoder(): Tiktoken {
  const { Tiktoken: TiktokenClass } = require('js-tiktoken/lite') as { Tiktoken: typeof Tiktoken };
  return new TiktokenClass(require('js-tiktoken/ranks/o200k_base') as TiktokenBPE);
}
/* eslint-enable @typescript-eslint/no-require-imports */

async function healthLatencies(api: string, until: () => boolean, atLeast: number): Promise<number[]> {
  const latencies: number[] = [];
  while (!until() || latencies.length < atLeast) {
    const start = performance.now();
    const response = await fetch(`${api}/health`);
    await response.arrayBuffer();
    latencies.push(performance.now() - start);
    if (until() && latencies.length >= atLeast) break;
  }
  return latencies;
}

export async function measureTokenCounting(bench: BenchSetup, options: TokenCountingOptions): Promise<Figure[]> {
  const { tokenizer } = bench;
  const count = (text: string) => tokenizer.countTokens(text);
  const suffix = options.chars >= 1000 ? `${Math.round(options.chars / 1000)}k` : String(options.chars);
  const figures: Figure[] = [];

  // Every text is counted WARM_UP_PASSES times, all alike, before any is timed. Prose used to be timed first, with
  // one untimed count before it, and so got whatever the process was still doing just after the benchmark's set-up
  // (collecting its garbage, compiling): timed again at the end of the step, the same prose count took 8.9, 6.2, 4.5
  // and 3.1 ms (2026-11-28, a loaded run), so its figure, and the worst-over-prose ratio with it, depended on its
  // place. Each text's timed counts still run back to back, as before.
  const prose = proseText(options.chars);
  const shapeTexts = LONG_PIECE_SHAPES.map((shape) => longPieceText(shape, options.chars));
  for (let pass = 0; pass < WARM_UP_PASSES; pass++) for (const text of [prose, ...shapeTexts]) count(text);
  const proseMs = timeCount(count, prose, options.repetitions);
  const shapeMs = new Map<LongPieceShape, number>();
  LONG_PIECE_SHAPES.forEach((shape, index) => {
    shapeMs.set(shape, timeCount(count, shapeTexts[index]!, options.repetitions));
  });
  const [worstShape, worstMs] = [...shapeMs].reduce((worst, entry) => (entry[1] > worst[1] ? entry : worst));
  figures.push({
    name: 'count_ms_prose_100k',
    value: proseMs,
    unit: 'ms',
    note: `'word '.repeat(), ${options.chars} chars, CPU time, median of ${options.repetitions}`,
  });
  figures.push({
    name: 'count_ms_worst_100k',
    value: worstMs,
    unit: 'ms',
    note: `slowest shape at ${options.chars} chars: ${worstShape}`,
  });
  figures.push({
    name: 'count_worst_over_prose',
    value: worstMs / proseMs,
    unit: 'x',
    target: '<= 3',
    note: 'count_ms_worst_100k / count_ms_prose_100k',
  });
  for (const [shape, ms] of shapeMs) {
    figures.push({ name: `count_ms_${shape}_${suffix}`, value: ms, unit: 'ms', note: 'one piece of this shape' });
  }

  // js-tiktoken's own encoder: its merge is quadratic in a piece's length, so one run on the short 'x' string.
  const library = libraryEncoder();
  const libraryCount = (text: string) => library.encode(text, [], []).length;
  figures.push({
    name: 'count_ms_prose_library_100k',
    value: timeCount(libraryCount, proseText(options.chars), options.repetitions),
    unit: 'ms',
    note: "js-tiktoken's own encode on the same prose",
  });
  const xs = 'x'.repeat(options.referenceChars);
  const libraryStart = ownCpuMs();
  const libraryIds = library.encode(xs, [], []);
  const libraryMs = ownCpuMs() - libraryStart;
  const ourMs = timeCount(count, xs, Math.max(options.repetitions, 21));
  if (count(xs) !== libraryIds.length) throw new Error('The encoder and js-tiktoken disagree on the x run.');
  figures.push({
    name: 'count_speedup_x_5k',
    value: libraryMs / ourMs,
    unit: 'x',
    target: '>= 1000',
    note: `js-tiktoken ${libraryMs.toFixed(0)} ms / ours ${ourMs.toFixed(3)} ms on 'x' x ${options.referenceChars}`,
  });

  // /api/health while one turn of the worst shape runs (app, model stand-in and this client share one process).
  // First let the timers the synchronous counts above held back fire: idle keep-alive connections the server is
  // closing must be gone before the next request, or it goes out on one of them and fails.
  await delay(100);
  const idle = await healthLatencies(bench.app.api, () => true, options.idleHealthRequests);
  const busy: number[] = [];
  const statuses = new Set<number>();
  const turnTimes: number[] = [];
  for (let turn = 0; turn < options.healthTurns; turn++) {
    const conversation = await createConversation(bench.app.api, {});
    let done = false;
    const start = performance.now();
    const sent = fetch(`${bench.app.api}/conversations/${conversation}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ content: longPieceText(worstShape, options.chars, 1000 + turn) }),
    }).then(async (response) => {
      await response.arrayBuffer();
      statuses.add(response.status);
      turnTimes.push(performance.now() - start);
      done = true;
    });
    busy.push(...(await healthLatencies(bench.app.api, () => done, 1)));
    await sent;
  }
  figures.push({
    name: 'health_p99_idle_ms',
    value: percentile(idle, 0.99),
    unit: 'ms',
    note: `${idle.length} sequential GET /api/health, nothing else running`,
  });
  figures.push({
    name: 'health_p99_busy_ms',
    value: percentile(busy, 0.99),
    unit: 'ms',
    note:
      `${busy.length} sequential GET /api/health during ${options.healthTurns} turns of ${options.chars} chars ` +
      `of ${worstShape} (answered ${[...statuses].join('/')}, median ${median(turnTimes).toFixed(0)} ms)`,
  });
  return figures;
}

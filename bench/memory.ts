/**
 * Figure 6: the app's memory over many turns, in a process of its own (so the figures are the app's, not the
 * benchmark's, Azurite's or the stand-in's), started with `--expose-gc` and the memory agent. Turns go to a set of
 * conversations a few at a time; after turn `turns / 2` and after the last, the agent forces a GC and reports RSS
 * and heap, plus the process's peak RSS; the CPU time the app used over the second half gives its CPU per turn.
 */
import { startChildApp, waitListening } from './childApp';
import type { MemorySample } from './memoryAgent';
import type { BenchSetup } from './setup';
import { runPool, type Figure } from './stats';
import { postTurn } from './turnClient';

export interface MemoryOptions {
  turns: number;
  concurrency: number;
  conversations: number;
}

const MB = 1024 * 1024;
const MEMORY_RUN_CACHE_MB = 1;

export async function measureMemory(bench: BenchSetup, options: MemoryOptions): Promise<Figure[]> {
  const template = bench.template(Math.min(10, bench.history.length));
  const ids = Array.from({ length: options.conversations }, () => bench.newId('mem'));
  for (const id of ids) await bench.tables.write(id, template);
  const child = await startChildApp({
    compiled: bench.compiled,
    // The history cache is capped small so it is full (and evicting) well before turn `turns / 2`: whatever
    // grows after that is not the cache. Its own bound is the cache's unit tests' business.
    env: { ...bench.appEnv, CHAT_HISTORY_CACHE_MB: String(MEMORY_RUN_CACHE_MB) },
    nodeFlags: ['--expose-gc'],
    preloads: ['memoryAgent'],
  });
  try {
    await waitListening(child);
    const half = Math.floor(options.turns / 2);
    const runTurns = (count: number, offset: number) =>
      runPool(count, options.concurrency, async (index) => {
        await postTurn(child.api, ids[(offset + index) % ids.length]!, bench.turn.user.content);
        bench.app.model.clear(); // the stand-in keeps every request it saw; this run is about the app's memory
      });
    await runTurns(half, 0);
    const middle = await child.ask<MemorySample>('memory');
    await runTurns(options.turns - half, half);
    const end = await child.ask<MemorySample>('memory');
    bench.log(
      `  after ${half} turns: RSS ${(middle.rss / MB).toFixed(1)} MB, heap ${(middle.heapUsed / MB).toFixed(1)} MB; ` +
        `after ${options.turns}: RSS ${(end.rss / MB).toFixed(1)} MB, heap ${(end.heapUsed / MB).toFixed(1)} MB, ` +
        `peak RSS ${(end.maxRss / MB).toFixed(1)} MB`,
    );
    return [
      {
        name: 'memory_peak_rss_mb',
        value: end.maxRss / MB,
        unit: 'MB',
        note: `app process peak RSS after ${options.turns} turns (history cache ${MEMORY_RUN_CACHE_MB} MB)`,
      },
      {
        name: 'app_cpu_ms_per_turn',
        value: (end.cpuMsBeforeGc - middle.cpuMs) / (options.turns - half),
        unit: 'ms',
        note: `app process CPU (user + system) per turn, turns ${half + 1}-${options.turns}`,
      },
      { name: `rss_after_${half}_mb`, value: middle.rss / MB, unit: 'MB', note: `after GC, turn ${half}` },
      {
        name: `rss_after_${options.turns}_mb`,
        value: end.rss / MB,
        unit: 'MB',
        note: `after GC, turn ${options.turns}`,
      },
      {
        name: `rss_growth_${half}_${options.turns}_mb`,
        value: (end.rss - middle.rss) / MB,
        unit: 'MB',
        target: 'none beyond noise',
        note: 'RSS after GC, signed',
      },
      {
        name: `heap_growth_${half}_${options.turns}_mb`,
        value: (end.heapUsed - middle.heapUsed) / MB,
        unit: 'MB',
        target: 'none beyond noise',
        note: 'heap used after GC, signed',
      },
    ];
  } finally {
    await child.stop();
    for (const id of ids) await bench.tables.remove(id);
  }
}

/**
 * Figure 5: from process start to the first turn answered by the app in a fresh process (the compiled app under
 * the local host), for an o200k_base model (gpt-4o) and a cl100k_base one (gpt-4), beside `node -e ""`; and gpt-4o
 * again with telemetry on (OTLP/HTTP JSON to a loopback receiver that accepts and discards), since an app with
 * telemetry on loads the exporters at start.
 *
 * The clock starts just before the spawn; the benchmark then POSTs a turn every few milliseconds until one is
 * answered 200 (refused connections are retried, anything else fails the run). A separate run with the require
 * timer preloaded says where the time goes (per package own load time); it is not part of the timed runs, since
 * wrapping the loader costs time itself.
 */
import { execFile, spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { REPO_ROOT } from '../local/app';
import { startChildApp, waitListening, type ChildApp } from './childApp';
import type { RequireTimings } from './requireTimer';
import type { BenchSetup } from './setup';
import { median, type Figure } from './stats';
import { postTurn } from './turnClient';

export interface ColdStartOptions {
  repetitions: number;
  nodeRepetitions: number;
  /** Also run once with the require timer and report where the time goes. */
  diagnose: boolean;
}

const RUNS = [
  { model: 'gpt-4o', label: 'o200k', telemetry: false },
  { model: 'gpt-4', label: 'cl100k', telemetry: false },
  { model: 'gpt-4o', label: 'telemetry_o200k', telemetry: true },
] as const;

/** An OTLP/HTTP receiver on loopback that answers every export with an empty success and keeps nothing. */
async function startDiscardingReceiver(): Promise<{ url: string; server: Server }> {
  const server = createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      const json = request.headers['content-type']?.includes('json') ?? false;
      response.writeHead(200, { 'content-type': json ? 'application/json' : 'application/x-protobuf' });
      response.end(json ? '{}' : undefined);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}
const POLL_INTERVAL_MS = 5;
const START_TIMEOUT_MS = 60_000;

function isRefused(error: unknown): boolean {
  const cause = (error as { cause?: { code?: unknown } }).cause;
  return cause?.code === 'ECONNREFUSED';
}

/** POSTs a turn until one is answered; returns when it was, and when the successful request was sent. */
async function pollFirstTurn(child: ChildApp, conversationId: string, content: string) {
  const deadline = performance.now() + START_TIMEOUT_MS;
  for (;;) {
    const sentAt = performance.now();
    try {
      await postTurn(child.api, conversationId, content);
      return { answeredAt: performance.now(), sentAt };
    } catch (error) {
      if (!isRefused(error)) throw new Error(`${(error as Error).message}\n${child.output()}`, { cause: error });
      if (performance.now() > deadline) {
        throw new Error(`No turn answered within ${START_TIMEOUT_MS} ms:\n${child.output()}`, { cause: error });
      }
      await delay(POLL_INTERVAL_MS);
    }
  }
}

function appEnvFor(bench: BenchSetup, model: string): Record<string, string> {
  // The model family's own context window applies (no CHAT_TOKEN_LIMIT), as in a fresh deployment.
  const { CHAT_TOKEN_LIMIT: _limit, ...env } = bench.appEnv;
  return { ...env, AZURE_OPENAI_MODEL: model };
}

async function nodeEmptyMs(): Promise<number> {
  const start = performance.now();
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore', env: { PATH: process.env.PATH ?? '' } });
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', () => resolve());
  });
  return performance.now() - start;
}

/**
 * Loads js-tiktoken and one encoding's ranks in a fresh Node, makes the encoder the way the app does (the ranks
 * indexed by src/adapters/tiktokenRanks.ts, the merge of bytePairEncoder.ts) or with the library's own constructor,
 * and encodes once, timing each. \`prebuilt\`: what the bundle does instead, the index read from the file saved beside
 * it (src/adapters/prebuiltRankIndex.ts, dist/app/ranks/), checked against the ranks file there; the ranks module is
 * not evaluated (require = reading and checking the files, build = the merge's tables).
 */
const TOKENIZER_PROBE = `
const { performance } = require('node:perf_hooks');
const [encoding, builder, ranksModule, mergeModule, prebuiltModule, prebuiltDir] = process.argv.slice(1);
const start = performance.now();
let encode;
let loaded;
if (builder === 'prebuilt') {
  const prebuilt = require(prebuiltModule).loadPrebuiltRankIndex(encoding, prebuiltDir);
  if (!prebuilt) throw new Error('No saved index in ' + prebuiltDir);
  loaded = performance.now();
  const merge = require(mergeModule).createBytePairEncoder(prebuilt.index, prebuilt.patStr, prebuilt.specialTokens);
  encode = (text) => merge.encode(text);
} else {
const { Tiktoken } = require('js-tiktoken/lite');
const ranks = require('js-tiktoken/ranks/' + encoding);
loaded = performance.now();
if (builder === 'library') {
  const library = new Tiktoken(ranks);
  encode = (text) => library.encode(text, [], []);
} else {
  const { index } = require(ranksModule).loadRanks(Tiktoken, ranks);
  const merge = require(mergeModule).createBytePairEncoder(index, ranks.pat_str, ranks.special_tokens);
  encode = (text) => merge.encode(text);
}
}
const built = performance.now();
encode('Hello, world');
const encoded = performance.now();
process.stdout.write(JSON.stringify({ requireMs: loaded - start, buildMs: built - loaded, encodeMs: encoded - built }));
`;

interface TokenizerProbe {
  requireMs: number;
  buildMs: number;
  encodeMs: number;
}

async function probeTokenizer(
  encoding: string,
  builder: 'app' | 'library' | 'prebuilt',
  compiled: boolean,
): Promise<TokenizerProbe> {
  const adapter = (name: string) =>
    compiled
      ? path.join(REPO_ROOT, 'dist', 'src', 'adapters', `${name}.js`)
      : path.join(REPO_ROOT, 'src', 'adapters', `${name}.ts`);
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [
      ...(compiled ? [] : ['--import', 'tsx']),
      '-e',
      TOKENIZER_PROBE,
      `${encoding}_base`,
      builder,
      adapter('tiktokenRanks'),
      adapter('bytePairEncoder'),
      adapter('prebuiltRankIndex'),
      path.join(REPO_ROOT, 'dist', 'app', 'ranks'),
    ],
    { cwd: REPO_ROOT, env: { PATH: process.env.PATH ?? '' } },
  );
  return JSON.parse(stdout) as TokenizerProbe;
}

/** Cold starts of one kind: `options.repetitions` fresh app processes, each timed to its first answered turn. */
async function coldStarts(
  bench: BenchSetup,
  options: ColdStartOptions,
  run: (typeof RUNS)[number],
  otlpUrl: string,
  nodeMs: number,
): Promise<Figure[]> {
  const { model, label } = run;
  const template = bench.template(Math.min(10, bench.history.length));
  const env = {
    ...appEnvFor(bench, model),
    ...(run.telemetry ? { OTEL_EXPORTER_OTLP_ENDPOINT: otlpUrl, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' } : {}),
  };
  const totals: number[] = [];
  const listens: number[] = [];
  const firstTurns: number[] = [];
  for (let repetition = 0; repetition < options.repetitions; repetition++) {
    const conversationId = bench.newId(`cold-${label}`);
    await bench.tables.write(conversationId, template);
    const child = await startChildApp({ compiled: bench.compiled, env });
    try {
      const { answeredAt, sentAt } = await pollFirstTurn(child, conversationId, bench.turn.user.content);
      totals.push(answeredAt - child.spawnedAt);
      listens.push((await child.listening) - child.spawnedAt);
      firstTurns.push(answeredAt - sentAt);
    } finally {
      await child.stop();
    }
    await bench.tables.remove(conversationId);
  }
  const totalMs = median(totals);
  const what = run.telemetry ? `${model}, telemetry on (OTLP to a loopback receiver)` : model;
  bench.log(
    `  ${what}: first turn answered ${totalMs.toFixed(0)} ms after spawn (${totals.map((t) => t.toFixed(0)).join(', ')})`,
  );
  return [
    {
      name: `cold_start_${label}_ms`,
      value: totalMs,
      unit: 'ms',
      ...(label === 'o200k' ? { target: '<= 300' } : {}),
      note: `spawn -> first turn 200, ${what} (${options.repetitions} runs)`,
    },
    { name: `cold_start_ratio_${label}`, value: totalMs / nodeMs, unit: 'x', note: 'cold start / node -e ""' },
    { name: `cold_start_listen_${label}_ms`, value: median(listens), unit: 'ms', note: 'spawn -> host listening' },
    {
      name: `cold_start_first_turn_${label}_ms`,
      value: median(firstTurns),
      unit: 'ms',
      note: 'the first POST itself (services, ranks)',
    },
  ];
}

export async function measureColdStart(
  bench: BenchSetup,
  options: ColdStartOptions,
): Promise<{ figures: Figure[]; notes: string[] }> {
  const figures: Figure[] = [];
  const notes: string[] = [];
  const template = bench.template(Math.min(10, bench.history.length));

  const nodeTimes: number[] = [];
  for (let run = 0; run < options.nodeRepetitions + 1; run++) {
    const elapsed = await nodeEmptyMs();
    if (run > 0) nodeTimes.push(elapsed); // the first spawn warms the file cache
  }
  const nodeMs = median(nodeTimes);
  figures.push({
    name: 'node_empty_ms',
    value: nodeMs,
    unit: 'ms',
    note: `node -e "" (${options.nodeRepetitions} runs)`,
  });

  // Telemetry on: OTLP to a loopback receiver that accepts every export and keeps nothing.
  const receiver = await startDiscardingReceiver();
  try {
    for (const run of RUNS) figures.push(...(await coldStarts(bench, options, run, receiver.url, nodeMs)));
  } finally {
    await new Promise<void>((resolve) => receiver.server.close(() => resolve()));
  }

  for (const encoding of ['o200k', 'cl100k']) {
    const ours: TokenizerProbe[] = [];
    const library: TokenizerProbe[] = [];
    const saved: TokenizerProbe[] = [];
    for (let run = 0; run < options.repetitions; run++) {
      ours.push(await probeTokenizer(encoding, 'app', bench.compiled));
      library.push(await probeTokenizer(encoding, 'library', bench.compiled));
      // The saved index is written by the build: only beside a built bundle.
      if (bench.compiled) saved.push(await probeTokenizer(encoding, 'prebuilt', bench.compiled));
    }
    const total = median(ours.map((probe) => probe.requireMs + probe.buildMs + probe.encodeMs));
    figures.push(
      {
        name: `tokenizer_init_${encoding}_ms`,
        value: total,
        unit: 'ms',
        note:
          `require ${median(ours.map((probe) => probe.requireMs)).toFixed(0)} + build ` +
          `${median(ours.map((probe) => probe.buildMs)).toFixed(0)} + first encode, fresh node`,
      },
      ...(saved.length > 0
        ? [
            {
              name: `tokenizer_init_prebuilt_${encoding}_ms`,
              value: median(saved.map((probe) => probe.requireMs + probe.buildMs + probe.encodeMs)),
              unit: 'ms',
              note:
                `read + check ${median(saved.map((probe) => probe.requireMs)).toFixed(0)} + merge tables ` +
                `${median(saved.map((probe) => probe.buildMs)).toFixed(0)} + first encode: the bundle's saved index`,
            },
          ]
        : []),
      {
        name: `tokenizer_library_build_${encoding}_ms`,
        value: median(library.map((probe) => probe.buildMs)),
        unit: 'ms',
        note: "js-tiktoken's own constructor on the same ranks, for comparison",
      },
    );
  }

  if (options.diagnose) notes.push(...(await diagnose(bench, template)));
  return { figures, notes };
}

/** One more o200k cold start with the require timer: where the time goes, per package. */
async function diagnose(bench: BenchSetup, template: ReturnType<BenchSetup['template']>): Promise<string[]> {
  const conversationId = bench.newId('cold-diagnose');
  await bench.tables.write(conversationId, template);
  const child = await startChildApp({
    compiled: bench.compiled,
    env: appEnvFor(bench, 'gpt-4o'),
    preloads: ['requireTimer'],
  });
  try {
    const listenedAt = await waitListening(child);
    const beforeTurn = await child.ask<RequireTimings>('requires');
    const { answeredAt, sentAt } = await pollFirstTurn(child, conversationId, bench.turn.user.content);
    const afterTurn = await child.ask<RequireTimings>('requires');
    const sum = (timings: RequireTimings) => timings.packages.reduce((total, entry) => total + entry.ms, 0);
    const loadedDuringTurn = afterTurn.packages
      .map((entry) => {
        const before = beforeTurn.packages.find((candidate) => candidate.name === entry.name);
        return { name: entry.name, ms: entry.ms - (before?.ms ?? 0), modules: entry.modules - (before?.modules ?? 0) };
      })
      .filter((entry) => entry.modules > 0)
      .sort((a, b) => b.ms - a.ms);
    const describe = (entries: { name: string; ms: number; modules: number }[]) =>
      entries
        .slice(0, 8)
        .map((entry) => `${entry.name} ${entry.ms.toFixed(0)} ms (${entry.modules})`)
        .join(', ');
    return [
      `Cold start, where the time goes (gpt-4o, one run with the require timer, which itself adds a little):`,
      `  node boot to the first preload: ${beforeTurn.bootMs.toFixed(0)} ms`,
      `  spawn to listening: ${(listenedAt - child.spawnedAt).toFixed(0)} ms, of which loading modules ` +
        `${sum(beforeTurn).toFixed(0)} ms: ${describe(beforeTurn.packages)}`,
      `  first turn: ${(answeredAt - sentAt).toFixed(0)} ms, of which loading modules ` +
        `${(sum(afterTurn) - sum(beforeTurn)).toFixed(0)} ms: ${describe(loadedDuringTurn)}`,
    ];
  } finally {
    await child.stop();
    await bench.tables.remove(conversationId);
  }
}

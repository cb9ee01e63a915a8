/**
 * Figures 1 and 3: a full turn through the HTTP path against the storage floor of the same turn, and the tokens the
 * app encodes during one turn, at each history size.
 *
 * Every repetition runs on fresh copies of the same seeded conversation (one for the turn, one for the floor,
 * written before the clock starts and deleted after), so the history read is exactly N messages every time and
 * the table does not grow. Turn and floor alternate which goes first. The stand-in's share is measured by sending
 * it the very request the app sent, so the ratio can also be read without the model's part.
 */
import { performance } from 'node:perf_hooks';
import type { StoredMessage } from '../src/core/ports';
import { LOCAL_CALLER } from '../src/http/caller';
import { callStandIn, postTurn } from './turnClient';
import { STAND_IN_API_KEY, type BenchSetup } from './setup';
import { median, timeMs, type Figure } from './stats';

export interface OverheadOptions {
  sizes: readonly number[];
  warmup: number;
  /** Repetitions per size (each on fresh copies). */
  repetitions: (size: number) => number;
}

export async function measureOverhead(bench: BenchSetup, options: OverheadOptions): Promise<Figure[]> {
  const figures: Figure[] = [];
  const { tables, app, tokenizer, turn, encoding } = bench;
  // One bare HTTP exchange with the local host (an unknown route: answered 404 without running the app), the
  // part of a turn's cost that any HTTP API pays before doing anything.
  const hopTimes: number[] = [];
  for (let index = 0; index < options.warmup + options.repetitions(Math.min(...options.sizes)); index++) {
    const elapsed = await timeMs(async () => {
      const response = await fetch(`${app.api}/no-such-route`, { method: 'POST', body: '{}' });
      await response.arrayBuffer();
      if (response.status !== 404) throw new Error(`An unknown route answered ${response.status}.`);
    });
    if (index >= options.warmup) hopTimes.push(elapsed);
  }
  figures.push({
    name: 'http_hop_ms',
    value: median(hopTimes),
    unit: 'ms',
    note: 'one bare HTTP exchange with the local host (404)',
  });
  for (const size of options.sizes) {
    const template = bench.template(size);
    const turnTimes: number[] = [];
    const floorTimes: number[] = [];
    const storeTimes: number[] = [];
    const encoded: number[] = [];
    let promptTokens = 0;
    let droppedTurns = 0;
    let readEntities = 0;
    const repetitions = options.repetitions(size);
    for (let index = 0; index < options.warmup + repetitions; index++) {
      const measured = index >= options.warmup;
      const forTurn = bench.newId(`t${size}`);
      const forFloor = bench.newId(`f${size}`);
      const forStore = bench.newId(`s${size}`);
      await tables.write(forTurn, template);
      await tables.write(forFloor, template);
      await tables.write(forStore, template);

      const runTurn = async () => {
        const before = tokenizer.stats.tokensEncoded;
        const start = performance.now();
        const reply = await postTurn(app.api, forTurn, turn.user.content);
        const elapsed = performance.now() - start;
        if (measured) {
          turnTimes.push(elapsed);
          encoded.push(tokenizer.stats.tokensEncoded - before);
          promptTokens = reply.context.promptTokens;
          droppedTurns = reply.context.droppedTurns;
        }
      };
      const runFloor = async () => {
        const elapsed = await timeMs(async () => {
          readEntities = await tables.floorTurn(forFloor, turn, encoding);
        });
        if (measured) floorTimes.push(elapsed);
      };
      if (index % 2 === 0) {
        await runTurn();
        await runFloor();
      } else {
        await runFloor();
        await runTurn();
      }
      // The app's store adapter alone (no HTTP, no model, no trimming), last: a diagnostic, not part of the ratio.
      const storeMs = await timeMs(() => storeTurn(bench, forStore));
      if (measured) storeTimes.push(storeMs);
      await tables.remove(forTurn);
      await tables.remove(forFloor);
      await tables.remove(forStore);
    }
    if (readEntities !== size + 1) throw new Error(`The floor read ${readEntities} entities, not ${size + 1}.`);

    // The model's part: the request the app sent last, replayed to the stand-in as often as the turn ran.
    const lastRequest = app.model.requests.at(-1)?.rawBody;
    if (!lastRequest) throw new Error('The stand-in recorded no request.');
    const modelTimes: number[] = [];
    for (let index = 0; index < options.warmup + repetitions; index++) {
      const elapsed = await timeMs(() => callStandIn(app.model.baseURL, STAND_IN_API_KEY, lastRequest));
      if (index >= options.warmup) modelTimes.push(elapsed);
    }
    app.model.clear();

    const turnMs = median(turnTimes);
    const floorMs = median(floorTimes);
    const modelMs = median(modelTimes);
    bench.log(
      `  history ${size}: turn ${turnMs.toFixed(2)} ms, floor ${floorMs.toFixed(2)} ms, stand-in ${modelMs.toFixed(2)} ms` +
        ` (${repetitions} repetitions; ${promptTokens} prompt tokens, ${droppedTurns} turns trimmed)`,
    );
    figures.push(
      {
        name: `overhead_ratio_${size}`,
        value: turnMs / floorMs,
        unit: 'x',
        target: '<= 1.5',
        note: `turn / floor, history ${size}`,
      },
      { name: `turn_ms_${size}`, value: turnMs, unit: 'ms', note: `POST a turn through HTTP, history ${size}` },
      { name: `floor_ms_${size}`, value: floorMs, unit: 'ms', note: `query ${size + 1} entities + 3-op transaction` },
      {
        name: `store_ms_${size}`,
        value: median(storeTimes),
        unit: 'ms',
        note: 'the store adapter alone: loadForTurn + commitTurn',
      },
      { name: `model_ms_${size}`, value: modelMs, unit: 'ms', note: 'the same chat request sent to the stand-in' },
      {
        name: `overhead_ratio_ex_model_${size}`,
        value: (turnMs - modelMs) / floorMs,
        unit: 'x',
        note: '(turn - stand-in) / floor',
      },
      {
        name: `prompt_tokens_${size}`,
        value: promptTokens,
        unit: 'tokens',
        note: `sent to the model (${droppedTurns} turns trimmed)`,
      },
      {
        name: `encoded_tokens_per_turn_${size}`,
        value: median(encoded),
        unit: 'tokens',
        target: 'equal at every size',
        note: `tokenizer stats during one turn (min ${Math.min(...encoded)}, max ${Math.max(...encoded)})`,
      },
    );
  }
  return figures;
}

/** loadForTurn + commitTurn of the same two messages through the app's store adapter. */
async function storeTurn(bench: BenchSetup, conversationId: string): Promise<void> {
  const loaded = await bench.store.loadForTurn(LOCAL_CALLER, conversationId);
  if (!loaded) throw new Error(`Conversation ${conversationId} was not found by the store.`);
  const { conversation } = loaded;
  const now = new Date().toISOString();
  const stored = (seq: number, message: typeof bench.turn.user): StoredMessage => ({
    role: message.role,
    content: message.content,
    seq,
    id: `msg_${String(seq).padStart(10, '0')}`,
    createdAt: now,
    tokens: message.tokens,
    encoding: bench.encoding,
    ...(message.role === 'assistant' ? { finishReason: 'stop' as const } : {}),
  });
  await bench.store.commitTurn(LOCAL_CALLER, {
    conversationId,
    expectedVersion: conversation.version,
    messages: [
      stored(conversation.messageCount + 1, bench.turn.user),
      stored(conversation.messageCount + 2, bench.turn.reply),
    ],
    updatedAt: now,
  });
}

/**
 * Turns and floors until the JIT of both this process and Azurite has settled: the first few dozen of each run
 * up to twice as slow as the rest.
 */
export async function warmUp(bench: BenchSetup, size: number, pairs: number): Promise<void> {
  const template = bench.template(size);
  for (let index = 0; index < pairs; index++) {
    const forTurn = bench.newId('warm');
    const forFloor = bench.newId('warm-floor');
    await bench.tables.write(forTurn, template);
    await bench.tables.write(forFloor, template);
    await postTurn(bench.app.api, forTurn, bench.turn.user.content);
    await bench.tables.floorTurn(forFloor, bench.turn, bench.encoding);
    await storeTurn(bench, forTurn);
    await bench.tables.remove(forTurn);
    await bench.tables.remove(forFloor);
  }
  bench.app.model.clear();
}

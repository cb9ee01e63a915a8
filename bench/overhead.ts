/**
 * Figures 1 and 3: a full turn through the HTTP path against the storage floor of the same turn, and the tokens the
 * app encodes during one turn, at each history size.
 *
 * Every repetition runs on fresh copies of the same seeded conversation (written before the clock starts and
 * deleted after), so the history read is exactly N messages every time and the table does not grow. Three turns are
 * measured against one floor, each on its own copy (see TurnKind): the app keeps the messages of conversations it
 * served (CHAT_HISTORY_CACHE_MB), so what a turn reads depends on whether this instance served the conversation's
 * last turn, another instance did, or it never saw the conversation. The floor takes its place among them by turns.
 * The stand-in's share is measured by sending it the very request the app sent, so the ratio can also be read
 * without the model's part. The bound function (bench/boundFunction.ts, registered in the same host: parse the body,
 * the floor's two storage calls, one model call through the same SDK, a JSON answer) takes its place among them too,
 * on a copy of its own: a turn minus the bound function is what the app adds beyond the work no backend can skip.
 */
import { performance } from 'node:perf_hooks';
import type { StoredMessage } from '../src/core/ports';
import { LOCAL_CALLER } from '../src/http/caller';
import { callStandIn, postBound, postTurn } from './turnClient';
import { STAND_IN_API_KEY, type BenchSetup } from './setup';
import { median, timeMs, type Figure } from './stats';

/**
 * Which history the measured turn reads: `served` a conversation this instance served the turn before (header read,
 * messages from its history cache), `toppedUp` one whose last turn another instance stored (header + the two new
 * messages), `first` one this instance has never seen (the whole partition, like the floor).
 */
type TurnKind = 'served' | 'toppedUp' | 'first';

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
  const hopMs = median(hopTimes);
  figures.push({
    name: 'http_hop_ms',
    value: hopMs,
    unit: 'ms',
    note: 'one bare HTTP exchange with the local host (404)',
  });
  for (const size of options.sizes) {
    if (size < 4 || size % 2 !== 0) throw new Error(`History sizes must be even and at least 4, not ${size}.`);
    const turnTimes: Record<TurnKind, number[]> = { served: [], toppedUp: [], first: [] };
    const floorTimes: number[] = [];
    const boundTimes: number[] = [];
    const storeTimes: number[] = [];
    const encoded: number[] = [];
    let promptTokens = 0;
    let droppedTurns = 0;
    let readEntities = 0;
    const repetitions = options.repetitions(size);
    for (let index = 0; index < options.warmup + repetitions; index++) {
      const measured = index >= options.warmup;
      // Every copy reaches exactly `size` messages before its measured turn (see TurnKind).
      const copies = {
        served: bench.newId(`t${size}`),
        toppedUp: bench.newId(`u${size}`),
        first: bench.newId(`n${size}`),
      };
      const forFloor = bench.newId(`f${size}`);
      const forBound = bench.newId(`b${size}`);
      const forStore = bench.newId(`s${size}`);
      await tables.write(copies.served, bench.template(size - 2));
      await postTurn(app.api, copies.served, turn.user.content);
      await tables.write(copies.toppedUp, bench.template(size - 4));
      await postTurn(app.api, copies.toppedUp, turn.user.content);
      await tables.floorTurn(copies.toppedUp, turn, encoding); // another instance's turn
      await tables.write(copies.first, bench.template(size));
      await tables.write(forFloor, bench.template(size));
      await tables.write(forBound, bench.template(size));
      await tables.write(forStore, bench.template(size));

      const runTurn = async (kind: TurnKind) => {
        const before = tokenizer.stats.tokensEncoded;
        const start = performance.now();
        const reply = await postTurn(app.api, copies[kind], turn.user.content);
        const elapsed = performance.now() - start;
        if (measured) {
          turnTimes[kind].push(elapsed);
          encoded.push(tokenizer.stats.tokensEncoded - before);
          if (kind === 'first') {
            promptTokens = reply.context.promptTokens;
            droppedTurns = reply.context.droppedTurns;
          }
        }
      };
      const runFloor = async () => {
        const elapsed = await timeMs(async () => {
          readEntities = await tables.floorTurn(forFloor, turn, encoding);
        });
        if (measured) floorTimes.push(elapsed);
      };
      const runBound = async () => {
        const elapsed = await timeMs(() => postBound(app.api, forBound, turn.user.content));
        if (measured) boundTimes.push(elapsed);
      };
      // Each kind, the floor and the bound function take every place in the order by turns (the first step after
      // the writes above tends to pay for their garbage).
      const steps: (TurnKind | 'floor' | 'bound')[] = ['served', 'floor', 'toppedUp', 'bound', 'first'];
      const order = [...steps.slice(index % steps.length), ...steps.slice(0, index % steps.length)];
      for (const step of order) {
        if (step === 'floor') await runFloor();
        else if (step === 'bound') await runBound();
        else await runTurn(step);
      }
      // The app's store adapter alone (no HTTP, no model, no trimming, no history cache), last: a diagnostic.
      const storeMs = await timeMs(() => storeTurn(bench, forStore));
      if (measured) storeTimes.push(storeMs);
      for (const id of [...Object.values(copies), forFloor, forBound, forStore]) await tables.remove(id);
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

    const floorMs = median(floorTimes);
    const modelMs = median(modelTimes);
    const turnMs = median(turnTimes.served);
    const toppedUpMs = median(turnTimes.toppedUp);
    const firstMs = median(turnTimes.first);
    const boundMs = median(boundTimes);
    bench.log(
      `  history ${size}: turn ${turnMs.toFixed(2)} ms (after another instance's turn ${toppedUpMs.toFixed(2)}, ` +
        `first on this instance ${firstMs.toFixed(2)}), bound function ${boundMs.toFixed(2)} ms, ` +
        `floor ${floorMs.toFixed(2)} ms, stand-in ${modelMs.toFixed(2)} ms` +
        ` (${repetitions} repetitions; ${promptTokens} prompt tokens, ${droppedTurns} turns trimmed)`,
    );
    figures.push(
      {
        name: `overhead_ratio_${size}`,
        value: turnMs / floorMs,
        unit: 'x',
        target: '<= 1.5',
        note: `turn / floor, history ${size}, conversation this instance served`,
      },
      {
        name: `overhead_ratio_topped_up_${size}`,
        value: toppedUpMs / floorMs,
        unit: 'x',
        target: '<= 1.5',
        note: 'the same after another instance stored a turn',
      },
      {
        name: `overhead_ratio_first_${size}`,
        value: firstMs / floorMs,
        unit: 'x',
        target: '<= 1.5',
        note: 'the same, first turn this instance sees (whole read)',
      },
      { name: `turn_ms_${size}`, value: turnMs, unit: 'ms', note: `POST a turn through HTTP, history ${size}` },
      { name: `turn_topped_up_ms_${size}`, value: toppedUpMs, unit: 'ms', note: 'header + 2 new messages read' },
      {
        name: `turn_first_ms_${size}`,
        value: firstMs,
        unit: 'ms',
        note: `whole partition read (${size + 1} entities)`,
      },
      { name: `floor_ms_${size}`, value: floorMs, unit: 'ms', note: `query ${size + 1} entities + 3-op transaction` },
      {
        name: `store_ms_${size}`,
        value: median(storeTimes),
        unit: 'ms',
        note: 'the store adapter alone, no cache: loadForTurn + commitTurn',
      },
      { name: `model_ms_${size}`, value: modelMs, unit: 'ms', note: 'the same chat request sent to the stand-in' },
      {
        name: `bound_ms_${size}`,
        value: boundMs,
        unit: 'ms',
        note: 'the bound function through HTTP: body, partition read, transaction, one model call, JSON',
      },
      {
        name: `overhead_ratio_bound_${size}`,
        value: boundMs / floorMs,
        unit: 'x',
        note: 'bound function / floor: where a backend adding nothing else stands',
      },
      {
        name: `added_ms_${size}`,
        value: turnMs - boundMs,
        unit: 'ms',
        target: '<= 0.5',
        note: 'served turn - bound function, same history: what the app adds (signed)',
      },
      {
        name: `overhead_ratio_ex_model_${size}`,
        value: (turnMs - modelMs) / floorMs,
        unit: 'x',
        note: '(turn - stand-in) / floor, served conversation',
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

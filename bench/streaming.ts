/**
 * Figure 7: what the backend adds before the user sees the first piece of the reply. A streamed turn (POST with
 * `Accept: text/event-stream`) is timed to its first `message.delta`; the very chat request the app sent is then
 * streamed straight from the stand-in and timed to its first content delta; the figure is the difference of the
 * medians. (The backend's very first byte, the `turn.started` event, leaves before the model is called; but the
 * client, the app and the stand-in share one event loop here, so it reaches the client in the same read as the
 * first delta and cannot be timed apart: the first reply text is the figure that means something.)
 */
import type { BenchSetup } from './setup';
import { STAND_IN_API_KEY } from './setup';
import { median, type Figure } from './stats';
import { streamStandIn, streamTurn } from './turnClient';

export interface StreamingOptions {
  history: number;
  warmup: number;
  repetitions: number;
}

export async function measureStreaming(bench: BenchSetup, options: StreamingOptions): Promise<Figure[]> {
  const template = bench.template(options.history);
  const { app } = bench;
  const backendFirstDelta: number[] = [];
  const standInFirstDelta: number[] = [];
  for (let index = 0; index < options.warmup + options.repetitions; index++) {
    const conversationId = bench.newId('stream');
    await bench.tables.write(conversationId, template);
    const backend = await streamTurn(app.api, conversationId, bench.turn.user.content);
    const sent = app.model.requests.at(-1)?.rawBody;
    if (!sent) throw new Error('The stand-in recorded no request.');
    const direct = await streamStandIn(app.model.baseURL, STAND_IN_API_KEY, sent);
    if (index >= options.warmup) {
      backendFirstDelta.push(backend.firstDeltaMs);
      standInFirstDelta.push(direct.firstDeltaMs);
    }
    app.model.clear();
    await bench.tables.remove(conversationId);
  }
  const added = median(backendFirstDelta) - median(standInFirstDelta);
  bench.log(
    `  first reply text after ${median(backendFirstDelta).toFixed(2)} ms through the backend, ` +
      `${median(standInFirstDelta).toFixed(2)} ms straight from the stand-in`,
  );
  return [
    {
      name: 'stream_ttfb_added_ms',
      value: added,
      unit: 'ms',
      note: `first message.delta via backend - first delta from stand-in, history ${options.history}`,
    },
    {
      name: 'stream_first_delta_ms',
      value: median(backendFirstDelta),
      unit: 'ms',
      note: 'request -> first message.delta through the backend',
    },
    {
      name: 'stream_standin_first_delta_ms',
      value: median(standInFirstDelta),
      unit: 'ms',
      note: 'the same request streamed straight from the stand-in',
    },
  ];
}

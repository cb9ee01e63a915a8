/**
 * A turn answered as server-sent events: `turn.started`, `message.delta`... (with `tool.call` and `tool.result`
 * between them when the model uses tools), then `turn.completed`, `turn.requires_action` (client tools to run) or
 * `turn.failed`. Failures found before the model is called (validation, budget, idempotency) stay ordinary
 * problem responses: the promise rejects until the turn has started. If the client goes away mid-stream the host
 * cancels the body; by default the model's stream is still read to the end and the turn stored, so the reply is
 * there when the app reconnects (CHAT_STREAM_ON_DISCONNECT=abort stops the model instead, storing nothing).
 */
import type { HttpResponseInit } from '@azure/functions';
import type { TurnHandlers, TurnInput, TurnOutcome, TurnRunner } from '../core/turn';
import { toProblem } from './problem';

export const SSE_CONTENT_TYPE = 'text/event-stream';

export function wantsEventStream(accept: string | null, streamQuery: string | null): boolean {
  return streamQuery === 'true' || streamQuery === '1' || (accept ?? '').toLowerCase().includes(SSE_CONTENT_TYPE);
}

export function formatEvent(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

export interface StreamOptions {
  onDisconnect: 'finish' | 'abort';
  requestId: string;
}

/** A message turn as server-sent events. */
export function streamTurn(turns: TurnRunner, input: TurnInput, options: StreamOptions): Promise<HttpResponseInit> {
  return streamOutcome((handlers, signal) => turns.stream(input, handlers, signal), options);
}

/** Streams what `run` reports; `run` is TurnRunner.stream or TurnRunner.submitToolResults with these handlers. */
export function streamOutcome(
  run: (handlers: TurnHandlers, signal: AbortSignal) => Promise<TurnOutcome>,
  options: StreamOptions,
): Promise<HttpResponseInit> {
  const encoder = new TextEncoder();
  const modelAbort = new AbortController();
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
  let open = true;
  const body = new ReadableStream<Uint8Array>({
    start: (streamController) => {
      controller = streamController;
    },
    cancel: () => {
      open = false;
      if (options.onDisconnect === 'abort') modelAbort.abort(new Error('The client disconnected.'));
    },
  });
  const send = (event: string, data: unknown) => {
    if (!open) return;
    try {
      controller?.enqueue(encoder.encode(formatEvent(event, data)));
    } catch {
      open = false;
    }
  };
  const close = () => {
    if (!open) return;
    open = false;
    try {
      controller?.close();
    } catch {
      // Already closed by a cancel.
    }
  };

  return new Promise<HttpResponseInit>((resolve, reject) => {
    let started = false;
    const respond = () => {
      started = true;
      resolve({
        status: 200,
        headers: {
          'Content-Type': `${SSE_CONTENT_TYPE}; charset=utf-8`,
          'Cache-Control': 'no-store',
          'X-Accel-Buffering': 'no',
        },
        body,
      });
    };
    run(
      {
        onStart: (info) => {
          respond();
          send('turn.started', info);
        },
        onDelta: (content) => send('message.delta', { content }),
        onToolCall: (call) => send('tool.call', call),
        onToolResult: (report) => send('tool.result', report),
        onReplay: (result) => {
          respond();
          send('turn.started', {
            conversationId: result.conversationId,
            messageId: result.status === 'completed' ? result.message.id : result.turnId,
            promptTokens: result.context.promptTokens,
            droppedTurns: result.context.droppedTurns,
            replayed: true,
          });
          if (result.status === 'completed') send('message.delta', { content: result.message.content });
        },
      },
      modelAbort.signal,
    ).then(
      (result: TurnOutcome) => {
        const { replayed, ...body } = result;
        send(result.status === 'completed' ? 'turn.completed' : 'turn.requires_action', {
          ...body,
          ...(replayed ? { replayed } : {}),
        });
        close();
      },
      (error: unknown) => {
        if (!started) {
          reject(error);
          return;
        }
        send('turn.failed', toProblem(error, options.requestId).body);
        close();
      },
    );
  });
}

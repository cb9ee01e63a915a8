/**
 * The client side of the measurements: one turn through the API (plain JSON or server-sent events), and the
 * same streamed chat request sent straight to the model stand-in, timed the same way.
 */
import { performance } from 'node:perf_hooks';

export interface TurnReply {
  message: { id: string; content: string };
  context: { promptTokens: number; droppedTurns: number };
}

/** POST a turn and read the whole answer; anything but 200 is a failed benchmark. */
export async function postTurn(api: string, conversationId: string, content: string): Promise<TurnReply> {
  const response = await fetch(`${api}/conversations/${conversationId}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ content }),
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`A turn answered ${response.status}: ${text}`);
  return JSON.parse(text) as TurnReply;
}

/** POST the same message to the bound function (bench/boundFunction.ts); anything but 200 is a failed benchmark. */
export async function postBound(api: string, conversationId: string, content: string): Promise<void> {
  const response = await fetch(`${api}/bench/bound/${conversationId}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ content }),
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`The bound function answered ${response.status}: ${text}`);
}

export async function createConversation(api: string, body: Record<string, unknown>): Promise<string> {
  const response = await fetch(`${api}/conversations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  if (response.status !== 201) throw new Error(`Creating a conversation answered ${response.status}: ${text}`);
  return (JSON.parse(text) as { id: string }).id;
}

export interface StreamTimings {
  /** From sending the request to the first piece of reply text. */
  firstDeltaMs: number;
  /** From sending the request to the end of the body. */
  totalMs: number;
}

/**
 * Reads a server-sent event stream, noting when the first reply text arrives. `isDelta` recognises an event (the text between blank lines) that carries reply text.
 */
async function timeEventStream(
  send: () => Promise<Response>,
  isDelta: (event: string) => boolean,
  expectedEnd: string,
): Promise<StreamTimings> {
  const start = performance.now();
  const response = await send();
  if (response.status !== 200 || !response.body) {
    throw new Error(`A streamed request answered ${response.status}: ${await response.text()}`);
  }
  const decoder = new TextDecoder();
  let firstDeltaMs: number | undefined;
  let pending = '';
  let text = '';
  for await (const chunk of response.body) {
    const now = performance.now() - start;
    const decoded = decoder.decode(chunk as Uint8Array, { stream: true });
    text += decoded;
    if (firstDeltaMs === undefined) {
      pending += decoded;
      const events = pending.split('\n\n');
      pending = events.pop() ?? '';
      if (events.some(isDelta)) firstDeltaMs = now;
    }
  }
  const totalMs = performance.now() - start;
  if (firstDeltaMs === undefined || !text.includes(expectedEnd)) {
    throw new Error(`The stream ended without reply text or without ${expectedEnd}: ${text.slice(0, 500)}`);
  }
  return { firstDeltaMs, totalMs };
}

/** A turn through the API with `Accept: text/event-stream`; the reply text comes in `message.delta` events. */
export function streamTurn(api: string, conversationId: string, content: string): Promise<StreamTimings> {
  return timeEventStream(
    () =>
      fetch(`${api}/conversations/${conversationId}/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
        body: JSON.stringify({ content }),
      }),
    (event) => event.startsWith('event: message.delta'),
    'event: turn.completed',
  );
}

/** The chat request body the app sent, replayed straight to the stand-in (the model's own time to first text). */
export function streamStandIn(baseURL: string, apiKey: string, rawBody: string): Promise<StreamTimings> {
  return timeEventStream(
    () =>
      fetch(`${baseURL}chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'api-key': apiKey, accept: 'text/event-stream' },
        body: rawBody,
      }),
    (event) => {
      if (!event.startsWith('data: {')) return false;
      const chunk = JSON.parse(event.slice('data: '.length)) as { choices?: { delta?: { content?: string } }[] };
      return Boolean(chunk.choices?.[0]?.delta?.content);
    },
    'data: [DONE]',
  );
}

/** The same request sent straight to the stand-in, not streamed: what the model's part of a turn costs. */
export async function callStandIn(baseURL: string, apiKey: string, rawBody: string): Promise<void> {
  const response = await fetch(`${baseURL}chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'api-key': apiKey },
    body: rawBody,
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`The stand-in answered ${response.status}: ${text}`);
}

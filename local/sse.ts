/**
 * Server-sent events, the way OpenAI-compatible endpoints stream: `data: <json>\n\n` per event and a
 * final `data: [DONE]`. Used by the model stand-in to write streams and by tests to read them back.
 */
import type { ServerResponse } from 'node:http';

export const SSE_DONE = '[DONE]';

/** Starts a `text/event-stream` response; further headers (request ids) may be passed along. */
export function startEventStream(response: ServerResponse, headers: Record<string, string> = {}): void {
  response.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    ...headers,
  });
  // Send the headers now: a client waiting for the first event must not wait for the first write.
  response.flushHeaders();
}

/**
 * Writes one `data:` event; objects are serialised as JSON, strings (such as `[DONE]`) go as they are. Resolves
 * once the event is handed to the socket, so a caller that then cuts the connection knows it was sent.
 */
export function writeEvent(response: ServerResponse, data: unknown): Promise<void> {
  if (response.destroyed || response.writableEnded) return Promise.resolve();
  const payload = typeof data === 'string' ? data : JSON.stringify(data);
  return new Promise((resolve) => {
    // A write error means the client left; the response's 'close' handling deals with that.
    response.write(`data: ${payload}\n\n`, () => resolve());
  });
}

/**
 * Splits an event-stream body into the `data` payloads of its events, in order (multi-line `data:`
 * fields are joined with `\n`, comments and other fields ignored), for tests that read a raw stream.
 */
export function parseEventStream(body: string): string[] {
  const events: string[] = [];
  for (const block of body.split(/\r?\n\r?\n/)) {
    const dataLines = block
      .split(/\r?\n/)
      .filter((line) => line.startsWith('data:'))
      .map((line) => line.slice('data:'.length).replace(/^ /, ''));
    if (dataLines.length > 0) events.push(dataLines.join('\n'));
  }
  return events;
}

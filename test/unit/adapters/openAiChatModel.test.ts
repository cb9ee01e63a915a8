/**
 * The chat model adapter against canned HTTP responses: the SDK's own `fetch` option is replaced by a
 * function that records what was sent and answers from a script (openai-node's test style), so the real
 * SDK builds the requests, retries, parses SSE and raises its errors. No network, milliseconds each.
 */
import assert from 'node:assert/strict';
import { isStorableText } from '../../../src/core/text';
import { describe, it } from 'node:test';
import OpenAI from 'openai';
import { OpenAiChatModel, type OpenAiChatModelOptions } from '../../../src/adapters/openAiChatModel';
import {
  ChatError,
  ContentFilteredError,
  ContextLengthExceededError,
  RateLimitedError,
  UpstreamError,
} from '../../../src/core/errors';
import type { CompletionChunk, CompletionRequest } from '../../../src/core/ports';

const API_KEY = 'unit-test-key-5f3c9a1e7b2d4c60';
const ENDPOINT = 'https://unit-test.openai.azure.com';
const CHAT_URL = `${ENDPOINT}/openai/v1/chat/completions`;
const DEPLOYMENT = 'chat-deployment';

const REQUEST: CompletionRequest = {
  messages: [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Hi', name: 'alice' },
  ],
  maxResponseTokens: 256,
};

// ---- the scripted fetch ------------------------------------------------------------------------

interface SentRequest {
  url: string;
  method: string;
  headers: Headers;
  body: Record<string, unknown>;
  signal: AbortSignal | undefined;
}

/** One scripted answer: a ready Response, or a function of the request (to hang, reject or stream). */
type Reply = Response | ((sent: SentRequest) => Promise<Response>);

function scriptedFetch(...replies: Reply[]): { fetch: typeof fetch; sent: SentRequest[] } {
  const sent: SentRequest[] = [];
  const fake = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const request: SentRequest = {
      url: String(input),
      method: init?.method ?? 'GET',
      headers: new Headers(init?.headers),
      body: typeof init?.body === 'string' ? (JSON.parse(init.body) as Record<string, unknown>) : {},
      signal: init?.signal ?? undefined,
    };
    sent.push(request);
    const reply = replies[sent.length - 1];
    if (reply === undefined) throw new Error(`unexpected fetch call #${sent.length}`);
    return typeof reply === 'function' ? reply(request) : reply;
  };
  return { fetch: fake, sent };
}

/** A fetch that never answers but rejects as real fetch does when its signal aborts. */
function hanging(sent: SentRequest): Promise<Response> {
  return new Promise((_resolve, reject) => {
    const signal = sent.signal;
    if (signal === undefined) return reject(new Error('the SDK sent no abort signal'));
    if (signal.aborted) return reject(signal.reason);
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

function model(fetch: typeof globalThis.fetch, options: Partial<OpenAiChatModelOptions> = {}): OpenAiChatModel {
  return new OpenAiChatModel({
    endpoint: ENDPOINT,
    deployment: DEPLOYMENT,
    reasoning: false,
    apiKey: API_KEY,
    timeoutMs: 5_000,
    maxRetries: 2,
    fetch,
    ...options,
  });
}

// ---- canned Azure OpenAI answers ---------------------------------------------------------------

function completion(
  overrides: { content?: string | null; finish_reason?: string | null; usage?: unknown; choices?: unknown[] } = {},
) {
  return {
    id: 'chatcmpl-1',
    object: 'chat.completion',
    created: 1_700_000_000,
    model: 'gpt-4o-2024-11-20',
    choices: overrides.choices ?? [
      {
        index: 0,
        message: { role: 'assistant', content: overrides.content === undefined ? 'Hello!' : overrides.content },
        finish_reason: overrides.finish_reason === undefined ? 'stop' : overrides.finish_reason,
      },
    ],
    ...('usage' in overrides
      ? { usage: overrides.usage }
      : {
          usage: {
            prompt_tokens: 29,
            completion_tokens: 73,
            total_tokens: 102,
            prompt_tokens_details: { audio_tokens: 0, cached_tokens: 0 },
          },
        }),
  };
}

const ok = (body: unknown = completion()) => Response.json(body, { status: 200 });

function azureError(status: number, error: Record<string, unknown>, headers: Record<string, string> = {}) {
  return Response.json({ error }, { status, headers });
}

const CONTENT_FILTER_RESULT = {
  hate: { filtered: false, severity: 'safe' },
  self_harm: { filtered: false, severity: 'safe' },
  sexual: { filtered: false, severity: 'safe' },
  violence: { filtered: true, severity: 'medium' },
  jailbreak: { filtered: false, detected: false },
};

const contentFiltered = () =>
  azureError(400, {
    message: "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
    type: null,
    param: 'prompt',
    code: 'content_filter',
    status: 400,
    innererror: { code: 'ResponsibleAIPolicyViolation', content_filter_result: CONTENT_FILTER_RESULT },
  });

const contextTooLong = () =>
  azureError(400, {
    message: "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
    type: 'invalid_request_error',
    param: 'messages',
    code: 'context_length_exceeded',
  });

const rateLimited = (headers: Record<string, string>) =>
  azureError(
    429,
    { code: '429', message: 'Requests to the ChatCompletions_Create Operation have exceeded the rate limit.' },
    headers,
  );

// ---- streaming helpers -------------------------------------------------------------------------

const encoder = new TextEncoder();
const event = (data: unknown) => encoder.encode(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);

function chunk(delta: Record<string, unknown>, finishReason: string | null = null) {
  return {
    id: 'chatcmpl-1',
    object: 'chat.completion.chunk',
    created: 1_700_000_000,
    model: 'gpt-4o-2024-11-20',
    choices: [{ index: 0, delta, finish_reason: finishReason }],
  };
}

/** Azure's first event: the prompt's filter results, no choices. */
const PROMPT_FILTER_CHUNK = {
  id: '',
  object: '',
  created: 0,
  model: '',
  prompt_filter_results: [{ prompt_index: 0, content_filter_results: CONTENT_FILTER_RESULT }],
  choices: [],
};

const USAGE_CHUNK = {
  id: 'chatcmpl-1',
  object: 'chat.completion.chunk',
  created: 1_700_000_000,
  model: 'gpt-4o-2024-11-20',
  choices: [],
  usage: {
    prompt_tokens: 1_300,
    completion_tokens: 3,
    total_tokens: 1_303,
    prompt_tokens_details: { audio_tokens: 0, cached_tokens: 1_152 },
  },
};

function eventStream(body: ReadableStream<Uint8Array>): Response {
  return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream' } });
}

/** Hands out the events one per read, then ends with `end` (close, an error, or hang until the fetch aborts). */
function sseBody(
  events: unknown[],
  end: { kind: 'close' } | { kind: 'error'; error: unknown } | { kind: 'hang'; signal: AbortSignal | undefined },
): ReadableStream<Uint8Array> {
  let next = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (next < events.length) {
        controller.enqueue(event(events[next++]));
        return;
      }
      if (end.kind === 'close') return controller.close();
      if (end.kind === 'error') return controller.error(end.error);
      // As undici does: an aborted fetch errors its body with the signal's reason.
      const signal = end.signal;
      return new Promise<void>((resolve) => {
        const fail = () => {
          controller.error(signal?.reason);
          resolve();
        };
        if (signal?.aborted) fail();
        else signal?.addEventListener('abort', fail, { once: true });
      });
    },
  });
}

async function collect(
  chunks: AsyncIterable<CompletionChunk>,
): Promise<{ received: CompletionChunk[]; error: unknown }> {
  const received: CompletionChunk[] = [];
  try {
    for await (const item of chunks) received.push(item);
    return { received, error: undefined };
  } catch (error) {
    return { received, error };
  }
}

function assertUpstream(error: unknown, code: string, status: number): asserts error is UpstreamError {
  assert.ok(error instanceof UpstreamError, `expected an UpstreamError, got ${String(error)}`);
  assert.equal(error.code, code);
  assert.equal(error.status, status);
}

/** Nothing a ChatError can show (message, detail, extensions, headers) may hold the key. */
function assertNoKey(error: ChatError): void {
  const visible = JSON.stringify({
    message: error.message,
    detail: error.detail,
    extensions: error.extensions,
    headers: error.headers,
  });
  assert.ok(!visible.includes(API_KEY), `the key leaked into ${visible}`);
}

// ---- the request -------------------------------------------------------------------------------

describe('OpenAiChatModel: the request it sends', () => {
  it('posts to {endpoint}/openai/v1/chat/completions with the deployment as model and max_tokens', async () => {
    const { fetch, sent } = scriptedFetch(ok());
    await model(fetch).complete(REQUEST);

    assert.equal(sent.length, 1);
    const [request] = sent;
    assert.equal(request?.url, CHAT_URL);
    assert.equal(request?.method, 'POST');
    assert.equal(request?.body.model, DEPLOYMENT);
    assert.equal(request?.body.max_tokens, 256);
    assert.equal('max_completion_tokens' in (request?.body ?? {}), false);
    assert.equal('temperature' in (request?.body ?? {}), false, 'no temperature unless the request sets one');
    assert.notEqual(request?.body.stream, true);
  });

  for (const endpoint of [`${ENDPOINT}/`, `${ENDPOINT}//`]) {
    it(`builds the same URL from an endpoint with trailing slashes (${JSON.stringify(endpoint)})`, async () => {
      const { fetch, sent } = scriptedFetch(ok());
      await model(fetch, { endpoint }).complete(REQUEST);
      assert.equal(sent[0]?.url, CHAT_URL);
    });
  }

  it('sends the cache key as prompt_cache_key, and none when the request has none', async () => {
    const { fetch, sent } = scriptedFetch(ok(), ok());
    await model(fetch).complete({ ...REQUEST, cacheKey: 'conversation-1' });
    await model(fetch).complete(REQUEST);
    assert.equal(sent[0]?.body.prompt_cache_key, 'conversation-1');
    assert.equal('prompt_cache_key' in (sent[1]?.body ?? {}), false);
  });

  it('sends temperature when set, for a non-reasoning model', async () => {
    const { fetch, sent } = scriptedFetch(ok());
    await model(fetch).complete({ ...REQUEST, temperature: 0.2 });
    assert.equal(sent[0]?.body.temperature, 0.2);
  });

  it('sends max_completion_tokens and no temperature (nor max_tokens) for a reasoning model', async () => {
    const { fetch, sent } = scriptedFetch(ok());
    await model(fetch, { reasoning: true }).complete({ ...REQUEST, temperature: 0.2 });
    const body = sent[0]?.body ?? {};
    assert.equal(body.max_completion_tokens, 256);
    assert.equal('max_tokens' in body, false);
    assert.equal('temperature' in body, false);
  });

  it('keeps a message name where there is one and adds none where there is not', async () => {
    const { fetch, sent } = scriptedFetch(ok());
    await model(fetch).complete(REQUEST);
    assert.deepEqual(sent[0]?.body.messages, [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'Hi', name: 'alice' },
    ]);
  });

  it('authorises with Authorization: Bearer <key> for a string key', async () => {
    const { fetch, sent } = scriptedFetch(ok());
    await model(fetch).complete(REQUEST);
    assert.equal(sent[0]?.headers.get('authorization'), `Bearer ${API_KEY}`);
    assert.equal(sent[0]?.headers.get('api-key'), null);
  });

  it('asks an async token function (the getBearerTokenProvider shape) for a token on every call', async () => {
    let calls = 0;
    const tokenProvider = async () => `entra-token-${++calls}`;
    const { fetch, sent } = scriptedFetch(ok(), ok());
    const chat = model(fetch, { apiKey: tokenProvider });
    await chat.complete(REQUEST);
    await chat.complete(REQUEST);
    assert.equal(sent[0]?.headers.get('authorization'), 'Bearer entra-token-1');
    assert.equal(sent[1]?.headers.get('authorization'), 'Bearer entra-token-2');
  });
});

// ---- success -----------------------------------------------------------------------------------

describe('OpenAiChatModel: a completed reply', () => {
  it('maps content, finish reason and usage, with the response id and model for telemetry', async () => {
    const { fetch } = scriptedFetch(ok());
    assert.deepEqual(await model(fetch).complete(REQUEST), {
      content: 'Hello!',
      finishReason: 'stop',
      usage: { promptTokens: 29, completionTokens: 73, totalTokens: 102, cachedPromptTokens: 0 },
      responseId: 'chatcmpl-1',
      responseModel: 'gpt-4o-2024-11-20',
    });
  });

  it('reads cached prompt tokens from prompt_tokens_details.cached_tokens', async () => {
    const usage = {
      prompt_tokens: 2_000,
      completion_tokens: 10,
      total_tokens: 2_010,
      prompt_tokens_details: { cached_tokens: 1_920 },
    };
    const { fetch } = scriptedFetch(ok(completion({ usage })));
    assert.deepEqual((await model(fetch).complete(REQUEST)).usage, {
      promptTokens: 2_000,
      completionTokens: 10,
      totalTokens: 2_010,
      cachedPromptTokens: 1_920,
    });
  });

  const finishReasons: Array<[string | null, string]> = [
    ['stop', 'stop'],
    ['length', 'length'],
    ['content_filter', 'content_filter'],
    ['tool_calls', 'tool_calls'],
    [null, 'unknown'],
    ['something_new', 'unknown'],
  ];
  for (const [sent, expected] of finishReasons) {
    it(`maps finish_reason ${JSON.stringify(sent)} to ${expected}`, async () => {
      const { fetch } = scriptedFetch(ok(completion({ finish_reason: sent })));
      const reply = await model(fetch).complete(REQUEST);
      assert.equal(reply.finishReason, expected);
    });
  }

  it('reports no usage when the answer carries none (the core counts it), and empty content for a filtered one', async () => {
    const { fetch } = scriptedFetch(
      ok(completion({ content: null, finish_reason: 'content_filter', usage: undefined })),
    );
    assert.deepEqual(await model(fetch).complete(REQUEST), {
      content: '',
      finishReason: 'content_filter',
      responseId: 'chatcmpl-1',
      responseModel: 'gpt-4o-2024-11-20',
    });
  });

  const notCompletions: [string, () => Response][] = [
    [
      'an HTML page as text/html',
      () => new Response('<html><body>Bad gateway</body></html>', { headers: { 'content-type': 'text/html' } }),
    ],
    [
      'an HTML page labelled JSON',
      () => new Response('<html><body>Bad gateway</body></html>', { headers: { 'content-type': 'application/json' } }),
    ],
    [
      'JSON cut short',
      () => new Response('{"id":"x","choices":[{"index":0,"mess', { headers: { 'content-type': 'application/json' } }),
    ],
    ['no choices', () => ok(completion({ choices: [] }))],
    ['a null message content', () => ok(completion({ content: null }))],
    ['a choice without a message', () => ok(completion({ choices: [{ index: 0, finish_reason: 'stop' }] }))],
  ];
  for (const [label, reply] of notCompletions) {
    it(`answers upstream_error (502) for a 200 that is not a completion: ${label}`, async () => {
      const { fetch } = scriptedFetch(reply());
      const error = await model(fetch)
        .complete(REQUEST)
        .then(
          () => assert.fail('expected a rejection'),
          (reason: unknown) => reason,
        );
      assert.ok(error instanceof UpstreamError, String(error));
      assert.equal(error.status, 502);
      assert.equal(error.code, 'upstream_error');
      assert.match(error.detail, /not a chat completion/);
    });
  }

  it('replaces unpaired surrogates and NUL in the reply with U+FFFD, keeping pairs', async () => {
    const { fetch } = scriptedFetch(ok(completion({ content: 'a\ud800b\u0000c\udfffd😀' })));
    const { content } = await model(fetch).complete(REQUEST);
    assert.equal(content, 'a\ufffdb\ufffdc\ufffdd😀');
  });
});

// ---- errors ------------------------------------------------------------------------------------

describe('OpenAiChatModel: errors', () => {
  it('turns a 400 content_filter (ResponsibleAIPolicyViolation) into ContentFilteredError with the categories', async () => {
    const { fetch, sent } = scriptedFetch(contentFiltered());
    const error = await model(fetch)
      .complete(REQUEST)
      .then(
        () => assert.fail('expected a rejection'),
        (reason: unknown) => reason,
      );
    assert.ok(error instanceof ContentFilteredError);
    assert.equal(error.status, 422);
    assert.equal(error.code, 'content_filtered');
    assert.deepEqual(error.extensions.categories, CONTENT_FILTER_RESULT);
    assert.equal(sent.length, 1, 'a 400 is not retried');
  });

  it('turns a 400 context_length_exceeded into ContextLengthExceededError', async () => {
    const { fetch, sent } = scriptedFetch(contextTooLong());
    await assert.rejects(model(fetch).complete(REQUEST), (error: unknown) => {
      assert.ok(error instanceof ContextLengthExceededError);
      assert.equal(error.status, 400);
      assert.equal(error.code, 'context_length_exceeded');
      return true;
    });
    assert.equal(sent.length, 1);
  });

  it('lets the SDK retry a 429 (honouring retry-after-ms) and returns the reply that follows', async () => {
    const { fetch, sent } = scriptedFetch(rateLimited({ 'retry-after-ms': '1' }), ok());
    const reply = await model(fetch).complete(REQUEST);
    assert.equal(reply.content, 'Hello!');
    assert.equal(sent.length, 2);
    assert.equal(sent[1]?.headers.get('x-stainless-retry-count'), '1');
  });

  it('turns a 429 that outlasts the retries into RateLimitedError upstream_rate_limited', async () => {
    const { fetch, sent } = scriptedFetch(
      rateLimited({ 'retry-after-ms': '1' }),
      rateLimited({ 'retry-after-ms': '1' }),
      rateLimited({ 'retry-after-ms': '1' }),
    );
    await assert.rejects(model(fetch, { maxRetries: 2 }).complete(REQUEST), (error: unknown) => {
      assert.ok(error instanceof RateLimitedError);
      assert.equal(error.status, 429);
      assert.equal(error.code, 'upstream_rate_limited');
      assert.equal(error.headers['Retry-After'], '1', 'a sub-second wait rounds up to one second');
      return true;
    });
    assert.equal(sent.length, 3, 'one call and two retries');
  });

  const retryAfterCases: Array<[Record<string, string>, string]> = [
    [{ 'retry-after-ms': '2500' }, '3'],
    [{ 'retry-after': '7' }, '7'],
    [{ 'retry-after-ms': '4000', 'retry-after': '9' }, '4'],
    [{}, '10'],
  ];
  for (const [headers, expected] of retryAfterCases) {
    it(`passes on the upstream wait as Retry-After ${expected} (${JSON.stringify(headers)})`, async () => {
      const { fetch } = scriptedFetch(rateLimited(headers));
      await assert.rejects(model(fetch, { maxRetries: 0 }).complete(REQUEST), (error: unknown) => {
        assert.ok(error instanceof RateLimitedError);
        assert.equal(error.headers['Retry-After'], expected);
        assert.equal(error.extensions.retryAfterSeconds, Number(expected));
        return true;
      });
    });
  }

  it('turns a 500 that outlasts the retries into 502 upstream_error', async () => {
    const serverError = () =>
      azureError(500, { code: 'InternalServerError', message: 'The server had an error.' }, { 'retry-after-ms': '1' });
    const { fetch, sent } = scriptedFetch(serverError(), serverError());
    const error = await model(fetch, { maxRetries: 1 })
      .complete(REQUEST)
      .catch((reason: unknown) => reason);
    assertUpstream(error, 'upstream_error', 502);
    assert.equal(sent.length, 2, 'the SDK retried the 500 once');
  });

  it('turns a 503 into 503 upstream_unavailable with a Retry-After', async () => {
    const { fetch } = scriptedFetch(
      azureError(503, { code: 'ServiceUnavailable', message: 'The service is busy.' }, { 'retry-after': '4' }),
    );
    const error = await model(fetch, { maxRetries: 0 })
      .complete(REQUEST)
      .catch((reason: unknown) => reason);
    assertUpstream(error, 'upstream_unavailable', 503);
    assert.equal(error.headers['Retry-After'], '4');
  });

  for (const status of [401, 403]) {
    it(`turns a ${status} into 502 upstream_error without the key, even when the answer echoes it`, async () => {
      const { fetch, sent } = scriptedFetch(
        azureError(status, { code: String(status), message: `Access denied for key ${API_KEY}.` }),
      );
      const error = await model(fetch)
        .complete(REQUEST)
        .catch((reason: unknown) => reason);
      assertUpstream(error, 'upstream_error', 502);
      assert.match(error.detail, /credentials/);
      assertNoKey(error);
      assert.equal(sent.length, 1, `a ${status} is not retried`);
    });
  }

  it('turns a 404 into 502 upstream_error naming the deployment setting', async () => {
    const { fetch } = scriptedFetch(
      azureError(404, { code: 'DeploymentNotFound', message: 'The API deployment for this resource does not exist.' }),
    );
    const error = await model(fetch)
      .complete(REQUEST)
      .catch((reason: unknown) => reason);
    assertUpstream(error, 'upstream_error', 502);
    assert.match(error.detail, /AZURE_OPENAI_DEPLOYMENT/);
  });

  it('turns a refused connection into 503 upstream_unavailable', async () => {
    const refused = async () => {
      const cause = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:443'), { code: 'ECONNREFUSED' });
      throw new TypeError('fetch failed', { cause });
    };
    const { fetch, sent } = scriptedFetch(refused);
    const error = await model(fetch, { maxRetries: 0 })
      .complete(REQUEST)
      .catch((reason: unknown) => reason);
    assertUpstream(error, 'upstream_unavailable', 503);
    assert.equal(error.headers['Retry-After'], '5');
    assert.equal(sent.length, 1);
  });

  it('turns a model that never answers into 504 upstream_timeout after timeoutMs, aborting the fetch', async () => {
    const { fetch, sent } = scriptedFetch(hanging, hanging, hanging);
    const error = await model(fetch, { timeoutMs: 50, maxRetries: 2 })
      .complete(REQUEST)
      .catch((reason: unknown) => reason);
    assertUpstream(error, 'upstream_timeout', 504);
    assert.match(error.detail, /50 ms/);
    assert.equal(sent.length, 1, 'the deadline covers the retries too');
    assert.equal(sent[0]?.signal?.aborted, true, 'the pending fetch was aborted');
  });

  it('passes the caller’s abort through as the SDK’s abort error, not as a 5xx', async () => {
    const caller = new AbortController();
    const { fetch, sent } = scriptedFetch((request) => {
      setImmediate(() => caller.abort(new Error('The client disconnected.')));
      return hanging(request);
    });
    const error = await model(fetch)
      .complete(REQUEST, caller.signal)
      .catch((reason: unknown) => reason);
    assert.ok(error instanceof OpenAI.APIUserAbortError, `expected APIUserAbortError, got ${String(error)}`);
    assert.equal(error instanceof ChatError, false);
    assert.equal(sent.length, 1, 'an abort is not retried');
    assert.equal(sent[0]?.signal?.aborted, true);
  });

  it('does not call the model at all for a caller signal that is already aborted', async () => {
    const caller = new AbortController();
    caller.abort(new Error('The client disconnected.'));
    const { fetch, sent } = scriptedFetch(hanging);
    const error = await model(fetch, { timeoutMs: 200 })
      .complete(REQUEST, caller.signal)
      .catch((reason: unknown) => reason);
    assert.ok(error instanceof OpenAI.APIUserAbortError, `expected APIUserAbortError, got ${String(error)}`);
    assert.equal(sent.length, 0);
  });

  it('turns a token function that cannot get a token into 502 upstream_error', async () => {
    const unavailable = async (): Promise<string> => {
      const error = new Error('ManagedIdentityCredential: no managed identity endpoint found.');
      error.name = 'CredentialUnavailableError';
      throw error;
    };
    const { fetch, sent } = scriptedFetch(ok());
    const error = await model(fetch, { apiKey: unavailable })
      .complete(REQUEST)
      .catch((reason: unknown) => reason);
    assertUpstream(error, 'upstream_error', 502);
    assert.match(error.detail, /managed identity/);
    assert.equal(sent.length, 0);
  });

  it('never puts the key in an error, whatever the upstream answer says', async () => {
    const echo = { message: `Echoing your key: ${API_KEY}` };
    const answers: Reply[] = [
      azureError(400, { ...echo, code: 'content_filter', innererror: { code: 'ResponsibleAIPolicyViolation' } }),
      azureError(400, { ...echo, code: 'context_length_exceeded' }),
      azureError(400, { ...echo, code: 'invalid_value' }),
      azureError(401, { ...echo, code: '401' }),
      azureError(403, { ...echo, code: '403' }),
      azureError(404, { ...echo, code: 'DeploymentNotFound' }),
      azureError(408, { ...echo, code: 'timeout' }),
      azureError(429, { ...echo, code: '429' }),
      azureError(500, { ...echo, code: 'InternalServerError' }),
      azureError(503, { ...echo, code: 'ServiceUnavailable' }),
      new Response(`plain text echoing ${API_KEY}`, { status: 502 }),
      async () => {
        throw new TypeError('fetch failed', { cause: new Error(`socket closed for ${API_KEY}`) });
      },
    ];
    for (const answer of answers) {
      const { fetch } = scriptedFetch(answer);
      const error = await model(fetch, { maxRetries: 0 })
        .complete(REQUEST)
        .catch((reason: unknown) => reason);
      assert.ok(error instanceof ChatError, `expected a ChatError, got ${String(error)}`);
      assertNoKey(error);
    }
  });
});

// ---- streaming ---------------------------------------------------------------------------------

describe('OpenAiChatModel: streaming', () => {
  it('yields the deltas in order, then one done with the finish reason and usage', async () => {
    const { fetch, sent } = scriptedFetch(
      eventStream(
        sseBody(
          [
            PROMPT_FILTER_CHUNK,
            chunk({ role: 'assistant', content: '' }),
            chunk({ content: 'Hel' }),
            chunk({ content: 'lo' }),
            chunk({ content: '!' }),
            chunk({}, 'stop'),
            USAGE_CHUNK,
            '[DONE]',
          ],
          { kind: 'close' },
        ),
      ),
    );
    const { received, error } = await collect(model(fetch).stream(REQUEST));
    assert.equal(error, undefined);
    assert.deepEqual(received, [
      { type: 'delta', content: 'Hel' },
      { type: 'delta', content: 'lo' },
      { type: 'delta', content: '!' },
      {
        type: 'done',
        finishReason: 'stop',
        usage: { promptTokens: 1_300, completionTokens: 3, totalTokens: 1_303, cachedPromptTokens: 1_152 },
        responseId: 'chatcmpl-1',
        responseModel: 'gpt-4o-2024-11-20',
      },
    ]);

    const body = sent[0]?.body ?? {};
    assert.equal(sent[0]?.url, CHAT_URL);
    assert.equal(body.stream, true);
    assert.deepEqual(body.stream_options, { include_usage: true });
    assert.equal(body.max_tokens, 256);
  });

  it('reports finish reason length and no usage when the stream carries none', async () => {
    const { fetch } = scriptedFetch(
      eventStream(sseBody([chunk({ content: 'Partial' }), chunk({}, 'length'), '[DONE]'], { kind: 'close' })),
    );
    const { received, error } = await collect(model(fetch).stream(REQUEST));
    assert.equal(error, undefined);
    assert.deepEqual(received, [
      { type: 'delta', content: 'Partial' },
      {
        type: 'done',
        finishReason: 'length',
        responseId: 'chatcmpl-1',
        responseModel: 'gpt-4o-2024-11-20',
      },
    ]);
  });

  it('keeps a surrogate pair split across two deltas whole and replaces unpaired ones and NUL', async () => {
    const { fetch } = scriptedFetch(
      eventStream(
        sseBody(
          [
            chunk({ content: 'a\ud83d' }),
            chunk({ content: '\ude00b\u0000' }),
            chunk({ content: 'c\ud800' }),
            chunk({}, 'stop'),
            '[DONE]',
          ],
          { kind: 'close' },
        ),
      ),
    );
    const { received, error } = await collect(model(fetch).stream(REQUEST));
    assert.equal(error, undefined);
    const text = received.flatMap((item) => (item.type === 'delta' ? [item.content] : [])).join('');
    assert.equal(text, 'a😀b\ufffdc\ufffd');
    for (const item of received)
      if (item.type === 'delta') assert.ok(isStorableText(item.content), JSON.stringify(item));
  });

  const breaks: Array<[string, unknown]> = [
    // What undici raises when the socket closes mid-body.
    [
      'the connection drops (undici "terminated")',
      new TypeError('terminated', { cause: new Error('other side closed') }),
    ],
    ['the body fails some other way', new Error('Body read failed')],
  ];
  for (const [label, bodyError] of breaks) {
    it(`surfaces upstream_error after the deltas already sent when ${label}`, async () => {
      const { fetch } = scriptedFetch(
        eventStream(
          sseBody([chunk({ content: 'One' }), chunk({ content: 'Two' })], { kind: 'error', error: bodyError }),
        ),
      );
      const { received, error } = await collect(model(fetch).stream(REQUEST));
      assert.deepEqual(received, [
        { type: 'delta', content: 'One' },
        { type: 'delta', content: 'Two' },
      ]);
      assertUpstream(error, 'upstream_error', 502);
    });
  }

  it('surfaces upstream_error for a malformed event after the deltas already sent', async () => {
    const { fetch } = scriptedFetch(eventStream(sseBody([chunk({ content: 'One' }), '{not json'], { kind: 'close' })));
    // The SDK logs the unparsable event at error level; keep the test output clean.
    const logLevel = process.env.OPENAI_LOG;
    process.env.OPENAI_LOG = 'off';
    const chat = model(fetch);
    if (logLevel === undefined) delete process.env.OPENAI_LOG;
    else process.env.OPENAI_LOG = logLevel;
    const { received, error } = await collect(chat.stream(REQUEST));
    assert.deepEqual(received, [{ type: 'delta', content: 'One' }]);
    assertUpstream(error, 'upstream_error', 502);
  });

  it('surfaces upstream_error, not done, when the stream closes before a finish reason', async () => {
    const { fetch } = scriptedFetch(
      eventStream(sseBody([chunk({ content: 'One' }), chunk({ content: 'Two' })], { kind: 'close' })),
    );
    const { received, error } = await collect(model(fetch).stream(REQUEST));
    assert.deepEqual(received, [
      { type: 'delta', content: 'One' },
      { type: 'delta', content: 'Two' },
    ]);
    assertUpstream(error, 'upstream_error', 502);
  });

  it('ends with upstream_timeout, not done, when the deadline passes mid-reply', async () => {
    const { fetch, sent } = scriptedFetch((request) =>
      Promise.resolve(
        eventStream(
          sseBody([chunk({ content: 'One' }), chunk({ content: 'Two' })], { kind: 'hang', signal: request.signal }),
        ),
      ),
    );
    const { received, error } = await collect(model(fetch, { timeoutMs: 50 }).stream(REQUEST));
    assert.deepEqual(received, [
      { type: 'delta', content: 'One' },
      { type: 'delta', content: 'Two' },
    ]);
    assertUpstream(error, 'upstream_timeout', 504);
    assert.equal(sent[0]?.signal?.aborted, true);
  });

  it('ends with the SDK’s abort error, not done, when the caller aborts mid-reply', async () => {
    const caller = new AbortController();
    const { fetch } = scriptedFetch((request) =>
      Promise.resolve(
        eventStream(
          sseBody([chunk({ content: 'One' }), chunk({ content: 'Two' })], { kind: 'hang', signal: request.signal }),
        ),
      ),
    );
    const received: CompletionChunk[] = [];
    let failure: unknown;
    try {
      for await (const item of model(fetch).stream(REQUEST, caller.signal)) {
        received.push(item);
        if (received.length === 2) caller.abort(new Error('The client disconnected.'));
      }
    } catch (error) {
      failure = error;
    }
    assert.deepEqual(received, [
      { type: 'delta', content: 'One' },
      { type: 'delta', content: 'Two' },
    ]);
    assert.ok(failure instanceof OpenAI.APIUserAbortError, `expected APIUserAbortError, got ${String(failure)}`);
  });

  it('maps an error answer before the stream starts like complete() does', async () => {
    const { fetch } = scriptedFetch(contentFiltered());
    const { received, error } = await collect(model(fetch).stream(REQUEST));
    assert.deepEqual(received, []);
    assert.ok(error instanceof ContentFilteredError);
  });
});

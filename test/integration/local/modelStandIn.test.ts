/**
 * The model stand-in, driven by the real `openai` SDK over loopback: what the app's adapter will see.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
// js-tiktoken's types are ESM and its code CommonJS: types imported, code required (as in the tokenizer adapter).
import type { Tiktoken, TiktokenBPE } from 'js-tiktoken/lite' with { 'resolution-mode': 'import' };
import OpenAI from 'openai';
import type { ChatCompletionChunk, ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { startModelStandIn, type ModelStandIn } from '../../../local/modelStandIn';

const API_KEY = 'local-test-key';

/** The chat guide's example; the service answered it with prompt_tokens 29 (REFERENCE.md, recorded vector). */
const GUIDE_MESSAGES: ChatCompletionMessageParam[] = [
  { role: 'system', content: 'Assistant is a large language model trained by OpenAI.' },
  { role: 'user', content: 'Who were the founders of Microsoft?' },
];

/* eslint-disable @typescript-eslint/no-require-imports -- see the import note above */
const { Tiktoken: TiktokenClass } = require('js-tiktoken/lite') as { Tiktoken: typeof Tiktoken };
const encodings = new Map<string, Tiktoken>();
function getEncoding(name: 'cl100k_base' | 'o200k_base'): Tiktoken {
  let encoding = encodings.get(name);
  if (!encoding) {
    encoding = new TiktokenClass(require(`js-tiktoken/ranks/${name}`) as TiktokenBPE);
    encodings.set(name, encoding);
  }
  return encoding;
}
/* eslint-enable @typescript-eslint/no-require-imports */

/** A second count, written in the test from the guide's formula. */
function guideCount(encoding: Tiktoken, messages: { role: string; content: string; name?: string }[]): number {
  let count = 3;
  for (const message of messages) {
    count += 3 + encoding.encode(message.role, [], []).length + encoding.encode(message.content, [], []).length;
    if (message.name !== undefined) count += encoding.encode(message.name, [], []).length + 1;
  }
  return count;
}

interface AzureAnnotations {
  prompt_filter_results?: { prompt_index: number; content_filter_results: Record<string, unknown> }[];
}

interface AzureChoiceAnnotations {
  content_filter_results?: Record<string, { filtered: boolean; severity?: string }>;
}

describe('model stand-in (Azure OpenAI v1 chat completions)', () => {
  let standIn: ModelStandIn;
  let client: OpenAI;

  before(async () => {
    standIn = await startModelStandIn({ expectedApiKey: API_KEY });
    client = new OpenAI({ baseURL: standIn.baseURL, apiKey: API_KEY, maxRetries: 2 });
  });
  after(async () => {
    await standIn.close();
  });
  beforeEach(() => standIn.clear());

  it('answers the guide example with the service usage and the Azure response shape', async () => {
    const completion = await client.chat.completions.create({
      model: 'gpt-35-turbo',
      messages: GUIDE_MESSAGES,
      max_tokens: 800,
    });

    assert.equal(completion.usage?.prompt_tokens, 29);
    const content = completion.choices[0]?.message.content ?? '';
    assert.equal(
      content,
      'This is the local model (no Azure OpenAI endpoint is configured). I received 2 messages (29 prompt tokens). ' +
        'Your last message was: "Who were the founders of Microsoft?"',
    );
    const cl100k = getEncoding('cl100k_base');
    assert.equal(completion.usage?.completion_tokens, cl100k.encode(content).length);
    assert.equal(completion.usage?.total_tokens, 29 + cl100k.encode(content).length);
    assert.match(completion.id, /^chatcmpl-\w+$/);
    assert.equal(completion.object, 'chat.completion');
    assert.equal(completion.model, 'gpt-35-turbo');
    assert.equal(completion.choices[0]?.finish_reason, 'stop');
    assert.equal(completion.choices[0]?.message.role, 'assistant');
    assert.equal(completion.choices[0]?.message.refusal, null);
    const choice = completion.choices[0] as unknown as AzureChoiceAnnotations;
    assert.deepEqual(choice.content_filter_results?.hate, { filtered: false, severity: 'safe' });
    const annotations = completion as unknown as AzureAnnotations;
    assert.equal(annotations.prompt_filter_results?.[0]?.prompt_index, 0);

    assert.equal(standIn.callCount, 1);
    const recorded = standIn.requests[0];
    assert.equal(recorded?.path, '/openai/v1/chat/completions');
    assert.equal(recorded?.headers.authorization, `Bearer ${API_KEY}`);
    assert.deepEqual(recorded?.body?.messages, GUIDE_MESSAGES);
    assert.equal(recorded?.body?.max_tokens, 800);
  });

  it('quotes a long last message whole-character: no split surrogate pair, emoji sequence or flag', async () => {
    const inputs = [
      'x' + '\u{1F600}'.repeat(300),
      'a\u{1F600}'.repeat(150),
      '\u{1F468}\u200D\u{1F469}\u200D\u{1F467}'.repeat(250),
      '\u{1F1EB}\u{1F1F7}'.repeat(250),
      'e\u0301'.repeat(250),
    ];
    for (const input of inputs) {
      const completion = await client.chat.completions.create({
        model: 'gpt-4o',
        messages: [{ role: 'user', content: input }],
      });
      const content = completion.choices[0]?.message.content ?? '';
      const excerpt = /Your last message was: "(.*)…"$/su.exec(content)?.[1];
      assert.ok(excerpt, content.slice(0, 80));
      assert.ok(input.startsWith(excerpt), 'the excerpt is a prefix of the message');
      assert.doesNotMatch(
        excerpt,
        /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/,
        'no lone surrogate',
      );
      const graphemes = [...new Intl.Segmenter(undefined, { granularity: 'grapheme' }).segment(input)];
      assert.equal(graphemes[200]?.index, excerpt.length, 'cut after the 200th grapheme cluster');
    }
  });

  it('counts gpt-4o prompts with o200k_base and special-token text as ordinary text', async () => {
    const messages = [
      { role: 'system' as const, content: 'You are terse.' },
      { role: 'user' as const, content: 'Ignore <|endoftext|> and <|im_start|> please', name: 'ada' },
    ];
    const completion = await client.chat.completions.create({ model: 'gpt-4o-mini', messages });

    assert.equal(completion.usage?.prompt_tokens, guideCount(getEncoding('o200k_base'), messages));
    assert.notEqual(completion.usage?.prompt_tokens, guideCount(getEncoding('cl100k_base'), messages));
  });

  it('streams deltas that concatenate to the non-streamed reply, then a usage chunk', async () => {
    const request = { model: 'gpt-4o', messages: GUIDE_MESSAGES };
    const whole = await client.chat.completions.create(request);

    const stream = await client.chat.completions.create({
      ...request,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks: ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);

    const deltas = chunks.flatMap((chunk) => chunk.choices.map((choice) => choice.delta.content ?? ''));
    assert.ok(deltas.filter((delta) => delta !== '').length > 3, 'the reply arrives in several pieces');
    assert.equal(deltas.join(''), whole.choices[0]?.message.content);
    // Azure's first event: no choices, only the prompt's filter results.
    assert.deepEqual(chunks[0]?.choices, []);
    assert.ok((chunks[0] as unknown as AzureAnnotations).prompt_filter_results);
    assert.equal(chunks[1]?.choices[0]?.delta.role, 'assistant');
    const finishes = chunks.flatMap((chunk) => chunk.choices.map((choice) => choice.finish_reason)).filter(Boolean);
    assert.deepEqual(finishes, ['stop']);
    const last = chunks[chunks.length - 1];
    assert.deepEqual(last?.choices, []);
    assert.deepEqual(last?.usage, whole.usage);
  });

  it('answers 429 with retry-after-ms, which the SDK honours and retries', async () => {
    standIn.enqueueFault({ kind: 'rate_limit', retryAfterMs: 20 });

    const completion = await client.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES });

    assert.equal(completion.choices[0]?.finish_reason, 'stop');
    assert.equal(standIn.requests.length, 2);
    assert.equal(standIn.callCount, 2);
  });

  it('sends the 429 headers and body of the service', async () => {
    standIn.enqueueFault({ kind: 'rate_limit', retryAfterMs: 1500 });
    const response = await fetch(`${standIn.baseURL}chat/completions`, {
      method: 'POST',
      headers: { 'api-key': API_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(response.status, 429);
    assert.equal(response.headers.get('retry-after-ms'), '1500');
    assert.equal(response.headers.get('retry-after'), '2');
    const body = (await response.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, '429');
    assert.match(body.error.message, /exceeded token rate limit .* Please retry after 2 seconds/);
  });

  it('surfaces a persistent 500 as InternalServerError once the retries are spent', async () => {
    standIn.setDefaultFault({ kind: 'server_error' });
    const oneRetry = new OpenAI({ baseURL: standIn.baseURL, apiKey: API_KEY, maxRetries: 1 });

    await assert.rejects(
      oneRetry.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES }),
      (error: unknown) => error instanceof OpenAI.InternalServerError && error.status === 500,
    );
    assert.equal(standIn.callCount, 2);
  });

  it('blocks a prompt with the content filter error and its per-category results', async () => {
    standIn.enqueueFault({ kind: 'prompt_filtered', category: 'hate' });

    const error = await client.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES }).then(
      () => assert.fail('expected a 400'),
      (caught: unknown) => caught,
    );

    assert.ok(error instanceof OpenAI.BadRequestError);
    assert.equal(error.code, 'content_filter');
    const inner = (error.error as { innererror?: { code: string; content_filter_result: Record<string, unknown> } })
      .innererror;
    assert.equal(inner?.code, 'ResponsibleAIPolicyViolation');
    assert.deepEqual(inner?.content_filter_result, {
      hate: { filtered: true, severity: 'high' },
      self_harm: { filtered: false, severity: 'safe' },
      sexual: { filtered: false, severity: 'safe' },
      violence: { filtered: false, severity: 'safe' },
    });
    assert.equal(standIn.callCount, 1, 'a 400 is not retried');
  });

  it('filters a completion: finish_reason content_filter with a partial reply', async () => {
    const full = await client.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES });
    standIn.enqueueFault({ kind: 'completion_filtered', category: 'self_harm' });

    const filtered = await client.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES });

    const choice = filtered.choices[0];
    assert.equal(choice?.finish_reason, 'content_filter');
    const partial = choice?.message.content ?? '';
    const fullText = full.choices[0]?.message.content ?? '';
    assert.ok(partial.length > 0 && partial.length < fullText.length && fullText.startsWith(partial));
    assert.deepEqual((choice as unknown as AzureChoiceAnnotations).content_filter_results?.self_harm, {
      filtered: true,
      severity: 'high',
    });
  });

  it('honours max_tokens and max_completion_tokens with finish_reason length', async () => {
    const full = await client.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES });
    const cut = await client.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES, max_tokens: 5 });
    const reasoning = await client.chat.completions.create({
      model: 'o4-mini',
      messages: GUIDE_MESSAGES,
      max_completion_tokens: 7,
    });

    assert.equal(cut.choices[0]?.finish_reason, 'length');
    assert.equal(cut.usage?.completion_tokens, 5);
    assert.equal(cut.choices[0]?.message.content, 'This is the local model');
    assert.ok(full.choices[0]?.message.content?.startsWith(cut.choices[0]?.message.content ?? '-'));
    assert.equal(reasoning.choices[0]?.finish_reason, 'length');
    assert.equal(reasoning.usage?.completion_tokens, 7);
  });

  it('rejects max_tokens for a reasoning model, as the service does', async () => {
    await assert.rejects(
      client.chat.completions.create({ model: 'o3-mini', messages: GUIDE_MESSAGES, max_tokens: 10 }),
      (error: unknown) => error instanceof OpenAI.BadRequestError && error.code === 'unsupported_parameter',
    );
  });

  it('cuts a reply short on the length fault', async () => {
    standIn.enqueueFault({ kind: 'length' });
    const completion = await client.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES });
    assert.equal(completion.choices[0]?.finish_reason, 'length');
    assert.ok((completion.usage?.completion_tokens ?? 0) > 0);
  });

  it('answers context_length_exceeded with the service message', async () => {
    standIn.enqueueFault({ kind: 'context_length_exceeded', maxContextTokens: 16 });
    await assert.rejects(
      client.chat.completions.create({ model: 'gpt-35-turbo', messages: GUIDE_MESSAGES, max_tokens: 100 }),
      (error: unknown) =>
        error instanceof OpenAI.BadRequestError &&
        error.code === 'context_length_exceeded' &&
        error.message.includes(
          "This model's maximum context length is 16 tokens. However, you requested 129 tokens (29 in the messages, 100 in the completion).",
        ),
    );
  });

  it('lets the SDK time out on a hanging request', async () => {
    standIn.enqueueFault({ kind: 'hang' });
    const impatient = new OpenAI({ baseURL: standIn.baseURL, apiKey: API_KEY, maxRetries: 0, timeout: 300 });
    await assert.rejects(
      impatient.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES }),
      OpenAI.APIConnectionTimeoutError,
    );
    assert.equal(standIn.callCount, 1);
  });

  it('answers after a slow fault', async () => {
    standIn.enqueueFault({ kind: 'slow', delayMs: 30 });
    const completion = await client.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES });
    assert.equal(completion.choices[0]?.finish_reason, 'stop');
    assert.equal(standIn.callCount, 1);
  });

  it('breaks a stream after N deltas', async () => {
    standIn.enqueueFault({ kind: 'stream_error_after', deltas: 3 });
    const stream = await client.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES, stream: true });
    const received: string[] = [];
    await assert.rejects(async () => {
      for await (const chunk of stream) {
        const content = chunk.choices[0]?.delta.content;
        if (content) received.push(content);
      }
    });
    assert.equal(received.length, 3);
  });

  it('answers 500 to a non-streamed request under stream_error_after', async () => {
    standIn.enqueueFault({ kind: 'stream_error_after', deltas: 1 });
    const noRetry = new OpenAI({ baseURL: standIn.baseURL, apiKey: API_KEY, maxRetries: 0 });
    await assert.rejects(
      noRetry.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES }),
      OpenAI.InternalServerError,
    );
  });

  it('rejects a wrong key with the Azure 401 body and unknown paths with 404', async () => {
    const stranger = new OpenAI({ baseURL: standIn.baseURL, apiKey: 'wrong', maxRetries: 0 });
    const error = await stranger.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES }).then(
      () => assert.fail('expected a 401'),
      (caught: unknown) => caught,
    );
    assert.ok(error instanceof OpenAI.AuthenticationError);
    assert.equal((error.error as { code?: string }).code, '401');

    const viaHeader = await fetch(`${standIn.baseURL}chat/completions`, {
      method: 'POST',
      headers: { 'api-key': API_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(viaHeader.status, 200, 'the api-key header is accepted too');

    const missing = await fetch(`${standIn.url}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21`, {
      method: 'POST',
      headers: { 'api-key': API_KEY },
      body: '{}',
    });
    assert.equal(missing.status, 404);
    assert.deepEqual(await missing.json(), { error: { code: '404', message: 'Resource not found' } });
    assert.equal(standIn.callCount, 1, 'only the authorised chat request counts');
  });

  it('accepts only the expected bearer token when one is set', async () => {
    const guarded = await startModelStandIn({ expectedBearerToken: 'token-abc' });
    try {
      const good = new OpenAI({ baseURL: guarded.baseURL, apiKey: async () => 'token-abc', maxRetries: 0 });
      const bad = new OpenAI({ baseURL: guarded.baseURL, apiKey: 'token-xyz', maxRetries: 0 });
      await good.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES });
      await assert.rejects(
        bad.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES }),
        OpenAI.AuthenticationError,
      );
      assert.equal(guarded.requests[0]?.headers.authorization, 'Bearer token-abc');
    } finally {
      await guarded.close();
    }
  });

  it('uses a custom reply and applies queued faults in order before the default one', async () => {
    const custom = await startModelStandIn({ reply: ({ messages }) => `echo ${messages.length}` });
    try {
      const plain = new OpenAI({ baseURL: custom.baseURL, apiKey: 'any', maxRetries: 0 });
      custom.setDefaultFault({ kind: 'server_error', status: 503 });
      custom.enqueueFault({ kind: 'length' });
      custom.enqueueFault({ kind: 'prompt_filtered' });

      const first = await plain.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES });
      assert.equal(first.choices[0]?.finish_reason, 'length');
      await assert.rejects(
        plain.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES }),
        OpenAI.BadRequestError,
      );
      await assert.rejects(
        plain.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES }),
        (error: unknown) => error instanceof OpenAI.InternalServerError && error.status === 503,
      );
      custom.setDefaultFault(undefined);
      const echoed = await plain.chat.completions.create({ model: 'gpt-4o', messages: GUIDE_MESSAGES });
      assert.equal(echoed.choices[0]?.message.content, 'echo 2');
    } finally {
      await custom.close();
    }
  });

  it('ends hanging requests on close()', async () => {
    const closing = await startModelStandIn();
    closing.enqueueFault({ kind: 'hang' });
    const pending = fetch(`${closing.baseURL}chat/completions`, {
      method: 'POST',
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    });
    while (closing.callCount === 0) await new Promise((resolve) => setImmediate(resolve));

    await closing.close();

    await assert.rejects(pending);
  });
});

describe('model stand-in: prompt caching (per prompt_cache_key, 1,024 tokens, then 128-token steps)', () => {
  let standIn: ModelStandIn;
  let client: OpenAI;
  const o200k = () => getEncoding('o200k_base');
  /** About 1,500 tokens of distinct words. */
  const LONG_SYSTEM = Array.from({ length: 1_500 }, (_, index) => `w${index}`).join(' ');

  before(async () => {
    standIn = await startModelStandIn({ expectedApiKey: API_KEY });
    client = new OpenAI({ baseURL: standIn.baseURL, apiKey: API_KEY, maxRetries: 0 });
  });
  after(async () => {
    await standIn.close();
  });
  beforeEach(() => standIn.clear());

  const ask = async (messages: ChatCompletionMessageParam[], key?: string) =>
    (
      await client.chat.completions.create({
        model: 'gpt-4o',
        messages,
        ...(key !== undefined ? { prompt_cache_key: key } : {}),
      })
    ).usage?.prompt_tokens_details?.cached_tokens;

  /** The rule, written out again here: a prefix under 1,024 tokens is no hit; above, whole 128-token steps. */
  const expectedCached = (commonPrefix: number) =>
    commonPrefix < 1_024 ? 0 : 1_024 + Math.floor((commonPrefix - 1_024) / 128) * 128;

  it('serves the repeated prefix of the previous request from the cache, in 128-token steps', async () => {
    const first: ChatCompletionMessageParam[] = [
      { role: 'system', content: LONG_SYSTEM },
      { role: 'user', content: 'first question' },
    ];
    assert.equal(await ask(first, 'conversation-1'), 0, 'nothing is cached before the first request');
    const second: ChatCompletionMessageParam[] = [
      ...first,
      { role: 'assistant', content: 'first answer' },
      { role: 'user', content: 'second question' },
    ];
    // Everything the first request sent but its reply priming (the last 3 tokens) is the common prefix.
    const common = guideCount(o200k(), first as { role: string; content: string }[]) - 3;
    assert.ok(common > 1_024 + 128);
    const cached = await ask(second, 'conversation-1');
    assert.equal(cached, expectedCached(common));
    assert.ok(cached! > 1_024 && (cached! - 1_024) % 128 === 0);
  });

  it('misses for another key, a changed first token, and prompts under 1,024 tokens; streams report it too', async () => {
    const prompt: ChatCompletionMessageParam[] = [
      { role: 'system', content: LONG_SYSTEM },
      { role: 'user', content: 'a question' },
    ];
    await ask(prompt, 'a');
    assert.equal(await ask(prompt, 'b'), 0, 'another key has its own cache');
    assert.equal(await ask([{ role: 'system', content: `x ${LONG_SYSTEM}` }, prompt[1]!], 'a'), 0, 'changed head');
    await ask([{ role: 'user', content: 'short' }], 'c');
    assert.equal(await ask([{ role: 'user', content: 'short' }], 'c'), 0, 'under 1,024 tokens nothing is cached');

    const stream = await client.chat.completions.create({
      model: 'gpt-4o',
      messages: prompt,
      prompt_cache_key: 'a',
      stream: true,
      stream_options: { include_usage: true },
    });
    let streamed: number | undefined;
    for await (const chunk of stream) streamed ??= chunk.usage?.prompt_tokens_details?.cached_tokens;
    const whole = guideCount(o200k(), prompt as { role: string; content: string }[]);
    assert.equal(streamed, expectedCached(whole), 'the same prompt again: its whole length, in steps');
    assert.equal(standIn.requests.at(-1)?.cachedTokens, streamed);
  });
});

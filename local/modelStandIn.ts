/**
 * A loopback stand-in for the Azure OpenAI v1 chat completions endpoint (`{url}/openai/v1/chat/completions`).
 *
 * It answers deterministically ("This is the local model ...") with the service's response shapes: usage counted
 * the way the service counts, `finish_reason`, Azure's content-filter annotations, streaming chunks, and the error
 * bodies of 401/404/429/400/5xx. Faults can be switched on per request or persistently. Shared by the integration
 * tests, the benchmarks and `npm start` (as the local model), so it must not import node:test.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { getEncoder } from '../src/adapters/tiktokenTokenizer';
import { PromptCache, promptSequence, type PromptCacheOptions } from './promptCache';
import { SSE_DONE, startEventStream, writeEvent } from './sse';

// ---- Public types ------------------------------------------------------------------------------

export type ContentFilterCategory = 'hate' | 'sexual' | 'violence' | 'self_harm';

/** A condition to simulate. `enqueueFault` applies one to the next chat request; `setDefaultFault` to every one. */
export type ModelFault =
  /** 429 with `retry-after-ms` and/or `retry-after`. Default: both, one second. */
  | { kind: 'rate_limit'; retryAfterMs?: number; retryAfterSeconds?: number }
  | { kind: 'server_error'; status?: 500 | 502 | 503 }
  /** 400 `content_filter` / `ResponsibleAIPolicyViolation`; `category` (default `violence`) is filtered at high. */
  | { kind: 'prompt_filtered'; category?: ContentFilterCategory }
  /** 200 with `finish_reason: content_filter`; `content` defaults to the first half of the normal reply. */
  | { kind: 'completion_filtered'; category?: ContentFilterCategory; content?: string }
  /** 200 with `finish_reason: length`: the reply cut to half its tokens (or max_tokens, if smaller). */
  | { kind: 'length' }
  | { kind: 'slow'; delayMs: number }
  /** Never answers; `close()` ends the request. */
  | { kind: 'hang' }
  /** 400 `context_length_exceeded`; the limit quoted defaults to `contextWindowTokens` or one below the request. */
  | { kind: 'context_length_exceeded'; maxContextTokens?: number }
  /** A stream sends this many content deltas, then the socket is destroyed. Not streamed: 500. */
  | { kind: 'stream_error_after'; deltas: number }
  /**
   * A 200 that is not a chat completion (not streamed): an HTML page as text/html or labelled JSON, `choices: []`,
   * `content: null`, JSON cut short (`truncated`: a complete HTTP message; `cut`: the connection drops mid-body).
   */
  | { kind: 'not_a_completion'; variant: 'html' | 'html_as_json' | 'no_choices' | 'null_content' | 'truncated' | 'cut' }
  /** A normal completion without `usage` (streamed: no usage chunk even when asked for). */
  | { kind: 'no_usage' }
  /**
   * Answers `content` as it is, with `completionTokens` as its usage, without encoding it here (js-tiktoken is
   * quadratic in long pieces: a very long reply of long tokens would take minutes). The test counts the tokens.
   */
  | { kind: 'verbatim'; content: string; completionTokens: number };

export interface ContentPart {
  type: string;
  text?: string;
  [field: string]: unknown;
}

export interface StandInMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool';
  content: string | ContentPart[] | null;
  name?: string;
  [field: string]: unknown;
}

/** A chat completions request body after the stand-in checked it. Other fields are kept as sent. */
export interface ChatRequestBody {
  model: string;
  messages: StandInMessage[];
  max_tokens?: number;
  max_completion_tokens?: number;
  temperature?: number;
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
  [field: string]: unknown;
}

export interface RecordedRequest {
  method: string;
  /** Path without the query string. */
  path: string;
  query: Record<string, string>;
  headers: IncomingHttpHeaders;
  /** The raw body text as received. */
  rawBody: string;
  /** The chat request, once it parsed and passed the stand-in's checks; undefined otherwise. */
  body: ChatRequestBody | undefined;
  at: Date;
  /** The usage the stand-in reported for this request (answered requests only). */
  promptTokens?: number;
  cachedTokens?: number;
  completionTokens?: number;
}

/** What a custom reply function sees. */
export interface ReplyRequest {
  model: string;
  messages: StandInMessage[];
  promptTokens: number;
  body: ChatRequestBody;
  /** The function tools offered with the request (empty when none). */
  tools: StandInTool[];
}

/** A function tool as the request carries it. */
export interface StandInTool {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown> };
}

/** A reply that calls tools instead of (or besides) answering: `finish_reason` becomes `tool_calls`. */
export interface StandInToolReply {
  toolCalls: { id?: string; name: string; arguments: string }[];
  content?: string;
}

export interface ModelStandInOptions {
  /** Default 0: a free port. `npm start` uses 7072. */
  port?: number;
  /** Require `Authorization: Bearer <token>` (what a managed-identity token provider sends). */
  expectedBearerToken?: string;
  /** Require `api-key: <key>` or `Authorization: Bearer <key>` (the openai SDK sends its apiKey as Bearer). */
  expectedApiKey?: string;
  /** Replaces the default reply text (undefined: the default), or calls tools; truncation, usage and faults apply to text. */
  reply?: (
    request: ReplyRequest,
  ) => string | StandInToolReply | undefined | Promise<string | StandInToolReply | undefined>;
  /** Pause between streamed chunks. Default 0. */
  streamChunkDelayMs?: number;
  /** When set, a prompt plus max tokens above it gets `context_length_exceeded`, as the service would. */
  contextWindowTokens?: number;
  /** The prompt cache (per `prompt_cache_key`, see ./promptCache.ts); `false` reports no cached tokens. */
  promptCache?: PromptCacheOptions | false;
}

export interface ModelStandIn {
  /** The resource endpoint, e.g. `http://127.0.0.1:7072` (what AZURE_OPENAI_ENDPOINT would hold). */
  readonly url: string;
  /** `${url}/openai/v1/`: the openai SDK's `baseURL`. */
  readonly baseURL: string;
  readonly port: number;
  /** Every request received, in order (including rejected ones). */
  readonly requests: RecordedRequest[];
  /** Chat completion requests received (faulted ones included, unauthorised and unknown paths not). */
  readonly callCount: number;
  enqueueFault(fault: ModelFault): void;
  setDefaultFault(fault: ModelFault | undefined): void;
  /** Forgets recorded requests, the call count, queued faults, the default fault and the prompt cache. */
  clear(): void;
  /** Ends hanging requests and every connection, then stops listening. */
  close(): Promise<void>;
}

export const CHAT_COMPLETIONS_PATH = '/openai/v1/chat/completions';
export const DEFAULT_MODEL_STAND_IN_PORT = 7072;
const HOST = '127.0.0.1';
/** The echo quotes this many user-perceived characters (grapheme clusters) of the last message. */
const EXCERPT_CHARS = 200;
const GRAPHEMES = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

/** A line for logs: where the local model listens and how to point a client at it. */
export function describeStandIn(standIn: Pick<ModelStandIn, 'url' | 'baseURL'>): string {
  return `Local model (Azure OpenAI v1 stand-in) at ${standIn.url}: chat completions on ${standIn.baseURL}chat/completions`;
}

// ---- Token counting (independent of src/: it is what the tests check the app against) -------------

export type StandInEncoding = 'o200k_base' | 'cl100k_base';

/** cl100k_base for the gpt-3.5 and gpt-4 families (not gpt-4o / gpt-4.1 / gpt-4.5); o200k_base otherwise. */
export function encodingForModel(model: string): StandInEncoding {
  return /gpt-?3\.?5|gpt-?4(?![o.\d])/i.test(model) ? 'cl100k_base' : 'o200k_base';
}

/*
 * Counted with the app's own tokenizer adapter (js-tiktoken's ranks, the O(n log n) merge): the library's merge is
 * quadratic in a piece's length, and a 90,000-character word would stall the stand-in for minutes. Its ranks load on
 * first use, so `npm start` does not pay for an encoding nobody asks for.
 */
function encode(text: string, encoding: StandInEncoding): number[] {
  // Special-token text such as `<|endoftext|>` is ordinary text here, as the service treats message content.
  return getEncoder(encoding).encode(text);
}

function decodePrefix(tokens: number[], count: number, encoding: StandInEncoding): string {
  if (count <= 0) return '';
  // A cut inside a multi-byte character decodes to U+FFFD: drop that partial character.
  return getEncoder(encoding)
    .decode(tokens.slice(0, count))
    .replace(/\uFFFD+$/, '');
}

export function contentText(content: StandInMessage['content']): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((part) => (typeof part.text === 'string' ? part.text : '')).join('');
  return '';
}

/** Token ids of texts already seen, per encoding: the prompt cache compares whole prompts on every request. */
const tokenCache = new Map<string, number[]>();

function tokensOf(text: string, encoding: StandInEncoding): number[] {
  const key = `${encoding}\u0000${text}`;
  let tokens = tokenCache.get(key);
  if (tokens === undefined) {
    tokens = encode(text, encoding);
    if (tokenCache.size >= COUNT_CACHE_MAX_ENTRIES) tokenCache.clear();
    tokenCache.set(key, tokens);
  }
  return tokens;
}

/**
 * Counts of texts already seen, per encoding: a conversation resends its whole history on every turn, and
 * re-encoding it each time made the stand-in, not the app, dominate benchmarks of long conversations.
 */
const countCache = new Map<string, number>();
const COUNT_CACHE_MAX_ENTRIES = 20_000;

function countText(text: string, encoding: StandInEncoding): number {
  const key = `${encoding}\u0000${text}`;
  let count = countCache.get(key);
  if (count === undefined) {
    count = encode(text, encoding).length;
    if (countCache.size >= COUNT_CACHE_MAX_ENTRIES) countCache.clear();
    countCache.set(key, count);
  }
  return count;
}

/**
 * The guide's count: 3 per message, every role/content/name value encoded, 1 more per name, 3 to prime the reply.
 * As the cookbook's loop encodes every string value, a tool message's `tool_call_id` counts; of an assistant
 * message's `tool_calls` each function's name and arguments count (the convention the app documents).
 */
function countPromptTokens(messages: StandInMessage[], encoding: StandInEncoding): number {
  let count = 3;
  for (const message of messages) {
    count += 3;
    count += countText(message.role, encoding);
    count += countText(contentText(message.content), encoding);
    if (typeof message.name === 'string') count += countText(message.name, encoding) + 1;
    if (typeof message.tool_call_id === 'string') count += countText(message.tool_call_id, encoding);
    if (Array.isArray(message.tool_calls)) {
      for (const call of message.tool_calls as { function?: { name?: string; arguments?: string } }[]) {
        count += countText(call.function?.name ?? '', encoding) + countText(call.function?.arguments ?? '', encoding);
      }
    }
  }
  return count;
}

/**
 * The cookbook's `num_tokens_for_tools` ("How to count tokens with tiktoken", section 7), written out here on its
 * own: gpt-4o-family constants for o200k_base (function start 7), gpt-4 ones for cl100k_base (10).
 */
function countToolTokens(tools: StandInTool[], encoding: StandInEncoding): number {
  if (tools.length === 0) return 0;
  const funcInit = encoding === 'o200k_base' ? 7 : 10;
  const strip = (text: string) => (text.endsWith('.') ? text.slice(0, -1) : text);
  let count = 0;
  for (const { function: fn } of tools) {
    count += funcInit + countText(`${fn.name}:${strip(fn.description ?? '')}`, encoding);
    const properties = (fn.parameters?.['properties'] ?? {}) as Record<string, Record<string, unknown>>;
    const keys = Object.keys(properties);
    if (keys.length === 0) continue;
    count += 3;
    for (const key of keys) {
      count += 3;
      const property = properties[key] ?? {};
      if (Array.isArray(property['enum'])) {
        count -= 3;
        for (const item of property['enum']) count += 3 + countText(String(item), encoding);
      }
      const type = Array.isArray(property['type']) ? property['type'].join(',') : String(property['type'] ?? '');
      const description = typeof property['description'] === 'string' ? property['description'] : '';
      count += countText(`${key}:${type}:${strip(description)}`, encoding);
    }
  }
  return count + 12;
}

// ---- Response shapes -----------------------------------------------------------------------------

interface SeverityResult {
  filtered: boolean;
  severity: 'safe' | 'low' | 'medium' | 'high';
}

type CategoryResults = Record<ContentFilterCategory, SeverityResult>;

function categoryResults(filteredCategory?: ContentFilterCategory): CategoryResults {
  const safe = (): SeverityResult => ({ filtered: false, severity: 'safe' });
  const results: CategoryResults = { hate: safe(), self_harm: safe(), sexual: safe(), violence: safe() };
  if (filteredCategory) results[filteredCategory] = { filtered: true, severity: 'high' };
  return results;
}

function promptFilterResults(): unknown[] {
  return [
    {
      prompt_index: 0,
      content_filter_results: { ...categoryResults(), jailbreak: { filtered: false, detected: false } },
    },
  ];
}

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { audio_tokens: number; cached_tokens: number };
  completion_tokens_details: {
    accepted_prediction_tokens: number;
    audio_tokens: number;
    reasoning_tokens: number;
    rejected_prediction_tokens: number;
  };
}

function usageOf(promptTokens: number, completionTokens: number, cachedTokens: number): Usage {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { audio_tokens: 0, cached_tokens: cachedTokens },
    completion_tokens_details: {
      accepted_prediction_tokens: 0,
      audio_tokens: 0,
      reasoning_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
}

function completionId(): string {
  return `chatcmpl-${randomBytes(32).toString('base64url').replace(/[-_]/g, '').slice(0, 29)}`;
}

type FinishReason = 'stop' | 'length' | 'content_filter';

interface Reply {
  content: string;
  finishReason: FinishReason;
  completionTokens: number;
  filteredCategory?: ContentFilterCategory;
}

function defaultReplyText(messages: StandInMessage[], promptTokens: number): string {
  const last = messages[messages.length - 1];
  // Cut between user-perceived characters: never inside a surrogate pair, an emoji ZWJ sequence or a flag.
  const characters = Array.from(GRAPHEMES.segment(last ? contentText(last.content) : ''), (part) => part.segment);
  const excerpt =
    characters.length > EXCERPT_CHARS ? `${characters.slice(0, EXCERPT_CHARS).join('')}…` : characters.join('');
  const count = messages.length;
  return (
    `This is the local model (no Azure OpenAI endpoint is configured). ` +
    `I received ${count} message${count === 1 ? '' : 's'} (${promptTokens} prompt tokens). ` +
    `Your last message was: "${excerpt}"`
  );
}

function shapeReply(text: string, encoding: StandInEncoding, maxTokens: number | undefined, fault?: ModelFault): Reply {
  const tokens = encode(text, encoding);
  if (fault?.kind === 'completion_filtered') {
    const category = fault.category ?? 'violence';
    const content = fault.content ?? decodePrefix(tokens, Math.floor(tokens.length / 2), encoding);
    return {
      content,
      finishReason: 'content_filter',
      completionTokens: encode(content, encoding).length,
      filteredCategory: category,
    };
  }
  let limit = maxTokens ?? Number.POSITIVE_INFINITY;
  if (fault?.kind === 'length') limit = Math.min(limit, Math.max(1, Math.floor(tokens.length / 2)));
  if (tokens.length > limit) {
    return { content: decodePrefix(tokens, limit, encoding), finishReason: 'length', completionTokens: limit };
  }
  return { content: text, finishReason: 'stop', completionTokens: tokens.length };
}

/** Splits a reply into word-sized deltas that concatenate back to it exactly. */
function splitIntoDeltas(content: string): string[] {
  return content.match(/\s*\S+|\s+$/g) ?? [];
}

// ---- Errors (the service's bodies) ---------------------------------------------------------------

interface ErrorReply {
  status: number;
  body: { error: Record<string, unknown> };
  headers?: Record<string, string>;
}

function invalidRequest(message: string, param: string | null, code: string | null = null): ErrorReply {
  return { status: 400, body: { error: { message, type: 'invalid_request_error', param, code } } };
}

function unauthorized(sentBearer: boolean): ErrorReply {
  const message = sentBearer
    ? 'Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired.'
    : 'Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.';
  return { status: 401, body: { error: { code: '401', message } } };
}

function rateLimited(fault: Extract<ModelFault, { kind: 'rate_limit' }>): ErrorReply {
  const headers: Record<string, string> = {};
  let seconds: number;
  if (fault.retryAfterMs !== undefined) {
    seconds = Math.max(1, Math.ceil(fault.retryAfterMs / 1000));
    headers['retry-after-ms'] = String(fault.retryAfterMs);
    headers['retry-after'] = String(seconds);
  } else if (fault.retryAfterSeconds !== undefined) {
    seconds = fault.retryAfterSeconds;
    headers['retry-after'] = String(seconds);
  } else {
    seconds = 1;
    headers['retry-after-ms'] = '1000';
    headers['retry-after'] = '1';
  }
  const message =
    `Requests to the ChatCompletions_Create Operation under Azure OpenAI API version v1 have exceeded token rate ` +
    `limit of your current OpenAI S0 pricing tier. Please retry after ${seconds} second${seconds === 1 ? '' : 's'}. ` +
    `Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.`;
  return { status: 429, headers, body: { error: { code: '429', message } } };
}

function serverError(status: 500 | 502 | 503): ErrorReply {
  if (status === 502) return { status, body: { error: { code: 'BadGateway', message: 'Bad gateway.' } } };
  if (status === 503) {
    return {
      status,
      body: {
        error: {
          message: 'The engine is currently overloaded, please try again later.',
          type: 'server_error',
          param: null,
          code: null,
        },
      },
    };
  }
  return {
    status,
    body: {
      error: {
        message:
          'The server had an error while processing your request. Sorry about that! You can retry your request, or ' +
          'contact us through an Azure support request at: https://go.microsoft.com/fwlink/?linkid=2213926 if you ' +
          'keep seeing this error.',
        type: 'server_error',
        param: null,
        code: null,
      },
    },
  };
}

function promptFiltered(category: ContentFilterCategory): ErrorReply {
  return {
    status: 400,
    body: {
      error: {
        message:
          "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please " +
          'modify your prompt and retry. To learn more about our content filtering policies please read our ' +
          'documentation: https://go.microsoft.com/fwlink/?linkid=2198766',
        type: null,
        param: 'prompt',
        code: 'content_filter',
        status: 400,
        innererror: { code: 'ResponsibleAIPolicyViolation', content_filter_result: categoryResults(category) },
      },
    },
  };
}

function contextLengthExceeded(limit: number, promptTokens: number, maxTokens: number | undefined): ErrorReply {
  const message =
    maxTokens === undefined
      ? `This model's maximum context length is ${limit} tokens. However, your messages resulted in ` +
        `${promptTokens} tokens. Please reduce the length of the messages.`
      : `This model's maximum context length is ${limit} tokens. However, you requested ${promptTokens + maxTokens} ` +
        `tokens (${promptTokens} in the messages, ${maxTokens} in the completion). Please reduce the length of the ` +
        `messages or completion.`;
  return invalidRequest(message, 'messages', 'context_length_exceeded');
}

const NOT_FOUND: ErrorReply = { status: 404, body: { error: { code: '404', message: 'Resource not found' } } };

// ---- Request checks ------------------------------------------------------------------------------

const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool']);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkPositiveInteger(body: Record<string, unknown>, field: string): ErrorReply | undefined {
  const value = body[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    return invalidRequest(`Invalid type for '${field}': expected an integer, but got ${typeof value} instead.`, field);
  }
  if (value < 1) {
    return invalidRequest(
      `Invalid '${field}': integer below minimum value. Expected a value >= 1, but got ${value} instead.`,
      field,
      'integer_below_min_value',
    );
  }
  return undefined;
}

/** Reasoning models (o-series, gpt-5) take max_completion_tokens and only the default temperature. */
function isReasoningModel(model: string): boolean {
  return /^(o\d|gpt-5)/i.test(model);
}

function checkChatRequest(parsed: unknown): { body: ChatRequestBody } | { error: ErrorReply } {
  if (!isRecord(parsed)) return { error: invalidRequest('The request body must be a JSON object.', null) };
  if (typeof parsed.model !== 'string' || parsed.model === '') {
    return { error: invalidRequest("Missing required parameter: 'model'.", 'model', 'missing_required_parameter') };
  }
  const messages = parsed.messages;
  if (!Array.isArray(messages) || messages.length === 0) {
    return {
      error: invalidRequest(
        "Invalid 'messages': expected a non-empty array of messages.",
        'messages',
        Array.isArray(messages) ? 'empty_array' : 'missing_required_parameter',
      ),
    };
  }
  for (const [index, message] of messages.entries()) {
    if (!isRecord(message) || typeof message.role !== 'string' || !ROLES.has(message.role)) {
      return { error: invalidRequest(`Invalid value for 'messages[${index}].role'.`, `messages[${index}].role`) };
    }
    const content = message.content;
    const contentOk =
      typeof content === 'string' ||
      (content === null && message.role === 'assistant') ||
      (Array.isArray(content) && content.every((part) => isRecord(part) && typeof part.type === 'string'));
    if (!contentOk) {
      return {
        error: invalidRequest(`Invalid type for 'messages[${index}].content'.`, `messages[${index}].content`),
      };
    }
    if (message.name !== undefined && typeof message.name !== 'string') {
      return { error: invalidRequest(`Invalid type for 'messages[${index}].name'.`, `messages[${index}].name`) };
    }
  }
  const orderError = checkToolMessages(messages as StandInMessage[]);
  if (orderError) return { error: orderError };
  if (parsed.tools !== undefined) {
    const tools = parsed.tools;
    const valid =
      Array.isArray(tools) &&
      tools.every(
        (tool) =>
          isRecord(tool) &&
          tool.type === 'function' &&
          isRecord(tool.function) &&
          typeof tool.function.name === 'string' &&
          /^[A-Za-z0-9_-]{1,64}$/.test(tool.function.name),
      );
    if (!valid) return { error: invalidRequest("Invalid 'tools': expected an array of function tools.", 'tools') };
    if (tools.length === 0) {
      return {
        error: invalidRequest(
          "Invalid 'tools': empty array. Expected an array with minimum length 1.",
          'tools',
          'empty_array',
        ),
      };
    }
  }
  for (const field of ['max_tokens', 'max_completion_tokens']) {
    const error = checkPositiveInteger(parsed, field);
    if (error) return { error };
  }
  if (parsed.temperature !== undefined && parsed.temperature !== null) {
    if (typeof parsed.temperature !== 'number' || parsed.temperature < 0 || parsed.temperature > 2) {
      return { error: invalidRequest("Invalid 'temperature': expected a number between 0 and 2.", 'temperature') };
    }
  }
  if (isReasoningModel(parsed.model)) {
    if (parsed.max_tokens !== undefined && parsed.max_tokens !== null) {
      return {
        error: invalidRequest(
          "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
          'max_tokens',
          'unsupported_parameter',
        ),
      };
    }
    if (typeof parsed.temperature === 'number' && parsed.temperature !== 1) {
      return {
        error: invalidRequest(
          `Unsupported value: 'temperature' does not support ${parsed.temperature} with this model. Only the default (1) value is supported.`,
          'temperature',
          'unsupported_value',
        ),
      };
    }
  }
  // Checked field by field above: the object now has the shape ChatRequestBody describes.
  return { body: parsed as ChatRequestBody };
}

/**
 * The service's rule for tool messages: an assistant message with `tool_calls` must be followed by one `tool` message
 * per call id before anything else, and a `tool` message must answer a call of the assistant message before it.
 */
function checkToolMessages(messages: StandInMessage[]): ErrorReply | undefined {
  let awaiting: Set<string> | undefined;
  for (const [index, message] of messages.entries()) {
    if (message.role === 'tool') {
      if (typeof message.tool_call_id !== 'string' || !awaiting?.has(message.tool_call_id)) {
        return invalidRequest(
          "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
          `messages.[${index}].role`,
        );
      }
      awaiting.delete(message.tool_call_id);
      continue;
    }
    if (awaiting && awaiting.size > 0) {
      return invalidRequest(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. " +
          `The following tool_call_ids did not have response messages: ${[...awaiting].join(', ')}`,
        `messages.[${index}].role`,
      );
    }
    awaiting = undefined;
    if (message.role === 'assistant' && Array.isArray(message.tool_calls)) {
      awaiting = new Set((message.tool_calls as { id?: unknown }[]).map((call) => String(call.id)));
    }
  }
  if (awaiting && awaiting.size > 0) {
    return invalidRequest(
      "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. " +
        `The following tool_call_ids did not have response messages: ${[...awaiting].join(', ')}`,
      `messages.[${messages.length}].role`,
    );
  }
  return undefined;
}

function toolCallId(): string {
  return `call_${randomBytes(18).toString('base64url').replace(/[-_]/g, '').slice(0, 24)}`;
}

// ---- The server ----------------------------------------------------------------------------------

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

function requestIdHeaders(): Record<string, string> {
  const id = randomUUID();
  return { 'x-request-id': id, 'apim-request-id': id };
}

function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (response.destroyed || response.headersSent) return;
  response.writeHead(status, { 'content-type': 'application/json', ...requestIdHeaders(), ...headers });
  response.end(JSON.stringify(body));
}

const HTML_PAGE = '<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>Bad gateway</body></html>';

/** What a proxy or a broken upstream may answer with status 200 instead of a chat completion. */
function sendNotACompletion(
  response: ServerResponse,
  variant: Extract<ModelFault, { kind: 'not_a_completion' }>['variant'],
  model: string,
  id: string,
): void {
  const json = { 'content-type': 'application/json', ...requestIdHeaders() };
  const message = (content: string | null) => ({
    id,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop', logprobs: null }],
    usage: usageOf(10, 0, 0),
  });
  switch (variant) {
    case 'html':
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      response.end(HTML_PAGE);
      return;
    case 'html_as_json':
      response.writeHead(200, json);
      response.end(HTML_PAGE);
      return;
    case 'no_choices':
      return sendJson(response, 200, { ...message('unused'), choices: [] });
    case 'null_content':
      return sendJson(response, 200, message(null));
    case 'truncated': {
      const text = JSON.stringify(message('A reply whose body is cut short'));
      response.writeHead(200, json);
      response.end(text.slice(0, Math.floor(text.length / 2)));
      return;
    }
    case 'cut': {
      const text = JSON.stringify(message('A reply whose connection drops'));
      response.writeHead(200, { ...json, 'content-length': String(Buffer.byteLength(text)) });
      response.write(text.slice(0, Math.floor(text.length / 2)), () => response.destroy());
      return;
    }
  }
}

function sendError(response: ServerResponse, error: ErrorReply): void {
  sendJson(response, error.status, error.body, error.headers);
}

function bearerOf(headers: IncomingHttpHeaders): string | undefined {
  return /^Bearer\s+(.+)$/i.exec(headers.authorization ?? '')?.[1];
}

export async function startModelStandIn(options: ModelStandInOptions = {}): Promise<ModelStandIn> {
  const requests: RecordedRequest[] = [];
  const queuedFaults: ModelFault[] = [];
  let defaultFault: ModelFault | undefined;
  let callCount = 0;
  const closing = new AbortController();
  const chunkDelayMs = options.streamChunkDelayMs ?? 0;
  const promptCache = options.promptCache === false ? undefined : new PromptCache(options.promptCache);

  function isAuthorized(headers: IncomingHttpHeaders): boolean {
    const { expectedBearerToken, expectedApiKey } = options;
    if (expectedBearerToken === undefined && expectedApiKey === undefined) return true;
    const bearer = bearerOf(headers);
    if (expectedBearerToken !== undefined && bearer === expectedBearerToken) return true;
    return expectedApiKey !== undefined && (headers['api-key'] === expectedApiKey || bearer === expectedApiKey);
  }

  function takeFault(): ModelFault | undefined {
    return queuedFaults.shift() ?? defaultFault;
  }

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', `http://${HOST}`);
    const rawBody = await readBody(request);
    const record: RecordedRequest = {
      method: request.method ?? 'GET',
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      headers: request.headers,
      rawBody,
      body: undefined,
      at: new Date(),
    };
    requests.push(record);

    if (record.method !== 'POST' || url.pathname.replace(/\/+$/, '') !== CHAT_COMPLETIONS_PATH) {
      return sendError(response, NOT_FOUND);
    }
    if (!isAuthorized(request.headers)) {
      return sendError(response, unauthorized(bearerOf(request.headers) !== undefined));
    }
    callCount += 1;

    let parsed: unknown;
    try {
      parsed = JSON.parse(rawBody);
    } catch {
      return sendError(
        response,
        invalidRequest(
          "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP " +
            'library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)',
          null,
        ),
      );
    }
    const checked = checkChatRequest(parsed);
    if ('error' in checked) return sendError(response, checked.error);
    const body = checked.body;
    record.body = body;

    // Abort pending waits when the client goes away or the stand-in closes.
    const gone = new AbortController();
    response.on('close', () => gone.abort());
    const signal = AbortSignal.any([gone.signal, closing.signal]);

    const fault = takeFault();
    switch (fault?.kind) {
      case 'rate_limit':
        return sendError(response, rateLimited(fault));
      case 'server_error':
        return sendError(response, serverError(fault.status ?? 500));
      case 'prompt_filtered':
        return sendError(response, promptFiltered(fault.category ?? 'violence'));
      case 'hang':
        return; // No answer: close() ends the connection.
      case 'slow':
        await delay(fault.delayMs, undefined, { signal });
        break;
      case 'stream_error_after':
        if (body.stream !== true) return sendError(response, serverError(500));
        break;
      default:
        break;
    }

    const encoding = encodingForModel(body.model);
    const tools = (Array.isArray(body.tools) ? body.tools : []) as StandInTool[];
    const promptTokens = countPromptTokens(body.messages, encoding) + countToolTokens(tools, encoding);
    const maxTokens = body.max_completion_tokens ?? body.max_tokens;
    const requestedTokens = promptTokens + (maxTokens ?? 0);
    if (fault?.kind === 'context_length_exceeded') {
      const limit = fault.maxContextTokens ?? options.contextWindowTokens ?? Math.max(1, requestedTokens - 1);
      return sendError(response, contextLengthExceeded(limit, promptTokens, maxTokens));
    }
    if (options.contextWindowTokens !== undefined && requestedTokens > options.contextWindowTokens) {
      return sendError(response, contextLengthExceeded(options.contextWindowTokens, promptTokens, maxTokens));
    }

    const answer =
      fault?.kind === 'verbatim'
        ? ''
        : ((await options.reply?.({ model: body.model, messages: body.messages, promptTokens, body, tools })) ??
          defaultReplyText(body.messages, promptTokens));
    const id = completionId();
    const created = Math.floor(Date.now() / 1000);
    if (typeof answer !== 'string')
      return sendToolCalls(response, body, answer, { id, created, promptTokens, encoding });
    const reply =
      fault?.kind === 'verbatim'
        ? { content: fault.content, finishReason: 'stop' as const, completionTokens: fault.completionTokens }
        : shapeReply(answer, encoding, maxTokens, fault);
    const key = typeof body.prompt_cache_key === 'string' ? body.prompt_cache_key : '';
    const sequence = () =>
      promptSequence(
        body.messages.map((message) => ({
          role: message.role,
          content: contentText(message.content),
          ...(typeof message.name === 'string' ? { name: message.name } : {}),
        })),
        (text) => tokensOf(text, encoding),
      );
    record.cachedTokens = promptCache ? promptCache.serve(key, sequence()) : 0;
    record.promptTokens = promptTokens;
    record.completionTokens = reply.completionTokens;
    const usage = usageOf(promptTokens, reply.completionTokens, record.cachedTokens);

    if (fault?.kind === 'not_a_completion' && body.stream !== true) {
      return sendNotACompletion(response, fault.variant, body.model, id);
    }
    if (body.stream !== true) {
      return sendJson(response, 200, {
        id,
        object: 'chat.completion',
        created,
        model: body.model,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: reply.content, refusal: null, annotations: [] },
            finish_reason: reply.finishReason,
            logprobs: null,
            content_filter_results: categoryResults(reply.filteredCategory),
          },
        ],
        ...(fault?.kind === 'no_usage' ? {} : { usage }),
        prompt_filter_results: promptFilterResults(),
        system_fingerprint: 'fp_local_model',
      });
    }

    const includeUsage = body.stream_options?.include_usage === true && fault?.kind !== 'no_usage';
    const chunk = (choice: Record<string, unknown>): Record<string, unknown> => ({
      id,
      object: 'chat.completion.chunk',
      created,
      model: body.model,
      system_fingerprint: 'fp_local_model',
      choices: [{ index: 0, logprobs: null, finish_reason: null, ...choice }],
      ...(includeUsage ? { usage: null } : {}),
    });
    const send = async (data: unknown): Promise<void> => {
      if (chunkDelayMs > 0) await delay(chunkDelayMs, undefined, { signal });
      await writeEvent(response, data);
    };

    startEventStream(response, requestIdHeaders());
    // Azure's first event carries only the prompt's filter results: empty id, model and choices.
    await writeEvent(response, {
      id: '',
      object: '',
      created: 0,
      model: '',
      choices: [],
      prompt_filter_results: promptFilterResults(),
    });
    await send(chunk({ delta: { role: 'assistant', content: '', refusal: null }, content_filter_results: {} }));
    const deltas = splitIntoDeltas(reply.content);
    for (const [index, content] of deltas.entries()) {
      if (fault?.kind === 'stream_error_after' && index >= fault.deltas) break;
      await send(chunk({ delta: { content }, content_filter_results: categoryResults() }));
    }
    if (fault?.kind === 'stream_error_after') {
      // Cut the connection mid-stream, as a dropped upstream would: no finish chunk, no [DONE].
      response.destroy();
      return;
    }
    await send(
      chunk({
        delta: {},
        finish_reason: reply.finishReason,
        content_filter_results: categoryResults(reply.filteredCategory),
      }),
    );
    if (includeUsage) await send({ ...chunk({}), choices: [], usage });
    await writeEvent(response, SSE_DONE);
    response.end();
  }

  /** A reply that calls tools: `finish_reason: tool_calls`, streamed as the service streams them. */
  async function sendToolCalls(
    response: ServerResponse,
    body: ChatRequestBody,
    answer: StandInToolReply,
    meta: { id: string; created: number; promptTokens: number; encoding: StandInEncoding },
  ): Promise<void> {
    const calls = answer.toolCalls.map((call) => ({
      id: call.id ?? toolCallId(),
      type: 'function' as const,
      function: { name: call.name, arguments: call.arguments },
    }));
    const content = answer.content ?? null;
    const completionTokens =
      calls.reduce(
        (sum, call) =>
          sum + countText(call.function.name, meta.encoding) + countText(call.function.arguments, meta.encoding),
        0,
      ) + (content ? countText(content, meta.encoding) : 0);
    const usage = usageOf(meta.promptTokens, completionTokens, 0);
    const base = { id: meta.id, created: meta.created, model: body.model, system_fingerprint: 'fp_local_model' };
    if (body.stream !== true) {
      return sendJson(response, 200, {
        ...base,
        object: 'chat.completion',
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content, refusal: null, annotations: [], tool_calls: calls },
            finish_reason: 'tool_calls',
            logprobs: null,
            content_filter_results: categoryResults(),
          },
        ],
        usage,
        prompt_filter_results: promptFilterResults(),
      });
    }
    const includeUsage = body.stream_options?.include_usage === true;
    const chunk = (choice: Record<string, unknown>) => ({
      ...base,
      object: 'chat.completion.chunk',
      choices: [{ index: 0, logprobs: null, finish_reason: null, ...choice }],
      ...(includeUsage ? { usage: null } : {}),
    });
    startEventStream(response, requestIdHeaders());
    await writeEvent(response, chunk({ delta: { role: 'assistant', content: null, refusal: null } }));
    if (content) await writeEvent(response, chunk({ delta: { content } }));
    for (const [index, call] of calls.entries()) {
      // As the service does: id and name first with empty arguments, then the arguments in fragments.
      await writeEvent(
        response,
        chunk({
          delta: {
            tool_calls: [
              { index, id: call.id, type: 'function', function: { name: call.function.name, arguments: '' } },
            ],
          },
        }),
      );
      for (const fragment of call.function.arguments.match(/[\s\S]{1,16}/g) ?? []) {
        await writeEvent(response, chunk({ delta: { tool_calls: [{ index, function: { arguments: fragment } }] } }));
      }
    }
    await writeEvent(response, chunk({ delta: {}, finish_reason: 'tool_calls' }));
    if (includeUsage) await writeEvent(response, { ...chunk({}), choices: [], usage });
    await writeEvent(response, SSE_DONE);
    response.end();
  }

  const server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      // An aborted wait means the client left or close() ran: nothing to answer.
      if (error instanceof Error && error.name === 'AbortError') return;
      if (!response.headersSent) {
        sendJson(response, 500, { error: { code: '500', message: `Model stand-in failed: ${String(error)}` } });
      } else {
        response.destroy();
      }
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, HOST, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${HOST}:${port}`;
  let closed: Promise<void> | undefined;

  return {
    url,
    baseURL: `${url}/openai/v1/`,
    port,
    requests,
    get callCount() {
      return callCount;
    },
    enqueueFault(fault) {
      queuedFaults.push(fault);
    },
    setDefaultFault(fault) {
      defaultFault = fault;
    },
    clear() {
      requests.length = 0;
      queuedFaults.length = 0;
      defaultFault = undefined;
      callCount = 0;
      promptCache?.clear();
    },
    close() {
      closed ??= new Promise<void>((resolve) => {
        closing.abort();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}

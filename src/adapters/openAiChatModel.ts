/**
 * The chat model port over the `openai` SDK against Azure OpenAI's v1 endpoint (`{endpoint}/openai/v1/`).
 * The SDK retries connection errors, 408, 409, 429 and 5xx itself (honouring retry-after-ms / retry-after);
 * this adapter bounds the whole call with one deadline and turns what is left into the core's typed errors.
 */
import OpenAI from 'openai';
import type {
  ChatCompletionChunk,
  ChatCompletionCreateParamsBase,
  ChatCompletionMessageParam,
  ChatCompletionMessageToolCall,
} from 'openai/resources/chat/completions';
import {
  ChatError,
  ContentFilteredError,
  ContextLengthExceededError,
  RateLimitedError,
  UpstreamError,
} from '../core/errors';
import type {
  ChatMessage,
  ChatModel,
  Completion,
  CompletionChunk,
  CompletionRequest,
  FinishReason,
  ResponseDetails,
  ToolCall,
  Usage,
} from '../core/ports';
import { toStorableText } from '../core/text';

export interface OpenAiChatModelOptions {
  /** Resource endpoint, e.g. https://myresource.openai.azure.com (no /openai/v1). */
  endpoint: string;
  deployment: string;
  /** Reasoning models (o-series, gpt-5) take max_completion_tokens and no temperature. */
  reasoning: boolean;
  /** A key, or a function returning a bearer token (getBearerTokenProvider). */
  apiKey: string | (() => Promise<string>);
  /** Total time for one call, retries included. */
  timeoutMs: number;
  maxRetries: number;
  /** For tests: the SDK's fetch. */
  fetch?: typeof fetch;
}

export class OpenAiChatModel implements ChatModel {
  private readonly client: OpenAI;

  constructor(private readonly options: OpenAiChatModelOptions) {
    this.client = new OpenAI({
      baseURL: `${options.endpoint.replace(/\/+$/, '')}/openai/v1/`,
      apiKey: options.apiKey,
      maxRetries: options.maxRetries,
      timeout: options.timeoutMs,
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
  }

  async complete(request: CompletionRequest, signal?: AbortSignal): Promise<Completion> {
    const deadline = this.deadline(signal);
    try {
      // The raw response, not the SDK's parse: a 200 that is not a completion must be told apart deliberately.
      const response = await this.client.chat.completions
        .create({ ...this.params(request), stream: false }, { signal: deadline.signal })
        .asResponse();
      return parseCompletion(response.headers.get('content-type'), await readBody(response));
    } catch (error) {
      throw this.translate(error, deadline);
    } finally {
      deadline.dispose();
    }
  }

  async *stream(request: CompletionRequest, signal?: AbortSignal): AsyncIterable<CompletionChunk> {
    const deadline = this.deadline(signal);
    let replying = false;
    try {
      const stream = await this.client.chat.completions.create(
        { ...this.params(request), stream: true, stream_options: { include_usage: true } },
        { signal: deadline.signal },
      );
      replying = true;
      let finishReason: FinishReason | undefined;
      let usage: Usage | undefined;
      const text = new StorableDeltas();
      const toolCalls = new ToolCallAssembler();
      // Azure's first chunk (prompt filter results) carries no id or model: the latest that does says them.
      let responseId: unknown;
      let responseModel: unknown;
      for await (const chunk of stream) {
        if (chunk.id) responseId = chunk.id;
        if (chunk.model) responseModel = chunk.model;
        for (const choice of chunk.choices ?? []) {
          const content = text.next(choice.delta?.content ?? '');
          if (content) yield { type: 'delta', content };
          toolCalls.add(choice.delta?.tool_calls);
          if (choice.finish_reason) finishReason = toFinishReason(choice.finish_reason);
        }
        if (chunk.usage) usage = toUsage(chunk.usage);
      }
      const rest = text.end();
      if (rest) yield { type: 'delta', content: rest };
      // An aborted request ends the SDK's iteration quietly: half a reply must never pass for a whole one.
      // The same error as complete() gives: translate() makes it upstream_timeout when the deadline did it.
      if (deadline.signal.aborted) throw new OpenAI.APIUserAbortError();
      if (finishReason === undefined) throw new Error('The model stream ended without a finish reason.');
      const calls = toolCalls.calls();
      // No usage reported: the core counts the turn itself (it must never go uncounted).
      yield {
        type: 'done',
        finishReason,
        ...(usage ? { usage } : {}),
        ...(calls.length > 0 ? { toolCalls: calls } : {}),
        ...responseDetails(responseId, responseModel),
      };
    } catch (error) {
      throw this.translate(error, deadline, replying);
    } finally {
      deadline.dispose();
    }
  }

  private params(request: CompletionRequest): ChatCompletionCreateParamsBase {
    const { reasoning, deployment } = this.options;
    return {
      model: deployment,
      messages: request.messages.map(toMessageParam),
      ...(request.tools && request.tools.length > 0
        ? {
            tools: request.tools.map((tool) => ({
              type: 'function' as const,
              function: { name: tool.name, description: tool.description, parameters: tool.parameters },
            })),
          }
        : {}),
      ...(reasoning ? { max_completion_tokens: request.maxResponseTokens } : { max_tokens: request.maxResponseTokens }),
      ...(!reasoning && request.temperature !== undefined ? { temperature: request.temperature } : {}),
      // One conversation's requests reach the same prompt cache, so its repeated prefix is billed at the cached rate.
      ...(request.cacheKey !== undefined ? { prompt_cache_key: request.cacheKey } : {}),
    };
  }

  /** One deadline for the whole call (the SDK's own timeout is per attempt), joined with the caller's signal. */
  private deadline(signal: AbortSignal | undefined) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new DeadlineExceeded()), this.options.timeoutMs);
    const onAbort = () => controller.abort(signal?.reason);
    // An already-aborted signal never fires 'abort' again.
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
    return {
      signal: controller.signal,
      timedOut: () => controller.signal.reason instanceof DeadlineExceeded,
      dispose: () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      },
    };
  }

  /** `midStream`: the reply had started, so whatever breaks it now is the upstream's failure. */
  private translate(error: unknown, deadline: { timedOut(): boolean }, midStream = false): unknown {
    if (error instanceof ChatError) return error;
    if (deadline.timedOut() || error instanceof OpenAI.APIConnectionTimeoutError) {
      return new UpstreamError('upstream_timeout', `The model did not answer within ${this.options.timeoutMs} ms.`, {
        cause: error,
      });
    }
    if (error instanceof OpenAI.APIUserAbortError) return error;
    if (error instanceof OpenAI.APIConnectionError) {
      return new UpstreamError('upstream_unavailable', 'The model endpoint could not be reached.', {
        retryAfterSeconds: 5,
        cause: error,
      });
    }
    if (error instanceof OpenAI.APIError) {
      const body = (error.error ?? {}) as AzureErrorBody;
      if (
        error.status === 400 &&
        (error.code === 'content_filter' || body.innererror?.code === 'ResponsibleAIPolicyViolation')
      ) {
        return new ContentFilteredError(body.innererror?.content_filter_result ?? {});
      }
      if (error.status === 400 && error.code === 'context_length_exceeded') {
        return new ContextLengthExceededError(
          'The model says the conversation does not fit its context window. Lower CHAT_TOKEN_LIMIT to match the deployment.',
        );
      }
      if (error.status === 429) {
        return new RateLimitedError(
          'The model is rate limited for this app. Retry after the time given.',
          retryAfterSeconds(error.headers) ?? 10,
          'upstream_rate_limited',
        );
      }
      if (error.status === 503) {
        const given = retryAfterSeconds(error.headers);
        return new UpstreamError('upstream_unavailable', 'The model is unavailable.', {
          retryAfterSeconds: given ?? 5,
          cause: error,
          upstreamStatus: 503,
          ...(given !== undefined ? { upstreamRetryAfterMs: given * 1000 } : {}),
        });
      }
      if (error.status === 408 || error.status === 504) {
        return new UpstreamError('upstream_timeout', 'The model did not answer in time.', {
          cause: error,
          upstreamStatus: error.status,
        });
      }
      if (error.status === 401 || error.status === 403) {
        return new UpstreamError(
          'upstream_error',
          'The model refused the app’s credentials; check its role assignment.',
          {
            cause: error,
          },
        );
      }
      if (error.status === 404) {
        return new UpstreamError(
          'upstream_error',
          'The model deployment was not found; check AZURE_OPENAI_DEPLOYMENT.',
          {
            cause: error,
          },
        );
      }
      return new UpstreamError('upstream_error', `The model answered with HTTP ${error.status ?? 'error'}.`, {
        cause: error,
        ...(error.status !== undefined ? { upstreamStatus: error.status } : {}),
      });
    }
    if (isCredentialError(error)) {
      return new UpstreamError('upstream_error', 'The app could not get a token for the model (managed identity).', {
        cause: error,
      });
    }
    if (midStream || (error instanceof Error && /stream|terminated|socket|ECONNRESET/i.test(error.message))) {
      return new UpstreamError('upstream_error', 'The model’s reply stream broke off.', { cause: error });
    }
    return error;
  }
}

class DeadlineExceeded extends Error {}

function toMessageParam(message: ChatMessage): ChatCompletionMessageParam {
  const name = message.name === undefined ? {} : { name: message.name };
  switch (message.role) {
    case 'tool':
      return { role: 'tool', tool_call_id: message.toolCallId ?? '', content: message.content };
    case 'assistant': {
      const calls = message.toolCalls ?? [];
      if (calls.length === 0) return { role: 'assistant', content: message.content, ...name };
      return {
        role: 'assistant',
        // The service takes null content beside tool calls; an empty string is what the model did not say.
        content: message.content === '' ? null : message.content,
        tool_calls: calls.map((call) => ({
          id: call.id,
          type: 'function' as const,
          function: { name: call.name, arguments: call.arguments },
        })),
        ...name,
      };
    }
    case 'user':
      return { role: 'user', content: message.content, ...name };
    case 'system':
      return { role: 'system', content: message.content, ...name };
  }
}

/** Function calls only: custom tools are never offered, so a custom call is nothing this app can answer. */
function functionCalls(calls: ChatCompletionMessageToolCall[] | undefined): ToolCall[] {
  return (calls ?? []).flatMap((call) =>
    call.type === 'function'
      ? [storableCall({ id: call.id, name: call.function.name, arguments: call.function.arguments })]
      : [],
  );
}

/** What the model wrote is stored: unpaired surrogates and NUL become U+FFFD, as in its text (core/text.ts). */
function storableCall(call: ToolCall): ToolCall {
  return { id: toStorableText(call.id), name: toStorableText(call.name), arguments: toStorableText(call.arguments) };
}

/**
 * Streamed tool calls arrive in pieces: `index` on every piece, `id` and `function.name` once, `function.arguments`
 * in fragments to concatenate in order.
 */
class ToolCallAssembler {
  private readonly byIndex = new Map<number, ToolCall>();

  add(pieces: ChatCompletionChunk.Choice.Delta.ToolCall[] | undefined): void {
    for (const piece of pieces ?? []) {
      const call = this.byIndex.get(piece.index) ?? { id: '', name: '', arguments: '' };
      if (piece.id) call.id = piece.id;
      if (piece.function?.name) call.name += piece.function.name;
      if (piece.function?.arguments) call.arguments += piece.function.arguments;
      this.byIndex.set(piece.index, call);
    }
  }

  calls(): ToolCall[] {
    return [...this.byIndex.entries()].sort(([a], [b]) => a - b).map(([, call]) => storableCall(call));
  }
}

interface AzureErrorBody {
  code?: string;
  innererror?: { code?: string; content_filter_result?: Record<string, unknown> };
}

function toFinishReason(reason: string | null | undefined): FinishReason {
  switch (reason) {
    case 'stop':
    case 'length':
    case 'content_filter':
    case 'tool_calls':
    case 'function_call':
      return reason;
    default:
      return 'unknown';
  }
}

/** The service's usage, or undefined when it reported none (or nothing countable). */
function toUsage(usage: unknown): Usage | undefined {
  if (typeof usage !== 'object' || usage === null) return undefined;
  const {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: total,
  } = usage as Record<string, unknown>;
  if (!isCount(prompt) || !isCount(completion)) return undefined;
  return {
    promptTokens: prompt,
    completionTokens: completion,
    totalTokens: isCount(total) ? total : prompt + completion,
    cachedPromptTokens: cachedTokens(usage),
  };
}

/** `prompt_tokens_details.cached_tokens`, or 0 when the service did not say. */
function cachedTokens(usage: object): number {
  const details = (usage as { prompt_tokens_details?: { cached_tokens?: unknown } }).prompt_tokens_details;
  return isCount(details?.cached_tokens) ? details.cached_tokens : 0;
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** A 200's body; a connection that drops before its end is the upstream's failure, said so deliberately. */
async function readBody(response: Response): Promise<string> {
  try {
    return await response.text();
  } catch (error) {
    if (error instanceof Error && error.name === 'AbortError') throw error;
    throw notACompletion('its body broke off before the end', error);
  }
}

/**
 * A chat completion from a 200's body, or upstream_error (502) for anything else: an HTML page (whatever its content
 * type says), JSON that is cut short, no choices, or a choice without text (unless it calls tools). Never a 500, and
 * never an empty reply stored as if the model had said nothing.
 */
export function parseCompletion(contentType: string | null, body: string): Completion {
  if (!/^application\/([a-z0-9.+-]*\+)?json\b/i.test(contentType ?? '')) {
    throw notACompletion(
      `it answered 200 with ${contentType ? `content type ${contentType.split(';')[0]}` : 'no content type'}`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch (error) {
    throw notACompletion('its body is not valid JSON', error);
  }
  const choices =
    typeof value === 'object' && value !== null ? (value as Record<string, unknown>)['choices'] : undefined;
  if (!Array.isArray(choices) || choices.length === 0) throw notACompletion('the answer has no choices');
  const choice = choices[0] as { message?: { content?: unknown; tool_calls?: unknown }; finish_reason?: unknown };
  const message = typeof choice === 'object' && choice !== null ? choice.message : undefined;
  const content = message?.content;
  const finishReason = toFinishReason(typeof choice.finish_reason === 'string' ? choice.finish_reason : undefined);
  // Null content is a completion only when the filter withheld the text or the model calls tools instead.
  const callsTools = Array.isArray(message?.tool_calls) && message.tool_calls.length > 0;
  if (typeof content !== 'string' && !(content === null && (callsTools || finishReason === 'content_filter'))) {
    throw notACompletion('its choice carries no message text');
  }
  const usage = toUsage((value as Record<string, unknown>)['usage']);
  const toolCalls = callsTools ? functionCalls(parseToolCalls(message?.tool_calls)) : [];
  return {
    content: toStorableText(content ?? ''),
    finishReason,
    ...(usage ? { usage } : {}),
    ...(toolCalls.length > 0 ? { toolCalls } : {}),
    ...responseDetails((value as Record<string, unknown>)['id'], (value as Record<string, unknown>)['model']),
  };
}

/** A function call must carry its id, name and arguments as strings; other kinds of call are passed over. */
function parseToolCalls(calls: unknown): ChatCompletionMessageToolCall[] {
  if (!Array.isArray(calls)) return [];
  for (const call of calls as unknown[]) {
    const record = typeof call === 'object' && call !== null ? (call as Record<string, unknown>) : undefined;
    if (!record) throw notACompletion('a tool call is not an object');
    if (record['type'] !== 'function') continue;
    const fn = record['function'];
    const parts = typeof fn === 'object' && fn !== null ? (fn as Record<string, unknown>) : {};
    if (
      typeof record['id'] !== 'string' ||
      typeof parts['name'] !== 'string' ||
      typeof parts['arguments'] !== 'string'
    ) {
      throw notACompletion('a function call lacks its id, name or arguments');
    }
  }
  return calls as ChatCompletionMessageToolCall[];
}

function notACompletion(why: string, cause?: unknown): UpstreamError {
  return new UpstreamError(
    'upstream_error',
    `The model's answer is not a chat completion: ${why}. Nothing was stored.`,
    {
      cause,
    },
  );
}

/**
 * Stream deltas made storable (core/text.ts): an unpaired surrogate or NUL becomes U+FFFD. A high surrogate that
 * ends a delta is held back until the next one shows whether its low half follows, so a pair split across two
 * deltas stays one character and the deltas shown always add up to the text stored.
 */
export class StorableDeltas {
  private held = '';

  next(delta: string): string {
    const text = this.held + delta;
    const last = text.charCodeAt(text.length - 1);
    const holdBack = last >= 0xd800 && last <= 0xdbff;
    this.held = holdBack ? text.slice(-1) : '';
    return toStorableText(holdBack ? text.slice(0, -1) : text);
  }

  end(): string {
    const rest = toStorableText(this.held);
    this.held = '';
    return rest;
  }
}

/** The response's id and the model that answered, as the service names them, for telemetry. */
function responseDetails(id: unknown, model: unknown): ResponseDetails {
  return {
    ...(typeof id === 'string' && id ? { responseId: id } : {}),
    ...(typeof model === 'string' && model ? { responseModel: model } : {}),
  };
}

function retryAfterSeconds(headers: Headers | undefined): number | undefined {
  const ms = Number(headers?.get('retry-after-ms'));
  if (Number.isFinite(ms) && ms > 0) return ms / 1000;
  const raw = headers?.get('retry-after');
  if (!raw) return undefined;
  const seconds = Number(raw);
  if (Number.isFinite(seconds)) return seconds;
  const date = Date.parse(raw);
  return Number.isFinite(date) ? Math.max(1, (date - Date.now()) / 1000) : undefined;
}

/** The SDK wraps what the token function throws in an OpenAIError, keeping it as the cause. */
function isCredentialError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error instanceof OpenAI.OpenAIError && !(error instanceof OpenAI.APIError)) return isCredentialError(error.cause);
  return (
    error.name === 'CredentialUnavailableError' ||
    error.name === 'AuthenticationError' ||
    error.name === 'AggregateAuthenticationError'
  );
}

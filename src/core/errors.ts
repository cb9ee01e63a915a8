/**
 * Every way a request can fail, in one place. Each error carries a stable `code` (part of the API
 * contract, listed in the OpenAPI document) and the HTTP status it maps to; `src/http/problem.ts`
 * turns them into RFC 9457 problem responses. Anything that is not a ChatError is a bug and becomes an
 * opaque 500 without details.
 */

export type ProblemExtensions = Record<string, unknown>;

export interface ChatErrorOptions {
  detail: string;
  /** Extra members for the problem body (e.g. `errors`, `categories`). Never secrets. */
  extensions?: ProblemExtensions;
  /** Response headers that belong to this problem (e.g. Retry-After, WWW-Authenticate). */
  headers?: Record<string, string>;
  cause?: unknown;
}

export abstract class ChatError extends Error {
  abstract readonly code: string;
  abstract readonly status: number;
  abstract readonly title: string;
  readonly detail: string;
  readonly extensions: ProblemExtensions;
  readonly headers: Record<string, string>;

  constructor(options: ChatErrorOptions) {
    super(options.detail, { cause: options.cause });
    this.name = new.target.name;
    this.detail = options.detail;
    this.extensions = options.extensions ?? {};
    this.headers = options.headers ?? {};
  }
}

/** A validation failure: one entry per field. */
export interface FieldError {
  /** JSON pointer-ish path to the offending field, e.g. `examples/2/role`. */
  field: string;
  message: string;
}

// ---- 400: the request is wrong -------------------------------------------------------------

export class InvalidRequestError extends ChatError {
  readonly code = 'invalid_request';
  readonly status = 400;
  readonly title = 'The request is not valid';
  constructor(detail: string, errors: FieldError[] = []) {
    super({ detail, extensions: errors.length > 0 ? { errors } : {} });
  }
}

export class InvalidJsonError extends ChatError {
  readonly code = 'invalid_json';
  readonly status = 400;
  readonly title = 'The body is not valid JSON';
  constructor(detail = 'The request body must be a JSON object.') {
    super({ detail });
  }
}

export class InvalidIdError extends ChatError {
  readonly code = 'invalid_id';
  readonly status = 400;
  readonly title = 'The id is not valid';
  constructor(detail: string) {
    super({ detail });
  }
}

export class SpecialTokenRejectedError extends ChatError {
  readonly code = 'special_token_rejected';
  readonly status = 400;
  readonly title = 'The message contains special-token markup';
  constructor(markers: string[]) {
    super({
      detail: `The message contains special-token markup (${markers.join(', ')}), which is not allowed in chat content. Remove it and send again.`,
      extensions: { markers },
    });
  }
}

export class ContextLengthExceededError extends ChatError {
  readonly code = 'context_length_exceeded';
  readonly status = 400;
  readonly title = 'The message does not fit the model context window';
  constructor(detail: string, extensions: ProblemExtensions = {}) {
    super({ detail, extensions });
  }
}

export class ConversationFullError extends ChatError {
  readonly code = 'conversation_full';
  readonly status = 400;
  readonly title = 'The conversation is full';
  constructor(detail: string, extensions: ProblemExtensions = {}) {
    super({ detail, extensions });
  }
}

export class InvalidToolResultsError extends ChatError {
  readonly code = 'invalid_tool_results';
  readonly status = 400;
  readonly title = 'The tool results do not answer the pending calls';
  constructor(detail: string, extensions: ProblemExtensions = {}) {
    super({ detail, extensions });
  }
}

export class ClientToolsNotAllowedError extends ChatError {
  readonly code = 'client_tools_not_allowed';
  readonly status = 400;
  readonly title = 'Client tools need an interactive caller';
  constructor(
    detail = 'This conversation declares client tools, which only an interactive caller can answer (POST /conversations/{id}/messages). Webhook and queued turns run server tools only.',
  ) {
    super({ detail });
  }
}

// ---- 401 / 404 / 409 / 413 / 415 / 422 / 429 --------------------------------------------------

export class UnauthorizedError extends ChatError {
  readonly code = 'unauthorized';
  readonly status = 401;
  readonly title = 'Authentication is required';
  constructor(detail: string, wwwAuthenticate?: string) {
    super({ detail, headers: wwwAuthenticate ? { 'WWW-Authenticate': wwwAuthenticate } : {} });
  }
}

export class InvalidSignatureError extends ChatError {
  readonly code = 'invalid_signature';
  readonly status = 401;
  readonly title = 'The webhook signature is not valid';
  constructor(detail: string) {
    super({ detail });
  }
}

export class NotFoundError extends ChatError {
  readonly code = 'not_found';
  readonly status = 404;
  readonly title = 'Not found';
  constructor(detail: string) {
    super({ detail });
  }
}

export class MethodNotAllowedError extends ChatError {
  readonly code = 'method_not_allowed';
  readonly status = 405;
  readonly title = 'Method not allowed';
  constructor(detail: string, allow: string[]) {
    super({ detail, headers: { Allow: allow.join(', ') } });
  }
}

export class ConversationBusyError extends ChatError {
  readonly code = 'conversation_busy';
  readonly status = 409;
  readonly title = 'The conversation is busy';
  constructor(detail = 'Another message to this conversation was being stored at the same time. Send again.') {
    super({ detail, headers: { 'Retry-After': '1' } });
  }
}

export class IdempotencyInProgressError extends ChatError {
  readonly code = 'idempotency_key_in_use';
  readonly status = 409;
  readonly title = 'A request with this Idempotency-Key is still running';
  constructor(detail = 'A request with this Idempotency-Key is still being processed. Retry after it completes.') {
    super({ detail, headers: { 'Retry-After': '1' } });
  }
}

/** A turn of this conversation waits for client-tool results: nothing else may be sent until it is resolved. */
export class ToolResultsPendingError extends ChatError {
  readonly code = 'tool_results_pending';
  readonly status = 409;
  readonly title = 'A turn is waiting for tool results';
  constructor(pending: {
    turnId: string;
    toolCalls: { id: string; name: string; arguments: string }[];
    expiresAt: string;
  }) {
    super({
      detail:
        `Turn ${pending.turnId} of this conversation is waiting for the results of client tools (until ${pending.expiresAt}). ` +
        'Post them to /conversations/{id}/tool-results, or cancel the turn with DELETE /conversations/{id}/pending-turn, then send again.',
      extensions: pending,
    });
  }
}

export class NoPendingTurnError extends ChatError {
  readonly code = 'no_pending_turn';
  readonly status = 409;
  readonly title = 'No turn is waiting for tool results';
  constructor(
    detail = 'No turn of this conversation is waiting for tool results: it was answered, cancelled or it expired.',
  ) {
    super({ detail });
  }
}

export class PayloadTooLargeError extends ChatError {
  readonly code = 'payload_too_large';
  readonly status = 413;
  readonly title = 'The request body is too large';
  constructor(detail: string) {
    super({ detail });
  }
}

export class UnsupportedMediaTypeError extends ChatError {
  readonly code = 'unsupported_media_type';
  readonly status = 415;
  readonly title = 'Unsupported media type';
  constructor(detail = 'Send the body as application/json.') {
    super({ detail });
  }
}

export class IdempotencyKeyReusedError extends ChatError {
  readonly code = 'idempotency_key_reused';
  readonly status = 422;
  readonly title = 'The Idempotency-Key was used with a different request';
  constructor(detail = 'This Idempotency-Key was already used with a different request body. Use a new key.') {
    super({ detail });
  }
}

export class ContentFilteredError extends ChatError {
  readonly code = 'content_filtered';
  readonly status = 422;
  readonly title = 'The message was blocked by the content filter';
  constructor(categories: Record<string, unknown>) {
    super({
      detail: 'The content filter blocked this message. Rephrase it and send again; nothing was stored.',
      extensions: { categories },
    });
  }
}

export class RateLimitedError extends ChatError {
  readonly code: string;
  readonly status = 429;
  readonly title = 'Too many requests';
  /** The wait as given, before rounding up to whole seconds for the header (retry-after-ms is precise). */
  readonly retryAfterMs: number;
  constructor(detail: string, retryAfterSeconds: number, code = 'rate_limited') {
    const seconds = Math.max(1, Math.ceil(retryAfterSeconds));
    super({ detail, headers: { 'Retry-After': String(seconds) }, extensions: { retryAfterSeconds: seconds } });
    this.code = code;
    this.retryAfterMs = Math.max(0, retryAfterSeconds * 1000);
  }
}

// ---- 5xx: something upstream failed; the request may be retried ------------------------------

export class UpstreamError extends ChatError {
  readonly code: string;
  readonly status: number;
  readonly title: string;
  /** The model's HTTP status, when it answered one (failover moves on after a 5xx, not after a 4xx). */
  readonly upstreamStatus: number | undefined;
  /** The model's own retry-after (retry-after-ms or retry-after), in ms, when it sent one. */
  readonly retryAfterMs: number | undefined;
  constructor(
    kind: 'upstream_error' | 'upstream_unavailable' | 'upstream_timeout',
    detail: string,
    options: {
      retryAfterSeconds?: number;
      cause?: unknown;
      upstreamStatus?: number;
      upstreamRetryAfterMs?: number;
    } = {},
  ) {
    const headers: Record<string, string> =
      options.retryAfterSeconds !== undefined ? { 'Retry-After': String(Math.ceil(options.retryAfterSeconds)) } : {};
    super({ detail, headers, cause: options.cause });
    this.code = kind;
    this.upstreamStatus = options.upstreamStatus;
    this.retryAfterMs = options.upstreamRetryAfterMs;
    this.status = kind === 'upstream_error' ? 502 : kind === 'upstream_unavailable' ? 503 : 504;
    this.title =
      kind === 'upstream_error'
        ? 'The model returned an error'
        : kind === 'upstream_unavailable'
          ? 'The model is unavailable'
          : 'The model did not answer in time';
  }
}

/** The identity provider's signing keys (JWKS) could not be fetched: the token may be fine, so not a 401. */
export class AuthUnavailableError extends ChatError {
  readonly code = 'auth_unavailable';
  readonly status = 503;
  readonly title = 'Sign-in cannot be checked right now';
  constructor(
    detail = "The identity provider's signing keys could not be fetched, so the token cannot be checked. Retry shortly.",
    cause?: unknown,
  ) {
    super({ detail, headers: { 'Retry-After': '5' }, cause });
  }
}

export class StorageUnavailableError extends ChatError {
  readonly code = 'storage_unavailable';
  readonly status = 503;
  readonly title = 'Storage is unavailable';
  constructor(detail = 'Conversation storage did not answer. Retry shortly.', cause?: unknown) {
    super({ detail, headers: { 'Retry-After': '2' }, cause });
  }
}

/**
 * The app's own settings are invalid, so it cannot serve. On Azure the function index fails first (src/index.ts);
 * this is what a route still answering says. Only the settings' names leave the app, never their values.
 */
export class ConfigurationInvalidError extends ChatError {
  readonly code = 'configuration_invalid';
  readonly status = 503;
  readonly title = 'The service is misconfigured';
  constructor(settings: string[], cause?: unknown) {
    super({
      detail: `The app's settings are invalid (${settings.join(', ')}); an operator must fix them. The app's log says why.`,
      extensions: { settings },
      cause,
    });
  }
}

/** Every problem code the API can answer with, for the OpenAPI document and its test. */
export const PROBLEM_CODES = [
  'invalid_request',
  'invalid_json',
  'invalid_id',
  'special_token_rejected',
  'context_length_exceeded',
  'conversation_full',
  'invalid_tool_results',
  'client_tools_not_allowed',
  'unauthorized',
  'invalid_signature',
  'not_found',
  'method_not_allowed',
  'conversation_busy',
  'idempotency_key_in_use',
  'tool_results_pending',
  'no_pending_turn',
  'payload_too_large',
  'unsupported_media_type',
  'idempotency_key_reused',
  'content_filtered',
  'rate_limited',
  'quota_exceeded',
  'conversation_limit_reached',
  'upstream_rate_limited',
  'upstream_error',
  'upstream_unavailable',
  'upstream_timeout',
  'storage_unavailable',
  'auth_unavailable',
  'configuration_invalid',
  'internal_error',
] as const;

/**
 * What each problem code means to a client, for the OpenAPI document and docs/api.md. The codes themselves live in
 * `PROBLEM_CODES` (src/core/errors.ts); the `Record` below makes a code without an entry a compile error.
 */
import { PROBLEM_CODES } from '../core/errors';

export type ProblemCode = (typeof PROBLEM_CODES)[number];

export interface ProblemInfo {
  status: number;
  /** What happened and what the client should do about it. */
  meaning: string;
}

export const PROBLEM_CATALOG: Readonly<Record<ProblemCode, ProblemInfo>> = {
  invalid_request: {
    status: 400,
    meaning: 'A field, query parameter or header is wrong; `errors` lists each field and what to fix.',
  },
  invalid_json: { status: 400, meaning: 'The body is not JSON, or not a JSON object.' },
  invalid_id: { status: 400, meaning: 'The conversation id in the path is not one the API could have issued.' },
  special_token_rejected: {
    status: 400,
    meaning: 'The text contains special-token markup (such as the ChatML im_start marker); `markers` lists it.',
  },
  context_length_exceeded: {
    status: 400,
    meaning: 'The message (with the system message and examples) does not fit the model context window.',
  },
  conversation_full: {
    status: 400,
    meaning: 'With CHAT_TRIM_POLICY=reject: the history no longer fits the context window; start a new conversation.',
  },
  invalid_tool_results: {
    status: 400,
    meaning: 'The posted tool results do not answer exactly the pending calls (`toolCallId`s), or are malformed.',
  },
  client_tools_not_allowed: {
    status: 400,
    meaning:
      'The conversation declares client tools; only interactive callers (not webhooks or queues) can answer them.',
  },
  unauthorized: {
    status: 401,
    meaning: 'No valid caller identity (bearer token or App Service Authentication); see `WWW-Authenticate`.',
  },
  invalid_signature: {
    status: 401,
    meaning: 'A webhook delivery is unsigned, wrongly signed, malformed, or outside the timestamp tolerance.',
  },
  not_found: {
    status: 404,
    meaning: 'No such conversation for this caller (another caller’s conversation looks the same), or no such route.',
  },
  method_not_allowed: { status: 405, meaning: 'The route exists but not with this method; see `Allow`.' },
  conversation_busy: {
    status: 409,
    meaning: 'Another message to the same conversation was stored at the same time; nothing was stored. Send again.',
  },
  idempotency_key_in_use: {
    status: 409,
    meaning: 'A request with this `Idempotency-Key` is still running; retry after `Retry-After`.',
  },
  tool_results_pending: {
    status: 409,
    meaning:
      'A turn waits for client-tool results (`turnId`, `toolCalls`, `expiresAt`): post them or cancel the turn first.',
  },
  no_pending_turn: {
    status: 409,
    meaning: 'No turn waits for tool results: it was answered, cancelled or expired. Nothing was stored.',
  },
  payload_too_large: { status: 413, meaning: 'The body is larger than LIMIT_BODY_BYTES.' },
  unsupported_media_type: { status: 415, meaning: 'The body is not sent as `application/json`.' },
  idempotency_key_reused: {
    status: 422,
    meaning: 'This `Idempotency-Key` was already used with a different body; use a new key.',
  },
  content_filtered: {
    status: 422,
    meaning: 'The content filter blocked the prompt; `categories` says why. Nothing was stored.',
  },
  rate_limited: {
    status: 429,
    meaning: 'The caller sent more than LIMIT_REQUESTS_PER_MINUTE messages this minute; wait `Retry-After` seconds.',
  },
  quota_exceeded: {
    status: 429,
    meaning: 'The caller used LIMIT_TOKENS_PER_DAY model tokens today (UTC); the quota starts over at midnight UTC.',
  },
  conversation_limit_reached: {
    status: 429,
    meaning: 'The caller keeps LIMIT_CONVERSATIONS_PER_CALLER conversations already; delete some first.',
  },
  upstream_rate_limited: {
    status: 429,
    meaning: 'The model deployment is rate limited after the app’s own retries; wait `Retry-After` seconds.',
  },
  upstream_error: {
    status: 502,
    meaning: 'The model answered with an error (or refused the app’s credentials); nothing was stored.',
  },
  upstream_unavailable: { status: 503, meaning: 'The model endpoint could not be reached or is unavailable.' },
  upstream_timeout: { status: 504, meaning: 'The model did not answer within AZURE_OPENAI_TIMEOUT_MS.' },
  storage_unavailable: { status: 503, meaning: 'Table Storage did not answer; retry shortly.' },
  auth_unavailable: {
    status: 503,
    meaning: 'AUTH_MODE=jwt: the signing keys (JWKS) could not be fetched, so the token cannot be checked yet.',
  },
  configuration_invalid: {
    status: 503,
    meaning:
      'The app’s settings are invalid (`settings` names them); nothing works until an operator fixes them. On Azure the function index fails instead.',
  },
  internal_error: {
    status: 500,
    meaning: 'A bug on our side; the body carries only the `requestId` to report, never details.',
  },
};

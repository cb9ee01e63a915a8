/**
 * Request parsing for the handlers: JSON bodies checked against a schema (unknown fields refused), path ids,
 * paging parameters and the Idempotency-Key header. Every failure is a 4xx ChatError that says what to fix.
 */
import type { HttpRequest } from '@azure/functions';
import type { z } from 'zod';
import {
  InvalidIdError,
  InvalidJsonError,
  InvalidRequestError,
  PayloadTooLargeError,
  UnsupportedMediaTypeError,
  type FieldError,
} from '../core/errors';

/** Reads the raw body bytes once, refusing bodies over `maxBytes` (checked before and after reading). */
export async function readBodyBytes(request: HttpRequest, maxBytes: number): Promise<Buffer> {
  const declared = Number(request.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > maxBytes) throw tooLarge(maxBytes);
  const bytes = Buffer.from(await request.arrayBuffer());
  if (bytes.byteLength > maxBytes) throw tooLarge(maxBytes);
  return bytes;
}

function tooLarge(maxBytes: number): PayloadTooLargeError {
  return new PayloadTooLargeError(`The request body is larger than ${maxBytes} bytes.`);
}

export function parseJsonBytes<S extends z.ZodType>(request: HttpRequest, bytes: Buffer, schema: S): z.infer<S> {
  const contentType = request.headers.get('content-type') ?? '';
  if (!/^application\/([a-z0-9.+-]*\+)?json\b/i.test(contentType)) throw new UnsupportedMediaTypeError();
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new InvalidJsonError('The request body is not valid JSON.');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new InvalidJsonError('The request body must be a JSON object.');
  }
  const protoKey = findProtoKey(value);
  if (protoKey !== undefined) {
    throw new InvalidRequestError(`The request is not valid: ${protoKey}: the key __proto__ is reserved.`, [
      { field: protoKey, message: 'the key __proto__ is reserved' },
    ]);
  }
  return validate(schema, value);
}

/**
 * The path of the first `__proto__` key in a parsed body. JSON.parse keeps it as an own key, but a schema copying
 * the object (zod's record) skips it, since assigning it to a plain object would set the prototype: refused here,
 * never silently dropped.
 */
function findProtoKey(body: object): string | undefined {
  // Iterative: a deeply nested body must not exhaust the stack.
  const pending: [unknown, string][] = [[body, '']];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const [value, path] = next;
    if (value === null || typeof value !== 'object') continue;
    for (const [key, inner] of Object.entries(value)) {
      const field = path ? `${path}/${key}` : key;
      if (key === '__proto__') return field;
      pending.push([inner, field]);
    }
  }
  return undefined;
}

/**
 * Reads and validates a JSON object body. `emptyAs`: what an empty body means, for routes whose every field is
 * optional (then no body and no content type are needed).
 */
export async function readJson<S extends z.ZodType>(
  request: HttpRequest,
  schema: S,
  maxBytes: number,
  options: { emptyAs?: object } = {},
): Promise<z.infer<S>> {
  const bytes = await readBodyBytes(request, maxBytes);
  if (bytes.byteLength === 0 && options.emptyAs !== undefined) return validate(schema, options.emptyAs);
  return parseJsonBytes(request, bytes, schema);
}

export function validate<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const errors: FieldError[] = parsed.error.issues.map((issue) => {
    const field = issue.path.map(String).join('/');
    if (issue.code === 'unrecognized_keys') {
      return {
        field: field || '(body)',
        message: `unknown field${issue.keys.length > 1 ? 's' : ''}: ${issue.keys.join(', ')}`,
      };
    }
    if (issue.code === 'invalid_key') {
      // zod's own message is "Invalid key in record"; the key schema's says which keys are allowed.
      return { field: field || '(body)', message: issue.issues[0]?.message ?? issue.message };
    }
    return { field: field || '(body)', message: issue.message };
  });
  const summary = errors.map((error) => `${error.field}: ${error.message}`).join('; ');
  throw new InvalidRequestError(`The request is not valid: ${summary}.`, errors);
}

const CONVERSATION_ID = /^[A-Za-z0-9_-]{1,128}$/;

/** Conversation ids are the ones POST /conversations returns; anything else cannot name a stored conversation. */
export function parseConversationId(raw: string | undefined): string {
  if (raw === undefined || !CONVERSATION_ID.test(raw)) {
    const shown = raw === undefined ? '(missing)' : raw.length > 64 ? `${raw.slice(0, 64)}…` : raw;
    throw new InvalidIdError(
      `"${shown}" is not a conversation id: ids are 1 to 128 letters, digits, '-' or '_' as returned by POST /api/conversations.`,
    );
  }
  return raw;
}

export function parsePage(
  request: HttpRequest,
  defaults: { limit: number; max: number },
): { limit: number; cursor?: string } {
  const rawLimit = request.query.get('limit');
  let limit = defaults.limit;
  if (rawLimit !== null) {
    limit = Number(rawLimit);
    if (!/^\d+$/.test(rawLimit) || limit < 1 || limit > defaults.max) {
      throw new InvalidRequestError(`limit must be a whole number from 1 to ${defaults.max}.`, [
        { field: 'limit', message: `expected 1 to ${defaults.max}` },
      ]);
    }
  }
  const cursor = request.query.get('cursor');
  if (cursor !== null && !/^[A-Za-z0-9_.-]{1,1024}$/.test(cursor)) {
    throw new InvalidRequestError('The cursor is not one this API returned.', [
      { field: 'cursor', message: 'unknown cursor' },
    ]);
  }
  return { limit, ...(cursor !== null ? { cursor } : {}) };
}

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

export function parseIdempotencyKey(request: HttpRequest): string | undefined {
  const key = request.headers.get('idempotency-key');
  if (key === null) return undefined;
  if (!IDEMPOTENCY_KEY.test(key)) {
    throw new InvalidRequestError('Idempotency-Key must be 1 to 255 visible ASCII characters, e.g. a UUID.', [
      { field: 'Idempotency-Key', message: 'expected 1 to 255 visible ASCII characters' },
    ]);
  }
  return key;
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}) {
  return {
    status,
    headers: { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store', ...headers },
    body: JSON.stringify(body),
  };
}

/**
 * The one place errors become HTTP responses: RFC 9457 `application/problem+json` with a stable `code`.
 * A ChatError says what to fix; anything else is a bug, logged with its stack and answered as an opaque 500
 * that carries only the request id, never a message, stack or secret.
 */
import type { HttpResponseInit, InvocationContext } from '@azure/functions';
import { ChatError } from '../core/errors';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  instance?: string;
  requestId?: string;
  [extension: string]: unknown;
}

export function problemTypeUri(code: string): string {
  return `urn:chat-api:problem:${code}`;
}

export function toProblem(
  error: unknown,
  requestId?: string,
  instance?: string,
): { body: ProblemBody; headers: Record<string, string> } {
  if (error instanceof ChatError) {
    const body: ProblemBody = {
      type: problemTypeUri(error.code),
      title: error.title,
      status: error.status,
      detail: error.detail,
      code: error.code,
      ...(instance ? { instance } : {}),
      ...(requestId ? { requestId } : {}),
    };
    // Extensions follow the standard members and can never overwrite them.
    for (const [name, value] of Object.entries(error.extensions)) if (!(name in body)) body[name] = value;
    return { body, headers: error.headers };
  }
  return {
    body: {
      type: problemTypeUri('internal_error'),
      title: 'Internal Server Error',
      status: 500,
      detail: 'Something went wrong on our side. Retry later; if it persists, report the requestId.',
      code: 'internal_error',
      ...(instance ? { instance } : {}),
      ...(requestId ? { requestId } : {}),
    },
    headers: {},
  };
}

export function problemResponse(error: unknown, context?: InvocationContext, instance?: string): HttpResponseInit {
  if (!(error instanceof ChatError)) {
    const detail = error instanceof Error ? (error.stack ?? error.message) : String(error);
    (context?.error ?? console.error).call(context, `Unhandled error: ${detail}`);
  } else if (error.status >= 500) {
    const cause = error.cause instanceof Error ? ` (cause: ${error.cause.message})` : '';
    (context?.warn ?? console.warn).call(context, `${error.code}: ${error.detail}${cause}`);
  }
  const { body, headers } = toProblem(error, context?.invocationId, instance);
  return {
    status: body.status,
    headers: { ...headers, 'Content-Type': PROBLEM_CONTENT_TYPE, 'Cache-Control': 'no-store' },
    body: JSON.stringify(body),
  };
}

/** The problem body of a failure stored with a queued turn (the same members a synchronous answer carries). */
export function problemFromRecord(failure: {
  code: string;
  status: number;
  title: string;
  detail: string;
  extensions?: Record<string, unknown>;
}): ProblemBody {
  const body: ProblemBody = {
    type: problemTypeUri(failure.code),
    title: failure.title,
    status: failure.status,
    detail: failure.detail,
    code: failure.code,
  };
  for (const [name, value] of Object.entries(failure.extensions ?? {})) if (!(name in body)) body[name] = value;
  return body;
}

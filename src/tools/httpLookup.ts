/**
 * `http_lookup`: a read-only GET of a path under one configured base URL (TOOL_HTTP_LOOKUP_URL), authenticated with
 * the app's managed identity (a bearer token for TOOL_HTTP_LOOKUP_SCOPE) or a key header. The model chooses only
 * the relative path and query: it cannot leave the base URL, send a body or use another method.
 *
 * The path is built, not passed through: each `/`-separated segment must be 1 or more of `A-Z a-z 0-9 . _ ~ -` (RFC
 * 3986's unreserved characters) and not dots alone, so no `%` (no encoded `/`, `\` or `.`, single or double), no `;`
 * (`..;/` path parameters), no `\`, no empty segment; each segment is percent-encoded again on the way out. The query
 * (after `?`) is parsed as form data and serialised anew, so nothing in it reaches the path. Redirects are refused.
 *
 * The looked-up service is told who the turn runs for, so it can authorise per user: `x-chat-caller` carries the
 * caller's id (percent-encoded UTF-8) and `x-chat-caller-kind` its kind (`user`, `integration` or `local`). It may
 * trust them because the request is authenticated as this app, and only then.
 *
 * 2xx and 4xx answers are the tool's output (the model reads "not found" as an answer); 5xx and failures to reach the
 * service throw with a generic message: what went wrong in detail (identity endpoint, addresses, TLS) is logged, never
 * shown to the model or the user.
 */
import * as z from 'zod';
import type { Logger } from '../core/dependencies';
import { defineTool } from './defineTool';

export const HTTP_LOOKUP = 'http_lookup';

export interface HttpLookupOptions {
  /** The base URL, e.g. `https://orders.internal.example.com/api/`. */
  baseUrl: string;
  description?: string;
  /** A key sent in `apiKeyHeader`. */
  apiKey?: string;
  apiKeyHeader?: string;
  /** A bearer token for the managed identity (getBearerTokenProvider for TOOL_HTTP_LOOKUP_SCOPE). */
  getToken?: () => Promise<string>;
  /** Most bytes read from the answer; the rest is cut off (the loop bounds the output again). */
  maxResponseBytes?: number;
  fetch?: typeof fetch;
  /** Where the details of a failed lookup go (the model gets a generic message). */
  log?: Pick<Logger, 'warn'>;
}

export const DEFAULT_HTTP_LOOKUP_DESCRIPTION =
  'Look up a record in the company service by its path (read-only), e.g. orders/12345.';
const DEFAULT_MAX_RESPONSE_BYTES = 1_000_000;
/** Headers naming the caller to the looked-up service. */
export const CALLER_HEADER = 'x-chat-caller';
export const CALLER_KIND_HEADER = 'x-chat-caller-kind';

/** A path segment: RFC 3986 unreserved characters only. */
const SEGMENT = /^[A-Za-z0-9._~-]+$/;
/** What a query may hold before it is parsed: printable ASCII without `#`. */
const QUERY = /^[\x21-\x22\x24-\x7e]*$/;
const PATH_RULE =
  'segments of letters, digits, . _ ~ or - separated by single slashes (no %, ;, \\, spaces, . or .. segments), ' +
  'then optionally ? and a query';

/** The segments and query of `path`, or why it is refused. */
function parsePath(path: string): { segments: string[]; query: URLSearchParams } | string {
  const mark = path.indexOf('?');
  const pathPart = mark === -1 ? path : path.slice(0, mark);
  const queryPart = mark === -1 ? '' : path.slice(mark + 1);
  const segments = pathPart.split('/');
  for (const segment of segments) {
    if (segment === '') return 'a relative path without empty segments (no leading, trailing or double slash)';
    if (!SEGMENT.test(segment)) return `the segment ${JSON.stringify(segment)} is not allowed: ${PATH_RULE}`;
    if (/^\.+$/.test(segment)) return 'no segments made only of dots (. or ..)';
  }
  if (!QUERY.test(queryPart)) return 'the query must be printable ASCII without spaces or #';
  const query = new URLSearchParams(queryPart);
  for (const [key, value] of query) {
    if (hasControlCharacter(key + value)) return 'the query must not hold control characters';
  }
  return { segments, query };
}

const parameters = z.object({
  path: z
    .string()
    .min(1)
    .max(512)
    .superRefine((path, ctx) => {
      const parsed = parsePath(path);
      if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed });
    })
    .describe(
      'Path under the service, with an optional query, e.g. orders/12345 or customers?email=a%40b.example. ' +
        'Segments use only letters, digits, . _ ~ and -.',
    ),
});

/** The base URL with exactly one trailing slash, so paths go beneath it. */
function directoryUrl(baseUrl: string): URL {
  const url = new URL(baseUrl);
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  url.search = '';
  url.hash = '';
  return url;
}

/** The URL for an accepted path: beneath `base`, every segment percent-encoded, the query serialised anew. */
function lookupUrl(base: URL, path: string): URL {
  const parsed = parsePath(path);
  if (typeof parsed === 'string') throw new Error(parsed);
  const url = new URL(base);
  url.pathname = base.pathname + parsed.segments.map(encodeURIComponent).join('/');
  url.search = parsed.query.toString();
  if (url.origin !== base.origin || !url.pathname.startsWith(base.pathname)) {
    throw new Error('The path leaves the service.');
  }
  return url;
}

export function createHttpLookup(options: HttpLookupOptions) {
  const base = directoryUrl(options.baseUrl);
  const doFetch = options.fetch ?? fetch;
  const maxBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  /** Logs the detail of `error` and answers an Error whose message is only `message`. */
  const unavailable = (message: string, error: unknown): Error => {
    options.log?.warn(`http_lookup: ${message} ${detailOf(error)}`);
    return new Error(message);
  };
  return defineTool({
    name: HTTP_LOOKUP,
    description: options.description ?? DEFAULT_HTTP_LOOKUP_DESCRIPTION,
    parameters,
    handler: async ({ path }, { caller, signal }) => {
      const url = lookupUrl(base, path);
      const headers: Record<string, string> = {
        accept: 'application/json, text/plain;q=0.9, */*;q=0.1',
        [CALLER_HEADER]: encodeURIComponent(caller.id),
        [CALLER_KIND_HEADER]: caller.kind,
      };
      if (options.getToken) {
        try {
          headers['authorization'] = `Bearer ${await options.getToken()}`;
        } catch (error) {
          throw unavailable('The service is not available: the app could not authenticate to it.', error);
        }
      } else if (options.apiKey) headers[options.apiKeyHeader ?? 'x-api-key'] = options.apiKey;
      let response: Response;
      try {
        response = await doFetch(url, { method: 'GET', headers, redirect: 'error', signal });
      } catch (error) {
        // A timeout or an abandoned turn: the loop reports it.
        if (signal.aborted) throw error;
        throw unavailable('The service could not be reached.', error);
      }
      if (response.status >= 500) {
        await response.body?.cancel().catch(() => {});
        options.log?.warn(`http_lookup: GET ${url.pathname} answered HTTP ${response.status}.`);
        throw new Error(`The service answered HTTP ${response.status}.`);
      }
      let body: string;
      try {
        body = await readAtMost(response, maxBytes);
      } catch (error) {
        if (signal.aborted) throw error;
        throw unavailable('The service’s answer could not be read.', error);
      }
      if (response.ok) return body;
      return { status: response.status, body };
    },
  });
}

function hasControlCharacter(text: string): boolean {
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (code < 0x20 || code === 0x7f) return true;
  }
  return false;
}

/** What a failure was, with its causes (Node's fetch says only "fetch failed"; the cause names the address). */
function detailOf(error: unknown): string {
  const parts: string[] = [];
  for (let current = error, depth = 0; current !== undefined && depth < 4; depth++) {
    parts.push(current instanceof Error ? `${current.name}: ${current.message}` : String(current));
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.join(' <- ');
}

/** The body as text, at most `maxBytes` of it (a cut multi-byte character is dropped by the decoder's replacement). */
async function readAtMost(response: Response, maxBytes: number): Promise<string> {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
    if (size >= maxBytes) {
      await reader.cancel();
      break;
    }
  }
  return new TextDecoder().decode(Buffer.concat(chunks).subarray(0, maxBytes));
}

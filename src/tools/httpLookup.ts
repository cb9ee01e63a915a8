/**
 * `http_lookup`: a read-only GET of a path under one configured base URL (TOOL_HTTP_LOOKUP_URL), authenticated with
 * the app's managed identity (a bearer token for TOOL_HTTP_LOOKUP_SCOPE) or a key header. The model chooses only
 * the relative path: it cannot leave the base URL (no `..`, no scheme, no host, redirects refused), send a body or use
 * another method. 2xx and 4xx answers are the tool's output (the model reads "not found" as an answer); 5xx and
 * network failures throw, which the loop reports to the model as a failed tool.
 */
import { z } from 'zod';
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
}

export const DEFAULT_HTTP_LOOKUP_DESCRIPTION =
  'Look up a record in the company service by its path (read-only), e.g. orders/12345.';
const DEFAULT_MAX_RESPONSE_BYTES = 1_000_000;

const parameters = z.object({
  path: z
    .string()
    .min(1)
    .max(512)
    .regex(/^[A-Za-z0-9._~!$&'()*+,;=:@%/?-]+$/, 'only URL path and query characters')
    .refine((path) => !path.startsWith('/') && !path.includes('//'), 'a relative path (no leading / or //)')
    .refine(
      (path) =>
        !path
          .split('?')[0]!
          .split('/')
          .some((segment) => segment === '..' || segment === '.' || /%2e/i.test(segment) || /%2f/i.test(segment)),
      'no . or .. segments',
    )
    .describe('Path under the service, with an optional query, e.g. orders/12345 or customers?email=a%40b.example'),
});

/** The base URL with exactly one trailing slash, so relative paths resolve beneath it. */
function directoryUrl(baseUrl: string): URL {
  const url = new URL(baseUrl);
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  url.search = '';
  url.hash = '';
  return url;
}

export function createHttpLookup(options: HttpLookupOptions) {
  const base = directoryUrl(options.baseUrl);
  const doFetch = options.fetch ?? fetch;
  const maxBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  return defineTool({
    name: HTTP_LOOKUP,
    description: options.description ?? DEFAULT_HTTP_LOOKUP_DESCRIPTION,
    parameters,
    handler: async ({ path }, { signal }) => {
      const url = new URL(path, base);
      if (url.origin !== base.origin || !url.pathname.startsWith(base.pathname)) {
        throw new Error('The path leaves the service.');
      }
      const headers: Record<string, string> = { accept: 'application/json, text/plain;q=0.9, */*;q=0.1' };
      if (options.getToken) headers['authorization'] = `Bearer ${await options.getToken()}`;
      else if (options.apiKey) headers[options.apiKeyHeader ?? 'x-api-key'] = options.apiKey;
      const response = await doFetch(url, { method: 'GET', headers, redirect: 'error', signal });
      if (response.status >= 500) {
        await response.body?.cancel();
        throw new Error(`The service answered HTTP ${response.status}.`);
      }
      const body = await readAtMost(response, maxBytes);
      if (response.ok) return body;
      return { status: response.status, body };
    },
  });
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

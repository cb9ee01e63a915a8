/**
 * CORS as `func start` applies local.settings.json `Host.CORS` (a comma-separated list of origins, or `*`) and
 * `Host.CORSCredentials`: the Functions host runs ASP.NET Core's CORS middleware before routing, allowing any method
 * and any header for the allowed origins. So a preflight (OPTIONS with Access-Control-Request-Method) is answered 204
 * by the host, whatever the route, echoing the requested method and headers; an allowed origin's other requests get
 * Access-Control-Allow-Origin on their response. An origin not allowed gets no CORS headers, and the browser refuses.
 */
import type * as http from 'node:http';

export interface CorsPolicy {
  /** Origins such as `http://localhost:5173`; `*` allows any origin. */
  allowedOrigins: string[];
  /** Access-Control-Allow-Credentials: true. Not with `*` (the CORS protocol forbids it). */
  supportCredentials?: boolean;
}

/** Host.CORS and Host.CORSCredentials of a local.settings.json `Host` section; undefined when CORS is not set. */
export function corsFromHostSettings(hostSettings: Record<string, unknown> | undefined): CorsPolicy | undefined {
  const origins = hostSettings?.CORS;
  if (typeof origins !== 'string' || origins.trim() === '') return undefined;
  const credentials = hostSettings?.CORSCredentials;
  return {
    allowedOrigins: origins
      .split(',')
      .map((origin) => origin.trim())
      .filter(Boolean),
    supportCredentials: credentials === true || String(credentials).toLowerCase() === 'true',
  };
}

/** Checks the policy once, at start, as the host does. */
export function assertValidCors(policy: CorsPolicy): void {
  if (policy.supportCredentials && policy.allowedOrigins.includes('*')) {
    throw new Error(
      'Host.CORS "*" with Host.CORSCredentials true: the CORS protocol does not allow credentials with any origin. ' +
        'List the origins instead.',
    );
  }
}

const normalise = (origin: string) => origin.replace(/\/+$/, '').toLowerCase();

/** What to answer for this request: a preflight of its own, CORS headers for the response, or nothing. */
export function corsFor(
  policy: CorsPolicy | undefined,
  req: http.IncomingMessage,
): { preflight: boolean; headers: Record<string, string> } {
  const origin = req.headers.origin;
  const preflight =
    (req.method ?? '').toUpperCase() === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined;
  if (!policy || origin === undefined) return { preflight: false, headers: {} };
  const any = policy.allowedOrigins.includes('*');
  const allowed = any || policy.allowedOrigins.some((entry) => normalise(entry) === normalise(origin));
  if (!allowed) return { preflight, headers: {} };
  const headers: Record<string, string> = { 'Access-Control-Allow-Origin': any ? '*' : origin };
  if (!any) headers.Vary = 'Origin';
  if (policy.supportCredentials) headers['Access-Control-Allow-Credentials'] = 'true';
  if (preflight) {
    headers['Access-Control-Allow-Methods'] = String(req.headers['access-control-request-method']);
    const requested = req.headers['access-control-request-headers'];
    if (requested) headers['Access-Control-Allow-Headers'] = String(requested);
  }
  return { preflight, headers };
}

/** Adds `headers` to the response just before its head goes out, unless the function set them itself. */
export function addHeadersOnWrite(res: http.ServerResponse, headers: Record<string, string>): void {
  if (Object.keys(headers).length === 0) return;
  const writeHead = res.writeHead.bind(res) as (...args: unknown[]) => http.ServerResponse;
  // Every way out (writeHead, or the implicit head of write/end/flushHeaders) goes through writeHead.
  res.writeHead = ((...args: unknown[]) => {
    for (const [name, value] of Object.entries(headers)) {
      if (name === 'Vary') {
        const vary = res.getHeader('Vary');
        if (vary === undefined) res.setHeader('Vary', value);
        else if (!String(vary).toLowerCase().includes('origin')) res.setHeader('Vary', `${String(vary)}, ${value}`);
      } else if (!res.hasHeader(name)) {
        res.setHeader(name, value);
      }
    }
    return writeHead(...args);
  }) as typeof res.writeHead;
}

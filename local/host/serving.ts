/**
 * HTTP serving: each request is routed, turned into the library's own `HttpRequest` and `InvocationContext`, run
 * through the worker's hooks and the handler, and the `HttpResponse` written back (streamed bodies chunk by chunk);
 * host-level failures (no route, wrong method, body too large) answer with the app's problem+json. The app's logs
 * are printed here too.
 */
import { randomUUID } from 'node:crypto';
import * as http from 'node:http';
import { performance } from 'node:perf_hooks';
import { format } from 'node:util';
import { HttpRequest, HttpResponse, InvocationContext } from '@azure/functions';
import type {
  Cookie,
  EffectiveFunctionOptions,
  FunctionInput,
  FunctionOutput,
  FunctionTrigger,
  HttpResponseInit,
  LogLevel,
  TraceContext,
} from '@azure/functions';
import { MethodNotAllowedError, NotFoundError, PayloadTooLargeError } from '../../src/core/errors';
import { PROBLEM_CONTENT_TYPE, toProblem } from '../../src/http/problem';
import {
  printLog,
  type CoreFunctionCallback,
  type CoreFunctionMetadata,
  type CoreStandIn,
  type HookName,
} from './functionsCore';
import { addHeadersOnWrite, corsFor, type CorsPolicy } from './cors';
import { lookupRoute, type RouteEntry } from './routing';

// ---- Serving ----------------------------------------------------------------------------------------------

/** Headers that describe one hop, which the library's own HTTP-stream proxy also refuses to forward. */
const HOP_BY_HOP_HEADERS = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'trailers',
  'transfer-encoding',
  'upgrade',
]);

export interface HostContext {
  entries: RouteEntry[];
  state: CoreStandIn;
  appHookData: Record<string, unknown>;
  log: (line: string) => void;
  logError: (line: string) => void;
  maxRequestBodyBytes: number;
  fallbackOrigin: string;
  cors?: CorsPolicy;
}

/** Tracks whether the client went away before the response finished. */
class ClientConnection {
  gone = false;
  readonly #listeners = new Set<() => void>();

  constructor(res: http.ServerResponse) {
    res.once('close', () => {
      if (res.writableFinished) return;
      this.gone = true;
      for (const listener of this.#listeners) listener();
    });
  }

  onGone(listener: () => void): () => void {
    if (this.gone) listener();
    else this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}

class RequestBodyTooLargeError extends Error {}

export async function handleRequest(
  host: HostContext,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<void> {
  const started = performance.now();
  const method = (req.method ?? 'GET').toUpperCase();
  const pathname = (req.url ?? '/').split('?')[0] ?? '/';
  const connection = new ClientConnection(res);
  // A write after the client left fails; that is expected and must not take the process down.
  res.on('error', () => undefined);
  res.once('close', () => {
    const elapsed = Math.round(performance.now() - started);
    const note = connection.gone ? ', client disconnected' : '';
    host.log(`${method} ${pathname} -> ${res.statusCode} (${elapsed} ms${note})`);
  });

  try {
    const cors = corsFor(host.cors, req);
    if (cors.preflight && host.cors) {
      // Answered by the host before routing, as the Functions host's CORS middleware does.
      res.writeHead(204, cors.headers).end();
      return;
    }
    addHeadersOnWrite(res, cors.headers);
    const url = requestUrl(req, host.fallbackOrigin);
    const lookup = lookupRoute(host.entries, url.pathname, method);
    if (lookup.kind === 'not-found') {
      const detail = `No function is registered for ${method} ${url.pathname}.`;
      return sendProblem(res, new NotFoundError(detail), url.pathname);
    }
    if (lookup.kind === 'method-not-allowed') {
      const detail = `${url.pathname} does not accept ${method}; it accepts ${lookup.allow.join(', ')}.`;
      return sendProblem(res, new MethodNotAllowedError(detail, lookup.allow), url.pathname);
    }

    let body: Buffer;
    try {
      body = await readRequestBody(req, host.maxRequestBodyBytes);
    } catch (error) {
      if (!(error instanceof RequestBodyTooLargeError)) throw error;
      res.setHeader('Connection', 'close');
      req.resume(); // discard the rest so the client, still sending, can read the answer
      const detail = `The request body is larger than the ${host.maxRequestBodyBytes} bytes allowed.`;
      return sendProblem(res, new PayloadTooLargeError(detail), url.pathname);
    }
    await invokeFunction(host, lookup.entry, lookup.params, { req, res, url, method, body, connection });
  } catch (error) {
    if (connection.gone) return; // e.g. the client left while sending the body
    host.logError(`${method} ${pathname} failed in the local host: ${describeError(error)}`);
    sendProblem(res, undefined, pathname);
  }
}

function requestUrl(req: http.IncomingMessage, fallbackOrigin: string): URL {
  try {
    return new URL(req.url ?? '/', `http://${req.headers.host ?? ''}`);
  } catch {
    return new URL(req.url ?? '/', fallbackOrigin);
  }
}

async function readRequestBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw new RequestBodyTooLargeError();
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) throw new RequestBodyTooLargeError();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

interface IncomingCall {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  url: URL;
  method: string;
  body: Buffer;
  connection: ClientConnection;
}

async function invokeFunction(
  host: HostContext,
  entry: RouteEntry,
  params: Record<string, string>,
  call: IncomingCall,
): Promise<void> {
  const { metadata } = entry.registration;
  const functionName = metadata.name;
  const invocationId = randomUUID();
  const context = new InvocationContext({
    invocationId,
    functionName,
    logHandler: (level, ...args) => userLog(host, context, level, format(...args)),
    traceContext: traceContextOf(call.req),
    options: effectiveOptionsOf(metadata),
  });
  const request = new HttpRequest({
    method: call.method,
    url: call.url.toString(),
    headers: flattenHeaders(call.req.headers),
    params,
    // No `query`: the library then reads it from the URL, keeping repeated keys, as it does under the real host.
    body: call.body.length > 0 ? { bytes: call.body } : undefined,
  });

  let result: unknown;
  try {
    result = await runInvocation(host, context, [request], entry.registration.handler);
  } catch (error) {
    host.logError(`[${functionName}] invocation ${invocationId} failed: ${describeError(error)}`);
    // Like the Functions host, any exception is a 500, whatever it is; the invocation id ties it to the log.
    return sendProblem(call.res, undefined, call.url.pathname, invocationId);
  }
  try {
    await sendHttpResult(host, functionName, result, call);
  } catch (error) {
    host.logError(
      `[${functionName}] invocation ${invocationId} returned an unusable response: ${describeError(error)}`,
    );
    sendProblem(call.res, undefined, call.url.pathname, invocationId);
  }
}

/** The worker's order: preInvocation hooks (which may swap inputs or handler), the handler, postInvocation hooks. */
export async function runInvocation(
  host: HostContext,
  context: InvocationContext,
  inputs: unknown[],
  handler: CoreFunctionCallback,
): Promise<unknown> {
  const hookData: Record<string, unknown> = {};
  const pre: Record<string, unknown> = {
    hookData,
    appHookData: host.appHookData,
    invocationContext: context,
    inputs,
    functionCallback: handler,
  };
  await runHooks(host.state, 'preInvocation', pre);
  const finalInputs = Array.isArray(pre.inputs) ? (pre.inputs as unknown[]) : inputs;
  const finalHandler =
    typeof pre.functionCallback === 'function' ? (pre.functionCallback as CoreFunctionCallback) : handler;

  const post: Record<string, unknown> = {
    hookData,
    appHookData: host.appHookData,
    invocationContext: context,
    inputs: finalInputs,
    result: null,
    error: null,
  };
  try {
    post.result = await finalHandler(...finalInputs, context);
  } catch (error) {
    post.error = error;
  }
  await runHooks(host.state, 'postInvocation', post);
  if (post.error !== null && post.error !== undefined) throw post.error;
  return post.result;
}

export async function runHooks(
  state: CoreStandIn,
  hookName: HookName,
  context: Record<string, unknown>,
): Promise<void> {
  for (const callback of [...state.hooks[hookName]]) await callback(context);
}

export function effectiveOptionsOf(metadata: CoreFunctionMetadata): EffectiveFunctionOptions {
  let trigger: FunctionTrigger | undefined;
  let returnBinding: FunctionOutput | undefined;
  const extraInputs: FunctionInput[] = [];
  const extraOutputs: FunctionOutput[] = [];
  for (const [name, binding] of Object.entries(metadata.bindings)) {
    const option = { ...binding, name, type: binding.type ?? 'unknown' };
    if (binding.type?.toLowerCase().endsWith('trigger')) trigger = option;
    else if (name === '$return') returnBinding = option;
    else if (binding.direction === 'in') extraInputs.push(option);
    else extraOutputs.push(option);
  }
  return { trigger: trigger ?? { name: 'unknown', type: 'unknown' }, return: returnBinding, extraInputs, extraOutputs };
}

function traceContextOf(req: http.IncomingMessage): TraceContext | undefined {
  const traceParent = req.headers.traceparent;
  if (typeof traceParent !== 'string') return undefined;
  const traceState = typeof req.headers.tracestate === 'string' ? req.headers.tracestate : undefined;
  return { traceParent, traceState, attributes: {} };
}

function flattenHeaders(headers: http.IncomingHttpHeaders): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) flat[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return flat;
}

/** Bodies whose size is known up front go out with Content-Length; everything else streams chunk by chunk. */
function hasFixedSizeBody(result: object): boolean {
  if (result instanceof HttpResponse) return false;
  const init = result as HttpResponseInit;
  if (init.jsonBody !== undefined && init.jsonBody !== null) return true;
  const body = init.body;
  return (
    body === undefined ||
    body === null ||
    typeof body === 'string' ||
    body instanceof ArrayBuffer ||
    ArrayBuffer.isView(body) ||
    body instanceof URLSearchParams ||
    body instanceof Blob
  );
}

async function sendHttpResult(
  host: HostContext,
  functionName: string,
  result: unknown,
  call: IncomingCall,
): Promise<void> {
  const { res, connection } = call;
  if (result === undefined || result === null) {
    res.writeHead(204).end();
    return;
  }
  if (typeof result !== 'object') {
    throw new TypeError('The HTTP response must be an object with optional "body", "status", "headers" and "cookies".');
  }
  // The same normalisation the library applies before handing a response to the host.
  const response = result instanceof HttpResponse ? result : new HttpResponse(result as HttpResponseInit);
  if (connection.gone) {
    await response.body
      ?.cancel(new Error('The client disconnected before the response started.'))
      .catch(() => undefined);
    return;
  }

  const connectionHeader = (response.headers.get('connection') ?? '').toLowerCase().split(',');
  for (const [name, value] of response.headers) {
    if (name === 'set-cookie' || HOP_BY_HOP_HEADERS.has(name) || connectionHeader.includes(name)) continue;
    res.setHeader(name, value);
  }
  const setCookies = [...response.headers.getSetCookie(), ...response.cookies.map(serializeCookie)];
  if (setCookies.length > 0) res.setHeader('Set-Cookie', setCookies);
  res.statusCode = response.status;

  if (!response.body) {
    res.end();
  } else if (hasFixedSizeBody(result)) {
    res.end(Buffer.from(await response.arrayBuffer()));
  } else {
    await streamBody(host, functionName, response.body, res, connection);
  }
}

/** Writes each chunk as it arrives; a client that leaves cancels the body stream, which is how the app learns of it. */
async function streamBody(
  host: HostContext,
  functionName: string,
  body: ReadableStream<unknown>,
  res: http.ServerResponse,
  connection: ClientConnection,
): Promise<void> {
  const reader = body.getReader();
  const stopWatching = connection.onGone(() => {
    reader.cancel(new Error('The client disconnected before the response body ended.')).catch(() => undefined);
  });
  res.flushHeaders(); // status and headers now, so an event-stream client sees the response before the first event
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done || connection.gone) break;
      if (typeof value !== 'string' && !(value instanceof Uint8Array)) {
        throw new TypeError(`A response body chunk must be a Uint8Array or a string, not ${typeof value}.`);
      }
      if (!res.write(value)) await drainedOrClosed(res);
    }
    if (!connection.gone) res.end();
  } catch (error) {
    if (connection.gone) return;
    host.logError(`[${functionName}] the response body failed after it started: ${describeError(error)}`);
    reader.cancel(error).catch(() => undefined);
    res.destroy(); // the status is already sent: cutting the connection is the only way to signal a broken body
  } finally {
    stopWatching();
  }
}

function drainedOrClosed(res: http.ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Set-Cookie as the library's HTTP-stream proxy writes it (value URI-encoded, SameSite spelled like the header). */
export function serializeCookie(cookie: Cookie): string {
  if (!COOKIE_NAME.test(cookie.name)) throw new TypeError(`Invalid cookie name "${cookie.name}".`);
  const attributes = [`${cookie.name}=${encodeURIComponent(cookie.value)}`];
  if (cookie.maxAge !== undefined) attributes.push(`Max-Age=${Math.floor(cookie.maxAge)}`);
  if (cookie.domain) attributes.push(`Domain=${cookie.domain}`);
  if (cookie.path) attributes.push(`Path=${cookie.path}`);
  if (cookie.expires !== undefined) attributes.push(`Expires=${new Date(cookie.expires).toUTCString()}`);
  if (cookie.httpOnly) attributes.push('HttpOnly');
  if (cookie.secure) attributes.push('Secure');
  if (cookie.sameSite) attributes.push(`SameSite=${cookie.sameSite}`);
  return attributes.join('; ');
}

/**
 * A problem in the app's own shape (src/http/problem.ts), so a client sees one format whether the host or a function
 * answered. Anything but a ChatError becomes the opaque internal_error: no message, no stack.
 */
/** Host-level problems (no route, wrong method, body too large) get a request id of their own, as the app's do. */
function sendProblem(
  res: http.ServerResponse,
  error: unknown,
  instance: string,
  requestId: string = randomUUID(),
): void {
  if (res.headersSent) {
    res.destroy(); // the status is already out: cutting the connection is all that is left
    return;
  }
  if (res.destroyed) return;
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  const { body, headers } = toProblem(error, requestId, instance);
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  res.setHeader('Content-Type', PROBLEM_CONTENT_TYPE);
  res.setHeader('Cache-Control', 'no-store');
  res.statusCode = body.status;
  res.end(JSON.stringify(body)); // end() with no prior write: Node adds Content-Length
}

export function describeError(error: unknown): string {
  return error instanceof Error ? (error.stack ?? `${error.name}: ${error.message}`) : format(error);
}

// ---- Logs ---------------------------------------------------------------------------------------------------

/** An app log: log hooks may rewrite it (as under the worker), then it is printed with the function name. */
export function userLog(host: HostContext, context: InvocationContext, level: LogLevel, message: string): void {
  const logContext: Record<string, unknown> = {
    level,
    message,
    category: 'user',
    invocationContext: context,
    hookData: {},
  };
  for (const callback of host.state.hooks.log) {
    try {
      void callback(logContext);
    } catch (error) {
      host.logError(`A log hook failed: ${describeError(error)}`);
    }
  }
  const finalLevel = typeof logContext.level === 'string' ? (logContext.level as LogLevel) : level;
  const finalMessage = typeof logContext.message === 'string' ? logContext.message : message;
  if (finalLevel === 'trace' || finalLevel === 'debug' || finalLevel === 'none') return;
  printLog(finalLevel, `[${context.functionName}] ${finalMessage}`, host.log, host.logError);
}

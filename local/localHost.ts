/**
 * A small local stand-in for the Azure Functions host, for machines where Functions Core Tools cannot be
 * installed. It loads the app the way the real Node.js worker does: it provides the worker's built-in module
 * `@azure/functions-core` before the app is required, so `app.http(...)` registrations reach it (outside a host
 * the library runs in "test mode" and drops them). It then serves those registrations over HTTP with the
 * library's own `HttpRequest`, `InvocationContext` and `HttpResponse`, using exactly the binding metadata
 * (route, methods, authLevel) the real host would receive.
 *
 * What it is not: no function keys are checked (as with `func start`), no CORS, no non-HTTP triggers.
 * Run it on the built app with `node dist/local/localHost.js`: it loads the files package.json `main` names, the
 * esbuild bundle dist/app/main.js (see docs/local-host.md).
 */
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import * as http from 'node:http';
import Module, { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { format } from 'node:util';
import { app, HttpRequest, HttpResponse, InvocationContext } from '@azure/functions';
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
import { MethodNotAllowedError, NotFoundError, PayloadTooLargeError } from '../src/core/errors';
import { PROBLEM_CONTENT_TYPE, toProblem } from '../src/http/problem';

export interface LocalHostOptions {
  /** Modules that call `app.http(...)`; loaded in this order after `setupModule`. */
  functionModules: string[];
  /** The app's entry module that calls `app.setup(...)` (src/index); loaded first. */
  setupModule?: string;
  /** Default 7071; 0 picks a free port. */
  port?: number;
  /** Default 127.0.0.1 (loopback only). */
  host?: string;
  /** Overrides host.json `extensions.http.routePrefix` (default `api`); '' serves routes at the root. */
  routePrefix?: string;
  /** Where to read the route prefix from; default `./host.json` when it exists. */
  hostJsonPath?: string;
  /** Request lines and the app's logs. Default: stdout. */
  log?: (line: string) => void;
  /** Handler failures, with their stack, and the app's warnings and errors. Default: stderr. */
  logError?: (line: string) => void;
  /** Larger request bodies are refused with 413. Default 100 MiB, the platform's limit. */
  maxRequestBodyBytes?: number;
}

export interface RegisteredRoute {
  functionName: string;
  /** Upper-case, as registered (the library defaults them to GET and POST). */
  methods: string[];
  /** The route template as registered; the function name when none was given. */
  route: string;
  /** The template as served, with the route prefix: `/api/items/{id}`. */
  path: string;
  authLevel: string;
}

export interface LocalHost {
  /** `http://127.0.0.1:7071`, without the route prefix. */
  url: string;
  port: number;
  routePrefix: string;
  routes: RegisteredRoute[];
  /** Stops accepting, ends open connections (cancelling streamed bodies), runs appTerminate hooks. */
  close(): Promise<void>;
}

export const DEFAULT_PORT = 7071;
export const DEFAULT_BIND_ADDRESS = '127.0.0.1';
export const DEFAULT_ROUTE_PREFIX = 'api';
export const DEFAULT_MAX_REQUEST_BODY_BYTES = 100 * 1024 * 1024;

// ---- The stand-in for the worker's built-in `@azure/functions-core` module ---------------------------------

/** A binding as the library's `toCoreFunctionMetadata` builds it. */
export interface CoreBindingInfo {
  type?: string;
  direction?: string;
  name?: string;
  route?: string;
  methods?: string[];
  authLevel?: string;
  [property: string]: unknown;
}

export interface CoreFunctionMetadata {
  name: string;
  bindings: Record<string, CoreBindingInfo>;
  [property: string]: unknown;
}

type CoreFunctionCallback = (...args: unknown[]) => unknown;
type CoreHookCallback = (context: Record<string, unknown>) => unknown;

export interface FunctionRegistration {
  metadata: CoreFunctionMetadata;
  handler: CoreFunctionCallback;
  /** The module we were loading when the function registered itself. */
  moduleFile: string;
}

const HOOK_NAMES = ['appStart', 'appTerminate', 'preInvocation', 'postInvocation', 'log'] as const;
type HookName = (typeof HOOK_NAMES)[number];

export interface CoreStandIn {
  /** Set while startLocalHost requires an app module: registrations outside that window are refused, as by the worker. */
  loadingModule: string | undefined;
  /** Every module loaded through the stand-in and what it registered (modules run once per process). */
  registrationsByModule: Map<string, FunctionRegistration[]>;
  hooks: Record<HookName, CoreHookCallback[]>;
  hookRegistrationCount: number;
  programmingModel: unknown;
  /** Where the library's system logs go; the most recently started host owns it. */
  systemLog: (level: LogLevel, message: string) => void;
}

const CORE_MODULE_ID = '@azure/functions-core';
/** A path nothing on disk has: the resolver maps the module id to it and require.cache holds the stand-in there. */
const CORE_MODULE_FILENAME = path.join(path.sep, '__local-host__', 'node_modules', '@azure', 'functions-core.js');

type ResolveFilename = (request: string, ...rest: unknown[]) => string;
const moduleInternals = Module as unknown as { _resolveFilename: ResolveFilename };
const loadModule = createRequire(__filename);

let standIn: CoreStandIn | undefined;

class CoreDisposable {
  #onDispose: (() => void) | undefined;
  constructor(onDispose: () => void) {
    this.#onDispose = onDispose;
  }
  dispose(): void {
    this.#onDispose?.();
    this.#onDispose = undefined;
  }
}

/**
 * Makes `require('@azure/functions-core')` answer with the stand-in, for the rest of the process (the library
 * resolves it once and caches the answer). Idempotent.
 */
export function installFunctionsCoreStandIn(): CoreStandIn {
  if (standIn) return standIn;
  const state: CoreStandIn = {
    loadingModule: undefined,
    registrationsByModule: new Map(),
    hooks: { appStart: [], appTerminate: [], preInvocation: [], postInvocation: [], log: [] },
    hookRegistrationCount: 0,
    programmingModel: undefined,
    systemLog: (level, message) => printLog(level, message, console.log, console.error),
  };

  const coreApi = {
    version: 'local-host',
    registerFunction(metadata: CoreFunctionMetadata, handler: CoreFunctionCallback): CoreDisposable {
      const moduleFile = state.loadingModule;
      if (moduleFile === undefined) {
        throw new Error(
          `Function "${metadata.name}" registered outside app startup: register functions at module load.`,
        );
      }
      const registrations = state.registrationsByModule.get(moduleFile) ?? [];
      state.registrationsByModule.set(moduleFile, registrations);
      const registration: FunctionRegistration = { metadata, handler, moduleFile };
      registrations.push(registration);
      return new CoreDisposable(() => {
        const index = registrations.indexOf(registration);
        if (index >= 0) registrations.splice(index, 1);
      });
    },
    registerHook(hookName: string, callback: CoreHookCallback): CoreDisposable {
      if (!isHookName(hookName)) throw new RangeError(`Unrecognized hook "${hookName}".`);
      const callbacks = state.hooks[hookName];
      callbacks.push(callback);
      state.hookRegistrationCount += 1;
      return new CoreDisposable(() => {
        const index = callbacks.indexOf(callback);
        if (index >= 0) callbacks.splice(index, 1);
      });
    },
    setProgrammingModel(programmingModel: unknown): void {
      state.programmingModel = programmingModel;
    },
    getProgrammingModel(): unknown {
      return state.programmingModel;
    },
    /** Present since host 4.28: `app.setup({ enableHttpStream: true })` checks for it. */
    log(level: LogLevel, _category: string, message: string): void {
      state.systemLog(level, message);
    },
    Disposable: CoreDisposable,
  };

  const resolveFilename = moduleInternals._resolveFilename;
  moduleInternals._resolveFilename = function resolveWithStandIn(this: unknown, request: string, ...rest: unknown[]) {
    return request === CORE_MODULE_ID ? CORE_MODULE_FILENAME : resolveFilename.call(this, request, ...rest);
  };
  const coreModule = new Module(CORE_MODULE_FILENAME);
  coreModule.filename = CORE_MODULE_FILENAME;
  coreModule.exports = coreApi;
  coreModule.loaded = true;
  loadModule.cache[CORE_MODULE_FILENAME] = coreModule;

  standIn = state;
  return state;
}

function isHookName(name: string): name is HookName {
  return (HOOK_NAMES as readonly string[]).includes(name);
}

/** The library looks for the host once per process; if it already settled on test mode, nothing would register. */
function assertLibraryUsesStandIn(state: CoreStandIn): void {
  const before = state.hookRegistrationCount;
  const probe = app.hook.appStart(() => undefined);
  probe.dispose();
  if (state.hookRegistrationCount === before) {
    throw new Error(
      '@azure/functions already switched to test mode in this process (something called app.* before the local host ' +
        'started), so it would drop every registration. Start the local host before loading any function module.',
    );
  }
}

/**
 * Requires the setup module, then every function module, with the stand-in in place, and returns what they
 * registered. A module already loaded through the stand-in is not run again: its earlier registrations are reused.
 */
export function collectRegistrations(
  options: Pick<LocalHostOptions, 'functionModules' | 'setupModule'>,
): FunctionRegistration[] {
  const state = installFunctionsCoreStandIn();
  assertLibraryUsesStandIn(state);

  const modules = [options.setupModule, ...options.functionModules].filter((file): file is string => !!file);
  const registrations: FunctionRegistration[] = [];
  for (const file of modules) {
    const resolved = loadModule.resolve(path.resolve(file));
    if (!state.registrationsByModule.has(resolved)) {
      if (loadModule.cache[resolved]) {
        throw new Error(
          `${file} was loaded before the local host started, so its registrations were dropped (test mode).`,
        );
      }
      loadThroughStandIn(state, resolved);
    }
    registrations.push(...(state.registrationsByModule.get(resolved) ?? []));
  }

  const seen = new Set<string>();
  for (const { metadata } of registrations) {
    const key = metadata.name.toLowerCase();
    if (seen.has(key)) throw new Error(`Two functions are named "${metadata.name}": function names must be unique.`);
    seen.add(key);
  }
  return registrations;
}

function loadThroughStandIn(state: CoreStandIn, resolved: string): void {
  const cachedBefore = new Set(Object.keys(loadModule.cache));
  state.registrationsByModule.set(resolved, []);
  state.loadingModule = resolved;
  try {
    loadModule(resolved);
  } catch (error) {
    state.registrationsByModule.delete(resolved);
    throw error;
  } finally {
    state.loadingModule = undefined;
  }
  // Modules it pulled in registered under it; mark them so loading them by name later does not count them twice.
  for (const file of Object.keys(loadModule.cache)) {
    if (!cachedBefore.has(file) && !state.registrationsByModule.has(file)) state.registrationsByModule.set(file, []);
  }
}

// ---- Route templates (the ASP.NET Core syntax the Functions host uses) ------------------------------------

type ConstraintCheck = (value: string) => boolean;

interface ParameterPart {
  kind: 'parameter';
  name: string;
  optional: boolean;
  catchAll: boolean;
  defaultValue: string | undefined;
  constraints: ConstraintCheck[];
}
type SegmentPart = { kind: 'literal'; text: string } | ParameterPart;
type Segment = SegmentPart[];

export interface RouteMatcher {
  template: string;
  /** Route parameters (decoded) when the path matches, else undefined. The path excludes the route prefix. */
  match(pathname: string): Record<string, string> | undefined;
  /** Lower sorts first: literal segments beat parameters, constrained beat plain, catch-alls come last. */
  precedence: number[];
}

/** Path segments without empty ones, so `/api/items/` and `/api//items` route like `/api/items`. */
function splitPath(pathname: string): string[] {
  return pathname.split('/').filter((segment) => segment !== '');
}

export function compileRouteTemplate(template: string): RouteMatcher {
  const segments = splitPath(template.replace(/^~/, '')).map((segment) => parseSegment(segment, template));
  segments.forEach((segment, index) => {
    if (segment.some((part) => part.kind === 'parameter' && part.catchAll) && index !== segments.length - 1) {
      throw new Error(`Route "${template}": a catch-all parameter must be the last segment.`);
    }
  });

  return {
    template,
    precedence: segments.map(segmentPrecedence),
    match(pathname) {
      const pathSegments = splitPath(pathname);
      const params: Record<string, string> = {};
      for (const [index, segment] of segments.entries()) {
        const only = segment.length === 1 ? segment[0] : undefined;
        if (only?.kind === 'parameter' && only.catchAll) {
          // A catch-all takes the rest of the path, slashes included, and may be empty.
          const rest = pathSegments.slice(index).map(decodeSegment).join('/');
          if (rest === '') {
            if (only.defaultValue !== undefined) params[only.name] = only.defaultValue;
          } else {
            if (!only.constraints.every((check) => check(rest))) return undefined;
            params[only.name] = rest;
          }
          return params;
        }
        const raw = pathSegments[index];
        if (raw === undefined) {
          // The path ran out: every remaining segment must be an optional (or defaulted) parameter.
          if (only?.kind !== 'parameter' || (!only.optional && only.defaultValue === undefined)) return undefined;
          if (only.defaultValue !== undefined) params[only.name] = only.defaultValue;
          continue;
        }
        if (!matchSegment(segment, decodeSegment(raw), params)) return undefined;
      }
      return pathSegments.length <= segments.length ? params : undefined;
    },
  };
}

function decodeSegment(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

function matchSegment(segment: Segment, value: string, params: Record<string, string>): boolean {
  // Parameters are greedy, so a complex segment like `{name}.{ext}` splits at the last dot, as ASP.NET does.
  const pattern = segment
    .map((part) => (part.kind === 'literal' ? escapeRegExp(part.text) : part.optional ? '(.*)' : '(.+)'))
    .join('');
  const found = new RegExp(`^${pattern}$`, 'is').exec(value);
  if (!found) return false;
  const parameters = segment.filter((part): part is ParameterPart => part.kind === 'parameter');
  const values = parameters.map((_part, index) => found[index + 1] ?? '');
  for (const [index, part] of parameters.entries()) {
    const captured = values[index] ?? '';
    if (captured === '') {
      if (part.defaultValue !== undefined) params[part.name] = part.defaultValue;
      continue;
    }
    if (!part.constraints.every((check) => check(captured))) return false;
    params[part.name] = captured;
  }
  return true;
}

function segmentPrecedence(segment: Segment): number {
  const only = segment.length === 1 ? segment[0] : undefined;
  if (only === undefined) return 1; // a complex segment such as `{name}.{ext}`
  if (only.kind === 'literal') return 0;
  if (only.catchAll) return 5;
  if (only.optional || only.defaultValue !== undefined) return 4;
  return only.constraints.length > 0 ? 2 : 3;
}

function parseSegment(segment: string, template: string): Segment {
  const parts: Segment = [];
  let literal = '';
  for (let index = 0; index < segment.length; index += 1) {
    const char = segment[index];
    if ((char === '{' || char === '}') && segment[index + 1] === char) {
      literal += char; // `{{` and `}}` are escaped braces
      index += 1;
    } else if (char === '{') {
      const end = findParameterEnd(segment, index + 1);
      if (end < 0) throw new Error(`Route "${template}": unclosed "{" in segment "${segment}".`);
      if (literal) parts.push({ kind: 'literal', text: literal });
      literal = '';
      parts.push(parseParameter(segment.slice(index + 1, end), template));
      index = end;
    } else if (char === '}') {
      throw new Error(`Route "${template}": unmatched "}" in segment "${segment}".`);
    } else {
      literal += char;
    }
  }
  if (literal) parts.push({ kind: 'literal', text: literal });
  const parameters = parts.filter((part): part is ParameterPart => part.kind === 'parameter');
  if (parts.length > 1 && parameters.some((part) => part.catchAll || part.optional)) {
    throw new Error(`Route "${template}": optional and catch-all parameters must fill a whole segment.`);
  }
  return parts;
}

/** The closing brace of a parameter, skipping braces inside constraint arguments such as `regex(^\d{3}$)`. */
function findParameterEnd(segment: string, from: number): number {
  let depth = 0;
  for (let index = from; index < segment.length; index += 1) {
    const char = segment[index];
    if (char === '(') depth += 1;
    else if (char === ')') depth = Math.max(0, depth - 1);
    else if (char === '}' && depth === 0) return index;
  }
  return -1;
}

function parseParameter(body: string, template: string): ParameterPart {
  // `{name:constraint(arg):constraint=default}`, `{name?}`, `{*rest}`; the default or `?` closes the parameter.
  // Braces inside a parameter are doubled in templates (`regex(^\\d{{3}}$)`); undouble them.
  const [spec = '', ...defaultPieces] = splitOutsideParentheses(body.replace(/\{\{/g, '{').replace(/\}\}/g, '}'), '=');
  const defaultValue = defaultPieces.length > 0 ? defaultPieces.join('=') : undefined;
  const optional = defaultValue === undefined && spec.endsWith('?');
  const [head = '', ...constraintTexts] = splitOutsideParentheses(optional ? spec.slice(0, -1) : spec, ':');
  const catchAll = head.startsWith('*');
  const name = head.replace(/^\*{1,2}/, '').trim();
  if (!/^[A-Za-z_][\w-]*$/.test(name)) throw new Error(`Route "${template}": "{${body}}" is not a valid parameter.`);
  const constraints = constraintTexts.map((text) => parseConstraint(text.trim(), template));
  return { kind: 'parameter', name, optional, catchAll, defaultValue, constraints };
}

function splitOutsideParentheses(text: string, separator: string): string[] {
  const pieces: string[] = [];
  let depth = 0;
  let current = '';
  for (const char of text) {
    if (char === '(') depth += 1;
    if (char === ')') depth = Math.max(0, depth - 1);
    if (char === separator && depth === 0) {
      pieces.push(current);
      current = '';
    } else {
      current += char;
    }
  }
  pieces.push(current);
  return pieces;
}

const INT32 = { min: -(2n ** 31n), max: 2n ** 31n - 1n };
const INT64 = { min: -(2n ** 63n), max: 2n ** 63n - 1n };
const GUID =
  /^(?:[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\{[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}|\([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\))$/i;
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)$/;
const FLOATING = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?$/i;

function integerIn(range: { min: bigint; max: bigint }): ConstraintCheck {
  return (value) => /^[+-]?\d+$/.test(value) && BigInt(value) >= range.min && BigInt(value) <= range.max;
}

/** Route constraints of ASP.NET Core routing, which the Functions host uses; unknown ones fail at startup. */
function parseConstraint(text: string, template: string): ConstraintCheck {
  const found = /^([a-z]+)(?:\((.*)\))?$/is.exec(text);
  const name = found?.[1]?.toLowerCase();
  const argument = found?.[2];
  const numbers = (argument ?? '').split(',').map((piece) => Number(piece.trim()));
  const [first = NaN, second = NaN] = numbers;
  const isLong = integerIn(INT64);
  switch (name) {
    case 'int':
      return integerIn(INT32);
    case 'long':
      return isLong;
    case 'bool':
      return (value) => /^(?:true|false)$/i.test(value);
    case 'guid':
      return (value) => GUID.test(value);
    case 'alpha':
      return (value) => /^[a-z]+$/i.test(value);
    case 'datetime':
      return (value) => !Number.isNaN(Date.parse(value));
    case 'decimal':
      return (value) => DECIMAL.test(value);
    case 'double':
    case 'float':
      return (value) => FLOATING.test(value);
    case 'min':
      return (value) => isLong(value) && Number(value) >= first;
    case 'max':
      return (value) => isLong(value) && Number(value) <= first;
    case 'range':
      return (value) => isLong(value) && Number(value) >= first && Number(value) <= second;
    case 'length':
      return numbers.length === 2
        ? (value) => value.length >= first && value.length <= second
        : (value) => value.length === first;
    case 'minlength':
      return (value) => value.length >= first;
    case 'maxlength':
      return (value) => value.length <= first;
    case 'regex': {
      // ASP.NET does not anchor the expression and ignores case.
      const pattern = new RegExp(argument ?? '', 'i');
      return (value) => pattern.test(value);
    }
    default:
      throw new Error(`Route "${template}": the local host does not support the route constraint "${text}".`);
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ---- The route table -------------------------------------------------------------------------------------

interface RouteEntry {
  route: RegisteredRoute;
  matcher: RouteMatcher;
  registration: FunctionRegistration;
  order: number;
}

type RouteLookup =
  | { kind: 'found'; entry: RouteEntry; params: Record<string, string> }
  | { kind: 'method-not-allowed'; allow: string[] }
  | { kind: 'not-found' };

/** host.json `extensions.http.routePrefix`, or `api` when the file or the setting is absent. */
export function readRoutePrefix(hostJsonPath: string): string {
  if (!existsSync(hostJsonPath)) return DEFAULT_ROUTE_PREFIX;
  let hostJson: unknown;
  try {
    hostJson = JSON.parse(readFileSync(hostJsonPath, 'utf8'));
  } catch (error) {
    throw new Error(`${hostJsonPath} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  type HostJson = { extensions?: { http?: { routePrefix?: unknown } } } | null;
  const prefix = (hostJson as HostJson)?.extensions?.http?.routePrefix;
  return typeof prefix === 'string' ? prefix : DEFAULT_ROUTE_PREFIX;
}

function normalisePrefix(prefix: string): string {
  return prefix.trim().replace(/^\/+|\/+$/g, '');
}

function httpTriggerOf(metadata: CoreFunctionMetadata): CoreBindingInfo | undefined {
  return Object.values(metadata.bindings).find(
    (binding) => binding.direction === 'in' && binding.type?.toLowerCase() === 'httptrigger',
  );
}

function buildRouteTable(
  registrations: FunctionRegistration[],
  routePrefix: string,
  logError: (line: string) => void,
): RouteEntry[] {
  const entries: RouteEntry[] = [];
  for (const registration of registrations) {
    const { metadata } = registration;
    const trigger = httpTriggerOf(metadata);
    if (!trigger) {
      const triggerType = Object.values(metadata.bindings).find((binding) => binding.type?.endsWith('Trigger'))?.type;
      logError(`Skipping "${metadata.name}": the local host serves HTTP triggers only (this one is ${triggerType}).`);
      continue;
    }
    const route = trigger.route ?? metadata.name;
    const servedTemplate = [routePrefix, route.replace(/^\/+/, '')].filter(Boolean).join('/');
    const routeInfo: RegisteredRoute = {
      functionName: metadata.name,
      methods: (trigger.methods ?? ['GET', 'POST']).map((method) => method.toUpperCase()),
      route,
      path: `/${servedTemplate}`,
      authLevel: trigger.authLevel ?? 'anonymous',
    };
    entries.push({
      route: routeInfo,
      matcher: compileRouteTemplate(servedTemplate),
      registration,
      order: entries.length,
    });
  }
  return entries.sort((a, b) => comparePrecedence(a.matcher.precedence, b.matcher.precedence) || a.order - b.order);
}

function comparePrecedence(a: number[], b: number[]): number {
  for (let index = 0; index < Math.min(a.length, b.length); index += 1) {
    const difference = (a[index] ?? 0) - (b[index] ?? 0);
    if (difference !== 0) return difference;
  }
  return b.length - a.length;
}

function lookupRoute(entries: RouteEntry[], pathname: string, method: string): RouteLookup {
  const allow: string[] = [];
  for (const entry of entries) {
    const params = entry.matcher.match(pathname);
    if (!params) continue;
    if (entry.route.methods.includes(method)) return { kind: 'found', entry, params };
    for (const allowed of entry.route.methods) if (!allow.includes(allowed)) allow.push(allowed);
  }
  return allow.length > 0 ? { kind: 'method-not-allowed', allow } : { kind: 'not-found' };
}

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

interface HostContext {
  entries: RouteEntry[];
  state: CoreStandIn;
  appHookData: Record<string, unknown>;
  log: (line: string) => void;
  logError: (line: string) => void;
  maxRequestBodyBytes: number;
  fallbackOrigin: string;
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

async function handleRequest(host: HostContext, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
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
async function runInvocation(
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

async function runHooks(state: CoreStandIn, hookName: HookName, context: Record<string, unknown>): Promise<void> {
  for (const callback of [...state.hooks[hookName]]) await callback(context);
}

function effectiveOptionsOf(metadata: CoreFunctionMetadata): EffectiveFunctionOptions {
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
function sendProblem(res: http.ServerResponse, error: unknown, instance: string, requestId?: string): void {
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

function describeError(error: unknown): string {
  return error instanceof Error ? (error.stack ?? `${error.name}: ${error.message}`) : format(error);
}

// ---- Logs ---------------------------------------------------------------------------------------------------

function printLog(level: LogLevel, line: string, log: (line: string) => void, logError: (line: string) => void): void {
  if (level === 'none' || level === 'trace' || level === 'debug') return;
  if (level === 'information') log(line);
  else logError(`${level}: ${line}`);
}

/** An app log: log hooks may rewrite it (as under the worker), then it is printed with the function name. */
function userLog(host: HostContext, context: InvocationContext, level: LogLevel, message: string): void {
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

// ---- Starting and stopping -----------------------------------------------------------------------------------

export async function startLocalHost(options: LocalHostOptions): Promise<LocalHost> {
  const log = options.log ?? ((line: string) => console.log(line));
  const logError = options.logError ?? ((line: string) => console.error(line));
  const bindAddress = options.host ?? DEFAULT_BIND_ADDRESS;
  const hostJsonPath = path.resolve(options.hostJsonPath ?? 'host.json');

  const state = installFunctionsCoreStandIn();
  state.systemLog = (level, message) => printLog(level, message, log, logError);
  const registrations = collectRegistrations(options);
  const routePrefix = normalisePrefix(options.routePrefix ?? readRoutePrefix(hostJsonPath));
  const entries = buildRouteTable(registrations, routePrefix, logError);

  const appHookData: Record<string, unknown> = {};
  await runHooks(state, 'appStart', {
    hookData: {},
    appHookData,
    functionAppDirectory: path.dirname(hostJsonPath),
  });

  const host: HostContext = {
    entries,
    state,
    appHookData,
    log,
    logError,
    maxRequestBodyBytes: options.maxRequestBodyBytes ?? DEFAULT_MAX_REQUEST_BODY_BYTES,
    fallbackOrigin: 'http://localhost',
  };
  const server = http.createServer({ noDelay: true }, (req, res) => void handleRequest(host, req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? DEFAULT_PORT, bindAddress, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${bindAddress.includes(':') ? `[${bindAddress}]` : bindAddress}:${port}`;
  host.fallbackOrigin = url;

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    routePrefix,
    routes: [...entries].sort((a, b) => a.order - b.order).map((entry) => entry.route), // registration order
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve, reject) =>
          server.close((error) => (error ? reject(error) : resolve())),
        );
        server.closeAllConnections(); // open streams end here; their bodies are cancelled as for any disconnect
        await closed;
        await runHooks(state, 'appTerminate', { hookData: {}, appHookData });
      })();
      return closing;
    },
  };
}

/** The routes as a table for the console, one function per line. */
export function formatRouteTable(host: Pick<LocalHost, 'url' | 'routes'>): string {
  const rows = [...host.routes]
    .sort((a, b) => a.path.localeCompare(b.path) || a.methods.join().localeCompare(b.methods.join()))
    .map((route) => [route.methods.join(','), `${host.url}${route.path}`, route.functionName]);
  const widths = [0, 1].map((column) => Math.max(...rows.map((row) => (row[column] ?? '').length), 0));
  return rows
    .map(
      ([methods = '', address = '', name = '']) =>
        `  ${methods.padEnd(widths[0] ?? 0)}  ${address.padEnd(widths[1] ?? 0)}  ${name}`,
    )
    .join('\n');
}

/**
 * Copies local.settings.json `Values` into the environment without overriding what is already set, as
 * `func start` does, so the app sees the same settings under either host.
 */
export function applyLocalSettings(settingsPath: string, env: NodeJS.ProcessEnv = process.env): string[] {
  if (!existsSync(settingsPath)) return [];
  const settings = JSON.parse(readFileSync(settingsPath, 'utf8')) as { Values?: Record<string, unknown> };
  const applied: string[] = [];
  for (const [name, value] of Object.entries(settings.Values ?? {})) {
    if (env[name] === undefined && value !== undefined && value !== null) {
      env[name] = String(value);
      applied.push(name);
    }
  }
  return applied;
}

function parsePort(text: string | undefined): number {
  if (text === undefined || text === '') return DEFAULT_PORT;
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error(`PORT must be a port number, not "${text}".`);
  return port;
}

/** Expands `{a,b}` alternatives, left to right (no nesting, as in the `main` globs the worker documents). */
function expandBraces(pattern: string): string[] {
  const found = /\{([^{}]*)\}/.exec(pattern);
  if (!found) return [pattern];
  const before = pattern.slice(0, found.index);
  const after = pattern.slice(found.index + found[0].length);
  return (found[1] ?? '').split(',').flatMap((choice) => expandBraces(`${before}${choice}${after}`));
}

function globSegment(segment: string): RegExp {
  const source = segment
    .replace(/[.+^$()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '[^/]*')
    .replace(/\?/g, '[^/]');
  return new RegExp(`^${source}$`);
}

/**
 * The files package.json `main` names, as the Functions worker loads them: a path, or a glob with `*`, `?` and
 * `{a,b}` (not `**`), relative to the app root. Brace alternatives keep their order; wildcard matches are sorted.
 */
export function appEntryFiles(appRoot: string): string[] {
  const packagePath = path.join(appRoot, 'package.json');
  if (!existsSync(packagePath)) throw new Error(`No package.json in ${appRoot}: the app's entry is its "main".`);
  const { main: pattern } = JSON.parse(readFileSync(packagePath, 'utf8')) as { main?: unknown };
  if (typeof pattern !== 'string' || pattern.trim() === '') {
    throw new Error(`${packagePath} has no "main": it names the files that register the functions.`);
  }
  if (pattern.includes('**')) throw new Error(`"main" ${pattern}: "**" is not supported by the local host.`);

  const files: string[] = [];
  for (const expanded of expandBraces(pattern)) {
    let candidates = [appRoot];
    for (const segment of expanded.split('/').filter((part) => part !== '' && part !== '.')) {
      if (!/[*?]/.test(segment)) {
        candidates = candidates.map((directory) => path.join(directory, segment));
        continue;
      }
      const matcher = globSegment(segment);
      candidates = candidates.flatMap((directory) =>
        existsSync(directory) && statSync(directory).isDirectory()
          ? readdirSync(directory)
              .filter((name) => matcher.test(name))
              .sort()
              .map((name) => path.join(directory, name))
          : [],
      );
    }
    for (const file of candidates) {
      if (existsSync(file) && statSync(file).isFile() && !files.includes(file)) files.push(file);
    }
  }
  if (files.length === 0) {
    throw new Error(`No file matches "main" (${pattern}) in ${appRoot}: run "npm run build" first.`);
  }
  return files;
}

/** Serves the app in the current directory: the files package.json `main` names, as the worker would load them. */
export async function main(): Promise<void> {
  const appRoot = process.cwd();
  const applied = applyLocalSettings(path.join(appRoot, 'local.settings.json'));
  if (applied.length > 0) console.log(`Settings from local.settings.json: ${applied.join(', ')}`);

  const host = await startLocalHost({
    functionModules: appEntryFiles(appRoot),
    port: parsePort(process.env.PORT),
    hostJsonPath: path.join(appRoot, 'host.json'),
  });
  console.log(`Local Functions host (no Core Tools) listening on ${host.url}, route prefix "/${host.routePrefix}":`);
  console.log(formatRouteTable(host));

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) process.exit(1); // a second Ctrl-C does not wait
    stopping = true;
    console.log(`${signal}: stopping the local host`);
    // A function that ignores the end of its connection must not keep a Ctrl-C waiting forever.
    setTimeout(() => process.exit(1), 10_000).unref();
    host.close().then(
      () => process.exit(0),
      (error: unknown) => {
        console.error(`The local host did not stop cleanly: ${describeError(error)}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (require.main === module) {
  main().catch((error: unknown) => {
    console.error(`The local host could not start: ${describeError(error)}`);
    process.exitCode = 1;
  });
}

/**
 * Routing as the Functions host does it: route templates in ASP.NET Core syntax (parameters, constraints, optional
 * and catch-all parameters), the route prefix from host.json, and the route table built from the HTTP triggers the
 * app registered, ordered by precedence, answering found / method not allowed / not found.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { CoreBindingInfo, CoreFunctionMetadata, FunctionRegistration } from './functionsCore';

export const DEFAULT_ROUTE_PREFIX = 'api';

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
  /**
   * Route parameters (decoded) when the path matches, else undefined. The path excludes the route prefix;
   * `presplit` is its segments when the caller already split it (once per request, not once per route).
   */
  match(pathname: string, presplit?: readonly string[]): Record<string, string> | undefined;
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

  const compiled = segments.map(compileSegment);
  return {
    template,
    precedence: segments.map(segmentPrecedence),
    match(pathname, presplit) {
      const pathSegments = presplit ?? splitPath(pathname);
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
        if (!matchSegment(compiled[index]!, decodeSegment(raw), params)) return undefined;
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

interface CompiledSegment {
  /** Parameters are greedy, so a complex segment like `{name}.{ext}` splits at the last dot, as ASP.NET does. */
  pattern: RegExp;
  parameters: ParameterPart[];
}

/** Built once per route, not per request: the route table is matched on every request the host serves. */
function compileSegment(segment: Segment): CompiledSegment {
  const source = segment
    .map((part) => (part.kind === 'literal' ? escapeRegExp(part.text) : part.optional ? '(.*)' : '(.+)'))
    .join('');
  return {
    pattern: new RegExp(`^${source}$`, 'is'),
    parameters: segment.filter((part): part is ParameterPart => part.kind === 'parameter'),
  };
}

function matchSegment(segment: CompiledSegment, value: string, params: Record<string, string>): boolean {
  const found = segment.pattern.exec(value);
  if (!found) return false;
  for (const [index, part] of segment.parameters.entries()) {
    const captured = found[index + 1] ?? '';
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

export interface RouteEntry {
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

export function normalisePrefix(prefix: string): string {
  return prefix.trim().replace(/^\/+|\/+$/g, '');
}

function httpTriggerOf(metadata: CoreFunctionMetadata): CoreBindingInfo | undefined {
  return Object.values(metadata.bindings).find(
    (binding) => binding.direction === 'in' && binding.type?.toLowerCase() === 'httptrigger',
  );
}

export function buildRouteTable(
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
      // Storage-queue triggers run in ./queueTriggers.ts; other kinds are not run locally.
      if (triggerType?.toLowerCase() !== 'queuetrigger') {
        logError(
          `Skipping "${metadata.name}": the local host runs HTTP and queue triggers only (this one is ${triggerType}).`,
        );
      }
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

export function lookupRoute(entries: RouteEntry[], pathname: string, method: string): RouteLookup {
  const allow: string[] = [];
  const segments = splitPath(pathname);
  for (const entry of entries) {
    const params = entry.matcher.match(pathname, segments);
    if (!params) continue;
    if (entry.route.methods.includes(method)) return { kind: 'found', entry, params };
    for (const allowed of entry.route.methods) if (!allow.includes(allowed)) allow.push(allowed);
  }
  return allow.length > 0 ? { kind: 'method-not-allowed', allow } : { kind: 'not-found' };
}

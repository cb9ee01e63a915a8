/**
 * The check of a client tool's `parameters` at create: a JSON Schema 2020-12 with `"type": "object"` that the model
 * can be shown, and nothing in it that could hurt the server. Cheapest checks first, and the bounded ones before any
 * JSON Schema library sees the schema: its nesting (MAX_JSON_DEPTH) and the tool's size (MAX_CLIENT_TOOL_JSON_CHARS).
 *
 * The schema is never compiled (the app never validates anything against a client's schema: the caller's app gets the
 * model's arguments as they are). Ajv only checks it against the 2020-12 meta-schema, as data, on one instance that
 * holds nothing but the meta-schemas: a schema's `$id` is never registered, so no create can affect another. What
 * compiling would have added is checked here directly: every `pattern` and `patternProperties` key is a valid
 * regular expression (constructed, never run), and every `$ref` / `$dynamicRef` points inside the schema (`#`,
 * `#/json/pointer` or `#anchor`) and resolves; nothing is ever fetched. `$id` and `$schema` are allowed at the root
 * only, so a reference always resolves against the root.
 *
 * Measured (2 shared cores, a 12,000-character schema of 300 properties): compiling took 60-220 ms per schema on a
 * fresh Ajv instance (a fresh instance with meta-schemas 96 ms even for a small schema), which 64 tools per create
 * would multiply; the meta-schema check takes about 10 ms and the walk below well under 1 ms.
 */
import type Ajv2020 from 'ajv/dist/2020';
import { STORABLE_TEXT_RULE } from '../core/text';
import { MAX_JSON_DEPTH, nestsDeeperThan, unstorableStringAt } from './jsonValues';

/** A client tool's definition as JSON: it is stored in the conversation header and sent on every turn. */
export const MAX_CLIENT_TOOL_JSON_CHARS = 16_000;
/** The dialect parameters are checked as; `$schema` may name it or be left out. */
export const JSON_SCHEMA_DIALECT = 'https://json-schema.org/draft/2020-12/schema';

export interface SchemaProblem {
  /** Where, below the tool: `['parameters', 'properties', 'a', '$ref']`; empty for the whole tool. */
  path: string[];
  message: string;
}

let metaSchemaChecker: Ajv2020 | undefined;

/**
 * Holds only the meta-schemas: validateSchema reads a client's schema as data and registers nothing of it. Ajv is
 * required and the instance made on the first client tool, not at load: a cold start that never sees one does not
 * pay for them (the bundle keeps Ajv in a file of its own, lazy/, see scripts/bundle.ts).
 */
function metaSchemas(): Ajv2020 {
  if (!metaSchemaChecker) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use, on purpose
    const { default: Ajv } = require('ajv/dist/2020') as typeof import('ajv/dist/2020');
    metaSchemaChecker = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  }
  return metaSchemaChecker;
}

/** Why the tool `{ name, description, parameters }` cannot be offered to the model, or undefined when it can. */
export function clientToolProblem(tool: { parameters: Record<string, unknown> }): SchemaProblem | undefined {
  const { parameters } = tool;
  if (nestsDeeperThan(parameters, MAX_JSON_DEPTH)) {
    return { path: ['parameters'], message: `parameters is nested more than ${MAX_JSON_DEPTH} levels deep` };
  }
  if (JSON.stringify(tool).length > MAX_CLIENT_TOOL_JSON_CHARS) {
    return { path: [], message: `a tool definition is at most ${MAX_CLIENT_TOOL_JSON_CHARS} characters as JSON` };
  }
  const unstorable = unstorableStringAt(parameters);
  if (unstorable !== undefined) {
    return { path: ['parameters', ...unstorable.split('/')], message: `parameters strings ${STORABLE_TEXT_RULE}` };
  }
  if (parameters['type'] !== 'object') {
    return { path: ['parameters'], message: 'parameters must be a JSON Schema with "type": "object"' };
  }
  const dialect = parameters['$schema'];
  if (dialect !== undefined && dialect !== JSON_SCHEMA_DIALECT && dialect !== `${JSON_SCHEMA_DIALECT}#`) {
    return {
      path: ['parameters', '$schema'],
      message: `$schema must be "${JSON_SCHEMA_DIALECT}" or left out: parameters are JSON Schema 2020-12`,
    };
  }
  const checker = metaSchemas();
  if (!checker.validateSchema(parameters)) {
    const reasons = [...new Set((checker.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}`))];
    return { path: ['parameters'], message: `parameters is not a valid JSON Schema: ${reasons.join('; ')}` };
  }
  return structureProblem(parameters);
}

/** Keywords whose value is one subschema. */
const SUBSCHEMA = [
  'additionalProperties',
  'propertyNames',
  'items',
  'contains',
  'not',
  'if',
  'then',
  'else',
  'unevaluatedItems',
  'unevaluatedProperties',
  'contentSchema',
  'additionalItems',
];
/** Keywords whose value is an array of subschemas. */
const SUBSCHEMA_ARRAY = ['allOf', 'anyOf', 'oneOf', 'prefixItems'];
/** Keywords whose value is an object of subschemas (`dependencies`: the schema-valued entries). */
const SUBSCHEMA_MAP = ['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas', 'dependencies'];

interface Reference {
  path: string[];
  ref: string;
}

/** Walks the schema positions (never data such as `const`, `enum` or `default`): regexes, references, root-only keys. */
function structureProblem(root: Record<string, unknown>): SchemaProblem | undefined {
  const anchors = new Set<string>();
  const references: Reference[] = [];
  const pending: [unknown, string[]][] = [[root, ['parameters']]];
  for (let next = pending.pop(); next; next = pending.pop()) {
    const [node, path] = next;
    if (!isObject(node)) continue;
    if (node !== root) {
      for (const key of ['$id', '$schema']) {
        if (key in node) return { path: [...path, key], message: `${key} is allowed only at the root of parameters` };
      }
    }
    if (typeof node['pattern'] === 'string' && !isRegExp(node['pattern'])) {
      return { path: [...path, 'pattern'], message: 'pattern is not a valid regular expression' };
    }
    for (const key of ['$anchor', '$dynamicAnchor']) {
      if (typeof node[key] === 'string') anchors.add(node[key]);
    }
    for (const key of ['$ref', '$dynamicRef']) {
      if (typeof node[key] === 'string') references.push({ path: [...path, key], ref: node[key] });
    }
    for (const key of SUBSCHEMA) if (key in node) pending.push([node[key], [...path, key]]);
    for (const key of SUBSCHEMA_ARRAY) {
      const list = node[key];
      if (Array.isArray(list)) list.forEach((inner, index) => pending.push([inner, [...path, key, String(index)]]));
    }
    for (const key of SUBSCHEMA_MAP) {
      const map = node[key];
      if (!isObject(map)) continue;
      for (const [name, inner] of Object.entries(map)) {
        if (key === 'patternProperties' && !isRegExp(name)) {
          return { path: [...path, key, name], message: 'a patternProperties key is not a valid regular expression' };
        }
        pending.push([inner, [...path, key, name]]);
      }
    }
  }
  for (const { path, ref } of references) {
    if (!ref.startsWith('#')) {
      return {
        path,
        message: `${path.at(-1)} must point inside parameters ("#", "#/$defs/name" or "#anchor"): nothing is fetched`,
      };
    }
    if (!resolves(root, ref.slice(1), anchors)) {
      return { path, message: `${path.at(-1)} ${JSON.stringify(ref)} does not resolve inside parameters` };
    }
  }
  return undefined;
}

/** Whether the URI fragment `fragment` (after `#`) names a schema in `root`: empty, a JSON pointer or an anchor. */
function resolves(root: Record<string, unknown>, fragment: string, anchors: Set<string>): boolean {
  let decoded: string;
  try {
    decoded = decodeURIComponent(fragment);
  } catch {
    return false;
  }
  if (decoded === '') return true;
  if (!decoded.startsWith('/')) return anchors.has(decoded);
  let node: unknown = root;
  for (const token of decoded.slice(1).split('/')) {
    const key = token.replaceAll('~1', '/').replaceAll('~0', '~');
    if (!isObject(node) && !Array.isArray(node)) return false;
    if (!Object.hasOwn(node, key)) return false;
    node = (node as Record<string, unknown>)[key];
  }
  return isObject(node) || typeof node === 'boolean';
}

/** Ajv would build it with the `u` flag; constructing is all that happens to it: it never runs on the server. */
function isRegExp(source: string): boolean {
  try {
    new RegExp(source, 'u');
    return true;
  } catch {
    return false;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * Checks real responses against an OpenAPI 3.1 document with Ajv's JSON Schema 2020-12 validator: the status must
 * be documented for the operation, the media type must be one it documents, required headers must be present, and
 * the body (or, for server-sent events, every event's data) must match its schema. Shared by the unit test of the
 * document and the integration test that drives the real HTTP path.
 */
import Ajv2020, { type ValidateFunction } from 'ajv/dist/2020';

type Json = any;

const DOCUMENT_ID = 'urn:chat-api:openapi';
const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/;
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

export interface ObservedResponse {
  status: number;
  headers: Headers;
  /** The raw body text ('' when there is none). */
  text: string;
}

export interface DocumentValidator {
  /** The operation object at `method` + path template, or throws when the document has none. */
  operation(method: string, pathTemplate: string): Json;
  /** A validator for a schema taken from the document (its `#/components/schemas/...` refs resolve). */
  compile(schema: Json): ValidateFunction;
  /** Every way the response departs from the document; empty when it conforms. */
  check(method: string, pathTemplate: string, response: ObservedResponse): string[];
}

/** `#/components/schemas/X` refs point into the document registered with Ajv under DOCUMENT_ID. */
function rewriteRefs(value: Json): Json {
  if (Array.isArray(value)) return value.map(rewriteRefs);
  if (value === null || typeof value !== 'object') return value;
  const result: Json = {};
  for (const [key, inner] of Object.entries(value)) {
    result[key] =
      key === '$ref' && typeof inner === 'string' && inner.startsWith('#/components/schemas/')
        ? `${DOCUMENT_ID}#/$defs/${inner.slice('#/components/schemas/'.length)}`
        : rewriteRefs(inner);
  }
  return result;
}

/** Resolves a local `$ref` (`#/components/...`) in the document. */
export function resolvePointer(document: Json, pointer: string): Json {
  if (!pointer.startsWith('#/')) throw new Error(`Only local refs are used in this document, not ${pointer}`);
  let node = document;
  for (const raw of pointer.slice(2).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (node === null || typeof node !== 'object' || !(key in node)) return undefined;
    node = node[key];
  }
  return node;
}

function deref(document: Json, value: Json): Json {
  return value && typeof value.$ref === 'string' && !value.$ref.startsWith('#/components/schemas/')
    ? resolvePointer(document, value.$ref)
    : value;
}

export function createAjv(): Ajv2020 {
  // strict: an unknown keyword or format in the document is an error, not silently ignored.
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  ajv.addFormat('date-time', {
    type: 'string',
    validate: (value: string) => ISO_DATE_TIME.test(value) && !Number.isNaN(Date.parse(value)),
  });
  return ajv;
}

export function createDocumentValidator(document: Json): DocumentValidator {
  const ajv = createAjv();
  ajv.addSchema({ $id: DOCUMENT_ID, $defs: rewriteRefs(document.components?.schemas ?? {}) });
  const compile = (schema: Json) => ajv.compile(rewriteRefs(schema));

  const operation = (method: string, pathTemplate: string) => {
    const found = document.paths?.[pathTemplate]?.[method.toLowerCase()];
    if (!found) throw new Error(`The document has no ${method.toUpperCase()} ${pathTemplate}`);
    return found;
  };

  const check = (method: string, pathTemplate: string, response: ObservedResponse): string[] => {
    const where = `${method.toUpperCase()} ${pathTemplate} -> ${response.status}`;
    const documented = operation(method, pathTemplate).responses?.[String(response.status)];
    if (!documented)
      return [`${where}: status not documented for this operation (body: ${response.text.slice(0, 300)})`];
    const problems: string[] = [];
    for (const [name, rawHeader] of Object.entries<Json>(documented.headers ?? {})) {
      const header = deref(document, rawHeader);
      const value = response.headers.get(name);
      if (value === null) {
        if (header.required) problems.push(`${where}: required header ${name} missing`);
        continue;
      }
      const validate = compile(header.schema ?? {});
      if (!validate(value)) problems.push(`${where}: header ${name}=${value}: ${ajv.errorsText(validate.errors)}`);
    }

    const content = documented.content as Record<string, Json> | undefined;
    if (!content) {
      if (response.text !== '') problems.push(`${where}: documented without a body, but one was sent`);
      return problems;
    }
    const mediaType = (response.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    const media = content[mediaType];
    if (!media) {
      problems.push(`${where}: media type "${mediaType}" not documented (${Object.keys(content).join(', ')})`);
      return problems;
    }
    if (mediaType === 'text/event-stream') {
      // The schema describes one event as `{ event, data }`, `data` being the parsed `data:` line.
      const validate = compile(media.schema ?? {});
      const events = parseServerSentEvents(response.text);
      if (events.length === 0) problems.push(`${where}: the event stream is empty`);
      for (const event of events) {
        let data: unknown;
        try {
          data = JSON.parse(event.data);
        } catch {
          problems.push(`${where}: event ${event.event}: data is not JSON: ${event.data.slice(0, 200)}`);
          continue;
        }
        if (!validate({ event: event.event, data })) {
          problems.push(`${where}: event ${event.event} ${event.data}: ${ajv.errorsText(validate.errors)}`);
        }
      }
      return problems;
    }
    let body: unknown;
    try {
      body = JSON.parse(response.text);
    } catch {
      return [...problems, `${where}: body is not JSON: ${response.text.slice(0, 200)}`];
    }
    const validate = compile(media.schema ?? {});
    if (!validate(body))
      problems.push(`${where}: ${ajv.errorsText(validate.errors)}; body: ${response.text.slice(0, 500)}`);
    return problems;
  };

  return { operation, compile, check };
}

/** `event:` / `data:` blocks of a text/event-stream body, in order. */
export function parseServerSentEvents(text: string): { event: string; data: string }[] {
  const events: { event: string; data: string }[] = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    let event = 'message';
    const data: string[] = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    if (data.length > 0) events.push({ event, data: data.join('\n') });
  }
  return events;
}

/** Every operation in the document with its method and path template. */
export function operationsOf(document: Json): { method: string; path: string; operation: Json }[] {
  const result: { method: string; path: string; operation: Json }[] = [];
  for (const [path, item] of Object.entries<Json>(document.paths ?? {})) {
    for (const method of HTTP_METHODS) if (item[method]) result.push({ method, path, operation: item[method] });
  }
  return result;
}

/** Every `$ref` string in the document, with where it was found. */
export function refsOf(value: Json, at = '#'): { ref: string; at: string }[] {
  if (Array.isArray(value)) return value.flatMap((inner, index) => refsOf(inner, `${at}/${index}`));
  if (value === null || typeof value !== 'object') return [];
  return Object.entries(value).flatMap(([key, inner]) =>
    key === '$ref' && typeof inner === 'string' ? [{ ref: inner, at }] : refsOf(inner, `${at}/${key}`),
  );
}

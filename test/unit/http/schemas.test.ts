import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidRequestError } from '../../../src/core/errors';
import { validate } from '../../../src/http/request';
import { createConversationSchema, toolResultsSchema } from '../../../src/http/schemas';

const limits = { maxMessageChars: 100_000, maxExamples: 20 };
const createSchema = createConversationSchema(limits);
const resultsSchema = toolResultsSchema(limits);

function tool(parameters: unknown, extra: Record<string, unknown> = {}) {
  return { name: 'pick', description: 'Pick one.', parameters, ...extra };
}

/** The field errors validation reports for `body` (an InvalidRequestError, never anything else), or [] when it passes. */
function errorsOf(schema: Parameters<typeof validate>[0], body: unknown): { field: string; message: string }[] {
  try {
    validate(schema, body);
    return [];
  } catch (error) {
    assert.ok(error instanceof InvalidRequestError, `not a 400: ${String(error)}`);
    return (error.extensions['errors'] as { field: string; message: string }[] | undefined) ?? [];
  }
}

const toolErrors = (parameters: unknown, extra?: Record<string, unknown>) =>
  errorsOf(createSchema, { clientTools: [tool(parameters, extra)] });

function nested(levels: number, key = 'items'): Record<string, unknown> {
  let schema: Record<string, unknown> = {};
  for (let i = 0; i < levels; i++) schema = { [key]: schema };
  return schema;
}

describe('client tool parameters', () => {
  it('accepts no $schema or the 2020-12 one, and refuses any other naming the field', () => {
    for (const $schema of [
      undefined,
      'https://json-schema.org/draft/2020-12/schema',
      'https://json-schema.org/draft/2020-12/schema#',
    ]) {
      assert.deepEqual(toolErrors({ type: 'object', ...($schema ? { $schema } : {}) }), [], String($schema));
    }
    for (const $schema of ['http://json-schema.org/draft-07/schema#', 'https://example.com/my-meta', 7, null]) {
      const errors = toolErrors({ type: 'object', $schema });
      assert.equal(errors.length, 1, JSON.stringify(errors));
      assert.equal(errors[0]?.field, 'clientTools/0/parameters/$schema');
      assert.match(errors[0]?.message ?? '', /2020-12/);
    }
  });

  it('refuses nesting deeper than 32 levels before any JSON Schema check, however deep', () => {
    const ok = { type: 'object', properties: { a: nested(29) } };
    assert.deepEqual(toolErrors(ok), []);
    // 800 nested {"items": ...}, about 8 KB, overflowed the stack of the JSON Schema library; 200,000 levels
    // overflow JSON.stringify.
    const deepBody = `{"clientTools":[{"name":"pick","description":"Pick.","parameters":{"type":"object","items":${'{"items":'.repeat(200_000)}{}${'}'.repeat(200_000)}}}]}`;
    for (const parameters of [
      { type: 'object', properties: { a: nested(30) } },
      { type: 'object', properties: { a: nested(800) } },
      (JSON.parse(deepBody) as { clientTools: [{ parameters: unknown }] }).clientTools[0].parameters,
    ]) {
      const errors = toolErrors(parameters);
      assert.deepEqual(errors, [
        { field: 'clientTools/0/parameters', message: 'parameters is nested more than 32 levels deep' },
      ]);
    }
  });

  it('checks the size of a tool before its schema', () => {
    const properties = Object.fromEntries(Array.from({ length: 700 }, (_, i) => [`p${i}`, { type: 'string' }]));
    const big = { type: 'object', properties: { ...properties, bad: { type: 'nonsense' } } };
    assert.deepEqual(toolErrors(big), [
      { field: 'clientTools/0', message: 'a tool definition is at most 16000 characters as JSON' },
    ]);
    // The same flaw in a small schema is found by the schema check.
    assert.match(
      toolErrors({ type: 'object', properties: { bad: { type: 'nonsense' } } })[0]?.message ?? '',
      /not a valid JSON Schema/,
    );
  });

  it('keeps nothing from one check to the next: an $id may be used by every create, and is never a reference target', () => {
    const withId = { type: 'object', $id: 'https://x.example/a', $defs: { s: { type: 'string' } } };
    for (let i = 0; i < 3; i++) assert.deepEqual(toolErrors(withId), [], `create ${i + 1}`);
    const errors = toolErrors({ type: 'object', properties: { a: { $ref: 'https://x.example/a' } } });
    assert.equal(errors[0]?.field, 'clientTools/0/parameters/properties/a/$ref');
    assert.match(errors[0]?.message ?? '', /nothing is fetched/);
  });

  it('allows only references inside the schema, and they must resolve', () => {
    const defs = { $defs: { day: { type: 'string', $anchor: 'day' }, 'a/b': { type: 'number' } } };
    for (const $ref of ['#', '#/$defs/day', '#day', '#/$defs/a~1b', '#/%24defs/day']) {
      assert.deepEqual(toolErrors({ type: 'object', ...defs, properties: { d: { $ref } } }), [], $ref);
    }
    for (const $ref of [
      'https://evil.example/schema',
      'other.json',
      'other.json#/x',
      '#/$defs/missing',
      '#nope',
      '#/$defs/day/type',
      '#%',
    ]) {
      const errors = toolErrors({ type: 'object', ...defs, properties: { d: { $ref } } });
      assert.equal(errors[0]?.field, 'clientTools/0/parameters/properties/d/$ref', $ref);
    }
    assert.equal(
      toolErrors({ type: 'object', items: { $dynamicRef: 'http://x.example/s' } })[0]?.field,
      'clientTools/0/parameters/items/$dynamicRef',
    );
    // `$ref` inside data (a default, an enum) is not a reference.
    assert.deepEqual(
      toolErrors({ type: 'object', default: { $ref: 'https://x.example/' }, enum: [{ $ref: 'x' }] }),
      [],
    );
    // `$id` and `$schema` below the root would change how references resolve.
    assert.equal(
      toolErrors({ type: 'object', properties: { a: { $id: 'https://x.example/b' } } })[0]?.field,
      'clientTools/0/parameters/properties/a/$id',
    );
    assert.equal(
      toolErrors({ type: 'object', anyOf: [{ $schema: 'http://json-schema.org/draft-07/schema#' }] })[0]?.field,
      'clientTools/0/parameters/anyOf/0/$schema',
    );
  });

  it('refuses invalid regular expressions, and accepts a catastrophic one: it is never run on the server', () => {
    assert.equal(
      toolErrors({ type: 'object', properties: { a: { type: 'string', pattern: '(' } } })[0]?.field,
      'clientTools/0/parameters/properties/a/pattern',
    );
    assert.equal(
      toolErrors({ type: 'object', patternProperties: { '[': {} } })[0]?.field,
      'clientTools/0/parameters/patternProperties/[',
    );
    assert.deepEqual(toolErrors({ type: 'object', properties: { a: { type: 'string', pattern: '^(a+)+$' } } }), []);
  });

  it('refuses text storage would refuse in the description and in the schema', () => {
    assert.equal(toolErrors({ type: 'object' }, { description: 'Pick \ud800' })[0]?.field, 'clientTools/0/description');
    assert.equal(
      toolErrors({ type: 'object', properties: { a: { description: 'a\u0000b' } } })[0]?.field,
      'clientTools/0/parameters/properties/a/description',
    );
  });
});

describe('tool results', () => {
  const resultErrors = (result: Record<string, unknown>) =>
    errorsOf(resultsSchema, { results: [{ toolCallId: 'call_1', output: 'ok', ...result }] });

  it('sends a string as is and other JSON as its JSON text', () => {
    const parsed = validate(resultsSchema, {
      results: [
        { toolCallId: 'c', output: 'a' },
        { toolCallId: 'd', output: { n: [1] } },
      ],
    });
    assert.deepEqual(parsed.results, [
      { toolCallId: 'c', output: 'a' },
      { toolCallId: 'd', output: '{"n":[1]}' },
    ]);
  });

  it('refuses unpaired surrogates and NUL in an output, a string inside it, a key, and the ids', () => {
    for (const output of [
      'x\ud800',
      '\udc00',
      'a\u0000',
      { a: 'b\ud83d' },
      ['ok', { deep: ['\u0000'] }],
      { 'k\udfff': 1 },
    ]) {
      const errors = resultErrors({ output });
      assert.equal(errors.length, 1, JSON.stringify(output));
      assert.equal(errors[0]?.field, 'results/0/output');
      assert.match(errors[0]?.message ?? '', /no unpaired surrogate/);
    }
    assert.equal(resultErrors({ toolCallId: 'call_\ud800' })[0]?.field, 'results/0/toolCallId');
    assert.equal(
      errorsOf(resultsSchema, { turnId: 't\u0000', results: [{ toolCallId: 'c', output: '' }] })[0]?.field,
      'turnId',
    );
  });

  it('refuses an output nested deeper than 32 levels instead of failing to serialise it', () => {
    let deep: unknown = 'x';
    for (let i = 0; i < 10_000; i++) deep = [deep];
    assert.deepEqual(resultErrors({ output: deep }), [
      { field: 'results/0/output', message: 'output is nested more than 32 levels deep' },
    ]);
  });
});

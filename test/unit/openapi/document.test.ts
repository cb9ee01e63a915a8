import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  AuthUnavailableError,
  ConfigurationInvalidError,
  ContentFilteredError,
  ContextLengthExceededError,
  ConversationBusyError,
  ConversationFullError,
  InvalidToolResultsError,
  ClientToolsNotAllowedError,
  ToolResultsPendingError,
  NoPendingTurnError,
  IdempotencyInProgressError,
  IdempotencyKeyReusedError,
  InvalidIdError,
  InvalidJsonError,
  InvalidRequestError,
  InvalidSignatureError,
  MethodNotAllowedError,
  NotFoundError,
  PayloadTooLargeError,
  PROBLEM_CODES,
  RateLimitedError,
  SpecialTokenRejectedError,
  StorageUnavailableError,
  UnauthorizedError,
  UnsupportedMediaTypeError,
  UpstreamError,
} from '../../../src/core/errors';
import { toProblem } from '../../../src/http/problem';
import { createConversationSchema, sendMessageSchema } from '../../../src/http/schemas';
import { webhookMessageSchema } from '../../../src/http/webhooks/schemas';
import { buildOpenApiDocument, defaultOpenApiOptions, type OpenApiOptions } from '../../../src/openapi/document';
import { PROBLEM_CATALOG } from '../../../src/openapi/problems';
import { createDocumentValidator, operationsOf, refsOf, resolvePointer } from '../../support/openApiValidator';

const document: any = buildOpenApiDocument();
const validator = createDocumentValidator(document);

function withOptions(overrides: Partial<OpenApiOptions>): any {
  return buildOpenApiDocument({ ...defaultOpenApiOptions(), ...overrides });
}

function deref(value: any): any {
  return value?.$ref ? resolvePointer(document, value.$ref) : value;
}

describe('the OpenAPI document is structurally valid OpenAPI 3.1', () => {
  it('declares 3.1, info and the /api server', () => {
    assert.match(document.openapi, /^3\.1\.\d+$/);
    assert.equal(typeof document.info.title, 'string');
    assert.equal(typeof document.info.version, 'string');
    assert.deepEqual(document.servers, [{ url: '/api' }]);
  });

  it('documents every route the app registers', () => {
    const routes = operationsOf(document).map(({ method, path }) => `${method.toUpperCase()} ${path}`);
    assert.deepEqual(routes.sort(), [
      'DELETE /conversations/{id}',
      'DELETE /conversations/{id}/pending-turn',
      'GET /conversations',
      'GET /conversations/{id}',
      'GET /conversations/{id}/pending-turn',
      'GET /conversations/{id}/turns/{turnId}',
      'GET /health',
      'GET /openapi.json',
      'POST /conversations',
      'POST /conversations/{id}/messages',
      'POST /conversations/{id}/messages/stream',
      'POST /conversations/{id}/tool-results',
      'POST /conversations/{id}/tool-results/stream',
      'POST /conversations/{id}/turns',
      'POST /webhooks/github',
      'POST /webhooks/messages',
    ]);
  });

  it('resolves every $ref', () => {
    const refs = refsOf(document);
    assert.ok(refs.length > 20, 'the document uses refs');
    for (const { ref, at } of refs) assert.notEqual(resolvePointer(document, ref), undefined, `${ref} at ${at}`);
  });

  it('has unique operation ids, declared tags and well-formed responses', () => {
    const ids = new Set<string>();
    const tags = new Set(document.tags.map((tag: any) => tag.name));
    for (const { method, path, operation } of operationsOf(document)) {
      const where = `${method} ${path}`;
      assert.equal(typeof operation.operationId, 'string', where);
      assert.ok(!ids.has(operation.operationId), `duplicate operationId ${operation.operationId}`);
      ids.add(operation.operationId);
      for (const tag of operation.tags ?? []) assert.ok(tags.has(tag), `${where}: undeclared tag ${tag}`);
      const statuses = Object.keys(operation.responses);
      assert.ok(statuses.length > 0, where);
      for (const status of statuses) {
        assert.match(status, /^(?:[1-5](?:\d\d|XX)|default)$/, `${where}: response key ${status}`);
        const response = deref(operation.responses[status]);
        assert.equal(typeof response.description, 'string', `${where} ${status}: description`);
        for (const [mediaType, media] of Object.entries<any>(response.content ?? {})) {
          assert.match(mediaType, /^[a-z]+\/[a-z0-9.+-]+$/, `${where} ${status}: media type`);
          assert.ok(media.schema, `${where} ${status} ${mediaType}: schema`);
        }
      }
    }
  });

  it('declares each path template parameter as a required path parameter, and no others', () => {
    for (const [path, item] of Object.entries<any>(document.paths)) {
      const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((match) => match[1]).sort();
      for (const { method, operation } of operationsOf({ paths: { [path]: item } })) {
        const parameters = [...(item.parameters ?? []), ...(operation.parameters ?? [])].map(deref);
        for (const parameter of parameters) {
          assert.equal(typeof parameter.name, 'string', `${method} ${path}`);
          assert.ok(['query', 'header', 'path', 'cookie'].includes(parameter.in), `${parameter.name}: in`);
          assert.ok(Boolean(parameter.schema) !== Boolean(parameter.content), `${parameter.name}: schema xor content`);
          if (parameter.in === 'path') assert.equal(parameter.required, true, `${parameter.name} must be required`);
        }
        const inPath = parameters.filter((parameter) => parameter.in === 'path').map((parameter) => parameter.name);
        assert.deepEqual(inPath.sort(), templated, `${method} ${path}`);
      }
    }
  });

  it('declares valid security schemes and uses only declared ones', () => {
    const schemes = withOptions({ authMode: 'jwt' }).components.securitySchemes;
    assert.deepEqual(schemes.functionKey, { ...schemes.functionKey, type: 'apiKey', in: 'query', name: 'code' });
    assert.deepEqual(schemes.functionKeyHeader, {
      ...schemes.functionKeyHeader,
      type: 'apiKey',
      in: 'header',
      name: 'x-functions-key',
    });
    assert.deepEqual(schemes.bearer, { ...schemes.bearer, type: 'http', scheme: 'bearer', bearerFormat: 'JWT' });
    for (const { operation } of operationsOf(withOptions({ authMode: 'jwt' }))) {
      for (const requirement of operation.security ?? []) {
        for (const name of Object.keys(requirement)) assert.ok(schemes[name], `undeclared security scheme ${name}`);
      }
    }
  });

  it('header objects carry no name or in, and a schema', () => {
    for (const [name, header] of Object.entries<any>(document.components.headers)) {
      assert.equal(header.name, undefined, name);
      assert.equal(header.in, undefined, name);
      assert.ok(header.schema, name);
    }
  });

  it('compiles every schema with a strict JSON Schema 2020-12 validator', () => {
    for (const name of Object.keys(document.components.schemas)) {
      assert.doesNotThrow(() => validator.compile({ $ref: `#/components/schemas/${name}` }), name);
    }
    for (const { method, path, operation } of operationsOf(document)) {
      for (const [status, response] of Object.entries<any>(operation.responses)) {
        for (const media of Object.values<any>(response.content ?? {})) {
          assert.doesNotThrow(() => validator.compile(media.schema), `${method} ${path} ${status}`);
        }
      }
    }
  });
});

describe('problem codes in the document', () => {
  it('the Problem schema code is exactly PROBLEM_CODES', () => {
    assert.deepEqual(document.components.schemas.Problem.properties.code.enum, [...PROBLEM_CODES]);
  });

  it('every code is listed in the code table', () => {
    const table = document.components.schemas.Problem.properties.code.description as string;
    for (const code of PROBLEM_CODES)
      assert.ok(table.includes(`| \`${code}\` | ${PROBLEM_CATALOG[code].status} |`), code);
  });

  it('docs/api.md shows the same table', () => {
    const page = readFileSync(join(__dirname, '..', '..', '..', 'docs', 'api.md'), 'utf8');
    for (const code of PROBLEM_CODES) {
      const row = `| \`${code}\` | ${PROBLEM_CATALOG[code].status} | ${PROBLEM_CATALOG[code].meaning} |`;
      assert.ok(page.includes(row), `docs/api.md lacks or differs on: ${row}`);
    }
  });

  it('the catalog statuses are the ones the errors really answer with', () => {
    const errors = [
      new InvalidRequestError('x'),
      new InvalidJsonError(),
      new InvalidIdError('x'),
      new SpecialTokenRejectedError(['<|endoftext|>']),
      new ContextLengthExceededError('x'),
      new ConversationFullError('x'),
      new InvalidToolResultsError('x'),
      new ClientToolsNotAllowedError(),
      new ToolResultsPendingError({ turnId: 't', toolCalls: [], expiresAt: '2026-01-01T00:00:00.000Z' }),
      new NoPendingTurnError(),
      new UnauthorizedError('x'),
      new InvalidSignatureError('x'),
      new NotFoundError('x'),
      new MethodNotAllowedError('x', ['GET']),
      new ConversationBusyError(),
      new IdempotencyInProgressError(),
      new PayloadTooLargeError('x'),
      new UnsupportedMediaTypeError(),
      new IdempotencyKeyReusedError(),
      new ContentFilteredError({}),
      new RateLimitedError('x', 1),
      new RateLimitedError('x', 1, 'quota_exceeded'),
      new RateLimitedError('x', 1, 'conversation_limit_reached'),
      new RateLimitedError('x', 1, 'upstream_rate_limited'),
      new UpstreamError('upstream_error', 'x'),
      new UpstreamError('upstream_unavailable', 'x'),
      new UpstreamError('upstream_timeout', 'x'),
      new StorageUnavailableError(),
      new AuthUnavailableError(),
      new ConfigurationInvalidError(['CHAT_TRIM_POLICY']),
      new Error('a bug'),
    ];
    const answered = new Map(errors.map((error) => [toProblem(error).body.code, toProblem(error).body.status]));
    assert.deepEqual([...answered.keys()].sort(), [...PROBLEM_CODES].sort());
    for (const [code, status] of answered) {
      assert.equal(PROBLEM_CATALOG[code as keyof typeof PROBLEM_CATALOG].status, status, code);
    }
  });

  it('each problem response admits only its own status and codes', () => {
    const send = validator.operation('post', '/conversations/{id}/messages');
    const problem = (status: number, code: string) => ({ type: 'x', title: 't', status, detail: 'd', code });
    const conflict = validator.compile(send.responses['409'].content['application/problem+json'].schema);
    assert.ok(conflict(problem(409, 'conversation_busy')), JSON.stringify(conflict.errors));
    assert.ok(!conflict(problem(409, 'not_found')), 'a code of another status');
    assert.ok(!conflict(problem(400, 'conversation_busy')), 'another status in the body');
    assert.deepEqual(send.responses['409'].content['application/problem+json'].schema.allOf[1].properties.code.enum, [
      'conversation_busy',
      'idempotency_key_in_use',
      'tool_results_pending',
    ]);
    for (const { operation } of operationsOf(document)) {
      for (const [status, response] of Object.entries<any>(operation.responses)) {
        const schema = response.content?.['application/problem+json']?.schema;
        if (!schema) continue;
        for (const code of schema.allOf[1].properties.code.enum) {
          assert.equal(String(PROBLEM_CATALOG[code as keyof typeof PROBLEM_CATALOG].status), status, code);
        }
      }
    }
  });

  it('every operation that takes input or credentials documents its 4xx answers (redocly.yaml exempts the rest)', () => {
    for (const { method, path, operation } of operationsOf(withOptions({ authMode: 'jwt' }))) {
      const clientErrors = Object.keys(operation.responses).filter((status) => status.startsWith('4'));
      const exempt = ['get /health', 'get /openapi.json'].includes(`${method} ${path}`);
      assert.equal(clientErrors.length === 0, exempt, `${method} ${path}: ${clientErrors.join(', ') || 'no 4xx'}`);
    }
  });

  it('every operation can answer internal_error, and the turn its upstream problems', () => {
    for (const { method, path, operation } of operationsOf(document)) {
      assert.ok(operation.responses['500'], `${method} ${path}`);
    }
    const send = validator.operation('post', '/conversations/{id}/messages');
    assert.ok(
      send.responses['429'].content['application/problem+json'].schema.allOf[1].properties.code.enum.includes(
        'upstream_rate_limited',
      ),
    );
    assert.deepEqual(Object.keys(send.responses['429'].headers), ['Retry-After']);
    for (const status of ['400', '404', '409', '413', '415', '422', '502', '503', '504']) {
      assert.ok(send.responses[status], `sendMessage documents ${status}`);
    }
  });
});

describe('auth mode', () => {
  it('none: a function key only, refused by the host (401 without a body), never by the app', () => {
    const create = withOptions({ authMode: 'none' }).paths['/conversations'].post;
    assert.deepEqual(create.security, [{ functionKey: [] }, { functionKeyHeader: [] }]);
    assert.match(create.responses['401'].description, /Functions host/);
    assert.equal(create.responses['401'].content, undefined);
    assert.equal(withOptions({ authMode: 'none' }).paths['/health'].get.responses['401'], undefined);
  });

  it('declares the bearer scheme and the WWW-Authenticate header only in the modes that use them', () => {
    const none = withOptions({ authMode: 'none' }).components;
    assert.equal(none.securitySchemes.bearer, undefined);
    assert.equal(none.headers['WWW-Authenticate'], undefined);
    for (const mode of ['jwt', 'easyauth'] as const) {
      const components = withOptions({ authMode: mode }).components;
      assert.ok(components.securitySchemes.bearer, mode);
      assert.ok(components.headers['WWW-Authenticate'], mode);
    }
  });

  it('jwt: a function key and a bearer token, 401 with WWW-Authenticate, 503 auth_unavailable', () => {
    const create = withOptions({ authMode: 'jwt' }).paths['/conversations'].post;
    assert.deepEqual(create.security, [
      { functionKey: [], bearer: [] },
      { functionKeyHeader: [], bearer: [] },
    ]);
    assert.ok(create.responses['401'].headers['WWW-Authenticate']);
    assert.deepEqual(create.responses['401'].content['application/problem+json'].schema.allOf[1].properties.code.enum, [
      'unauthorized',
    ]);
    const unavailable = create.responses['503'].content['application/problem+json'].schema.allOf[1];
    assert.deepEqual(unavailable.properties.code.enum, [
      'storage_unavailable',
      'auth_unavailable',
      'configuration_invalid',
    ]);
  });

  it('health, the document and the webhooks need no caller credentials', () => {
    const jwt = withOptions({ authMode: 'jwt' });
    for (const [path, method] of [
      ['/health', 'get'],
      ['/openapi.json', 'get'],
      ['/webhooks/messages', 'post'],
      ['/webhooks/github', 'post'],
    ] as const) {
      assert.deepEqual(jwt.paths[path][method].security, [], path);
    }
  });
});

describe('request bodies follow the configured limits', () => {
  const limits = { maxMessageChars: 321, maxExamples: 4, bodyBytes: 2048 };
  const limited = withOptions({ limits });
  const schemas = limited.components.schemas;

  it('puts the configured lengths, counts and body size in the document', () => {
    assert.equal(schemas.SendMessageRequest.properties.content.maxLength, 321);
    assert.equal(schemas.CreateConversationRequest.properties.system.maxLength, 321);
    assert.equal(schemas.CreateConversationRequest.properties.examples.maxItems, 4);
    assert.equal(schemas.WebhookMessageRequest.properties.content.maxLength, 321);
    assert.match(limited.paths['/conversations/{id}/messages'].post.requestBody.description, /at most 2048 bytes/);
    assert.equal(document.components.schemas.SendMessageRequest.properties.content.maxLength, 100_000);
  });

  it('accepts and refuses the same bodies the handlers do', () => {
    const check = createDocumentValidator(limited);
    const cases: { name: string; zod: { safeParse(value: unknown): { success: boolean } }; bodies: unknown[] }[] = [
      {
        name: 'SendMessageRequest',
        zod: sendMessageSchema(limits),
        bodies: [
          { content: 'Hello' },
          { content: 'Hello', name: 'ada_l-1' },
          { content: '' },
          { content: ' \n\t ' },
          { content: 'x'.repeat(321) },
          { content: 'x'.repeat(322) },
          { content: 'Hi', name: 'has space' },
          { content: 'Hi', role: 'system' },
          { content: 42 },
          {},
        ],
      },
      {
        name: 'CreateConversationRequest',
        zod: createConversationSchema(limits),
        bodies: [
          {},
          { system: 'Be brief.', title: 'T', metadata: { app: 'ios', 'a.b-c_d': 'v' } },
          { system: '   ' },
          { title: 'x'.repeat(200) },
          { title: 'x'.repeat(201) },
          { examples: Array.from({ length: 4 }, () => ({ role: 'user', content: 'q' })) },
          { examples: Array.from({ length: 5 }, () => ({ role: 'user', content: 'q' })) },
          { examples: [{ role: 'system', content: 'q' }] },
          { examples: [{ role: 'user', content: 'q', extra: 1 }] },
          { metadata: Object.fromEntries(Array.from({ length: 16 }, (_, index) => [`k${index}`, 'v'])) },
          { metadata: Object.fromEntries(Array.from({ length: 17 }, (_, index) => [`k${index}`, 'v'])) },
          { metadata: { 'bad key': 'v' } },
          { metadata: { key: 'x'.repeat(513) } },
          { metadata: { key: 1 } },
          { id: 'mine' },
        ],
      },
      {
        name: 'WebhookMessageRequest',
        zod: webhookMessageSchema(limits),
        bodies: [
          { threadId: 'ticket-1', content: 'Hi' },
          { threadId: 'ticket-1', content: 'Hi', user: 'u@example.com', name: 'u' },
          { threadId: 'tab\there', content: 'Hi' },
          { threadId: '', content: 'Hi' },
          { threadId: 'x'.repeat(257), content: 'Hi' },
          { threadId: 't', content: '  ' },
          { threadId: 't', content: 'Hi', extra: true },
          { content: 'Hi' },
        ],
      },
    ];
    for (const { name, zod, bodies } of cases) {
      const documented = check.compile({ $ref: `#/components/schemas/${name}` });
      for (const body of bodies) {
        assert.equal(documented(body), zod.safeParse(body).success, `${name} ${JSON.stringify(body).slice(0, 80)}`);
      }
    }
  });
});

describe('response schemas', () => {
  it('accept what the handlers send and refuse what they never send', () => {
    const turn = validator.compile({ $ref: '#/components/schemas/TurnResult' });
    const result = {
      status: 'completed',
      conversationId: 'c1',
      message: { id: 'msg_0000000002', role: 'assistant', content: 'Hi', createdAt: '2025-01-01T00:00:00.000Z' },
      finishReason: 'stop',
      usage: { promptTokens: 10, completionTokens: 2, totalTokens: 12, cachedPromptTokens: 0 },
      context: { promptTokens: 10, droppedTurns: 0 },
    };
    assert.ok(turn(result), JSON.stringify(turn.errors));
    assert.ok(!turn({ ...result, replayed: false }), 'replayed is not part of the JSON response');
    assert.ok(!turn({ ...result, usage: undefined }), 'usage is required');
    const { cachedPromptTokens: _cached, ...withoutCached } = result.usage;
    assert.ok(!turn({ ...result, usage: withoutCached }), 'cachedPromptTokens is always there');
    assert.ok(!turn({ ...result, message: { ...result.message, createdAt: 'yesterday' } }), 'a date-time');

    const problem = validator.compile({ $ref: '#/components/schemas/Problem' });
    const body = toProblem(
      new InvalidRequestError('bad', [{ field: 'content', message: 'empty' }]),
      'r1',
      '/api/x',
    ).body;
    assert.ok(problem(body), JSON.stringify(problem.errors));
    assert.ok(problem({ ...body, futureExtension: 1 }), 'problems are open to extensions');
    assert.ok(!problem({ ...body, code: 'made_up' }), 'unknown code');
  });

  it('documents the event stream of a streamed turn, one event at a time', () => {
    const responses = validator.operation('post', '/conversations/{id}/messages/stream').responses;
    assert.deepEqual(Object.keys(responses['200'].content), ['text/event-stream']);
    const event = validator.compile(responses['200'].content['text/event-stream'].schema);
    const events = document.components.schemas.TurnStreamEvent.oneOf.map((member: any) => member.properties.event);
    assert.deepEqual(events, [
      { const: 'turn.started' },
      { const: 'message.delta' },
      { const: 'tool.call' },
      { const: 'tool.result' },
      { const: 'turn.completed' },
      { const: 'turn.requires_action' },
      { const: 'turn.failed' },
    ]);
    const started = { conversationId: 'c', messageId: 'm', promptTokens: 5, droppedTurns: 0 };
    assert.ok(event({ event: 'turn.started', data: started }), JSON.stringify(event.errors));
    assert.ok(event({ event: 'turn.started', data: { ...started, replayed: true } }));
    assert.ok(!event({ event: 'turn.started', data: { ...started, droppedTurns: undefined } }));
    assert.ok(!event({ event: 'message.delta', data: started }), 'the data of another event');
    assert.ok(!event({ event: 'turn.surprise', data: {} }));
    assert.ok(event({ event: 'message.delta', data: { content: 'Hi' } }));
  });

  it('gives each turn route one success answer, so typed clients need no narrowing', () => {
    const success = (path: string) =>
      Object.entries<any>(validator.operation('post', path).responses)
        .filter(([status]) => status.startsWith('2'))
        .map(([status, response]) => `${status} ${Object.keys(response.content).join(',')}`);
    assert.deepEqual(success('/conversations/{id}/messages'), ['200 application/json']);
    assert.deepEqual(success('/conversations/{id}/messages/stream'), ['200 text/event-stream']);
    assert.deepEqual(success('/conversations/{id}/turns'), ['202 application/json']);
    assert.deepEqual(success('/conversations/{id}/tool-results'), ['200 application/json']);
    assert.deepEqual(success('/conversations/{id}/tool-results/stream'), ['200 text/event-stream']);
  });
});

describe('the response checker used by the integration test', () => {
  const headers = (entries: Record<string, string>) => new Headers(entries);
  const problem = (status: number, code: string) =>
    JSON.stringify({ type: `urn:chat-api:problem:${code}`, title: 't', status, detail: 'd', code });

  it('passes a conforming problem and flags an undocumented status', () => {
    const json = headers({ 'content-type': 'application/problem+json' });
    assert.deepEqual(
      validator.check('delete', '/conversations/{id}', { status: 404, headers: json, text: problem(404, 'not_found') }),
      [],
    );
    const undocumented = validator.check('delete', '/conversations/{id}', {
      status: 422,
      headers: json,
      text: problem(422, 'content_filtered'),
    });
    assert.match(undocumented.join('\n'), /status not documented/);
  });

  it('flags an undocumented media type, a missing required header, a body where none is documented', () => {
    const conversation = {
      id: 'c',
      title: null,
      system: 's',
      examples: [],
      metadata: {},
      createdAt: '2025-01-01T00:00:00.000Z',
      updatedAt: '2025-01-01T00:00:00.000Z',
      messageCount: 0,
    };
    const created = validator.check('post', '/conversations', {
      status: 201,
      headers: headers({ 'content-type': 'text/plain' }),
      text: JSON.stringify(conversation),
    });
    assert.match(created.join('\n'), /required header Location missing/);
    assert.match(created.join('\n'), /media type "text\/plain" not documented/);
    const deleted = validator.check('delete', '/conversations/{id}', { status: 204, headers: headers({}), text: 'x' });
    assert.match(deleted.join('\n'), /without a body/);
  });

  it('checks each server-sent event against its schema', () => {
    const stream = [
      'event: turn.started\ndata: {"conversationId":"c","messageId":"m","promptTokens":1,"droppedTurns":0}\n\n',
      'event: message.delta\ndata: {"text":"wrong member"}\n\n',
      'event: turn.surprise\ndata: {}\n\n',
    ].join('');
    const found = validator.check('post', '/conversations/{id}/messages/stream', {
      status: 200,
      headers: headers({ 'content-type': 'text/event-stream; charset=utf-8' }),
      text: stream,
    });
    assert.equal(found.length, 2, found.join('\n'));
    assert.match(found[0]!, /event message\.delta/);
    assert.match(found[1]!, /event turn\.surprise/);
  });
});

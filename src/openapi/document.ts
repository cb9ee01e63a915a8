/**
 * The OpenAPI 3.1 document of the API, served at GET /api/openapi.json. Request bodies are generated from the same
 * zod schema factories the handlers validate with, built with the configured limits, so the documented limits are the
 * enforced ones; responses are generated from src/openapi/responseSchemas.ts, which the compiler checks against the
 * handlers' types. Each operation lists the problem codes it can answer with, per status.
 */
import * as z from 'zod';
import type { Config } from '../config';
import { SETTINGS } from '../config';
import { MAX_PROLOGUE_JSON_CHARS } from '../core/conversations';
import { PROBLEM_CODES } from '../core/errors';
import { MAX_JSON_DEPTH } from '../http/jsonValues';
import {
  createConversationSchema,
  MAX_CLIENT_TOOL_JSON_CHARS,
  MAX_METADATA_ENTRIES,
  MAX_METADATA_KEY_CHARS,
  MAX_METADATA_VALUE_CHARS,
  MAX_TITLE_CHARS,
  sendMessageSchema,
  toolResultsSchema,
  type BodyLimits,
} from '../http/schemas';
import { MAX_THREAD_ID_CHARS } from '../http/webhooks/threadTurn';
import { githubIssuePayloadSchema, webhookMessageSchema } from '../http/webhooks/schemas';
import { PROBLEM_CATALOG, type ProblemCode } from './problems';
import {
  conversationListSchema,
  conversationSchema,
  conversationWithMessagesSchema,
  healthSchema,
  messageDeltaEventSchema,
  messageSchema,
  problemSchema,
  requiresActionSchema,
  toolCallEventSchema,
  toolResultEventSchema,
  turnCompletedEventSchema,
  turnRequiresActionEventSchema,
  turnResultSchema,
  turnStartedEventSchema,
  usageSchema,
  webhookTurnResultSchema,
  queuedTurnSchema,
  turnStatusSchema,
} from './responseSchemas';

export type JsonValue = string | number | boolean | null | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

export interface OpenApiOptions {
  limits: BodyLimits & { bodyBytes: number };
  /** Decides which credentials the operations ask for and whether they can answer 401. */
  authMode: Config['auth']['mode'];
}

/** The version of the API contract (not of the package): bump it when a response or request changes. */
export const API_VERSION = '1.0.0';
export const PROBLEM_MEDIA_TYPE = 'application/problem+json';
export const EVENT_STREAM_MEDIA_TYPE = 'text/event-stream';

/**
 * The server-sent events of a streamed turn, by event name: the component schema of each one's `data`. The stream's
 * schema (`TurnStreamEvent`) describes one event as `{ event, data }`, the convention OpenAPI 3.2 makes official with
 * `itemSchema` and SDK generators (Speakeasy, Stainless) read from 3.1 documents.
 */
export const TURN_STREAM_EVENTS: Readonly<Record<string, string>> = {
  'turn.started': 'TurnStartedEvent',
  'message.delta': 'MessageDeltaEvent',
  'tool.call': 'ToolCallEvent',
  'tool.result': 'ToolResultEvent',
  'turn.completed': 'TurnCompletedEvent',
  'turn.requires_action': 'TurnRequiresActionEvent',
  'turn.failed': 'Problem',
};

/** The conversation id of the examples. */
const EXAMPLE_CONVERSATION = '19a7d9f6-05da-45a4-bac5-3d7356b0f476';

/** Paging bounds of the list routes (src/functions/listConversations.ts and getConversation.ts). */
const CONVERSATION_PAGE = { limit: 20, max: 100 };
const MESSAGE_PAGE = { limit: 100, max: 1000 };

function settingDefault(name: string): number {
  const value = Number(SETTINGS.find((setting) => setting.name === name)?.default);
  if (!Number.isFinite(value)) throw new Error(`${name} has no numeric default in SETTINGS.`);
  return value;
}

/** The document an app with default settings serves. */
export function defaultOpenApiOptions(): OpenApiOptions {
  return {
    limits: {
      maxMessageChars: settingDefault('CHAT_MAX_MESSAGE_CHARS'),
      maxExamples: settingDefault('CHAT_MAX_EXAMPLES'),
      bodyBytes: settingDefault('LIMIT_BODY_BYTES'),
    },
    authMode: 'none',
  };
}

export function openApiOptionsFromConfig(config: Readonly<Config>): OpenApiOptions {
  return {
    limits: {
      maxMessageChars: config.chat.maxMessageChars,
      maxExamples: config.chat.maxExamples,
      bodyBytes: config.limits.bodyBytes,
    },
    authMode: config.auth.mode,
  };
}

// ---- Schemas ------------------------------------------------------------------------------------------------

const ref = (name: string): JsonObject => ({ $ref: `#/components/schemas/${name}` });

/** zod's JSON Schema, tidied for an OpenAPI document: no per-schema `$schema`/`$id`, no safe-integer noise. */
function tidy(value: JsonValue): JsonValue {
  if (Array.isArray(value)) return value.map(tidy);
  if (value === null || typeof value !== 'object') return value;
  const result: JsonObject = {};
  for (const [key, inner] of Object.entries(value)) {
    if (key === '$schema' || key === '$id') continue;
    if (key === 'maximum' && inner === Number.MAX_SAFE_INTEGER) continue;
    if (key === 'minimum' && inner === Number.MIN_SAFE_INTEGER) continue;
    // zod adds its date-time regex beside `format`; the format says it.
    if (key === 'pattern' && value.format === 'date-time') continue;
    result[key] = tidy(inner);
  }
  return result;
}

function toComponents(schemas: Record<string, z.ZodType>, io: 'input' | 'output'): Record<string, JsonObject> {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(schemas)) registry.add(schema, { id });
  const converted = z.toJSONSchema(registry, {
    io,
    uri: (id) => `#/components/schemas/${id}`,
    unrepresentable: 'throw',
  }).schemas;
  return Object.fromEntries(
    Object.entries(converted).map(([id, schema]) => [id, tidy(schema as JsonObject) as JsonObject]),
  );
}

/** Adds keywords to the schema at `path` (property names, with `items` for array items). */
function annotate(schema: JsonObject, path: string[], keywords: JsonObject): void {
  let target: JsonValue | undefined = schema;
  for (const step of path) {
    const node = target as JsonObject;
    target = step === 'items' ? node.items : (node.properties as JsonObject | undefined)?.[step];
    if (target === undefined || target === null || typeof target !== 'object' || Array.isArray(target)) {
      throw new Error(`No schema at ${path.join('/')} to annotate: the request schema changed.`);
    }
  }
  Object.assign(target as JsonObject, keywords);
}

/** JSON Schema for zod's `value.trim().length > 0` refinement (JS `\s` and `trim()` agree on whitespace). */
const NOT_BLANK = '\\S';
const NO_CONTROL_CHARACTERS = '^[^\\u0000-\\u001f\\u007f]*$';

function requestSchemas(limits: OpenApiOptions['limits']): Record<string, JsonObject> {
  const components = toComponents(
    {
      CreateConversationRequest: createConversationSchema(limits),
      SendMessageRequest: sendMessageSchema(limits),
      ToolResultsRequest: toolResultsSchema(limits),
      WebhookMessageRequest: webhookMessageSchema(limits),
      GithubIssueEvent: githubIssuePayloadSchema,
    },
    'input',
  );
  // JSON Schema's maxLength counts characters (code points); the app counts UTF-16 code units, as Table Storage
  // does, so an emoji counts two. maxLength stays as the bound every accepted string meets.
  const units = (max: number) => `at most ${max} UTF-16 code units (an emoji counts two)`;
  const chars = `${units(limits.maxMessageChars)}, not blank`;
  const create = components.CreateConversationRequest!;
  annotate(create, ['system'], {
    pattern: NOT_BLANK,
    description: `The system message; ${chars}. Default: the app's CHAT_SYSTEM_MESSAGE.`,
  });
  annotate(create, ['examples'], {
    description: `Few-shot examples sent after the system message on every turn; at most ${limits.maxExamples}.`,
  });
  annotate(create, ['examples', 'items', 'content'], { pattern: NOT_BLANK, description: chars });
  annotate(create, ['title'], {
    pattern: NOT_BLANK,
    description: `Shown in the conversation list; ${units(MAX_TITLE_CHARS)}, not blank.`,
  });
  annotate(create, ['metadata'], {
    maxProperties: MAX_METADATA_ENTRIES,
    description:
      `Your own string labels, at most ${MAX_METADATA_ENTRIES}; returned as given. Keys: 1 to ${MAX_METADATA_KEY_CHARS} ` +
      `ASCII letters, digits, \`_\`, \`.\` or \`-\`; values: ${units(MAX_METADATA_VALUE_CHARS)}.`,
  });

  annotate(create, ['tools'], {
    description:
      'Server tools this conversation may use: a subset of the deployment’s CHAT_TOOLS. Default: all of them.',
  });
  annotate(create, ['clientTools'], {
    description:
      'Tools your app runs: `parameters` must be a JSON Schema (2020-12) with `"type": "object"` (`$schema` left ' +
      `out or the 2020-12 one; \`$ref\`s only inside the schema; nested at most ${MAX_JSON_DEPTH} levels); each tool ` +
      `at most ${MAX_CLIENT_TOOL_JSON_CHARS} characters as JSON, and all of them with the system message and ` +
      `examples at most ${MAX_PROLOGUE_JSON_CHARS}. A call to one pauses the turn with \`requires_action\` until you ` +
      'post the results to /conversations/{id}/tool-results.',
  });
  annotate(components.ToolResultsRequest!, ['turnId'], {
    description: 'The paused turn’s id; when given, a stale one is refused (no_pending_turn).',
  });
  annotate(components.ToolResultsRequest!, ['results'], {
    description:
      'One result per awaited call. `output` is any JSON: a string is sent to the model as is, anything else as ' +
      `its JSON text, bounded like server tool output; at most ${limits.maxMessageChars} characters, nested at most ` +
      `${MAX_JSON_DEPTH} levels, and its strings valid Unicode without NUL.`,
  });

  const send = components.SendMessageRequest!;
  annotate(send, ['content'], { pattern: NOT_BLANK, description: `The user's message; ${chars}.` });
  annotate(send, ['name'], {
    description:
      "The participant's name, passed to the model (OpenAI's `name`): 1 to 64 ASCII letters, digits, `_` or `-`.",
  });

  const webhook = components.WebhookMessageRequest!;
  annotate(webhook, ['threadId'], {
    pattern: NO_CONTROL_CHARACTERS,
    description:
      'Your own conversation key: every delivery with the same threadId continues one conversation; ' +
      `${units(MAX_THREAD_ID_CHARS)}, no control characters.`,
  });
  annotate(webhook, ['content'], { pattern: NOT_BLANK, description: `The message; ${chars}.` });
  annotate(webhook, ['user'], { description: 'Your user id; made into the participant name when `name` is absent.' });

  components.GithubIssueEvent!.description =
    'The part of a GitHub `issues` (action `opened`) or `issue_comment` (action `created`) payload the app reads; ' +
    'the rest is ignored.';
  return components;
}

function responseSchemas(): Record<string, JsonObject> {
  const components = toComponents(
    {
      Conversation: conversationSchema,
      ConversationWithMessages: conversationWithMessagesSchema,
      ConversationList: conversationListSchema,
      TurnResult: turnResultSchema,
      RequiresAction: requiresActionSchema,
      Usage: usageSchema,
      Message: messageSchema,
      WebhookTurnResult: webhookTurnResultSchema,
      QueuedTurn: queuedTurnSchema,
      TurnStatus: turnStatusSchema,
      Health: healthSchema,
      TurnStartedEvent: turnStartedEventSchema,
      MessageDeltaEvent: messageDeltaEventSchema,
      TurnCompletedEvent: turnCompletedEventSchema,
      TurnRequiresActionEvent: turnRequiresActionEventSchema,
      ToolCallEvent: toolCallEventSchema,
      ToolResultEvent: toolResultEventSchema,
      Problem: problemSchema,
    },
    'output',
  );
  components.TurnStreamEvent = {
    description:
      'One server-sent event of a streamed turn: `event` is its `event:` line, `data` its `data:` line parsed as ' +
      'JSON. A stream is `turn.started`, `message.delta` (in order, with `tool.call` and `tool.result` between ' +
      'them when the model uses tools), then `turn.completed`, `turn.requires_action` or `turn.failed`.',
    oneOf: Object.entries(TURN_STREAM_EVENTS).map(([event, schema]) => ({
      type: 'object',
      properties: { event: { const: event }, data: ref(schema) },
      required: ['event', 'data'],
      additionalProperties: false,
    })),
  };
  const code = (components.Problem!.properties as JsonObject).code as JsonObject;
  code.description = `${String(code.description)}\n\n${problemCodeTable()}`;
  return components;
}

function problemCodeTable(): string {
  const rows = PROBLEM_CODES.map(
    (code) => `| \`${code}\` | ${PROBLEM_CATALOG[code].status} | ${PROBLEM_CATALOG[code].meaning} |`,
  );
  return ['| code | status | meaning |', '| --- | --- | --- |', ...rows].join('\n');
}

// ---- Operations ---------------------------------------------------------------------------------------------

interface OperationSpec {
  operationId: string;
  summary: string;
  description?: string;
  tags: string[];
  /** `caller`: function key plus the caller's identity; `anonymous`: nothing; `signed`: the body's signature. */
  access: 'caller' | 'anonymous' | 'signed';
  parameters?: JsonValue[];
  requestBody?: JsonObject;
  responses: Record<string, JsonObject>;
  problems: ProblemCode[];
}

const jsonContent = (schema: JsonObject, extra: JsonObject = {}): JsonObject => ({
  'application/json': { schema, ...extra },
});

function problemResponses(codes: ProblemCode[]): Record<string, JsonObject> {
  const byStatus = new Map<number, ProblemCode[]>();
  const ordered = PROBLEM_CODES.filter((code) => codes.includes(code));
  for (const code of ordered) {
    const status = PROBLEM_CATALOG[code].status;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const responses: Record<string, JsonObject> = {};
  for (const [status, statusCodes] of [...byStatus].sort(([a], [b]) => a - b)) {
    const headers: JsonObject = {};
    if (statusCodes.some((code) => ['unauthorized'].includes(code))) {
      headers['WWW-Authenticate'] = { $ref: '#/components/headers/WWW-Authenticate' };
    }
    if ([409, 429, 503].includes(status)) headers['Retry-After'] = { $ref: '#/components/headers/Retry-After' };
    responses[String(status)] = {
      description: statusCodes.map((code) => `\`${code}\`: ${PROBLEM_CATALOG[code].meaning}`).join('\n\n'),
      ...(Object.keys(headers).length > 0 ? { headers } : {}),
      content: {
        [PROBLEM_MEDIA_TYPE]: {
          schema: {
            allOf: [
              ref('Problem'),
              { type: 'object', properties: { status: { const: status }, code: { enum: statusCodes } } },
            ],
          },
        },
      },
    };
  }
  return responses;
}

function securityFor(access: OperationSpec['access'], authMode: OpenApiOptions['authMode']): JsonValue[] {
  if (access !== 'caller') return [];
  const identity: JsonObject = authMode === 'none' ? {} : { bearer: [] };
  return [
    { functionKey: [], ...identity },
    { functionKeyHeader: [], ...identity },
  ];
}

function buildOperation(spec: OperationSpec, options: OpenApiOptions): JsonObject {
  const authProblems: ProblemCode[] =
    spec.access !== 'caller' || options.authMode === 'none'
      ? []
      : options.authMode === 'jwt'
        ? ['unauthorized', 'auth_unavailable']
        : ['unauthorized'];
  // Any route may find the app's settings invalid (configuration_invalid) or fail unexpectedly (internal_error).
  const responses = {
    ...spec.responses,
    ...problemResponses([...authProblems, ...spec.problems, 'configuration_invalid', 'internal_error']),
  };
  if (spec.access === 'caller') {
    // On Azure the Functions host itself refuses a missing or wrong function key, before the app runs.
    const hostRefusal =
      'Azure only: the function key is missing or wrong. The Functions host answers this, without a body.';
    const unauthorized = responses['401'];
    responses['401'] = unauthorized
      ? { ...unauthorized, description: `${String(unauthorized.description)}\n\n${hostRefusal}` }
      : { description: hostRefusal };
  }
  return {
    operationId: spec.operationId,
    summary: spec.summary,
    ...(spec.description ? { description: spec.description } : {}),
    tags: spec.tags,
    security: securityFor(spec.access, options.authMode),
    ...(spec.parameters ? { parameters: spec.parameters } : {}),
    ...(spec.requestBody ? { requestBody: spec.requestBody } : {}),
    responses: Object.fromEntries(Object.entries(responses).sort(([a], [b]) => a.localeCompare(b))),
  };
}

const JSON_BODY_PROBLEMS: ProblemCode[] = [
  'invalid_json',
  'invalid_request',
  'payload_too_large',
  'unsupported_media_type',
];
/** What a turn can fail with once its request is valid. */
const TURN_PROBLEMS: ProblemCode[] = [
  'special_token_rejected',
  'context_length_exceeded',
  'conversation_full',
  'conversation_busy',
  'idempotency_key_in_use',
  'idempotency_key_reused',
  'content_filtered',
  'rate_limited',
  'quota_exceeded',
  'upstream_rate_limited',
  'upstream_error',
  'upstream_unavailable',
  'upstream_timeout',
  'storage_unavailable',
];
/** What a message can fail with (JSON, streamed or queued alike). */
const MESSAGE_PROBLEMS: ProblemCode[] = [
  ...JSON_BODY_PROBLEMS,
  'invalid_id',
  'not_found',
  'tool_results_pending',
  'client_tools_not_allowed',
  ...TURN_PROBLEMS,
];
const TOOL_RESULTS_PROBLEMS: ProblemCode[] = [
  ...JSON_BODY_PROBLEMS,
  'invalid_id',
  'not_found',
  'invalid_tool_results',
  'no_pending_turn',
  ...TURN_PROBLEMS.filter((code) => code !== 'special_token_rejected'),
];

function jsonBody(
  schemaName: string,
  description: string,
  bodyBytes: number,
  example: JsonObject,
  required = true,
): JsonObject {
  return {
    required,
    description: `${description} JSON, at most ${bodyBytes} bytes; unknown fields are refused.`,
    content: jsonContent(ref(schemaName), { examples: { example: { value: example } } }),
  };
}

/** A turn's JSON answer (messages and tool results): completed, or paused for client tools. */
function turnAnswer(): Record<string, JsonObject> {
  return {
    '200': {
      description:
        'The stored reply (`status: "completed"`), or the client tools the turn waits for (`status: ' +
        '"requires_action"`).',
      headers: { 'Idempotent-Replayed': { $ref: '#/components/headers/Idempotent-Replayed' } },
      content: jsonContent({ oneOf: [ref('TurnResult'), ref('RequiresAction')] }),
    },
  };
}

/** The same turn as server-sent events: the schema describes one event (`TurnStreamEvent`). */
function turnStream(): Record<string, JsonObject> {
  const data = {
    conversationId: EXAMPLE_CONVERSATION,
    message: {
      id: 'msg_0000000002',
      role: 'assistant',
      content: 'Bill Gates and Paul Allen.',
      createdAt: '2026-11-28T11:42:46.372Z',
    },
    finishReason: 'stop',
    usage: { promptTokens: 29, completionTokens: 7, totalTokens: 36, cachedPromptTokens: 0 },
    context: { promptTokens: 29, droppedTurns: 0 },
  };
  return {
    '200': {
      description:
        'Server-sent events, each an `event:` line and a `data:` line of JSON. The schema describes one event: ' +
        '`event` is its name and `data` its parsed `data:` line.',
      content: {
        [EVENT_STREAM_MEDIA_TYPE]: {
          schema: ref('TurnStreamEvent'),
          examples: {
            started: {
              summary: 'event: turn.started',
              value: {
                event: 'turn.started',
                data: {
                  conversationId: EXAMPLE_CONVERSATION,
                  messageId: 'msg_0000000002',
                  promptTokens: 29,
                  droppedTurns: 0,
                },
              },
            },
            delta: {
              summary: 'event: message.delta',
              value: { event: 'message.delta', data: { content: 'Bill Gates' } },
            },
            completed: {
              summary: 'event: turn.completed',
              value: { event: 'turn.completed', data: { status: 'completed', ...data } },
            },
          },
        },
      },
    },
  };
}

function paths(options: OpenApiOptions): JsonObject {
  const { bodyBytes } = options.limits;
  const param = (name: string): JsonObject => ({ $ref: `#/components/parameters/${name}` });
  const limit = (page: { limit: number; max: number }): JsonObject => ({
    name: 'limit',
    in: 'query',
    required: false,
    description: `Items per page, 1 to ${page.max}.`,
    schema: { type: 'integer', minimum: 1, maximum: page.max, default: page.limit },
  });
  const op = (spec: OperationSpec) => buildOperation(spec, options);
  const toolResultsBody = () =>
    jsonBody('ToolResultsRequest', 'The results.', bodyBytes, {
      turnId: 'turn_5b0e…',
      results: [{ toolCallId: 'call_abc123', output: { slot: 'Friday 10:00' } }],
    });
  const messageBody = () =>
    jsonBody('SendMessageRequest', 'The user’s message.', bodyBytes, {
      content: 'Who were the founders of Microsoft?',
    });

  return {
    '/conversations': {
      post: op({
        operationId: 'createConversation',
        summary: 'Start a conversation',
        description:
          'Creates a conversation with its system message and few-shot examples (both counted once, here). The ' +
          'server issues the id; `Location` points at the new conversation.',
        tags: ['conversations'],
        access: 'caller',
        requestBody: jsonBody(
          'CreateConversationRequest',
          'The conversation to start; every field is optional, and so is the body (none is the same as `{}`).',
          bodyBytes,
          {
            system: 'You are a concise assistant.',
            examples: [
              { role: 'user', content: 'Capital of France?' },
              { role: 'assistant', content: 'Paris.' },
            ],
            title: 'Geography',
            metadata: { app: 'ios' },
          },
          false,
        ),
        responses: {
          '201': {
            description: 'Created.',
            headers: { Location: { $ref: '#/components/headers/Location' } },
            content: jsonContent(ref('Conversation')),
          },
        },
        problems: [
          ...JSON_BODY_PROBLEMS,
          'special_token_rejected',
          'context_length_exceeded',
          'conversation_limit_reached',
          'storage_unavailable',
        ],
      }),
      get: op({
        operationId: 'listConversations',
        summary: "List the caller's conversations",
        description:
          'Most recently active first (`updatedAt`: the last turn, else the creation), a page at a time: pass ' +
          '`nextCursor` back as `cursor` for the next page. A conversation that becomes active during a walk moves ' +
          'above the cursor: the walk misses it (a new list has it first) and never shows one twice.',
        tags: ['conversations'],
        access: 'caller',
        parameters: [limit(CONVERSATION_PAGE), param('Cursor')],
        responses: {
          '200': { description: 'A page of conversations.', content: jsonContent(ref('ConversationList')) },
        },
        problems: ['invalid_request', 'storage_unavailable'],
      }),
    },
    '/conversations/{id}': {
      parameters: [param('ConversationId')],
      get: op({
        operationId: 'getConversation',
        summary: 'Read a conversation and its messages',
        description:
          'Every stored message in order, a page at a time (`limit`, `cursor`). Another caller’s conversation ' +
          'answers 404, exactly like a missing one.',
        tags: ['conversations'],
        access: 'caller',
        parameters: [limit(MESSAGE_PAGE), param('Cursor')],
        responses: {
          '200': { description: 'The conversation.', content: jsonContent(ref('ConversationWithMessages')) },
        },
        problems: ['invalid_id', 'invalid_request', 'not_found', 'storage_unavailable'],
      }),
      delete: op({
        operationId: 'deleteConversation',
        summary: 'Delete a conversation',
        description: 'Removes every stored entity of the conversation; reading it afterwards answers 404.',
        tags: ['conversations'],
        access: 'caller',
        responses: { '204': { description: 'Deleted.' } },
        problems: ['invalid_id', 'not_found', 'storage_unavailable'],
      }),
    },
    '/conversations/{id}/messages': {
      parameters: [param('ConversationId')],
      post: op({
        operationId: 'sendMessage',
        summary: 'Send a message and get the reply',
        description:
          'One turn: the message is added to the history, the history is trimmed to the model’s token budget, the ' +
          'model answers (calling server tools as it needs, at most CHAT_MAX_TOOL_ROUNDS rounds), and the message, ' +
          'the tool calls and results and the reply are stored together (or, on any failure, none of them). When ' +
          'the model calls a client tool the answer is `requires_action`: post the results to ' +
          '/conversations/{id}/tool-results; until then new messages get 409 tool_results_pending.\n\n' +
          'Send an `Idempotency-Key` to retry safely: a repeat with the same body answers the stored reply ' +
          '(`Idempotent-Replayed: true`) without calling the model again.\n\n' +
          'The same turn streamed is `POST /conversations/{id}/messages/stream`; queued, `POST ' +
          '/conversations/{id}/turns`. For clients written before those routes this route still streams with ' +
          '`Accept: text/event-stream` or `?stream=true`, and queues with `Prefer: respond-async` (202, ' +
          '`Preference-Applied: respond-async`); those answers are the ones the two routes document.',
        tags: ['messages'],
        access: 'caller',
        parameters: [param('IdempotencyKey')],
        requestBody: messageBody(),
        responses: turnAnswer(),
        problems: MESSAGE_PROBLEMS,
      }),
    },
    '/conversations/{id}/messages/stream': {
      parameters: [param('ConversationId')],
      post: op({
        operationId: 'streamMessage',
        summary: 'Send a message and stream the reply',
        description:
          'The turn of `POST /conversations/{id}/messages`, streamed as server-sent events: `turn.started`, ' +
          '`message.delta` (in order, with `tool.call` and `tool.result` between them when the model uses tools), ' +
          'then `turn.completed` (the stored reply, the JSON answer of a turn), `turn.requires_action` (client ' +
          'tools to run) or `turn.failed` (a problem). Failures found before the model is called are ordinary ' +
          'problem responses, not streams. The reply is stored like a non-streamed one; if the client goes away ' +
          'the turn still completes and is stored (CHAT_STREAM_ON_DISCONNECT). A repeat with the same ' +
          '`Idempotency-Key` replays the stored reply as a stream.',
        tags: ['messages'],
        access: 'caller',
        parameters: [param('IdempotencyKey')],
        requestBody: messageBody(),
        responses: turnStream(),
        problems: MESSAGE_PROBLEMS,
      }),
    },
    '/conversations/{id}/tool-results': {
      parameters: [param('ConversationId')],
      post: op({
        operationId: 'submitToolResults',
        summary: 'Post client-tool results and continue the paused turn',
        description:
          'Answers a turn paused with `requires_action`: one result per awaited call (`toolCallId`). The model is ' +
          'called with them and the answer is the continued turn, completed (stored whole with the user message, ' +
          'every tool call and result and the reply, in one transaction) or paused again. Send an ' +
          '`Idempotency-Key`: a retry answers the stored result without calling the model again. Streamed, it is ' +
          '`POST /conversations/{id}/tool-results/stream` (`Accept: text/event-stream` here streams the same way).',
        tags: ['messages'],
        access: 'caller',
        parameters: [param('IdempotencyKey')],
        requestBody: toolResultsBody(),
        responses: turnAnswer(),
        problems: TOOL_RESULTS_PROBLEMS,
      }),
    },
    '/conversations/{id}/tool-results/stream': {
      parameters: [param('ConversationId')],
      post: op({
        operationId: 'streamToolResults',
        summary: 'Post client-tool results and stream the continued turn',
        description:
          'The continued turn of `POST /conversations/{id}/tool-results`, streamed as server-sent events like a ' +
          'message’s (`POST /conversations/{id}/messages/stream`).',
        tags: ['messages'],
        access: 'caller',
        parameters: [param('IdempotencyKey')],
        requestBody: toolResultsBody(),
        responses: turnStream(),
        problems: TOOL_RESULTS_PROBLEMS,
      }),
    },
    '/conversations/{id}/pending-turn': {
      parameters: [param('ConversationId')],
      get: op({
        operationId: 'getPendingTurn',
        summary: 'Read the turn waiting for client-tool results',
        description: 'The paused turn as `requires_action`, for a client that lost the answer; 404 when none waits.',
        tags: ['messages'],
        access: 'caller',
        responses: { '200': { description: 'The paused turn.', content: jsonContent(ref('RequiresAction')) } },
        problems: ['invalid_id', 'not_found', 'storage_unavailable'],
      }),
      delete: op({
        operationId: 'cancelPendingTurn',
        summary: 'Cancel the turn waiting for client-tool results',
        description:
          'Nothing of the paused turn is stored (not even the user message); the conversation takes messages again. ' +
          `A paused turn also ends by itself after CHAT_PENDING_TURN_SECONDS.`,
        tags: ['messages'],
        access: 'caller',
        responses: { '204': { description: 'Cancelled.' } },
        problems: ['invalid_id', 'not_found', 'conversation_busy', 'storage_unavailable'],
      }),
    },
    '/conversations/{id}/turns': {
      parameters: [param('ConversationId')],
      post: op({
        operationId: 'queueTurn',
        summary: 'Send a message and let the turn run on a queue',
        description:
          'The turn of `POST /conversations/{id}/messages`, run by a queue trigger: 202 at once, with `Location` ' +
          'naming its status resource (GET `/conversations/{id}/turns/{turnId}`). With an `Idempotency-Key` a ' +
          'repeat answers the same turn. 404 when the app has no queue connection (AzureWebJobsStorage); 409 ' +
          'client_tools_not_allowed for a conversation with client tools, since nobody would be there to run them.',
        tags: ['messages'],
        access: 'caller',
        parameters: [param('IdempotencyKey')],
        requestBody: messageBody(),
        responses: {
          '202': {
            description: 'Queued; poll `Location` for the outcome.',
            headers: { Location: { $ref: '#/components/headers/TurnLocation' } },
            content: jsonContent(ref('QueuedTurn')),
          },
        },
        problems: [...JSON_BODY_PROBLEMS, 'invalid_id', 'not_found', 'client_tools_not_allowed', 'storage_unavailable'],
      }),
    },
    '/conversations/{id}/turns/{turnId}': {
      parameters: [param('ConversationId'), param('TurnId')],
      get: op({
        operationId: 'getTurn',
        summary: 'Read a queued turn',
        description:
          'The status of a turn queued by `POST /conversations/{id}/turns` (or `Prefer: respond-async`) or by a ' +
          'webhook delivery: `queued`, `running`, ' +
          '`completed` (with the members a synchronous turn answers) or `failed` (with its `problem`). Only the ' +
          'caller who queued it finds it; anyone else gets 404. The integration of `/webhooks/messages` reads its ' +
          'turns by signing `GET {path}` (in place of a body) with WEBHOOK_SECRET in the Standard Webhooks headers.',
        tags: ['messages'],
        access: 'caller',
        responses: { '200': { description: 'The turn’s status.', content: jsonContent(ref('TurnStatus')) } },
        problems: ['invalid_id', 'invalid_signature', 'not_found', 'storage_unavailable'],
      }),
    },
    '/health': {
      get: op({
        operationId: 'health',
        summary: 'Health check',
        description:
          '200 when Table Storage answers and the settings are valid; 503 storage_unavailable or configuration_invalid otherwise. No credentials needed.',
        tags: ['service'],
        access: 'anonymous',
        responses: { '200': { description: 'Healthy.', content: jsonContent(ref('Health')) } },
        problems: ['storage_unavailable'],
      }),
    },
    '/openapi.json': {
      get: op({
        operationId: 'openApiDocument',
        summary: 'This document',
        tags: ['service'],
        access: 'anonymous',
        responses: {
          '200': {
            description: 'The OpenAPI 3.1 document, with the limits this app enforces.',
            content: jsonContent({
              type: 'object',
              properties: {
                openapi: { type: 'string', pattern: '^3\\.1\\.\\d+$' },
                info: { type: 'object' },
                paths: { type: 'object' },
                components: { type: 'object' },
              },
              required: ['openapi', 'info', 'paths'],
            }),
          },
        },
        problems: [],
      }),
    },
    '/webhooks/messages': {
      post: op({
        operationId: 'webhookMessages',
        summary: 'Receive a signed message from an integration',
        description:
          'Signed per Standard Webhooks with WEBHOOK_SECRET (`webhook-id`, `webhook-timestamp`, `webhook-signature` ' +
          'over the raw body; timestamps more than 5 minutes away are refused). `threadId` maps to a conversation ' +
          'of the integration, created on first use; the reply is in the response. A redelivery (same `webhook-id`) ' +
          'answers the stored reply without calling the model again. 404 when WEBHOOK_SECRET is not set.',
        tags: ['webhooks'],
        access: 'signed',
        parameters: [param('WebhookId'), param('WebhookTimestamp'), param('WebhookSignature')],
        requestBody: jsonBody('WebhookMessageRequest', 'The message.', bodyBytes, {
          threadId: 'support-ticket-4711',
          content: 'Where is my order?',
          user: 'customer-42',
        }),
        responses: {
          '200': {
            description: 'The stored reply (no WEBHOOK_CALLBACK_URL configured).',
            headers: { 'Idempotent-Replayed': { $ref: '#/components/headers/Idempotent-Replayed' } },
            content: jsonContent(ref('WebhookTurnResult')),
          },
          '202': {
            description:
              'Queued (WEBHOOK_CALLBACK_URL configured): the outcome goes to the callback as `turn.completed` or ' +
              '`turn.failed` (see `webhooks` in this document). A redelivery answers the same turn.',
            headers: { Location: { $ref: '#/components/headers/TurnLocation' } },
            content: jsonContent(ref('QueuedTurn')),
          },
        },
        problems: ['invalid_signature', 'not_found', ...JSON_BODY_PROBLEMS, ...TURN_PROBLEMS],
      }),
    },
    '/webhooks/github': {
      post: op({
        operationId: 'webhookGithub',
        summary: 'Receive a GitHub issues or issue_comment webhook',
        description:
          'Signed with GITHUB_WEBHOOK_SECRET (`X-Hub-Signature-256`). A new issue or issue comment becomes a turn in ' +
          'the conversation of `owner/repo#number` and the reply is in the response; `ping` answers 200 `pong`; ' +
          'other events and actions, and comments by bots, answer 202 and are ignored. Redeliveries (same ' +
          '`X-GitHub-Delivery`) answer the stored reply. 404 when GITHUB_WEBHOOK_SECRET is not set.',
        tags: ['webhooks'],
        access: 'signed',
        parameters: [param('GithubSignature'), param('GithubEvent'), param('GithubDelivery')],
        requestBody: {
          required: true,
          description: `The GitHub payload, at most ${bodyBytes} bytes.`,
          content: jsonContent(ref('GithubIssueEvent')),
        },
        responses: {
          '200': {
            description: 'The stored reply, or `{"status":"pong"}` for a `ping`.',
            headers: { 'Idempotent-Replayed': { $ref: '#/components/headers/Idempotent-Replayed' } },
            content: jsonContent({
              oneOf: [
                ref('WebhookTurnResult'),
                {
                  type: 'object',
                  properties: { status: { const: 'pong' } },
                  required: ['status'],
                  additionalProperties: false,
                },
              ],
            }),
          },
          '202': {
            description:
              'Acknowledged and ignored (another event or action, or a comment by a bot or by this app), or, with a ' +
              'GitHub App configured (GITHUB_APP_ID), queued: the reply is posted as a comment on the issue.',
            content: jsonContent({
              oneOf: [
                {
                  type: 'object',
                  properties: { status: { const: 'ignored' }, reason: { type: 'string' } },
                  required: ['status', 'reason'],
                  additionalProperties: false,
                },
                ref('QueuedTurn'),
              ],
            }),
          },
        },
        problems: ['invalid_signature', 'not_found', ...JSON_BODY_PROBLEMS, ...TURN_PROBLEMS],
      }),
    },
  };
}

function parameters(): JsonObject {
  const header = (name: string, description: string, schema: JsonObject, required = true): JsonObject => ({
    name,
    in: 'header',
    required,
    description,
    schema,
  });
  return {
    ConversationId: {
      name: 'id',
      in: 'path',
      required: true,
      description: 'The id POST /conversations returned.',
      schema: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,128}$' },
    },
    Cursor: {
      name: 'cursor',
      in: 'query',
      required: false,
      description: 'The `nextCursor` of the previous page.',
      schema: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,1024}$' },
    },
    IdempotencyKey: header(
      'Idempotency-Key',
      'A unique key per logical request (e.g. a UUID), reused on retries of it. Scoped to the caller and the ' +
        'conversation; kept at least 24 hours.',
      { type: 'string', pattern: '^[\\x21-\\x7e]{1,255}$' },
      false,
    ),
    TurnId: {
      name: 'turnId',
      in: 'path',
      required: true,
      description: 'The `turnId` a 202 answer returned.',
      schema: { type: 'string', pattern: '^turn_[A-Za-z0-9_-]{22,43}$' },
    },
    WebhookId: header('webhook-id', 'The message id; the same on every redelivery.', { type: 'string' }),
    WebhookTimestamp: header('webhook-timestamp', 'Unix seconds when the message was signed.', {
      type: 'string',
      pattern: '^\\d{1,12}$',
    }),
    WebhookSignature: header(
      'webhook-signature',
      'Space-separated `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` entries.',
      { type: 'string' },
    ),
    GithubSignature: header('X-Hub-Signature-256', '`sha256=` and the hex HMAC-SHA256 of the raw body.', {
      type: 'string',
      pattern: '^sha256=[0-9a-fA-F]{64}$',
    }),
    GithubEvent: header('X-GitHub-Event', '`issues`, `issue_comment` or `ping`; others are ignored.', {
      type: 'string',
    }),
    GithubDelivery: header(
      'X-GitHub-Delivery',
      'The delivery GUID, kept on redeliveries (required for issues and issue_comment).',
      { type: 'string' },
      false,
    ),
  };
}

function headers(authMode: OpenApiOptions['authMode']): JsonObject {
  return {
    Location: { description: 'The path of the new conversation.', required: true, schema: { type: 'string' } },
    TurnLocation: {
      description: 'The path of the turn’s status resource, `/api/conversations/{id}/turns/{turnId}`.',
      required: true,
      schema: { type: 'string' },
    },
    'Idempotent-Replayed': {
      description: '`true` when the reply was stored by an earlier request with the same Idempotency-Key.',
      schema: { type: 'string', const: 'true' },
    },
    'Retry-After': { description: 'Seconds to wait before retrying.', schema: { type: 'string', pattern: '^\\d+$' } },
    // Only a mode that checks a caller's token answers 401 with a challenge (and asks for the bearer scheme).
    ...(authMode === 'none'
      ? {}
      : {
          'WWW-Authenticate': {
            description: 'The Bearer challenge, with the error when a token was refused.',
            schema: { type: 'string' },
          },
        }),
  };
}

/** What the app sends to WEBHOOK_CALLBACK_URL: Standard Webhooks deliveries, signed with WEBHOOK_CALLBACK_SECRET. */
function callbackEvents(): JsonObject {
  const event = (type: string, summary: string, data: JsonObject): JsonObject => ({
    post: {
      operationId: `callback${type === 'turn.completed' ? 'TurnCompleted' : 'TurnFailed'}`,
      summary,
      description:
        'Sent to WEBHOOK_CALLBACK_URL with `webhook-id` (`evt_<turnId>`, the same on every retry), ' +
        '`webhook-timestamp` and `webhook-signature` (Standard Webhooks, WEBHOOK_CALLBACK_SECRET). Any answer but ' +
        '2xx is retried with backoff (WEBHOOK_CALLBACK_ATTEMPTS, WEBHOOK_CALLBACK_BACKOFF_SECONDS).',
      tags: ['webhooks'],
      // Signed, not authenticated by a scheme: the receiver checks webhook-signature with WEBHOOK_CALLBACK_SECRET.
      security: [],
      parameters: [
        { $ref: '#/components/parameters/WebhookId' },
        { $ref: '#/components/parameters/WebhookTimestamp' },
        { $ref: '#/components/parameters/WebhookSignature' },
      ],
      requestBody: {
        required: true,
        content: jsonContent({
          type: 'object',
          properties: { type: { const: type }, timestamp: { type: 'string', format: 'date-time' }, data },
          required: ['type', 'timestamp', 'data'],
        }),
      },
      responses: { '204': { description: 'Received (any 2xx).' } },
    },
  });
  const common = {
    turnId: { type: 'string' },
    conversationId: { type: 'string' },
    threadId: { type: 'string', description: 'The `threadId` of the delivery.' },
  };
  return {
    'turn.completed': event('turn.completed', 'A queued turn’s reply', {
      allOf: [
        ref('TurnResult'),
        { type: 'object', properties: { ...common, status: { const: 'completed' } }, required: ['turnId', 'status'] },
      ],
    }),
    'turn.failed': event('turn.failed', 'A queued turn that failed', {
      type: 'object',
      properties: { ...common, status: { const: 'failed' }, problem: ref('Problem') },
      required: ['turnId', 'conversationId', 'status', 'problem'],
    }),
  };
}

function securitySchemes(authMode: OpenApiOptions['authMode']): JsonObject {
  return {
    functionKey: {
      type: 'apiKey',
      in: 'query',
      name: 'code',
      description: 'An Azure Functions function key (not checked by `func start` or the local host).',
    },
    functionKeyHeader: {
      type: 'apiKey',
      in: 'header',
      name: 'x-functions-key',
      description: 'An Azure Functions function key, as a header.',
    },
    ...(authMode === 'none'
      ? {}
      : {
          bearer: {
            type: 'http',
            scheme: 'bearer',
            bearerFormat: 'JWT',
            description:
              'AUTH_MODE=jwt: a token from the configured issuer (AUTH_ISSUER, AUTH_AUDIENCE). AUTH_MODE=easyauth: ' +
              'a token App Service Authentication accepts.',
          },
        }),
  };
}

const AUTH_DESCRIPTION: Record<OpenApiOptions['authMode'], string> = {
  none: 'This app runs with AUTH_MODE=none: every request is the one local caller.',
  jwt: 'This app runs with AUTH_MODE=jwt: send `Authorization: Bearer <JWT>`; the caller is the token’s subject.',
  easyauth: 'This app runs with AUTH_MODE=easyauth: App Service Authentication identifies the caller.',
};

export function buildOpenApiDocument(options: OpenApiOptions = defaultOpenApiOptions()): JsonObject {
  return {
    openapi: '3.1.0',
    info: {
      title: 'Chat API',
      version: API_VERSION,
      description:
        'Conversations with an Azure OpenAI chat model, stored in Azure Table Storage. Every conversation belongs ' +
        'to the caller who created it. ' +
        AUTH_DESCRIPTION[options.authMode] +
        '\n\nErrors are RFC 9457 problems (`application/problem+json`) with a stable `code`; each operation lists ' +
        'the codes it can answer with. The host itself can also answer `not_found` (no such route), ' +
        '`method_not_allowed` and `payload_too_large`.',
      license: { name: 'MIT', identifier: 'MIT' },
    },
    servers: [{ url: '/api' }],
    tags: [
      { name: 'conversations', description: 'Create, list, read and delete conversations.' },
      { name: 'messages', description: 'Chat turns.' },
      { name: 'webhooks', description: 'Signed deliveries from integrations.' },
      { name: 'service', description: 'Health and this document.' },
    ],
    paths: paths(options),
    webhooks: callbackEvents(),
    components: {
      schemas: { ...requestSchemas(options.limits), ...responseSchemas() },
      parameters: parameters(),
      headers: headers(options.authMode),
      securitySchemes: securitySchemes(options.authMode),
    },
  };
}

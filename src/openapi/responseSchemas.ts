/**
 * The shapes the API answers with, as zod schemas so the OpenAPI document can be generated from them. Each one is
 * checked against the TypeScript type the handlers really return (same keys, compatible values): change a response
 * type without changing its schema here and `tsc` fails.
 */
import * as z from 'zod';
import type { ConversationView, ConversationWithMessages, MessageView } from '../core/conversations';
import { PROBLEM_CODES } from '../core/errors';
import type { ConversationSummary, FinishReason, ToolCall, ToolDefinition, Usage } from '../core/ports';
import type { ToolCallReport } from '../core/tools';
import type { RequiresActionResult, TurnResult, TurnRunner } from '../core/turn';
import type { ProblemBody } from '../http/problem';
import type { ThreadTurnResponse } from '../http/webhooks/threadTurn';
import type { TurnStatusBody } from '../http/turns/turnBodies';

export const FINISH_REASONS = ['stop', 'length', 'content_filter', 'tool_calls', 'function_call', 'unknown'] as const;

const timestamp = () => z.iso.datetime().describe('UTC timestamp, ISO 8601.');
const count = () => z.int().min(0);

export const finishReasonSchema = z
  .enum(FINISH_REASONS)
  .describe(
    "The model's finish reason: `stop` (complete), `length` (cut at CHAT_MAX_RESPONSE_TOKENS), `content_filter` " +
      '(the reply was filtered), `tool_calls` or `function_call` (the model stopped to call a tool), `unknown` (a ' +
      'reason this API does not know yet). Replies that did not end with `stop` are stored and flagged.',
  );

export const usageSchema = z
  .object({
    promptTokens: count(),
    completionTokens: count(),
    totalTokens: count(),
    cachedPromptTokens: count().describe(
      'Prompt tokens the service served from its prompt cache (`prompt_tokens_details.cached_tokens`), billed at the cached rate; 0 when it reports none.',
    ),
  })
  .describe('Model tokens spent on this turn, as the model reported them.');

const conversationUsageSchema = z
  .object({ promptTokens: count(), cachedPromptTokens: count(), completionTokens: count() })
  .describe('Model tokens the conversation has spent so far, its turns and its summaries together.');

const summarySchema = z
  .object({
    content: z.string().describe('What the model wrote about the messages that left the window.'),
    firstMessageId: z.string().describe('The summary covers every message from this one...'),
    lastMessageId: z.string().describe('...through this one; later messages are sent as they are.'),
    tokens: count().describe(
      'Prompt tokens the summary takes; it is sent right after the system message and examples.',
    ),
    createdAt: timestamp(),
  })
  .describe('CHAT_SUMMARY=on: the summary of the turns trimming dropped, replaced only when more turns drop.');

const exampleSchema = z.object({ role: z.enum(['user', 'assistant']), content: z.string() });

export const toolCallSchema = z
  .object({
    id: z.string().describe('Answer it with a result carrying this id as `toolCallId`.'),
    name: z.string(),
    arguments: z.string().describe('JSON text the model wrote: validate it before use.'),
  })
  .describe('A function call the model asked for.');

export const toolDefinitionSchema = z.object({
  name: z.string().describe('1 to 64 letters, digits, _ or -.'),
  description: z.string(),
  parameters: z.record(z.string(), z.unknown()).describe('A JSON Schema object (`"type": "object"`).'),
});

export const conversationSummarySchema = z.object({
  id: z.string(),
  title: z.string().nullable(),
  createdAt: timestamp(),
  updatedAt: timestamp(),
});

export const conversationSchema = z.object({
  id: z.string().describe('Issued by the server; use it in the paths below.'),
  title: z.string().nullable(),
  system: z.string().describe('The system message (CHAT_SYSTEM_MESSAGE when none was given).'),
  examples: z.array(exampleSchema).describe('Few-shot examples, sent after the system message on every turn.'),
  metadata: z.record(z.string(), z.string()),
  createdAt: timestamp(),
  updatedAt: timestamp(),
  messageCount: count().describe('Stored messages (user, assistant and tool).'),
  usage: conversationUsageSchema,
  summary: summarySchema.nullable(),
  tools: z.array(z.string()).describe('Server tools the model may call in this conversation.'),
  clientTools: z
    .array(toolDefinitionSchema)
    .optional()
    .describe('Tools the caller runs (declared at create); a call to one pauses the turn.'),
});

export const messageSchema = z.object({
  id: z.string(),
  role: z.enum(['user', 'assistant', 'tool']),
  content: z.string().describe('Empty for an assistant message that only calls tools.'),
  name: z.string().optional(),
  createdAt: timestamp(),
  finishReason: finishReasonSchema.optional().describe("The turn's final assistant message only."),
  usage: usageSchema.optional().describe('Assistant messages: what the model reported for the call that wrote it.'),
  toolCalls: z.array(toolCallSchema).optional().describe('Assistant messages that called tools.'),
  toolCallId: z.string().optional().describe('Tool messages: the call this result answers.'),
});

export const conversationWithMessagesSchema = conversationSchema.extend({
  messages: z.array(messageSchema).describe('Stored messages in order, one page at a time.'),
  nextCursor: z.string().optional().describe('Pass as `cursor` to read the next page; absent on the last page.'),
});

export const conversationListSchema = z.object({
  conversations: z.array(conversationSummarySchema).describe("The caller's conversations, newest first."),
  nextCursor: z.string().optional().describe('Pass as `cursor` to read the next page; absent on the last page.'),
});

const contextSchema = z
  .object({
    promptTokens: count().describe(
      "The app's estimate of the (last) model call's prompt: messages and tool definitions, counted with the model tokenizer.",
    ),
    droppedTurns: count().describe('Oldest turns left out of the prompt to fit the context window (still stored).'),
    servicePromptTokens: count()
      .optional()
      .describe("The model service's `usage.prompt_tokens` for the same call, beside the estimate."),
    toolRounds: z.int().min(1).optional().describe('Tool rounds the turn ran (absent when it used no tools).'),
  })
  .describe('What was sent to the model on this turn.');

export const turnResultSchema = z.object({
  status: z.literal('completed'),
  conversationId: z.string(),
  message: z.object({ id: z.string(), role: z.literal('assistant'), content: z.string(), createdAt: timestamp() }),
  finishReason: finishReasonSchema,
  usage: usageSchema,
  context: contextSchema,
  deployment: z
    .string()
    .optional()
    .describe(
      'The model deployment that answered (its name in AZURE_OPENAI_DEPLOYMENTS, else AZURE_OPENAI_DEPLOYMENT). Absent on replays of turns stored before it was recorded.',
    ),
});

/** The reply of a webhook delivery: a turn result without the context figures. */
export const webhookTurnResultSchema = turnResultSchema.omit({ context: true, deployment: true, status: true });

const turnStatusEnum = z
  .enum(['queued', 'running', 'completed', 'failed'])
  .describe('`queued` (waiting on the queue, also between retries), `running`, `completed` or `failed`.');

/** 202 Accepted for a queued turn; its status resource is in `Location`. */
export const queuedTurnSchema = z.object({
  conversationId: z.string(),
  turnId: z.string().describe('Names the turn in `/conversations/{id}/turns/{turnId}`.'),
  status: turnStatusEnum,
});

/** GET /conversations/{id}/turns/{turnId}. */
export const turnStatusSchema = z.object({
  turnId: z.string(),
  conversationId: z.string(),
  status: turnStatusEnum,
  createdAt: timestamp(),
  updatedAt: timestamp(),
  message: turnResultSchema.shape.message.optional().describe('`completed`: the reply, as a synchronous turn answers.'),
  finishReason: finishReasonSchema.optional(),
  usage: usageSchema.optional(),
  context: contextSchema.optional(),
  problem: z
    .looseObject({
      type: z.string(),
      title: z.string(),
      status: z.int(),
      detail: z.string(),
      code: z.string(),
    })
    .optional()
    .describe('`failed`: the problem the synchronous request would have answered.'),
  delivery: z
    .object({
      target: z.enum(['webhook', 'github']),
      state: z.enum(['pending', 'delivered', 'failed']),
      attempts: count(),
      lastError: z.string().optional(),
    })
    .optional()
    .describe('Turns of an integration: how the delivery of the outcome (callback or GitHub comment) went.'),
});
export const requiresActionSchema = z
  .object({
    status: z.literal('requires_action'),
    conversationId: z.string(),
    turnId: z.string().describe('The paused turn.'),
    toolCalls: z.array(toolCallSchema).describe('Client-tool calls to run; post one result for each.'),
    expiresAt: timestamp().describe('After this the turn is dropped (CHAT_PENDING_TURN_SECONDS) and nothing stored.'),
    usage: usageSchema,
    context: contextSchema,
  })
  .describe('The turn waits for client tools: post their results to /conversations/{id}/tool-results.');

export const healthSchema = z.object({ status: z.literal('ok'), storage: z.literal('ok') });

// ---- Server-sent events of a streamed turn -------------------------------------------------------------------

const replayedFlag = z
  .literal(true)
  .optional()
  .describe('Present when the turn is replayed for a repeated Idempotency-Key.');

export const turnStartedEventSchema = z.object({
  conversationId: z.string(),
  messageId: z.string().describe('The id the reply will be stored under.'),
  promptTokens: count(),
  droppedTurns: count(),
  replayed: replayedFlag,
});

export const messageDeltaEventSchema = z.object({ content: z.string().describe('The next piece of the reply.') });

export const turnCompletedEventSchema = turnResultSchema.extend({ replayed: replayedFlag });

export const turnRequiresActionEventSchema = requiresActionSchema.extend({ replayed: replayedFlag });

export const toolCallEventSchema = toolCallSchema.extend({
  round: z.int().min(1).describe('The tool round of the turn, from 1.'),
  client: z.boolean().describe('True for a client tool: its result comes from the caller.'),
});

export const toolResultEventSchema = z.object({
  toolCallId: z.string(),
  name: z.string(),
  output: z.string().describe('What the model is sent (bounded by CHAT_TOOL_OUTPUT_CHARS).'),
  error: z
    .enum(['unknown_tool', 'invalid_arguments', 'failed', 'timed_out'])
    .optional()
    .describe('Set when the tool produced no output; `output` then tells the model why.'),
});

// ---- Problems (RFC 9457) --------------------------------------------------------------------------------------

const fieldErrorSchema = z.object({
  field: z.string().describe('Path to the field, e.g. `examples/2/role`, or `(body)`.'),
  message: z.string(),
});

export const problemSchema = z
  .looseObject({
    type: z.string().describe('A URI naming the problem type: `urn:chat-api:problem:<code>` (or `about:blank`).'),
    title: z.string(),
    status: z.int().min(400).max(599),
    detail: z.string().describe('What went wrong and what to do about it, for people.'),
    code: z.enum(PROBLEM_CODES).describe('Stable, for programs: switch on this, not on `title` or `detail`.'),
    instance: z.string().optional().describe('The request path.'),
    requestId: z.string().optional().describe('Quote it when reporting a problem; it is in the server logs.'),
    errors: z.array(fieldErrorSchema).optional().describe('`invalid_request`: one entry per invalid field.'),
    categories: z
      .record(z.string(), z.unknown())
      .optional()
      .describe("`content_filtered`: the content filter's verdict per category (`filtered`, `severity`)."),
    retryAfterSeconds: z.int().min(1).optional().describe('429: seconds to wait, as in `Retry-After`.'),
    markers: z.array(z.string()).optional().describe('`special_token_rejected`: the markup found.'),
    promptTokens: count().optional().describe('Context-window problems: prompt tokens of the refused request.'),
    messageTokens: count().optional().describe('`context_length_exceeded`: tokens of the message alone.'),
    maxResponseTokens: count().optional().describe('Context-window problems: tokens reserved for the reply.'),
    tokenLimit: count().optional().describe('Context-window problems: the context window in tokens.'),
    turns: count().optional().describe('`conversation_full`: stored turns.'),
  })
  .describe('An RFC 9457 problem (`application/problem+json`). Further members may be added; ignore unknown ones.');

// ---- Compile-time checks against the types the handlers return --------------------------------------------

/** The named keys of a type, without index signatures. */
type KnownKeys<T> = keyof { [K in keyof T as string extends K ? never : number extends K ? never : K]: T[K] };
type OptionalKeys<T> = { [K in keyof T]-?: object extends Pick<T, K> ? K : never }[keyof T];
type SameKeys<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
/** True when both have the same keys, optional in both or in neither, and every schema value fits the real type. */
type Describes<Schema, Actual> =
  SameKeys<keyof Schema, keyof Actual> extends true
    ? SameKeys<OptionalKeys<Schema>, OptionalKeys<Actual>> extends true
      ? Schema extends Actual
        ? true
        : false
      : false
    : false;
/** For open types (problems): every named key of the real type is in the schema, with a compatible value. */
type Covers<Schema, Actual> = [KnownKeys<Actual>] extends [KnownKeys<Schema>]
  ? Pick<Schema, KnownKeys<Actual> & keyof Schema> extends Pick<Actual, KnownKeys<Actual>>
    ? true
    : false
  : false;
type Holds<T extends true> = T;
type TurnStartedInfo = Parameters<Parameters<TurnRunner['stream']>[1]['onStart']>[0];

export type ResponseSchemasMatchTheirTypes = [
  Holds<Describes<z.infer<typeof usageSchema>, Usage>>,
  Holds<Describes<z.infer<typeof finishReasonSchema>, FinishReason>>,
  Holds<Describes<z.infer<typeof conversationSummarySchema>, ConversationSummary>>,
  Holds<Describes<z.infer<typeof conversationSchema>, ConversationView>>,
  Holds<Describes<z.infer<typeof messageSchema>, MessageView>>,
  Holds<Describes<z.infer<typeof conversationWithMessagesSchema>, ConversationWithMessages>>,
  Holds<Describes<z.infer<typeof turnResultSchema>, Omit<TurnResult, 'replayed'>>>,
  Holds<Describes<z.infer<typeof webhookTurnResultSchema>, ThreadTurnResponse>>,
  Holds<Describes<z.infer<typeof turnStartedEventSchema>, TurnStartedInfo & { replayed?: true }>>,
  Holds<Describes<z.infer<typeof turnCompletedEventSchema>, Omit<TurnResult, 'replayed'> & { replayed?: true }>>,
  Holds<Describes<z.infer<typeof requiresActionSchema>, Omit<RequiresActionResult, 'replayed'>>>,
  Holds<Describes<z.infer<typeof toolCallSchema>, ToolCall>>,
  Holds<Describes<z.infer<typeof toolDefinitionSchema>, ToolDefinition>>,
  Holds<Describes<z.infer<typeof toolResultEventSchema>, ToolCallReport>>,
  Holds<Covers<z.infer<typeof problemSchema>, ProblemBody>>,
  Holds<Describes<Omit<z.infer<typeof turnStatusSchema>, 'problem'>, Omit<TurnStatusBody, 'problem'>>>,
];

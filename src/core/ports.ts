/**
 * The small interfaces the core needs from the outside world. Adapters in `src/adapters/` implement them
 * with Azure SDKs, the OpenAI SDK and js-tiktoken; unit tests implement them with fakes.
 */

export type Role = 'system' | 'user' | 'assistant' | 'tool';

/** A function call the model asked for: `arguments` is the JSON text the model wrote (not yet validated). */
export interface ToolCall {
  id: string;
  name: string;
  arguments: string;
}

export interface ChatMessage {
  role: Role;
  /** Empty for an assistant message that only calls tools (sent to the model as null). */
  content: string;
  name?: string;
  /** Assistant messages: the tools the model called, each answered by one `tool` message before anything else. */
  toolCalls?: ToolCall[];
  /** Tool messages: the call this message answers. */
  toolCallId?: string;
}

/** A tool as the model is told about it: `parameters` is a JSON Schema object. */
export interface ToolDefinition {
  name: string;
  description: string;
  parameters: Record<string, unknown>;
}

/** Only the fields the model is sent: drops counts, ids and anything else riding along on a stored message. */
export function toChatMessage(message: ChatMessage): ChatMessage {
  const copy: ChatMessage = { role: message.role, content: message.content };
  if (message.name !== undefined) copy.name = message.name;
  if (message.toolCalls !== undefined && message.toolCalls.length > 0) {
    copy.toolCalls = message.toolCalls.map(({ id, name, arguments: args }) => ({ id, name, arguments: args }));
  }
  if (message.toolCallId !== undefined) copy.toolCallId = message.toolCallId;
  return copy;
}

// ---- Tokenizer -------------------------------------------------------------------------------

export type EncodingName = 'o200k_base' | 'cl100k_base';

export interface Tokenizer {
  readonly encoding: EncodingName;
  /** Tokens in `text` encoded as ordinary text: special-token strings never throw, never become special ids. */
  countTokens(text: string): number;
  /** The literal strings of this encoding's special tokens, e.g. `<|endoftext|>`. */
  specialTokens(): readonly string[];
}

// ---- Conversations in storage -----------------------------------------------------------------

/** The authenticated caller. Every key in storage derives from `id`; never from the request body. */
export interface Caller {
  id: string;
  kind: 'user' | 'integration' | 'local';
}

export type FinishReason = 'stop' | 'length' | 'content_filter' | 'tool_calls' | 'function_call' | 'unknown';

/** A message as stored: its token count is kept with the encoding it was counted under (counted once). */
export interface StoredMessage extends ChatMessage {
  role: 'user' | 'assistant' | 'tool';
  /** Position in the conversation, 1-based; message ids and storage keys derive from it. */
  seq: number;
  id: string;
  createdAt: string;
  tokens: number;
  encoding: EncodingName;
  finishReason?: FinishReason;
  /** Assistant messages: what the model reported for the call that wrote this reply. */
  usage?: Usage;
}

export interface PrologueMessage extends ChatMessage {
  tokens: number;
  encoding: EncodingName;
}

/** A message of a turn in progress, with its prompt-token count under `encoding`. */
export interface CountedTurnMessage extends ChatMessage {
  tokens: number;
}

/**
 * A turn paused for the caller's client tools: everything it produced so far, kept beside the conversation until the
 * caller posts the results, cancels it, or it expires. Nothing of it is in the history until the turn completes.
 */
export interface PendingTurn {
  id: string;
  createdAt: string;
  expiresAt: string;
  /** The user's message, as it will be stored. */
  user: CountedTurnMessage;
  /** Assistant tool-call messages and tool results so far, in order; the last assistant message awaits `awaiting`. */
  messages: CountedTurnMessage[];
  /** The client-tool calls whose results the caller owes. */
  awaiting: ToolCall[];
  /** Tool rounds run so far (CHAT_MAX_TOOL_ROUNDS bounds them across pauses). */
  rounds: number;
  /** Model usage so far, summed over every call of the turn. */
  usage: Usage;
  /** The service's prompt_tokens and our estimate for each model call so far. */
  calls: PromptCount[];
}

/** One model call's prompt: our estimate and what the service reported (`usage.prompt_tokens`). */
export interface PromptCount {
  estimated: number;
  reported: number;
}

export interface PendingMarker {
  id: string;
  expiresAt: string;
}

export interface Conversation {
  id: string;
  title: string | null;
  metadata: Record<string, string>;
  /** The system message followed by the few-shot examples: pinned, never trimmed. */
  prologue: PrologueMessage[];
  createdAt: string;
  updatedAt: string;
  /** Number of stored messages (user + assistant); the next message gets seq messageCount + 1. */
  messageCount: number;
  /** Opaque concurrency token (the header's ETag): a turn commits only if it is unchanged. */
  version: string;
  /** Model tokens this conversation has spent, turns and summaries together. */
  totals: ConversationTotals;
  /**
   * The seq of the first message the last turn sent after the prologue (stable-prefix trimming keeps it until the
   * next trim); undefined before the first turn.
   */
  windowStartSeq?: number;
  /** What the model wrote about turns that left the window (CHAT_SUMMARY=on). */
  summary?: HistorySummary;
  /** Server tools this conversation may use (a subset of CHAT_TOOLS); undefined means every enabled one. */
  tools?: string[];
  /** Tools the caller's app runs, declared at create. */
  clientTools?: ToolDefinition[];
  /** A turn waiting for client-tool results (it may have expired: compare `expiresAt` with the clock). */
  pending?: PendingMarker;
}

export interface ConversationTotals {
  promptTokens: number;
  cachedPromptTokens: number;
  completionTokens: number;
}

export const NO_TOTALS: ConversationTotals = { promptTokens: 0, cachedPromptTokens: 0, completionTokens: 0 };

/** A summary of the messages with seq 1..throughSeq, sent pinned after the prologue. */
export interface HistorySummary {
  content: string;
  /** The summary message's count (countMessageTokens) under `encoding`. */
  tokens: number;
  encoding: EncodingName;
  /** The last message it covers; it covers every message from the first. */
  throughSeq: number;
  createdAt: string;
}

export interface NewConversation {
  id: string;
  title: string | null;
  metadata: Record<string, string>;
  prologue: PrologueMessage[];
  createdAt: string;
  tools?: string[];
  clientTools?: ToolDefinition[];
}

export interface ConversationSummary {
  id: string;
  title: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface Page<T> {
  items: T[];
  nextCursor?: string;
}

/** What the context of a turn's (last) model call was: the estimate, the service's count, what was dropped. */
export interface TurnContext {
  /** Our estimate of the last model call's prompt (messages plus tool definitions). */
  promptTokens: number;
  droppedTurns: number;
  /** The service's `usage.prompt_tokens` for that call, beside the estimate. */
  servicePromptTokens?: number;
  /** Tool rounds the turn ran. */
  toolRounds?: number;
}

/** What a completed turn answered; stored with the idempotency record so a retry gets the same answer. */
export interface TurnRecord {
  conversationId: string;
  replySeq: number;
  finishReason: FinishReason;
  usage: Usage;
  context: TurnContext;
  /** The model deployment that answered; absent in records stored before failover existed. */
  deployment?: string;
  /** Set when the request paused for client tools: the answer is this, not a reply message. */
  requiresAction?: { turnId: string; toolCalls: ToolCall[]; expiresAt: string };
}

export interface TurnCommit {
  conversationId: string;
  /** The version the turn was computed on; the commit fails with a conflict if it changed. */
  expectedVersion: string;
  messages: StoredMessage[];
  updatedAt: string;
  /** The header after this turn: totals, the window start and (when one was made) the new summary. */
  header?: { totals: ConversationTotals; windowStartSeq: number; summary?: HistorySummary };
  idempotency?: { key: string; claim: IdempotencyClaim; requestHash: string; record: TurnRecord };
  /** Removes the pending turn (answered, or expired and replaced by this turn) in the same transaction. */
  clearPending?: boolean;
}

/** Stores a paused turn beside the conversation, guarded like a commit; the history itself does not change. */
export interface TurnPause {
  conversationId: string;
  expectedVersion: string;
  pending: PendingTurn;
  updatedAt: string;
  idempotency?: { key: string; claim: IdempotencyClaim; requestHash: string; record: TurnRecord };
}

export interface IdempotencyClaim {
  /** Opaque token proving this request holds the pending record. */
  token: string;
}

export type IdempotencyBegin =
  | { state: 'claimed'; claim: IdempotencyClaim }
  | { state: 'in_progress'; requestHash: string }
  | { state: 'completed'; requestHash: string; record: TurnRecord };

/** Raised by the store when a turn lost a race for the conversation; the core re-reads and retries. */
export class ConcurrencyConflict extends Error {
  constructor(message = 'The conversation changed since it was read.') {
    super(message);
    this.name = 'ConcurrencyConflict';
  }
}

/** Raised by the store when a turn's Idempotency-Key was taken over by another request (its lease ran out). */
export class ClaimLost extends Error {
  constructor(message = 'Another request took over this Idempotency-Key.') {
    super(message);
    this.name = 'ClaimLost';
  }
}

export interface ConversationStore {
  /**
   * Creates the conversation; with `maxConversations`, refuses it (RateLimitedError conversation_limit_reached) when
   * the caller already has that many, exactly, however many creates run at once.
   */
  create(owner: Caller, conversation: NewConversation, options?: { maxConversations?: number }): Promise<Conversation>;
  /** The conversation header, or undefined when missing or owned by another caller. */
  get(owner: Caller, conversationId: string): Promise<Conversation | undefined>;
  /** Header plus every stored message in order: what a turn needs. */
  loadForTurn(
    owner: Caller,
    conversationId: string,
  ): Promise<{ conversation: Conversation; messages: StoredMessage[] } | undefined>;
  /** Messages with seq > afterSeq, in order, at most `limit`. */
  listMessages(
    owner: Caller,
    conversationId: string,
    options: { afterSeq: number; limit: number },
  ): Promise<{ messages: StoredMessage[]; hasMore: boolean }>;
  getMessage(owner: Caller, conversationId: string, seq: number): Promise<StoredMessage | undefined>;
  /** The caller's conversations, newest first. */
  list(owner: Caller, options: { limit: number; cursor?: string }): Promise<Page<ConversationSummary>>;
  /** How many conversations the caller has, counting no further than `upTo` (for the per-caller limit). */
  countConversations(owner: Caller, upTo: number): Promise<number>;
  /** Deletes every entity of the conversation; false when there was none. */
  delete(owner: Caller, conversationId: string): Promise<boolean>;
  /** Stores a whole turn atomically (one entity-group transaction) or throws ConcurrencyConflict. */
  commitTurn(owner: Caller, commit: TurnCommit): Promise<void>;
  /** Stores a paused turn atomically with the header's pending marker, or throws ConcurrencyConflict. */
  pauseTurn(owner: Caller, pause: TurnPause): Promise<void>;
  /** The paused turn the header points at, or undefined. */
  getPendingTurn(owner: Caller, conversationId: string): Promise<PendingTurn | undefined>;
  /** Drops the paused turn (guarded by the header's version); false when there was none. */
  cancelPendingTurn(owner: Caller, conversationId: string, expectedVersion: string): Promise<boolean>;
  /**
   * Claims an idempotency key for a turn, or reports it as running or completed. `takeOver` claims a pending key
   * for the same request even while its lease lasts (its holder is known to be gone).
   */
  beginIdempotent(
    owner: Caller,
    conversationId: string,
    key: string,
    requestHash: string,
    options: { now: Date; leaseMs: number; takeOver?: boolean },
  ): Promise<IdempotencyBegin>;
  /**
   * Extends a held claim's lease to `now + leaseMs` (a long turn keeps its key), answering the claim to hold from now
   * on. Throws ClaimLost when the claim was taken over: the turn must stop, a retry owns the key.
   */
  renewIdempotent(
    owner: Caller,
    conversationId: string,
    key: string,
    claim: IdempotencyClaim,
    options: { now: Date; leaseMs: number },
  ): Promise<IdempotencyClaim>;
  /** Releases a claim after a failed turn, so the client may retry with the same key. */
  releaseIdempotent(owner: Caller, conversationId: string, key: string, claim: IdempotencyClaim): Promise<void>;
  /** Throws when storage does not answer. */
  ping(): Promise<void>;
}

// ---- Chat model --------------------------------------------------------------------------------

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** Prompt tokens the service served from its prompt cache (`prompt_tokens_details.cached_tokens`). */
  cachedPromptTokens: number;
}

export const NO_USAGE: Usage = { promptTokens: 0, completionTokens: 0, totalTokens: 0, cachedPromptTokens: 0 };

export interface CompletionRequest {
  messages: ChatMessage[];
  maxResponseTokens: number;
  temperature?: number;
  /** Sent as `prompt_cache_key`: requests with one key reach the same prompt cache (the conversation id). */
  cacheKey?: string;
  /** Offered to the model; absent or empty means the model may not call tools. */
  tools?: ToolDefinition[];
}

/** What the service says about the answer besides it, for telemetry; each may be missing. */
export interface ResponseDetails {
  /** The completion's id (`chatcmpl-...`). */
  responseId?: string;
  /** The model that answered, as the service names it (e.g. `gpt-4o-mini-2024-07-18`). */
  responseModel?: string;
}

export interface Completion extends ResponseDetails {
  /** Well-formed Unicode without NUL (adapters replace what is not): it is stored as it is. */
  content: string;
  finishReason: FinishReason;
  /** What the service reported; absent when it reported nothing, and then the core counts the turn itself. */
  usage?: Usage;
  /** Function calls the model asked for (finish reason `tool_calls`). */
  toolCalls?: ToolCall[];
}

export type CompletionChunk =
  | { type: 'delta'; content: string }
  | ({ type: 'done'; finishReason: FinishReason; usage?: Usage; toolCalls?: ToolCall[] } & ResponseDetails);

export interface ChatModel {
  /** Errors are ChatErrors (content_filtered, upstream_*), already retried where retrying helps. */
  complete(request: CompletionRequest, signal?: AbortSignal): Promise<Completion>;
  /** Deltas in order, then exactly one `done`. */
  stream(request: CompletionRequest, signal?: AbortSignal): AsyncIterable<CompletionChunk>;
}

// ---- Limits against abuse ------------------------------------------------------------------------

/** Tokens held against a caller's daily quota for one model call, until it settles with what it spent. */
export interface TokenReservation {
  /** The UTC day (`YYYY-MM-DD`) whose total holds them. */
  day: string;
  tokens: number;
}

/** Per-caller request rate and daily token quota, shared by every instance. */
export interface UsageLimiter {
  /**
   * Counts one request (unless `countRequest` is false) and reserves `reserveTokens` (the call's worst case) against
   * the caller's daily quota; throws RateLimitedError (429 with Retry-After) when over.
   */
  admit(
    caller: Caller,
    now: Date,
    options?: { reserveTokens?: number; countRequest?: boolean },
  ): Promise<TokenReservation>;
  /**
   * Replaces a reservation with the tokens the call spent (0 when it failed). An adapter may write it after this
   * resolves (the reservation stays counted until then: the total can be too high meanwhile, never too low).
   */
  settle(caller: Caller, reservation: TokenReservation, spentTokens: number, now: Date): Promise<void>;
  /** Adds tokens spent without a reservation (prompt + completion) to the caller's daily total. */
  record(caller: Caller, tokens: number, now: Date): Promise<void>;
}

export const unlimited: UsageLimiter = {
  admit: async (_caller, now) => ({ day: now.toISOString().slice(0, 10), tokens: 0 }),
  settle: async () => {},
  record: async () => {},
};

// ---- Clock and ids -----------------------------------------------------------------------------

export interface Clock {
  now(): Date;
}

export interface IdGenerator {
  newConversationId(): string;
}

// ---- Queued turns ------------------------------------------------------------------------------------------

/** Where the reply of a queued turn goes besides its status resource. */
export type ReplyTarget =
  | { kind: 'none' }
  /** The integration's callback (WEBHOOK_CALLBACK_URL), as a signed Standard Webhooks delivery. */
  | { kind: 'webhook'; threadId: string }
  /** A comment on a GitHub issue, posted as the GitHub App's installation. */
  | { kind: 'github'; installationId: number; repository: string; issueNumber: number };

export type TurnJobStatus = 'queued' | 'running' | 'completed' | 'failed';

/** A failed turn's problem as stored: what the synchronous request would have answered. */
export interface FailureRecord {
  code: string;
  status: number;
  title: string;
  detail: string;
  extensions?: Record<string, unknown>;
}

export interface DeliveryRecord {
  state: 'pending' | 'delivered' | 'failed';
  attempts: number;
  lastError?: string;
  updatedAt: string;
}

export interface TurnJob {
  turnId: string;
  owner: Caller;
  conversationId: string;
  content: string;
  name?: string;
  reply: ReplyTarget;
  status: TurnJobStatus;
  createdAt: string;
  updatedAt: string;
  /** Runs started (the queue message's dequeue count when the last one started). */
  runs: number;
  /** The stored turn, once completed (the same record an Idempotency-Key replay answers from). */
  result?: TurnRecord;
  failure?: FailureRecord;
  /** The last transient failure, while the queue retries. */
  lastError?: FailureRecord;
  delivery?: DeliveryRecord;
}

export type NewTurnJob = Omit<TurnJob, 'status' | 'updatedAt' | 'runs'>;
export type TurnJobChanges = Partial<
  Pick<TurnJob, 'status' | 'runs' | 'result' | 'failure' | 'lastError' | 'delivery' | 'updatedAt'>
>;

export interface TurnJobStore {
  /** Stores a new job; when one with this id exists (a retried request), returns that one and `created: false`. */
  create(job: NewTurnJob): Promise<{ job: TurnJob; created: boolean }>;
  /** The job, or undefined when missing or owned by another caller. */
  get(owner: Caller, conversationId: string, turnId: string): Promise<TurnJob | undefined>;
  update(owner: Caller, conversationId: string, turnId: string, changes: TurnJobChanges): Promise<void>;
  delete(owner: Caller, conversationId: string, turnId: string): Promise<void>;
}

/** What a queue message carries: a reference to the job (the message stays far below the 64 KiB limit). */
export type TurnJobMessage =
  | { type: 'turn'; owner: Caller; conversationId: string; turnId: string }
  | { type: 'delivery'; owner: Caller; conversationId: string; turnId: string; attempt: number };

export interface TurnJobQueue {
  /** Enqueues a message, visible after `delaySeconds` (default at once). */
  send(message: TurnJobMessage, options?: { delaySeconds?: number }): Promise<void>;
  /** Puts a message the app gives up on in the poison queue, beside those the host gave up on. */
  poison(message: TurnJobMessage, reason: string): Promise<void>;
}

export type ReplyEvent =
  | { type: 'turn.completed'; job: TurnJob; reply: StoredMessage; record: TurnRecord }
  | { type: 'turn.failed'; job: TurnJob; failure: FailureRecord };

export type DeliveryOutcome = { ok: true } | { ok: false; retryable: boolean; error: string };

/** Delivers a queued turn's outcome to where its caller wants it (one sender per ReplyTarget kind). */
export interface ReplySender {
  deliver(event: ReplyEvent): Promise<DeliveryOutcome>;
}

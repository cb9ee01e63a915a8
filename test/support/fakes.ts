/**
 * In-memory fakes of the core's ports for fast unit tests: a store with real ETag semantics, a scripted model
 * and a deterministic tokenizer that counts its encode calls.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Attributes, SpanHandle, Telemetry } from '../../src/core/telemetry';
import {
  ClaimLost,
  ConcurrencyConflict,
  type Caller,
  type ChatModel,
  type Completion,
  type CompletionChunk,
  type CompletionRequest,
  type Conversation,
  type ConversationStore,
  type ConversationSummary,
  type EncodingName,
  type IdempotencyBegin,
  type IdempotencyClaim,
  type NewConversation,
  type Page,
  type PendingTurn,
  type StoredMessage,
  type Tokenizer,
  type TurnCommit,
  type TurnPause,
  type TurnRecord,
  NO_TOTALS,
  unlimited,
} from '../../src/core/ports';
import type { ChatDependencies, ChatSettings } from '../../src/core/dependencies';
import { RateLimitedError } from '../../src/core/errors';

/** One token per whitespace-separated word (and one per role name); counts what it encodes. */
export class WordTokenizer implements Tokenizer {
  encodeCalls = 0;
  constructor(readonly encoding: EncodingName = 'o200k_base') {}
  countTokens(text: string): number {
    this.encodeCalls++;
    return text.split(/\s+/).filter((word) => word.length > 0).length;
  }
  specialTokens(): readonly string[] {
    return ['<|endoftext|>'];
  }
}

interface StoredConversation {
  owner: string;
  conversation: Conversation;
  messages: StoredMessage[];
  pending?: PendingTurn;
  idempotency: Map<
    string,
    { state: 'pending' | 'completed'; requestHash: string; token: string; leaseUntil: number; record?: TurnRecord }
  >;
}

export class MemoryStore implements ConversationStore {
  readonly conversations = new Map<string, StoredConversation>();
  commits = 0;
  private versionCounter = 0;
  /** Runs before a commit is applied: lets a test change the conversation underneath a turn. */
  beforeCommit?: (commit: TurnCommit) => Promise<void> | void;

  private key(owner: Caller, id: string) {
    return `${owner.kind}:${owner.id}/${id}`;
  }
  private nextVersion() {
    return `v${++this.versionCounter}`;
  }
  private find(owner: Caller, id: string) {
    return this.conversations.get(this.key(owner, id));
  }

  async create(
    owner: Caller,
    input: NewConversation,
    options: { maxConversations?: number } = {},
  ): Promise<Conversation> {
    const count = await this.countConversations(owner, Number.MAX_SAFE_INTEGER);
    if (options.maxConversations !== undefined && count >= options.maxConversations) {
      throw new RateLimitedError(`You already have ${count} conversations.`, 60, 'conversation_limit_reached');
    }
    const conversation: Conversation = {
      ...input,
      updatedAt: input.createdAt,
      messageCount: 0,
      version: this.nextVersion(),
      totals: { ...NO_TOTALS },
    };
    this.conversations.set(this.key(owner, input.id), {
      owner: `${owner.kind}:${owner.id}`,
      conversation,
      messages: [],
      idempotency: new Map(),
    });
    return structuredClone(conversation);
  }

  async get(owner: Caller, id: string) {
    const found = this.find(owner, id);
    return found ? structuredClone(found.conversation) : undefined;
  }

  async loadForTurn(owner: Caller, id: string) {
    const found = this.find(owner, id);
    return found ? structuredClone({ conversation: found.conversation, messages: found.messages }) : undefined;
  }

  async listMessages(owner: Caller, id: string, options: { afterSeq: number; limit: number }) {
    const found = this.find(owner, id);
    const after = (found?.messages ?? []).filter((message) => message.seq > options.afterSeq);
    return { messages: structuredClone(after.slice(0, options.limit)), hasMore: after.length > options.limit };
  }

  async getMessage(owner: Caller, id: string, seq: number) {
    const message = this.find(owner, id)?.messages.find((candidate) => candidate.seq === seq);
    return message ? structuredClone(message) : undefined;
  }

  async list(owner: Caller, options: { limit: number; cursor?: string }): Promise<Page<ConversationSummary>> {
    const mine = [...this.conversations.values()]
      .filter((entry) => entry.owner === `${owner.kind}:${owner.id}`)
      .map((entry) => entry.conversation)
      // Most recently active first, as the table store lists them.
      .sort((a, b) => b.updatedAt.localeCompare(a.updatedAt) || a.id.localeCompare(b.id));
    const start = options.cursor ? Number(options.cursor) : 0;
    const items = mine
      .slice(start, start + options.limit)
      .map(({ id, title, createdAt, updatedAt }) => ({ id, title, createdAt, updatedAt }));
    return { items, ...(start + options.limit < mine.length ? { nextCursor: String(start + options.limit) } : {}) };
  }

  async countConversations(owner: Caller, upTo: number): Promise<number> {
    return Math.min(
      upTo,
      [...this.conversations.values()].filter((entry) => entry.owner === `${owner.kind}:${owner.id}`).length,
    );
  }

  async delete(owner: Caller, id: string): Promise<boolean> {
    return this.conversations.delete(this.key(owner, id));
  }

  async commitTurn(owner: Caller, commit: TurnCommit): Promise<void> {
    await this.beforeCommit?.(commit);
    const found = this.find(owner, commit.conversationId);
    if (!found) throw new ConcurrencyConflict();
    if (commit.idempotency) {
      const record = found.idempotency.get(commit.idempotency.key);
      if (!record || record.token !== commit.idempotency.claim.token) throw new ClaimLost();
    }
    if (found.conversation.version !== commit.expectedVersion) throw new ConcurrencyConflict();
    const seqs = new Set(found.messages.map((message) => message.seq));
    if (commit.messages.some((message) => seqs.has(message.seq))) throw new ConcurrencyConflict();
    this.commits++;
    found.messages.push(...structuredClone(commit.messages));
    found.conversation.messageCount += commit.messages.length;
    found.conversation.updatedAt = commit.updatedAt;
    found.conversation.version = this.nextVersion();
    if (commit.header) {
      found.conversation.totals = { ...commit.header.totals };
      found.conversation.windowStartSeq = commit.header.windowStartSeq;
      if (commit.header.summary) found.conversation.summary = structuredClone(commit.header.summary);
    }
    if (commit.clearPending) {
      delete found.pending;
      delete found.conversation.pending;
    }
    this.completeIdempotency(found, commit.idempotency);
  }

  pauses = 0;

  async pauseTurn(owner: Caller, pause: TurnPause): Promise<void> {
    const found = this.find(owner, pause.conversationId);
    if (!found || found.conversation.version !== pause.expectedVersion) throw new ConcurrencyConflict();
    if (pause.idempotency) {
      const record = found.idempotency.get(pause.idempotency.key);
      if (!record || record.token !== pause.idempotency.claim.token) throw new ClaimLost();
    }
    this.pauses++;
    found.pending = structuredClone(pause.pending);
    found.conversation.pending = { id: pause.pending.id, expiresAt: pause.pending.expiresAt };
    found.conversation.updatedAt = pause.updatedAt;
    found.conversation.version = this.nextVersion();
    this.completeIdempotency(found, pause.idempotency);
  }

  async getPendingTurn(owner: Caller, id: string): Promise<PendingTurn | undefined> {
    const pending = this.find(owner, id)?.pending;
    return pending ? structuredClone(pending) : undefined;
  }

  async cancelPendingTurn(owner: Caller, id: string, expectedVersion: string): Promise<boolean> {
    const found = this.find(owner, id);
    if (!found) return false;
    if (found.conversation.version !== expectedVersion) throw new ConcurrencyConflict();
    if (!found.pending) return false;
    delete found.pending;
    delete found.conversation.pending;
    found.conversation.version = this.nextVersion();
    return true;
  }

  private completeIdempotency(found: StoredConversation, idempotency: TurnCommit['idempotency']): void {
    if (!idempotency) return;
    const record = found.idempotency.get(idempotency.key);
    if (record) Object.assign(record, { state: 'completed', record: idempotency.record, token: this.nextVersion() });
  }

  async beginIdempotent(
    owner: Caller,
    id: string,
    key: string,
    requestHash: string,
    options: { now: Date; leaseMs: number; takeOver?: boolean },
  ): Promise<IdempotencyBegin> {
    // Like Table Storage, a record can be written in a partition that holds no conversation.
    const found = this.find(owner, id) ?? this.orphanRecords(owner, id);
    const existing = found.idempotency.get(key);
    if (existing?.state === 'completed' && existing.record) {
      return { state: 'completed', requestHash: existing.requestHash, record: existing.record };
    }
    if (existing && existing.requestHash !== requestHash)
      return { state: 'in_progress', requestHash: existing.requestHash };
    if (existing && existing.leaseUntil > options.now.getTime() && !options.takeOver)
      return { state: 'in_progress', requestHash: existing.requestHash };
    const token = this.nextVersion();
    found.idempotency.set(key, {
      state: 'pending',
      requestHash,
      token,
      leaseUntil: options.now.getTime() + options.leaseMs,
    });
    return { state: 'claimed', claim: { token } };
  }

  /** Idempotency records written for conversations that do not exist, per owner and id. */
  readonly orphans = new Map<string, StoredConversation>();
  private orphanRecords(owner: Caller, id: string): StoredConversation {
    const key = this.key(owner, id);
    let entry = this.orphans.get(key);
    if (!entry) {
      entry = { owner: key, conversation: {} as Conversation, messages: [], idempotency: new Map() };
      this.orphans.set(key, entry);
    }
    return entry;
  }

  renewals = 0;

  async renewIdempotent(
    owner: Caller,
    id: string,
    key: string,
    claim: IdempotencyClaim,
    options: { now: Date; leaseMs: number },
  ): Promise<IdempotencyClaim> {
    const record = this.find(owner, id)?.idempotency.get(key);
    if (!record || record.state !== 'pending' || record.token !== claim.token) throw new ClaimLost();
    this.renewals++;
    record.token = this.nextVersion();
    record.leaseUntil = options.now.getTime() + options.leaseMs;
    return { token: record.token };
  }

  async releaseIdempotent(owner: Caller, id: string, key: string, claim: IdempotencyClaim): Promise<void> {
    const found = this.find(owner, id) ?? this.orphans.get(this.key(owner, id));
    if (found?.idempotency.get(key)?.token === claim.token) found.idempotency.delete(key);
  }

  async ping(): Promise<void> {}
}

/** A model that answers from a script and records every request. */
export class ScriptedModel implements ChatModel {
  readonly requests: CompletionRequest[] = [];
  /** Each call takes the next answer; an Error is thrown. Defaults to an echo. */
  readonly answers: (Partial<Completion> | Error)[] = [];
  /** Runs after the request is recorded and before the answer: lets tests interleave work. */
  during?: () => Promise<void> | void;

  async complete(request: CompletionRequest): Promise<Completion> {
    this.requests.push(structuredClone(request));
    await this.during?.();
    const answer = this.answers.shift();
    if (answer instanceof Error) throw answer;
    const content = answer?.content ?? (answer?.toolCalls ? '' : `echo: ${request.messages.at(-1)?.content ?? ''}`);
    // An answer that names `usage: undefined` is one the service sent without usage.
    const usage =
      answer && 'usage' in answer
        ? answer.usage
        : { promptTokens: 10, completionTokens: 5, totalTokens: 15, cachedPromptTokens: 0 };
    return {
      content,
      finishReason: answer?.finishReason ?? (answer?.toolCalls ? 'tool_calls' : 'stop'),
      ...(usage ? { usage } : {}),
      ...(answer?.toolCalls ? { toolCalls: answer.toolCalls } : {}),
    };
  }

  async *stream(request: CompletionRequest): AsyncIterable<CompletionChunk> {
    const completion = await this.complete(request);
    for (const word of completion.content.split(/(?<= )/)) if (word) yield { type: 'delta', content: word };
    yield {
      type: 'done',
      finishReason: completion.finishReason,
      ...(completion.usage ? { usage: completion.usage } : {}),
      ...(completion.toolCalls ? { toolCalls: completion.toolCalls } : {}),
    };
  }
}

export const TEST_SETTINGS: ChatSettings = {
  defaultSystemMessage: 'You are a helpful assistant.',
  tokenLimit: 4096,
  maxResponseTokens: 100,
  trimPolicy: 'drop-oldest',
  maxTurns: 20,
  trimLowWater: 0.6,
  summary: { enabled: false, maxTokens: 50 },
  maxExamples: 20,
  turnAttempts: 3,
  idempotencyLeaseMs: 60_000,
  maxConversationsPerCaller: 0,
};

export function fakeDependencies(
  overrides: Omit<Partial<ChatDependencies>, 'settings'> & { settings?: Partial<ChatSettings> } = {},
) {
  const store = (overrides.store as MemoryStore | undefined) ?? new MemoryStore();
  const model = (overrides.model as ScriptedModel | undefined) ?? new ScriptedModel();
  const tokenizer = (overrides.tokenizer as WordTokenizer | undefined) ?? new WordTokenizer();
  let ids = 0;
  let time = Date.parse('2026-01-01T00:00:00Z');
  const deps: ChatDependencies = {
    store,
    model,
    tokenizer,
    clock: overrides.clock ?? { now: () => new Date((time += 1000)) },
    ids: overrides.ids ?? { newConversationId: () => `conv${++ids}` },
    limiter: overrides.limiter ?? unlimited,
    settings: { ...TEST_SETTINGS, ...overrides.settings },
    log: overrides.log ?? { info: () => {}, warn: () => {}, error: () => {} },
    ...(overrides.serverTools ? { serverTools: overrides.serverTools } : {}),
    ...(overrides.telemetry ? { telemetry: overrides.telemetry } : {}),
  };
  return { deps, store, model, tokenizer };
}

/** Telemetry that keeps each span's name, parent and attributes (spans nest through async calls, as OpenTelemetry's do). */
export class RecordingTelemetry implements Telemetry {
  readonly captureContent = false;
  readonly spans: { name: string; parent: string | undefined; attributes: Attributes; failed: boolean }[] = [];
  private readonly active = new AsyncLocalStorage<string>();

  startSpan(name: string, options?: { attributes?: Attributes }): SpanHandle {
    const span = { name, parent: this.active.getStore(), attributes: { ...options?.attributes }, failed: false };
    this.spans.push(span);
    return {
      setAttributes: (attributes) => void Object.assign(span.attributes, attributes),
      fail: () => void (span.failed = true),
      run: (fn) => this.active.run(name, fn),
      end: () => {},
    };
  }

  recordTokenUsage(): void {}
  recordOperationDuration(): void {}
}

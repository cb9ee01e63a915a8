/**
 * Conversation lifecycle apart from turns: create, read (with paged messages), list, delete. The prologue (system
 * message and few-shot examples) is counted once here and stored with its counts, like every message.
 */
import { ContextLengthExceededError, InvalidRequestError, NotFoundError, SpecialTokenRejectedError } from './errors';
import type {
  Caller,
  ChatMessage,
  Conversation,
  ConversationSummary,
  ConversationTotals,
  Page,
  PrologueMessage,
  StoredMessage,
  Usage,
  ToolCall,
  ToolDefinition,
} from './ports';
import { countMessageTokens, REPLY_PRIMING_TOKENS } from './tokens/countTokens';
import { findSpecialTokenMarkup } from './tokens/specialTokens';
import type { ChatDependencies } from './dependencies';
import { offeredServerTools } from './tools';
import { messageId } from './turn';

export interface NewConversationInput {
  system?: string;
  examples?: { role: 'user' | 'assistant'; content: string }[];
  title?: string;
  metadata?: Record<string, string>;
  /** Server tools this conversation may use: a subset of the enabled ones (CHAT_TOOLS); default all of them. */
  tools?: string[];
  /** Tools the caller's app runs (`parameters` already checked as JSON Schema by the HTTP layer). */
  clientTools?: ToolDefinition[];
}

export interface ConversationView {
  id: string;
  title: string | null;
  system: string;
  examples: { role: 'user' | 'assistant'; content: string }[];
  metadata: Record<string, string>;
  createdAt: string;
  updatedAt: string;
  messageCount: number;
  /** Model tokens the conversation has spent so far (its turns and its summaries). */
  usage: ConversationTotals;
  /** The summary of the messages that left the window, when there is one (CHAT_SUMMARY=on). */
  summary: SummaryView | null;
  /** The server tools the conversation offers the model (those still enabled). */
  tools: string[];
  clientTools?: ToolDefinition[];
}

export interface SummaryView {
  content: string;
  /** It covers every message from `firstMessageId` through `lastMessageId`. */
  firstMessageId: string;
  lastMessageId: string;
  /** Prompt tokens it takes as the pinned message. */
  tokens: number;
  createdAt: string;
}

export interface MessageView {
  id: string;
  role: 'user' | 'assistant' | 'tool';
  content: string;
  name?: string;
  createdAt: string;
  finishReason?: string;
  /** Assistant messages: what the model reported for the call that wrote the reply. */
  usage?: Usage;
  toolCalls?: ToolCall[];
  toolCallId?: string;
}

export interface ConversationWithMessages extends ConversationView {
  messages: MessageView[];
  nextCursor?: string;
}

/**
 * System message, examples and client tools together as JSON, in UTF-16 units: all three live in the conversation's
 * header entity, which Table Storage counts at 2 bytes a unit and caps at 1 MiB; this leaves room for the title,
 * metadata, tool names and summary beside them.
 */
export const MAX_PROLOGUE_JSON_CHARS = 450_000;

export class Conversations {
  constructor(private readonly deps: ChatDependencies) {}

  /** `id` is chosen by the system, never by a client: see getOrCreate. */
  async create(caller: Caller, input: NewConversationInput, id?: string): Promise<ConversationView> {
    const { store, tokenizer, clock, ids, settings } = this.deps;
    const prologueMessages: ChatMessage[] = [
      { role: 'system', content: input.system ?? settings.defaultSystemMessage },
      ...(input.examples ?? []),
    ];
    // The prologue and client tools are stored in the conversation's header entity: refuse what cannot fit.
    const clientTools = input.clientTools ?? [];
    const headerChars = JSON.stringify(prologueMessages).length + JSON.stringify(clientTools).length;
    if (headerChars > MAX_PROLOGUE_JSON_CHARS) {
      throw new InvalidRequestError(
        clientTools.length > 0
          ? `The system message, examples and client tools together are too large to store (${headerChars} characters as JSON, over ${MAX_PROLOGUE_JSON_CHARS}). Shorten them or declare fewer tools.`
          : `The system message and examples together are too large to store (over ${MAX_PROLOGUE_JSON_CHARS} characters as JSON). Shorten them.`,
        [
          clientTools.length > 0
            ? { field: 'clientTools', message: 'system message, examples and client tools too large together' }
            : { field: 'examples', message: 'system message and examples too large together' },
        ],
      );
    }
    this.checkTools(input);
    const markers = prologueMessages.flatMap((message) => findSpecialTokenMarkup(message.content, tokenizer));
    if (markers.length > 0) throw new SpecialTokenRejectedError([...new Set(markers)]);

    const prologue: PrologueMessage[] = prologueMessages.map((message) => ({
      ...message,
      tokens: countMessageTokens(message, tokenizer),
      encoding: tokenizer.encoding,
    }));
    // A prologue that leaves no room for even an empty user message would refuse every turn: refuse it now.
    const emptyUserTokens = countMessageTokens({ role: 'user', content: '' }, tokenizer);
    const floor = prologue.reduce((sum, message) => sum + message.tokens, 0) + emptyUserTokens + REPLY_PRIMING_TOKENS;
    if (floor + settings.maxResponseTokens >= settings.tokenLimit) {
      throw new ContextLengthExceededError(
        `The system message and examples take ${floor} tokens; with ${settings.maxResponseTokens} reserved for the reply they do not fit the ${settings.tokenLimit}-token context window. Shorten them.`,
        { promptTokens: floor, maxResponseTokens: settings.maxResponseTokens, tokenLimit: settings.tokenLimit },
      );
    }

    // Integrations open a conversation per thread of theirs and are authenticated by a shared secret: the per-caller
    // count is for end users. Their turns still count against the rate limit and the token quota.
    const capped = settings.maxConversationsPerCaller > 0 && caller.kind !== 'integration';
    const createdAt = clock.now().toISOString();
    const conversation = await store.create(
      caller,
      {
        id: id ?? ids.newConversationId(),
        title: input.title ?? null,
        metadata: input.metadata ?? {},
        prologue,
        createdAt,
        ...(input.tools !== undefined ? { tools: [...new Set(input.tools)] } : {}),
        ...(input.clientTools !== undefined && input.clientTools.length > 0 ? { clientTools: input.clientTools } : {}),
      },
      capped ? { maxConversations: settings.maxConversationsPerCaller } : {},
    );
    return this.toView(conversation);
  }

  /** Server tools must be enabled here; client tool names must be unique and not shadow a server tool. */
  private checkTools(input: NewConversationInput): void {
    const enabled = this.deps.serverTools ?? new Map();
    const errors = (input.tools ?? []).flatMap((name, index) =>
      enabled.has(name)
        ? []
        : [{ field: `tools/${index}`, message: `${name} is not a tool this service enables (CHAT_TOOLS)` }],
    );
    const seen = new Set<string>();
    (input.clientTools ?? []).forEach((tool, index) => {
      if (enabled.has(tool.name)) {
        errors.push({ field: `clientTools/${index}/name`, message: `${tool.name} is the name of a server tool` });
      } else if (seen.has(tool.name)) {
        errors.push({ field: `clientTools/${index}/name`, message: `${tool.name} is declared twice` });
      }
      seen.add(tool.name);
    });
    if (errors.length > 0) throw new InvalidRequestError('The tools are not valid.', errors);
  }

  /**
   * The caller's conversation with this id, created from `input` on first use: for integrations whose own key (a
   * thread id) maps to a deterministic conversation id. When two first deliveries race, the one that loses the
   * create finds the winner's conversation and uses it.
   */
  async getOrCreate(
    caller: Caller,
    id: string,
    input: NewConversationInput,
  ): Promise<{ conversation: ConversationView; created: boolean }> {
    const existing = await this.deps.store.get(caller, id);
    if (existing) return { conversation: this.toView(existing), created: false };
    try {
      return { conversation: await this.create(caller, input, id), created: true };
    } catch (error) {
      const raced = await this.deps.store.get(caller, id);
      if (raced) return { conversation: this.toView(raced), created: false };
      throw error;
    }
  }

  async get(caller: Caller, id: string, page: { limit: number; cursor?: string }): Promise<ConversationWithMessages> {
    const { store } = this.deps;
    const conversation = await store.get(caller, id);
    if (!conversation) throw notFound();
    const afterSeq = page.cursor === undefined ? 0 : decodeMessageCursor(page.cursor);
    const { messages, hasMore } = await store.listMessages(caller, id, { afterSeq, limit: page.limit });
    const last = messages.at(-1);
    return {
      ...this.toView(conversation),
      messages: messages.map(toMessageView),
      ...(hasMore && last ? { nextCursor: encodeMessageCursor(last.seq) } : {}),
    };
  }

  list(caller: Caller, page: { limit: number; cursor?: string }): Promise<Page<ConversationSummary>> {
    return this.deps.store.list(caller, page);
  }

  async delete(caller: Caller, id: string): Promise<void> {
    if (!(await this.deps.store.delete(caller, id))) throw notFound();
  }

  private toView(conversation: Conversation): ConversationView {
    const offered = offeredServerTools(
      this.deps.serverTools ?? new Map(),
      conversation.tools,
      conversation.clientTools,
    );
    return {
      ...toView(conversation),
      tools: offered.map(([name]) => name),
      ...(conversation.clientTools ? { clientTools: conversation.clientTools } : {}),
    };
  }
}

function toView(conversation: Conversation): Omit<ConversationView, 'tools'> {
  const [system, ...examples] = conversation.prologue;
  return {
    id: conversation.id,
    title: conversation.title,
    system: system?.content ?? '',
    examples: examples.map((example) => ({
      role: example.role === 'assistant' ? 'assistant' : 'user',
      content: example.content,
    })),
    metadata: conversation.metadata,
    createdAt: conversation.createdAt,
    updatedAt: conversation.updatedAt,
    messageCount: conversation.messageCount,
    usage: { ...conversation.totals },
    summary: conversation.summary
      ? {
          content: conversation.summary.content,
          firstMessageId: messageId(1),
          lastMessageId: messageId(conversation.summary.throughSeq),
          tokens: conversation.summary.tokens,
          createdAt: conversation.summary.createdAt,
        }
      : null,
  };
}

function toMessageView(message: StoredMessage): MessageView {
  return {
    id: message.id,
    role: message.role,
    content: message.content,
    ...(message.name ? { name: message.name } : {}),
    createdAt: message.createdAt,
    ...(message.finishReason ? { finishReason: message.finishReason } : {}),
    ...(message.usage ? { usage: { ...message.usage } } : {}),
    ...(message.toolCalls ? { toolCalls: message.toolCalls } : {}),
    ...(message.toolCallId !== undefined ? { toolCallId: message.toolCallId } : {}),
  };
}

function notFound(): NotFoundError {
  return new NotFoundError('No conversation with this id exists for the caller.');
}

/** Message cursors are opaque to clients: base64url of the last sequence number returned. */
export function encodeMessageCursor(seq: number): string {
  return Buffer.from(`s:${seq}`).toString('base64url');
}

export function decodeMessageCursor(cursor: string): number {
  const match = /^s:(\d{1,10})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!match)
    throw new InvalidRequestError('The cursor is not one this API returned.', [
      { field: 'cursor', message: 'unknown cursor' },
    ]);
  return Number(match[1]);
}

/**
 * The console chat client: the Azure OpenAI chat guide's conversation loop, against this API instead of the model.
 * It creates a conversation (or resumes one), reads a line, sends it, prints the reply as it streams, then the tokens
 * the turn used and how many old turns were left out to fit the context window. The server keeps the history.
 *
 *   npm run chat -- [--url http://localhost:7071/api] [--conversation <id>] [--key <function key>] [--token <jwt>]
 *
 * Commands: /new (a new conversation), /history (the stored messages), /tools (the conversation's tools and any turn
 * waiting for client-tool results), /result <toolCallId> <output> and /cancel (answer or cancel that turn), /help,
 * /exit. Everything here except `main`
 * is a pure helper or takes its I/O as a parameter, so the unit tests drive it with fakes.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import * as readline from 'node:readline';
import { parseArgs } from 'node:util';
import { applyLocalSettings } from '../local/host/appFiles';

export const DEFAULT_API_URL = 'http://localhost:7071/api';

/** The title of a conversation the client starts: where and when, so the list tells chats apart. */
export function consoleChatTitle(now = new Date()): string {
  return `Console chat, ${now.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/** The API `npm start` serves: on PORT, taken as npm start takes it (the environment, then local.settings.json). */
export function defaultApiUrl(env: Record<string, string | undefined>): string {
  const port = env.PORT?.trim();
  return port ? `http://localhost:${port}/api` : DEFAULT_API_URL;
}
const CONVERSATION_ID = /^[A-Za-z0-9_-]{1,128}$/;
const HISTORY_PAGE_SIZE = 100;
/** Connection failures that mean "nothing is listening there" rather than "the API answered badly". */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ECONNRESET']);

export const USAGE = `Usage: npm run chat -- [options]

  --url <url>            The API, with its /api prefix (env CHAT_API_URL; default http://localhost:<PORT>/api,
                         PORT as npm start takes it: the environment, then local.settings.json, else 7071)
  --conversation <id>    Resume this conversation instead of starting a new one
  --key <key>            Azure Functions function key, sent as x-functions-key (env CHAT_FUNCTION_KEY)
  --token <jwt>          Bearer token, for AUTH_MODE=jwt (env CHAT_BEARER_TOKEN)
  -h, --help             This text

In the chat: /new starts a new conversation, /history prints its messages, /exit quits.`;

// ---- Arguments ------------------------------------------------------------------------------------------------

export interface ChatOptions {
  /** Without a trailing slash. */
  url: string;
  conversation?: string;
  key?: string;
  token?: string;
  help: boolean;
}

export class UsageError extends Error {}

/** Command-line flags, falling back to environment variables (so secrets need not sit in the shell history). */
export function parseChatArgs(argv: string[], env: Record<string, string | undefined> = {}): ChatOptions {
  let values: { url?: string; conversation?: string; key?: string; token?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        url: { type: 'string' },
        conversation: { type: 'string' },
        key: { type: 'string' },
        token: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  const rawUrl = values.url ?? env.CHAT_API_URL ?? defaultApiUrl(env);
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    throw new UsageError(`--url must be an http(s) URL such as ${DEFAULT_API_URL}, not "${rawUrl}".`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`--url must be an http(s) URL such as ${DEFAULT_API_URL}, not "${rawUrl}".`);
  }
  if (values.conversation !== undefined && !CONVERSATION_ID.test(values.conversation)) {
    throw new UsageError(
      `--conversation must be an id the API returned (letters, digits, - and _), not "${values.conversation}".`,
    );
  }
  const key = values.key ?? env.CHAT_FUNCTION_KEY;
  const token = values.token ?? env.CHAT_BEARER_TOKEN;
  return {
    url: url.toString().replace(/\/+$/, ''),
    help: values.help ?? false,
    ...(values.conversation !== undefined ? { conversation: values.conversation } : {}),
    ...(key ? { key } : {}),
    ...(token ? { token } : {}),
  };
}

// ---- Server-sent events -----------------------------------------------------------------------------------------

export interface ServerSentEvent {
  /** The `event:` field; `message` when the event has none. */
  event: string;
  /** The `data:` lines joined with `\n`. */
  data: string;
}

/**
 * An incremental text/event-stream parser (the WHATWG rules this API uses): feed it decoded text as it arrives, in
 * chunks cut anywhere, and it returns the events completed so far. Comments (`:`) and `id`/`retry` are ignored.
 */
export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];

  push(chunk: string): ServerSentEvent[] {
    this.buffer += chunk;
    const events: ServerSentEvent[] = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) break;
      // A lone \r at the end may be the first half of \r\n: wait for the next chunk.
      if (match[0] === '\r' && match.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      const event = this.line(line);
      if (event) events.push(event);
    }
    return events;
  }

  /** The stream ended: an event without its closing blank line is dropped, as the standard says. */
  end(): ServerSentEvent[] {
    this.buffer = '';
    this.event = '';
    this.data = [];
    return [];
  }

  private line(line: string): ServerSentEvent | undefined {
    if (line === '') {
      if (this.data.length === 0) {
        this.event = '';
        return undefined;
      }
      const event = { event: this.event || 'message', data: this.data.join('\n') };
      this.event = '';
      this.data = [];
      return event;
    }
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    return undefined;
  }
}

// ---- The API ------------------------------------------------------------------------------------------------

/** A problem the API answered with (RFC 9457), printed as `code: detail`. */
export class ApiProblem extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
  ) {
    super(`${code}: ${detail}`);
    this.name = 'ApiProblem';
  }
}

/** Nothing answered at the URL: the API is not running there. */
export class ApiUnreachable extends Error {
  constructor(readonly url: string) {
    super(`No API at ${url}. Start it with \`npm start\`.`);
    this.name = 'ApiUnreachable';
  }
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

export interface ConversationInfo {
  id: string;
  title: string | null;
  messageCount: number;
}

export interface HistoryMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  name?: string;
  toolCalls?: ToolCallInfo[];
  toolCallId?: string;
}

export interface ToolCallInfo {
  id: string;
  name: string;
  arguments: string;
}

export interface ReplySummary {
  content: string;
  finishReason: string;
  usage: Usage;
  droppedTurns: number;
  /** Set when the turn waits for client-tool results instead of a reply. */
  requiresAction?: { turnId: string; toolCalls: ToolCallInfo[]; expiresAt: string };
}

/** The tools of a conversation, and the turn waiting for client-tool results, if any. */
export interface ToolsInfo {
  server: string[];
  client: string[];
  pending?: { turnId: string; toolCalls: ToolCallInfo[]; expiresAt: string };
}

/** What the chat loop needs from the API; ChatApi speaks HTTP, the unit tests use a fake. */
export interface ChatBackend {
  readonly url: string;
  createConversation(): Promise<ConversationInfo>;
  getConversation(id: string): Promise<ConversationInfo>;
  /** The system message, the examples and every stored message, in order (all pages). */
  history(id: string): Promise<HistoryMessage[]>;
  /**
   * Sends one message; `onDelta` gets the reply as it arrives (all at once when the server does not stream), `onTool`
   * a line per tool call and result the server streams.
   */
  send(
    id: string,
    content: string,
    onDelta: (text: string) => void,
    signal?: AbortSignal,
    onTool?: (line: string) => void,
  ): Promise<ReplySummary>;
  /** The conversation's tools and its pending turn (/tools). */
  tools?(id: string): Promise<ToolsInfo>;
  /** Posts client-tool results for the waiting turn (/result) and streams the continued turn like `send`. */
  submitToolResults?(
    id: string,
    results: { toolCallId: string; output: unknown }[],
    onDelta: (text: string) => void,
    signal?: AbortSignal,
    onTool?: (line: string) => void,
  ): Promise<ReplySummary>;
  /** Cancels the waiting turn (/cancel). */
  cancelPendingTurn?(id: string): Promise<void>;
}

type TurnResultBody =
  | {
      status?: 'completed';
      message: { content: string };
      finishReason: string;
      usage: Usage;
      context: { droppedTurns: number };
    }
  | {
      status: 'requires_action';
      turnId: string;
      toolCalls: ToolCallInfo[];
      expiresAt: string;
      usage: Usage;
      context: { droppedTurns: number };
    };

interface ConversationBody {
  id: string;
  title: string | null;
  system: string;
  examples: { role: 'user' | 'assistant'; content: string }[];
  messageCount: number;
  messages?: HistoryMessage[];
  nextCursor?: string;
  tools?: string[];
  clientTools?: { name: string }[];
}

export class ChatApi implements ChatBackend {
  private readonly fetch: typeof fetch;

  constructor(private readonly options: { url: string; key?: string; token?: string; fetch?: typeof fetch }) {
    this.fetch = options.fetch ?? fetch;
  }

  get url(): string {
    return this.options.url;
  }

  async createConversation(): Promise<ConversationInfo> {
    const body = (await this.json('POST', '/conversations', { title: consoleChatTitle() })) as ConversationBody;
    return { id: body.id, title: body.title, messageCount: body.messageCount };
  }

  async getConversation(id: string): Promise<ConversationInfo> {
    const body = (await this.json('GET', `/conversations/${encodeURIComponent(id)}?limit=1`)) as ConversationBody;
    return { id: body.id, title: body.title, messageCount: body.messageCount };
  }

  async history(id: string): Promise<HistoryMessage[]> {
    const messages: HistoryMessage[] = [];
    let cursor: string | undefined;
    do {
      const query = `limit=${HISTORY_PAGE_SIZE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      const page = (await this.json('GET', `/conversations/${encodeURIComponent(id)}?${query}`)) as ConversationBody;
      if (cursor === undefined) {
        messages.push({ role: 'system', content: page.system }, ...page.examples);
      }
      messages.push(...(page.messages ?? []));
      cursor = page.nextCursor;
    } while (cursor);
    return messages;
  }

  async send(
    id: string,
    content: string,
    onDelta: (text: string) => void,
    signal?: AbortSignal,
    onTool?: (line: string) => void,
  ): Promise<ReplySummary> {
    return this.turn(`/conversations/${encodeURIComponent(id)}/messages`, { content }, onDelta, signal, onTool);
  }

  async submitToolResults(
    id: string,
    results: { toolCallId: string; output: unknown }[],
    onDelta: (text: string) => void,
    signal?: AbortSignal,
    onTool?: (line: string) => void,
  ): Promise<ReplySummary> {
    const path = `/conversations/${encodeURIComponent(id)}/tool-results`;
    // A key of its own, as the API asks: a repeated post would continue the turn once.
    return this.turn(path, { results }, onDelta, signal, onTool, { 'idempotency-key': randomUUID() });
  }

  async cancelPendingTurn(id: string): Promise<void> {
    const response = await this.request('DELETE', `/conversations/${encodeURIComponent(id)}/pending-turn`, {});
    if (!response.ok) await this.parse(response);
    else await response.body?.cancel();
  }

  /** One turn request, streamed when the server streams; what the turn answered, printed as it arrives. */
  private async turn(
    path: string,
    body: unknown,
    onDelta: (text: string) => void,
    signal: AbortSignal | undefined,
    onTool: ((line: string) => void) | undefined,
    headers: Record<string, string> = {},
  ): Promise<ReplySummary> {
    const response = await this.request('POST', path, {
      body,
      accept: 'text/event-stream, application/json;q=0.9',
      headers,
      ...(signal ? { signal } : {}),
    });
    const contentType = response.headers.get('content-type') ?? '';
    if (response.ok && contentType.startsWith('text/event-stream') && response.body) {
      return readStreamedReply(response.body, onDelta, onTool);
    }
    const result = (await this.parse(response)) as TurnResultBody;
    if (result.status !== 'requires_action') onDelta(result.message.content);
    return summarize(result);
  }

  async tools(id: string): Promise<ToolsInfo> {
    const path = `/conversations/${encodeURIComponent(id)}`;
    const conversation = (await this.json('GET', `${path}?limit=1`)) as ConversationBody;
    const info: ToolsInfo = {
      server: conversation.tools ?? [],
      client: (conversation.clientTools ?? []).map((tool) => tool.name),
    };
    const pending = await this.request('GET', `${path}/pending-turn`, {});
    if (pending.status === 404) {
      await pending.body?.cancel();
      return info;
    }
    const body = (await this.parse(pending)) as NonNullable<ToolsInfo['pending']>;
    return { ...info, pending: { turnId: body.turnId, toolCalls: body.toolCalls, expiresAt: body.expiresAt } };
  }

  private async json(method: string, path: string, body?: unknown): Promise<unknown> {
    return this.parse(await this.request(method, path, { ...(body !== undefined ? { body } : {}) }));
  }

  private async request(
    method: string,
    path: string,
    options: { body?: unknown; accept?: string; signal?: AbortSignal; headers?: Record<string, string> },
  ): Promise<Response> {
    const headers: Record<string, string> = { accept: options.accept ?? 'application/json', ...options.headers };
    if (options.body !== undefined) headers['content-type'] = 'application/json';
    if (this.options.key) headers['x-functions-key'] = this.options.key;
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`;
    try {
      return await this.fetch(`${this.options.url}${path}`, {
        method,
        headers,
        ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (error) {
      if (isUnreachable(error)) throw new ApiUnreachable(this.options.url);
      throw error;
    }
  }

  private async parse(response: Response): Promise<unknown> {
    const text = await response.text();
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    if (response.ok) {
      if (body === undefined && text)
        throw new Error(`The API answered ${response.status} with a body that is not JSON.`);
      return body;
    }
    throw toProblem(response.status, body, text);
  }
}

export function toProblem(status: number, body: unknown, text = ''): ApiProblem {
  const problem = (body ?? {}) as { code?: unknown; detail?: unknown; title?: unknown };
  const code = typeof problem.code === 'string' ? problem.code : `http_${status}`;
  const detail =
    typeof problem.detail === 'string'
      ? problem.detail
      : typeof problem.title === 'string'
        ? problem.title
        : text.trim().slice(0, 200) || `The API answered HTTP ${status}.`;
  return new ApiProblem(status, code, detail);
}

export function isUnreachable(error: unknown): boolean {
  const cause = (error as { cause?: { code?: unknown; errors?: { code?: unknown }[] } } | undefined)?.cause;
  if (!cause) return false;
  if (typeof cause.code === 'string' && UNREACHABLE_CODES.has(cause.code)) return true;
  return (cause.errors ?? []).some((inner) => typeof inner.code === 'string' && UNREACHABLE_CODES.has(inner.code));
}

function summarize(result: TurnResultBody): ReplySummary {
  if (result.status === 'requires_action') {
    return {
      content: '',
      finishReason: 'tool_calls',
      usage: result.usage,
      droppedTurns: result.context.droppedTurns,
      requiresAction: { turnId: result.turnId, toolCalls: result.toolCalls, expiresAt: result.expiresAt },
    };
  }
  return {
    content: result.message.content,
    finishReason: result.finishReason,
    usage: result.usage,
    droppedTurns: result.context.droppedTurns,
  };
}

/** A line for a streamed tool call or result, shortened for the console. */
export function formatToolEvent(event: string, data: unknown): string | undefined {
  const shorten = (text: string) => (text.length > 200 ? `${text.slice(0, 200)}…` : text);
  if (event === 'tool.call') {
    const call = data as ToolCallInfo & { client?: boolean };
    return `[tool call] ${call.name}(${shorten(call.arguments)})${call.client ? ' (client tool)' : ''}`;
  }
  if (event === 'tool.result') {
    const result = data as { name: string; output: string; error?: string };
    return `[tool result] ${result.name}${result.error ? ` (${result.error})` : ''}: ${shorten(result.output)}`;
  }
  return undefined;
}

/** Prints deltas as they arrive; ends with the turn's summary or throws the problem of `turn.failed`. */
export async function readStreamedReply(
  body: ReadableStream<Uint8Array>,
  onDelta: (text: string) => void,
  onTool?: (line: string) => void,
): Promise<ReplySummary> {
  const parser = new SseParser();
  const decoder = new TextDecoder();
  const handle = (event: ServerSentEvent): ReplySummary | undefined => {
    const data = JSON.parse(event.data) as unknown;
    switch (event.event) {
      case 'message.delta':
        onDelta((data as { content: string }).content);
        return undefined;
      case 'tool.call':
      case 'tool.result': {
        const line = formatToolEvent(event.event, data);
        if (line) onTool?.(line);
        return undefined;
      }
      case 'turn.completed':
      case 'turn.requires_action':
        return summarize(data as TurnResultBody);
      case 'turn.failed':
        throw toProblem((data as { status?: number }).status ?? 500, data);
      default:
        return undefined; // turn.started, and anything newer than this client
    }
  };
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    for (const event of parser.push(decoder.decode(chunk, { stream: true }))) {
      const done = handle(event);
      if (done) return done;
    }
  }
  for (const event of parser.push(`${decoder.decode()}\n\n`)) {
    const done = handle(event);
    if (done) return done;
  }
  throw new Error('The reply stream ended before the turn completed; /history shows whether it was stored.');
}

// ---- The conversation loop ----------------------------------------------------------------------------------

export type Command =
  | { kind: 'message'; content: string }
  | { kind: 'new' }
  | { kind: 'history' }
  | { kind: 'tools' }
  | { kind: 'result'; toolCallId: string; output: unknown }
  | { kind: 'cancel' }
  | { kind: 'usage'; help: string }
  | { kind: 'help' }
  | { kind: 'exit' }
  | { kind: 'empty' }
  | { kind: 'unknown'; name: string };

export function parseCommand(line: string): Command {
  const trimmed = line.trim();
  if (trimmed === '') return { kind: 'empty' };
  if (!trimmed.startsWith('/')) return { kind: 'message', content: line };
  const name = trimmed.split(/\s+/)[0]!.toLowerCase();
  switch (name) {
    case '/new':
      return { kind: 'new' };
    case '/history':
      return { kind: 'history' };
    case '/tools':
      return { kind: 'tools' };
    case '/cancel':
      return { kind: 'cancel' };
    case '/result': {
      // `/result <toolCallId> <output>`: the output as JSON when it is JSON, else as the text typed.
      const match = /^\/result\s+(\S+)\s+([\s\S]+)$/i.exec(trimmed);
      if (!match) return { kind: 'usage', help: 'Usage: /result <toolCallId> <output> (JSON or text).' };
      return { kind: 'result', toolCallId: match[1]!, output: parseOutput(match[2]!.trim()) };
    }
    case '/help':
      return { kind: 'help' };
    case '/exit':
    case '/quit':
      return { kind: 'exit' };
    default:
      return { kind: 'unknown', name };
  }
}

export const COMMANDS_HELP =
  '/new starts a new conversation, /history prints its messages, /tools lists its tools, /exit quits.';

function parseOutput(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

export function formatTools(info: ToolsInfo): string {
  const lines = [
    `server tools: ${info.server.length > 0 ? info.server.join(', ') : '(none)'}`,
    `client tools: ${info.client.length > 0 ? info.client.join(', ') : '(none)'}`,
  ];
  if (info.pending) lines.push(formatPending(info.pending));
  return lines.join('\n');
}

export function formatPending(pending: NonNullable<ToolsInfo['pending']>): string {
  const calls = pending.toolCalls.map((call) => `${call.name}(${call.arguments}) [${call.id}]`);
  return (
    `turn ${pending.turnId} waits for client-tool results until ${pending.expiresAt}: ${calls.join(', ')}. ` +
    'Your app posts them to /conversations/{id}/tool-results (here: /result <toolCallId> <output>), or DELETE ' +
    '/conversations/{id}/pending-turn cancels it (here: /cancel).'
  );
}

export function formatUsage(reply: ReplySummary): string {
  const { promptTokens, completionTokens, totalTokens } = reply.usage;
  const finish = reply.finishReason === 'stop' ? '' : `; finish reason: ${reply.finishReason}`;
  return (
    `(tokens: ${promptTokens} prompt + ${completionTokens} completion = ${totalTokens}; ` +
    `turns dropped: ${reply.droppedTurns}${finish})`
  );
}

export function formatHistory(conversationId: string, messages: HistoryMessage[]): string {
  const lines = messages.map((message) => {
    const who = message.role === 'user' ? (message.name ?? 'you') : message.role;
    const calls = (message.toolCalls ?? []).map((call) => `${call.name}(${call.arguments})`);
    if (calls.length > 0) return `${who}> [calls ${calls.join(', ')}]${message.content ? ` ${message.content}` : ''}`;
    return `${who}> ${message.content}`;
  });
  return [`--- conversation ${conversationId} ---`, ...lines, '---'].join('\n');
}

export interface ChatOutput {
  /** Text for the user, written as is (no newline added). */
  write(text: string): void;
  /** Problems and failures, one line each. */
  error(line: string): void;
}

/** One chat: the current conversation, and what each input line does to it. */
export class ChatSession {
  private conversationId: string | undefined;

  constructor(
    private readonly backend: ChatBackend,
    private readonly out: ChatOutput,
  ) {}

  get conversation(): string | undefined {
    return this.conversationId;
  }

  /** Resumes `id` or starts a new conversation. False when the chat cannot begin (printed why). */
  async start(id?: string): Promise<boolean> {
    try {
      if (id === undefined) {
        await this.startNew();
      } else {
        const conversation = await this.backend.getConversation(id);
        this.conversationId = conversation.id;
        const title = conversation.title ? ` "${conversation.title}"` : '';
        this.out.write(
          `Resuming conversation ${conversation.id}${title} (${conversation.messageCount} messages). ${COMMANDS_HELP}\n`,
        );
      }
      return true;
    } catch (error) {
      this.report(error);
      return false;
    }
  }

  /** Runs one input line; 'exit' when the chat should end. */
  async handle(line: string, signal?: AbortSignal): Promise<'continue' | 'exit'> {
    const command = parseCommand(line);
    try {
      switch (command.kind) {
        case 'empty':
          break;
        case 'exit':
          return 'exit';
        case 'help':
          this.out.write(`${COMMANDS_HELP}\n`);
          break;
        case 'unknown':
          this.out.error(`Unknown command ${command.name}. ${COMMANDS_HELP}`);
          break;
        case 'new':
          await this.startNew();
          break;
        case 'tools':
          if (this.conversationId) {
            if (!this.backend.tools) this.out.error('This backend cannot list tools.');
            else this.out.write(`${formatTools(await this.backend.tools(this.conversationId))}\n`);
          }
          break;
        case 'history':
          if (this.conversationId) {
            const messages = await this.backend.history(this.conversationId);
            this.out.write(`${formatHistory(this.conversationId, messages)}\n`);
          }
          break;
        case 'message':
          await this.send(command.content, signal);
          break;
        case 'usage':
          this.out.error(command.help);
          break;
        case 'result':
          if (this.conversationId) await this.submitResult(command.toolCallId, command.output, signal);
          break;
        case 'cancel':
          if (this.conversationId) {
            if (!this.backend.cancelPendingTurn) this.out.error('This backend cannot cancel a waiting turn.');
            else {
              await this.backend.cancelPendingTurn(this.conversationId);
              this.out.write('The waiting turn was cancelled; nothing of it was stored.\n');
            }
          }
          break;
      }
    } catch (error) {
      this.report(error);
    }
    return 'continue';
  }

  private async startNew(): Promise<void> {
    const conversation = await this.backend.createConversation();
    this.conversationId = conversation.id;
    this.out.write(`Conversation ${conversation.id} started. ${COMMANDS_HELP}\n`);
  }

  private async send(content: string, signal?: AbortSignal): Promise<void> {
    if (!this.conversationId) await this.startNew();
    await this.printTurn((onDelta, onTool) =>
      this.backend.send(this.conversationId!, content, onDelta, signal, onTool),
    );
  }

  /** Answers one call of the waiting turn; the continued turn prints like a reply. */
  private async submitResult(toolCallId: string, output: unknown, signal?: AbortSignal): Promise<void> {
    const submit = this.backend.submitToolResults?.bind(this.backend);
    if (!submit) {
      this.out.error('This backend cannot post tool results.');
      return;
    }
    const id = this.conversationId!;
    await this.printTurn((onDelta, onTool) => submit(id, [{ toolCallId, output }], onDelta, signal, onTool));
  }

  /** Prints a turn as it arrives: deltas after `assistant> `, tool lines on their own, then usage or the wait. */
  private async printTurn(
    run: (onDelta: (text: string) => void, onTool: (line: string) => void) => Promise<ReplySummary>,
  ): Promise<void> {
    let printed = false;
    try {
      const reply = await run(
        (text) => {
          if (!printed) this.out.write('assistant> ');
          printed = true;
          this.out.write(text);
        },
        (line) => {
          if (printed) this.out.write('\n');
          printed = false;
          this.out.write(`${line}\n`);
        },
      );
      if (reply.requiresAction) {
        if (printed) this.out.write('\n');
        this.out.write(`${formatPending(reply.requiresAction)}\n${formatUsage(reply)}\n`);
        return;
      }
      if (!printed) this.out.write('assistant> ');
      this.out.write(`\n${formatUsage(reply)}\n`);
    } catch (error) {
      if (printed) this.out.write('\n');
      throw error;
    }
  }

  private report(error: unknown): void {
    if (error instanceof ApiProblem && error.status === 404 && !/\/api$/.test(new URL(this.backend.url).pathname)) {
      // The routes are under /api: a bare host answers every one of them with 404.
      this.out.error(`${error.message} Is the /api prefix missing? Try --url ${this.backend.url}/api`);
    } else if (error instanceof ApiProblem || error instanceof ApiUnreachable) this.out.error(error.message);
    else if (error instanceof Error && error.name === 'AbortError') this.out.error('(interrupted)');
    else this.out.error(error instanceof Error ? error.message : String(error));
  }
}

// ---- The console ------------------------------------------------------------------------------------------------

export interface ConsoleIo {
  input: NodeJS.ReadableStream & { isTTY?: boolean };
  output: NodeJS.WritableStream;
  errorOutput: NodeJS.WritableStream;
  env: Record<string, string | undefined>;
}

/** The loop itself; resolves with the process exit code. */
export async function main(argv: string[], io: ConsoleIo): Promise<number> {
  let options: ChatOptions;
  try {
    // As npm start does: the environment first, then local.settings.json `Values` (PORT, and CHAT_* if set there).
    const env = { ...io.env };
    applyLocalSettings(env.LOCAL_SETTINGS_PATH || join(process.cwd(), 'local.settings.json'), env);
    options = parseChatArgs(argv, env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.errorOutput.write(`${error.message}\n\n${USAGE}\n`);
    return 2;
  }
  if (options.help) {
    io.output.write(`${USAGE}\n`);
    return 0;
  }

  const out: ChatOutput = {
    write: (text) => void io.output.write(text),
    error: (line) => void io.errorOutput.write(`${line}\n`),
  };
  const session = new ChatSession(
    new ChatApi({
      url: options.url,
      ...(options.key ? { key: options.key } : {}),
      ...(options.token ? { token: options.token } : {}),
    }),
    out,
  );
  if (!(await session.start(options.conversation))) return 1;

  const interactive = Boolean(io.input.isTTY);
  const lines = readline.createInterface({ input: io.input, output: io.output, terminal: interactive });
  let inFlight: AbortController | undefined;
  // Ctrl-C stops a reply that is streaming; at the prompt it ends the chat.
  lines.on('SIGINT', () => (inFlight ? inFlight.abort() : lines.close()));
  lines.setPrompt('you> ');
  if (interactive) lines.prompt();
  for await (const line of lines) {
    // Piped input is not echoed by a terminal: print it, so the transcript shows both sides.
    if (!interactive && line.trim() !== '') io.output.write(`you> ${line}\n`);
    inFlight = new AbortController();
    const next = await session.handle(line, inFlight.signal);
    inFlight = undefined;
    if (next === 'exit') break;
    if (interactive) lines.prompt();
  }
  lines.close();
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2), {
    input: process.stdin,
    output: process.stdout,
    errorOutput: process.stderr,
    env: process.env,
  }).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      console.error(error instanceof Error ? error.message : String(error));
      process.exitCode = 1;
    },
  );
}

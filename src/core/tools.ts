/**
 * Tools in a turn, without any SDK: which tools a conversation offers the model, and how the calls of one model
 * response are run. Server tools (src/tools/, one module each) run here, all calls of a response at once, each with
 * its own timeout; whatever goes wrong (unknown tool, arguments that are not JSON or do not match the schema, a
 * handler that throws, a timeout) becomes the tool message the model reads, and the turn goes on. Every output is
 * bounded before it reaches the model or storage. Client tools are only named here: the caller's app runs them.
 */
import type { Caller, ChatMessage, ToolCall, ToolDefinition, Tokenizer } from './ports';
import { countMessageTokens } from './tokens/countTokens';
import { countToolDefinitionTokens } from './tokens/countTools';
import { noTelemetry, type Telemetry } from './telemetry';

export interface ToolContext {
  /** Who the turn runs for: a handler may scope what it reads to them. */
  caller: Caller;
  /** Aborted when the tool's time is up or the turn is abandoned: pass it on to every I/O the handler does. */
  signal: AbortSignal;
}

/** What a handler throws (or a parser reports) when the model's arguments do not match the tool's schema. */
export class InvalidToolArgumentsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidToolArgumentsError';
  }
}

/** A server tool as the core sees it; src/tools/defineTool.ts builds one from a zod schema and a handler. */
export interface ServerTool extends ToolDefinition {
  /**
   * Validates `args` (the model's JSON, parsed) and runs the handler. Throws InvalidToolArgumentsError when the
   * arguments do not match; returns a string or any JSON value (sent as JSON).
   */
  invoke(args: unknown, context: ToolContext): Promise<unknown>;
}

export interface ToolSettings {
  /** Tool rounds per turn at most (CHAT_MAX_TOOL_ROUNDS); then one last call without tools. */
  maxRounds: number;
  /** Per call (CHAT_TOOL_TIMEOUT_MS). */
  timeoutMs: number;
  /** Longest tool output sent and stored, in UTF-16 code units (CHAT_TOOL_OUTPUT_CHARS). */
  maxOutputChars: number;
  /** How long a turn waits for client-tool results (CHAT_PENDING_TURN_SECONDS), in ms. */
  pendingTurnMs: number;
}

/**
 * One turn is one entity-group transaction: at most 100 operations, of which the header, the idempotency record and
 * the pending turn's row take three. A round whose calls would push the turn past this many messages is not run.
 */
export const MAX_TURN_MESSAGES = 96;
/**
 * Characters (UTF-16) of all of a turn's texts together, so a paused turn fits one 1 MiB entity and the committed
 * turn the 4 MiB batch: a round that could pass it is not run.
 */
export const MAX_TURN_CHARS = 450_000;

/** The tools one conversation offers the model, and their prompt cost. */
export class ToolSet {
  readonly definitions: ToolDefinition[];
  /** Prompt tokens of `definitions` (the cookbook's method). */
  readonly definitionTokens: number;

  constructor(
    readonly server: ReadonlyMap<string, ServerTool>,
    readonly client: readonly ToolDefinition[],
    tokenizer: Tokenizer,
  ) {
    this.definitions = [
      ...[...server.values()].map(({ name, description, parameters }) => ({ name, description, parameters })),
      ...client.map(({ name, description, parameters }) => ({ name, description, parameters })),
    ];
    this.definitionTokens = countToolDefinitionTokens(this.definitions, tokenizer);
  }

  get size(): number {
    return this.definitions.length;
  }

  isClientTool(name: string): boolean {
    return this.client.some((tool) => tool.name === name);
  }
}

/**
 * The server tools a conversation may use: the deployment's enabled tools (CHAT_TOOLS), narrowed to the subset the
 * conversation chose at create time. A chosen tool the deployment no longer enables is simply not offered.
 */
export function conversationToolSet(
  enabled: ReadonlyMap<string, ServerTool>,
  chosen: readonly string[] | undefined,
  clientTools: readonly ToolDefinition[] | undefined,
  tokenizer: Tokenizer,
): ToolSet {
  const server = new Map<string, ServerTool>();
  for (const [name, tool] of enabled) if (chosen === undefined || chosen.includes(name)) server.set(name, tool);
  return new ToolSet(server, clientTools ?? [], tokenizer);
}

/** A tool message with its count, ready to send and store. */
export type CountedToolMessage = ChatMessage & { role: 'tool'; toolCallId: string; tokens: number };

export interface ToolCallReport {
  toolCallId: string;
  name: string;
  /** What the model is sent (bounded). */
  output: string;
  /** Set when the tool did not produce an output: `unknown_tool`, `invalid_arguments`, `failed`, `timed_out`. */
  error?: 'unknown_tool' | 'invalid_arguments' | 'failed' | 'timed_out';
}

/**
 * Runs the server-side calls of one model response in parallel, each bounded by `timeoutMs`, and answers in call
 * order. Never throws for a tool's sake: an aborted turn (`signal`) is the only way out with an error.
 */
export async function runServerCalls(
  calls: readonly ToolCall[],
  tools: ToolSet,
  context: {
    caller: Caller;
    signal?: AbortSignal;
    settings: ToolSettings;
    tokenizer: Tokenizer;
    telemetry?: Telemetry;
  },
  onResult?: (report: ToolCallReport) => void,
): Promise<CountedToolMessage[]> {
  const telemetry = context.telemetry ?? noTelemetry;
  const reports = await Promise.all(
    calls.map(async (call) => {
      const known = tools.server.has(call.name);
      // The GenAI conventions' execute_tool span; a name the model made up stays out of the span name.
      const span = telemetry.startSpan(known ? `execute_tool ${call.name}` : 'execute_tool', {
        attributes: {
          'gen_ai.operation.name': 'execute_tool',
          'gen_ai.tool.type': 'function',
          'gen_ai.tool.call.id': call.id,
          ...(known ? { 'gen_ai.tool.name': call.name } : {}),
        },
      });
      try {
        const report = await span.run(() => runOne(call, tools, context));
        if (report.error) span.setAttributes({ 'error.type': report.error });
        onResult?.(report);
        return report;
      } catch (error) {
        span.fail(error);
        throw error;
      } finally {
        span.end();
      }
    }),
  );
  context.signal?.throwIfAborted();
  return reports.map((report) => toolMessage(report.toolCallId, report.output, context.tokenizer));
}

async function runOne(
  call: ToolCall,
  tools: ToolSet,
  context: { caller: Caller; signal?: AbortSignal; settings: ToolSettings },
): Promise<ToolCallReport> {
  const { settings } = context;
  const fail = (error: NonNullable<ToolCallReport['error']>, message: string): ToolCallReport => ({
    toolCallId: call.id,
    name: call.name,
    output: boundToolOutput(JSON.stringify({ error, message }), settings.maxOutputChars),
    error,
  });
  const tool = tools.server.get(call.name);
  if (!tool) {
    return fail('unknown_tool', `There is no tool named ${JSON.stringify(call.name)}. Use only the tools offered.`);
  }
  let args: unknown;
  try {
    args = call.arguments.trim() === '' ? {} : JSON.parse(call.arguments);
  } catch (error) {
    return fail('invalid_arguments', `The arguments are not valid JSON: ${messageOf(error)}`);
  }

  const timeout = new AbortController();
  const timer = setTimeout(
    () => timeout.abort(new ToolTimeout(`${call.name} did not finish within ${settings.timeoutMs} ms`)),
    settings.timeoutMs,
  );
  const signal = context.signal ? AbortSignal.any([timeout.signal, context.signal]) : timeout.signal;
  // A handler that ignores its signal still loses the race: its late answer is dropped.
  const aborted = new Promise<never>((_, reject) => {
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
  try {
    const output = await Promise.race([tool.invoke(args, { caller: context.caller, signal }), aborted]);
    return {
      toolCallId: call.id,
      name: call.name,
      output: boundToolOutput(
        typeof output === 'string' ? output : (JSON.stringify(output) ?? 'null'),
        settings.maxOutputChars,
      ),
    };
  } catch (error) {
    if (error instanceof InvalidToolArgumentsError) return fail('invalid_arguments', error.message);
    if (timeout.signal.aborted) {
      return fail('timed_out', `The tool did not finish within ${settings.timeoutMs} ms and was stopped.`);
    }
    if (context.signal?.aborted) throw context.signal.reason;
    return fail('failed', `The tool failed: ${messageOf(error)}`);
  } finally {
    clearTimeout(timer);
    aborted.catch(() => {});
  }
}

class ToolTimeout extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TimeoutError';
  }
}

function messageOf(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).slice(0, 1_000);
}

/** A tool message answering `toolCallId`, counted. */
export function toolMessage(toolCallId: string, content: string, tokenizer: Tokenizer): CountedToolMessage {
  const message = { role: 'tool' as const, content, toolCallId };
  return { ...message, tokens: countMessageTokens(message, tokenizer) };
}

/**
 * Bounds a tool output to `maxChars` UTF-16 code units (one fewer when the cut would split a surrogate pair). A longer
 * output keeps its beginning and ends with a note saying how much was left out, so the model knows it saw a part:
 * `…\n[tool output truncated: first N of M characters]`. The note is inside the bound.
 */
export function boundToolOutput(output: string, maxChars: number): string {
  if (output.length <= maxChars) return output;
  const note = (kept: number) => `\n[tool output truncated: first ${kept} of ${output.length} characters]`;
  let kept = Math.max(0, maxChars - note(maxChars).length);
  while (kept + 1 + note(kept + 1).length <= maxChars) kept += 1;
  const code = output.charCodeAt(kept - 1);
  if (kept > 0 && code >= 0xd800 && code <= 0xdbff) kept -= 1;
  return `${output.slice(0, kept)}${note(kept)}`;
}

/** Characters a turn's messages hold (content, arguments, ids): what MAX_TURN_CHARS bounds. */
export function turnChars(messages: readonly ChatMessage[]): number {
  let chars = 0;
  for (const message of messages) {
    chars += message.content.length + (message.name?.length ?? 0) + (message.toolCallId?.length ?? 0);
    for (const call of message.toolCalls ?? []) chars += call.id.length + call.name.length + call.arguments.length;
  }
  return chars;
}

/**
 * Whether a round of `calls` may run: after it the turn must still fit one transaction with room for its final
 * reply (one more message of up to `replyChars`), counting every call's output at the bound.
 */
export function roundFits(
  turn: readonly ChatMessage[],
  assistant: ChatMessage,
  settings: ToolSettings,
  replyChars: number,
): boolean {
  const calls = assistant.toolCalls?.length ?? 0;
  const messages = turn.length + 1 + calls + 1;
  const chars = turnChars(turn) + turnChars([assistant]) + calls * settings.maxOutputChars + replyChars;
  return messages <= MAX_TURN_MESSAGES && chars <= MAX_TURN_CHARS;
}

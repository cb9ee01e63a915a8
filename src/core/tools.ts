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
 * A paused turn is kept as JSON in one entity (1 MiB, strings stored as UTF-16): its messages' JSON may take this
 * many UTF-16 units, which leaves room for the row's other properties. Measured as stored: escapes included.
 */
export const MAX_TURN_JSON_UNITS = 450_000;
/** The committed turn's transaction: 4 MiB of JSON (UTF-8), less room for the header, idempotency record, overhead. */
const TURN_BATCH_BYTES = 4 * 1024 * 1024 - 64 * 1024;
/** The most JSON bytes a reply token can take (see MAX_JSON_BYTES_PER_TOKEN in src/adapters/entitySize.ts). */
const REPLY_JSON_BYTES_PER_TOKEN = 128;
/** One message row holds this much of a reply; a longer reply takes continuation rows (more operations). */
const ROW_BYTES = 900 * 1024;

/** What a turn's messages take as stored JSON: UTF-16 units (the paused-turn row) and UTF-8 bytes (the batch). */
export function turnJsonSize(messages: readonly ChatMessage[]): { units: number; bytes: number } {
  const json = JSON.stringify(
    messages.map(({ role, content, name, toolCallId, toolCalls }) => ({ role, content, name, toolCallId, toolCalls })),
  );
  return { units: json.length, bytes: utf8Length(json) };
}

/**
 * Whether a turn of these messages (the user's first) and a final reply of up to `replyTokens` is sure to be stored:
 * the paused turn in its row, the committed turn in one transaction (operations and bytes).
 */
export function turnStorageFits(
  size: { units: number; bytes: number; messages: number },
  replyTokens: number,
): boolean {
  const replyBytes = replyTokens * REPLY_JSON_BYTES_PER_TOKEN;
  const replyRows = Math.max(1, Math.ceil(replyBytes / ROW_BYTES));
  return (
    size.messages + replyRows <= MAX_TURN_MESSAGES &&
    size.units <= MAX_TURN_JSON_UNITS &&
    size.bytes + replyBytes <= TURN_BATCH_BYTES
  );
}

function utf8Length(text: string): number {
  let bytes = 0;
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (code < 0x80) bytes += 1;
    else if (code < 0x800) bytes += 2;
    else if (code >= 0xd800 && code <= 0xdbff && index + 1 < text.length) {
      const next = text.charCodeAt(index + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        index++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

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
 * conversation chose at create time. A chosen tool the deployment no longer enables is simply not offered. A server
 * tool enabled after the conversation declared a client tool of the same name is not offered to it either: the
 * conversation's client tool wins (its app expects those calls), and the model never sees one name twice.
 */
export function conversationToolSet(
  enabled: ReadonlyMap<string, ServerTool>,
  chosen: readonly string[] | undefined,
  clientTools: readonly ToolDefinition[] | undefined,
  tokenizer: Tokenizer,
): ToolSet {
  const server = new Map<string, ServerTool>();
  for (const [name, tool] of offeredServerTools(enabled, chosen, clientTools)) server.set(name, tool);
  return new ToolSet(server, clientTools ?? [], tokenizer);
}

/** The enabled server tools the conversation chose, less any its client tools shadow (see conversationToolSet). */
export function offeredServerTools<T>(
  enabled: ReadonlyMap<string, T>,
  chosen: readonly string[] | undefined,
  clientTools: readonly ToolDefinition[] | undefined,
): [string, T][] {
  const shadowed = new Set((clientTools ?? []).map((tool) => tool.name));
  return [...enabled].filter(([name]) => (chosen === undefined || chosen.includes(name)) && !shadowed.has(name));
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
 * order. Every output is bounded to `maxOutputChars`; when `fits` says the round's results would not fit (the turn's
 * storage, the next call's window), the longest are cut further, each keeping its beginning and the truncation note.
 * Results are reported once final, so what a stream shows is what is stored. Never throws for a tool's sake: an
 * aborted turn (`signal`) is the only way out with an error.
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
  fits?: (results: readonly CountedToolMessage[]) => boolean,
): Promise<CountedToolMessage[]> {
  const telemetry = context.telemetry ?? noTelemetry;
  const { settings, tokenizer } = context;
  const raw = await Promise.all(
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
  const results = toolResults(raw, settings.maxOutputChars, tokenizer, fits);
  for (const [index, report] of raw.entries()) onResult?.({ ...report, output: results[index]!.content });
  return results;
}

/**
 * The tool messages answering `outputs`, each bounded to `maxChars`; while `fits` says they do not fit, the longest
 * is halved (from its whole output, so its note says how much of it was kept), down to the note alone.
 */
export function toolResults(
  outputs: readonly { toolCallId: string; output: string }[],
  maxChars: number,
  tokenizer: Tokenizer,
  fits?: (results: readonly CountedToolMessage[]) => boolean,
): CountedToolMessage[] {
  const results = outputs.map(({ toolCallId, output }) =>
    toolMessage(toolCallId, boundToolOutput(output, maxChars), tokenizer),
  );
  while (fits && !fits(results)) {
    let longest = -1;
    let shorter = '';
    for (const [index, result] of results.entries()) {
      if (longest >= 0 && result.content.length <= results[longest]!.content.length) continue;
      const cut = boundToolOutput(outputs[index]!.output, Math.floor(result.content.length / 2));
      if (cut.length < result.content.length) {
        longest = index;
        shorter = cut;
      }
    }
    if (longest < 0) break;
    results[longest] = toolMessage(results[longest]!.toolCallId, shorter, tokenizer);
  }
  return results;
}

/** One call, its output unbounded (the caller bounds it). */
async function runOne(
  call: ToolCall,
  tools: ToolSet,
  context: { caller: Caller; signal?: AbortSignal; settings: ToolSettings },
): Promise<ToolCallReport> {
  const { settings } = context;
  const fail = (error: NonNullable<ToolCallReport['error']>, message: string): ToolCallReport => ({
    toolCallId: call.id,
    name: call.name,
    output: JSON.stringify({ error, message }),
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
      output: typeof output === 'string' ? output : (JSON.stringify(output) ?? 'null'),
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

/**
 * Whether a round of `assistant`'s calls may run: after it the turn must still be sure to be stored with its final
 * reply, counting every call's output at the bound (the outputs are cut further if their escapes need it).
 */
export function roundFits(
  turn: readonly ChatMessage[],
  assistant: ChatMessage,
  settings: ToolSettings,
  replyTokens: number,
): boolean {
  const calls = assistant.toolCalls?.length ?? 0;
  const size = turnJsonSize([...turn, assistant]);
  // Each result: its output and about 60 units of JSON around it ({"role":"tool","content":"","toolCallId":"…"}).
  const results = calls * (settings.maxOutputChars + 100);
  return turnStorageFits(
    { units: size.units + results, bytes: size.bytes + results, messages: turn.length + 1 + calls },
    replyTokens,
  );
}

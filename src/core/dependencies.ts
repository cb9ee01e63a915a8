import type { ModelDeployments } from './failover';
import type { Telemetry } from './telemetry';
import type { ChatModel, Clock, ConversationStore, IdGenerator, Tokenizer, UsageLimiter } from './ports';
import type { SummarySettings } from './summaries';
import type { ServerTool, ToolSettings } from './tools';
import type { TrimPolicy } from './trimming';

/** Settings the core needs, resolved from configuration and the model's family once at startup. */
export interface ChatSettings {
  defaultSystemMessage: string;
  /** The context window in tokens (CHAT_TOKEN_LIMIT or the model family's default). */
  tokenLimit: number;
  maxResponseTokens: number;
  trimPolicy: TrimPolicy;
  maxTurns: number;
  /** With trimPolicy `stable-prefix`: a trim leaves the prompt at most this share of the budget. */
  trimLowWater: number;
  /** CHAT_HISTORY_TOKEN_LIMIT: the most prompt tokens sent with history, below the window (cost). */
  historyTokenLimit?: number;
  /** CHAT_SUMMARY / CHAT_SUMMARY_MAX_TOKENS. */
  summary: SummarySettings;
  temperature?: number;
  maxExamples: number;
  turnAttempts: number;
  idempotencyLeaseMs: number;
  /** 0 turns the limit off. */
  maxConversationsPerCaller: number;
  /** Tool rounds, timeouts, output bound, pending-turn lifetime; DEFAULT_TOOL_SETTINGS when absent. */
  tools?: ToolSettings;
}

export const DEFAULT_TOOL_SETTINGS: ToolSettings = Object.freeze({
  maxRounds: 5,
  timeoutMs: 10_000,
  maxOutputChars: 20_000,
  pendingTurnMs: 600_000,
});

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface ChatDependencies {
  store: ConversationStore;
  /** The first (or only) deployment's model; turns go through `deployments` when it is set. */
  model: ChatModel;
  /** The first deployment's tokenizer: conversations' prologues are counted with it. */
  tokenizer: Tokenizer;
  /** The model deployments with failover (AZURE_OPENAI_DEPLOYMENTS); unset: `model` alone. */
  deployments?: ModelDeployments;
  /** Spans and metrics of each turn; unset: none. */
  telemetry?: Telemetry;
  clock: Clock;
  ids: IdGenerator;
  limiter: UsageLimiter;
  settings: ChatSettings;
  log: Logger;
  /** The server tools this deployment enables (CHAT_TOOLS), by name; none when absent. */
  serverTools?: ReadonlyMap<string, ServerTool>;
}

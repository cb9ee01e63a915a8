import type { ChatModel, Clock, ConversationStore, IdGenerator, Tokenizer, UsageLimiter } from './ports';
import type { TrimPolicy } from './trimming';

/** Settings the core needs, resolved from configuration and the model's family once at startup. */
export interface ChatSettings {
  defaultSystemMessage: string;
  /** The context window in tokens (CHAT_TOKEN_LIMIT or the model family's default). */
  tokenLimit: number;
  maxResponseTokens: number;
  trimPolicy: TrimPolicy;
  maxTurns: number;
  temperature?: number;
  maxExamples: number;
  turnAttempts: number;
  idempotencyLeaseMs: number;
  /** 0 turns the limit off. */
  maxConversationsPerCaller: number;
}

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface ChatDependencies {
  store: ConversationStore;
  model: ChatModel;
  tokenizer: Tokenizer;
  clock: Clock;
  ids: IdGenerator;
  limiter: UsageLimiter;
  settings: ChatSettings;
  log: Logger;
}

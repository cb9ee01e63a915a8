/**
 * Builds the app's clients once per process and wires the adapters into the core. Handlers ask for
 * `getServices()`; tests and the benchmarks build their own with `buildServices(config, overrides)`.
 */
import { randomUUID } from 'node:crypto';
import type { TokenCredential } from '@azure/identity';
import { loadConfig, ConfigError, type Config } from './config';
import { Conversations } from './core/conversations';
import type { ChatDependencies, ChatSettings, Logger } from './core/dependencies';
import {
  type ChatModel,
  type Clock,
  type ConversationStore,
  type IdGenerator,
  type Tokenizer,
  type UsageLimiter,
} from './core/ports';
import { ConfigurationInvalidError } from './core/errors';
import { resolveModel } from './core/tokens/modelInfo';
import { TurnRunner } from './core/turn';
import { OpenAiChatModel } from './adapters/openAiChatModel';
import { createTableConversationStore } from './adapters/tableConversationStore';
import { getTokenizer } from './adapters/tiktokenTokenizer';
import { createUsageLimiter } from './adapters/tableUsageLimiter';
import { createCallerResolver } from './http/auth/createCallerResolver';
import type { CallerResolver } from './http/caller';
import { createConversationSchema, sendMessageSchema, toolResultsSchema } from './http/schemas';
import { createServerTools } from './tools';

export const COGNITIVE_SERVICES_SCOPE = 'https://cognitiveservices.azure.com/.default';

export interface AppServices {
  config: Readonly<Config>;
  settings: ChatSettings;
  store: ConversationStore;
  conversations: Conversations;
  turns: TurnRunner;
  callers: CallerResolver;
  schemas: {
    createConversation: ReturnType<typeof createConversationSchema>;
    sendMessage: ReturnType<typeof sendMessageSchema>;
    toolResults: ReturnType<typeof toolResultsSchema>;
  };
  log: Logger;
}

export interface ServiceOverrides {
  store?: ConversationStore;
  model?: ChatModel;
  tokenizer?: Tokenizer;
  clock?: Clock;
  ids?: IdGenerator;
  limiter?: UsageLimiter;
  callers?: CallerResolver;
  credential?: TokenCredential;
  log?: Logger;
}

const consoleLogger: Logger = {
  info: (message) => console.info(message),
  warn: (message) => console.warn(message),
  error: (message) => console.error(message),
};

let config: Readonly<Config> | undefined;

/**
 * The validated configuration, for serving a request. Bad settings throw ConfigurationInvalidError, which answers
 * 503 configuration_invalid naming the settings (never their values); the full message is in the start-up error.
 */
export function getConfig(): Readonly<Config> {
  try {
    config ??= loadConfig(process.env);
    return config;
  } catch (error) {
    throw asServingError(error);
  }
}

function asServingError(error: unknown): unknown {
  return error instanceof ConfigError ? new ConfigurationInvalidError(error.settings, error) : error;
}

/** Resolves the model family's encoding and context window once, and checks the budget leaves room for a turn. */
export function resolveChatSettings(
  config: Readonly<Config>,
  log: Logger,
): { settings: ChatSettings; encoding: Tokenizer['encoding']; reasoning: boolean } {
  const model = resolveModel(config.model.modelName, (message) => log.warn(message));
  const tokenLimit = config.chat.tokenLimit ?? model.contextWindow;
  if (config.chat.maxResponseTokens >= tokenLimit) {
    throw new ConfigError([
      `CHAT_MAX_RESPONSE_TOKENS: ${config.chat.maxResponseTokens} leaves no room for the prompt in a ${tokenLimit}-token context window (${config.chat.tokenLimit ? 'CHAT_TOKEN_LIMIT' : config.model.modelName})`,
    ]);
  }
  return {
    encoding: model.encoding,
    reasoning: model.reasoning,
    settings: {
      defaultSystemMessage: config.chat.defaultSystemMessage,
      tokenLimit,
      maxResponseTokens: config.chat.maxResponseTokens,
      trimPolicy: config.chat.trimPolicy,
      maxTurns: config.chat.maxTurns,
      trimLowWater: config.chat.trimLowWater,
      ...(config.chat.historyTokenLimit !== undefined ? { historyTokenLimit: config.chat.historyTokenLimit } : {}),
      summary: config.chat.summary,
      ...(config.chat.temperature !== undefined ? { temperature: config.chat.temperature } : {}),
      maxExamples: config.chat.maxExamples,
      turnAttempts: config.chat.turnAttempts,
      idempotencyLeaseMs: config.chat.idempotencyLeaseMs,
      maxConversationsPerCaller: config.limits.conversationsPerCaller,
      tools: {
        maxRounds: config.tools.maxRounds,
        timeoutMs: config.tools.timeoutMs,
        maxOutputChars: config.tools.maxOutputChars,
        pendingTurnMs: config.tools.pendingTurnMs,
      },
    },
  };
}

export async function buildServices(config: Readonly<Config>, overrides: ServiceOverrides = {}): Promise<AppServices> {
  const log = overrides.log ?? consoleLogger;
  const { settings, encoding, reasoning } = resolveChatSettings(config, log);
  // Loaded and created only when something authenticates with Entra ID: key-based local runs never touch identity
  // endpoints, and skip loading @azure/identity at cold start.
  const lookup = config.tools.enabled.includes('http_lookup') ? config.tools.httpLookup : undefined;
  const needsIdentity =
    !config.storage.connectionString || !config.model.apiKey || (lookup !== undefined && !lookup.apiKey);
  const identity = needsIdentity ? await import('@azure/identity') : undefined;
  let credential = overrides.credential;
  const getCredential = (): TokenCredential => {
    if (credential) return credential;
    if (!identity) throw new Error('A credential was needed although every client has a key.');
    credential = new identity.DefaultAzureCredential(
      config.model.clientId ? { managedIdentityClientId: config.model.clientId } : {},
    );
    return credential;
  };

  const store =
    overrides.store ??
    (await createTableConversationStore({
      tablePrefix: config.storage.tablePrefix,
      historyCacheBytes: config.storage.historyCacheBytes,
      ...(config.storage.connectionString
        ? { connectionString: config.storage.connectionString }
        : { endpoint: config.storage.endpoint, credential: getCredential() }),
    }));
  const model =
    overrides.model ??
    new OpenAiChatModel({
      endpoint: config.model.endpoint,
      deployment: config.model.deployment,
      reasoning,
      apiKey:
        config.model.apiKey ??
        (identity ?? (await import('@azure/identity'))).getBearerTokenProvider(
          getCredential(),
          COGNITIVE_SERVICES_SCOPE,
        ),
      timeoutMs: config.model.timeoutMs,
      maxRetries: config.model.maxRetries,
    });
  const clock = overrides.clock ?? { now: () => new Date() };
  const serverTools = createServerTools({
    enabled: config.tools.enabled,
    clock,
    ...(lookup
      ? {
          httpLookup: {
            baseUrl: lookup.baseUrl,
            ...(lookup.description ? { description: lookup.description } : {}),
            ...(lookup.apiKey
              ? { apiKey: lookup.apiKey, apiKeyHeader: lookup.apiKeyHeader }
              : {
                  getToken: (identity ?? (await import('@azure/identity'))).getBearerTokenProvider(
                    getCredential(),
                    lookup.scope ?? '',
                  ),
                }),
          },
        }
      : {}),
  });
  const deps: ChatDependencies = {
    store,
    model,
    tokenizer: overrides.tokenizer ?? getTokenizer(encoding),
    clock,
    ids: overrides.ids ?? { newConversationId: () => randomUUID() },
    limiter: overrides.limiter ?? createUsageLimiter(config, getCredential),
    settings,
    log,
    serverTools,
  };
  const limits = { maxMessageChars: config.chat.maxMessageChars, maxExamples: config.chat.maxExamples };
  return {
    config,
    settings,
    store,
    conversations: new Conversations(deps),
    turns: new TurnRunner(deps),
    callers: overrides.callers ?? createCallerResolver(config),
    schemas: {
      createConversation: createConversationSchema(limits),
      sendMessage: sendMessageSchema(limits),
      toolResults: toolResultsSchema(limits),
    },
    log,
  };
}

/**
 * Everything about the settings that can be checked without touching the network: the schema, and the reply
 * reserve against the model's context window. Run as the worker loads the app, so a bad setting fails at start.
 */
export function validateStartupSettings(): void {
  resolveChatSettings(loadConfig(process.env), { info: () => {}, warn: () => {}, error: () => {} });
}

let services: Promise<AppServices> | undefined;

/** The process-wide services, built on first use; a failed build (storage down at cold start) is retried next call. */
export function getServices(): Promise<AppServices> {
  services ??= Promise.resolve()
    .then(() => buildServices(getConfig()))
    .catch((error: unknown) => {
      services = undefined;
      throw asServingError(error);
    });
  return services;
}

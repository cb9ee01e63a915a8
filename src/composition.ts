/**
 * Builds the app's clients once per process and wires the adapters into the core. Handlers ask for
 * `getServices()`; tests and the benchmarks build their own with `buildServices(config, overrides)`.
 */
import { randomUUID } from 'node:crypto';
import type { TokenCredential } from '@azure/identity';
import { loadConfig, ConfigError, type Config, type DeploymentConfig } from './config';
import { Conversations } from './core/conversations';
import type { ChatDependencies, ChatSettings, Logger } from './core/dependencies';
import {
  type ChatModel,
  type Clock,
  type ConversationStore,
  type IdGenerator,
  type Tokenizer,
  type TurnJobQueue,
  type TurnJobStore,
  type UsageLimiter,
} from './core/ports';
import { ConfigurationInvalidError } from './core/errors';
import { noTelemetry } from './core/telemetry';
import { ModelDeployments, type ModelDeployment } from './core/failover';
import { resolveModel } from './core/tokens/modelInfo';
import { TurnRunner } from './core/turn';
import { TurnJobs } from './core/turnJobs';
import { GithubReplySender } from './adapters/githubReplySender';
import { createQueueServiceClient, StorageTurnQueue } from './adapters/storageTurnQueue';
import { createTableTurnJobStore } from './adapters/tableTurnJobStore';
import { WebhookCallbackSender } from './adapters/webhookCallbackSender';
import { OpenAiChatModel } from './adapters/openAiChatModel';
import { createTableConversationStore } from './adapters/tableConversationStore';
import { getTokenizer } from './adapters/tiktokenTokenizer';
import { createUsageLimiter } from './adapters/tableUsageLimiter';
import { startTelemetry, type AppTelemetry } from './adapters/telemetry';
import { traceStore } from './core/tracedStore';
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
  /** Queued turns; undefined when the app has no queue connection (AzureWebJobsStorage). */
  jobs?: TurnJobs;
  callers: CallerResolver;
  schemas: {
    createConversation: ReturnType<typeof createConversationSchema>;
    sendMessage: ReturnType<typeof sendMessageSchema>;
    toolResults: ReturnType<typeof toolResultsSchema>;
  };
  log: Logger;
  /** Runs a function invocation inside the host's trace (a no-op with telemetry off). */
  inInvocationContext: AppTelemetry['inInvocationContext'];
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
  jobStore?: TurnJobStore;
  queue?: TurnJobQueue;
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

/** A deployment with its model family's encoding, window and API shape. */
export interface ResolvedDeployment {
  config: DeploymentConfig;
  encoding: Tokenizer['encoding'];
  reasoning: boolean;
  tokenLimit: number;
}

/**
 * Resolves each deployment's model family (encoding, context window) once, and checks the budget leaves room for a
 * turn in every one. The settings' tokenLimit is the first deployment's.
 */
export function resolveChatSettings(
  config: Readonly<Config>,
  log: Logger,
): { settings: ChatSettings; encoding: Tokenizer['encoding']; reasoning: boolean; deployments: ResolvedDeployment[] } {
  const deployments = config.model.deployments.map((deployment): ResolvedDeployment => {
    const model = resolveModel(deployment.modelName, (message) => log.warn(message));
    const tokenLimit = config.chat.tokenLimit ?? model.contextWindow;
    if (config.chat.maxResponseTokens >= tokenLimit) {
      throw new ConfigError([
        `CHAT_MAX_RESPONSE_TOKENS: ${config.chat.maxResponseTokens} leaves no room for the prompt in a ${tokenLimit}-token context window (${config.chat.tokenLimit ? 'CHAT_TOKEN_LIMIT' : deployment.modelName})`,
      ]);
    }
    return { config: deployment, encoding: model.encoding, reasoning: model.reasoning, tokenLimit };
  });
  const primary = deployments[0] as ResolvedDeployment;
  const tokenLimit = primary.tokenLimit;
  return {
    encoding: primary.encoding,
    reasoning: primary.reasoning,
    deployments,
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
  const { settings, deployments: resolved } = resolveChatSettings(config, log);
  // Loaded and created only when something authenticates with Entra ID: key-based local runs never touch identity
  // endpoints, and skip loading @azure/identity at cold start.
  const queueOverIdentity = !config.queue.connectionString && Boolean(config.queue.serviceUri);
  const lookup = config.tools.enabled.includes('http_lookup') ? config.tools.httpLookup : undefined;
  const needsIdentity =
    !config.storage.connectionString ||
    Boolean(config.telemetry.connectionString) ||
    config.model.deployments.some((deployment) => !(deployment.apiKey ?? config.model.apiKey)) ||
    queueOverIdentity ||
    (lookup !== undefined && !lookup.apiKey);
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

  // First, so the SDK is registered before any client is built.
  const { telemetry, inInvocationContext } = await startTelemetry(config, async () => getCredential(), log);
  const untracedStore =
    overrides.store ??
    (await createTableConversationStore({
      tablePrefix: config.storage.tablePrefix,
      historyCacheBytes: config.storage.historyCacheBytes,
      log,
      ...(config.storage.connectionString
        ? { connectionString: config.storage.connectionString }
        : { endpoint: config.storage.endpoint, credential: getCredential() }),
    }));
  const store = telemetry === noTelemetry ? untracedStore : traceStore(untracedStore, telemetry);
  const clock = overrides.clock ?? { now: () => new Date() };
  // One token provider for every deployment reached with the managed identity: one token cache.
  let tokenProvider: (() => Promise<string>) | undefined;
  const bearerToken = async () =>
    (tokenProvider ??= (identity ?? (await import('@azure/identity'))).getBearerTokenProvider(
      getCredential(),
      COGNITIVE_SERVICES_SCOPE,
    ));
  const failover = resolved.length > 1;
  const deployments: ModelDeployment[] = [];
  for (const deployment of overrides.model ? resolved.slice(0, 1) : resolved) {
    const key = deployment.config.apiKey ?? config.model.apiKey;
    deployments.push({
      name: deployment.config.name,
      modelName: deployment.config.modelName,
      tokenizer: overrides.tokenizer ?? getTokenizer(deployment.encoding),
      tokenLimit: deployment.tokenLimit,
      serverAddress: new URL(deployment.config.endpoint).host,
      model:
        overrides.model ??
        new OpenAiChatModel({
          endpoint: deployment.config.endpoint,
          deployment: deployment.config.deployment,
          reasoning: deployment.reasoning,
          apiKey: key ?? (await bearerToken()),
          timeoutMs: config.model.timeoutMs,
          // With failover the next deployment is the retry: a 429 moves on at once instead of waiting here.
          maxRetries: failover ? 0 : config.model.maxRetries,
        }),
    });
  }
  const serverTools = createServerTools({
    enabled: config.tools.enabled,
    clock,
    log,
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
  const primary = deployments[0] as ModelDeployment;
  const deps: ChatDependencies = {
    store,
    model: primary.model,
    tokenizer: primary.tokenizer,
    deployments: new ModelDeployments(deployments, clock, log, {
      turnTimeoutMs: config.model.timeoutMs,
      attemptTimeoutMs: Math.min(config.model.attemptTimeoutMs, config.model.timeoutMs),
      cooldownMs: config.model.failoverCooldownMs,
      telemetry,
    }),
    telemetry,
    clock,
    ids: overrides.ids ?? { newConversationId: () => randomUUID() },
    limiter: overrides.limiter ?? createUsageLimiter(config, getCredential),
    settings,
    log,
    serverTools,
  };
  const turns = new TurnRunner(deps);
  const jobs = await buildTurnJobs(config, deps, turns, overrides, {
    tables: getCredential,
    // AzureWebJobsStorage__clientId names the identity of the host's storage; the same one, in the templates.
    queue: () =>
      identity && config.queue.clientId && config.queue.clientId !== config.model.clientId
        ? new identity.DefaultAzureCredential({ managedIdentityClientId: config.queue.clientId })
        : getCredential(),
  });
  const limits = { maxMessageChars: config.chat.maxMessageChars, maxExamples: config.chat.maxExamples };
  return {
    config,
    settings,
    store,
    conversations: new Conversations(deps),
    turns,
    ...(jobs ? { jobs } : {}),
    callers: overrides.callers ?? createCallerResolver(config),
    schemas: {
      createConversation: createConversationSchema(limits),
      sendMessage: sendMessageSchema(limits),
      toolResults: toolResultsSchema(limits),
    },
    log,
    inInvocationContext,
  };
}

/** The queue, the job records and the reply senders; none without a queue connection. */
async function buildTurnJobs(
  config: Readonly<Config>,
  deps: ChatDependencies,
  turns: TurnRunner,
  overrides: ServiceOverrides,
  credentials: { tables: () => TokenCredential; queue: () => TokenCredential },
): Promise<TurnJobs | undefined> {
  const { connectionString, serviceUri } = config.queue;
  if (!overrides.queue && !connectionString && !serviceUri) return undefined;
  const queue =
    overrides.queue ??
    new StorageTurnQueue(() =>
      createQueueServiceClient(
        connectionString ? { connectionString } : { serviceUri, credential: credentials.queue() },
      ),
    );
  const jobStore =
    overrides.jobStore ??
    (await createTableTurnJobStore({
      tablePrefix: config.storage.tablePrefix,
      ...(config.storage.connectionString
        ? { connectionString: config.storage.connectionString }
        : { endpoint: config.storage.endpoint, credential: credentials.tables() }),
    }));
  const { callback, githubApp } = config.webhooks;
  return new TurnJobs({
    jobs: jobStore,
    queue,
    turns,
    store: deps.store,
    senders: {
      ...(callback ? { webhook: new WebhookCallbackSender(callback) } : {}),
      ...(githubApp ? { github: new GithubReplySender(githubApp) } : {}),
    },
    clock: deps.clock,
    log: deps.log,
    settings: {
      maxRuns: config.queue.maxRuns,
      deliveryAttempts: config.webhooks.deliveryAttempts,
      deliveryBackoffSeconds: config.webhooks.deliveryBackoffSeconds,
    },
  });
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

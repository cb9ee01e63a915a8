/**
 * One schema over the environment, validated once at startup and frozen. A bad setting fails with a
 * message naming it. `SETTINGS` documents every setting the app reads; the README table, the sample
 * local settings and the offline infra check all derive from it.
 */
import * as z from 'zod';
import { maxStorableReplyTokens } from './adapters/entitySize';
import { TRIM_POLICIES, type TrimPolicy } from './core/trimming';
import { SERVER_TOOL_NAMES, type ServerToolName } from './tools/catalog';

export interface SettingInfo {
  name: string;
  description: string;
  /** Shown in the README; `undefined` means no default (optional or required). */
  default?: string;
  example: string;
  /** Must be set by the infrastructure templates for the app to run on Azure. */
  requiredOnAzure?: boolean;
  /** Value written to local.settings.sample.json. */
  local?: string;
}

export const SETTINGS: readonly SettingInfo[] = [
  // Storage
  {
    name: 'TABLES_CONNECTION_STRING',
    description: 'Table Storage connection string (local runs, Azurite). Either this or TABLES_ENDPOINT.',
    example: 'UseDevelopmentStorage=true',
    local: 'UseDevelopmentStorage=true',
  },
  {
    name: 'TABLES_ENDPOINT',
    description:
      'Table Storage endpoint, authenticated with the managed identity. Either this or TABLES_CONNECTION_STRING.',
    example: 'https://mystorage.table.core.windows.net',
    requiredOnAzure: true,
  },
  { name: 'TABLES_PREFIX', description: 'Prefix for table names (letters and digits).', default: '', example: 'dev' },
  {
    name: 'CHAT_HISTORY_CACHE_MB',
    description:
      'Memory per instance for the messages of recent conversations, so a turn reads only the header and new messages; 0 turns it off.',
    default: '64',
    example: '256',
  },
  // Model
  {
    name: 'AZURE_OPENAI_ENDPOINT',
    description: 'Azure OpenAI resource endpoint; the app calls {endpoint}/openai/v1/chat/completions.',
    example: 'https://myopenai.openai.azure.com',
    requiredOnAzure: true,
    // Empty locally: `npm start` then runs the local model.
    local: '',
  },
  {
    name: 'AZURE_OPENAI_DEPLOYMENT',
    description: 'Deployment name, sent as `model`.',
    example: 'chat',
    requiredOnAzure: true,
    local: '',
  },
  {
    name: 'AZURE_OPENAI_MODEL',
    description: 'Model name behind the deployment: picks the tokenizer and the context window.',
    default: 'AZURE_OPENAI_DEPLOYMENT',
    example: 'gpt-4o-mini',
    requiredOnAzure: true,
    local: 'gpt-4o-mini',
  },
  {
    name: 'AZURE_OPENAI_DEPLOYMENTS',
    description:
      'Failover: an ordered JSON list of deployments, [{"endpoint","deployment","model"?,"name"?,"apiKey"?}]; when set it replaces AZURE_OPENAI_ENDPOINT, _DEPLOYMENT and _MODEL. A turn moves to the next on 429, 5xx, connection failure or timeout.',
    example:
      '[{"endpoint":"https://east.openai.azure.com","deployment":"chat","model":"gpt-4o-mini"},{"endpoint":"https://west.openai.azure.com","deployment":"chat","model":"gpt-4o-mini","name":"chat-west"}]',
  },
  {
    name: 'AZURE_OPENAI_API_KEY',
    description: 'API key; when unset the managed identity (DefaultAzureCredential) is used.',
    example: '(secret)',
  },
  {
    name: 'AZURE_CLIENT_ID',
    description: 'Client id of the user-assigned managed identity.',
    example: '00000000-0000-0000-0000-000000000000',
    requiredOnAzure: true,
  },
  {
    name: 'AZURE_OPENAI_TIMEOUT_MS',
    description:
      'Total time for one model call including retries and failover attempts; keep it well under the 230 s HTTP limit.',
    default: '120000',
    example: '60000',
  },
  {
    name: 'AZURE_OPENAI_MAX_RETRIES',
    description:
      'Retries of a model call on connection errors, 408, 409, 429 and 5xx (honours retry-after). With several deployments failover replaces them: 0.',
    default: '2',
    example: '3',
  },
  {
    name: 'AZURE_OPENAI_ATTEMPT_TIMEOUT_MS',
    description:
      'With several deployments: how long one deployment may take to answer (a stream: to its first chunk) before the turn moves on.',
    default: '60000',
    example: '20000',
  },
  {
    name: 'AZURE_OPENAI_FAILOVER_COOLDOWN_SECONDS',
    description:
      'With several deployments: how long this instance skips one that failed (5xx, connection, timeout) without a retry-after; after a 429 its retry-after counts.',
    default: '30',
    example: '60',
  },
  // Chat behaviour
  {
    name: 'CHAT_SYSTEM_MESSAGE',
    description: 'System message for conversations created without one.',
    default: 'You are a helpful assistant.',
    example: 'You are a concise assistant.',
  },
  {
    name: 'CHAT_TOKEN_LIMIT',
    description: "Context window in tokens; defaults to the model family's limit.",
    example: '16384',
  },
  {
    name: 'CHAT_MAX_RESPONSE_TOKENS',
    description:
      'Tokens reserved for, and requested as, the reply (max_tokens / max_completion_tokens); at most what one storage transaction holds beside a user message (27,568 with the default CHAT_MAX_MESSAGE_CHARS).',
    default: '1024',
    example: '800',
  },
  {
    name: 'CHAT_TRIM_POLICY',
    description:
      'What to do when the history does not fit: drop-oldest, max-turns, reject or stable-prefix (trim in steps so the prompt cache keeps hitting).',
    default: 'drop-oldest',
    example: 'stable-prefix',
  },
  {
    name: 'CHAT_TRIM_LOW_WATER',
    description:
      'With CHAT_TRIM_POLICY=stable-prefix: a trim drops whole oldest turns until the prompt is at most this share of the budget.',
    default: '0.6',
    example: '0.5',
  },
  {
    name: 'CHAT_HISTORY_TOKEN_LIMIT',
    description:
      'Most prompt tokens sent with history, below the context window (cost cap); the system message, examples and new message are still sent when they fit the window.',
    example: '16000',
  },
  {
    name: 'CHAT_SUMMARY',
    description:
      'on: when trimming drops turns, the model summarises them and the summary is sent after the system message (needs CHAT_TRIM_POLICY=stable-prefix).',
    default: 'off',
    example: 'on',
  },
  {
    name: 'CHAT_SUMMARY_MAX_TOKENS',
    description: "The summary's own token budget (the summary call's max_tokens).",
    default: '512',
    example: '800',
  },
  {
    name: 'CHAT_MAX_TURNS',
    description: 'With CHAT_TRIM_POLICY=max-turns: the newest past turns sent at most.',
    default: '20',
    example: '10',
  },
  {
    name: 'CHAT_TEMPERATURE',
    description: 'Sampling temperature (0 to 2); unset leaves the model default.',
    example: '0.7',
  },
  {
    name: 'CHAT_MAX_MESSAGE_CHARS',
    description: 'Longest message, system message or example accepted, in UTF-16 code units.',
    default: '100000',
    example: '20000',
  },
  { name: 'CHAT_MAX_EXAMPLES', description: 'Most few-shot examples per conversation.', default: '20', example: '8' },
  {
    name: 'CHAT_TURN_ATTEMPTS',
    description: 'Attempts of a turn that loses a race with another turn before answering 409 conversation_busy.',
    default: '3',
    example: '5',
  },
  {
    name: 'CHAT_STREAM_ON_DISCONNECT',
    description: 'When a streaming client disconnects: finish (read the model to the end and store the turn) or abort.',
    default: 'finish',
    example: 'abort',
  },
  {
    name: 'IDEMPOTENCY_LEASE_SECONDS',
    description:
      'How long a running request holds its Idempotency-Key before a retry may take it over (renewed before a model call once a third has passed); at least 1.5 x (AZURE_OPENAI_TIMEOUT_MS + CHAT_TOOL_TIMEOUT_MS) + 60 s.',
    default: '420',
    example: '600',
  },
  // Tools
  {
    name: 'CHAT_TOOLS',
    description: `Server tools the model may call, comma-separated (${SERVER_TOOL_NAMES.join(', ')}); empty: none.`,
    default: '',
    example: 'get_current_time,http_lookup',
    local: 'get_current_time',
  },
  {
    name: 'CHAT_MAX_TOOL_ROUNDS',
    description: 'Tool rounds per turn at most; then the model is asked once more without tools for a final answer.',
    default: '5',
    example: '3',
  },
  {
    name: 'CHAT_TOOL_TIMEOUT_MS',
    description: 'Time one server-tool call may take; a slower one is stopped and the model told it timed out.',
    default: '10000',
    example: '5000',
  },
  {
    name: 'CHAT_TOOL_OUTPUT_CHARS',
    description:
      'Longest tool output sent to the model and stored, in UTF-16 code units; a longer one keeps its start and a note.',
    default: '20000',
    example: '8000',
  },
  {
    name: 'CHAT_PENDING_TURN_SECONDS',
    description:
      'How long a turn paused for client-tool results waits; after it the turn is dropped and new messages are accepted.',
    default: '600',
    example: '120',
  },
  {
    name: 'TOOL_HTTP_LOOKUP_URL',
    description: 'Base URL of the service http_lookup reads from (GET, paths beneath it only).',
    example: 'https://orders.internal.example.com/api/',
  },
  {
    name: 'TOOL_HTTP_LOOKUP_SCOPE',
    description: 'http_lookup authenticates with the managed identity, as a bearer token for this scope.',
    example: 'api://orders-api/.default',
  },
  {
    name: 'TOOL_HTTP_LOOKUP_API_KEY',
    description: 'http_lookup sends this key instead (in TOOL_HTTP_LOOKUP_API_KEY_HEADER).',
    example: '(secret)',
  },
  {
    name: 'TOOL_HTTP_LOOKUP_API_KEY_HEADER',
    description: 'The header that carries TOOL_HTTP_LOOKUP_API_KEY.',
    default: 'x-api-key',
    example: 'Ocp-Apim-Subscription-Key',
  },
  {
    name: 'TOOL_HTTP_LOOKUP_DESCRIPTION',
    description: 'What the model is told http_lookup looks up.',
    default: 'Look up a record in the company service by its path (read-only), e.g. orders/12345.',
    example: 'Look up an order by its path, e.g. orders/12345.',
  },
  // Callers
  {
    name: 'AUTH_MODE',
    description: 'How callers are identified: none (one local caller), jwt or easyauth.',
    default: 'none',
    example: 'jwt',
    requiredOnAzure: true,
    local: 'none',
  },
  {
    name: 'AUTH_ALLOW_NONE',
    description: 'Allow AUTH_MODE=none on Azure (WEBSITE_INSTANCE_ID set).',
    default: 'false',
    example: 'true',
  },
  {
    name: 'AUTH_JWKS_URL',
    description: 'JWKS URL (AUTH_MODE=jwt).',
    example: 'https://login.example.com/.well-known/jwks.json',
  },
  { name: 'AUTH_ISSUER', description: 'Expected `iss` (AUTH_MODE=jwt).', example: 'https://login.example.com/' },
  { name: 'AUTH_AUDIENCE', description: 'Expected `aud` (AUTH_MODE=jwt).', example: 'api://chat' },
  {
    name: 'AUTH_ALGORITHMS',
    description: 'Accepted JWT algorithms, comma-separated (AUTH_MODE=jwt).',
    default: 'RS256,ES256',
    example: 'RS256',
  },
  {
    name: 'AUTH_USER_CLAIM',
    description: 'Claim that identifies the caller (AUTH_MODE=jwt).',
    default: 'sub',
    example: 'oid',
  },
  {
    name: 'AUTH_CLOCK_SKEW_SECONDS',
    description: 'Clock skew tolerated on exp/nbf/iat (AUTH_MODE=jwt).',
    default: '60',
    example: '30',
  },
  {
    name: 'AUTH_JWKS_COOLDOWN_SECONDS',
    description: 'Least time between two JWKS fetches caused by an unknown key id (AUTH_MODE=jwt).',
    default: '30',
    example: '60',
  },
  // Webhooks
  {
    name: 'WEBHOOK_SECRET',
    description:
      'Standard Webhooks secret(s), whsec_..., space- or comma-separated for rotation. Unset disables the route.',
    example: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
  },
  {
    name: 'GITHUB_WEBHOOK_SECRET',
    description: 'Secret for X-Hub-Signature-256 deliveries to /api/webhooks/github. Unset disables the route.',
    example: "It's a Secret to Everybody",
  },
  {
    name: 'WEBHOOK_CALLBACK_URL',
    description:
      'Where turn.completed / turn.failed go for /api/webhooks/messages deliveries; set, deliveries are answered 202 and the turn runs on the queue. Unset keeps the synchronous answer.',
    example: 'https://helpdesk.example.com/hooks/chat',
  },
  {
    name: 'WEBHOOK_CALLBACK_SECRET',
    description:
      'whsec_... secret the callbacks are signed with (Standard Webhooks). Required with WEBHOOK_CALLBACK_URL.',
    example: 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD',
  },
  {
    name: 'WEBHOOK_CALLBACK_ATTEMPTS',
    description:
      'Delivery attempts of one callback (or GitHub comment), the first included; then it is recorded as failed.',
    default: '6',
    example: '3',
  },
  {
    name: 'WEBHOOK_CALLBACK_BACKOFF_SECONDS',
    description: 'Wait before the second delivery attempt, doubled for each next one (at most an hour).',
    default: '30',
    example: '5',
  },
  {
    name: 'GITHUB_APP_ID',
    description:
      'GitHub App that posts replies as issue comments; set with GITHUB_APP_PRIVATE_KEY, GitHub deliveries are answered 202 and the turn runs on the queue.',
    example: '123456',
  },
  {
    name: 'GITHUB_APP_PRIVATE_KEY',
    description: "The GitHub App's private key (PEM; `\\n` escapes allowed). Required with GITHUB_APP_ID.",
    example: '-----BEGIN RSA PRIVATE KEY-----\\n...',
  },
  {
    name: 'GITHUB_API_URL',
    description: 'GitHub REST API base URL (GitHub Enterprise Server: https://<host>/api/v3).',
    default: 'https://api.github.com',
    example: 'https://github.example.com/api/v3',
  },
  // Queued turns
  {
    name: 'TURN_JOB_MAX_RUNS',
    description:
      'Runs of one queued turn before a transient failure (storage, model 5xx/429) is final; keep it <= host.json maxDequeueCount.',
    default: '5',
    example: '3',
  },
  // Telemetry
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING',
    description:
      'Export traces and metrics to Application Insights (Azure Monitor OpenTelemetry distro, Entra ID auth with the managed identity). Unset with no OTLP endpoint: no telemetry.',
    example: 'InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://...',
  },
  {
    name: 'OTEL_EXPORTER_OTLP_ENDPOINT',
    description:
      'Export traces and metrics over OTLP (when APPLICATIONINSIGHTS_CONNECTION_STRING is unset); the other OTEL_* variables apply, e.g. OTEL_EXPORTER_OTLP_PROTOCOL=http/json.',
    example: 'http://localhost:4318',
  },
  {
    name: 'OTEL_SERVICE_NAME',
    description:
      "The service name on exported telemetry (in Application Insights, the cloud role). Unset with Application Insights: the function app's name on Azure (WEBSITE_SITE_NAME, as the host reports it), not the default.",
    default: 'azure-chat-backend',
    example: 'chat-api',
  },
  {
    name: 'OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT',
    description:
      'Record message content (gen_ai.input.messages / gen_ai.output.messages) on model spans. Off: no content is ever exported.',
    default: 'false',
    example: 'true',
  },
  // Limits
  {
    name: 'LIMIT_REQUESTS_PER_MINUTE',
    description: 'Message sends per caller per minute, shared by all instances; 0 turns it off.',
    default: '60',
    example: '20',
  },
  {
    name: 'LIMIT_TOKENS_PER_DAY',
    description: 'Model tokens (prompt + completion) per caller per UTC day; 0 turns it off.',
    default: '1000000',
    example: '200000',
  },
  {
    name: 'LIMIT_CONVERSATIONS_PER_CALLER',
    description: 'Conversations a caller may keep; 0 turns it off.',
    default: '1000',
    example: '100',
  },
  {
    name: 'LIMIT_BODY_BYTES',
    description: 'Largest request body accepted, in bytes.',
    default: '1048576',
    example: '262144',
  },
] as const;

/** Room a turn needs beyond its model calls (storage reads and writes, backoff between attempts), in ms. */
export const LEASE_MARGIN_MS = 60_000;

const empty = (value: unknown) => (typeof value === 'string' && value.trim() === '' ? undefined : value);
const optionalString = z.preprocess(empty, z.string().optional());
/**
 * An integer setting. The default (or optional) sits inside the preprocess, so an empty value, which `empty` turns
 * into undefined, reads as unset: `.default()` outside it would only apply to a missing variable, and "" would be
 * coerced to NaN.
 */
const integer = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const int = (min: number, max: number, fallback: number) => z.preprocess(empty, integer(min, max).default(fallback));
const optionalInt = (min: number, max: number) => z.preprocess(empty, integer(min, max).optional());
const bool = z.preprocess(
  empty,
  z
    .enum(['true', 'false', '1', '0'], { message: 'expected true or false' })
    .optional()
    .transform((value) => value === 'true' || value === '1'),
);
const url = z.preprocess(empty, z.url({ protocol: /^https?$/, message: 'expected an http(s) URL' }).optional());
const list = (value: string | undefined) =>
  (value ?? '')
    .split(/[\s,]+/)
    .map((item) => item.trim())
    .filter((item) => item.length > 0);

const schema = z
  .object({
    TABLES_CONNECTION_STRING: optionalString,
    TABLES_ENDPOINT: url,
    TABLES_PREFIX: z.preprocess(
      empty,
      z
        .string()
        .regex(/^[A-Za-z][A-Za-z0-9]{0,30}$/, 'expected letters and digits, starting with a letter')
        .optional(),
    ),
    AZURE_OPENAI_ENDPOINT: url,
    AZURE_OPENAI_DEPLOYMENT: optionalString,
    AZURE_OPENAI_DEPLOYMENTS: z.preprocess(empty, z.string().optional()).transform(parseDeployments),
    AZURE_OPENAI_MODEL: optionalString,
    AZURE_OPENAI_API_KEY: optionalString,
    AZURE_CLIENT_ID: optionalString,
    AZURE_OPENAI_TIMEOUT_MS: int(1000, 600_000, 120_000),
    AZURE_OPENAI_MAX_RETRIES: int(0, 10, 2),
    AZURE_OPENAI_ATTEMPT_TIMEOUT_MS: int(1000, 600_000, 60_000),
    AZURE_OPENAI_FAILOVER_COOLDOWN_SECONDS: int(0, 3600, 30),
    CHAT_SYSTEM_MESSAGE: z.preprocess(empty, z.string().default('You are a helpful assistant.')),
    CHAT_TOKEN_LIMIT: optionalInt(256, 10_000_000),
    CHAT_MAX_RESPONSE_TOKENS: int(1, 1_000_000, 1024),
    CHAT_TRIM_POLICY: z.preprocess(empty, z.enum(TRIM_POLICIES).default('drop-oldest')),
    CHAT_TRIM_LOW_WATER: z.preprocess(empty, z.coerce.number().gt(0).max(1).default(0.6)),
    CHAT_HISTORY_TOKEN_LIMIT: optionalInt(256, 10_000_000),
    CHAT_SUMMARY: z.preprocess(empty, z.enum(['on', 'off']).default('off')),
    CHAT_SUMMARY_MAX_TOKENS: int(16, 4_000, 512),
    CHAT_MAX_TURNS: int(0, 10_000, 20),
    CHAT_TEMPERATURE: z.preprocess(empty, z.coerce.number().min(0).max(2).optional()),
    // 400,000 UTF-16 units keeps a message entity under the 1 MiB entity limit (UTF-16 counted).
    CHAT_MAX_MESSAGE_CHARS: int(1, 400_000, 100_000),
    CHAT_MAX_EXAMPLES: int(0, 50, 20),
    CHAT_TURN_ATTEMPTS: int(1, 20, 3),
    CHAT_HISTORY_CACHE_MB: int(0, 16_384, 64),
    CHAT_STREAM_ON_DISCONNECT: z.preprocess(empty, z.enum(['finish', 'abort']).default('finish')),
    IDEMPOTENCY_LEASE_SECONDS: int(10, 86_400, 420),
    CHAT_TOOLS: z.preprocess(
      empty,
      z
        .string()
        .optional()
        .transform(list)
        .pipe(
          z.array(z.enum(SERVER_TOOL_NAMES, { message: `expected tool names among ${SERVER_TOOL_NAMES.join(', ')}` })),
        ),
    ),
    CHAT_MAX_TOOL_ROUNDS: int(0, 20, 5),
    CHAT_TOOL_TIMEOUT_MS: int(100, 120_000, 10_000),
    // The upper bound keeps a round of parallel calls inside one stored turn (see src/core/tools.ts).
    CHAT_TOOL_OUTPUT_CHARS: int(500, 100_000, 20_000),
    CHAT_PENDING_TURN_SECONDS: int(10, 86_400, 600),
    TOOL_HTTP_LOOKUP_URL: url,
    TOOL_HTTP_LOOKUP_SCOPE: optionalString,
    TOOL_HTTP_LOOKUP_API_KEY: optionalString,
    TOOL_HTTP_LOOKUP_API_KEY_HEADER: z.preprocess(
      empty,
      z
        .string()
        .regex(/^[A-Za-z0-9-]{1,64}$/, 'expected an HTTP header name')
        .default('x-api-key'),
    ),
    TOOL_HTTP_LOOKUP_DESCRIPTION: optionalString,
    AUTH_MODE: z.preprocess(empty, z.enum(['none', 'jwt', 'easyauth']).default('none')),
    AUTH_ALLOW_NONE: bool,
    AUTH_JWKS_URL: url,
    AUTH_ISSUER: optionalString,
    AUTH_AUDIENCE: optionalString,
    AUTH_ALGORITHMS: z.preprocess(
      empty,
      z
        .string()
        .default('RS256,ES256')
        .transform(list)
        .pipe(
          z
            .array(z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']))
            .min(1),
        ),
    ),
    AUTH_USER_CLAIM: z.preprocess(empty, z.string().default('sub')),
    AUTH_CLOCK_SKEW_SECONDS: int(0, 600, 60),
    AUTH_JWKS_COOLDOWN_SECONDS: int(0, 3600, 30),
    WEBHOOK_SECRET: z.preprocess(
      empty,
      z
        .string()
        .optional()
        .transform(list)
        .pipe(z.array(z.string().regex(/^whsec_[A-Za-z0-9+/=]+$/, 'expected whsec_ followed by base64'))),
    ),
    GITHUB_WEBHOOK_SECRET: optionalString,
    WEBHOOK_CALLBACK_URL: url,
    WEBHOOK_CALLBACK_SECRET: z.preprocess(
      empty,
      z
        .string()
        .regex(/^whsec_[A-Za-z0-9+/=]+$/, 'expected whsec_ followed by base64')
        .optional(),
    ),
    WEBHOOK_CALLBACK_ATTEMPTS: int(1, 20, 6),
    WEBHOOK_CALLBACK_BACKOFF_SECONDS: int(0, 3600, 30),
    GITHUB_APP_ID: z.preprocess(
      empty,
      z
        .string()
        .regex(/^\d{1,20}$/, 'expected the numeric app id')
        .optional(),
    ),
    GITHUB_APP_PRIVATE_KEY: z.preprocess(
      empty,
      z.string().includes('PRIVATE KEY', { message: 'expected a PEM private key' }).optional(),
    ),
    GITHUB_API_URL: z.preprocess(
      empty,
      z.url({ protocol: /^https?$/, message: 'expected an http(s) URL' }).default('https://api.github.com'),
    ),
    TURN_JOB_MAX_RUNS: int(1, 100, 5),
    // The host's own storage connection, which the turn queue lives on (read, not documented in SETTINGS).
    AzureWebJobsStorage: optionalString,
    AzureWebJobsStorage__queueServiceUri: url,
    AzureWebJobsStorage__clientId: optionalString,
    LIMIT_REQUESTS_PER_MINUTE: int(0, 1_000_000, 60),
    LIMIT_TOKENS_PER_DAY: int(0, 1_000_000_000_000, 1_000_000),
    LIMIT_CONVERSATIONS_PER_CALLER: int(0, 10_000_000, 1000),
    LIMIT_BODY_BYTES: int(1024, 100 * 1024 * 1024, 1024 * 1024),
    WEBSITE_INSTANCE_ID: optionalString,
    APPLICATIONINSIGHTS_CONNECTION_STRING: optionalString,
    OTEL_EXPORTER_OTLP_ENDPOINT: url,
    OTEL_SERVICE_NAME: z.preprocess(empty, z.string().default('azure-chat-backend')),
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: bool,
  })
  .superRefine((env, ctx) => {
    if (!env.AZURE_OPENAI_DEPLOYMENTS) {
      if (!env.AZURE_OPENAI_ENDPOINT) {
        ctx.addIssue({ code: 'custom', path: ['AZURE_OPENAI_ENDPOINT'], message: 'expected an http(s) URL' });
      }
      if (!env.AZURE_OPENAI_DEPLOYMENT) {
        ctx.addIssue({ code: 'custom', path: ['AZURE_OPENAI_DEPLOYMENT'], message: 'required' });
      }
    }
    if (!env.TABLES_CONNECTION_STRING && !env.TABLES_ENDPOINT) {
      ctx.addIssue({
        code: 'custom',
        path: ['TABLES_CONNECTION_STRING'],
        message: 'set TABLES_CONNECTION_STRING or TABLES_ENDPOINT',
      });
    }
    if (env.CHAT_SUMMARY === 'on' && env.CHAT_TRIM_POLICY !== 'stable-prefix') {
      ctx.addIssue({
        code: 'custom',
        path: ['CHAT_SUMMARY'],
        message:
          'on needs CHAT_TRIM_POLICY=stable-prefix (with drop-oldest or max-turns the window moves on every turn once ' +
          'it is full, so a summary call would run on every turn)',
      });
    }
    for (const [name, other] of [
      ['WEBHOOK_CALLBACK_URL', 'WEBHOOK_CALLBACK_SECRET'],
      ['WEBHOOK_CALLBACK_SECRET', 'WEBHOOK_CALLBACK_URL'],
      ['GITHUB_APP_ID', 'GITHUB_APP_PRIVATE_KEY'],
      ['GITHUB_APP_PRIVATE_KEY', 'GITHUB_APP_ID'],
    ] as const) {
      if (env[name] && !env[other]) ctx.addIssue({ code: 'custom', path: [other], message: `required with ${name}` });
    }
    if (env.AUTH_MODE === 'jwt') {
      for (const name of ['AUTH_JWKS_URL', 'AUTH_ISSUER', 'AUTH_AUDIENCE'] as const) {
        if (!env[name]) ctx.addIssue({ code: 'custom', path: [name], message: 'required when AUTH_MODE=jwt' });
      }
    }
    const storableReply = maxStorableReplyTokens(env.CHAT_MAX_MESSAGE_CHARS);
    if (env.CHAT_MAX_RESPONSE_TOKENS > storableReply) {
      ctx.addIssue({
        code: 'custom',
        path: ['CHAT_MAX_RESPONSE_TOKENS'],
        message:
          `must be at most ${storableReply} with CHAT_MAX_MESSAGE_CHARS ${env.CHAT_MAX_MESSAGE_CHARS}: a reply of that many tokens ` +
          'must always fit the one storage transaction (4 MiB) that stores it beside the user message, or a paid reply would be lost',
      });
    }
    // A turn renews its lease before a model call once a third of it has passed: the lease must outlast that third
    // plus the longest stretch without such a check, one model call and one round of tools.
    const leaseNeededMs = Math.ceil(1.5 * (env.AZURE_OPENAI_TIMEOUT_MS + env.CHAT_TOOL_TIMEOUT_MS)) + LEASE_MARGIN_MS;
    if (env.IDEMPOTENCY_LEASE_SECONDS * 1000 < leaseNeededMs) {
      ctx.addIssue({
        code: 'custom',
        path: ['IDEMPOTENCY_LEASE_SECONDS'],
        message:
          `must be at least ${Math.ceil(leaseNeededMs / 1000)} (1.5 x (AZURE_OPENAI_TIMEOUT_MS ${env.AZURE_OPENAI_TIMEOUT_MS} + ` +
          `CHAT_TOOL_TIMEOUT_MS ${env.CHAT_TOOL_TIMEOUT_MS}) + ${LEASE_MARGIN_MS / 1000} s): a turn renews its lease before a model ` +
          'call once a third of it has passed, and a shorter lease could run out between two renewals, letting a retry take ' +
          'over a key whose first request is still calling the model',
      });
    }
    if (env.CHAT_TOOLS.includes('http_lookup')) {
      if (!env.TOOL_HTTP_LOOKUP_URL) {
        ctx.addIssue({
          code: 'custom',
          path: ['TOOL_HTTP_LOOKUP_URL'],
          message: 'required when CHAT_TOOLS has http_lookup',
        });
      }
      if (!env.TOOL_HTTP_LOOKUP_SCOPE && !env.TOOL_HTTP_LOOKUP_API_KEY) {
        ctx.addIssue({
          code: 'custom',
          path: ['TOOL_HTTP_LOOKUP_SCOPE'],
          message:
            'set TOOL_HTTP_LOOKUP_SCOPE (managed identity) or TOOL_HTTP_LOOKUP_API_KEY when CHAT_TOOLS has http_lookup',
        });
      }
    }
    if (env.AUTH_MODE === 'none' && env.WEBSITE_INSTANCE_ID && !env.AUTH_ALLOW_NONE) {
      ctx.addIssue({
        code: 'custom',
        path: ['AUTH_MODE'],
        message:
          'none is refused on Azure (WEBSITE_INSTANCE_ID is set): choose jwt or easyauth, or set AUTH_ALLOW_NONE=true',
      });
    }
  });

/** One model deployment: AZURE_OPENAI_ENDPOINT/_DEPLOYMENT/_MODEL, or an entry of AZURE_OPENAI_DEPLOYMENTS. */
export interface DeploymentConfig {
  /** Unique; logs, telemetry and turn results name the deployment by it. Default: the deployment name. */
  name: string;
  endpoint: string;
  deployment: string;
  modelName: string;
  /** Unset: AZURE_OPENAI_API_KEY, else the managed identity. */
  apiKey?: string;
}

export interface Config {
  storage: { connectionString?: string; endpoint?: string; tablePrefix: string; historyCacheBytes: number };
  model: {
    /** The first deployment's endpoint, deployment and model name (the only one without failover). */
    endpoint: string;
    deployment: string;
    modelName: string;
    apiKey?: string;
    clientId?: string;
    timeoutMs: number;
    maxRetries: number;
    /** In failover order; one entry without AZURE_OPENAI_DEPLOYMENTS. */
    deployments: DeploymentConfig[];
    attemptTimeoutMs: number;
    failoverCooldownMs: number;
  };
  chat: {
    defaultSystemMessage: string;
    /** From CHAT_TOKEN_LIMIT; when undefined the model family's window applies. */
    tokenLimit?: number;
    maxResponseTokens: number;
    trimPolicy: TrimPolicy;
    maxTurns: number;
    trimLowWater: number;
    /** From CHAT_HISTORY_TOKEN_LIMIT; undefined: the window alone limits the prompt. */
    historyTokenLimit?: number;
    summary: { enabled: boolean; maxTokens: number };
    temperature?: number;
    maxMessageChars: number;
    maxExamples: number;
    turnAttempts: number;
    streamOnDisconnect: 'finish' | 'abort';
    idempotencyLeaseMs: number;
  };
  tools: {
    enabled: ServerToolName[];
    maxRounds: number;
    timeoutMs: number;
    maxOutputChars: number;
    pendingTurnMs: number;
    httpLookup?: {
      baseUrl: string;
      scope?: string;
      apiKey?: string;
      apiKeyHeader: string;
      description?: string;
    };
  };
  auth: {
    mode: 'none' | 'jwt' | 'easyauth';
    jwksUrl?: string;
    issuer?: string;
    audience?: string;
    algorithms: string[];
    userClaim: string;
    clockSkewSeconds: number;
    jwksCooldownSeconds: number;
  };
  webhooks: {
    standardSecrets: string[];
    githubSecret?: string;
    /** Set: deliveries run on the queue and their outcome goes here. */
    callback?: { url: string; secret: string };
    githubApp?: { appId: string; privateKey: string; apiUrl: string };
    deliveryAttempts: number;
    deliveryBackoffSeconds: number;
  };
  queue: { connectionString?: string; serviceUri?: string; clientId?: string; maxRuns: number };
  limits: {
    requestsPerMinute: number;
    tokensPerDay: number;
    conversationsPerCaller: number;
    bodyBytes: number;
  };
  telemetry: {
    connectionString?: string;
    otlpEndpoint?: string;
    serviceName: string;
    /** Message content on spans: opted in only. */
    captureContent: boolean;
  };
  runningOnAzure: boolean;
}

export class ConfigError extends Error {
  /** The names of the bad settings, each once (every problem starts with the name it is about). */
  readonly settings: string[];
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((problem) => `  - ${problem}`).join('\n')}`);
    this.name = 'ConfigError';
    this.settings = [...new Set(problems.map((problem) => problem.split(':', 1)[0] ?? problem))];
  }
}

/** Validates the environment; throws ConfigError naming every bad setting. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Readonly<Config> {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => `${String(issue.path[0] ?? 'configuration')}: ${issue.message}`),
    );
  }
  const e = parsed.data;
  const deployments: DeploymentConfig[] = e.AZURE_OPENAI_DEPLOYMENTS ?? [
    {
      name: e.AZURE_OPENAI_DEPLOYMENT ?? '',
      endpoint: trimEndpoint(e.AZURE_OPENAI_ENDPOINT ?? ''),
      deployment: e.AZURE_OPENAI_DEPLOYMENT ?? '',
      modelName: e.AZURE_OPENAI_MODEL ?? e.AZURE_OPENAI_DEPLOYMENT ?? '',
    },
  ];
  const primary = deployments[0] as DeploymentConfig;
  const config: Config = {
    storage: {
      connectionString: e.TABLES_CONNECTION_STRING,
      endpoint: e.TABLES_ENDPOINT,
      tablePrefix: e.TABLES_PREFIX ?? '',
      historyCacheBytes: e.CHAT_HISTORY_CACHE_MB * 1024 * 1024,
    },
    model: {
      endpoint: primary.endpoint,
      deployment: primary.deployment,
      modelName: primary.modelName,
      apiKey: e.AZURE_OPENAI_API_KEY,
      clientId: e.AZURE_CLIENT_ID,
      timeoutMs: e.AZURE_OPENAI_TIMEOUT_MS,
      maxRetries: e.AZURE_OPENAI_MAX_RETRIES,
      deployments,
      attemptTimeoutMs: e.AZURE_OPENAI_ATTEMPT_TIMEOUT_MS,
      failoverCooldownMs: e.AZURE_OPENAI_FAILOVER_COOLDOWN_SECONDS * 1000,
    },
    chat: {
      defaultSystemMessage: e.CHAT_SYSTEM_MESSAGE,
      tokenLimit: e.CHAT_TOKEN_LIMIT,
      maxResponseTokens: e.CHAT_MAX_RESPONSE_TOKENS,
      trimPolicy: e.CHAT_TRIM_POLICY,
      maxTurns: e.CHAT_MAX_TURNS,
      trimLowWater: e.CHAT_TRIM_LOW_WATER,
      historyTokenLimit: e.CHAT_HISTORY_TOKEN_LIMIT,
      summary: { enabled: e.CHAT_SUMMARY === 'on', maxTokens: e.CHAT_SUMMARY_MAX_TOKENS },
      temperature: e.CHAT_TEMPERATURE,
      maxMessageChars: e.CHAT_MAX_MESSAGE_CHARS,
      maxExamples: e.CHAT_MAX_EXAMPLES,
      turnAttempts: e.CHAT_TURN_ATTEMPTS,
      streamOnDisconnect: e.CHAT_STREAM_ON_DISCONNECT,
      idempotencyLeaseMs: e.IDEMPOTENCY_LEASE_SECONDS * 1000,
    },
    tools: {
      enabled: [...new Set(e.CHAT_TOOLS)],
      maxRounds: e.CHAT_MAX_TOOL_ROUNDS,
      timeoutMs: e.CHAT_TOOL_TIMEOUT_MS,
      maxOutputChars: e.CHAT_TOOL_OUTPUT_CHARS,
      pendingTurnMs: e.CHAT_PENDING_TURN_SECONDS * 1000,
      ...(e.TOOL_HTTP_LOOKUP_URL
        ? {
            httpLookup: {
              baseUrl: e.TOOL_HTTP_LOOKUP_URL,
              scope: e.TOOL_HTTP_LOOKUP_SCOPE,
              apiKey: e.TOOL_HTTP_LOOKUP_API_KEY,
              apiKeyHeader: e.TOOL_HTTP_LOOKUP_API_KEY_HEADER,
              description: e.TOOL_HTTP_LOOKUP_DESCRIPTION,
            },
          }
        : {}),
    },
    auth: {
      mode: e.AUTH_MODE,
      jwksUrl: e.AUTH_JWKS_URL,
      issuer: e.AUTH_ISSUER,
      audience: e.AUTH_AUDIENCE,
      algorithms: e.AUTH_ALGORITHMS,
      userClaim: e.AUTH_USER_CLAIM,
      clockSkewSeconds: e.AUTH_CLOCK_SKEW_SECONDS,
      jwksCooldownSeconds: e.AUTH_JWKS_COOLDOWN_SECONDS,
    },
    webhooks: {
      standardSecrets: e.WEBHOOK_SECRET,
      githubSecret: e.GITHUB_WEBHOOK_SECRET,
      callback:
        e.WEBHOOK_CALLBACK_URL && e.WEBHOOK_CALLBACK_SECRET
          ? { url: e.WEBHOOK_CALLBACK_URL, secret: e.WEBHOOK_CALLBACK_SECRET }
          : undefined,
      githubApp:
        e.GITHUB_APP_ID && e.GITHUB_APP_PRIVATE_KEY
          ? { appId: e.GITHUB_APP_ID, privateKey: e.GITHUB_APP_PRIVATE_KEY, apiUrl: e.GITHUB_API_URL }
          : undefined,
      deliveryAttempts: e.WEBHOOK_CALLBACK_ATTEMPTS,
      deliveryBackoffSeconds: e.WEBHOOK_CALLBACK_BACKOFF_SECONDS,
    },
    queue: {
      connectionString: e.AzureWebJobsStorage,
      serviceUri: e.AzureWebJobsStorage__queueServiceUri,
      clientId: e.AzureWebJobsStorage__clientId,
      maxRuns: e.TURN_JOB_MAX_RUNS,
    },
    limits: {
      requestsPerMinute: e.LIMIT_REQUESTS_PER_MINUTE,
      tokensPerDay: e.LIMIT_TOKENS_PER_DAY,
      conversationsPerCaller: e.LIMIT_CONVERSATIONS_PER_CALLER,
      bodyBytes: e.LIMIT_BODY_BYTES,
    },
    telemetry: {
      connectionString: e.APPLICATIONINSIGHTS_CONNECTION_STRING,
      otlpEndpoint: e.OTEL_EXPORTER_OTLP_ENDPOINT,
      serviceName: e.OTEL_SERVICE_NAME,
      captureContent: e.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT,
    },
    runningOnAzure: Boolean(e.WEBSITE_INSTANCE_ID),
  };
  return deepFreeze(config);
}

function trimEndpoint(endpoint: string): string {
  return endpoint.replace(/\/+$/, '');
}

const deploymentEntry = z.strictObject({
  endpoint: z.url({ protocol: /^https?$/, message: 'expected an http(s) URL' }),
  deployment: z.string().min(1, 'required'),
  model: z.string().min(1).optional(),
  name: z
    .string()
    .regex(/^[\w.@:-]{1,64}$/, 'expected 1-64 letters, digits or ._@:-')
    .optional(),
  apiKey: z.string().min(1).optional(),
});

/** AZURE_OPENAI_DEPLOYMENTS: a JSON list, each problem reported under the setting's name with where it is. */
function parseDeployments(raw: string | undefined, ctx: z.RefinementCtx): DeploymentConfig[] | undefined {
  if (raw === undefined) return undefined;
  const fail = (message: string) => {
    ctx.addIssue({ code: 'custom', message });
    return z.NEVER;
  };
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    return fail('expected JSON: a list of {"endpoint","deployment","model"?,"name"?,"apiKey"?}');
  }
  const parsed = z.array(deploymentEntry).min(1, 'expected at least one deployment').safeParse(json);
  if (!parsed.success) {
    const [issue] = parsed.error.issues;
    const where = (issue?.path ?? []).map((part) => (typeof part === 'number' ? `[${part}]` : `.${String(part)}`));
    return fail(`${where.join('') || 'the list'}: ${issue?.message ?? 'invalid'}`.replace(/^\./, ''));
  }
  const deployments = parsed.data.map((entry) => ({
    name: entry.name ?? entry.deployment,
    endpoint: trimEndpoint(entry.endpoint),
    deployment: entry.deployment,
    modelName: entry.model ?? entry.deployment,
    ...(entry.apiKey ? { apiKey: entry.apiKey } : {}),
  }));
  const seen = new Set<string>();
  for (const [index, deployment] of deployments.entries()) {
    if (seen.has(deployment.name)) {
      return fail(
        `[${index}]: the name "${deployment.name}" is taken by an earlier entry: give each a distinct "name"`,
      );
    }
    seen.add(deployment.name);
  }
  return deployments;
}

function deepFreeze<T>(value: T): Readonly<T> {
  if (value && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/** The settings the infrastructure must set for the app to start on Azure (read by the offline infra check). */
export const REQUIRED_ON_AZURE: readonly string[] = SETTINGS.filter((setting) => setting.requiredOnAzure).map(
  (setting) => setting.name,
);

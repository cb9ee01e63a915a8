/**
 * The Application Insights path end to end: APPLICATIONINSIGHTS_CONNECTION_STRING set, so the app exports with the
 * Azure Monitor OpenTelemetry distro, authenticated with its managed identity (Entra ID). Everything it talks to is
 * a loopback stand-in speaking the real protocol: Application Insights ingestion over HTTPS
 * (test/support/appInsightsIngestion.ts, `POST /v2.1/track`, a bearer token required), the App Service managed
 * identity endpoint (IDENTITY_ENDPOINT + IDENTITY_HEADER), Azurite and the model stand-in. The app runs as its own
 * process with the environment the Functions platform gives a worker (WEBSITE_SITE_NAME, FUNCTIONS_WORKER_RUNTIME);
 * the process refuses every connection off loopback and lists what it tried (test/support/loopbackOnly.ts). Each
 * request carries a `traceparent` as the Functions host hands one to the worker.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { call } from '../support/app';
import { startAppProcess, type AppProcess } from '../support/appProcess';
import { startIngestionStandIn, type Envelope, type IngestionStandIn } from '../support/appInsightsIngestion';
import { startIdentityStandIn, type IdentityStandIn } from '../support/identityStandIn';
import { refusedConnections } from '../support/loopbackOnly';
import { createLoopbackCertificate, type LoopbackCertificate } from '../support/tls';
import { startAzurite, type RunningAzurite } from '../../local/azurite';
import { startModelStandIn, type ModelStandIn } from '../../local/modelStandIn';

const SITE_NAME = 'func-chat-ai-test';
/** A fresh key per run: the exporter keeps unsent envelopes on disk per key, and must not replay an older run's. */
const INSTRUMENTATION_KEY = randomUUID();
const SECRET = 'kumquat-7391';
/** When the exporter's long-interval statsbeat sends its first report after start (its own timer). */
const STATSBEAT_FIRST_REPORT_MS = 15_000;
/** The user-assigned identity infra/app/api.bicep gives the app (it holds Monitoring Metrics Publisher). */
const CLIENT_ID = '6c1f2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b';

let certificate: LoopbackCertificate;
let folder: string;
let azurite: RunningAzurite;
let model: ModelStandIn;
let identity: IdentityStandIn;
let ingestion: IngestionStandIn;
let app: AppProcess;

before(async () => {
  certificate = await createLoopbackCertificate();
  folder = await mkdtemp(join(tmpdir(), 'app-insights-'));
  azurite = await startAzurite();
  model = await startModelStandIn({ expectedApiKey: 'test-key' });
  identity = await startIdentityStandIn();
  ingestion = await startIngestionStandIn({ certificate, requireBearer: identity.token });
  app = await startAppProcess({
    TABLES_CONNECTION_STRING: azurite.connectionString,
    TABLES_PREFIX: `ai${Date.now().toString(36)}`,
    AZURE_OPENAI_ENDPOINT: model.url,
    AZURE_OPENAI_DEPLOYMENT: 'chat',
    AZURE_OPENAI_MODEL: 'gpt-4o-mini',
    AZURE_OPENAI_API_KEY: 'test-key',
    AUTH_MODE: 'none',
    LIMIT_REQUESTS_PER_MINUTE: '0',
    LIMIT_TOKENS_PER_DAY: '0',
    APPLICATIONINSIGHTS_CONNECTION_STRING: `InstrumentationKey=${INSTRUMENTATION_KEY};IngestionEndpoint=${ingestion.endpoint}`,
    // The managed identity, as App Service and Functions expose it; the only way to a token here.
    IDENTITY_ENDPOINT: identity.endpoint,
    IDENTITY_HEADER: identity.header,
    AZURE_CLIENT_ID: CLIENT_ID,
    // Trust in the ingestion stand-in's certificate for this child only.
    NODE_EXTRA_CA_CERTS: certificate.certificatePath,
    // What the platform sets for a Node.js worker.
    WEBSITE_SITE_NAME: SITE_NAME,
    FUNCTIONS_WORKER_RUNTIME: 'node',
    FUNCTIONS_EXTENSION_VERSION: '~4',
    OTEL_METRIC_EXPORT_INTERVAL: '500',
    LOOPBACK_ONLY_LOG: join(folder, 'refused.jsonl'),
  });
});

after(async () => {
  await app?.stop();
  await ingestion?.close();
  await identity?.close();
  await model?.close();
  await azurite?.stop();
  await certificate?.remove();
  if (folder) await rm(folder, { recursive: true, force: true });
});

/** A W3C trace context as the host would hand it to the worker. */
function hostSpan() {
  const traceId = randomBytes(16).toString('hex');
  const spanId = randomBytes(8).toString('hex');
  return { traceId, spanId, traceparent: `00-${traceId}-${spanId}-01` };
}

const sent: { traceIds: string[]; promptTokens: number; completionTokens: number } = {
  traceIds: [],
  promptTokens: 0,
  completionTokens: 0,
};

async function createConversation(): Promise<string> {
  const host = hostSpan();
  sent.traceIds.push(host.traceId);
  const created = await call('POST', `${app.api}/conversations`, {}, { traceparent: host.traceparent });
  assert.equal(created.status, 201, created.text);
  return created.body.id as string;
}

const isSpan = (envelope: Envelope) =>
  envelope.data.baseType === 'RemoteDependencyData' || envelope.data.baseType === 'RequestData';
const spansOf = (traceId: string) =>
  ingestion.envelopes().filter((envelope) => isSpan(envelope) && envelope.tags['ai.operation.id'] === traceId);

/** The dependencies of one trace, once its turn, model call and commit have all arrived. */
function trace(traceId: string, names: string[]): Promise<Map<string, Envelope>> {
  return ingestion.waitFor(() => {
    const byName = new Map(spansOf(traceId).map((envelope) => [String(envelope.data.baseData.name), envelope]));
    return names.every((name) => byName.has(name)) ? byName : undefined;
  });
}

/** Sends one turn with the host's trace context; returns the response and where it should land. */
async function sendTurn(content: string) {
  const conversationId = await createConversation();
  const host = hostSpan();
  sent.traceIds.push(host.traceId);
  const response = await call(
    'POST',
    `${app.api}/conversations/${conversationId}/messages`,
    { content },
    { traceparent: host.traceparent },
  );
  return { response, conversationId, traceId: host.traceId, hostSpanId: host.spanId };
}

describe('Application Insights (Azure Monitor distro, Entra ID)', () => {
  let turn: Awaited<ReturnType<typeof sendTurn>> & { spans: Map<string, Envelope> };
  let failedTurn: Awaited<ReturnType<typeof sendTurn>> & { spans: Map<string, Envelope> };

  before(async () => {
    // Both turns first, then one wait: the distro exports spans in batches every 5 s.
    const ok = await sendTurn(`A secret only the model may read: ${SECRET}`);
    assert.equal(ok.response.status, 200, ok.response.text);
    sent.promptTokens += ok.response.body.usage.promptTokens as number;
    sent.completionTokens += ok.response.body.usage.completionTokens as number;
    model.enqueueFault({ kind: 'prompt_filtered' });
    const failed = await sendTurn('Anything');
    assert.equal(failed.response.status, 422, failed.response.text);

    turn = { ...ok, spans: await trace(ok.traceId, ['chat.turn', 'chat gpt-4o-mini', 'storage commitTurn']) };
    failedTurn = { ...failed, spans: await trace(failed.traceId, ['chat.turn', 'chat gpt-4o-mini']) };
    // PRINT_ENVELOPES=1 prints what the README shows.
    if (process.env['PRINT_ENVELOPES']) {
      const metric = ingestion.envelopes().find((envelope) => envelope.data.baseType === 'MetricData');
      console.log(JSON.stringify([turn.spans.get('chat gpt-4o-mini'), metric], null, 2));
    }
  });

  it('authenticates with a token the managed identity issued for Azure Monitor', () => {
    // The exporter asks for the scope https://monitor.azure.com/.default; the App Service protocol names its resource.
    const monitor = identity.requests.filter((request) => request.query.resource === 'https://monitor.azure.com');
    assert.ok(monitor.length >= 1, JSON.stringify(identity.requests.map((request) => request.query)));
    for (const request of monitor) {
      assert.equal(request.headers['x-identity-header'], identity.header);
      assert.equal(request.query.client_id, CLIENT_ID, "the app's user-assigned identity");
    }
    const tracks = ingestion.requests.filter((request) => request.path === '/v2.1/track');
    assert.ok(tracks.length >= 1);
    // The stand-in refuses any other token with 401; every export presented this one.
    for (const request of tracks) assert.equal(request.headers.authorization, `Bearer ${identity.token}`);
    assert.deepEqual(
      ingestion.requests.filter((request) => request.path !== '/v2.1/track').map((request) => request.path),
      [],
      'no other ingestion endpoint is called',
    );
  });

  it('stores the model call as a dependency with the GenAI attributes as custom properties', () => {
    const chat = turn.spans.get('chat gpt-4o-mini');
    assert.ok(chat);
    assert.equal(chat.name, 'Microsoft.ApplicationInsights.RemoteDependency');
    assert.equal(chat.iKey, INSTRUMENTATION_KEY);
    assert.equal(chat.tags['ai.cloud.role'], SITE_NAME, 'the role the Functions host reports for the app');
    const data = chat.data.baseData;
    assert.equal(data.success, true);
    assert.match(String(data.duration), /^\d{2}:\d{2}:\d{2}\.\d+$/);
    const properties = data.properties ?? {};
    assert.deepEqual(
      {
        operation: properties['gen_ai.operation.name'],
        provider: properties['gen_ai.provider.name'],
        requestModel: properties['gen_ai.request.model'],
        deployment: properties['azure.openai.deployment'],
        conversation: properties['gen_ai.conversation.id'],
        input: properties['gen_ai.usage.input_tokens'],
        output: properties['gen_ai.usage.output_tokens'],
        finish: properties['gen_ai.response.finish_reasons'],
      },
      {
        operation: 'chat',
        provider: 'azure.ai.openai',
        requestModel: 'gpt-4o-mini',
        deployment: 'chat',
        conversation: turn.conversationId,
        // Custom properties are strings; arrays arrive as their JSON.
        input: String(sent.promptTokens),
        output: String(sent.completionTokens),
        finish: '["stop"]',
      },
    );
    assert.match(properties['gen_ai.response.id'] ?? '', /^chatcmpl-/);
  });

  it('one operation per request: the turn under the host span, storage and the model call under the turn', () => {
    const turnSpan = turn.spans.get('chat.turn');
    assert.ok(turnSpan);
    assert.equal(turnSpan.tags['ai.operation.parentId'], turn.hostSpanId);
    assert.equal(turnSpan.data.baseData.type, 'InProc');
    const turnId = turnSpan.data.baseData.id;
    const children = [...turn.spans.values()].filter((span) => span !== turnSpan);
    assert.deepEqual(children.map((span) => span.data.baseData.name).sort(), [
      'chat gpt-4o-mini',
      'storage commitTurn',
      'storage loadForTurn',
    ]);
    for (const span of children) {
      assert.equal(span.tags['ai.operation.id'], turn.traceId);
      assert.equal(span.tags['ai.operation.parentId'], turnId, `${String(span.data.baseData.name)} under the turn`);
    }
    // Nothing the app exported started a trace of its own or stood in for the host's request.
    const stray = ingestion
      .envelopes()
      .filter((envelope) => isSpan(envelope) && !sent.traceIds.includes(envelope.tags['ai.operation.id'] ?? ''));
    assert.deepEqual(
      stray.map((envelope) => envelope.data.baseData.name),
      [],
    );
    assert.ok(!ingestion.envelopes().some((envelope) => envelope.data.baseType === 'RequestData'));
  });

  it('a failed model call is an unsuccessful dependency with its error type', () => {
    const spans = failedTurn.spans;
    const chat = spans.get('chat gpt-4o-mini');
    assert.equal(chat?.data.baseData.success, false);
    // The exporter drops `error.type` (it reads it as an HTTP attribute); the app keeps a copy it does not drop.
    assert.equal(chat?.data.baseData.properties?.['app.error.type'], 'content_filtered');
    assert.equal(spans.get('chat.turn')?.data.baseData.success, false);
    assert.equal(spans.get('chat.turn')?.data.baseData.properties?.['app.error.type'], 'content_filtered');
  });

  it('exports gen_ai.client.token.usage and gen_ai.client.operation.duration as metrics', async () => {
    const metricsNamed = (name: string) =>
      ingestion
        .envelopes()
        .filter((envelope) => envelope.data.baseType === 'MetricData')
        .filter((envelope) => (envelope.data.baseData.metrics as { name: string }[])[0]?.name === name);
    const total = (envelopes: Envelope[]) =>
      envelopes.reduce((sum, envelope) => sum + (envelope.data.baseData.metrics as { value: number }[])[0]!.value, 0);
    const tokens = (type: string) =>
      total(
        metricsNamed('gen_ai.client.token.usage').filter(
          (e) => e.data.baseData.properties?.['gen_ai.token.type'] === type,
        ),
      );
    // Delta temporality: each export holds what was recorded since the last, so the points add up to the usage.
    await ingestion.waitFor(() =>
      tokens('input') === sent.promptTokens &&
      tokens('output') === sent.completionTokens &&
      metricsNamed('gen_ai.client.operation.duration').some((e) => e.data.baseData.properties?.['error.type'])
        ? true
        : undefined,
    );
    const usage = metricsNamed('gen_ai.client.token.usage')[0]!;
    assert.equal(usage.name, 'Microsoft.ApplicationInsights.Metric');
    assert.equal(usage.data.baseData.properties?.['azure.openai.deployment'], 'chat');
    assert.equal(usage.data.baseData.properties?.['gen_ai.provider.name'], 'azure.ai.openai');
    const durations = metricsNamed('gen_ai.client.operation.duration');
    assert.ok(total(durations) > 0);
    assert.equal(
      durations.find((e) => e.data.baseData.properties?.['error.type'])?.data.baseData.properties?.['error.type'],
      'content_filtered',
    );
  });

  it('sends no message content by default', () => {
    assert.ok(ingestion.envelopes().length > 0);
    assert.doesNotMatch(JSON.stringify(ingestion.requests.map((request) => request.envelopes)), new RegExp(SECRET));
    for (const envelope of ingestion.envelopes()) {
      assert.equal(envelope.data.baseData.properties?.['gen_ai.input.messages'], undefined);
      assert.equal(envelope.data.baseData.properties?.['gen_ai.output.messages'], undefined);
    }
  });

  it('reaches nothing off loopback: no live metrics, no statsbeat, no instance metadata token probe', async () => {
    // Statsbeat would first report 15 s after the exporter started (shortly before its first export): give it that
    // long to try.
    const firstExportAt = Math.min(...ingestion.requests.map((request) => request.at));
    await delay(Math.max(0, firstExportAt + STATSBEAT_FIRST_REPORT_MS + 2_000 - Date.now()));
    // The one thing refused: the distro's Azure VM resource detector, which asks the instance metadata service for
    // VM attributes on every start, wherever it runs (never a token: that comes from IDENTITY_ENDPOINT above).
    const vmMetadata = /^GET \/metadata\/instance\/compute\?/;
    const refused = refusedConnections(join(folder, 'refused.jsonl'));
    assert.deepEqual(
      refused.filter((attempt) => !(attempt.target === '169.254.169.254:80' && vmMetadata.test(attempt.request ?? ''))),
      [],
    );
  });
});

/**
 * OpenTelemetry for every turn, exported over OTLP (http/json) to a loopback receiver: two app processes, one with
 * the default (no message content) and one that opted in to content. Each turn is sent with a `traceparent` as the
 * Functions host would hand it to the worker, so the turn must join that trace rather than start its own.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { call } from '../support/app';
import { startAppProcess, type AppProcess } from '../support/appProcess';
import { startAzurite, type RunningAzurite } from '../../local/azurite';
import { startModelStandIn, type ModelStandIn } from '../../local/modelStandIn';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../support/otlpReceiver';

let azurite: RunningAzurite;
let model: ModelStandIn;
let common: Record<string, string>;
let receiver: OtlpReceiver;
let plain: AppProcess;
let withContent: AppProcess;

before(async () => {
  azurite = await startAzurite();
  model = await startModelStandIn({ expectedApiKey: 'test-key' });
  receiver = await startOtlpReceiver();
  common = {
    TABLES_CONNECTION_STRING: azurite.connectionString,
    AZURE_OPENAI_ENDPOINT: model.url,
    AZURE_OPENAI_DEPLOYMENT: 'chat',
    AZURE_OPENAI_MODEL: 'gpt-4o-mini',
    AZURE_OPENAI_API_KEY: 'test-key',
    AUTH_MODE: 'none',
    LIMIT_REQUESTS_PER_MINUTE: '0',
    LIMIT_TOKENS_PER_DAY: '0',
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_BSP_SCHEDULE_DELAY: '100',
    OTEL_METRIC_EXPORT_INTERVAL: '300',
    OTEL_LOGS_EXPORTER: 'none',
  };
  [plain, withContent] = await Promise.all([
    startAppProcess({ ...common, TABLES_PREFIX: `otel${Date.now().toString(36)}a`, OTEL_SERVICE_NAME: 'chat-plain' }),
    startAppProcess({
      ...common,
      TABLES_PREFIX: `otel${Date.now().toString(36)}b`,
      OTEL_SERVICE_NAME: 'chat-content',
      OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: 'true',
    }),
  ]);
});

after(async () => {
  await plain?.stop();
  await withContent?.stop();
  await receiver?.close();
  await model?.close();
  await azurite?.stop();
});

/** A turn sent the way the host forwards a request: with its own span's W3C trace context. */
async function turn(app: AppProcess, content: string, stream = false) {
  const created = await call('POST', `${app.api}/conversations`, {});
  assert.equal(created.status, 201, created.text);
  const traceId = randomBytes(16).toString('hex');
  const hostSpanId = randomBytes(8).toString('hex');
  const headers = { traceparent: `00-${traceId}-${hostSpanId}-01`, ...(stream ? { accept: 'text/event-stream' } : {}) };
  const reply = await call('POST', `${app.api}/conversations/${created.body.id}/messages`, { content }, headers);
  assert.equal(reply.status, 200, reply.text);
  return { conversationId: created.body.id as string, traceId, hostSpanId, text: reply.text };
}

/** The spans of one trace once its turn span and model span have arrived. */
async function traceOf(traceId: string): Promise<ReceivedSpan[]> {
  return receiver.waitFor(() => {
    const spans = receiver.spans().filter((span) => span.traceId === traceId);
    return spans.some((span) => span.name === 'chat.turn') && spans.some((span) => span.name.startsWith('chat '))
      ? spans
      : undefined;
  });
}

/** The trace as an indented tree of span names and attributes, conversation ids shortened. */
function printTrace(sent: { traceId: string; hostSpanId: string; conversationId: string }, spans: ReceivedSpan[]) {
  const lines = [`trace ${sent.traceId} (host span ${sent.hostSpanId})`];
  const visit = (parent: string, depth: number) => {
    for (const span of spans.filter((candidate) => candidate.parentSpanId === parent)) {
      const attributes = JSON.stringify(span.attributes).replaceAll(
        sent.conversationId,
        `${sent.conversationId.slice(0, 8)}-…`,
      );
      lines.push(`${'  '.repeat(depth)}${span.name}  ${attributes}`);
      visit(span.spanId, depth + 1);
    }
  };
  visit(sent.hostSpanId, 1);
  return lines.join('\n');
}

describe('OpenTelemetry over OTLP', () => {
  it('one trace per turn: the turn under the host span, storage calls and a GenAI chat span under the turn', async () => {
    const sent = await turn(plain, 'What is the capital of Portugal?');
    const spans = await traceOf(sent.traceId);
    const turnSpan = spans.find((span) => span.name === 'chat.turn');
    assert.ok(turnSpan);
    // PRINT_TRACE=1 prints the trace as the README shows it.
    if (process.env['PRINT_TRACE']) console.log(printTrace(sent, spans));
    assert.equal(turnSpan.parentSpanId, sent.hostSpanId, 'the turn is a child of the host span');
    assert.equal(turnSpan.resource['service.name'], 'chat-plain');
    assert.equal(turnSpan.attributes['gen_ai.conversation.id'], sent.conversationId);
    assert.equal(turnSpan.attributes['azure.openai.deployment'], 'chat');

    const storage = spans.filter((span) => span.name.startsWith('storage '));
    assert.ok(
      storage.some((span) => span.name === 'storage loadForTurn'),
      spans.map((span) => span.name).join(),
    );
    assert.ok(storage.some((span) => span.name === 'storage commitTurn'));
    for (const span of storage) {
      assert.equal(span.parentSpanId, turnSpan.spanId, `${span.name} is a child of the turn`);
      assert.equal(span.kind, 3);
    }

    const chat = spans.find((span) => span.name === 'chat gpt-4o-mini');
    assert.ok(chat, spans.map((span) => span.name).join());
    assert.equal(chat.parentSpanId, turnSpan.spanId);
    assert.equal(chat.kind, 3, 'a client span');
    const reply = JSON.parse(sent.text) as { usage: { promptTokens: number; completionTokens: number } };
    assert.deepEqual(
      {
        operation: chat.attributes['gen_ai.operation.name'],
        provider: chat.attributes['gen_ai.provider.name'],
        requestModel: chat.attributes['gen_ai.request.model'],
        conversation: chat.attributes['gen_ai.conversation.id'],
        input: chat.attributes['gen_ai.usage.input_tokens'],
        output: chat.attributes['gen_ai.usage.output_tokens'],
        finish: chat.attributes['gen_ai.response.finish_reasons'],
        deployment: chat.attributes['azure.openai.deployment'],
      },
      {
        operation: 'chat',
        provider: 'azure.ai.openai',
        requestModel: 'gpt-4o-mini',
        conversation: sent.conversationId,
        input: reply.usage.promptTokens,
        output: reply.usage.completionTokens,
        finish: ['stop'],
        deployment: 'chat',
      },
    );
    assert.match(String(chat.attributes['gen_ai.response.id']), /^chatcmpl-/);
    assert.equal(typeof chat.attributes['gen_ai.response.model'], 'string');
    assert.equal(typeof chat.attributes['gen_ai.usage.cache_read.input_tokens'], 'number');
    assert.equal(chat.attributes['error.type'], undefined);
  });

  it('records no message content by default', async () => {
    const sent = await turn(plain, 'A secret only the model may read: kumquat-7391');
    const spans = await traceOf(sent.traceId);
    const exported = JSON.stringify(spans);
    assert.doesNotMatch(exported, /kumquat-7391/);
    assert.ok(!spans.some((span) => 'gen_ai.input.messages' in span.attributes));
  });

  it('records the messages and the reply on the chat span when a setting opts in', async () => {
    const sent = await turn(withContent, 'A line to record: quince-2204', true);
    const spans = await traceOf(sent.traceId);
    const chat = spans.find((span) => span.name === 'chat gpt-4o-mini');
    assert.ok(chat);
    const input = JSON.parse(String(chat.attributes['gen_ai.input.messages'])) as { role: string; parts: unknown[] }[];
    assert.equal(input.at(-1)?.role, 'user');
    assert.match(JSON.stringify(input.at(-1)?.parts), /quince-2204/);
    const output = JSON.parse(String(chat.attributes['gen_ai.output.messages'])) as { role: string }[];
    assert.equal(output[0]?.role, 'assistant');
    assert.equal(spans.find((span) => span.name === 'chat.turn')?.attributes['app.turn.streamed'], true);
  });

  it('exports gen_ai.client.token.usage and gen_ai.client.operation.duration with the deployment', async () => {
    const points = await receiver.waitFor(() => {
      const found = receiver.points().filter((point) => point.metric.startsWith('gen_ai.client.'));
      const types = new Set(found.map((point) => `${point.metric}/${String(point.attributes['gen_ai.token.type'])}`));
      return types.has('gen_ai.client.token.usage/input') &&
        types.has('gen_ai.client.token.usage/output') &&
        types.has('gen_ai.client.operation.duration/undefined')
        ? found
        : undefined;
    });
    const usage = points.find((point) => point.metric === 'gen_ai.client.token.usage');
    assert.equal(usage?.unit, '{token}');
    assert.equal(usage?.attributes['gen_ai.provider.name'], 'azure.ai.openai');
    assert.equal(usage?.attributes['azure.openai.deployment'], 'chat');
    const duration = points.find((point) => point.metric === 'gen_ai.client.operation.duration');
    assert.equal(duration?.unit, 's');
    assert.ok((duration?.sum ?? 0) > 0);
  });

  it('a failed model call is a failed chat span with error.type', async () => {
    model.enqueueFault({ kind: 'prompt_filtered' });
    const created = await call('POST', `${plain.api}/conversations`, {});
    const traceId = randomBytes(16).toString('hex');
    const failed = await call(
      'POST',
      `${plain.api}/conversations/${created.body.id}/messages`,
      { content: 'Anything' },
      { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` },
    );
    assert.equal(failed.status, 422);
    const spans = await traceOf(traceId);
    const chat = spans.find((span) => span.name === 'chat gpt-4o-mini');
    assert.equal(chat?.attributes['error.type'], 'content_filtered');
    assert.equal(chat?.status.code, 2, 'status ERROR');
    assert.equal(spans.find((span) => span.name === 'chat.turn')?.attributes['error.type'], 'content_filtered');
  });

  it('exports what it still buffers when the host stops the process (appTerminate)', async () => {
    // Batches and metric readings that would wait ten minutes: only the shutdown can send them.
    const buffered = await startAppProcess({
      ...common,
      TABLES_PREFIX: `otel${Date.now().toString(36)}c`,
      AZURE_OPENAI_DEPLOYMENT: 'buffered',
      OTEL_SERVICE_NAME: 'chat-buffered',
      OTEL_BSP_SCHEDULE_DELAY: '600000',
      OTEL_METRIC_EXPORT_INTERVAL: '600000',
    });
    let sent: Awaited<ReturnType<typeof turn>>;
    try {
      sent = await turn(buffered, 'Flush me');
    } finally {
      await buffered.stop(); // SIGTERM: the host closes and runs the appTerminate hooks
    }
    const spans = receiver.spans().filter((span) => span.traceId === sent.traceId);
    assert.ok(
      spans.some((span) => span.name === 'chat.turn') && spans.some((span) => span.name === 'chat gpt-4o-mini'),
      `the turn's spans were exported before the process ended: ${spans.map((span) => span.name).join(', ')}`,
    );
    assert.ok(spans.every((span) => span.resource['service.name'] === 'chat-buffered'));
    const points = receiver.points().filter((point) => point.attributes['azure.openai.deployment'] === 'buffered');
    assert.ok(
      points.some((point) => point.metric === 'gen_ai.client.token.usage'),
      'the token usage metric was exported before the process ended',
    );
  });
});

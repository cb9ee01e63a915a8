/**
 * Tool calling end to end: real HTTP through the local host, real Azurite, the model stand-in asking for tools the way
 * Azure OpenAI does (and refusing orphaned calls or results as the service would), and the real http_lookup tool
 * reading a loopback service with a key.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TableClient } from '@azure/data-tables';
import { call, startTestApp, type TestApp } from '../support/app';
import { BIG_BODY, BIG_BODY_CHARS, startLookupStandIn, type LookupStandIn } from '../support/lookupStandIn';
import type { ReplyRequest, StandInMessage, StandInToolReply } from '../../local/modelStandIn';
import { collectEvents } from '../support/sseClient';
import { Webhook } from 'standardwebhooks';
import { randomUUID } from 'node:crypto';

const MAX_ROUNDS = 3;
const TOOL_TIMEOUT_MS = 1_500;
const OUTPUT_CHARS = 50_000;
const API_KEY = { header: 'x-lookup-key', value: 'lookup-secret' };
const WEBHOOK_SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

let app: TestApp;
let lookup: LookupStandIn;

/** Messages after the last user message: what this turn has produced so far. */
function turnSoFar(messages: StandInMessage[]): StandInMessage[] {
  const lastUser = messages.map((message) => message.role).lastIndexOf('user');
  return messages.slice(lastUser + 1);
}

function toolResults(messages: StandInMessage[]): StandInMessage[] {
  return turnSoFar(messages).filter((message) => message.role === 'tool');
}

/** The model: what it does depends on a keyword in the user's message and on what the turn has produced so far. */
function script(request: ReplyRequest): string | StandInToolReply {
  const user = [...request.messages].reverse().find((message) => message.role === 'user');
  const text = typeof user?.content === 'string' ? user.content : '';
  const soFar = turnSoFar(request.messages);
  const offered = request.tools.map((tool) => tool.function.name);
  const results = toolResults(request.messages);
  const first = soFar.length === 0;
  if (text.startsWith('LOOP')) {
    return offered.length > 0
      ? { toolCalls: [{ name: 'get_current_time', arguments: '{"timeZone":"UTC"}' }] }
      : `Final answer after ${results.length} tool results, without tools.`;
  }
  if (!first) return `Answer from tools: ${results.map((result) => String(result.content).slice(0, 60)).join(' | ')}`;
  if (text.startsWith('TIME')) {
    return { toolCalls: [{ name: 'get_current_time', arguments: '{"timeZone":"Asia/Tokyo"}' }] };
  }
  if (text.startsWith('PARALLEL')) {
    return {
      toolCalls: [
        { name: 'http_lookup', arguments: '{"path":"barrier/1"}' },
        { name: 'http_lookup', arguments: '{"path":"barrier/2"}' },
      ],
    };
  }
  if (text.startsWith('FAILS')) {
    return {
      toolCalls: [
        { id: 'call_fail', name: 'http_lookup', arguments: '{"path":"fail"}' },
        { id: 'call_hang', name: 'http_lookup', arguments: '{"path":"hang"}' },
        { id: 'call_json', name: 'get_current_time', arguments: '{"timeZone": ' },
        { id: 'call_schema', name: 'get_current_time', arguments: '{"timeZone":"Mars/Olympus_Mons"}' },
      ],
    };
  }
  if (text.startsWith('BIG')) return { toolCalls: [{ name: 'http_lookup', arguments: '{"path":"big"}' }] };
  if (text.startsWith('CLIENT')) {
    return { toolCalls: [{ id: 'call_slot', name: 'pick_slot', arguments: '{"day":"friday"}' }] };
  }
  return 'No tools needed.';
}

before(async () => {
  lookup = await startLookupStandIn({ apiKey: API_KEY, barrier: 2 });
  app = await startTestApp({
    model: { reply: script },
    queue: true,
    env: {
      WEBHOOK_SECRET: WEBHOOK_SECRET,
      CHAT_TOOLS: 'get_current_time,http_lookup',
      CHAT_MAX_TOOL_ROUNDS: String(MAX_ROUNDS),
      CHAT_TOOL_TIMEOUT_MS: String(TOOL_TIMEOUT_MS),
      CHAT_TOOL_OUTPUT_CHARS: String(OUTPUT_CHARS),
      TOOL_HTTP_LOOKUP_URL: lookup.url,
      TOOL_HTTP_LOOKUP_API_KEY: API_KEY.value,
      TOOL_HTTP_LOOKUP_API_KEY_HEADER: API_KEY.header,
    },
  });
});

after(async () => {
  await app?.close();
  await lookup?.close();
});

async function conversation(body: Record<string, unknown> = {}): Promise<string> {
  const created = await call('POST', `${app.api}/conversations`, body);
  assert.equal(created.status, 201, created.text);
  return created.body.id;
}

async function send(id: string, content: string, headers: Record<string, string> = {}) {
  return call('POST', `${app.api}/conversations/${id}/messages`, { content }, headers);
}

function chatRequests() {
  return app.model.requests.filter((request) => request.body !== undefined).map((request) => request.body!);
}

function tableClient() {
  return TableClient.fromConnectionString(app.azurite.connectionString, `${process.env.TABLES_PREFIX}conversations`, {
    allowInsecureConnection: true,
  });
}

async function messageEntities(): Promise<Record<string, unknown>[]> {
  const entities: Record<string, unknown>[] = [];
  for await (const entity of tableClient().listEntities<Record<string, unknown>>()) {
    if (typeof entity.rowKey === 'string' && entity.rowKey.startsWith('m')) entities.push(entity);
  }
  return entities;
}

describe('server tools', () => {
  it('calls a tool with validated arguments, gives its result to the model, and stores the whole turn in one transaction', async () => {
    const id = await conversation();
    app.model.clear();
    const answer = await send(id, 'TIME in Tokyo?');
    assert.equal(answer.status, 200, answer.text);
    assert.equal(answer.body.status, 'completed');
    assert.equal(answer.body.context.toolRounds, 1);

    const [first, second] = chatRequests();
    assert.deepEqual(first?.['tools'], [
      {
        type: 'function',
        function: {
          name: 'get_current_time',
          description: 'Get the current local date and time in a time zone.',
          parameters: {
            type: 'object',
            properties: {
              timeZone: {
                type: 'string',
                minLength: 1,
                maxLength: 64,
                description: 'IANA time zone name, e.g. Europe/Paris, America/New_York, Asia/Tokyo, UTC',
              },
            },
            required: ['timeZone'],
          },
        },
      },
      {
        type: 'function',
        function: {
          name: 'http_lookup',
          description: 'Look up a record in the company service by its path (read-only), e.g. orders/12345.',
          parameters: (first?.['tools'] as { function: { parameters: unknown } }[])[1]!.function.parameters,
        },
      },
    ]);
    const result = JSON.parse(String(toolResults(second!.messages)[0]?.content));
    assert.equal(result.timeZone, 'Asia/Tokyo');
    assert.equal(result.utcOffset, '+09:00');
    assert.match(result.localDateTime, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$/);

    const read = await call('GET', `${app.api}/conversations/${id}`);
    assert.equal(read.status, 200);
    const messages = read.body.messages;
    assert.deepEqual(
      messages.map((message: { role: string }) => message.role),
      ['user', 'assistant', 'tool', 'assistant'],
    );
    assert.equal(messages[1].content, '');
    assert.equal(messages[1].toolCalls[0].name, 'get_current_time');
    assert.equal(messages[1].toolCalls[0].arguments, '{"timeZone":"Asia/Tokyo"}');
    assert.equal(messages[2].toolCallId, messages[1].toolCalls[0].id);
    assert.equal(messages[3].finishReason, 'stop');
    assert.equal(messages[3].content, answer.body.message.content);
    assert.equal(answer.body.message.id, messages[3].id);

    // One entity-group transaction marks every row it writes with one commit id.
    const rows = (await messageEntities()).filter((entity) => String(entity['partitionKey']).endsWith(`|${id}`));
    assert.equal(rows.length, 4);
    assert.equal(new Set(rows.map((row) => row['commitId'])).size, 1);
  });

  it('runs two calls of one response in parallel and sends both results', async () => {
    const id = await conversation();
    app.model.clear();
    const before = lookup.requests.length;
    const answer = await send(id, 'PARALLEL lookups');
    assert.equal(answer.status, 200, answer.text);
    // The lookup service answers barrier requests only once both are in flight: sequential calls would time out.
    const barrier = lookup.requests.slice(before);
    assert.equal(barrier.length, 2);
    assert.ok(lookup.maxInFlight >= 2);
    assert.ok(
      barrier[1]!.arrivedAt <= barrier[0]!.answeredAt!,
      'the second call arrived before the first was answered',
    );
    const results = toolResults(chatRequests()[1]!.messages).map((message) => JSON.parse(String(message.content)));
    assert.deepEqual(
      results.map((result) => result.id),
      ['1', '2'],
    );
    // The key went with every lookup, and the caller was named (AUTH_MODE=none: the local caller).
    assert.ok(barrier.every((request) => request.headers[API_KEY.header] === API_KEY.value));
    assert.ok(barrier.every((request) => request.headers['x-chat-caller'] === 'local'));
    assert.ok(barrier.every((request) => request.headers['x-chat-caller-kind'] === 'local'));
  });

  it('tells the model about a throwing tool, a timed-out tool and invalid arguments, and the turn goes on', async () => {
    const id = await conversation();
    app.model.clear();
    const answer = await send(id, 'FAILS please');
    assert.equal(answer.status, 200, answer.text);
    const results = toolResults(chatRequests()[1]!.messages);
    const byId = Object.fromEntries(results.map((result) => [result.tool_call_id, JSON.parse(String(result.content))]));
    assert.equal(byId['call_fail'].error, 'failed');
    assert.match(byId['call_fail'].message, /HTTP 500/);
    assert.equal(byId['call_hang'].error, 'timed_out');
    assert.match(byId['call_hang'].message, new RegExp(`${TOOL_TIMEOUT_MS} ms`));
    assert.equal(byId['call_json'].error, 'invalid_arguments');
    assert.match(byId['call_json'].message, /not valid JSON/);
    assert.equal(byId['call_schema'].error, 'invalid_arguments');
    assert.match(byId['call_schema'].message, /IANA/);
    const read = await call('GET', `${app.api}/conversations/${id}`);
    assert.deepEqual(
      read.body.messages.map((message: { role: string }) => message.role),
      ['user', 'assistant', 'tool', 'tool', 'tool', 'tool', 'assistant'],
    );
  });

  it('stops a model that keeps calling tools after CHAT_MAX_TOOL_ROUNDS and gets a final answer without tools', async () => {
    const id = await conversation();
    app.model.clear();
    const answer = await send(id, 'LOOP forever');
    assert.equal(answer.status, 200, answer.text);
    const requests = chatRequests();
    assert.equal(requests.length, MAX_ROUNDS + 1);
    assert.ok(requests.slice(0, MAX_ROUNDS).every((request) => Array.isArray(request['tools'])));
    assert.equal(requests[MAX_ROUNDS]!['tools'], undefined);
    assert.equal(answer.body.message.content, `Final answer after ${MAX_ROUNDS} tool results, without tools.`);
    assert.equal(answer.body.context.toolRounds, MAX_ROUNDS);
  });

  it('bounds a 200,000-character output as documented, and stores exactly what the model was sent', async () => {
    const id = await conversation();
    app.model.clear();
    const answer = await send(id, 'BIG output');
    assert.equal(answer.status, 200, answer.text);
    const sent = String(toolResults(chatRequests()[1]!.messages)[0]?.content);
    assert.equal(sent.length, OUTPUT_CHARS);
    assert.ok(BIG_BODY.startsWith(sent.slice(0, sent.lastIndexOf('\n['))));
    assert.match(sent, new RegExp(`\\[tool output truncated: first \\d+ of ${BIG_BODY_CHARS} characters\\]$`));
    const read = await call('GET', `${app.api}/conversations/${id}`);
    assert.equal(read.body.messages.length, 4);
    assert.equal(read.body.messages[2].content, sent);
    assert.equal(read.body.messages[0].content, 'BIG output');
    // Longer than one string property: stored across content, content_1.
    const row = (await messageEntities()).find(
      (entity) => String(entity['partitionKey']).endsWith(`|${id}`) && entity['role'] === 'tool',
    );
    assert.equal(typeof row?.['content_1'], 'string');
  });

  it('streams tool.call and tool.result events between the deltas', async () => {
    const id = await conversation();
    const response = await fetch(`${app.api}/conversations/${id}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ content: 'TIME streamed' }),
    });
    const events = await collectEvents(response);
    const names = events.map((event) => event.event);
    assert.equal(names[0], 'turn.started');
    assert.ok(names.indexOf('tool.call') < names.indexOf('tool.result'));
    assert.ok(names.indexOf('tool.result') < names.indexOf('message.delta'));
    assert.equal(names.at(-1), 'turn.completed');
    const toolCall = events[names.indexOf('tool.call')]!.data;
    assert.equal(toolCall.name, 'get_current_time');
    assert.equal(toolCall.round, 1);
    assert.equal(toolCall.client, false);
    const toolResult = events[names.indexOf('tool.result')]!.data;
    assert.equal(toolResult.toolCallId, toolCall.id);
    assert.equal(JSON.parse(toolResult.output).timeZone, 'Asia/Tokyo');
    const completed = events.at(-1)!.data;
    const deltas = events.filter((event) => event.event === 'message.delta').map((event) => event.data.content);
    assert.equal(deltas.join(''), completed.message.content);
  });
});

describe('server tools in webhook and queued turns', () => {
  it('a signed webhook turn runs a server tool the same way', async () => {
    const id = `msg_${randomUUID()}`;
    const at = new Date();
    const body = JSON.stringify({ threadId: `tools-${id}`, content: 'TIME in Tokyo please' });
    const answered = await call('POST', `${app.api}/webhooks/messages`, body, {
      'content-type': 'application/json',
      'webhook-id': id,
      'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
      'webhook-signature': new Webhook(WEBHOOK_SECRET).sign(id, at, body),
    });
    assert.equal(answered.status, 200, answered.text);
    assert.match(answered.body.message.content, /^Answer from tools: .*Asia\/Tokyo/);
    // The webhook's conversation belongs to the webhook caller: the model's last request shows the tool round.
    const last = chatRequests().at(-1)!;
    assert.deepEqual(
      turnSoFar(last.messages).map((message) => message.role),
      ['assistant', 'tool'],
    );
  });

  it('a queued turn runs a server tool the same way, and one with client tools is refused before it is queued', async () => {
    const id = await conversation();
    const posted = await call(
      'POST',
      `${app.api}/conversations/${id}/messages`,
      { content: 'TIME in Tokyo, queued' },
      { prefer: 'respond-async' },
    );
    assert.equal(posted.status, 202, posted.text);
    const statusUrl = `${app.api.replace(/\/api$/, '')}${posted.headers.get('location') ?? ''}`;
    const deadline = Date.now() + 30_000;
    let status = await call('GET', statusUrl);
    while (status.body.status !== 'completed' && status.body.status !== 'failed' && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      status = await call('GET', statusUrl);
    }
    assert.equal(status.body.status, 'completed', status.text);
    assert.match(status.body.message.content, /^Answer from tools: .*Asia\/Tokyo/);
    const read = await call('GET', `${app.api}/conversations/${id}`);
    assert.deepEqual(
      read.body.messages.map((message: { role: string }) => message.role),
      ['user', 'assistant', 'tool', 'assistant'],
    );

    const withClientTools = await conversation({
      clientTools: [{ name: 'pick_slot', description: 'Pick a slot.', parameters: { type: 'object' } }],
    });
    const refused = await call(
      'POST',
      `${app.api}/conversations/${withClientTools}/messages`,
      { content: 'CLIENT queued' },
      { prefer: 'respond-async' },
    );
    assert.equal(refused.status, 400, refused.text);
    assert.equal(refused.body.code, 'client_tools_not_allowed');
    assert.equal(refused.headers.get('location'), null);
  });
});

describe('conversation tool choices', () => {
  it('offers only the chosen subset, and refuses unknown tools and invalid client tool schemas', async () => {
    const id = await conversation({ tools: ['get_current_time'] });
    const read = await call('GET', `${app.api}/conversations/${id}`);
    assert.deepEqual(read.body.tools, ['get_current_time']);
    app.model.clear();
    await send(id, 'nothing special');
    assert.deepEqual(
      (chatRequests()[0]?.['tools'] as { function: { name: string } }[]).map((tool) => tool.function.name),
      ['get_current_time'],
    );

    const unknown = await call('POST', `${app.api}/conversations`, { tools: ['send_email'] });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.body.errors[0].field, 'tools/0');
    for (const parameters of [{ type: 'string' }, { type: 'object', properties: { a: { type: 'nonsense' } } }, 'x']) {
      const bad = await call('POST', `${app.api}/conversations`, {
        clientTools: [{ name: 'pick', description: 'Pick.', parameters }],
      });
      assert.equal(bad.status, 400, JSON.stringify(parameters));
      assert.equal(bad.body.code, 'invalid_request');
      assert.match(bad.body.errors[0].field, /clientTools\/0\/parameters/);
    }
    const shadow = await call('POST', `${app.api}/conversations`, {
      clientTools: [{ name: 'http_lookup', description: 'Mine.', parameters: { type: 'object' } }],
    });
    assert.equal(shadow.status, 400);
  });
});

describe('client tools', () => {
  const pickSlot = {
    name: 'pick_slot',
    description: 'Ask the user to pick a delivery slot.',
    parameters: { type: 'object', properties: { day: { type: 'string', description: 'Day of the week' } } },
  };

  it('pauses with requires_action, blocks new messages, and continues with the posted results exactly once', async () => {
    const id = await conversation({ clientTools: [pickSlot] });
    app.model.clear();
    const paused = await send(id, 'CLIENT book a slot');
    assert.equal(paused.status, 200, paused.text);
    assert.equal(paused.body.status, 'requires_action');
    assert.deepEqual(paused.body.toolCalls, [{ id: 'call_slot', name: 'pick_slot', arguments: '{"day":"friday"}' }]);
    assert.match(paused.body.turnId, /^turn_/);
    assert.equal((await call('GET', `${app.api}/conversations/${id}`)).body.messages.length, 0);
    const pending = await call('GET', `${app.api}/conversations/${id}/pending-turn`);
    assert.equal(pending.status, 200);
    assert.equal(pending.body.turnId, paused.body.turnId);

    const blocked = await send(id, 'hello?');
    assert.equal(blocked.status, 409);
    assert.equal(blocked.body.code, 'tool_results_pending');
    assert.equal(blocked.body.turnId, paused.body.turnId);
    assert.deepEqual(blocked.body.toolCalls, paused.body.toolCalls);

    const wrong = await call('POST', `${app.api}/conversations/${id}/tool-results`, {
      results: [{ toolCallId: 'call_other', output: 'x' }],
    });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body.code, 'invalid_tool_results');

    const calls = app.model.callCount;
    const body = {
      turnId: paused.body.turnId,
      results: [{ toolCallId: 'call_slot', output: { slot: 'Friday 10:00' } }],
    };
    const headers = { 'Idempotency-Key': 'results-1' };
    const done = await call('POST', `${app.api}/conversations/${id}/tool-results`, body, headers);
    assert.equal(done.status, 200, done.text);
    assert.equal(done.body.status, 'completed');
    assert.match(done.body.message.content, /Friday 10:00/);
    const again = await call('POST', `${app.api}/conversations/${id}/tool-results`, body, headers);
    assert.equal(again.status, 200);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(again.body, done.body);
    assert.equal(app.model.callCount, calls + 1, 'the retry did not call the model');

    const read = await call('GET', `${app.api}/conversations/${id}`);
    assert.deepEqual(
      read.body.messages.map((message: { role: string }) => message.role),
      ['user', 'assistant', 'tool', 'assistant'],
    );
    assert.equal(read.body.messages[2].content, '{"slot":"Friday 10:00"}');
    assert.equal((await send(id, 'thanks')).status, 200, 'messages are taken again');
    assert.equal((await call('GET', `${app.api}/conversations/${id}/pending-turn`)).status, 404);
  });

  it('can be cancelled: nothing of the paused turn is stored', async () => {
    const id = await conversation({ clientTools: [pickSlot] });
    assert.equal((await send(id, 'CLIENT again')).body.status, 'requires_action');
    const cancelled = await call('DELETE', `${app.api}/conversations/${id}/pending-turn`);
    assert.equal(cancelled.status, 204);
    const late = await call('POST', `${app.api}/conversations/${id}/tool-results`, {
      results: [{ toolCallId: 'call_slot', output: 'x' }],
    });
    assert.equal(late.status, 409);
    assert.equal(late.body.code, 'no_pending_turn');
    assert.equal((await call('GET', `${app.api}/conversations/${id}`)).body.messages.length, 0);
    assert.equal((await send(id, 'plain')).status, 200);
  });
});

describe('client tool input that used to answer 500', () => {
  const pickSlot = {
    name: 'pick_slot',
    description: 'Ask the user to pick a delivery slot.',
    parameters: { type: 'object', properties: { day: { type: 'string' } } },
  };
  const withParameters = (parameters: unknown) => ({ clientTools: [{ ...pickSlot, parameters }] });

  it('refuses another $schema, deep nesting and oversized tools with 400s naming the field; an $id works every time', async () => {
    for (const $schema of ['http://json-schema.org/draft-07/schema#', 7]) {
      const refused = await call('POST', `${app.api}/conversations`, withParameters({ type: 'object', $schema }));
      assert.equal(refused.status, 400, refused.text);
      assert.equal(refused.body.errors[0].field, 'clientTools/0/parameters/$schema');
    }
    // ~800 nested {"items": ...}: 8 KB that overflowed the stack of the schema check.
    const deep = `{"clientTools":[{"name":"pick","description":"Pick.","parameters":{"type":"object","items":${'{"items":'.repeat(800)}{}${'}'.repeat(800)}}}]}`;
    const nested = await call('POST', `${app.api}/conversations`, deep);
    assert.equal(nested.status, 400, nested.text);
    assert.equal(nested.body.errors[0].field, 'clientTools/0/parameters');

    const withId = withParameters({ type: 'object', $id: 'https://x.example/a' });
    for (let i = 0; i < 2; i++) assert.equal((await call('POST', `${app.api}/conversations`, withId)).status, 201);

    // 34 tools of ~15,800 characters each pass the per-tool bound; together they would not fit the header entity.
    const tool = (index: number, chars: number) => ({
      name: `tool_${index}`,
      description: 'A tool.',
      parameters: { type: 'object', description: 'x'.repeat(chars) },
    });
    const tooMany = await call('POST', `${app.api}/conversations`, {
      clientTools: Array.from({ length: 34 }, (_, index) => tool(index, 15_700)),
    });
    assert.equal(tooMany.status, 400, tooMany.text.slice(0, 300));
    assert.equal(tooMany.body.code, 'invalid_request');
    assert.equal(tooMany.body.errors[0].field, 'clientTools');
    // The most the bound lets through is stored, beside the largest metadata (control characters escaped 6-fold).
    const most = Array.from({ length: 28 }, (_, index) => tool(index, 15_900));
    assert.ok(JSON.stringify(most[0]).length <= 16_000);
    const metadata = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`key_${i}`, '\u0001'.repeat(512)]));
    const stored = await call('POST', `${app.api}/conversations`, {
      clientTools: most,
      metadata,
      title: 't'.repeat(200),
    });
    assert.equal(stored.status, 201, stored.text.slice(0, 300));
    const read = await call('GET', `${app.api}/conversations/${stored.body.id}`);
    assert.deepEqual(read.body.clientTools, most);
  });

  it('refuses a tool output storage would refuse before the model is called, and takes a good one after', async () => {
    const id = await conversation({ clientTools: [pickSlot] });
    const paused = await send(id, 'CLIENT book a slot');
    assert.equal(paused.body.status, 'requires_action', paused.text);
    const calls = app.model.callCount;
    for (const output of ['Friday \ud800', 'a\u0000b', { slot: 'Friday\u0000' }]) {
      const refused = await call('POST', `${app.api}/conversations/${id}/tool-results`, {
        results: [{ toolCallId: 'call_slot', output }],
      });
      assert.equal(refused.status, 400, refused.text);
      assert.equal(refused.body.errors[0].field, 'results/0/output');
    }
    assert.equal(app.model.callCount, calls, 'the model was not called');
    const done = await call('POST', `${app.api}/conversations/${id}/tool-results`, {
      results: [{ toolCallId: 'call_slot', output: 'Friday 10:00' }],
    });
    assert.equal(done.status, 200, done.text);
    assert.equal(done.body.status, 'completed');
  });
});

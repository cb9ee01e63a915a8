/**
 * Turns with tools against fakes: the loop (parallel calls, failures as tool messages, the rounds bound), what is
 * stored, client tools pausing and resuming, and trimming that keeps calls with their results.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Conversations } from '../../../src/core/conversations';
import {
  ClientToolsNotAllowedError,
  IdempotencyInProgressError,
  InvalidToolResultsError,
  NoPendingTurnError,
  ToolResultsPendingError,
} from '../../../src/core/errors';
import type { Caller, ChatMessage, StoredMessage, ToolCall } from '../../../src/core/ports';
import {
  InvalidToolArgumentsError,
  MAX_TURN_JSON_UNITS,
  MAX_TURN_MESSAGES,
  turnJsonSize,
  type ServerTool,
} from '../../../src/core/tools';
import { hashToolResults, TurnRunner } from '../../../src/core/turn';
import { fakeDependencies, RecordingTelemetry, type MemoryStore } from '../../support/fakes';

const alice: Caller = { id: 'alice', kind: 'user' };

function tool(name: string, run: (args: unknown, signal: AbortSignal) => Promise<unknown>): ServerTool {
  return {
    name,
    description: `The ${name} tool.`,
    parameters: { type: 'object', properties: {} },
    invoke: (args, context) => run(args, context.signal),
  };
}

function call(id: string, name: string, args: unknown = {}): ToolCall {
  return { id, name, arguments: typeof args === 'string' ? args : JSON.stringify(args) };
}

type Overrides = NonNullable<Parameters<typeof fakeDependencies>[0]>;

async function setup(
  tools: ServerTool[],
  options: {
    settings?: Overrides['settings'];
    clock?: Overrides['clock'];
    create?: Parameters<Conversations['create']>[1];
    telemetry?: Overrides['telemetry'];
  } = {},
) {
  const fakes = fakeDependencies({
    serverTools: new Map(tools.map((entry) => [entry.name, entry])),
    ...(options.telemetry ? { telemetry: options.telemetry } : {}),
    ...(options.settings ? { settings: options.settings } : {}),
    ...(options.clock ? { clock: options.clock } : {}),
  });
  const conversations = new Conversations(fakes.deps);
  const turns = new TurnRunner(fakes.deps);
  const conversation = await conversations.create(alice, { system: 'Use tools.', ...options.create });
  return { ...fakes, conversations, turns, conversationId: conversation.id };
}

function stored(store: MemoryStore, id: string): StoredMessage[] {
  return [...store.conversations.values()].find((entry) => entry.conversation.id === id)?.messages ?? [];
}

/** Every tool_calls message is followed by exactly its results before anything else, and no result is orphaned. */
function assertNoOrphans(messages: ChatMessage[]): void {
  for (let index = 0; index < messages.length; index++) {
    const message = messages[index]!;
    if (message.role === 'tool') {
      const owner = messages
        .slice(0, index)
        .reverse()
        .find((candidate) => candidate.role !== 'tool');
      assert.ok(
        owner?.toolCalls?.some((c) => c.id === message.toolCallId),
        `orphaned result ${message.toolCallId}`,
      );
    }
    if (message.toolCalls) {
      const results = messages.slice(index + 1, index + 1 + message.toolCalls.length);
      assert.deepEqual(
        results.map((result) => result.toolCallId).sort(),
        message.toolCalls.map((c) => c.id).sort(),
        'every call answered right after it',
      );
    }
  }
}

describe('tool turns', () => {
  it('runs each call in an execute_tool span of the turn; a name the model made up stays out of span names', async () => {
    const telemetry = new RecordingTelemetry();
    const lookup = tool('lookup', async () => {
      throw new Error('backend down');
    });
    const { turns, model, conversationId } = await setup([lookup], { telemetry });
    model.answers.push({ toolCalls: [call('c1', 'lookup', { id: 'a' }), call('c2', 'drop_tables', {})] });
    model.answers.push({ content: 'Done.' });
    await turns.send({ caller: alice, conversationId, content: 'look it up' });
    const tools = telemetry.spans.filter((span) => span.name.startsWith('execute_tool'));
    assert.deepEqual(
      tools.map((span) => [span.name, span.parent, span.attributes]),
      [
        [
          'execute_tool lookup',
          'chat.turn',
          {
            'gen_ai.operation.name': 'execute_tool',
            'gen_ai.tool.type': 'function',
            'gen_ai.tool.call.id': 'c1',
            'gen_ai.tool.name': 'lookup',
            'error.type': 'failed',
          },
        ],
        [
          'execute_tool',
          'chat.turn',
          {
            'gen_ai.operation.name': 'execute_tool',
            'gen_ai.tool.type': 'function',
            'gen_ai.tool.call.id': 'c2',
            'error.type': 'unknown_tool',
          },
        ],
      ],
    );
  });

  it('runs the calls of one response in parallel and sends every result back, then stores the whole turn', async () => {
    let running = 0;
    let overlap = 0;
    const slow = tool('lookup', async (args) => {
      running++;
      overlap = Math.max(overlap, running);
      await new Promise((resolve) => setTimeout(resolve, 20));
      running--;
      return { found: (args as { id?: string }).id };
    });
    const { turns, model, store, conversationId } = await setup([slow]);
    model.answers.push({ toolCalls: [call('c1', 'lookup', { id: 'a' }), call('c2', 'lookup', { id: 'b' })] });
    model.answers.push({ content: 'Both found.' });

    const result = await turns.send({ caller: alice, conversationId, content: 'find a and b' });

    assert.equal(overlap, 2, 'both calls ran at the same time');
    assert.equal(result.message.content, 'Both found.');
    assert.equal(result.context.toolRounds, 1);
    assert.deepEqual(
      model.requests[0]?.tools?.map((definition) => definition.name),
      ['lookup'],
    );
    const second = model.requests[1]!.messages;
    assert.deepEqual(second.slice(-3), [
      {
        role: 'assistant',
        content: '',
        toolCalls: [call('c1', 'lookup', { id: 'a' }), call('c2', 'lookup', { id: 'b' })],
      },
      { role: 'tool', content: '{"found":"a"}', toolCallId: 'c1' },
      { role: 'tool', content: '{"found":"b"}', toolCallId: 'c2' },
    ]);
    const messages = stored(store, conversationId);
    assert.deepEqual(
      messages.map((message) => [message.seq, message.role]),
      [
        [1, 'user'],
        [2, 'assistant'],
        [3, 'tool'],
        [4, 'tool'],
        [5, 'assistant'],
      ],
    );
    assert.equal(store.commits, 1, 'one transaction');
    assert.equal(messages[4]?.finishReason, 'stop');
    assert.equal(result.message.id, 'msg_0000000005');
  });

  it('turns an unknown tool, bad JSON, schema-invalid arguments, a throw and a timeout into tool messages', async () => {
    const strict = tool('strict', async (args) => {
      if (typeof (args as { n?: unknown }).n !== 'number') throw new InvalidToolArgumentsError('n: expected number');
      return 'ok';
    });
    const broken = tool('broken', async () => {
      throw new Error('database is down');
    });
    let sawAbort = false;
    const stuck = tool('stuck', (_args, signal) => {
      signal.addEventListener('abort', () => (sawAbort = true));
      return new Promise(() => {});
    });
    const { turns, model, conversationId } = await setup([strict, broken, stuck], {
      settings: { tools: { maxRounds: 5, timeoutMs: 50, maxOutputChars: 1_000, pendingTurnMs: 60_000 } },
    });
    model.answers.push({
      toolCalls: [
        call('u', 'nope'),
        call('j', 'strict', '{"n": '),
        call('s', 'strict', { n: 'one' }),
        call('b', 'broken'),
        call('t', 'stuck'),
      ],
    });
    model.answers.push({ content: 'Sorry.' });

    const result = await turns.send({ caller: alice, conversationId, content: 'try' });

    assert.equal(result.message.content, 'Sorry.');
    assert.ok(sawAbort, 'the timed-out tool was told to stop');
    const results = model.requests[1]!.messages.filter((message) => message.role === 'tool');
    const errors = results.map((message) => [message.toolCallId, JSON.parse(message.content).error]);
    assert.deepEqual(errors, [
      ['u', 'unknown_tool'],
      ['j', 'invalid_arguments'],
      ['s', 'invalid_arguments'],
      ['b', 'failed'],
      ['t', 'timed_out'],
    ]);
    assert.match(results[1]!.content, /not valid JSON/);
    assert.match(results[2]!.content, /n: expected number/);
    assert.match(results[3]!.content, /database is down/);
  });

  it('stops after CHAT_MAX_TOOL_ROUNDS rounds and asks once more without tools', async () => {
    const echo = tool('echo', async () => 'again');
    const { turns, model, store, conversationId } = await setup([echo], {
      settings: { tools: { maxRounds: 2, timeoutMs: 1_000, maxOutputChars: 1_000, pendingTurnMs: 60_000 } },
    });
    for (let index = 0; index < 10; index++) model.answers.push({ toolCalls: [call(`c${index}`, 'echo')] });

    const result = await turns.send({ caller: alice, conversationId, content: 'loop' });

    assert.equal(model.requests.length, 3, 'two tool rounds and one final call');
    assert.ok(model.requests[0]!.tools && model.requests[1]!.tools);
    assert.equal(model.requests[2]!.tools, undefined, 'the last call offers no tools');
    assert.equal(result.context.toolRounds, 2);
    assertNoOrphans(stored(store, conversationId));
    assert.deepEqual(
      stored(store, conversationId).map((message) => message.role),
      ['user', 'assistant', 'tool', 'assistant', 'tool', 'assistant'],
    );
  });

  it('does not run a round that would not fit one transaction, and answers without tools', async () => {
    const echo = tool('echo', async () => 'x');
    const { turns, model, store, conversationId } = await setup([echo]);
    const many = Array.from({ length: MAX_TURN_MESSAGES }, (_, index) => call(`c${index}`, 'echo'));
    model.answers.push({ toolCalls: many }, { content: 'Done without them.' });

    const result = await turns.send({ caller: alice, conversationId, content: 'many' });

    assert.equal(result.message.content, 'Done without them.');
    assert.equal(model.requests[1]!.tools, undefined);
    assert.deepEqual(
      stored(store, conversationId).map((message) => message.role),
      ['user', 'assistant'],
    );
  });

  it('bounds a long output, sends and stores the same bounded text', async () => {
    const big = tool('big', async () => 'y'.repeat(200_000));
    const { turns, model, store, conversationId } = await setup([big], {
      settings: { tools: { maxRounds: 5, timeoutMs: 1_000, maxOutputChars: 5_000, pendingTurnMs: 60_000 } },
    });
    model.answers.push({ toolCalls: [call('c1', 'big')] }, { content: 'Long.' });
    await turns.send({ caller: alice, conversationId, content: 'big' });
    const sent = model.requests[1]!.messages.at(-1)!;
    assert.equal(sent.content.length, 5_000);
    assert.match(sent.content, /\[tool output truncated: first \d+ of 200000 characters\]$/);
    assert.equal(stored(store, conversationId)[2]?.content, sent.content);
  });

  it('cuts tool output that would push the turn past the window: the user’s message is never refused for it', async () => {
    // Word tokenizer: 1,000 tokens of output against a 400-token window.
    const wordy = tool('wordy', async () => 'word '.repeat(1_000));
    const { turns, model, store, conversationId } = await setup([wordy], {
      settings: { tokenLimit: 400, maxResponseTokens: 50 },
    });
    model.answers.push({ toolCalls: [call('c1', 'wordy')] }, { content: 'Read it.' });

    const result = await turns.send({ caller: alice, conversationId, content: 'read it' });

    assert.equal(result.message.content, 'Read it.');
    const sent = model.requests[1]!.messages.at(-1)!;
    assert.match(sent.content, /\[tool output truncated: first \d+ of 5000 characters\]$/);
    assert.ok(result.context.promptTokens <= 400 - 50, `${result.context.promptTokens} tokens sent`);
    assert.equal(stored(store, conversationId)[2]?.content, sent.content);
  });

  it('cuts outputs whose JSON escapes would not fit the paused turn’s row, and still pauses', async () => {
    const controls = tool('controls', async () => '\u0001'.repeat(60_000));
    const { turns, model, store, conversationId } = await setup([controls], {
      settings: { tools: { maxRounds: 5, timeoutMs: 1_000, maxOutputChars: 60_000, pendingTurnMs: 60_000 } },
      create: { clientTools: [{ name: 'ask', description: 'Ask the user.', parameters: { type: 'object' } }] },
    });
    model.answers.push({
      toolCalls: [...Array.from({ length: 5 }, (_, index) => call(`c${index}`, 'controls')), call('c5', 'ask')],
    });

    const outcome = await turns.converse({ caller: alice, conversationId, content: 'go' });

    assert.equal(outcome.status, 'requires_action');
    const pending = [...store.conversations.values()].find(
      (entry) => entry.conversation.id === conversationId,
    )?.pending;
    assert.ok(pending);
    const size = turnJsonSize([pending.user, ...pending.messages]);
    assert.ok(size.units <= MAX_TURN_JSON_UNITS, `${size.units} UTF-16 units of JSON`);
    assert.ok(size.units > MAX_TURN_JSON_UNITS / 2, 'cut no more than needed');
    for (const message of pending.messages.filter((entry) => entry.role === 'tool')) {
      assert.match(message.content, /\[tool output truncated: first \d+ of 60000 characters\]$/);
    }
  });

  it('renews the Idempotency-Key lease of a turn whose tool rounds outlast a third of it', async () => {
    let now = Date.parse('2026-01-01T00:00:00Z');
    // Each tool call takes 25 s of the 60 s lease.
    const slow = tool('slow', async () => {
      now += 25_000;
      return 'ok';
    });
    const { turns, model, store, conversationId } = await setup([slow], { clock: { now: () => new Date(now) } });
    model.answers.push({ toolCalls: [call('c1', 'slow')] }, { toolCalls: [call('c2', 'slow')] }, { content: 'Done.' });

    const result = await turns.send({ caller: alice, conversationId, content: 'slowly', idempotencyKey: 'k1' });

    assert.equal(result.message.content, 'Done.');
    assert.equal(store.renewals, 2, 'renewed before the second and the third model call');
  });

  it('stops a turn whose key was taken over between two rounds: the model is not called again', async () => {
    let now = Date.parse('2026-01-01T00:00:00Z');
    const held: { store?: MemoryStore } = {};
    const stolen = tool('stolen', async () => {
      now += 30_000;
      // A retry took the key over meanwhile (the claim's token is no longer ours).
      const entry = [...held.store!.conversations.values()].find((candidate) => candidate.idempotency.has('k2'));
      entry!.idempotency.get('k2')!.token = 'the-retry';
      return 'ok';
    });
    const fakes = await setup([stolen], { clock: { now: () => new Date(now) } });
    held.store = fakes.store;
    fakes.model.answers.push({ toolCalls: [call('c1', 'stolen')] }, { content: 'Never asked.' });

    await assert.rejects(
      fakes.turns.send({ caller: alice, conversationId: fakes.conversationId, content: 'go', idempotencyKey: 'k2' }),
      IdempotencyInProgressError,
    );
    assert.equal(fakes.model.requests.length, 1, 'no model call after the claim was lost');
    assert.deepEqual(stored(fakes.store, fakes.conversationId), []);
  });

  it('offers only the tools the conversation chose', async () => {
    const { turns, model, conversations } = await setup([tool('a', async () => ''), tool('b', async () => '')]);
    const chosen = await conversations.create(alice, { tools: ['b'] });
    await turns.send({ caller: alice, conversationId: chosen.id, content: 'hi' });
    assert.deepEqual(
      model.requests[0]?.tools?.map((definition) => definition.name),
      ['b'],
    );
    assert.deepEqual(chosen.tools, ['b']);
    await assert.rejects(conversations.create(alice, { tools: ['c'] }), /not valid/);
  });

  it('trims whole turns with their tool messages, never a call without its result', async () => {
    const echo = tool('echo', async () => 'result text here');
    const { turns, model, conversationId } = await setup([echo], {
      settings: { tokenLimit: 160, maxResponseTokens: 20 },
    });
    let dropped = 0;
    for (let turn = 0; turn < 8; turn++) {
      model.answers.push(
        { toolCalls: [call(`t${turn}a`, 'echo'), call(`t${turn}b`, 'echo')] },
        { content: `answer ${turn}` },
      );
      dropped = (
        await turns.send({ caller: alice, conversationId, content: `question number ${turn} with some words` })
      ).context.droppedTurns;
    }
    assert.ok(dropped > 0, 'the budget forced old turns out');
    for (const request of model.requests) {
      assertNoOrphans(request.messages);
      assert.notEqual(request.messages[1]?.role, 'tool');
      assert.notEqual(request.messages[1]?.role, 'assistant');
    }
  });
});

describe('client tools', () => {
  const clientTools = [
    { name: 'pick_date', description: 'Ask the user for a date.', parameters: { type: 'object', properties: {} } },
  ];

  it('pauses with requires_action, blocks new messages, and resumes with the posted results', async () => {
    const server = tool('server_side', async () => 'server says hi');
    const { turns, model, store, conversationId } = await setup([server], { create: { clientTools } });
    model.answers.push({ toolCalls: [call('s1', 'server_side'), call('p1', 'pick_date')] });

    const paused = await turns.converse({ caller: alice, conversationId, content: 'book it' });
    assert.equal(paused.status, 'requires_action');
    if (paused.status !== 'requires_action') return;
    assert.deepEqual(paused.toolCalls, [call('p1', 'pick_date')]);
    assert.equal(stored(store, conversationId).length, 0, 'nothing in the history yet');

    await assert.rejects(turns.converse({ caller: alice, conversationId, content: 'hello?' }), ToolResultsPendingError);
    await assert.rejects(
      turns.submitToolResults({ caller: alice, conversationId, results: [{ toolCallId: 'zz', output: 'x' }] }),
      InvalidToolResultsError,
    );

    model.answers.push({ content: 'Booked for Friday.' });
    const done = await turns.submitToolResults({
      caller: alice,
      conversationId,
      turnId: paused.turnId,
      results: [{ toolCallId: 'p1', output: '2026-12-04' }],
    });
    assert.equal(done.status, 'completed');
    assert.deepEqual(
      stored(store, conversationId).map((message) => [message.role, message.toolCallId ?? message.content]),
      [
        ['user', 'book it'],
        ['assistant', ''],
        ['tool', 's1'],
        ['tool', 'p1'],
        ['assistant', 'Booked for Friday.'],
      ],
    );
    assertNoOrphans(model.requests[1]!.messages);
    await assert.rejects(
      turns.submitToolResults({ caller: alice, conversationId, results: [{ toolCallId: 'p1', output: 'x' }] }),
      NoPendingTurnError,
    );
  });

  it('a streamed continuation names, in turn.started, the id its reply is stored under', async () => {
    const { turns, model, conversationId } = await setup([], { create: { clientTools } });
    model.answers.push({ toolCalls: [call('p1', 'pick_date')] });
    assert.equal(
      (await turns.converse({ caller: alice, conversationId, content: 'book it' })).status,
      'requires_action',
    );
    model.answers.push({ content: 'Booked.' });
    const started: string[] = [];
    const done = await turns.submitToolResults(
      { caller: alice, conversationId, results: [{ toolCallId: 'p1', output: 'Friday' }] },
      undefined,
      { onStart: (info) => started.push(info.messageId), onDelta: () => {}, onReplay: () => {} },
    );
    assert.equal(done.status, 'completed');
    if (done.status !== 'completed') return;
    assert.deepEqual(started, [done.message.id]);
  });

  it('replays a paused answer to a retry only while that turn still waits for those calls', async () => {
    const { turns, model, conversationId } = await setup([], { create: { clientTools } });
    model.answers.push({ toolCalls: [call('p1', 'pick_date')] });
    const send = () => turns.converse({ caller: alice, conversationId, content: 'book it', idempotencyKey: 'k-orig' });
    const paused = await send();
    assert.equal(paused.status, 'requires_action');
    const again = await send();
    assert.equal(again.replayed, true);
    assert.equal(again.status, 'requires_action');

    // Continued, and paused again under the same turn id for another call: the first answer is stale.
    model.answers.push({ toolCalls: [call('p2', 'pick_date')] });
    const repaused = await turns.submitToolResults({
      caller: alice,
      conversationId,
      results: [{ toolCallId: 'p1', output: 'Friday' }],
    });
    assert.equal(repaused.status, 'requires_action');
    await assert.rejects(send(), NoPendingTurnError);

    model.answers.push({ content: 'Booked.' });
    await turns.submitToolResults({ caller: alice, conversationId, results: [{ toolCallId: 'p2', output: '10:00' }] });
    await assert.rejects(send(), NoPendingTurnError);
    assert.equal(model.requests.length, 3, 'no retry called the model');
  });

  it('expires: after CHAT_PENDING_TURN_SECONDS a new message is taken and the paused turn is gone', async () => {
    let now = Date.parse('2026-01-01T00:00:00Z');
    const { turns, model, store, conversationId } = await setup([], {
      create: { clientTools },
      clock: { now: () => new Date(now) },
      settings: { tools: { maxRounds: 5, timeoutMs: 1_000, maxOutputChars: 1_000, pendingTurnMs: 5_000 } },
    });
    model.answers.push({ toolCalls: [call('p1', 'pick_date')] });
    await turns.converse({ caller: alice, conversationId, content: 'first' });
    now += 4_000;
    await assert.rejects(
      turns.converse({ caller: alice, conversationId, content: 'too soon' }),
      ToolResultsPendingError,
    );
    now += 1_000;
    model.answers.push({ content: 'fresh' });
    const fresh = await turns.converse({ caller: alice, conversationId, content: 'second' });
    assert.equal(fresh.status, 'completed');
    assert.deepEqual(
      stored(store, conversationId).map((message) => message.content),
      ['second', 'fresh'],
    );
    assert.equal(await store.getPendingTurn(alice, conversationId), undefined);
  });

  it('can be cancelled, and refuses callers that cannot answer client tools', async () => {
    const { turns, model, conversationId } = await setup([], { create: { clientTools } });
    model.answers.push({ toolCalls: [call('p1', 'pick_date')] });
    await turns.converse({ caller: alice, conversationId, content: 'first' });
    await turns.cancelPendingTurn(alice, conversationId);
    await assert.rejects(
      turns.send({ caller: alice, conversationId, content: 'from a webhook' }),
      ClientToolsNotAllowedError,
    );
  });

  it('takes the same results posted in another order under the same Idempotency-Key as a retry', async () => {
    const { turns, model, conversationId } = await setup([], { create: { clientTools } });
    model.answers.push({ toolCalls: [call('p1', 'pick_date'), call('p2', 'pick_date')] });
    const paused = await turns.converse({ caller: alice, conversationId, content: 'two dates' });
    assert.equal(paused.status, 'requires_action');
    model.answers.push({ content: 'Both booked.' });
    const results = [
      { toolCallId: 'p1', output: 'Monday' },
      { toolCallId: 'p2', output: 'Friday' },
    ];
    const first = await turns.submitToolResults({ caller: alice, conversationId, idempotencyKey: 'k1', results });
    const calls = model.requests.length;
    const again = await turns.submitToolResults({
      caller: alice,
      conversationId,
      idempotencyKey: 'k1',
      results: [...results].reverse(),
    });
    assert.equal(again.replayed, true);
    assert.deepEqual({ ...again, replayed: false }, { ...first, replayed: false });
    assert.equal(model.requests.length, calls, 'the model was not called again');
    assert.equal(hashToolResults({ results }), hashToolResults({ results: [...results].reverse() }));
    assert.notEqual(
      hashToolResults({ results }),
      hashToolResults({ results: [results[0]!, { ...results[1]!, output: 'Saturday' }] }),
    );
  });

  it('never offers one name twice: a server tool enabled later under a client tool’s name is not offered to it', async () => {
    const { deps, turns, model, conversations, conversationId } = await setup([tool('other', async () => '')], {
      create: { clientTools },
    });
    let serverRuns = 0;
    // The deployment enables a server tool named like the conversation's client tool (CHAT_TOOLS changed).
    deps.serverTools = new Map([
      ['other', tool('other', async () => '')],
      ['pick_date', tool('pick_date', async () => serverRuns++)],
    ]);
    model.answers.push({ toolCalls: [call('p1', 'pick_date')] });
    const paused = await turns.converse({ caller: alice, conversationId, content: 'a date' });
    assert.equal(paused.status, 'requires_action', 'the client tool answers the call');
    assert.equal(serverRuns, 0);
    const offered = model.requests[0]?.tools ?? [];
    assert.deepEqual(
      offered.map((definition) => definition.name),
      ['other', 'pick_date'],
    );
    assert.equal(offered[1]?.description, 'Ask the user for a date.');
    const view = await conversations.get(alice, conversationId, { limit: 10 });
    assert.deepEqual(view.tools, ['other']);
  });
});

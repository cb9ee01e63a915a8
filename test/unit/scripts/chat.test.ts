import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ApiProblem,
  ApiUnreachable,
  ChatApi,
  ChatSession,
  DEFAULT_API_URL,
  formatHistory,
  formatTools,
  formatUsage,
  isUnreachable,
  parseChatArgs,
  parseCommand,
  SseParser,
  UsageError,
  type ChatBackend,
  type ReplySummary,
} from '../../../scripts/chat';

describe('parseChatArgs', () => {
  it('defaults to the local API', () => {
    assert.deepEqual(parseChatArgs([]), { url: DEFAULT_API_URL, help: false });
  });

  it('reads every flag and drops a trailing slash from the URL', () => {
    assert.deepEqual(
      parseChatArgs([
        '--url',
        'https://chat.example.com/api/',
        '--conversation',
        'abc-1_2',
        '--key',
        'k',
        '--token',
        't',
      ]),
      { url: 'https://chat.example.com/api', conversation: 'abc-1_2', key: 'k', token: 't', help: false },
    );
    assert.equal(parseChatArgs(['-h']).help, true);
  });

  it('falls back to the environment, flags first', () => {
    const env = {
      CHAT_API_URL: 'http://127.0.0.1:9000/api',
      CHAT_FUNCTION_KEY: 'envkey',
      CHAT_BEARER_TOKEN: 'envtoken',
    };
    assert.deepEqual(parseChatArgs([], env), {
      url: 'http://127.0.0.1:9000/api',
      key: 'envkey',
      token: 'envtoken',
      help: false,
    });
    assert.equal(parseChatArgs(['--key', 'flag'], env).key, 'flag');
  });

  it('refuses unknown flags, bad URLs and ids the API cannot have issued', () => {
    assert.throws(() => parseChatArgs(['--colour']), UsageError);
    assert.throws(() => parseChatArgs(['stray']), UsageError);
    assert.throws(() => parseChatArgs(['--url', 'localhost:7071']), /http\(s\) URL/);
    assert.throws(() => parseChatArgs(['--url', 'ftp://example.com']), /http\(s\) URL/);
    assert.throws(() => parseChatArgs(['--conversation', 'a/b']), /--conversation/);
  });
});

describe('SseParser', () => {
  it('parses events, joins data lines and skips comments', () => {
    const parser = new SseParser();
    const events = parser.push(': comment\nevent: turn.started\ndata: {"a":1}\n\ndata: line one\ndata: line two\n\n');
    assert.deepEqual(events, [
      { event: 'turn.started', data: '{"a":1}' },
      { event: 'message', data: 'line one\nline two' },
    ]);
  });

  it('handles chunks cut anywhere, including between \\r and \\n', () => {
    const text =
      'event: message.delta\r\ndata: {"content":"Hel"}\r\n\r\nevent: message.delta\r\ndata: {"content":"lo"}\r\n\r\n';
    for (let size = 1; size <= text.length; size++) {
      const parser = new SseParser();
      const events = [];
      for (let index = 0; index < text.length; index += size)
        events.push(...parser.push(text.slice(index, index + size)));
      assert.deepEqual(
        events.map((event) => JSON.parse(event.data).content),
        ['Hel', 'lo'],
        `chunk size ${size}`,
      );
    }
  });

  it('keeps a space after the colon only once, and ignores unterminated events', () => {
    const parser = new SseParser();
    assert.deepEqual(parser.push('data:  two spaces\n\ndata: cut'), [{ event: 'message', data: ' two spaces' }]);
    assert.deepEqual(parser.end(), []);
  });
});

describe('parseCommand', () => {
  it('tells commands from messages', () => {
    assert.deepEqual(parseCommand('/new'), { kind: 'new' });
    assert.deepEqual(parseCommand('  /HISTORY '), { kind: 'history' });
    assert.deepEqual(parseCommand('/exit'), { kind: 'exit' });
    assert.deepEqual(parseCommand('/quit'), { kind: 'exit' });
    assert.deepEqual(parseCommand('/help'), { kind: 'help' });
    assert.deepEqual(parseCommand('/frobnicate now'), { kind: 'unknown', name: '/frobnicate' });
    assert.deepEqual(parseCommand('   '), { kind: 'empty' });
    assert.deepEqual(parseCommand('What is 1/2?'), { kind: 'message', content: 'What is 1/2?' });
  });
});

describe('formatting', () => {
  it('prints tokens used and turns dropped, and the finish reason when it is not stop', () => {
    const reply: ReplySummary = {
      content: 'x',
      finishReason: 'stop',
      usage: { promptTokens: 29, completionTokens: 73, totalTokens: 102 },
      droppedTurns: 2,
    };
    assert.equal(formatUsage(reply), '(tokens: 29 prompt + 73 completion = 102; turns dropped: 2)');
    assert.match(formatUsage({ ...reply, finishReason: 'length' }), /; finish reason: length\)$/);
  });

  it('prints the history with who said what', () => {
    assert.equal(
      formatHistory('c1', [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi' },
        { role: 'user', content: 'Hey', name: 'ada' },
        { role: 'assistant', content: 'Hello.' },
      ]),
      '--- conversation c1 ---\nsystem> Be brief.\nyou> Hi\nada> Hey\nassistant> Hello.\n---',
    );
  });
});

/** A fetch that answers from a list of canned responses, recording each request. */
function cannedFetch(responses: (() => Response)[]) {
  const requests: { url: string; init: RequestInit }[] = [];
  const fetch = async (url: string | URL | Request, init: RequestInit = {}) => {
    requests.push({ url: String(url), init });
    const next = responses.shift();
    if (!next) throw new Error(`unexpected request ${String(url)}`);
    return next();
  };
  return { fetch: fetch as typeof globalThis.fetch, requests };
}

const jsonResponse = (status: number, body: unknown, type = 'application/json') =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': type } });

const turnResult = {
  conversationId: 'c1',
  message: { id: 'msg_0000000002', role: 'assistant', content: 'Hello there.', createdAt: '2025-01-01T00:00:00Z' },
  finishReason: 'stop',
  usage: { promptTokens: 20, completionTokens: 3, totalTokens: 23 },
  context: { promptTokens: 20, droppedTurns: 1 },
};

function eventStream(chunks: string[]): Response {
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
      controller.close();
    },
  });
  return new Response(body, { status: 200, headers: { 'content-type': 'text/event-stream; charset=utf-8' } });
}

describe('ChatApi', () => {
  it('asks for a stream, sends the credentials and prints deltas as they arrive', async () => {
    const { fetch, requests } = cannedFetch([
      () =>
        eventStream([
          'event: turn.started\ndata: {"conversationId":"c1","messageId":"m","promptTokens":20,"droppedTurns":1}\n\n',
          'event: message.delta\ndata: {"content":"Hello"}\n',
          '\nevent: message.delta\ndata: {"content":" there."}\n\n',
          `event: turn.completed\ndata: ${JSON.stringify(turnResult)}\n\n`,
        ]),
    ]);
    const api = new ChatApi({ url: 'http://api.test/api', key: 'fkey', token: 'jwt', fetch });
    const deltas: string[] = [];
    const reply = await api.send('c1', 'Hi', (text) => deltas.push(text));
    assert.deepEqual(deltas, ['Hello', ' there.']);
    assert.equal(reply.droppedTurns, 1);
    assert.deepEqual(reply.usage, turnResult.usage);
    const [request] = requests;
    assert.equal(request!.url, 'http://api.test/api/conversations/c1/messages');
    const headers = request!.init.headers as Record<string, string>;
    assert.match(headers.accept!, /^text\/event-stream/);
    assert.equal(headers['x-functions-key'], 'fkey');
    assert.equal(headers.authorization, 'Bearer jwt');
    assert.equal(request!.init.body, JSON.stringify({ content: 'Hi' }));
  });

  it('falls back to the JSON reply when the server does not stream', async () => {
    const { fetch } = cannedFetch([() => jsonResponse(200, turnResult)]);
    const deltas: string[] = [];
    const reply = await new ChatApi({ url: 'http://api.test/api', fetch }).send('c1', 'Hi', (text) =>
      deltas.push(text),
    );
    assert.deepEqual(deltas, ['Hello there.']);
    assert.equal(reply.content, 'Hello there.');
  });

  it('turns turn.failed into the problem it carries', async () => {
    const failed = {
      type: 'x',
      title: 't',
      status: 502,
      detail: 'The model’s reply stream broke off.',
      code: 'upstream_error',
    };
    const { fetch } = cannedFetch([
      () =>
        eventStream([
          'event: message.delta\ndata: {"content":"Hel"}\n\n',
          `event: turn.failed\ndata: ${JSON.stringify(failed)}\n\n`,
        ]),
    ]);
    await assert.rejects(
      new ChatApi({ url: 'http://api.test/api', fetch }).send('c1', 'Hi', () => {}),
      {
        name: 'ApiProblem',
        message: 'upstream_error: The model’s reply stream broke off.',
      },
    );
  });

  it('reports a stream that ends without turn.completed', async () => {
    const { fetch } = cannedFetch([() => eventStream(['event: message.delta\ndata: {"content":"Hel"}\n\n'])]);
    await assert.rejects(
      new ChatApi({ url: 'http://api.test/api', fetch }).send('c1', 'Hi', () => {}),
      /ended before/,
    );
  });

  it('turns problem responses into code: detail, and other errors into http_<status>', async () => {
    const { fetch } = cannedFetch([
      () =>
        jsonResponse(
          404,
          { type: 'x', title: 'Not found', status: 404, detail: 'No conversation with this id.', code: 'not_found' },
          'application/problem+json',
        ),
      () => new Response('Bad Gateway', { status: 502 }),
    ]);
    const api = new ChatApi({ url: 'http://api.test/api', fetch });
    await assert.rejects(api.getConversation('nope'), (error: unknown) => {
      assert.ok(error instanceof ApiProblem);
      assert.equal(error.message, 'not_found: No conversation with this id.');
      assert.equal(error.status, 404);
      return true;
    });
    await assert.rejects(api.createConversation(), { message: 'http_502: Bad Gateway' });
  });

  it('reads the whole history, following nextCursor', async () => {
    const page = (messages: unknown[], nextCursor?: string) => () =>
      jsonResponse(200, {
        id: 'c1',
        title: null,
        system: 'Be brief.',
        examples: [{ role: 'user', content: 'Q' }],
        metadata: {},
        createdAt: '',
        updatedAt: '',
        messageCount: 3,
        messages,
        ...(nextCursor ? { nextCursor } : {}),
      });
    const { fetch, requests } = cannedFetch([
      page(
        [
          { role: 'user', content: 'one' },
          { role: 'assistant', content: 'two' },
        ],
        'CUR',
      ),
      page([{ role: 'user', content: 'three' }]),
    ]);
    const history = await new ChatApi({ url: 'http://api.test/api', fetch }).history('c1');
    assert.deepEqual(
      history.map((message) => `${message.role}:${message.content}`),
      ['system:Be brief.', 'user:Q', 'user:one', 'assistant:two', 'user:three'],
    );
    assert.match(requests[1]!.url, /cursor=CUR/);
  });

  it('says plainly when nothing listens at the URL', async () => {
    const refused = Object.assign(new TypeError('fetch failed'), {
      cause: Object.assign(new Error('x'), { code: 'ECONNREFUSED' }),
    });
    const fetch = (async () => {
      throw refused;
    }) as unknown as typeof globalThis.fetch;
    await assert.rejects(new ChatApi({ url: 'http://127.0.0.1:7071/api', fetch }).createConversation(), {
      name: 'ApiUnreachable',
      message: 'No API at http://127.0.0.1:7071/api. Start it with `npm start`.',
    });
    assert.equal(isUnreachable(new TypeError('fetch failed')), false);
    assert.equal(isUnreachable({ cause: { errors: [{ code: 'ECONNREFUSED' }] } }), true);
  });
});

/** A backend that records calls and answers from scripts. */
function fakeBackend(overrides: Partial<ChatBackend> = {}) {
  const calls: string[] = [];
  let created = 0;
  const backend: ChatBackend = {
    url: 'http://api.test/api',
    async createConversation() {
      created += 1;
      calls.push('create');
      return { id: `conv${created}`, title: null, messageCount: 0 };
    },
    async getConversation(id) {
      calls.push(`get ${id}`);
      return { id, title: 'Old', messageCount: 4 };
    },
    async history(id) {
      calls.push(`history ${id}`);
      return [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi' },
      ];
    },
    async send(id, content, onDelta) {
      calls.push(`send ${id} ${content}`);
      onDelta('Hel');
      onDelta('lo.');
      return {
        content: 'Hello.',
        finishReason: 'stop',
        usage: { promptTokens: 9, completionTokens: 2, totalTokens: 11 },
        droppedTurns: 0,
      };
    },
    ...overrides,
  };
  return { backend, calls };
}

function capture() {
  const written: string[] = [];
  const errors: string[] = [];
  return {
    out: { write: (text: string) => void written.push(text), error: (line: string) => void errors.push(line) },
    text: () => written.join(''),
    errors,
  };
}

describe('ChatSession', () => {
  it('starts a conversation, sends lines, prints the reply with its usage, and /exit ends', async () => {
    const { backend, calls } = fakeBackend();
    const io = capture();
    const session = new ChatSession(backend, io.out);
    assert.equal(await session.start(), true);
    assert.equal(await session.handle('Hi there'), 'continue');
    assert.equal(await session.handle(''), 'continue');
    assert.equal(await session.handle('/exit'), 'exit');
    assert.deepEqual(calls, ['create', 'send conv1 Hi there']);
    assert.match(io.text(), /^Conversation conv1 started\./);
    assert.match(io.text(), /assistant> Hello\.\n\(tokens: 9 prompt \+ 2 completion = 11; turns dropped: 0\)\n$/);
  });

  it('resumes a conversation, /history prints it, /new switches to a new one', async () => {
    const { backend, calls } = fakeBackend();
    const io = capture();
    const session = new ChatSession(backend, io.out);
    await session.start('old-1');
    assert.match(io.text(), /Resuming conversation old-1 "Old" \(4 messages\)/);
    await session.handle('/history');
    assert.match(io.text(), /--- conversation old-1 ---\nsystem> Be brief\.\nyou> Hi\n---\n/);
    await session.handle('/new');
    assert.equal(session.conversation, 'conv1');
    await session.handle('Next');
    assert.deepEqual(calls, ['get old-1', 'history old-1', 'create', 'send conv1 Next']);
  });

  it('prints problems as code: detail and carries on', async () => {
    const { backend } = fakeBackend({
      send: async () => {
        throw new ApiProblem(429, 'rate_limited', 'Wait 12 seconds.');
      },
    });
    const io = capture();
    const session = new ChatSession(backend, io.out);
    await session.start();
    assert.equal(await session.handle('Hi'), 'continue');
    await session.handle('/bogus');
    assert.deepEqual(io.errors, [
      'rate_limited: Wait 12 seconds.',
      `Unknown command /bogus. /new starts a new conversation, /history prints its messages, /tools lists its tools, /exit quits.`,
    ]);
  });

  it('ends the reply line when a stream fails halfway', async () => {
    const { backend } = fakeBackend({
      send: async (_id, _content, onDelta) => {
        onDelta('Half');
        throw new ApiProblem(502, 'upstream_error', 'The stream broke off.');
      },
    });
    const io = capture();
    const session = new ChatSession(backend, io.out);
    await session.start();
    await session.handle('Hi');
    assert.match(io.text(), /assistant> Half\n$/);
    assert.deepEqual(io.errors, ['upstream_error: The stream broke off.']);
  });

  it('cannot start when the API is not running, and says how to start it', async () => {
    const { backend } = fakeBackend({
      createConversation: async () => {
        throw new ApiUnreachable('http://localhost:7071/api');
      },
    });
    const io = capture();
    assert.equal(await new ChatSession(backend, io.out).start(), false);
    assert.deepEqual(io.errors, ['No API at http://localhost:7071/api. Start it with `npm start`.']);
  });
});

describe('tools in the console', () => {
  it('prints streamed tool calls and results between the deltas, and a paused turn', async () => {
    const started =
      'event: turn.started\ndata: {"conversationId":"c1","messageId":"m","promptTokens":20,"droppedTurns":0}\n\n';
    const call = { id: 'call_1', name: 'get_current_time', arguments: '{"timeZone":"UTC"}', round: 1, client: false };
    const result = { toolCallId: 'call_1', name: 'get_current_time', output: '{"utcOffset":"+00:00"}' };
    const paused = {
      status: 'requires_action',
      conversationId: 'c1',
      turnId: 'turn_1',
      toolCalls: [{ id: 'call_2', name: 'pick_slot', arguments: '{}' }],
      expiresAt: '2026-01-01T00:10:00.000Z',
      usage: { promptTokens: 30, completionTokens: 5, totalTokens: 35 },
      context: { promptTokens: 30, droppedTurns: 0 },
    };
    const { fetch } = cannedFetch([
      () =>
        eventStream([
          started,
          `event: tool.call\ndata: ${JSON.stringify(call)}\n\n`,
          `event: tool.result\ndata: ${JSON.stringify(result)}\n\n`,
          `event: turn.requires_action\ndata: ${JSON.stringify(paused)}\n\n`,
        ]),
    ]);
    const lines: string[] = [];
    const reply = await new ChatApi({ url: 'http://api.test/api', fetch }).send(
      'c1',
      'Hi',
      () => {},
      undefined,
      (line) => lines.push(line),
    );
    assert.deepEqual(lines, [
      '[tool call] get_current_time({"timeZone":"UTC"})',
      '[tool result] get_current_time: {"utcOffset":"+00:00"}',
    ]);
    assert.deepEqual(reply.requiresAction?.toolCalls, paused.toolCalls);
  });

  it('/result answers a waiting call (JSON or text) and prints the continued turn; /cancel cancels it', async () => {
    assert.deepEqual(parseCommand('/result call_2 {"slot": "Friday"}'), {
      kind: 'result',
      toolCallId: 'call_2',
      output: { slot: 'Friday' },
    });
    assert.deepEqual(parseCommand('/result call_2 Friday at ten'), {
      kind: 'result',
      toolCallId: 'call_2',
      output: 'Friday at ten',
    });
    assert.equal(parseCommand('/result').kind, 'usage');
    assert.deepEqual(parseCommand('/cancel'), { kind: 'cancel' });

    const posted: unknown[] = [];
    let cancelled = 0;
    const { backend } = fakeBackend({
      async submitToolResults(id, results, onDelta) {
        posted.push({ id, results });
        onDelta('Booked.');
        return {
          content: 'Booked.',
          finishReason: 'stop',
          usage: { promptTokens: 30, completionTokens: 2, totalTokens: 32 },
          droppedTurns: 0,
        };
      },
      async cancelPendingTurn() {
        cancelled += 1;
      },
    });
    const io = capture();
    const session = new ChatSession(backend, io.out);
    await session.start();
    await session.handle('/result call_2 {"slot":"Friday"}');
    assert.deepEqual(posted, [{ id: 'conv1', results: [{ toolCallId: 'call_2', output: { slot: 'Friday' } }] }]);
    assert.match(io.text(), /assistant> Booked\.\n\(tokens: 30 prompt \+ 2 completion = 32; turns dropped: 0\)\n$/);
    await session.handle('/cancel');
    assert.equal(cancelled, 1);
    assert.match(io.text(), /The waiting turn was cancelled; nothing of it was stored\.\n$/);
    await session.handle('/result');
    assert.deepEqual(io.errors, ['Usage: /result <toolCallId> <output> (JSON or text).']);
  });

  it('ChatApi posts tool results with an Idempotency-Key to the stream route, and cancels with DELETE', async () => {
    const { fetch, requests } = cannedFetch([
      () =>
        eventStream([
          'event: turn.started\ndata: {}\n\n',
          'event: message.delta\ndata: {"content":"Booked."}\n\n',
          `event: turn.completed\ndata: ${JSON.stringify({ ...turnResult, status: 'completed' })}\n\n`,
        ]),
      () => new Response(null, { status: 204 }),
    ]);
    const api = new ChatApi({ url: 'http://api.test/api', fetch });
    const deltas: string[] = [];
    const reply = await api.submitToolResults('c1', [{ toolCallId: 'call_2', output: 'Friday' }], (text) =>
      deltas.push(text),
    );
    assert.deepEqual(deltas, ['Booked.']);
    assert.equal(reply.finishReason, 'stop');
    assert.equal(requests[0]!.url, 'http://api.test/api/conversations/c1/tool-results');
    const headers = requests[0]!.init.headers as Record<string, string>;
    assert.match(headers['idempotency-key'] ?? '', /^[0-9a-f-]{36}$/);
    assert.match(headers.accept ?? '', /^text\/event-stream/);
    assert.deepEqual(JSON.parse(String(requests[0]!.init.body)), {
      results: [{ toolCallId: 'call_2', output: 'Friday' }],
    });
    await api.cancelPendingTurn('c1');
    assert.equal(requests[1]!.url, 'http://api.test/api/conversations/c1/pending-turn');
    assert.equal(requests[1]!.init.method, 'DELETE');
  });

  it('/tools lists the server and client tools and a waiting turn', async () => {
    assert.deepEqual(parseCommand('/tools'), { kind: 'tools' });
    const text = formatTools({
      server: ['get_current_time'],
      client: ['pick_slot'],
      pending: {
        turnId: 'turn_1',
        toolCalls: [{ id: 'call_2', name: 'pick_slot', arguments: '{}' }],
        expiresAt: 'soon',
      },
    });
    assert.match(
      text,
      /^server tools: get_current_time\nclient tools: pick_slot\nturn turn_1 waits for client-tool results until soon: pick_slot\(\{\}\) \[call_2\]/,
    );
    const { fetch, requests } = cannedFetch([
      () =>
        jsonResponse(200, {
          id: 'c1',
          title: null,
          system: 's',
          examples: [],
          messageCount: 0,
          tools: ['get_current_time'],
        }),
      () => jsonResponse(404, { code: 'not_found', status: 404, title: 'Not found', detail: 'none', type: 'x' }),
    ]);
    const info = await new ChatApi({ url: 'http://api.test/api', fetch }).tools('c1');
    assert.deepEqual(info, { server: ['get_current_time'], client: [] });
    assert.equal(requests[1]!.url, 'http://api.test/api/conversations/c1/pending-turn');
  });
});

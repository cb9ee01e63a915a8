/**
 * What a conversation costs, end to end: real HTTP through the local host, real Azurite, and the model stand-in
 * applying Azure OpenAI's prompt-caching rule per `prompt_cache_key`. The app runs with stable-prefix trimming,
 * summaries on and a history cap far below gpt-4o-mini's 128,000-token window, so every check below is about what
 * the stand-in really received.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { call, startTestApp, type TestApp } from '../support/app';
import type { RecordedRequest } from '../../local/modelStandIn';
import { collectEvents } from '../support/sseClient';

const HISTORY_LIMIT = 4_000;
const SUMMARY_MAX_TOKENS = 64;
const LOW_WATER = 0.6;
/** About 1,300 tokens: the system message alone is long enough to be cached (1,024 at least). */
const SYSTEM = `You are a careful assistant. Reference notes follow. ${Array.from({ length: 600 }, (_, i) => `n${i}`).join(' ')}`;

let app: TestApp;
let failSummaries = false;

before(async () => {
  app = await startTestApp({
    env: {
      CHAT_TRIM_POLICY: 'stable-prefix',
      CHAT_TRIM_LOW_WATER: String(LOW_WATER),
      CHAT_HISTORY_TOKEN_LIMIT: String(HISTORY_LIMIT),
      CHAT_SUMMARY: 'on',
      CHAT_SUMMARY_MAX_TOKENS: String(SUMMARY_MAX_TOKENS),
      CHAT_MAX_RESPONSE_TOKENS: '200',
      AZURE_OPENAI_MAX_RETRIES: '0',
    },
    model: {
      reply: ({ body, messages }) => {
        if (isSummaryRequest(body)) {
          if (failSummaries) throw new Error('the summary deployment is down');
          // Incremental, as the app asks: what the current summary says, plus the new messages (numbered on).
          const text = typeof messages[1]?.content === 'string' ? messages[1].content : '';
          let last = Number(/questions 1 to (\d+)\./.exec(text)?.[1] ?? 0);
          for (const match of text.matchAll(/user: question (\d+)/g)) {
            if (Number(match[1]) !== last + 1) return `A gap: question ${match[1]} after ${last}.`;
            last += 1;
          }
          return `Earlier the user asked questions 1 to ${last}.`;
        }
        return undefined; // the stand-in's default reply
      },
    },
  });
});

after(async () => {
  await app?.close();
});

function isSummaryRequest(body: RecordedRequest['body']): boolean {
  return typeof body?.prompt_cache_key === 'string' && body.prompt_cache_key.endsWith('/summary');
}

/** A user message of about 120 tokens, different every turn. */
function question(index: number): string {
  return `question ${index}: ${Array.from({ length: 30 }, (_, i) => `t${index}x${i}`).join(' ')}`;
}

async function send(id: string, index: number) {
  const response = await call('POST', `${app.api}/conversations/${id}/messages`, { content: question(index) });
  assert.equal(response.status, 200, response.text);
  return response.body;
}

function chatRequests(id: string): RecordedRequest[] {
  return app.model.requests.filter((request) => request.body?.prompt_cache_key === id);
}

function summaryRequests(id: string): RecordedRequest[] {
  return app.model.requests.filter((request) => request.body?.prompt_cache_key === `${id}/summary`);
}

const sameMessages = (a: unknown[], b: unknown[]) => JSON.stringify(a) === JSON.stringify(b);

describe('a long conversation under stable-prefix trimming with summaries', () => {
  let id: string;
  const results: any[] = [];

  before(async () => {
    const created = await call('POST', `${app.api}/conversations`, { system: SYSTEM });
    assert.equal(created.status, 201, created.text);
    id = created.body.id;
    for (let index = 1; index <= 30; index++) results.push(await send(id, index));
  });

  it('sends the conversation id as prompt_cache_key and reports the cached tokens the model reported', async () => {
    const requests = chatRequests(id);
    assert.equal(requests.length, results.length);
    results.forEach((result, index) => {
      assert.equal(result.usage.cachedPromptTokens, requests[index]!.cachedTokens, `turn ${index + 1}`);
    });
    assert.equal(results[0].usage.cachedPromptTokens, 0, 'nothing cached before the first request');
    for (const [index, result] of results.entries()) {
      if (index === 0) continue;
      const previous = results[index - 1];
      // The system message alone is cached even when a trim changed what follows it.
      assert.ok(result.usage.cachedPromptTokens >= 1_024, `turn ${index + 1}`);
      if (result.context.droppedTurns === previous.context.droppedTurns) {
        // Between trims, all of the previous request but its reply priming, in 128-token steps.
        assert.ok(result.usage.cachedPromptTokens > previous.usage.promptTokens - 3 - 128, `turn ${index + 1}`);
      }
    }
  });

  it('stores the cached tokens with each turn and keeps the conversation total', async () => {
    const read = await call('GET', `${app.api}/conversations/${id}?limit=1000`);
    assert.equal(read.status, 200, read.text);
    const replies = read.body.messages.filter((message: any) => message.role === 'assistant');
    assert.deepEqual(
      replies.map((reply: any) => reply.usage.cachedPromptTokens),
      results.map((result) => result.usage.cachedPromptTokens),
    );
    const all = [...chatRequests(id), ...summaryRequests(id)];
    assert.equal(
      read.body.usage.cachedPromptTokens,
      all.reduce((sum, request) => sum + request.cachedTokens!, 0),
    );
    assert.equal(
      read.body.usage.promptTokens,
      all.reduce((sum, request) => sum + request.promptTokens!, 0),
    );
  });

  it('repeats the previous request as a prefix between trims and meets the budget on every request', () => {
    const requests = chatRequests(id);
    let trims = 0;
    for (const [index, result] of results.entries()) {
      // Counted exactly: the app's count is the model's, and within the cap though the window is 128,000.
      assert.equal(result.context.promptTokens, result.usage.promptTokens, `turn ${index + 1}`);
      assert.ok(result.usage.promptTokens <= HISTORY_LIMIT, `turn ${index + 1}: ${result.usage.promptTokens}`);
      if (index === 0) continue;
      const previous = requests[index - 1]!.body!.messages;
      const current = requests[index]!.body!.messages;
      if (result.context.droppedTurns === results[index - 1].context.droppedTurns) {
        assert.ok(sameMessages(current.slice(0, previous.length), previous), `turn ${index + 1} extends turn ${index}`);
      } else {
        trims++;
        assert.ok(result.usage.promptTokens <= LOW_WATER * HISTORY_LIMIT, `turn ${index + 1} trimmed to low water`);
      }
    }
    assert.ok(trims >= 2, `${trims} trims`);
  });

  it('makes one summary per trim, pins it after the system message and counts it', async () => {
    const requests = chatRequests(id);
    const trimTurns = results.filter(
      (result, index) => index > 0 && result.context.droppedTurns > results[index - 1].context.droppedTurns,
    );
    assert.equal(summaryRequests(id).length, trimTurns.length);
    let lastSummary: string | undefined;
    for (const [index, result] of results.entries()) {
      const sent = requests[index]!.body!.messages;
      if (result.context.droppedTurns === 0) {
        assert.equal(sent[1]?.role, 'user');
        continue;
      }
      assert.equal(sent[1]?.role, 'system');
      assert.equal(sent[2]?.role, 'user', 'never an assistant first');
      // The summary covers exactly the dropped turns, and changes only when more turns drop.
      assert.match(String(sent[1]?.content), new RegExp(`questions 1 to ${result.context.droppedTurns}\\.$`));
      if (lastSummary !== undefined && result.context.droppedTurns === results[index - 1].context.droppedTurns) {
        assert.equal(sent[1]?.content, lastSummary);
      }
      lastSummary = String(sent[1]?.content);
    }
    const read = await call('GET', `${app.api}/conversations/${id}?limit=1`);
    const dropped = results.at(-1).context.droppedTurns;
    assert.equal(read.body.summary.firstMessageId, 'msg_0000000001');
    assert.equal(read.body.summary.lastMessageId, `msg_${String(2 * dropped).padStart(10, '0')}`);
    assert.ok(lastSummary?.endsWith(read.body.summary.content));
  });

  it('a failing summary call leaves the turn answered; the next trim turn retries it', async () => {
    const before = (await call('GET', `${app.api}/conversations/${id}?limit=1`)).body.summary;
    failSummaries = true;
    let index = results.length;
    let result: any;
    try {
      do {
        result = await send(id, ++index);
        results.push(result);
      } while (result.context.droppedTurns === results.at(-2).context.droppedTurns);
    } finally {
      failSummaries = false;
    }
    // The trim went on without a new summary: the old one is still sent and stored.
    const unchanged = (await call('GET', `${app.api}/conversations/${id}?limit=1`)).body.summary;
    assert.deepEqual(unchanged, before);
    const sent = chatRequests(id).at(-1)!.body!.messages;
    assert.ok(String(sent[1]?.content).endsWith(before.content));

    const calls = summaryRequests(id).length;
    const next = await send(id, index + 1);
    results.push(next);
    assert.equal(summaryRequests(id).length, calls + 1, 'retried on the next turn');
    const after = (await call('GET', `${app.api}/conversations/${id}?limit=1`)).body.summary;
    assert.equal(after.lastMessageId, `msg_${String(2 * next.context.droppedTurns).padStart(10, '0')}`);
    assert.notEqual(after.content, before.content);
  });

  it('reports cached tokens on a streamed turn too', async () => {
    const response = await fetch(`${app.api}/conversations/${id}/messages?stream=true`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ content: question(999) }),
    });
    assert.equal(response.status, 200);
    const completed = (await collectEvents(response)).find((event) => event.event === 'turn.completed');
    assert.ok(completed);
    assert.equal(completed.data.usage.cachedPromptTokens, chatRequests(id).at(-1)!.cachedTokens);
    assert.ok(completed.data.usage.cachedPromptTokens >= 1_024);
  });
});

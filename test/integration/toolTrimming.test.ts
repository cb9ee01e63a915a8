/**
 * A long conversation of tool turns under a small token budget: every request the model stand-in receives is checked
 * for orphaned calls and results (the stand-in refuses them as the service does, and the test checks again), and the
 * app's prompt estimate with tool definitions is compared with the stand-in's count by the cookbook's method. The
 * http_lookup tool authenticates with the managed identity here (a loopback identity endpoint).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { call, startTestApp, type TestApp } from '../support/app';
import { startLookupStandIn, type LookupStandIn } from '../support/lookupStandIn';
import type { ReplyRequest, StandInMessage, StandInToolReply } from '../../local/modelStandIn';

const TOKEN_LIMIT = 1_200;
const MAX_RESPONSE = 100;
const SCOPE = 'api://lookup-service/.default';

let app: TestApp;
let lookup: LookupStandIn;
let turn = 0;

function script(request: ReplyRequest): string | StandInToolReply {
  const lastUser = request.messages.map((message) => message.role).lastIndexOf('user');
  const soFar = request.messages.slice(lastUser + 1);
  if (soFar.length === 0) {
    return {
      toolCalls: [
        { name: 'http_lookup', arguments: JSON.stringify({ path: `orders/${turn}` }) },
        { name: 'get_current_time', arguments: '{"timeZone":"Europe/Oslo"}' },
      ],
    };
  }
  return `Order ${turn} has shipped; it is ${String(soFar.at(-1)?.content).slice(0, 40)}.`;
}

/** The service's rule, checked here independently of the stand-in's own check. */
function assertNoOrphans(messages: StandInMessage[]): void {
  let awaiting = new Set<string>();
  for (const message of messages) {
    if (message.role === 'tool') {
      assert.ok(awaiting.delete(String(message.tool_call_id)), `a result without its call: ${message.tool_call_id}`);
      continue;
    }
    assert.equal(awaiting.size, 0, `calls without results: ${[...awaiting].join(', ')}`);
    const calls = (message.tool_calls ?? []) as { id: string }[];
    awaiting = new Set(calls.map((toolCall) => toolCall.id));
  }
  assert.equal(awaiting.size, 0, 'the prompt ends with unanswered calls');
}

before(async () => {
  lookup = await startLookupStandIn({ bearerToken: () => app?.identity?.token });
  app = await startTestApp({
    managedIdentity: {},
    model: { reply: script },
    env: {
      CHAT_TOOLS: 'get_current_time,http_lookup',
      CHAT_TOKEN_LIMIT: String(TOKEN_LIMIT),
      CHAT_MAX_RESPONSE_TOKENS: String(MAX_RESPONSE),
      TOOL_HTTP_LOOKUP_SCOPE: SCOPE,
      TOOL_HTTP_LOOKUP_URL: lookup.url,
    },
  });
});

after(async () => {
  await app?.close();
  await lookup?.close();
});

describe('tool turns under a small budget', () => {
  it('trims whole turns, never sending a call without its result, and estimates the prompt as the cookbook counts', async () => {
    const created = await call('POST', `${app.api}/conversations`, { system: 'You look up orders.' });
    const id = created.body.id as string;
    app.model.clear();
    let dropped = 0;
    for (turn = 1; turn <= 10; turn++) {
      const answer = await call('POST', `${app.api}/conversations/${id}/messages`, {
        content: `Where is order ${turn}, and what time is it in Oslo?`,
      });
      assert.equal(answer.status, 200, answer.text);
      assert.equal(answer.body.context.toolRounds, 1);
      // The last call of the turn offered the tools: its estimate counts their definitions, as the cookbook does.
      assert.equal(answer.body.context.promptTokens, answer.body.context.servicePromptTokens);
      dropped = answer.body.context.droppedTurns;
    }
    assert.ok(dropped > 0, 'the budget dropped old turns');

    const requests = app.model.requests.filter((request) => request.body !== undefined);
    assert.equal(requests.length, 20);
    for (const request of requests) {
      assertNoOrphans(request.body!.messages);
      assert.equal(request.body!.messages[1]?.role, 'user', 'what follows the system message starts a turn');
    }
    // Every lookup carried the managed identity's token, fetched for the configured scope.
    assert.equal(lookup.requests.length, 10);
    assert.ok(lookup.requests.every((request) => request.headers.authorization === `Bearer ${app.identity!.token}`));
    assert.ok(
      app.identity!.requests.some((request) => request.query['resource'] === SCOPE.replace(/\/\.default$/, '')),
    );
    // Nothing is lost from storage: all ten turns are stored whole.
    const read = await call('GET', `${app.api}/conversations/${id}?limit=100`);
    assert.equal(read.body.messages.length, 10 * 5);
  });
});

/**
 * Limits against abuse through the real HTTP path: two app processes (two instances, each with its own limiter)
 * on one Azurite share the per-caller rate limit and token quota, because both live in Table Storage. Callers
 * are told apart by App Service Authentication headers (AUTH_MODE=easyauth), so each test has its own budget.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { TableClient } from '@azure/data-tables';
import { call } from '../support/app';
import { startAppProcess, type AppProcess } from '../support/appProcess';
import { startAzurite, type RunningAzurite } from '../../local/azurite';
import { startModelStandIn, type ModelStandIn } from '../../local/modelStandIn';

const REQUESTS_PER_MINUTE = 3;
const TOKENS_PER_DAY = 500;
const CONVERSATIONS_PER_CALLER = 6;
const BODY_BYTES = 8192;
const PREFIX = `limits${Date.now().toString(36)}`;

let azurite: RunningAzurite;
let model: ModelStandIn;
let first: AppProcess;
let second: AppProcess;

before(async () => {
  azurite = await startAzurite();
  model = await startModelStandIn({ expectedApiKey: 'test-key' });
  const env = {
    TABLES_CONNECTION_STRING: azurite.connectionString,
    TABLES_PREFIX: PREFIX,
    AZURE_OPENAI_ENDPOINT: model.url,
    AZURE_OPENAI_DEPLOYMENT: 'chat',
    AZURE_OPENAI_MODEL: 'gpt-4o-mini',
    AZURE_OPENAI_API_KEY: 'test-key',
    AUTH_MODE: 'easyauth',
    LIMIT_REQUESTS_PER_MINUTE: String(REQUESTS_PER_MINUTE),
    LIMIT_TOKENS_PER_DAY: String(TOKENS_PER_DAY),
    LIMIT_CONVERSATIONS_PER_CALLER: String(CONVERSATIONS_PER_CALLER),
    LIMIT_BODY_BYTES: String(BODY_BYTES),
    // Each turn reserves its prompt plus this much of the quota while it runs: three at once must fit in it.
    CHAT_MAX_RESPONSE_TOKENS: '100',
  };
  [first, second] = await Promise.all([startAppProcess(env), startAppProcess(env)]);
});

after(async () => {
  await Promise.all([first?.stop(), second?.stop()]);
  await model?.close();
  await azurite?.stop();
});

/** A fresh caller, as App Service Authentication would identify them. */
function newCaller(): Record<string, string> {
  return { 'x-ms-client-principal-id': randomUUID() };
}

async function newConversation(app: AppProcess, caller: Record<string, string>): Promise<string> {
  const created = await call('POST', `${app.api}/conversations`, {}, caller);
  assert.equal(created.status, 201, created.text);
  return created.body.id;
}

function send(app: AppProcess, caller: Record<string, string>, conversationId: string, content = 'Hi') {
  return call('POST', `${app.api}/conversations/${conversationId}/messages`, { content }, caller);
}

function assertTooMany(response: Awaited<ReturnType<typeof call>>, code: string, maxRetryAfter: number) {
  assert.equal(response.status, 429, response.text);
  assert.match(response.headers.get('content-type') ?? '', /^application\/problem\+json/);
  assert.equal(response.body.code, code);
  const retryAfter = Number(response.headers.get('retry-after'));
  assert.ok(
    Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= maxRetryAfter,
    `Retry-After ${retryAfter}`,
  );
  assert.equal(response.body.retryAfterSeconds, retryAfter);
}

/**
 * The request limit counts per UTC minute window. A burst that straddled a window boundary would start over
 * half-way, so wait for a fresh window when less than `seconds` of this one remain. (A precondition, not an
 * assertion: each burst below takes well under a second.)
 */
async function withinOneMinuteWindow(seconds = 15): Promise<void> {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < seconds * 1000) await sleep(left + 50);
}

describe('per-caller limits shared by two app instances', () => {
  it('answers 429 with Retry-After for the request after the limit, counted across both instances', async () => {
    const caller = newCaller();
    const conversation = await newConversation(first, caller);
    await withinOneMinuteWindow();
    // Alternate instances: neither has seen more than two requests on its own.
    for (const app of [first, second, first]) assert.equal((await send(app, caller, conversation)).status, 200);
    const calls = model.callCount;
    assertTooMany(await send(second, caller, conversation), 'rate_limited', 60);
    assertTooMany(await send(first, caller, conversation), 'rate_limited', 60);
    assert.equal(model.callCount, calls, 'refused requests never reach the model');

    // Another caller is unaffected.
    const other = newCaller();
    assert.equal((await send(second, other, await newConversation(second, other))).status, 200);
  });

  it('admits exactly the limit when requests arrive at both instances at once', async () => {
    const caller = newCaller();
    const conversations: string[] = [];
    for (let index = 0; index < 6; index++) conversations.push(await newConversation(first, caller));
    await withinOneMinuteWindow();
    const responses = await Promise.all(
      conversations.map((conversation, index) => send(index % 2 === 0 ? first : second, caller, conversation)),
    );
    const statuses = responses.map((response) => response.status).sort();
    assert.deepEqual(statuses, [200, 200, 200, 429, 429, 429], responses.map((response) => response.text).join('\n'));

    // One entity per caller per UTC day holds the window's count (and the day's tokens).
    const table = TableClient.fromConnectionString(azurite.connectionString, `${PREFIX}limits`, {
      allowInsecureConnection: true,
    });
    const rows = [];
    for await (const row of table.listEntities<{ callerId: string; windowRequests: number }>()) {
      if (row.callerId === caller['x-ms-client-principal-id']) rows.push(row);
    }
    assert.equal(rows.length, 1);
    assert.equal(rows[0]?.rowKey, new Date().toISOString().slice(0, 10));
    assert.equal(rows[0]?.windowRequests, REQUESTS_PER_MINUTE);
  });

  it('refuses with quota_exceeded once the day tokens are spent, until midnight UTC', async () => {
    const caller = newCaller();
    const conversation = await newConversation(second, caller);
    // One long message spends more than the whole day's quota (the turn that crosses it still completes).
    const spent = await send(second, caller, conversation, 'lorem ipsum '.repeat(300));
    assert.equal(spent.status, 200, spent.text);
    assert.ok(spent.body.usage.totalTokens >= TOKENS_PER_DAY, `the turn used ${spent.body.usage.totalTokens} tokens`);
    const calls = model.callCount;
    const refused = await send(first, caller, conversation);
    const secondsToMidnight = Math.ceil((Date.UTC(...utcTomorrow()) - Date.now()) / 1000);
    assertTooMany(refused, 'quota_exceeded', secondsToMidnight + 5);
    assert.match(refused.body.detail, new RegExp(`of your ${TOKENS_PER_DAY} model tokens`));
    assert.equal(model.callCount, calls);
  });

  it('answers 429 conversation_limit_reached past the conversations a caller may keep', async () => {
    const caller = newCaller();
    const ids: string[] = [];
    for (let index = 0; index < CONVERSATIONS_PER_CALLER; index++) {
      ids.push(await newConversation(index % 2 === 0 ? first : second, caller));
    }
    const refused = await call('POST', `${second.api}/conversations`, {}, caller);
    assertTooMany(refused, 'conversation_limit_reached', 60);
    // The limit is on conversations kept: deleting one makes room.
    assert.equal((await call('DELETE', `${first.api}/conversations/${ids[0]}`, undefined, caller)).status, 204);
    assert.equal((await call('POST', `${first.api}/conversations`, {}, caller)).status, 201);
  });

  it('refuses a body over LIMIT_BODY_BYTES with 413', async () => {
    const caller = newCaller();
    const conversation = await newConversation(first, caller);
    const response = await send(first, caller, conversation, 'x'.repeat(BODY_BYTES + 1));
    assert.equal(response.status, 413, response.text);
    assert.equal(response.body.code, 'payload_too_large');
  });
});

function utcTomorrow(): [number, number, number] {
  const now = new Date();
  return [now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1];
}

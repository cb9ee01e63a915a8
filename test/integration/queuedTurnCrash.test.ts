/**
 * At-least-once without doubles: the app process is killed (SIGKILL, by PID) while a queued turn waits for the
 * model, before anything is committed. The local host, like the Functions host, held the queue message invisible
 * for a lease; a new process on the same storage gets it again when the lease ends (dequeue count 2), takes over
 * the dead run's idempotency claim, and stores the turn: once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startAzurite, type RunningAzurite } from '../../local/azurite';
import { startModelStandIn, type ModelStandIn } from '../../local/modelStandIn';
import { call } from '../support/app';
import { startAppProcess, type AppProcess } from '../support/appProcess';

let azurite: RunningAzurite;
let model: ModelStandIn;
const running: AppProcess[] = [];

before(async () => {
  azurite = await startAzurite({ queue: true });
  model = await startModelStandIn({ expectedApiKey: 'test-key' });
});

after(async () => {
  for (const app of running) await app.stop().catch(() => {});
  await model?.close();
  await azurite?.stop();
});

const env = () => ({
  TABLES_CONNECTION_STRING: azurite.connectionString,
  AzureWebJobsStorage: azurite.connectionString,
  TABLES_PREFIX: 'crash',
  AZURE_OPENAI_ENDPOINT: model.url,
  AZURE_OPENAI_DEPLOYMENT: 'chat',
  AZURE_OPENAI_MODEL: 'gpt-4o-mini',
  AZURE_OPENAI_API_KEY: 'test-key',
  AUTH_MODE: 'none',
  LIMIT_REQUESTS_PER_MINUTE: '0',
  LIMIT_TOKENS_PER_DAY: '0',
  // The lease on a message being processed: short, so the message of the killed process is seen again soon.
  LOCAL_QUEUE_LEASE_SECONDS: '4',
});

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('a queued turn whose process dies before the commit', () => {
  it('runs again after a restart and the conversation holds the turn once', async () => {
    const first = await startAppProcess(env());
    running.push(first);
    const created = await call('POST', `${first.api}/conversations`, {});
    assert.equal(created.status, 201, created.text);
    const id = created.body.id as string;

    model.enqueueFault({ kind: 'hang' });
    const posted = await call(
      'POST',
      `${first.api}/conversations/${id}/messages`,
      { content: 'Survive a crash' },
      { prefer: 'respond-async' },
    );
    assert.equal(posted.status, 202, posted.text);
    await until('the model call', () => (model.callCount >= 1 ? true : undefined));
    const running1 = await call('GET', `${first.api.replace(/\/api$/, '')}${posted.headers.get('location')}`);
    assert.equal(running1.body.status, 'running', running1.text);

    process.kill(first.pid, 'SIGKILL');
    await first.stop();

    const second = await startAppProcess(env());
    running.push(second);
    const statusUrl = `${second.api.replace(/\/api$/, '')}${posted.headers.get('location')}`;
    const done = await until('the completed turn', async () => {
      const read = await call('GET', statusUrl);
      return read.body?.status === 'completed' || read.body?.status === 'failed' ? read : undefined;
    });
    assert.equal(done.body.status, 'completed', done.text);
    const conversation = await call('GET', `${second.api}/conversations/${id}`);
    assert.deepEqual(
      conversation.body.messages.map((message: { role: string; content: string }) => message.role),
      ['user', 'assistant'],
    );
    assert.equal(conversation.body.messages[0].content, 'Survive a crash');
    assert.equal(conversation.body.messages[1].id, done.body.message.id);
    // At least the dead run's call and the one that was stored. More when a loaded machine delays the lease renewal
    // past the short test lease, so the message comes back while its run is still alive; the turn is held once
    // all the same (above): the later run takes the claim over and the earlier one cannot commit over it.
    assert.ok(model.callCount >= 2, `model calls: ${model.callCount}`);
  });
});

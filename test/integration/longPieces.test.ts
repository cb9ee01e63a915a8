/**
 * Messages that are one long pre-tokenizer piece (a run of one letter, random letters, CJK without punctuation) get
 * their normal answer through the API: js-tiktoken's own merge would stall the instance for minutes on each (issue
 * 12). What is stored is counted exactly: on shorter messages of the same shapes the stored counts equal js-tiktoken's.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { TableClient } from '@azure/data-tables';
import { getTokenizer } from '../../src/adapters/tiktokenTokenizer';
import { call, startTestApp, type TestApp } from '../support/app';
import { longPieceText, type LongPieceShape } from '../../bench/textShapes';

let app: TestApp;

before(async () => {
  app = await startTestApp();
});

after(async () => {
  await app?.close();
});

/**
 * The guide's count of each (role, content) by js-tiktoken's own constructor and quadratic merge (gpt-4o-mini is
 * o200k_base): 3 + role + content. Counted in a worker, because the app under test runs in this process and a
 * blocked event loop here would stall it (and break its idle keep-alive connections).
 */
async function referenceCounts(messages: readonly { role: string; content: string }[]): Promise<number[]> {
  const source = `
    const { workerData, parentPort } = require('node:worker_threads');
    const { Tiktoken } = require('js-tiktoken/lite');
    const encoder = new Tiktoken(require('js-tiktoken/ranks/o200k_base'));
    const count = (text) => encoder.encode(text, [], []).length;
    parentPort.postMessage(workerData.map(({ role, content }) => 3 + count(role) + count(content)));`;
  const worker = new Worker(source, { eval: true, workerData: messages });
  try {
    return (await once(worker, 'message'))[0] as number[];
  } finally {
    await worker.terminate();
  }
}

/** The stored message entities of the whole table, by content. */
async function storedTokens(): Promise<Map<string, number>> {
  const table = TableClient.fromConnectionString(
    app.azurite.connectionString,
    `${process.env.TABLES_PREFIX}conversations`,
    { allowInsecureConnection: true },
  );
  const byContent = new Map<string, number>();
  for await (const entity of table.listEntities<Record<string, unknown>>()) {
    if (typeof entity['role'] !== 'string' || typeof entity['tokens'] !== 'number') continue;
    let content = String(entity['content'] ?? '');
    for (let part = 1; typeof entity[`content_${part}`] === 'string'; part++)
      content += String(entity[`content_${part}`]);
    byContent.set(content, entity['tokens']);
  }
  return byContent;
}

async function sendTurn(content: string): Promise<{ status: number; reply: string }> {
  const created = await call('POST', `${app.api}/conversations`, {});
  assert.equal(created.status, 201, created.text);
  const sent = await call('POST', `${app.api}/conversations/${created.body.id}/messages`, { content });
  return { status: sent.status, reply: sent.body?.message?.content ?? sent.text };
}

const CASES: { shape: LongPieceShape; long: number; short: number }[] = [
  { shape: 'one_letter', long: 90_000, short: 1_500 },
  { shape: 'random_lowercase', long: 60_000, short: 1_000 },
  { shape: 'cjk', long: 20_000, short: 400 },
];

describe('one long piece per message, through the API', () => {
  for (const { shape, long, short } of CASES) {
    it(`${long.toLocaleString('en')} characters of ${shape} get a reply, counted exactly`, async () => {
      const longText = longPieceText(shape, long);
      const shortText = longPieceText(shape, short, 99);
      const longTurn = await sendTurn(longText);
      assert.equal(longTurn.status, 200, longTurn.reply.slice(0, 300));
      const shortTurn = await sendTurn(shortText);
      assert.equal(shortTurn.status, 200, shortTurn.reply.slice(0, 300));

      const stored = await storedTokens();
      // The shorter message and both replies: what js-tiktoken counts, by its own quadratic merge.
      const expected = await referenceCounts([
        { role: 'user', content: shortText },
        { role: 'assistant', content: shortTurn.reply },
        { role: 'assistant', content: longTurn.reply },
      ]);
      assert.deepEqual([stored.get(shortText), stored.get(shortTurn.reply), stored.get(longTurn.reply)], expected);
      // The long one, where the library would take minutes: stored, as the app's encoder counts it.
      const tokenizer = getTokenizer('o200k_base');
      assert.equal(stored.get(longText), 3 + tokenizer.countTokens('user') + tokenizer.countTokens(longText));
    });
  }
});

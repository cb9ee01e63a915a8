/**
 * Start-up errors as the platform shows them: the esbuild bundle (what package.json `main` names on Azure) indexed the
 * way the Functions worker indexes it, through `@azure/functions-core`, with good and with bad settings. Nothing
 * here needs storage or a model: the settings check runs without the network.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { bundleApp } from '../../scripts/bundle';
import { indexLikeTheWorker } from '../support/workerIndexing';

const appDir = mkdtempSync(path.join(tmpdir(), 'app-index-'));
const FUNCTIONS = [
  'createConversation',
  'deleteConversation',
  'getConversation',
  'getTurn',
  'health',
  'listConversations',
  'openapi',
  'pendingTurn',
  'queueTurn',
  'runTurnJob',
  'sendMessage',
  'streamMessage',
  'streamToolResults',
  'submitToolResults',
  'webhookGithub',
  'webhookMessages',
];
const good = {
  TABLES_CONNECTION_STRING: 'UseDevelopmentStorage=true',
  AZURE_OPENAI_ENDPOINT: 'http://127.0.0.1:9',
  AZURE_OPENAI_DEPLOYMENT: 'chat',
  AZURE_OPENAI_MODEL: 'gpt-4o-mini',
  AZURE_OPENAI_API_KEY: 'test-key',
};

before(async () => {
  await bundleApp({ outDir: appDir, log: false });
  writeFileSync(path.join(appDir, 'package.json'), JSON.stringify({ name: 'app', main: 'main.js' }));
});

after(() => rmSync(appDir, { recursive: true, force: true }));

describe('indexing the app as the Functions worker does', () => {
  it('loads every function with good settings', async () => {
    const result = await indexLikeTheWorker(appDir, good);
    assert.equal(result.useDefaultMetadataIndexing, false, result.stderr);
    assert.ok('status' in result && result.status === 'Success', JSON.stringify(result));
    assert.deepEqual([...result.functions].sort(), FUNCTIONS);
  });

  it('fails the function index with the name of a bad setting', async () => {
    const result = await indexLikeTheWorker(appDir, { ...good, CHAT_TRIM_POLICY: 'bogus' });
    // Not "zero functions, every route 404": the host gets a failed index with the message.
    assert.equal(result.useDefaultMetadataIndexing, false, `the worker fell back to host indexing: ${result.stderr}`);
    assert.ok('status' in result && result.status === 'Failure', JSON.stringify(result));
    assert.match(result.exception, /^Worker was unable to load entry point ".*main\.js": Invalid configuration:/);
    assert.match(result.exception, /CHAT_TRIM_POLICY: /);
    assert.doesNotMatch(result.exception, /bogus/, 'the value itself is not echoed');
  });

  it('fails the index for a setting that only the model family can judge', async () => {
    // Storable (under the reply cap the settings check alone), but over gpt-35-turbo's 16,385-token window.
    const result = await indexLikeTheWorker(appDir, {
      ...good,
      AZURE_OPENAI_MODEL: 'gpt-35-turbo',
      CHAT_MAX_RESPONSE_TOKENS: '20000',
    });
    assert.ok('status' in result && result.status === 'Failure', JSON.stringify(result));
    assert.match(result.exception, /CHAT_MAX_RESPONSE_TOKENS: 20000 leaves no room/);
  });

  it('fails the index when a required setting is missing', async () => {
    const { AZURE_OPENAI_DEPLOYMENT: _omitted, ...missing } = good;
    const result = await indexLikeTheWorker(appDir, missing);
    assert.ok('status' in result && result.status === 'Failure', JSON.stringify(result));
    assert.match(result.exception, /AZURE_OPENAI_DEPLOYMENT: required/);
  });
});

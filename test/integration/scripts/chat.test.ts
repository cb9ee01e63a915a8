/**
 * The console chat client as a user runs it: a child process (`node --import tsx scripts/chat.ts`) fed scripted lines
 * on stdin, against the real app on the local host (Azurite and the model stand-in behind it).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { call, REPO_ROOT, startTestApp, type TestApp } from '../../support/app';

let app: TestApp;
const children = new Set<ChildProcess>();
const tempFolder = mkdtempSync(join(tmpdir(), 'chat-test-'));

before(async () => {
  app = await startTestApp({ env: { TABLES_PREFIX: `chat${Date.now()}` } });
});

after(async () => {
  for (const child of children)
    if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  await app?.close();
  rmSync(tempFolder, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the client with `args`, writes `lines` to its stdin, closes it, and waits for the client to exit. */
function runChat(args: string[], lines: string[], env: Record<string, string> = {}): Promise<Run> {
  // No PORT of the test runner's, and no developer's local.settings.json, unless the test gives one.
  const { PORT: _port, ...inherited } = process.env;
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'scripts', 'chat.ts'), ...args], {
    cwd: REPO_ROOT,
    env: { ...inherited, LOCAL_SETTINGS_PATH: join(tempFolder, 'none.json'), ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  child.stdin!.end(lines.map((line) => `${line}\n`).join(''));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      children.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}

function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

describe('npm run chat', () => {
  it('chats, prints usage and dropped turns, shows /history, and resumes with --conversation', async () => {
    const first = await runChat(['--url', app.api], ['Who were the founders of Microsoft?', '/history', '/exit']);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stderr, '');
    const id = /Conversation ([A-Za-z0-9_-]+) started\./.exec(first.stdout)?.[1];
    assert.ok(id, first.stdout);
    const stored = await call('GET', `${app.api}/conversations/${id}?limit=1`);
    assert.match(stored.body.title, /^Console chat, \d{4}-\d\d-\d\d \d\d:\d\d UTC$/, 'a title the list can show');

    const reply = /assistant> (.+)\n\(tokens: (\d+) prompt \+ (\d+) completion = (\d+); turns dropped: (\d+)\)/.exec(
      first.stdout,
    );
    assert.ok(reply, first.stdout);
    assert.match(reply[1]!, /local model/i);
    assert.equal(Number(reply[2]) + Number(reply[3]), Number(reply[4]));
    assert.equal(reply[5], '0');
    // The client asked for the reply as a stream, so the app streamed from the model.
    const modelCalls = app.model.requests.filter((request) => request.body !== undefined);
    assert.equal(modelCalls.at(-1)?.body?.stream, true);

    // The reply printed is the one stored: /history reads it back from the API.
    const history = first.stdout.slice(first.stdout.indexOf(`--- conversation ${id} ---`));
    assert.match(history, /\nsystem> You are a helpful assistant\.\n/);
    assert.ok(history.includes('\nyou> Who were the founders of Microsoft?\n'), history);
    assert.ok(history.includes(`\nassistant> ${reply[1]}\n`), history);

    const resumed = await runChat(['--url', app.api, '--conversation', id], ['And when?', '/history']);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stdout, new RegExp(`Resuming conversation ${id} "?.*\\(2 messages\\)`));
    const lines = resumed.stdout.split('\n').filter((line) => /^(you|assistant)> /.test(line));
    assert.deepEqual(
      lines.slice(-4).map((line) => line.split('> ')[0]),
      ['you', 'assistant', 'you', 'assistant'],
      resumed.stdout,
    );
    assert.ok(lines.includes('you> And when?'));
  });

  it('prints a problem as code: detail', async () => {
    const run = await runChat(['--url', app.api, '--conversation', 'no-such-conversation'], []);
    assert.equal(run.code, 1);
    assert.match(run.stderr, /^not_found: .+/m);
  });

  it('finds the API on the port npm start uses (PORT, then local.settings.json), and hints at a missing /api', async () => {
    const port = new URL(app.api).port;
    const fromEnv = await runChat([], ['/exit'], { PORT: port });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    assert.match(fromEnv.stdout, /Conversation \S+ started\./);

    const settingsPath = join(tempFolder, 'local.settings.json');
    writeFileSync(settingsPath, JSON.stringify({ IsEncrypted: false, Values: { PORT: port } }));
    const fromSettings = await runChat([], ['/exit'], { LOCAL_SETTINGS_PATH: settingsPath });
    assert.equal(fromSettings.code, 0, fromSettings.stderr);
    assert.match(fromSettings.stdout, /Conversation \S+ started\./);

    const origin = new URL(app.api).origin;
    const bare = await runChat(['--url', origin], ['/exit']);
    assert.equal(bare.code, 1);
    assert.match(bare.stderr, new RegExp(`^not_found: .+ Is the /api prefix missing\\? Try --url ${origin}/api$`, 'm'));
  });

  it('says how to start the API when nothing listens at the URL', async () => {
    const url = `http://127.0.0.1:${await closedPort()}/api`;
    const run = await runChat(['--url', url], ['Hello?']);
    assert.equal(run.code, 1);
    assert.equal(run.stderr.trim(), `No API at ${url}. Start it with \`npm start\`.`);
  });
});

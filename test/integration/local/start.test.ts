/**
 * `npm start` as a developer runs it on a fresh clone (issue 4's must-show): local/start.ts as a child process,
 * from the TypeScript sources (no build needed), with no Azure or storage settings and no local.settings.json. It
 * runs on free ports with a temporary data folder, so it cannot collide with a developer's running instance or
 * with other tests, and every process it starts is killed by its PID in after().
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { call, REPO_ROOT } from '../../support/app';

const READY = /API ready on (http:\/\/\S+)/;
const AZURITE_STARTED = /Azurite Table service on \S+ \(pid (\d+)\)/;
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;

interface StartRun {
  child: ChildProcess;
  output(): string;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
}

const runs: StartRun[] = [];
const azuritePids: number[] = [];
const tempFolder = mkdtempSync(join(tmpdir(), 'npm-start-test-'));

after(async () => {
  // Azurite first: a start script killed with SIGKILL cannot stop its own children.
  for (const pid of azuritePids) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  for (const run of runs) {
    if (run.child.exitCode === null && run.child.signalCode === null && run.child.pid !== undefined) {
      process.kill(run.child.pid, 'SIGKILL');
      await run.exited;
    }
  }
  rmSync(tempFolder, { recursive: true, force: true });
});

interface Ports {
  port: number;
  azuritePort: number;
  modelPort: number;
  queuePort: number;
}

/** Four distinct free loopback ports: all held at once while picking, then released. */
async function freePorts(): Promise<Ports> {
  const servers = await Promise.all(
    [0, 1, 2, 3].map(
      () =>
        new Promise<Server>((resolve, reject) => {
          const server = createServer();
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve(server));
        }),
    ),
  );
  const [port = 0, azuritePort = 0, modelPort = 0, queuePort = 0] = servers.map(
    (server) => (server.address() as AddressInfo).port,
  );
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return { port, azuritePort, modelPort, queuePort };
}

/** What a fresh clone has: a PATH and a HOME, no Azure or storage settings. Plus where to run, to avoid collisions. */
function freshCloneEnv(ports: Ports, dataFolder: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    ...(process.env.HOME ? { HOME: process.env.HOME } : {}),
    PORT: String(ports.port),
    AZURITE_TABLE_PORT: String(ports.azuritePort),
    AZURITE_QUEUE_PORT: String(ports.queuePort),
    LOCAL_MODEL_PORT: String(ports.modelPort),
    AZURITE_LOCATION: dataFolder,
    // The repo may hold a developer's local.settings.json (with Azure settings): point past it.
    LOCAL_SETTINGS_PATH: join(tempFolder, 'no-such-local.settings.json'),
  };
}

/** `group`: the script leads a process group of its own, as a shell's foreground job does, so it can be signalled whole. */
function runStart(env: Record<string, string>, options: { group?: boolean } = {}): StartRun {
  const child = spawn(process.execPath, ['--import', 'tsx', join('local', 'start.ts')], {
    cwd: REPO_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: options.group ?? false,
  });
  let output = '';
  const keep = (chunk: Buffer) => (output += chunk.toString('utf8'));
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const run: StartRun = {
    child,
    output: () => output,
    exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))),
  };
  runs.push(run);
  return run;
}

/** Waits (bounded) until the script's output matches; fails with that output if it exits or times out first. */
async function waitForOutput(run: StartRun, pattern: RegExp): Promise<RegExpExecArray> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const match = pattern.exec(run.output());
    if (match) return match;
    const exitCode = run.child.exitCode ?? run.child.signalCode;
    if (exitCode !== null) assert.fail(`npm start exited (${exitCode}) before printing ${pattern}:\n${run.output()}`);
    if (Date.now() > deadline)
      assert.fail(`npm start did not print ${pattern} in ${START_TIMEOUT_MS} ms:\n${run.output()}`);
    await delay(50);
  }
}

/**
 * Waits (bounded) for the script to exit by itself, or after `signal`, and returns its exit code. `toGroup` sends the
 * signal to the script's whole process group, as a terminal's Ctrl-C (SIGINT) or `kill -TERM -<pgid>` does.
 */
async function waitForExit(run: StartRun, signal?: NodeJS.Signals, toGroup = false): Promise<number | null> {
  if (signal && toGroup) process.kill(-run.child.pid!, signal);
  else if (signal) run.child.kill(signal);
  const timedOut = delay(STOP_TIMEOUT_MS, 'timed out' as const, { ref: false });
  const result = await Promise.race([run.exited, timedOut]);
  if (result === 'timed out') assert.fail(`npm start did not exit within ${STOP_TIMEOUT_MS} ms:\n${run.output()}`);
  return result;
}

/** Starts the script and waits until the API is ready; returns its base URL and its Azurite's PID. */
async function startReady(
  env: Record<string, string>,
  options: { group?: boolean } = {},
): Promise<{ run: StartRun; api: string; azuritePid: number }> {
  const run = runStart(env, options);
  const api = (await waitForOutput(run, READY))[1]!;
  const azuritePid = Number((await waitForOutput(run, AZURITE_STARTED))[1]);
  azuritePids.push(azuritePid);
  return { run, api, azuritePid };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

describe('npm start (local/start.ts) on a fresh clone', () => {
  it('serves the API with Azurite and the local model, stops on SIGTERM, and keeps conversations across a restart', async () => {
    const ports = await freePorts();
    const env = freshCloneEnv(ports, join(tempFolder, 'azurite'));

    const first = await startReady(env);
    assert.equal(first.api, `http://127.0.0.1:${ports.port}/api`);
    assert.match(first.run.output(), new RegExp(`Local model .* at http://127\\.0\\.0\\.1:${ports.modelPort}\\b`));
    assert.match(first.run.output(), new RegExp(`Azurite Table service on 127\\.0\\.0\\.1:${ports.azuritePort} `));

    const health = await call('GET', `${first.api}/health`);
    assert.equal(health.status, 200, health.text);
    const created = await call('POST', `${first.api}/conversations`, { title: 'Fresh clone' });
    assert.equal(created.status, 201, created.text);
    const id = created.body.id as string;
    const sent = await call('POST', `${first.api}/conversations/${id}/messages`, {
      content: 'Hello from the start test',
    });
    assert.equal(sent.status, 200, sent.text);
    const reply = sent.body.message.content as string;
    assert.match(reply, /^This is the local model\b/);
    assert.ok(reply.includes('Hello from the start test'), reply);

    // Queued turns: Azurite's Queue service runs too, and the local host's queue trigger answers them.
    assert.match(first.run.output(), new RegExp(`Azurite Queue service on 127\\.0\\.0\\.1:${ports.queuePort} `));
    assert.match(first.run.output(), /queue turn-jobs -> runTurnJob/);
    const queued = await call(
      'POST',
      `${first.api}/conversations/${id}/messages`,
      { content: 'Queued from the start test' },
      { prefer: 'respond-async' },
    );
    assert.equal(queued.status, 202, queued.text);
    const statusUrl = `${first.api.replace(/\/api$/, '')}${queued.headers.get('location')}`;
    for (let polls = 0; ; polls++) {
      const status = await call('GET', statusUrl);
      if (status.body.status === 'completed') break;
      assert.ok(polls < 600 && status.body.status !== 'failed', status.text);
      await delay(100);
    }

    assert.equal(await waitForExit(first.run, 'SIGTERM'), 0, first.run.output());
    assert.equal(isAlive(first.azuritePid), false, `Azurite (pid ${first.azuritePid}) outlived npm start`);
    await assert.rejects(fetch(`${first.api}/health`), 'nothing serves the API any more');

    const second = await startReady(env);
    assert.notEqual(second.azuritePid, first.azuritePid);
    const read = await call('GET', `${second.api}/conversations/${id}`);
    assert.equal(read.status, 200, read.text);
    assert.equal(read.body.title, 'Fresh clone');
    assert.deepEqual(
      read.body.messages.map((message: { role: string; content: string }) => [message.role, message.content]),
      [
        ['user', 'Hello from the start test'],
        ['assistant', reply],
        ['user', 'Queued from the start test'],
        ['assistant', read.body.messages[3]?.content],
      ],
    );

    assert.equal(await waitForExit(second.run, 'SIGTERM'), 0, second.run.output());
    assert.equal(isAlive(second.azuritePid), false, `Azurite (pid ${second.azuritePid}) outlived npm start`);
  });

  it('starts from a verbatim copy of local.settings.sample.json, and keeps what was written right before Ctrl-C or a group SIGTERM', async () => {
    const ports = await freePorts();
    const settingsPath = join(tempFolder, 'local.settings.json');
    copyFileSync(join(REPO_ROOT, 'local.settings.sample.json'), settingsPath);
    const env = { ...freshCloneEnv(ports, join(tempFolder, 'azurite-sample')), LOCAL_SETTINGS_PATH: settingsPath };
    const written: { id: string; reply: string }[] = [];
    const write = async (api: string, content: string) => {
      const created = await call('POST', `${api}/conversations`, {});
      assert.equal(created.status, 201, created.text);
      const sent = await call('POST', `${api}/conversations/${created.body.id}/messages`, { content });
      assert.equal(sent.status, 200, sent.text);
      written.push({ id: created.body.id as string, reply: sent.body.message.content as string });
    };
    const readBack = async (api: string) => {
      for (const { id, reply } of written) {
        const read = await call('GET', `${api}/conversations/${id}`);
        assert.equal(read.status, 200, `${id} was lost: ${read.text}`);
        assert.equal(read.body.messages.at(-1)?.content, reply);
      }
    };

    // Each run is stopped the moment its last write answered 2xx: no time for Azurite's periodic save.
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      const run = await startReady(env, { group: true });
      assert.match(run.run.output(), /Settings from .*local\.settings\.json: FUNCTIONS_WORKER_RUNTIME/);
      await readBack(run.api);
      await write(run.api, `Written just before ${signal}`);
      assert.equal(await waitForExit(run.run, signal, true), 0, run.run.output());
      assert.equal(isAlive(run.azuritePid), false, `Azurite (pid ${run.azuritePid}) outlived npm start`);
    }
    const last = await startReady(env, { group: true });
    await readBack(last.api);
    assert.equal(await waitForExit(last.run, 'SIGINT', true), 0, last.run.output());
  });

  it('says why and exits non-zero when Azurite cannot start', async () => {
    const notAFolder = join(tempFolder, 'a-file');
    writeFileSync(notAFolder, '');
    const run = runStart(freshCloneEnv(await freePorts(), join(notAFolder, 'azurite')));

    assert.equal(await waitForExit(run), 1, run.output());
    assert.match(run.output(), /npm start failed: Azurite exited \(code \d+\) before listening/);
    assert.match(run.output(), /ENOTDIR/, 'Azurite says why');
    assert.doesNotMatch(run.output(), READY);
  });
});

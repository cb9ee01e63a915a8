import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  corsFromHostSettings,
  type CorsPolicy,
  formatRouteTable,
  type LocalHost,
  startLocalHost,
} from '../../../local/localHost';
import { compileRouteTemplate, readRoutePrefix } from '../../../local/host/routing';
import { serializeCookie } from '../../../local/host/serving';
import { createStreamProbe, hookLog } from '../../support/fixtures/functions/signals';

const repoRoot = path.resolve(__dirname, '../../..');
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const fixtures = path.join(repoRoot, 'test/support/fixtures/functions');
const setupModule = path.join(fixtures, 'setup.ts');
const functionModules = ['getItem', 'echo', 'hello', 'streamTicks', 'fail'].map((name) =>
  path.join(fixtures, `${name}.ts`),
);
const noHostJson = path.join(fixtures, 'no-such-host.json');
const bodyLimit = 256 * 1024;

const decoder = new TextDecoder();

/** Reads until the text seen so far contains `expected` (chunk boundaries are the network's business). */
async function readUntil(reader: ReadableStreamDefaultReader<Uint8Array>, expected: string): Promise<string> {
  let text = '';
  while (!text.includes(expected)) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`The body ended before "${expected}"; got "${text}".`);
    text += decoder.decode(value, { stream: true });
  }
  return text;
}

async function readToEnd(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<string> {
  let text = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return text;
    text += decoder.decode(value, { stream: true });
  }
}

describe('local Functions host', () => {
  const logLines: string[] = [];
  const errorLines: string[] = [];
  let host: LocalHost;

  before(async () => {
    host = await startLocalHost({
      port: 0,
      setupModule,
      functionModules,
      hostJsonPath: noHostJson,
      maxRequestBodyBytes: bodyLimit,
      log: (line) => logLines.push(line),
      logError: (line) => errorLines.push(line),
    });
  });

  after(async () => {
    await host.close();
  });

  it('collects the app.http registrations with the route, methods and authLevel the library built', () => {
    const byName = [...host.routes].sort((a, b) => a.functionName.localeCompare(b.functionName));
    assert.deepEqual(byName, [
      { functionName: 'echo', methods: ['POST'], route: 'echo', path: '/api/echo', authLevel: 'anonymous' },
      { functionName: 'fail', methods: ['GET', 'POST'], route: 'fail', path: '/api/fail', authLevel: 'anonymous' },
      {
        functionName: 'getItem',
        methods: ['GET'],
        route: 'items/{id:int}/{view?}',
        path: '/api/items/{id:int}/{view?}',
        authLevel: 'function',
      },
      // Registered with neither route nor methods: the function name and GET, POST.
      { functionName: 'hello', methods: ['GET', 'POST'], route: 'hello', path: '/api/hello', authLevel: 'anonymous' },
      { functionName: 'streamTicks', methods: ['GET'], route: 'stream', path: '/api/stream', authLevel: 'anonymous' },
    ]);
    assert.equal(host.url, `http://127.0.0.1:${host.port}`);
    assert.match(
      formatRouteTable(host),
      /GET\s+http:\/\/127\.0\.0\.1:\d+\/api\/items\/\{id:int\}\/\{view\?\}\s+getItem/,
    );
  });

  it('ran the setup module and the app hooks, as the worker does', async () => {
    assert.ok(hookLog.includes('appStart'));
    await (await fetch(`${host.url}/api/items/1`)).text();
    assert.ok(hookLog.includes('preInvocation:getItem'));
  });

  it('passes route parameters, repeated query keys and a fresh invocation to the handler', async () => {
    const response = await fetch(`${host.url}/api/items/42/full?tag=a&tag=b`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/json');
    const body = (await response.json()) as Record<string, unknown>;
    assert.deepEqual(
      { ...body, invocationId: undefined },
      {
        id: '42',
        view: 'full',
        tags: ['a', 'b'],
        method: 'GET',
        url: `${host.url}/api/items/42/full?tag=a&tag=b`,
        functionName: 'getItem',
        invocationId: undefined,
        triggerType: 'httpTrigger',
      },
    );
    assert.match(String(body.invocationId), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('matches literals case-insensitively, leaves optional parameters out, and enforces constraints', async () => {
    const mixedCase = await fetch(`${host.url}/API/Items/7/`);
    assert.equal(mixedCase.status, 200);
    assert.deepEqual(
      ((await mixedCase.json()) as { id: string; view: string | null }).view,
      null,
      'the optional {view?} is absent',
    );
    for (const notAnInt of ['abc', '99999999999', '4.2']) {
      const response = await fetch(`${host.url}/api/items/${notAnInt}`);
      assert.equal(response.status, 404, `items/${notAnInt} must not match {id:int}`);
      await response.body?.cancel();
    }
  });

  it('logs one line per request and the app logs with the function name', async () => {
    await (await fetch(`${host.url}/api/items/5?tag=secret`)).text();
    assert.ok(
      logLines.some((line) => /^GET \/api\/items\/5 -> 200 \(\d+ ms\)$/.test(line)),
      logLines.join('\n'),
    );
    assert.ok(logLines.includes('[getItem] reading item 5'));
    assert.ok(!logLines.some((line) => line.includes('secret')), 'the query string is not logged');
  });

  it('round-trips a JSON body', async () => {
    const message = { text: 'héllo 👋', nested: { list: [1, 2, 3] } };
    const response = await fetch(`${host.url}/api/echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(message),
    });
    assert.equal(response.status, 201);
    assert.deepEqual(await response.json(), { received: message });
  });

  it('round-trips arbitrary bytes with their content type and length', async () => {
    const bytes = Buffer.alloc(64 * 1024);
    for (let index = 0; index < bytes.length; index += 1) bytes[index] = (index * 31 + 7) % 256;
    const response = await fetch(`${host.url}/api/echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-fixture' },
      body: bytes,
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/x-fixture');
    assert.equal(response.headers.get('content-length'), String(bytes.length));
    assert.ok(Buffer.from(await response.arrayBuffer()).equals(bytes));
  });

  it('serves an HttpResponse instance with its cookies, without hop-by-hop headers', async () => {
    for (const method of ['GET', 'POST']) {
      const response = await fetch(`${host.url}/api/hello?name=ada`, { method });
      assert.equal(response.status, 200, method);
      assert.equal(await response.text(), 'hello ada');
      assert.equal(response.headers.get('x-greeting'), 'hello');
      assert.equal(response.headers.get('x-internal'), null, 'a header named by Connection is not forwarded');
      assert.deepEqual(response.headers.getSetCookie(), ['session=a%20b; Max-Age=60; Path=/; HttpOnly; SameSite=Lax']);
    }
  });

  it("answers an unknown route with a 404 problem in the app's problem format", async () => {
    const response = await fetch(`${host.url}/api/nothing/here`);
    assert.equal(response.status, 404);
    assert.equal(response.headers.get('content-type'), 'application/problem+json');
    const { requestId, ...problem } = (await response.json()) as Record<string, unknown>;
    assert.deepEqual(problem, {
      type: 'urn:chat-api:problem:not_found',
      title: 'Not found',
      status: 404,
      detail: 'No function is registered for GET /api/nothing/here.',
      code: 'not_found',
      instance: '/api/nothing/here',
    });
    assert.match(String(requestId), UUID, 'every problem carries a requestId, host-level ones too');
  });

  it('answers a known route with the wrong method with a 405 problem and Allow', async () => {
    const response = await fetch(`${host.url}/api/items/1`, { method: 'DELETE' });
    assert.equal(response.status, 405);
    assert.equal(response.headers.get('allow'), 'GET');
    const problem = (await response.json()) as Record<string, unknown>;
    assert.equal(problem.code, 'method_not_allowed');
    assert.equal(problem.status, 405);
    assert.match(String(problem.requestId), UUID);
  });

  it('refuses a body over the limit with 413, declared or streamed', async () => {
    const declared = await fetch(`${host.url}/api/echo`, { method: 'POST', body: Buffer.alloc(bodyLimit + 1) });
    assert.equal(declared.status, 413);
    assert.equal(((await declared.json()) as { code: string }).code, 'payload_too_large');

    const chunks = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let index = 0; index < 5; index += 1) controller.enqueue(new Uint8Array(64 * 1024));
        controller.close();
      },
    });
    const streamed = await fetch(`${host.url}/api/echo`, {
      method: 'POST',
      body: chunks,
      duplex: 'half',
    } as RequestInit);
    assert.equal(streamed.status, 413);
    await streamed.body?.cancel();
  });

  it(
    'delivers the first chunk of a streamed body before the handler has written the rest',
    { timeout: 10_000 },
    async () => {
      const probe = createStreamProbe('incremental');
      const response = await fetch(`${host.url}/api/stream?probe=incremental`);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('content-type'), 'text/event-stream');
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      // The second event waits for release(): a host that buffered the body would never get us here.
      const first = await readUntil(reader, 'data: first\n\n');
      assert.equal(first, 'data: first\n\n');
      probe.release();
      assert.equal(await readToEnd(reader), 'data: second\n\n');
    },
  );

  it('cancels the body stream when the client disconnects mid-stream', { timeout: 10_000 }, async () => {
    const probe = createStreamProbe('abandoned');
    const abort = new AbortController();
    const response = await fetch(`${host.url}/api/stream?probe=abandoned`, { signal: abort.signal });
    await readUntil((response.body as ReadableStream<Uint8Array>).getReader(), 'data: first');
    abort.abort();
    const reason = await probe.cancelled;
    assert.match(String(reason), /client disconnected/);
    assert.ok(logLines.some((line) => /^GET \/api\/stream -> 200 \(\d+ ms, client disconnected\)$/.test(line)));
    // The host is still serving.
    assert.equal((await fetch(`${host.url}/api/hello`)).status, 200);
  });

  it('turns a handler exception into an opaque 500 problem and logs the error instead', async () => {
    const response = await fetch(`${host.url}/api/fail`);
    assert.equal(response.status, 500);
    assert.equal(response.headers.get('content-type'), 'application/problem+json');
    const text = await response.text();
    const problem = JSON.parse(text) as Record<string, unknown>;
    assert.equal(problem.code, 'internal_error');
    assert.equal(problem.status, 500);
    assert.equal(problem.instance, '/api/fail');
    assert.ok(!text.includes('hunter2') && !text.includes('fail.ts'), 'no message or stack in the body');
    const logged = errorLines.find((line) => line.includes(`[fail] invocation ${String(problem.requestId)} failed`));
    assert.ok(logged?.includes('hunter2') && logged.includes('fail.ts'), 'the log has the message and the stack');
  });
});

describe('local Functions host: close()', () => {
  let host: LocalHost | undefined;
  after(() => host?.close()); // idempotent; it matters when the test failed before its own close()

  it('refuses new connections and ends open streams, cancelling their bodies', { timeout: 10_000 }, async () => {
    // A second host in the same process: the modules already ran, their registrations are reused.
    host = await startLocalHost({
      port: 0,
      setupModule,
      functionModules,
      routePrefix: 'v2',
      log: () => undefined,
      logError: () => undefined,
    });
    assert.equal(host.routes.length, 5);
    assert.equal((await fetch(`${host.url}/v2/hello`)).status, 200);
    assert.equal((await fetch(`${host.url}/api/hello`)).status, 404);

    const probe = createStreamProbe('closing');
    const response = await fetch(`${host.url}/v2/stream?probe=closing`);
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    await readUntil(reader, 'data: first');

    await host.close();
    await assert.rejects(reader.read(), 'the open stream is cut');
    assert.match(String(await probe.cancelled), /client disconnected/);
    assert.ok(hookLog.includes('appTerminate'));
    await assert.rejects(fetch(`${host.url}/v2/hello`), (error: Error) => {
      assert.equal((error.cause as { code?: string } | undefined)?.code, 'ECONNREFUSED');
      return true;
    });
  });
});

describe('local Functions host: CORS from Host.CORS, as func start applies it', () => {
  const hosts: LocalHost[] = [];
  after(async () => {
    for (const started of hosts) await started.close();
  });
  const start = async (cors: CorsPolicy) => {
    const started = await startLocalHost({
      port: 0,
      setupModule,
      functionModules,
      hostJsonPath: noHostJson,
      cors,
      log: () => undefined,
      logError: () => undefined,
    });
    hosts.push(started);
    return started;
  };
  const preflight = (url: string, origin: string) =>
    fetch(url, {
      method: 'OPTIONS',
      headers: {
        origin,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type,idempotency-key',
      },
    });

  it('answers preflights for listed origins on any path and adds the origin to their responses, problems too', async () => {
    const listed = await start({
      allowedOrigins: ['http://app.example', 'http://localhost:5173/'],
      supportCredentials: true,
    });
    const allowed = await preflight(`${listed.url}/api/echo`, 'http://localhost:5173');
    assert.equal(allowed.status, 204);
    assert.equal(allowed.headers.get('access-control-allow-origin'), 'http://localhost:5173');
    assert.equal(allowed.headers.get('access-control-allow-methods'), 'POST');
    assert.equal(allowed.headers.get('access-control-allow-headers'), 'content-type,idempotency-key');
    assert.equal(allowed.headers.get('access-control-allow-credentials'), 'true');
    assert.equal(allowed.headers.get('vary'), 'Origin');

    const get = await fetch(`${listed.url}/api/hello`, { headers: { origin: 'http://app.example' } });
    assert.equal(get.status, 200);
    assert.equal(get.headers.get('access-control-allow-origin'), 'http://app.example');
    assert.equal(get.headers.get('x-greeting'), 'hello', "the function's own headers stay");
    const missing = await fetch(`${listed.url}/api/nothing`, { headers: { origin: 'http://app.example' } });
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get('access-control-allow-origin'), 'http://app.example');

    const stranger = await preflight(`${listed.url}/api/echo`, 'http://evil.example');
    assert.equal(stranger.status, 204);
    assert.equal(
      stranger.headers.get('access-control-allow-origin'),
      null,
      'an origin not listed gets no CORS headers',
    );
    const noOrigin = await fetch(`${listed.url}/api/hello`);
    assert.equal(noOrigin.headers.get('access-control-allow-origin'), null);
  });

  it('allows any origin with "*", and without a policy OPTIONS is an ordinary request (405 here)', async () => {
    const any = await start({ allowedOrigins: ['*'] });
    const answer = await preflight(`${any.url}/api/echo`, 'http://anywhere.example');
    assert.equal(answer.status, 204);
    assert.equal(answer.headers.get('access-control-allow-origin'), '*');
    assert.equal(answer.headers.get('access-control-allow-credentials'), null);
    const posted = await fetch(`${any.url}/api/echo`, {
      method: 'POST',
      headers: { origin: 'http://anywhere.example', 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(posted.headers.get('access-control-allow-origin'), '*');

    const none = await startLocalHost({
      port: 0,
      setupModule,
      functionModules,
      hostJsonPath: noHostJson,
      log: () => {},
    });
    hosts.push(none);
    assert.equal((await preflight(`${none.url}/api/echo`, 'http://anywhere.example')).status, 405);
    await assert.rejects(start({ allowedOrigins: ['*'], supportCredentials: true }), /credentials/);
  });

  it('reads Host.CORS and Host.CORSCredentials as local.settings.json writes them', () => {
    assert.deepEqual(corsFromHostSettings({ LocalHttpPort: 7071, CORS: '*' }), {
      allowedOrigins: ['*'],
      supportCredentials: false,
    });
    assert.deepEqual(corsFromHostSettings({ CORS: 'http://a.example, http://b.example', CORSCredentials: true }), {
      allowedOrigins: ['http://a.example', 'http://b.example'],
      supportCredentials: true,
    });
    assert.equal(corsFromHostSettings({ LocalHttpPort: 7071 }), undefined);
    assert.equal(corsFromHostSettings(undefined), undefined);
  });
});

describe('route templates', () => {
  it('matches literals case-insensitively and decodes parameters', () => {
    const matcher = compileRouteTemplate('api/conversations/{id}/messages');
    assert.deepEqual(matcher.match('/API/Conversations/a%20b/MESSAGES'), { id: 'a b' });
    assert.equal(matcher.match('/api/conversations/x'), undefined);
    assert.equal(matcher.match('/api/conversations/x/messages/extra'), undefined);
  });

  it('checks guid, int, bool, alpha, length and range constraints', () => {
    const guid = compileRouteTemplate('c/{id:guid}');
    assert.deepEqual(guid.match('/c/0f8fad5b-d9cb-469f-a165-70867728950e'), {
      id: '0f8fad5b-d9cb-469f-a165-70867728950e',
    });
    assert.equal(guid.match('/c/not-a-guid'), undefined);
    assert.deepEqual(compileRouteTemplate('n/{n:int:range(1,10)}').match('/n/10'), { n: '10' });
    assert.equal(compileRouteTemplate('n/{n:int:range(1,10)}').match('/n/11'), undefined);
    assert.equal(compileRouteTemplate('n/{n:int}').match('/n/2147483648'), undefined);
    assert.deepEqual(compileRouteTemplate('b/{flag:bool}').match('/b/TRUE'), { flag: 'TRUE' });
    assert.equal(compileRouteTemplate('a/{word:alpha:maxlength(3)}').match('/a/abcd'), undefined);
    assert.deepEqual(compileRouteTemplate('r/{code:regex(^[a-z]{{2}}$)}').match('/r/ab'), { code: 'ab' });
  });

  it('supports optional, defaulted, catch-all and complex segments', () => {
    assert.deepEqual(compileRouteTemplate('items/{id?}').match('/items'), {});
    assert.deepEqual(compileRouteTemplate('items/{page:int=1}').match('/items'), { page: '1' });
    assert.deepEqual(compileRouteTemplate('files/{*path}').match('/files/a/b%2Fc/d.txt'), { path: 'a/b/c/d.txt' });
    assert.deepEqual(compileRouteTemplate('files/{*path}').match('/files'), {});
    assert.deepEqual(compileRouteTemplate('f/{name}.{ext}').match('/f/archive.tar.gz'), {
      name: 'archive.tar',
      ext: 'gz',
    });
  });

  it('refuses templates it cannot honour instead of mis-routing', () => {
    assert.throws(() => compileRouteTemplate('x/{id:nonsense}'), /does not support the route constraint "nonsense"/);
    assert.throws(() => compileRouteTemplate('x/{*rest}/more'), /catch-all parameter must be the last segment/);
    assert.throws(() => compileRouteTemplate('x/{id'), /unclosed/);
  });

  it('ranks literal segments ahead of parameters', () => {
    const literal = compileRouteTemplate('api/items/new').precedence;
    const parameter = compileRouteTemplate('api/items/{id}').precedence;
    assert.ok(literal[2]! < parameter[2]!);
  });
});

describe('host.json and cookies', () => {
  const scratch = mkdtempSync(path.join(tmpdir(), 'local-host-json-'));
  after(() => rmSync(scratch, { recursive: true, force: true }));

  it('reads extensions.http.routePrefix, defaulting to api', () => {
    const hostJson = path.join(scratch, 'host.json');
    writeFileSync(hostJson, JSON.stringify({ version: '2.0', extensions: { http: { routePrefix: 'v1' } } }));
    assert.equal(readRoutePrefix(hostJson), 'v1');
    writeFileSync(hostJson, JSON.stringify({ version: '2.0' }));
    assert.equal(readRoutePrefix(hostJson), 'api');
    assert.equal(readRoutePrefix(path.join(scratch, 'absent.json')), 'api');
  });

  it('serializes cookies like the library does', () => {
    const expires = new Date(Date.UTC(2030, 0, 2, 3, 4, 5));
    assert.equal(
      serializeCookie({ name: 'id', value: 'x=y', domain: 'example.test', expires, secure: true, sameSite: 'None' }),
      'id=x%3Dy; Domain=example.test; Expires=Wed, 02 Jan 2030 03:04:05 GMT; Secure; SameSite=None',
    );
    assert.throws(() => serializeCookie({ name: 'bad name', value: '' }), /Invalid cookie name/);
  });
});

describe('local Functions host as a process', () => {
  const children: ChildProcess[] = [];
  const scratch = mkdtempSync(path.join(tmpdir(), 'local-host-app-'));

  after(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(scratch, { recursive: true, force: true });
  });

  function run(
    args: string[],
    options: { cwd: string; env?: NodeJS.ProcessEnv },
  ): ChildProcess & { output: () => string } {
    const child = spawn(process.execPath, ['--import', 'tsx', ...args], {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    return Object.assign(child, { output: () => output });
  }

  function exited(child: ChildProcess): Promise<number | null> {
    return new Promise((resolve) => {
      if (child.exitCode !== null) resolve(child.exitCode);
      else child.once('exit', (code) => resolve(code));
    });
  }

  it('refuses to start when @azure/functions already settled on test mode', { timeout: 20_000 }, async () => {
    const script = [
      "const { app } = require('@azure/functions');",
      "app.http('early', { handler: () => ({}) });",
      `require(${JSON.stringify(path.join(repoRoot, 'local/localHost.ts'))})`,
      `  .startLocalHost({ port: 0, functionModules: [${JSON.stringify(path.join(fixtures, 'hello.ts'))}] })`,
      "  .then(() => { console.log('STARTED'); process.exit(0); }, (e) => { console.log('REFUSED: ' + e.message); process.exit(3); });",
    ].join('\n');
    const child = run(['-e', script], { cwd: repoRoot });
    assert.equal(await exited(child), 3, child.output());
    assert.match(child.output(), /REFUSED: @azure\/functions already switched to test mode/);
  });

  it(
    'main() serves what package.json main names in the current directory, with host.json and local.settings.json, and stops on SIGTERM',
    { timeout: 30_000 },
    async () => {
      const functionsDir = path.join(scratch, 'dist/src/functions');
      mkdirSync(functionsDir, { recursive: true });
      symlinkSync(path.join(repoRoot, 'node_modules'), path.join(scratch, 'node_modules'), 'dir');
      // A glob, as the worker accepts: brace alternatives load in their order, wildcard matches by name.
      writeFileSync(path.join(scratch, 'package.json'), JSON.stringify({ main: 'dist/src/{index.js,functions/*.js}' }));
      writeFileSync(
        path.join(scratch, 'host.json'),
        JSON.stringify({ version: '2.0', extensions: { http: { routePrefix: 'v1' } } }),
      );
      writeFileSync(
        path.join(scratch, 'local.settings.json'),
        JSON.stringify({ Values: { LOCAL_HOST_PROBE: 'from-file' } }),
      );
      writeFileSync(
        path.join(scratch, 'dist/src/index.js'),
        "require('@azure/functions').app.setup({ enableHttpStream: true });\n",
      );
      writeFileSync(
        path.join(functionsDir, 'ping.js'),
        [
          "const { app } = require('@azure/functions');",
          "app.http('ping', { route: 'ping/{who?}', methods: ['GET'], handler: (request) => ({",
          '  jsonBody: { who: request.params.who ?? null, setting: process.env.LOCAL_HOST_PROBE ?? null },',
          '}) });',
        ].join('\n'),
      );

      const env = { PORT: '0', LOCAL_HOST_PROBE: undefined };
      const child = run([path.join(repoRoot, 'local/localHost.ts')], { cwd: scratch, env });
      // Ready once the route table is out: it is printed after the server listens.
      const routeRow = /GET\s+(http:\/\/127\.0\.0\.1:\d+)\/v1\/ping\/\{who\?\}\s+ping/;
      const url = await new Promise<string>((resolve, reject) => {
        const look = (): void => {
          const found = routeRow.exec(child.output());
          if (found?.[1]) resolve(found[1]);
        };
        child.stdout?.on('data', look);
        child.once('exit', () => reject(new Error(`exited early:\n${child.output()}`)));
      });
      assert.match(child.output(), /listening on http:\/\/127\.0\.0\.1:\d+, route prefix "\/v1"/);

      const response = await fetch(`${url}/v1/ping/ada`);
      assert.deepEqual(await response.json(), { who: 'ada', setting: 'from-file' });

      child.kill('SIGTERM');
      assert.equal(await exited(child), 0, child.output());
      assert.match(child.output(), /SIGTERM: stopping the local host/);
    },
  );
});

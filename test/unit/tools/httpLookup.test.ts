import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidToolArgumentsError } from '../../../src/core/tools';
import { createHttpLookup } from '../../../src/tools/httpLookup';

const caller = { id: 'alice', kind: 'user' as const };
const signal = new AbortController().signal;

function recordingFetch(respond: (url: string) => Response) {
  const seen: { url: string; headers: Headers; method: string; redirect: string | undefined }[] = [];
  const fetch = (async (input: URL | string, init?: RequestInit) => {
    seen.push({
      url: String(input),
      headers: new Headers(init?.headers),
      method: init?.method ?? 'GET',
      redirect: init?.redirect,
    });
    return respond(String(input));
  }) as typeof globalThis.fetch;
  return { fetch, seen };
}

describe('http_lookup', () => {
  it('GETs paths under the base URL with the key header, and returns the body', async () => {
    const { fetch, seen } = recordingFetch(() => new Response('{"id":"12345","status":"shipped"}'));
    const tool = createHttpLookup({ baseUrl: 'https://svc.example/api', apiKey: 'k1', apiKeyHeader: 'x-key', fetch });
    assert.equal(
      await tool.invoke({ path: 'orders/12345?fields=status' }, { caller, signal }),
      '{"id":"12345","status":"shipped"}',
    );
    assert.equal(seen[0]?.url, 'https://svc.example/api/orders/12345?fields=status');
    assert.equal(seen[0]?.headers.get('x-key'), 'k1');
    assert.equal(seen[0]?.method, 'GET');
    assert.equal(seen[0]?.redirect, 'error');
  });

  it('sends the managed identity token when it has one', async () => {
    const { fetch, seen } = recordingFetch(() => new Response('ok'));
    const tool = createHttpLookup({ baseUrl: 'https://svc.example/', getToken: async () => 'tok', fetch });
    await tool.invoke({ path: 'x' }, { caller, signal });
    assert.equal(seen[0]?.headers.get('authorization'), 'Bearer tok');
  });

  it('refuses paths that would leave the base URL, before any request', async () => {
    const { fetch, seen } = recordingFetch(() => new Response('ok'));
    const tool = createHttpLookup({ baseUrl: 'https://svc.example/api/', apiKey: 'k', fetch });
    for (const path of [
      '../admin',
      '/etc/passwd',
      '//evil.example/x',
      'a/../../b',
      'https://evil.example/',
      'a/%2e%2e/b',
      'a\\b',
      '',
    ]) {
      await assert.rejects(tool.invoke({ path }, { caller, signal }), InvalidToolArgumentsError, path);
    }
    assert.equal(seen.length, 0);
  });

  it('refuses encoded, path-parameter and backslash tricks and anything but plain segments, before any request', async () => {
    const { fetch, seen } = recordingFetch(() => new Response('ok'));
    const tool = createHttpLookup({ baseUrl: 'https://svc.example/api/orders/', apiKey: 'k', fetch });
    for (const path of [
      'orders%5c..%5c..%5cadmin',
      '..;/..;/admin',
      'x/..;/admin',
      '%252e%252e/admin',
      '%2e%2e/admin',
      'a%2fb',
      'a;b=c',
      'a\\..\\admin',
      '.',
      '...',
      'a/./b',
      'a/',
      'a b',
      'a?b=c#frag',
      'a?b=%0a',
      'ä',
      '@evil.example',
      'http:x',
    ]) {
      await assert.rejects(tool.invoke({ path }, { caller, signal }), InvalidToolArgumentsError, path);
    }
    assert.equal(seen.length, 0);
  });

  it('percent-encodes the segments itself and serialises the query anew', async () => {
    const { fetch, seen } = recordingFetch(() => new Response('ok'));
    const tool = createHttpLookup({ baseUrl: 'https://svc.example/api/', apiKey: 'k', fetch });
    await tool.invoke({ path: 'customers/a.b~c_d-1?email=a%40b.example&q=two+words&x=a/b' }, { caller, signal });
    assert.equal(seen[0]?.url, 'https://svc.example/api/customers/a.b~c_d-1?email=a%40b.example&q=two+words&x=a%2Fb');
  });

  it('names the caller to the service', async () => {
    const { fetch, seen } = recordingFetch(() => new Response('ok'));
    const tool = createHttpLookup({ baseUrl: 'https://svc.example/', apiKey: 'k', fetch });
    await tool.invoke({ path: 'x' }, { caller: { id: 'zoë@contoso', kind: 'user' }, signal });
    assert.equal(seen[0]?.headers.get('x-chat-caller'), 'zo%C3%AB%40contoso');
    assert.equal(seen[0]?.headers.get('x-chat-caller-kind'), 'user');
  });

  it('tells the model only that the service was unreachable, and logs the details', async () => {
    const logged: string[] = [];
    const log = { warn: (message: string) => logged.push(message) };
    const unreachable = (async () => {
      throw new TypeError('fetch failed', { cause: new Error('connect ECONNREFUSED 10.1.2.3:443') });
    }) as typeof globalThis.fetch;
    const tool = createHttpLookup({ baseUrl: 'https://svc.example/', apiKey: 'k', fetch: unreachable, log });
    await assert.rejects(tool.invoke({ path: 'x' }, { caller, signal }), (error: Error) => {
      assert.equal(error.message, 'The service could not be reached.');
      return true;
    });
    assert.match(logged.join('\n'), /ECONNREFUSED 10\.1\.2\.3:443/);

    const identity = createHttpLookup({
      baseUrl: 'https://svc.example/',
      getToken: async () => {
        throw new Error('ManagedIdentityCredential: no response from http://169.254.169.254/metadata/identity');
      },
      fetch: recordingFetch(() => new Response('ok')).fetch,
      log,
    });
    await assert.rejects(identity.invoke({ path: 'x' }, { caller, signal }), (error: Error) => {
      assert.doesNotMatch(error.message, /169\.254|ManagedIdentity|metadata/);
      assert.match(error.message, /could not authenticate/);
      return true;
    });
    assert.match(logged.join('\n'), /169\.254\.169\.254/);
  });

  it('answers text storage accepts when the body holds NUL', async () => {
    const { fetch } = recordingFetch(() => new Response(new Uint8Array([0x6f, 0x00, 0x6b])));
    const tool = createHttpLookup({ baseUrl: 'https://svc.example/', apiKey: 'k', fetch });
    assert.equal(await tool.invoke({ path: 'x' }, { caller, signal }), 'o\ufffdk');
  });

  it('answers 4xx as output and throws on 5xx', async () => {
    const { fetch } = recordingFetch((url) =>
      url.endsWith('missing') ? new Response('no such order', { status: 404 }) : new Response('boom', { status: 503 }),
    );
    const tool = createHttpLookup({ baseUrl: 'https://svc.example/', apiKey: 'k', fetch });
    assert.deepEqual(await tool.invoke({ path: 'missing' }, { caller, signal }), {
      status: 404,
      body: 'no such order',
    });
    await assert.rejects(tool.invoke({ path: 'broken' }, { caller, signal }), /HTTP 503/);
  });

  it('reads at most maxResponseBytes of a huge answer', async () => {
    const { fetch } = recordingFetch(() => new Response('z'.repeat(300_000)));
    const tool = createHttpLookup({ baseUrl: 'https://svc.example/', apiKey: 'k', fetch, maxResponseBytes: 1_000 });
    assert.equal(((await tool.invoke({ path: 'big' }, { caller, signal })) as string).length, 1_000);
  });
});

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { HttpRequest } from '@azure/functions';
import { AuthUnavailableError, UnauthorizedError } from '../../../../src/core/errors';
import { createJwtCallerResolver, type JwtCallerResolverOptions } from '../../../../src/http/auth/jwtCallerResolver';
import { loadJose, startJwksServer, tamperPayload, unsecuredToken, type JwksServer } from '../../../support/jwks';

let jwks: JwksServer;

before(async () => {
  jwks = await startJwksServer();
  await jwks.addKey({ alg: 'ES256' });
});
after(() => jwks.close());

async function resolver(overrides: Partial<JwtCallerResolverOptions> = {}) {
  const { createLocalJWKSet } = await loadJose();
  return createJwtCallerResolver({
    jwksUrl: jwks.url,
    issuer: jwks.issuer,
    audience: jwks.audience,
    algorithms: ['RS256', 'ES256'],
    userClaim: 'sub',
    clockSkewSeconds: 60,
    // Unit tests verify against the keys directly; the remote key set is exercised in test/integration/auth.test.ts.
    keys: createLocalJWKSet({ keys: jwks.keys.map((key) => key.publicJwk) }),
    ...overrides,
  });
}

function request(headers: Record<string, string> = {}) {
  return new HttpRequest({ method: 'GET', url: 'http://localhost/api/conversations', headers });
}

function bearer(token: string) {
  return request({ authorization: `Bearer ${token}` });
}

/** The 401 the resolver throws, with its WWW-Authenticate header. */
async function refusal(promise: Promise<unknown>): Promise<{ detail: string; challenge: string | undefined }> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof UnauthorizedError, `expected UnauthorizedError, got ${String(error)}`);
    assert.equal(error.status, 401);
    return { detail: error.detail, challenge: error.headers['WWW-Authenticate'] };
  }
  assert.fail('expected the token to be refused');
}

describe('JWT callers', () => {
  it('accepts a valid token and takes the caller from sub', async () => {
    const token = await jwks.sign({}, { subject: 'user-123' });
    assert.deepEqual(await (await resolver()).resolve(bearer(token)), { id: 'user-123', kind: 'user' });
  });

  it('takes the caller from AUTH_USER_CLAIM when configured', async () => {
    const token = await jwks.sign({ oid: 'object-9' }, { subject: 'ignored' });
    assert.deepEqual(await (await resolver({ userClaim: 'oid' })).resolve(bearer(token)), {
      id: 'object-9',
      kind: 'user',
    });
  });

  it('accepts tokens signed by any published key and allowed algorithm (ES256 here)', async () => {
    const es256 = jwks.keys.find((key) => key.alg === 'ES256');
    const token = await jwks.sign({}, { subject: 'ec-user', key: es256 });
    assert.equal((await (await resolver()).resolve(bearer(token))).id, 'ec-user');
  });

  it('asks for credentials without an error code when no Bearer token is sent', async () => {
    const resolve = await resolver();
    for (const headers of [{}, { authorization: 'Basic dXNlcjpwYXNz' }] as Record<string, string>[]) {
      const { detail, challenge } = await refusal(resolve.resolve(request(headers)));
      assert.equal(challenge, 'Bearer realm="chat"');
      assert.match(detail, /Authorization: Bearer/);
    }
  });

  const cases: [string, () => Promise<string>, RegExp][] = [
    ['an expired token', () => jwks.sign({}, { subject: 'u', expiresIn: -120 }), /expired/],
    ['a token for another audience', () => jwks.sign({}, { subject: 'u', audience: 'api://other' }), /audience/],
    ['a token from another issuer', () => jwks.sign({}, { subject: 'u', issuer: 'https://evil.test/' }), /issuer/],
    [
      'a token signed with a key the issuer does not publish',
      async () => jwks.sign({}, { subject: 'u', key: await jwks.addKey({ publish: false }) }),
      /key the issuer does not publish/,
    ],
    [
      'an unsecured token (alg: none)',
      async () => unsecuredToken({ sub: 'admin', iss: jwks.issuer, aud: jwks.audience, exp: 9e9 }),
      /algorithm/,
    ],
    [
      'a token whose payload was changed after signing',
      async () =>
        tamperPayload(await jwks.sign({}, { subject: 'u' }), (claims) => ({ ...claims, sub: 'someone-else' })),
      /signature is not valid/,
    ],
    ['a token without exp', () => jwks.sign({}, { subject: 'u', noExpiry: true }), /expiry/],
    ['a token without the user claim', () => jwks.sign({}), /no usable sub claim/],
    ['a token that is not a JWT', async () => 'not-a-token', /malformed/],
  ];
  for (const [name, makeToken, expected] of cases) {
    it(`refuses ${name} with invalid_token and says why`, async () => {
      const { detail, challenge } = await refusal((await resolver()).resolve(bearer(await makeToken())));
      assert.match(detail, expected);
      assert.equal(challenge, `Bearer realm="chat", error="invalid_token", error_description="${detail}"`);
      assert.doesNotMatch(detail, /"|\\|ERR_|jose|kid/);
    });
  }

  it('tolerates the configured clock skew on exp, and no more', async () => {
    const justExpired = await jwks.sign({}, { subject: 'u', expiresIn: -30 });
    assert.equal((await (await resolver({ clockSkewSeconds: 60 })).resolve(bearer(justExpired))).id, 'u');
    await refusal((await resolver({ clockSkewSeconds: 10 })).resolve(bearer(justExpired)));
  });

  it('refuses an algorithm left out of the allow-list even when the key is published', async () => {
    const es256 = jwks.keys.find((key) => key.alg === 'ES256');
    const token = await jwks.sign({}, { subject: 'u', key: es256 });
    const { detail } = await refusal((await resolver({ algorithms: ['RS256'] })).resolve(bearer(token)));
    assert.match(detail, /algorithm/);
  });

  it('never accepts none, even when it is listed', async () => {
    const token = unsecuredToken({ sub: 'admin', iss: jwks.issuer, aud: jwks.audience, exp: 9e9 });
    await refusal((await resolver({ algorithms: ['RS256', 'none'] })).resolve(bearer(token)));
  });

  it('answers 503, not 401, when the key set cannot be fetched', async () => {
    const resolve = createJwtCallerResolver({
      jwksUrl: jwks.url,
      issuer: jwks.issuer,
      audience: jwks.audience,
      algorithms: ['RS256'],
      userClaim: 'sub',
      clockSkewSeconds: 0,
      keys: async () => {
        throw new TypeError('fetch failed');
      },
    });
    const token = await jwks.sign({}, { subject: 'u' });
    await assert.rejects(resolve.resolve(bearer(token)), (error: unknown) => {
      assert.ok(error instanceof AuthUnavailableError);
      assert.equal(error.status, 503);
      assert.equal(error.headers['Retry-After'], '5');
      return true;
    });
  });
});

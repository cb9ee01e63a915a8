import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { HttpRequest } from '@azure/functions';
import type { Config } from '../../../../src/config';
import { UnauthorizedError } from '../../../../src/core/errors';
import { createCallerResolver } from '../../../../src/http/auth/createCallerResolver';
import { decodeClientPrincipal, easyAuthCallerResolver } from '../../../../src/http/auth/easyAuthCallerResolver';
import { LOCAL_CALLER } from '../../../../src/http/caller';
import { loadJose, startJwksServer, type JwksServer } from '../../../support/jwks';

function request(headers: Record<string, string> = {}) {
  return new HttpRequest({ method: 'GET', url: 'http://localhost/api/conversations', headers });
}

function principalHeader(principal: unknown): string {
  return Buffer.from(JSON.stringify(principal)).toString('base64');
}

const forgedPrincipal = {
  'x-ms-client-principal-id': 'victim',
  'x-ms-client-principal': principalHeader({
    auth_typ: 'aad',
    claims: [{ typ: 'http://schemas.microsoft.com/identity/claims/objectidentifier', val: 'victim' }],
    name_typ: 'name',
  }),
};

function authConfig(auth: Partial<Config['auth']>): Pick<Config, 'auth'> {
  return {
    auth: {
      mode: 'none',
      algorithms: ['RS256'],
      userClaim: 'sub',
      clockSkewSeconds: 60,
      jwksCooldownSeconds: 30,
      ...auth,
    },
  };
}

describe('EasyAuth callers', () => {
  it('takes the caller from x-ms-client-principal-id', async () => {
    assert.deepEqual(await easyAuthCallerResolver.resolve(request(forgedPrincipal)), { id: 'victim', kind: 'user' });
  });

  it('falls back to the principal claims when only x-ms-client-principal is present', async () => {
    const header = principalHeader({
      auth_typ: 'aad',
      claims: [
        { typ: 'name', val: 'Ann' },
        { typ: 'http://schemas.microsoft.com/identity/claims/objectidentifier', val: 'oid-1' },
      ],
    });
    assert.deepEqual(await easyAuthCallerResolver.resolve(request({ 'x-ms-client-principal': header })), {
      id: 'oid-1',
      kind: 'user',
    });
  });

  it('answers 401 with a Bearer challenge when nobody signed in', async () => {
    await assert.rejects(easyAuthCallerResolver.resolve(request()), (error: unknown) => {
      assert.ok(error instanceof UnauthorizedError);
      assert.equal(error.headers['WWW-Authenticate'], 'Bearer realm="chat"');
      assert.match(error.detail, /Sign in/);
      return true;
    });
  });

  it('refuses a principal header that is not base64 JSON of the documented shape', async () => {
    for (const value of ['%%%', principalHeader({ claims: [] }), principalHeader('text')]) {
      await assert.rejects(
        easyAuthCallerResolver.resolve(request({ 'x-ms-client-principal': value, 'x-ms-client-principal-id': 'x' })),
        UnauthorizedError,
      );
    }
    assert.equal(decodeClientPrincipal(principalHeader({ auth_typ: 'aad', claims: 'no' })), undefined);
  });
});

describe('createCallerResolver', () => {
  let jwks: JwksServer;
  before(async () => {
    jwks = await startJwksServer();
  });
  after(() => jwks.close());

  it('none: the fixed local caller, whatever principal headers a client forges', async () => {
    const resolver = createCallerResolver(authConfig({ mode: 'none' }));
    assert.deepEqual(await resolver.resolve(request(forgedPrincipal)), LOCAL_CALLER);
  });

  it('jwt: a forged principal does not authenticate, and does not change who a token says the caller is', async () => {
    const { createLocalJWKSet } = await loadJose();
    const resolver = createCallerResolver(
      authConfig({ mode: 'jwt', jwksUrl: jwks.url, issuer: jwks.issuer, audience: jwks.audience }),
      { keys: createLocalJWKSet({ keys: jwks.keys.map((key) => key.publicJwk) }) },
    );
    await assert.rejects(resolver.resolve(request(forgedPrincipal)), UnauthorizedError);
    const token = await jwks.sign({}, { subject: 'real-user' });
    assert.deepEqual(await resolver.resolve(request({ ...forgedPrincipal, authorization: `Bearer ${token}` })), {
      id: 'real-user',
      kind: 'user',
    });
  });

  it('easyauth: reads the principal headers', async () => {
    const resolver = createCallerResolver(authConfig({ mode: 'easyauth' }));
    assert.equal((await resolver.resolve(request(forgedPrincipal))).id, 'victim');
  });
});

/**
 * Caller identity through the real HTTP path: three app processes (AUTH_MODE jwt, none and easyauth) on one
 * Azurite and one model stand-in, and a JWKS served on loopback with keys this test makes. Shows what each mode
 * accepts and refuses, that a forged x-ms-client-principal is ignored outside easyauth, and that another caller's
 * conversation answers 404 on every route, exactly like a missing one.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { call } from '../support/app';
import { startAppProcess, type AppProcess } from '../support/appProcess';
import { startAzurite, type RunningAzurite } from '../../local/azurite';
import { startJwksServer, tamperPayload, unsecuredToken, type JwksServer } from '../support/jwks';
import { startModelStandIn, type ModelStandIn } from '../../local/modelStandIn';

let azurite: RunningAzurite;
let model: ModelStandIn;
let jwks: JwksServer;
let jwtApp: AppProcess;
let noneApp: AppProcess;
let easyAuthApp: AppProcess;

const PREFIX = `auth${Date.now().toString(36)}`;

before(async () => {
  azurite = await startAzurite();
  model = await startModelStandIn({ expectedApiKey: 'test-key' });
  jwks = await startJwksServer();
  const common = {
    TABLES_CONNECTION_STRING: azurite.connectionString,
    AZURE_OPENAI_ENDPOINT: model.url,
    AZURE_OPENAI_DEPLOYMENT: 'chat',
    AZURE_OPENAI_MODEL: 'gpt-4o-mini',
    AZURE_OPENAI_API_KEY: 'test-key',
    AZURE_OPENAI_TIMEOUT_MS: '20000',
  };
  [jwtApp, noneApp, easyAuthApp] = await Promise.all([
    startAppProcess({
      ...common,
      TABLES_PREFIX: `${PREFIX}jwt`,
      AUTH_MODE: 'jwt',
      AUTH_JWKS_URL: jwks.url,
      AUTH_ISSUER: jwks.issuer,
      AUTH_AUDIENCE: jwks.audience,
      AUTH_ALGORITHMS: 'RS256,ES256',
      AUTH_CLOCK_SKEW_SECONDS: '30',
      // Refetch the key set on every unknown kid, so the test need not wait out jose's 30 s default.
      AUTH_JWKS_COOLDOWN_SECONDS: '0',
    }),
    startAppProcess({ ...common, TABLES_PREFIX: `${PREFIX}none`, AUTH_MODE: 'none' }),
    startAppProcess({ ...common, TABLES_PREFIX: `${PREFIX}easy`, AUTH_MODE: 'easyauth' }),
  ]);
});

after(async () => {
  await Promise.all([jwtApp?.stop(), noneApp?.stop(), easyAuthApp?.stop()]);
  await jwks?.close();
  await model?.close();
  await azurite?.stop();
});

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

function principal(id: string) {
  return {
    'x-ms-client-principal-id': id,
    'x-ms-client-principal': Buffer.from(
      JSON.stringify({
        auth_typ: 'aad',
        claims: [{ typ: 'http://schemas.microsoft.com/identity/claims/objectidentifier', val: id }],
        name_typ: 'name',
        role_typ: 'roles',
      }),
    ).toString('base64'),
  };
}

function assertProblem(response: Awaited<ReturnType<typeof call>>, status: number, code: string) {
  assert.equal(response.status, status, response.text);
  assert.match(response.headers.get('content-type') ?? '', /^application\/problem\+json/);
  assert.equal(response.body.code, code);
}

/** A caller's conversation with one completed turn. */
async function conversationWithTurn(api: string, headers: Record<string, string>) {
  const created = await call('POST', `${api}/conversations`, { title: 'private' }, headers);
  assert.equal(created.status, 201, created.text);
  const sent = await call(
    'POST',
    `${api}/conversations/${created.body.id}/messages`,
    { content: 'secret plans' },
    headers,
  );
  assert.equal(sent.status, 200, sent.text);
  return created.body.id as string;
}

/** Every route, as `headers` sees conversation `id`. */
async function everyRoute(api: string, id: string, headers: Record<string, string>) {
  return {
    get: await call('GET', `${api}/conversations/${id}`, undefined, headers),
    send: await call('POST', `${api}/conversations/${id}/messages`, { content: 'hi' }, headers),
    stream: await call(
      'POST',
      `${api}/conversations/${id}/messages`,
      { content: 'hi' },
      { ...headers, accept: 'text/event-stream' },
    ),
    idempotent: await call(
      'POST',
      `${api}/conversations/${id}/messages`,
      { content: 'hi' },
      { ...headers, 'idempotency-key': randomUUID() },
    ),
    delete: await call('DELETE', `${api}/conversations/${id}`, undefined, headers),
    list: await call('GET', `${api}/conversations?limit=100`, undefined, headers),
  };
}

describe('AUTH_MODE=jwt', () => {
  it('accepts a valid token', async () => {
    const response = await call(
      'GET',
      `${jwtApp.api}/conversations`,
      undefined,
      bearer(await jwks.sign({}, { subject: 'ann' })),
    );
    assert.equal(response.status, 200, response.text);
    assert.deepEqual(response.body.conversations, []);
  });

  it('answers 401 with a bare Bearer challenge when no token is sent', async () => {
    const response = await call('GET', `${jwtApp.api}/conversations`);
    assertProblem(response, 401, 'unauthorized');
    assert.equal(response.headers.get('www-authenticate'), 'Bearer realm="chat"');
  });

  const refused: [string, () => Promise<string>, RegExp][] = [
    ['expired', () => jwks.sign({}, { subject: 'ann', expiresIn: -120 }), /expired/],
    ['for another audience', () => jwks.sign({}, { subject: 'ann', audience: 'api://someone-else' }), /audience/],
    ['from another issuer', () => jwks.sign({}, { subject: 'ann', issuer: 'https://evil.test/' }), /issuer/],
    [
      'signed with an unknown key (kid)',
      async () => jwks.sign({}, { subject: 'ann', key: await jwks.addKey({ publish: false }) }),
      /key the issuer does not publish/,
    ],
    [
      'unsecured (alg: none)',
      async () => unsecuredToken({ sub: 'ann', iss: jwks.issuer, aud: jwks.audience, exp: 9_999_999_999 }),
      /algorithm/,
    ],
    [
      'issued a day in the future (iat)',
      () => jwks.sign({}, { subject: 'ann', issuedAt: Math.floor(Date.now() / 1000) + 86_400 }),
      /issued in the future/,
    ],
    [
      'issued ten years in the future (iat)',
      () => jwks.sign({}, { subject: 'ann', issuedAt: Math.floor(Date.now() / 1000) + 10 * 365 * 86_400 }),
      /issued in the future/,
    ],
    ['whose sub has an unpaired high surrogate', () => jwks.sign({}, { subject: 'ann-\ud800' }), /no usable sub/],
    ['whose sub has an unpaired low surrogate', () => jwks.sign({}, { subject: 'ann-\udfff' }), /no usable sub/],
    [
      'with a tampered payload',
      async () => tamperPayload(await jwks.sign({}, { subject: 'ann' }), (claims) => ({ ...claims, sub: 'admin' })),
      /signature is not valid/,
    ],
  ];
  for (const [name, token, detail] of refused) {
    it(`refuses a token ${name} with 401 invalid_token`, async () => {
      const response = await call('GET', `${jwtApp.api}/conversations`, undefined, bearer(await token()));
      assertProblem(response, 401, 'unauthorized');
      assert.match(response.body.detail, detail);
      assert.equal(
        response.headers.get('www-authenticate'),
        `Bearer realm="chat", error="invalid_token", error_description="${response.body.detail}"`,
      );
    });
  }

  it('accepts a token issued a little in the future, within the clock skew', async () => {
    const token = await jwks.sign({}, { subject: 'ann', issuedAt: Math.floor(Date.now() / 1000) + 10 });
    const response = await call('GET', `${jwtApp.api}/conversations`, undefined, bearer(token));
    assert.equal(response.status, 200, response.text);
  });

  it('keeps callers whose ids UTF-8 would merge apart: an unpaired surrogate in sub is refused, U+FFFD is its own', async () => {
    // UTF-8 turns \ud800 and \udfff into U+FFFD: hashed as UTF-8, all three subs were one caller.
    for (const sub of ['merge-X-\ud800', 'merge-X-\udfff']) {
      const refused = await call(
        'POST',
        `${jwtApp.api}/conversations`,
        { title: sub },
        bearer(await jwks.sign({}, { subject: sub })),
      );
      assertProblem(refused, 401, 'unauthorized');
    }
    const replacement = bearer(await jwks.sign({}, { subject: 'merge-X-\ufffd' }));
    const listed = await call('GET', `${jwtApp.api}/conversations`, undefined, replacement);
    assert.equal(listed.status, 200, listed.text);
    assert.deepEqual(listed.body.conversations, []);
  });

  it('picks up a key the issuer publishes after the app started (unknown kid -> refetch)', async () => {
    // The app has already fetched the key set for the tokens above.
    const warmed = await call(
      'GET',
      `${jwtApp.api}/conversations`,
      undefined,
      bearer(await jwks.sign({}, { subject: 'ann' })),
    );
    assert.equal(warmed.status, 200);
    const fetchesBefore = jwks.fetchCount;
    const rotated = await jwks.addKey({ alg: 'ES256' });
    const response = await call(
      'GET',
      `${jwtApp.api}/conversations`,
      undefined,
      bearer(await jwks.sign({}, { subject: 'ann', key: rotated })),
    );
    assert.equal(response.status, 200, response.text);
    assert.ok(jwks.fetchCount > fetchesBefore, 'the new kid made the app fetch the key set again');
    jwks.removeKey(rotated.kid);
  });

  it('ignores a forged x-ms-client-principal: no token is still 401, and a token decides the caller', async () => {
    const annToken = await jwks.sign({}, { subject: 'ann-forge' });
    const annConversation = await conversationWithTurn(jwtApp.api, bearer(annToken));
    assertProblem(
      await call('GET', `${jwtApp.api}/conversations/${annConversation}`, undefined, principal('ann-forge')),
      401,
      'unauthorized',
    );
    const bobToken = await jwks.sign({}, { subject: 'bob-forge' });
    const forged = await call('GET', `${jwtApp.api}/conversations/${annConversation}`, undefined, {
      ...bearer(bobToken),
      ...principal('ann-forge'),
    });
    assertProblem(forged, 404, 'not_found');
  });

  it("answers 404 on every route for another caller's conversation, exactly as for a missing one", async () => {
    const ann = bearer(await jwks.sign({}, { subject: 'ann-owner' }));
    const bob = bearer(await jwks.sign({}, { subject: 'bob-intruder' }));
    const annConversation = await conversationWithTurn(jwtApp.api, ann);

    const bobSees = await everyRoute(jwtApp.api, annConversation, bob);
    const missing = await everyRoute(jwtApp.api, 'does-not-exist-anywhere', bob);
    for (const route of ['get', 'send', 'stream', 'idempotent', 'delete'] as const) {
      assertProblem(bobSees[route], 404, 'not_found');
      assert.equal(bobSees[route].body.detail, missing[route].body.detail, `${route}: no oracle in the detail`);
    }
    assert.equal(bobSees.list.status, 200);
    assert.ok(!bobSees.list.body.conversations.some((entry: { id: string }) => entry.id === annConversation));

    // Ann's conversation is untouched by Bob's attempts, and no model call was made for them.
    const annSees = await call('GET', `${jwtApp.api}/conversations/${annConversation}`, undefined, ann);
    assert.equal(annSees.status, 200);
    assert.deepEqual(
      annSees.body.messages.map((message: { role: string }) => message.role),
      ['user', 'assistant'],
    );
    const annList = await call('GET', `${jwtApp.api}/conversations`, undefined, ann);
    assert.ok(annList.body.conversations.some((entry: { id: string }) => entry.id === annConversation));
  });
});

describe('AUTH_MODE=none', () => {
  it('serves the one local caller whatever x-ms-client-principal a client forges', async () => {
    const id = await conversationWithTurn(noneApp.api, principal('mallory'));
    const plain = await call('GET', `${noneApp.api}/conversations/${id}`);
    assert.equal(plain.status, 200, 'created under a forged principal, readable without one: the header was not used');
    const otherForgery = await call('GET', `${noneApp.api}/conversations/${id}`, undefined, principal('someone-else'));
    assert.equal(otherForgery.status, 200);
  });
});

describe('AUTH_MODE=easyauth', () => {
  it('reads the caller from the App Service Authentication headers and keeps callers apart', async () => {
    const ann = principal('11111111-aaaa-4bbb-8ccc-000000000001');
    const bob = principal('22222222-aaaa-4bbb-8ccc-000000000002');
    const annConversation = await conversationWithTurn(easyAuthApp.api, ann);
    assert.equal(
      (await call('GET', `${easyAuthApp.api}/conversations/${annConversation}`, undefined, ann)).status,
      200,
    );
    const bobSees = await everyRoute(easyAuthApp.api, annConversation, bob);
    for (const route of ['get', 'send', 'stream', 'idempotent', 'delete'] as const)
      assertProblem(bobSees[route], 404, 'not_found');
    assert.ok(!bobSees.list.body.conversations.some((entry: { id: string }) => entry.id === annConversation));
  });

  it('answers 401 when nobody signed in', async () => {
    const response = await call('GET', `${easyAuthApp.api}/conversations`);
    assertProblem(response, 401, 'unauthorized');
    assert.equal(response.headers.get('www-authenticate'), 'Bearer realm="chat"');
  });
});

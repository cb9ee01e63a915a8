/**
 * The esbuild bundle (scripts/bundle.ts) serving real turns: built here into a temporary folder and loaded by the
 * local host alone, the way the worker loads package.json `main` (main.js compiling app.js with its code cache). Everything it loads lazily is exercised from inside
 * the bundle: jose (AUTH_MODE=jwt against a loopback key set), @azure/identity (the model's token from a loopback
 * managed-identity endpoint, no API key), @azure/storage-queue (a queued turn) and Ajv (a client tool's schema),
 * each from its own file in lazy/, the OpenAPI generator (lazy/openapi.js) on the first GET /api/openapi.json, and
 * the o200k_base token index, read on the first turn from the file saved beside
 * the bundle (the rank table itself is then never evaluated).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { bundleApp, type BundleResult } from '../../../scripts/bundle';
import { compileApp } from '../../../src/appLoader';
import { startLocalHost, type LocalHost } from '../../../local/localHost';
import { call } from '../../support/app';
import { loadConfig } from '../../../src/config';
import { buildOpenApiDocument, openApiOptionsFromConfig } from '../../../src/openapi/document';
import { startAzurite, type RunningAzurite } from '../../../local/azurite';
import { startIdentityStandIn, type IdentityStandIn } from '../../support/identityStandIn';
import { startJwksServer, type JwksServer } from '../../support/jwks';
import { startModelStandIn, type ModelStandIn } from '../../../local/modelStandIn';

const outDir = mkdtempSync(path.join(tmpdir(), 'app-bundle-e2e-'));
let bundle: BundleResult;
let azurite: RunningAzurite;
let identity: IdentityStandIn;
let model: ModelStandIn;
let jwks: JwksServer;
let host: LocalHost;
let api: string;
/** The bundle's own rank files in require.cache once the host listens, before any request. */
let ranksLoadedAtStart: string[];

/** The bundle's lazy/ files in require.cache once the host listens, before any request. */
let lazyLoadedAtStart: string[];

const lazyLoaded = () =>
  Object.keys(require.cache)
    .filter((file) => file.startsWith(path.join(outDir, 'lazy')))
    .map((file) => path.basename(file))
    .sort();
const bundledRanks = () => Object.keys(require.cache).filter((file) => file.startsWith(path.join(outDir, 'ranks')));

before(async () => {
  bundle = await bundleApp({ outDir, log: false });
  azurite = await startAzurite({ queue: true });
  identity = await startIdentityStandIn();
  model = await startModelStandIn({ expectedBearerToken: identity.token });
  jwks = await startJwksServer();
  Object.assign(process.env, {
    TABLES_CONNECTION_STRING: azurite.connectionString,
    AzureWebJobsStorage: azurite.connectionString,
    TABLES_PREFIX: `bundle${Date.now().toString(36)}`,
    AZURE_OPENAI_ENDPOINT: model.url,
    AZURE_OPENAI_DEPLOYMENT: 'chat',
    AZURE_OPENAI_MODEL: 'gpt-4o-mini',
    AZURE_OPENAI_TIMEOUT_MS: '20000',
    IDENTITY_ENDPOINT: identity.endpoint,
    IDENTITY_HEADER: identity.header,
    AUTH_MODE: 'jwt',
    AUTH_JWKS_URL: jwks.url,
    AUTH_ISSUER: jwks.issuer,
    AUTH_AUDIENCE: jwks.audience,
    LIMIT_REQUESTS_PER_MINUTE: '0',
    LIMIT_TOKENS_PER_DAY: '0',
  });
  delete process.env.AZURE_OPENAI_API_KEY;
  // As on Azure, where source maps are off: main.js then compiles app.js itself, with the code cache (tsx turned
  // source maps on, and with them on main.js leaves app.js to Node's own loader).
  process.setSourceMapsEnabled(false);
  try {
    host = await startLocalHost({ functionModules: [bundle.mainFile], port: 0, log: () => {} });
  } finally {
    process.setSourceMapsEnabled(true);
  }
  api = `${host.url}/api`;
  ranksLoadedAtStart = bundledRanks();
  lazyLoadedAtStart = lazyLoaded();
});

after(async () => {
  await host?.close();
  await jwks?.close();
  await model?.close();
  await identity?.close();
  await azurite?.stop();
  rmSync(outDir, { recursive: true, force: true });
});

describe('the bundle under the local host', () => {
  it('serves every route from main.js alone, the app in app.js compiled with its code cache', () => {
    assert.ok(host.routes.length >= 9, `${host.routes.length} routes`);
    assert.ok(require.cache[bundle.appFile], 'main.js loaded app.js');
    assert.equal(compileApp(path.dirname(bundle.appFile)).codeCache, 'used');
    assert.ok(host.routes.some((route) => route.path === '/api/conversations/{id}/messages'));
  });

  it('answers a turn for a JWT caller with the model token from the managed identity', async () => {
    const authorization = { authorization: `Bearer ${await jwks.sign({}, { subject: 'bundle-user' })}` };
    assert.equal((await call('POST', `${api}/conversations`, {})).status, 401, 'no token, no conversation');

    const created = await call('POST', `${api}/conversations`, { title: 'Bundled' }, authorization);
    assert.equal(created.status, 201, created.text);
    const sent = await call(
      'POST',
      `${api}/conversations/${created.body.id}/messages`,
      { content: 'Hello from the bundle' },
      authorization,
    );
    assert.equal(sent.status, 200, sent.text);
    assert.equal(sent.body.message.role, 'assistant');
    assert.match(sent.body.message.content, /Hello from the bundle/, 'the stand-in echoes the last message');
    // The app's own count (js-tiktoken from the bundle) is what the model reports for the same prompt.
    assert.equal(sent.body.context.promptTokens, sent.body.usage.promptTokens);

    assert.ok(jwks.fetchCount >= 1, 'jose fetched the key set');
    assert.ok(identity.requests.length >= 1, '@azure/identity asked the managed-identity endpoint');
    assert.equal(model.callCount, 1);
  });

  it('counts the first turn with the token index saved beside the bundle, never evaluating the rank table', () => {
    assert.deepEqual(ranksLoadedAtStart, []);
    // The tokenizer falls back to requiring ranks/o200k_base.cjs when the saved index is missing or does not match.
    assert.deepEqual(bundledRanks(), []);
  });

  it('loads nothing from lazy/ at start, then each package when a request first needs it', async () => {
    assert.deepEqual(lazyLoadedAtStart, []);
    const authorization = { authorization: `Bearer ${await jwks.sign({}, { subject: 'bundle-queue' })}` };
    const created = await call(
      'POST',
      `${api}/conversations`,
      {
        clientTools: [
          {
            name: 'pick_colour',
            description: 'Asks the user to pick a colour.',
            parameters: { type: 'object', properties: { colour: { type: 'string' } }, required: ['colour'] },
          },
        ],
      },
      authorization,
    );
    assert.equal(created.status, 201, created.text);
    const refused = await call(
      'POST',
      `${api}/conversations`,
      { clientTools: [{ name: 'bad', description: 'x', parameters: { type: 'object', properties: 3 } }] },
      authorization,
    );
    assert.equal(refused.status, 400, 'the meta-schema check (Ajv, from lazy/ajv.js) refuses a bad schema');

    // Queued turns run server tools only: a conversation without client tools.
    const plain = await call('POST', `${api}/conversations`, {}, authorization);
    assert.equal(plain.status, 201, plain.text);
    const posted = await call(
      'POST',
      `${api}/conversations/${plain.body.id}/messages`,
      { content: 'Queued from the bundle' },
      { ...authorization, prefer: 'respond-async' },
    );
    assert.equal(posted.status, 202, posted.text);
    const statusUrl = `${host.url}${posted.headers.get('location')}`;
    const deadline = Date.now() + 60_000;
    let status = await call('GET', statusUrl, undefined, authorization);
    while (status.body?.status !== 'completed' && status.body?.status !== 'failed' && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      status = await call('GET', statusUrl, undefined, authorization);
    }
    assert.equal(status.body.status, 'completed', status.text);
    assert.deepEqual(lazyLoaded(), ['ajv.js', 'identity.js', 'jose.js', 'storage-queue.js']);
  });

  it('serves the OpenAPI document of its settings from lazy/openapi.js, loaded on the first request', async () => {
    assert.ok(!lazyLoaded().includes('openapi.js'), 'not loaded before GET /api/openapi.json');
    const served = await call('GET', `${api}/openapi.json`);
    assert.equal(served.status, 200, served.text);
    assert.deepEqual(served.body, buildOpenApiDocument(openApiOptionsFromConfig(loadConfig(process.env))));
    assert.ok(lazyLoaded().includes('openapi.js'));
    assert.deepEqual((await call('GET', `${api}/openapi.json`)).body, served.body, 'built once, served again');
  });
});

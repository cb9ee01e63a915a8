/**
 * The managed identity stand-in, called by the real `@azure/identity` ManagedIdentityCredential (App Service
 * source, chosen because IDENTITY_ENDPOINT and IDENTITY_HEADER are set), and the whole chain to the model stand-in.
 *
 * @azure/msal-node keeps the chosen managed identity source and its token cache per process: one identity
 * stand-in serves the whole file, and each test that must reach it uses an identity not asked for before.
 */
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { getBearerTokenProvider, ManagedIdentityCredential } from '@azure/identity';
import OpenAI from 'openai';
import { startIdentityStandIn, useIdentityStandIn, type IdentityStandIn } from '../../support/identityStandIn';
import { startModelStandIn, type ModelStandIn } from '../../../local/modelStandIn';

const SCOPE = 'https://cognitiveservices.azure.com/.default';
const TOKEN = 'mi-token-for-tests';

/** Every address this process tries to connect to (TCP), seen through Node's own diagnostics channel. */
function traceConnectionAttempts(): { addresses: string[]; stop(): void } {
  const addresses: string[] = [];
  const onSocket = (message: unknown): void => {
    const socket = (message as { socket: Socket }).socket;
    socket.on('connectionAttempt', (ip: string) => addresses.push(ip));
  };
  subscribe('net.client.socket', onSocket);
  return { addresses, stop: () => unsubscribe('net.client.socket', onSocket) };
}

describe('managed identity stand-in with the real @azure/identity', () => {
  let identity: IdentityStandIn;
  let model: ModelStandIn;
  let restoreEnvironment: () => void;
  let connections: ReturnType<typeof traceConnectionAttempts>;

  before(async () => {
    connections = traceConnectionAttempts();
    identity = await startIdentityStandIn({ token: TOKEN });
    model = await startModelStandIn({ expectedBearerToken: TOKEN });
    restoreEnvironment = useIdentityStandIn(identity);
  });

  after(async () => {
    restoreEnvironment();
    connections.stop();
    await Promise.all([identity.close(), model.close()]);
    // The instance metadata service (169.254.169.254) must never be tried, nor any host but loopback.
    assert.ok(connections.addresses.length > 0, 'the trace saw the loopback connections');
    assert.deepEqual(
      connections.addresses.filter((address) => address !== '127.0.0.1'),
      [],
      'only loopback connections',
    );
  });

  it('gives a system-assigned identity its token through the App Service protocol', async () => {
    const credential = new ManagedIdentityCredential();

    const accessToken = await credential.getToken(SCOPE);

    assert.equal(accessToken.token, TOKEN);
    assert.ok(accessToken.expiresOnTimestamp > Date.now(), 'expires_on is read as a future time');
    assert.equal(identity.requests.length, 1);
    const request = identity.requests[0];
    assert.equal(request?.method, 'GET');
    assert.equal(request?.headers['x-identity-header'], identity.header);
    assert.equal(request?.query['api-version'], '2019-08-01');
    assert.equal(request?.query.resource, 'https://cognitiveservices.azure.com');
    assert.equal(request?.query.client_id, undefined);
  });

  it('sends a user-assigned identity as client_id', async () => {
    const clientId = '6f1b4a8e-2d3c-4e5f-8a9b-0c1d2e3f4a5b';
    const credential = new ManagedIdentityCredential({ clientId });
    const before = identity.requests.length;

    const accessToken = await credential.getToken(SCOPE);

    assert.equal(accessToken.token, TOKEN);
    assert.equal(identity.requests.length, before + 1);
    assert.equal(identity.requests.at(-1)?.query.client_id, clientId);
  });

  it('delivers the managed identity token to the model as a bearer token', async () => {
    const credential = new ManagedIdentityCredential({ clientId: '0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d' });
    const client = new OpenAI({
      baseURL: model.baseURL,
      apiKey: getBearerTokenProvider(credential, SCOPE),
      maxRetries: 0,
    });

    const completion = await client.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'Who am I?' }],
    });

    assert.equal(completion.choices[0]?.finish_reason, 'stop');
    assert.equal(model.requests.at(-1)?.headers.authorization, `Bearer ${TOKEN}`);
  });

  it('answers a missing header with 400 and a wrong one with 401, like the platform', async () => {
    const url = `${identity.endpoint}?api-version=2019-08-01&resource=https://cognitiveservices.azure.com`;

    const missing = await fetch(url);
    const wrong = await fetch(url, { headers: { 'X-IDENTITY-HEADER': 'not-the-secret' } });
    const right = await fetch(url, { headers: { 'X-IDENTITY-HEADER': identity.header } });

    assert.equal(missing.status, 400);
    assert.equal(wrong.status, 401);
    assert.equal(right.status, 200);
    const body = (await right.json()) as Record<string, unknown>;
    assert.equal(body.access_token, TOKEN);
    assert.equal(body.token_type, 'Bearer');
    assert.equal(body.resource, 'https://cognitiveservices.azure.com');
    assert.match(String(body.expires_on), /^\d{10}$/);
    assert.equal(typeof body.client_id, 'string');
  });
});

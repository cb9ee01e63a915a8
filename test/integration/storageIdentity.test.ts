/**
 * The Azure way to Table Storage, end to end: TABLES_ENDPOINT plus the managed identity, no connection string.
 * Azurite runs with `--oauth basic` over HTTPS (a certificate made for 127.0.0.1 at run time), so every request must
 * carry a bearer token with a storage audience, a known issuer and a valid lifetime. The app runs in a child process
 * whose only trust in that certificate is NODE_EXTRA_CA_CERTS, and whose DefaultAzureCredential gets its token from
 * the loopback managed-identity stand-in (IDENTITY_ENDPOINT, never the instance metadata address). The limiter is on,
 * so its table goes over the identity too. Azurite is shown to refuse missing, expired and mis-addressed tokens, so a
 * passing turn proves the token was really checked.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { RestError, TableClient, type TableEntityResult } from '@azure/data-tables';
import type { AccessToken, TokenCredential } from '@azure/identity';
import { call } from '../support/app';
import { startAppProcess, type AppProcess } from '../support/appProcess';
import { startAzurite, type RunningAzurite } from '../../local/azurite';
import { startIdentityStandIn, type IdentityStandIn } from '../support/identityStandIn';
import { startModelStandIn, type ModelStandIn } from '../../local/modelStandIn';
import { storageAccessToken, STORAGE_AUDIENCE } from '../support/storageToken';
import { createLoopbackCertificate, type LoopbackCertificate } from '../support/tls';

const CLIENT_ID = '3f2b8c1e-5d4a-4e6f-9a7b-0c1d2e3f4a5b';
const PREFIX = `mi${Date.now().toString(36)}`;

let certificate: LoopbackCertificate;
let azurite: RunningAzurite;
let identity: IdentityStandIn;
let model: ModelStandIn;
let app: AppProcess;

before(async () => {
  certificate = await createLoopbackCertificate();
  azurite = await startAzurite({
    https: { certificatePath: certificate.certificatePath, keyPath: certificate.keyPath },
    oauth: 'basic',
  });
  identity = await startIdentityStandIn({ token: storageAccessToken({ clientId: CLIENT_ID }) });
  model = await startModelStandIn({ expectedApiKey: 'test-key' });
  app = await startAppProcess({
    TABLES_ENDPOINT: azurite.tableEndpoint,
    TABLES_PREFIX: PREFIX,
    IDENTITY_ENDPOINT: identity.endpoint,
    IDENTITY_HEADER: identity.header,
    AZURE_CLIENT_ID: CLIENT_ID,
    // Trust in the test certificate for this child only: Node reads it at start-up, nothing else is loosened.
    NODE_EXTRA_CA_CERTS: certificate.certificatePath,
    AZURE_OPENAI_ENDPOINT: model.url,
    AZURE_OPENAI_DEPLOYMENT: 'chat',
    AZURE_OPENAI_MODEL: 'gpt-4o-mini',
    AZURE_OPENAI_API_KEY: 'test-key',
    AZURE_OPENAI_TIMEOUT_MS: '20000',
    AUTH_MODE: 'none',
    // The default limits, spelled out: the limiter's table is reached over the identity as well.
    LIMIT_REQUESTS_PER_MINUTE: '60',
    LIMIT_TOKENS_PER_DAY: '1000000',
  });
});

after(async () => {
  await app?.stop();
  await model?.close();
  await identity?.close();
  await azurite?.stop();
  await certificate?.remove();
});

/** A credential that always presents `token`, as a client holding a stale or wrong token would. */
function fixedToken(token: string): TokenCredential {
  return { getToken: async (): Promise<AccessToken> => ({ token, expiresOnTimestamp: Date.now() + 3_600_000 }) };
}

/** A client of the app's table in this Azurite that trusts the test certificate (and nothing more) for itself. */
function directClient(table: string, credential?: TokenCredential): TableClient {
  const options = { tlsOptions: { ca: certificate.certificatePem }, retryOptions: { maxRetries: 0 } };
  return credential
    ? new TableClient(azurite.tableEndpoint, table, credential, options)
    : new TableClient(azurite.tableEndpoint, table, options);
}

async function entitiesOf(client: TableClient): Promise<TableEntityResult<Record<string, unknown>>[]> {
  const entities: TableEntityResult<Record<string, unknown>>[] = [];
  for await (const entity of client.listEntities()) entities.push(entity);
  return entities;
}

describe('Table Storage over the managed identity (TABLES_ENDPOINT, Azurite with OAuth)', () => {
  let conversationId: string;
  /** The UTC day(s) the turn may have been counted on (two only if it straddled midnight). */
  let turnDays: string[] = [];

  it('serves health, a new conversation, a turn and the read-back', async () => {
    const health = await call('GET', `${app.api}/health`);
    assert.equal(health.status, 200, `${health.text}\n${app.output()}`);

    const created = await call('POST', `${app.api}/conversations`, { title: 'over the identity' });
    assert.equal(created.status, 201, created.text);
    conversationId = created.body.id;

    const dayBefore = new Date().toISOString().slice(0, 10);
    const sent = await call('POST', `${app.api}/conversations/${conversationId}/messages`, { content: 'Hello?' });
    assert.equal(sent.status, 200, `${sent.text}\n${app.output()}`);
    assert.equal(sent.body.message.role, 'assistant');
    turnDays = [dayBefore, new Date().toISOString().slice(0, 10)];

    const read = await call('GET', `${app.api}/conversations/${conversationId}`);
    assert.equal(read.status, 200, read.text);
    assert.deepEqual(
      read.body.messages.map((message: { role: string; content: string }) => [message.role, message.content]),
      [
        ['user', 'Hello?'],
        ['assistant', sent.body.message.content],
      ],
    );
  });

  it('asked the identity endpoint for the storage resource with the client id, and for nothing else', () => {
    assert.ok(identity.requests.length > 0, 'the app never asked the identity endpoint for a token');
    for (const request of identity.requests) {
      assert.equal(request.path, '/msi/token');
      assert.equal(request.query['api-version'], '2019-08-01');
      // The SDK asks for scope https://storage.azure.com/.default; the protocol carries it as the resource.
      assert.equal(request.query.resource, STORAGE_AUDIENCE);
      assert.equal(request.query.client_id, CLIENT_ID);
      assert.equal(request.headers['x-identity-header'], identity.header);
    }
  });

  it('stored the turn and the usage record in Azurite, readable with the identity’s token', async () => {
    const conversations = await entitiesOf(directClient(`${PREFIX}conversations`, fixedToken(identity.token)));
    assert.ok(
      // The conversation's partition is `c|<caller>|<conversation id>` (src/adapters/tableKeys.ts).
      conversations.some((entity) => entity.partitionKey?.endsWith(`|${conversationId}`)),
      `no entity of ${conversationId} among ${conversations.map((entity) => entity.partitionKey).join(', ')}`,
    );
    // The limiter keeps one entity per caller per UTC day; it exists only if the limiter wrote over the identity.
    const usage = await entitiesOf(directClient(`${PREFIX}limits`, fixedToken(identity.token)));
    assert.equal(usage.length, 1, `usage records: ${usage.map((entity) => entity.rowKey).join(', ')}`);
    assert.ok(turnDays.includes(usage[0]?.rowKey ?? ''), `usage record for day ${usage[0]?.rowKey}`);
  });

  const refused: [string, () => TokenCredential | undefined, string, RegExp | undefined][] = [
    ['no token at all', () => undefined, 'AuthorizationFailure', undefined],
    [
      'an expired token',
      () => fixedToken(storageAccessToken({ clientId: CLIENT_ID, expiresInSeconds: -120 })),
      'AuthenticationFailed',
      /The token is expired/,
    ],
    [
      'a token for another audience (Azure OpenAI)',
      () =>
        fixedToken(storageAccessToken({ clientId: CLIENT_ID, claims: { aud: 'https://cognitiveservices.azure.com' } })),
      'AuthenticationFailed',
      /Invalid token audience/,
    ],
    [
      'a token from an unknown issuer',
      () => fixedToken(storageAccessToken({ clientId: CLIENT_ID, claims: { iss: 'https://issuer.example/' } })),
      'AuthenticationFailed',
      /Invalid token issuer/,
    ],
    [
      'an opaque (non-JWT) token',
      () => fixedToken('local-managed-identity-token-0123456789abcdef'),
      'AuthenticationFailed',
      /Bearer is not supported/,
    ],
  ];
  for (const [name, credential, code, detail] of refused) {
    it(`Azurite refuses ${name} with 403`, async () => {
      const client = directClient(`${PREFIX}conversations`, credential());
      await assert.rejects(entitiesOf(client), (error: unknown) => {
        assert.ok(error instanceof RestError, String(error));
        assert.equal(error.statusCode, 403, error.message);
        // Azurite answers authentication failures in XML, which the SDK leaves in the message.
        assert.match(error.message, new RegExp(`<Code>${code}</Code>`));
        if (detail) assert.match(error.message, detail);
        return true;
      });
    });
  }
});

/**
 * A loopback stand-in for the App Service / Functions managed identity endpoint (protocol 2019-08-01), the one
 * `@azure/identity`'s ManagedIdentityCredential calls when IDENTITY_ENDPOINT and IDENTITY_HEADER are set:
 * `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=...[&client_id=...]` with `X-IDENTITY-HEADER`.
 * Tests point the real credential at it to prove the managed identity path end to end without Azure.
 * Shared by tests and local tooling, so it must not import node:test.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export const APP_SERVICE_MSI_API_VERSION = '2019-08-01';
const TOKEN_PATH = '/msi/token';
const HOST = '127.0.0.1';
/** Answered as `client_id` for the system-assigned identity (any fixed GUID will do). */
export const SYSTEM_ASSIGNED_CLIENT_ID = '00000000-0000-4000-8000-000000000001';

export interface IdentityStandInOptions {
  /** The access token handed out. Default: a random opaque string. */
  token?: string;
  /** Lifetime announced in `expires_on`. Default 3600 s. */
  expiresInSeconds?: number;
}

export interface IdentityRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: IncomingHttpHeaders;
  at: Date;
}

export interface IdentityStandIn {
  /** The value for IDENTITY_ENDPOINT. */
  readonly endpoint: string;
  /** The value for IDENTITY_HEADER (the shared secret the caller must echo in X-IDENTITY-HEADER). */
  readonly header: string;
  readonly token: string;
  readonly requests: IdentityRequest[];
  close(): Promise<void>;
}

/** The platform's error body: `{ statusCode, message, correlationId }`. */
function sendError(response: ServerResponse, statusCode: number, message: string): void {
  response.writeHead(statusCode, { 'content-type': 'application/json; charset=utf-8' });
  response.end(JSON.stringify({ statusCode, message, correlationId: randomUUID() }));
}

export async function startIdentityStandIn(options: IdentityStandInOptions = {}): Promise<IdentityStandIn> {
  const token = options.token ?? `local-managed-identity-token-${randomBytes(16).toString('hex')}`;
  const secret = randomBytes(24).toString('hex');
  const expiresInSeconds = options.expiresInSeconds ?? 3600;
  const requests: IdentityRequest[] = [];

  const server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', `http://${HOST}`);
    const query = Object.fromEntries(url.searchParams);
    requests.push({
      method: request.method ?? 'GET',
      path: url.pathname,
      query,
      headers: request.headers,
      at: new Date(),
    });
    request.resume();

    if (request.method !== 'GET' || url.pathname !== TOKEN_PATH) return sendError(response, 404, 'Not found.');
    const presented = request.headers['x-identity-header'];
    if (presented === undefined) return sendError(response, 400, 'The X-IDENTITY-HEADER header is required.');
    if (presented !== secret) return sendError(response, 401, 'The X-IDENTITY-HEADER header is not valid.');
    if (query['api-version'] !== APP_SERVICE_MSI_API_VERSION) {
      return sendError(response, 400, `Unsupported api-version '${query['api-version'] ?? ''}'.`);
    }
    const resource = query.resource;
    if (!resource) return sendError(response, 400, 'The resource parameter is required.');

    response.writeHead(200, { 'content-type': 'application/json; charset=utf-8' });
    response.end(
      JSON.stringify({
        access_token: token,
        // Epoch seconds as a string, as the platform sends it.
        expires_on: String(Math.floor(Date.now() / 1000) + expiresInSeconds),
        resource,
        token_type: 'Bearer',
        client_id: query.client_id ?? SYSTEM_ASSIGNED_CLIENT_ID,
      }),
    );
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, HOST, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  let closed: Promise<void> | undefined;

  return {
    endpoint: `http://${HOST}:${port}${TOKEN_PATH}`,
    header: secret,
    token,
    requests,
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}

/**
 * Environment variables that would make @azure/identity pick another managed identity source before App Service
 * (Service Fabric needs IDENTITY_SERVER_THUMBPRINT; token exchange needs AZURE_FEDERATED_TOKEN_FILE).
 */
const COMPETING_SOURCE_VARIABLES = ['IDENTITY_SERVER_THUMBPRINT', 'AZURE_FEDERATED_TOKEN_FILE'] as const;

/**
 * Points this process's managed identity at the stand-in (IDENTITY_ENDPOINT, IDENTITY_HEADER) and hides the
 * variables of competing sources. Set it before constructing a credential; call the returned function to restore.
 * Note that @azure/msal-node keeps the chosen source and its token cache per process, so one stand-in should
 * serve a whole test file.
 */
export function useIdentityStandIn(standIn: Pick<IdentityStandIn, 'endpoint' | 'header'>): () => void {
  const names = ['IDENTITY_ENDPOINT', 'IDENTITY_HEADER', ...COMPETING_SOURCE_VARIABLES];
  const saved = new Map(names.map((name) => [name, process.env[name]]));
  for (const name of COMPETING_SOURCE_VARIABLES) delete process.env[name];
  process.env.IDENTITY_ENDPOINT = standIn.endpoint;
  process.env.IDENTITY_HEADER = standIn.header;
  return () => {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
}

/**
 * A loopback JSON Web Key Set server with keys the test makes (jose `generateKeyPair` / `exportJWK`), and a
 * signer for tokens under those keys or under keys the server never publishes. Keys can be added and removed
 * while it runs, to show that a key published after the app started is picked up. Must not import node:test.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CryptoKey, JWK, JWTPayload } from 'jose' with { 'resolution-mode': 'import' };

type Jose = typeof import('jose', { with: { 'resolution-mode': 'import' } });

export type SigningAlgorithm = 'RS256' | 'ES256' | 'PS256' | 'RS384' | 'ES384' | 'EdDSA';

export interface TestKey {
  kid: string;
  alg: SigningAlgorithm;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

export interface SignOptions {
  /** Sign with this key; default the first published key. */
  key?: TestKey;
  /** Overrides the header's kid (e.g. to name a key that does not exist). */
  kid?: string;
  /** Seconds from now; default 300. Negative for an expired token. */
  expiresIn?: number;
  /** Leave `exp` out entirely. */
  noExpiry?: boolean;
  issuer?: string;
  audience?: string;
  subject?: string;
  /** `iat` in seconds since the epoch; default now. */
  issuedAt?: number;
}

export interface JwksServer {
  /** The JWKS document's URL (what AUTH_JWKS_URL holds). */
  readonly url: string;
  readonly issuer: string;
  readonly audience: string;
  /** GET requests served so far: shows when the app fetched the key set again. */
  readonly fetchCount: number;
  readonly keys: readonly TestKey[];
  /** Makes a key; published unless `publish` is false (a key the app cannot know). */
  addKey(options?: { alg?: SigningAlgorithm; publish?: boolean }): Promise<TestKey>;
  removeKey(kid: string): void;
  /** A signed JWT with iss, aud, sub, iat and exp set to working values unless overridden. */
  sign(claims?: JWTPayload, options?: SignOptions): Promise<string>;
  close(): Promise<void>;
}

let jose: Promise<Jose> | undefined;
export function loadJose(): Promise<Jose> {
  jose ??= import('jose');
  return jose;
}

export async function startJwksServer(
  options: { issuer?: string; audience?: string; initialKeys?: number } = {},
): Promise<JwksServer> {
  const lib = await loadJose();
  const published = new Map<string, TestKey>();
  let fetchCount = 0;
  const issuer = options.issuer ?? 'https://issuer.test/';
  const audience = options.audience ?? 'api://chat-test';

  const server: Server = createServer((request, response) => {
    if (request.method !== 'GET' || request.url !== '/.well-known/jwks.json') {
      response.writeHead(404).end();
      return;
    }
    fetchCount++;
    const body = JSON.stringify({ keys: [...published.values()].map((key) => key.publicJwk) });
    response.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    response.end(body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}/.well-known/jwks.json`;

  const addKey: JwksServer['addKey'] = async (keyOptions = {}) => {
    const alg = keyOptions.alg ?? 'RS256';
    const { privateKey, publicKey } = await lib.generateKeyPair(alg, { extractable: true });
    const kid = randomUUID();
    const publicJwk: JWK = { ...(await lib.exportJWK(publicKey)), kid, alg, use: 'sig' };
    const key: TestKey = { kid, alg, privateKey, publicJwk };
    if (keyOptions.publish !== false) published.set(kid, key);
    return key;
  };
  for (let index = 0; index < (options.initialKeys ?? 1); index++) await addKey();

  return {
    url,
    issuer,
    audience,
    get fetchCount() {
      return fetchCount;
    },
    get keys() {
      return [...published.values()];
    },
    addKey,
    removeKey: (kid) => {
      published.delete(kid);
    },
    async sign(claims = {}, signOptions = {}) {
      const key = signOptions.key ?? [...published.values()][0];
      if (!key) throw new Error('No key to sign with: add one first.');
      const jwt = new lib.SignJWT(claims)
        .setProtectedHeader({ alg: key.alg, kid: signOptions.kid ?? key.kid, typ: 'JWT' })
        .setIssuer(signOptions.issuer ?? issuer)
        .setAudience(signOptions.audience ?? audience)
        .setIssuedAt(signOptions.issuedAt);
      if (signOptions.subject !== undefined) jwt.setSubject(signOptions.subject);
      if (!signOptions.noExpiry) {
        jwt.setExpirationTime(Math.floor(Date.now() / 1000) + (signOptions.expiresIn ?? 300));
      }
      return jwt.sign(key.privateKey);
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
}

/** An unsecured token (`alg: none`, empty signature), as an attacker would forge it. */
export function unsecuredToken(claims: JWTPayload): string {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  return `${encode({ alg: 'none', typ: 'JWT' })}.${encode(claims)}.`;
}

/** The same token with its payload swapped for `claims`, keeping the original header and signature. */
export function tamperPayload(
  token: string,
  change: (claims: Record<string, unknown>) => Record<string, unknown>,
): string {
  const [header, payload, signature] = token.split('.');
  if (header === undefined || payload === undefined || signature === undefined) throw new Error('not a JWS');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
  return `${header}.${Buffer.from(JSON.stringify(change(claims))).toString('base64url')}.${signature}`;
}

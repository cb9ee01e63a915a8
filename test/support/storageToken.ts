/**
 * Access tokens shaped like the ones Entra ID issues for Azure Storage, for Azurite's `--oauth basic` mode. Azurite
 * decodes the JWT and checks `iat`/`nbf`/`exp` (all required, `exp` in the future, `nbf` in the past), that `iss`
 * starts with a public-cloud STS prefix (e.g. `https://sts.windows.net/`) and that `aud` is
 * `https://storage.azure.com` (or the account's table endpoint); it does not verify the signature (Azurite 3.35,
 * dist/src/table/authentication/TableTokenAuthenticator.js). The signature here is an HMAC under a random key, so
 * the token has the real three-part shape without anyone being able to check it.
 * Shared by tests and local tooling, so it must not import node:test.
 */
import { createHmac, randomBytes, randomUUID } from 'node:crypto';

export const STORAGE_AUDIENCE = 'https://storage.azure.com';
/** A made-up tenant; Azurite only checks the issuer's prefix. */
export const TEST_TENANT_ID = '72f988bf-0000-4000-8000-00000000cafe';

export interface StorageTokenOptions {
  /** The managed identity the token is for (`appid`, `azp`). */
  clientId?: string;
  /** Seconds from now; negative for an expired token. Default 3600. */
  expiresInSeconds?: number;
  /** Claims that replace the defaults (e.g. another `aud` or `iss`). */
  claims?: Record<string, unknown>;
}

const encode = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

export function storageAccessToken(options: StorageTokenOptions = {}): string {
  const now = Math.floor(Date.now() / 1000);
  const expiresInSeconds = options.expiresInSeconds ?? 3600;
  const clientId = options.clientId ?? randomUUID();
  const payload = {
    aud: STORAGE_AUDIENCE,
    iss: `https://sts.windows.net/${TEST_TENANT_ID}/`,
    // Issued a little in the past, so a second's clock difference with Azurite cannot make it "not yet valid".
    iat: Math.min(now, now + expiresInSeconds) - 60,
    nbf: Math.min(now, now + expiresInSeconds) - 60,
    exp: now + expiresInSeconds,
    appid: clientId,
    azp: clientId,
    idtyp: 'app',
    oid: randomUUID(),
    sub: randomUUID(),
    tid: TEST_TENANT_ID,
    ver: '1.0',
    ...options.claims,
  };
  const signed = `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode(payload)}`;
  return `${signed}.${createHmac('sha256', randomBytes(32)).update(signed).digest('base64url')}`;
}

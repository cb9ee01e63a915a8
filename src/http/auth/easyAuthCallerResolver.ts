/**
 * AUTH_MODE=easyauth: App Service Authentication signs the user in and passes who they are in
 * `x-ms-client-principal-id` and `x-ms-client-principal` (base64 JSON: `auth_typ`, `claims[]`, `name_typ`,
 * `role_typ`). The platform strips these headers from incoming requests and sets them itself, so they can be
 * trusted ONLY when Authentication is enabled on the app; in any other mode they are never read.
 */
import type { HttpRequest } from '@azure/functions';
import type { Caller } from '../../core/ports';
import { isStorableText } from '../../core/text';
import type { CallerResolver } from '../caller';
import { credentialsMissing } from './challenge';

export const PRINCIPAL_HEADER = 'x-ms-client-principal';
export const PRINCIPAL_ID_HEADER = 'x-ms-client-principal-id';

export interface ClientPrincipal {
  auth_typ: string;
  name_typ?: string;
  role_typ?: string;
  claims: { typ: string; val: string }[];
}

/** Claims that carry a stable user id, in order of preference, when only the principal header is present. */
const ID_CLAIMS = [
  'http://schemas.microsoft.com/identity/claims/objectidentifier',
  'oid',
  'http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier',
  'sub',
];
// eslint-disable-next-line no-control-regex -- caller ids must not carry control characters into logs and keys
const CALLER_ID = /^[^\u0000-\u001f\u007f]{1,256}$/;
const MAX_PRINCIPAL_CHARS = 64 * 1024;

export const easyAuthCallerResolver: CallerResolver = {
  async resolve(request: HttpRequest): Promise<Caller> {
    const encoded = request.headers.get(PRINCIPAL_HEADER);
    const principal = encoded === null ? undefined : decodeClientPrincipal(encoded);
    if (encoded !== null && !principal)
      throw credentialsMissing(
        'The sign-in information from App Service Authentication is not readable. Sign in again.',
      );
    const id = request.headers.get(PRINCIPAL_ID_HEADER)?.trim() || (principal && idFromClaims(principal));
    // Hashed into every storage key: an unpaired surrogate would hash like U+FFFD and merge two callers.
    if (!id || !CALLER_ID.test(id) || !isStorableText(id)) {
      throw credentialsMissing('Sign in first: this API needs a user signed in through App Service Authentication.');
    }
    return { id, kind: 'user' };
  },
};

/** The decoded principal, or undefined when the header is not base64 JSON of the documented shape. */
export function decodeClientPrincipal(encoded: string): ClientPrincipal | undefined {
  if (encoded.length > MAX_PRINCIPAL_CHARS) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const candidate = value as Record<string, unknown>;
  if (typeof candidate['auth_typ'] !== 'string' || !Array.isArray(candidate['claims'])) return undefined;
  const claims = candidate['claims'].filter(
    (claim): claim is { typ: string; val: string } =>
      typeof claim === 'object' && claim !== null && typeof claim.typ === 'string' && typeof claim.val === 'string',
  );
  return {
    auth_typ: candidate['auth_typ'],
    ...(typeof candidate['name_typ'] === 'string' ? { name_typ: candidate['name_typ'] } : {}),
    ...(typeof candidate['role_typ'] === 'string' ? { role_typ: candidate['role_typ'] } : {}),
    claims: claims.map((claim) => ({ typ: claim.typ, val: claim.val })),
  };
}

function idFromClaims(principal: ClientPrincipal): string | undefined {
  for (const type of ID_CLAIMS) {
    const claim = principal.claims.find((entry) => entry.typ === type && entry.val.trim() !== '');
    if (claim) return claim.val.trim();
  }
  return undefined;
}

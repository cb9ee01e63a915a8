/**
 * AUTH_MODE=jwt: `Authorization: Bearer <JWT>` checked with jose against the issuer's JSON Web Key Set. jose
 * caches the key set, fetches it again when a token names a key id it does not hold (at most once per cooldown,
 * so junk tokens cannot make us hammer the issuer), and refuses `alg: none` and any algorithm not allowed here.
 * The caller is the token's `sub` (or AUTH_USER_CLAIM); nothing else in the request can choose it.
 */
import type { HttpRequest } from '@azure/functions';
import type { JWTPayload, JWTVerifyGetKey } from 'jose' with { 'resolution-mode': 'import' };
import { AuthUnavailableError, type ChatError } from '../../core/errors';
import type { Caller } from '../../core/ports';
import { isStorableText } from '../../core/text';
import type { CallerResolver } from '../caller';
import { credentialsMissing, invalidToken } from './challenge';

type Jose = typeof import('jose', { with: { 'resolution-mode': 'import' } });

export interface JwtCallerResolverOptions {
  jwksUrl: string;
  issuer: string;
  audience: string;
  /** Accepted `alg` values; `none` is never accepted whatever this holds. */
  algorithms: readonly string[];
  /** The claim that identifies the caller (default `sub`). */
  userClaim: string;
  /** Tolerance on `exp` and `nbf`, in seconds. */
  clockSkewSeconds: number;
  /** Least time between two key-set fetches caused by an unknown `kid`; jose's default is 30 s. */
  jwksCooldownMs?: number;
  /** Abandon a key-set fetch after this long; default 5 s. */
  jwksTimeoutMs?: number;
  /** Verify with these keys instead of fetching `jwksUrl` (tests). */
  keys?: JWTVerifyGetKey;
}

/** Longer than any reasonable access token; refusing earlier keeps parsing work bounded. */
export const MAX_TOKEN_CHARS = 16 * 1024;
/** Caller ids become storage keys (hashed) and log fields: keep them printable and bounded. */
// eslint-disable-next-line no-control-regex -- the point is to refuse control characters
const CALLER_ID = /^[^\u0000-\u001f\u007f]{1,256}$/;
/** RFC 6750 b64token after the scheme. */
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;

let jose: Promise<Jose> | undefined;
/** jose is ESM-only; this CommonJS app loads it with import(), once. */
function loadJose(): Promise<Jose> {
  jose ??= import('jose');
  return jose;
}

export function createJwtCallerResolver(options: JwtCallerResolverOptions): CallerResolver {
  let keySet: Promise<JWTVerifyGetKey> | undefined;
  const keys = (): Promise<JWTVerifyGetKey> => {
    keySet ??= options.keys
      ? Promise.resolve(options.keys)
      : loadJose().then((lib) =>
          lib.createRemoteJWKSet(new URL(options.jwksUrl), {
            ...(options.jwksCooldownMs !== undefined ? { cooldownDuration: options.jwksCooldownMs } : {}),
            timeoutDuration: options.jwksTimeoutMs ?? 5_000,
          }),
        );
    return keySet;
  };
  const algorithms = options.algorithms.filter((algorithm) => algorithm.toLowerCase() !== 'none');

  return {
    async resolve(request: HttpRequest): Promise<Caller> {
      const token = bearerToken(request);
      const lib = await loadJose();
      let payload: JWTPayload;
      try {
        ({ payload } = await lib.jwtVerify(token, await keys(), {
          issuer: options.issuer,
          audience: options.audience,
          algorithms,
          clockTolerance: options.clockSkewSeconds,
          requiredClaims: ['exp'],
        }));
      } catch (error) {
        throw refusal(error);
      }
      // Refused beyond the skew: jose checks `iat` only when a maximum token age is set.
      if (typeof payload.iat === 'number' && payload.iat > Date.now() / 1000 + options.clockSkewSeconds) {
        throw invalidToken('The access token was issued in the future (iat).');
      }
      const id = payload[options.userClaim];
      // The id is hashed into every storage key: an unpaired surrogate would hash like U+FFFD and merge two callers.
      if (typeof id !== 'string' || !CALLER_ID.test(id) || !isStorableText(id)) {
        throw invalidToken(`The access token has no usable ${options.userClaim} claim to identify the caller.`);
      }
      return { id, kind: 'user' };
    },
  };
}

function bearerToken(request: HttpRequest): string {
  const header = request.headers.get('authorization');
  if (header === null || !/^bearer(\s|$)/i.test(header.trim())) {
    throw credentialsMissing('This API needs an access token: send Authorization: Bearer <token>.');
  }
  if (header.length > MAX_TOKEN_CHARS) throw invalidToken('The access token is too long.');
  const match = BEARER.exec(header.trim());
  if (!match?.[1]) throw invalidToken('The access token is malformed.');
  return match[1];
}

/** What went wrong, in words that help the client and reveal nothing about keys or internals. */
function refusal(error: unknown): ChatError {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return invalidToken('The access token has expired.');
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      return invalidToken(claimFailure((error as { claim?: unknown }).claim));
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return invalidToken('The access token is signed with an algorithm this API does not accept.');
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return invalidToken('The access token signature is not valid.');
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return invalidToken('The access token is signed with a key the issuer does not publish.');
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return invalidToken('The access token is malformed.');
    default:
      // Timeouts, network failures, an unreadable key set: the token may be fine, so this is not the client's 401.
      return new AuthUnavailableError(undefined, error);
  }
}

function claimFailure(claim: unknown): string {
  switch (claim) {
    case 'iss':
      return 'The access token was not issued by the issuer this API trusts.';
    case 'aud':
      return 'The access token is not meant for this API (audience).';
    case 'nbf':
      return 'The access token is not valid yet.';
    case 'exp':
      return 'The access token has no valid expiry (exp).';
    case 'iat':
      return 'The access token has an invalid issue time (iat).';
    default:
      return 'The access token claims are not valid.';
  }
}

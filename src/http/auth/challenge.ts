/**
 * RFC 6750 challenges. A request without Bearer credentials gets a bare challenge (no error code, as section 3.1
 * asks when the client did not try to authenticate); a token that was sent but refused gets
 * `error="invalid_token"` and a short description. Descriptions are fixed strings from this module, never
 * text taken from the token or from a library's error message.
 */
import { UnauthorizedError } from '../../core/errors';

export const REALM = 'chat';

/** RFC 6750 allows only these characters inside error_description. */
const DESCRIPTION_CHARS = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

export function bearerChallenge(error?: { code: 'invalid_token' | 'invalid_request'; description: string }): string {
  if (!error) return `Bearer realm="${REALM}"`;
  const description = DESCRIPTION_CHARS.test(error.description) ? error.description : 'The access token is not valid';
  return `Bearer realm="${REALM}", error="${error.code}", error_description="${description}"`;
}

/** 401 for a request that carried no usable credentials. */
export function credentialsMissing(detail: string): UnauthorizedError {
  return new UnauthorizedError(detail, bearerChallenge());
}

/** 401 for a token that was sent and refused; `detail` doubles as the challenge's description. */
export function invalidToken(detail: string): UnauthorizedError {
  return new UnauthorizedError(detail, bearerChallenge({ code: 'invalid_token', description: detail }));
}

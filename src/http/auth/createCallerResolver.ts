/**
 * Picks how callers are identified from AUTH_MODE. Each resolver reads only its own credentials: in `none` and
 * `jwt` modes an `x-ms-client-principal` header (which anyone can send when App Service Authentication is off)
 * is never looked at.
 */
import type { Config } from '../../config';
import { localCallerResolver, type CallerResolver } from '../caller';
import { easyAuthCallerResolver } from './easyAuthCallerResolver';
import { createJwtCallerResolver, type JwtCallerResolverOptions } from './jwtCallerResolver';

export function createCallerResolver(
  config: Readonly<Pick<Config, 'auth'>>,
  overrides: Pick<JwtCallerResolverOptions, 'keys' | 'jwksTimeoutMs'> = {},
): CallerResolver {
  const { auth } = config;
  switch (auth.mode) {
    case 'none':
      return localCallerResolver;
    case 'easyauth':
      return easyAuthCallerResolver;
    case 'jwt':
      if (!auth.jwksUrl || !auth.issuer || !auth.audience) {
        // The config schema already demands these in jwt mode; this guards a hand-built config.
        throw new Error('AUTH_MODE=jwt needs AUTH_JWKS_URL, AUTH_ISSUER and AUTH_AUDIENCE.');
      }
      return createJwtCallerResolver({
        jwksUrl: auth.jwksUrl,
        issuer: auth.issuer,
        audience: auth.audience,
        algorithms: auth.algorithms,
        userClaim: auth.userClaim,
        clockSkewSeconds: auth.clockSkewSeconds,
        jwksCooldownMs: auth.jwksCooldownSeconds * 1000,
        ...overrides,
      });
  }
}

import { jwtVerify, createRemoteJWKSet, errors } from 'jose';
export const probe = [jwtVerify, createRemoteJWKSet, errors.JWTExpired];

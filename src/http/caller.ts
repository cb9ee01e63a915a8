/**
 * Who is calling. Every storage key derives from the caller this returns, never from the request body.
 * AUTH_MODE=none answers one fixed local caller (refused on Azure by the config schema).
 */
import type { HttpRequest } from '@azure/functions';
import type { Caller } from '../core/ports';

export interface CallerResolver {
  /** The authenticated caller, or throws UnauthorizedError (401 with WWW-Authenticate). */
  resolve(request: HttpRequest): Promise<Caller>;
}

export const LOCAL_CALLER: Caller = Object.freeze({ id: 'local', kind: 'local' });

export const localCallerResolver: CallerResolver = {
  resolve: async () => LOCAL_CALLER,
};

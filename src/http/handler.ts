import type { HttpHandler, HttpRequest, HttpResponseInit, InvocationContext } from '@azure/functions';
import { getServices, type AppServices } from '../composition';
import { problemResponse } from './problem';

export type ServiceHandler = (
  request: HttpRequest,
  context: InvocationContext,
  services: AppServices,
) => Promise<HttpResponseInit>;

/** Wraps a handler: services from the composition root, every error mapped to a problem response in one place. */
export function withServices(handler: ServiceHandler): HttpHandler {
  return async (request, context) => {
    try {
      const services = await getServices();
      return await services.inInvocationContext(context.traceContext, () => handler(request, context, services));
    } catch (error) {
      return problemResponse(error, context, new URL(request.url).pathname);
    }
  };
}

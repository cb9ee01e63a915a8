import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { getConfig } from '../composition';
import { problemResponse } from '../http/problem';

let documentJson: string | undefined;

/**
 * GET /api/openapi.json: the OpenAPI 3.1 document, with the limits and the auth mode of this app's settings. Built
 * once per process; needs only the settings, so it answers even while storage is down. The generator (the response
 * schemas, zod's JSON Schema output) is loaded on the first request, not when the app loads: in the bundle it is a file
 * of its own, `lazy/openapi.js` (scripts/bundle.ts LAZY_SOURCES).
 */
export async function openapi(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  try {
    if (documentJson === undefined) {
      const { buildOpenApiDocument, openApiOptionsFromConfig } = await import('../openapi/document.js');
      documentJson = JSON.stringify(buildOpenApiDocument(openApiOptionsFromConfig(getConfig())));
    }
    return {
      status: 200,
      headers: { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'public, max-age=300' },
      body: documentJson,
    };
  } catch (error) {
    return problemResponse(error, context, new URL(request.url).pathname);
  }
}

app.http('openapi', {
  route: 'openapi.json',
  methods: ['GET'],
  authLevel: 'anonymous',
  handler: openapi,
});

import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { getConfig } from '../composition';
import { problemResponse } from '../http/problem';
import { buildOpenApiDocument, openApiOptionsFromConfig } from '../openapi/document';

let documentJson: string | undefined;

/**
 * GET /api/openapi.json: the OpenAPI 3.1 document, with the limits and the auth mode of this app's settings. Built
 * once per process; needs only the settings, so it answers even while storage is down.
 */
export async function openapi(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  try {
    documentJson ??= JSON.stringify(buildOpenApiDocument(openApiOptionsFromConfig(getConfig())));
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

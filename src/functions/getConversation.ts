import { app } from '@azure/functions';
import { withServices } from '../http/handler';
import { json, parseConversationId, parsePage } from '../http/request';

/** GET /api/conversations/{id}: the conversation and its stored messages in order, a page at a time. */
export const getConversation = withServices(async (request, _context, services) => {
  const caller = await services.callers.resolve(request);
  const id = parseConversationId(request.params.id);
  const page = parsePage(request, { limit: 100, max: 1000 });
  return json(200, await services.conversations.get(caller, id, page));
});

app.http('getConversation', {
  route: 'conversations/{id}',
  methods: ['GET'],
  authLevel: 'function',
  handler: getConversation,
});

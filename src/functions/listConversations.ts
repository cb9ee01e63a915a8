import { app } from '@azure/functions';
import { withServices } from '../http/handler';
import { json, parsePage } from '../http/request';

/** GET /api/conversations: the caller's own conversations, newest first. */
export const listConversations = withServices(async (request, _context, services) => {
  const caller = await services.callers.resolve(request);
  const page = parsePage(request, { limit: 20, max: 100 });
  const { items, nextCursor } = await services.conversations.list(caller, page);
  return json(200, { conversations: items, ...(nextCursor ? { nextCursor } : {}) });
});

app.http('listConversations', {
  route: 'conversations',
  methods: ['GET'],
  authLevel: 'function',
  handler: listConversations,
});

import { app } from '@azure/functions';
import { withServices } from '../http/handler';
import { parseConversationId } from '../http/request';

/** DELETE /api/conversations/{id}: removes every stored entity of the conversation. */
export const deleteConversation = withServices(async (request, _context, services) => {
  const caller = await services.callers.resolve(request);
  const id = parseConversationId(request.params.id);
  await services.conversations.delete(caller, id);
  return { status: 204 };
});

app.http('deleteConversation', {
  route: 'conversations/{id}',
  methods: ['DELETE'],
  authLevel: 'function',
  handler: deleteConversation,
});

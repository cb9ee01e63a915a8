import { app } from '@azure/functions';
import { withServices } from '../http/handler';
import { json, readJson } from '../http/request';

/** POST /api/conversations: a new conversation with its system message and few-shot examples. */
export const createConversation = withServices(async (request, _context, services) => {
  const caller = await services.callers.resolve(request);
  // Every field is optional, so no body at all is an empty conversation.
  const body = await readJson(request, services.schemas.createConversation, services.config.limits.bodyBytes, {
    emptyAs: {},
  });
  const conversation = await services.conversations.create(caller, body);
  const location = `${new URL(request.url).pathname.replace(/\/+$/, '')}/${conversation.id}`;
  return json(201, conversation, { Location: location });
});

app.http('createConversation', {
  route: 'conversations',
  methods: ['POST'],
  authLevel: 'function',
  handler: createConversation,
});

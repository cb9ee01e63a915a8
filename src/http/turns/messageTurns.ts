/**
 * What the routes of a turn share: POST /conversations/{id}/messages (JSON), .../messages/stream (server-sent
 * events) and /conversations/{id}/turns (queued) read the same request and run the same turn; .../tool-results and
 * .../tool-results/stream read the same results.
 */
import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import type { z } from 'zod';
import type { AppServices } from '../../composition';
import { ClientToolsNotAllowedError, NotFoundError } from '../../core/errors';
import type { ToolResultsInput, TurnInput } from '../../core/turn';
import { parseConversationId, parseIdempotencyKey, readJson } from '../request';
import { acceptedTurn, newTurnId, turnIdFor } from './queuedTurns';

/** What every turn request starts with: the caller, the conversation, the Idempotency-Key and the body. */
async function readTurnRequest<S extends z.ZodType>(request: HttpRequest, services: AppServices, schema: S) {
  const caller = await services.callers.resolve(request);
  const conversationId = parseConversationId(request.params.id);
  const idempotencyKey = parseIdempotencyKey(request);
  const body = await readJson(request, schema, services.config.limits.bodyBytes);
  return { body, caller, conversationId, ...(idempotencyKey ? { idempotencyKey } : {}) };
}

/** A message turn: the body `{ content, name? }`. */
export async function readMessageTurn(request: HttpRequest, services: AppServices): Promise<TurnInput> {
  const { body, ...turn } = await readTurnRequest(request, services, services.schemas.sendMessage);
  return { ...turn, content: body.content, ...(body.name ? { name: body.name } : {}) };
}

/** Client-tool results: the body `{ turnId?, results }`. */
export async function readToolResults(request: HttpRequest, services: AppServices): Promise<ToolResultsInput> {
  const { body, ...turn } = await readTurnRequest(request, services, services.schemas.toolResults);
  return { ...turn, results: body.results, ...(body.turnId ? { turnId: body.turnId } : {}) };
}

export const NO_QUEUE = 'This app runs no queued turns (no queue connection is configured).';

/** Queues the turn: 202 with the status resource in Location. */
export async function queueMessageTurn(
  services: AppServices,
  input: TurnInput,
  headers: Record<string, string> = {},
): Promise<HttpResponseInit> {
  if (!services.jobs) throw new NotFoundError(NO_QUEUE);
  const { caller, conversationId, content, name, idempotencyKey } = input;
  const conversation = await services.store.get(caller, conversationId);
  if (!conversation) throw new NotFoundError('No conversation with this id exists for the caller.');
  // Nobody would be there to answer a client tool: refuse now rather than fail the queued turn later.
  if (conversation.clientTools?.length) throw new ClientToolsNotAllowedError();
  const job = await services.jobs.submit({
    caller,
    conversationId,
    content,
    ...(name ? { name } : {}),
    // With an Idempotency-Key a retried request finds the job it queued; without, every request is a new turn.
    turnId: idempotencyKey ? turnIdFor('idempotency-key', idempotencyKey) : newTurnId(),
    reply: { kind: 'none' },
  });
  return acceptedTurn(job, headers);
}

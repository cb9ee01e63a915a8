/**
 * What both webhook routes do once a delivery is verified: map the integration's own thread key to a conversation
 * owned by the integration's principal (created on first use), and run the turn with the delivery id as its
 * Idempotency-Key, so a redelivery answers the stored reply without calling the model again.
 */
import { createHash } from 'node:crypto';
import type { AppServices } from '../../composition';
import type { Caller, ReplyTarget, TurnJob, Usage } from '../../core/ports';
import { isStorableText } from '../../core/text';
import type { TurnJobs } from '../../core/turnJobs';
import { turnIdFor } from '../turns/queuedTurns';
import { MAX_TITLE_CHARS, NAME_PATTERN } from '../schemas';

/** The principal that owns every conversation of POST /api/webhooks/messages. */
export const WEBHOOK_CALLER: Caller = Object.freeze({ id: 'webhook', kind: 'integration' });
/** The principal that owns every conversation of POST /api/webhooks/github. */
export const GITHUB_CALLER: Caller = Object.freeze({ id: 'github', kind: 'integration' });

export const MAX_THREAD_ID_CHARS = 256;

/**
 * The conversation id of a thread: base64url of sha256, 32 characters (192 bits). Deterministic, so every delivery
 * of one thread finds the same conversation without a lookup table, and shaped like any other conversation id.
 */
export function threadConversationId(threadId: string): string {
  // UTF-8 turns unpaired surrogates into U+FFFD: only well-formed ids hash injectively (the schemas refuse others).
  if (!isStorableText(threadId)) throw new Error('A thread id must be well-formed Unicode without NUL to be hashed.');
  return createHash('sha256').update(threadId, 'utf8').digest('base64url').slice(0, 32);
}

/** A participant name the model accepts (letters, digits, _ and -, at most 64), made from a free-form user id. */
export function participantName(user: string | undefined): string | undefined {
  if (user === undefined) return undefined;
  const name = user
    .replace(/[^A-Za-z0-9_-]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .slice(0, 64);
  return NAME_PATTERN.test(name) ? name : undefined;
}

/** Made on the first long title, not at load (creating a segmenter loads ICU's break rules: ~10 ms of a cold start). */
let graphemes: Intl.Segmenter | undefined;

/**
 * A conversation title from free text: its first line, at most MAX_TITLE_CHARS UTF-16 code units, cut between
 * user-perceived characters (never inside a surrogate pair or an emoji sequence), with `…` when cut.
 */
export function titleFrom(text: string): string {
  const line = text.trim().split(/\r?\n/, 1)[0]?.trim() ?? '';
  if (line.length <= MAX_TITLE_CHARS) return line;
  let title = '';
  for (const { segment } of (graphemes ??= new Intl.Segmenter(undefined, { granularity: 'grapheme' })).segment(line)) {
    if (title.length + segment.length > MAX_TITLE_CHARS - 1) break;
    title += segment;
  }
  return `${title.trimEnd()}…`;
}

export interface ThreadTurnInput {
  principal: Caller;
  source: 'webhook' | 'github';
  threadId: string;
  /** The title of a conversation this delivery creates; default: the thread id and the message's first line. */
  title?: string;
  content: string;
  name?: string;
  /** webhook-id or X-GitHub-Delivery: the same on every redelivery. */
  deliveryId: string;
}

export interface ThreadTurnResponse {
  conversationId: string;
  message: { id: string; role: 'assistant'; content: string; createdAt: string };
  finishReason: string;
  usage: Usage;
}

async function threadConversation(services: AppServices, input: ThreadTurnInput): Promise<string> {
  const conversationId = threadConversationId(input.threadId);
  await services.conversations.getOrCreate(input.principal, conversationId, {
    title: titleFrom(input.title ?? `${input.threadId}: ${input.content}`),
    metadata: { source: input.source, threadId: input.threadId },
  });
  return conversationId;
}

/**
 * The queued form: the turn id derives from the delivery id, so a redelivery finds the job its first delivery
 * stored (and queues nothing more) whatever state it reached.
 */
export async function queueThreadTurn(
  services: AppServices,
  jobs: TurnJobs,
  input: ThreadTurnInput & { reply: ReplyTarget },
): Promise<TurnJob> {
  const conversationId = await threadConversation(services, input);
  return jobs.submit({
    caller: input.principal,
    conversationId,
    content: input.content,
    ...(input.name ? { name: input.name } : {}),
    turnId: turnIdFor(input.source, input.deliveryId),
    reply: input.reply,
  });
}

export async function runThreadTurn(
  services: AppServices,
  input: ThreadTurnInput,
): Promise<{ body: ThreadTurnResponse; replayed: boolean }> {
  const conversationId = await threadConversation(services, input);
  const result = await services.turns.send({
    caller: input.principal,
    conversationId,
    content: input.content,
    ...(input.name ? { name: input.name } : {}),
    idempotencyKey: input.deliveryId,
  });
  return {
    body: {
      conversationId: result.conversationId,
      message: result.message,
      finishReason: result.finishReason,
      usage: result.usage,
    },
    replayed: result.replayed,
  };
}

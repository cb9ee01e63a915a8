/**
 * The bodies that describe a queued turn: the status resource (GET /api/conversations/{id}/turns/{turnId}) and the
 * `data` of the turn.completed / turn.failed callbacks. A completed turn carries the very members a synchronous
 * turn answers; a failed one its problem.
 */
import type { TurnJobView } from '../../core/turnJobs';
import type { StoredMessage, TurnJob, TurnRecord } from '../../core/ports';
import { problemFromRecord, type ProblemBody } from '../problem';

export function turnLocation(conversationId: string, turnId: string): string {
  return `/api/conversations/${encodeURIComponent(conversationId)}/turns/${encodeURIComponent(turnId)}`;
}

/** What a synchronous turn answers, from the stored record and reply. */
export function completedTurnBody(record: TurnRecord, reply: StoredMessage) {
  return {
    conversationId: record.conversationId,
    message: { id: reply.id, role: 'assistant' as const, content: reply.content, createdAt: reply.createdAt },
    finishReason: record.finishReason,
    usage: record.usage,
    context: record.context,
  };
}

export interface TurnStatusBody {
  turnId: string;
  conversationId: string;
  status: TurnJob['status'];
  createdAt: string;
  updatedAt: string;
  message?: { id: string; role: 'assistant'; content: string; createdAt: string };
  finishReason?: string;
  usage?: TurnRecord['usage'];
  context?: TurnRecord['context'];
  problem?: ProblemBody;
  /** Where the reply went besides this resource (a callback or a GitHub comment), and how that went. */
  delivery?: { target: 'webhook' | 'github'; state: string; attempts: number; lastError?: string };
}

export function turnStatusBody({ job, reply }: TurnJobView): TurnStatusBody {
  return {
    turnId: job.turnId,
    conversationId: job.conversationId,
    status: job.status,
    createdAt: job.createdAt,
    updatedAt: job.updatedAt,
    ...(job.status === 'completed' && job.result && reply ? completedTurnBody(job.result, reply) : {}),
    ...(job.status === 'failed' && job.failure ? { problem: problemFromRecord(job.failure) } : {}),
    ...(job.reply.kind !== 'none'
      ? {
          delivery: {
            target: job.reply.kind,
            state: job.delivery?.state ?? 'pending',
            attempts: job.delivery?.attempts ?? 0,
            ...(job.delivery?.lastError ? { lastError: job.delivery.lastError } : {}),
          },
        }
      : {}),
  };
}

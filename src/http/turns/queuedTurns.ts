/**
 * How HTTP requests become queued turns: `Prefer: respond-async` (RFC 7240), turn ids, and the 202 answer that
 * points at the status resource.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { HttpRequest } from '@azure/functions';
import { InvalidIdError } from '../../core/errors';
import type { TurnJob } from '../../core/ports';
import { json } from '../request';
import { turnLocation } from './turnBodies';

const TURN_ID = /^turn_[A-Za-z0-9_-]{22,43}$/;

/** True when the Prefer header asks for `respond-async` (among other preferences, in any case). */
export function prefersAsync(request: HttpRequest): boolean {
  const header = request.headers.get('prefer');
  if (!header) return false;
  return header
    .split(',')
    .map((preference) => preference.split(';', 1)[0]?.split('=', 1)[0]?.trim().toLowerCase())
    .includes('respond-async');
}

/** A fresh turn id: 128 random bits. */
export function newTurnId(): string {
  return `turn_${randomBytes(16).toString('base64url')}`;
}

/** The turn id of a request that carries its own key (Idempotency-Key, webhook-id, X-GitHub-Delivery): a retry
 * of the request finds the job it stored the first time. */
export function turnIdFor(source: string, key: string): string {
  return `turn_${createHash('sha256').update(`${source}\n${key}`, 'utf8').digest('base64url').slice(0, 32)}`;
}

export function parseTurnId(raw: string | undefined): string {
  if (raw === undefined || !TURN_ID.test(raw)) {
    throw new InvalidIdError('That is not a turn id: ids are the ones a 202 answer to a queued turn returns.');
  }
  return raw;
}

/** 202 Accepted with the status resource in Location; a retried request gets its job's current status. */
export function acceptedTurn(job: TurnJob, headers: Record<string, string> = {}) {
  const location = turnLocation(job.conversationId, job.turnId);
  return json(
    202,
    { conversationId: job.conversationId, turnId: job.turnId, status: job.status },
    { Location: location, ...headers },
  );
}

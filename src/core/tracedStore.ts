/**
 * Storage calls as spans (children of the turn's span): the store's methods wrapped, nothing else changed.
 */
import type { ConversationStore } from './ports';
import { inSpan, type Telemetry } from './telemetry';

export const STORAGE_SYSTEM = 'azure.table_storage';

export function traceStore(store: ConversationStore, telemetry: Telemetry): ConversationStore {
  const traced = {} as Record<string, unknown>;
  for (const method of Object.keys(STORE_METHODS) as (keyof ConversationStore)[]) {
    const original = store[method] as (...args: unknown[]) => Promise<unknown>;
    traced[method] = (...args: unknown[]) =>
      inSpan(
        telemetry,
        `storage ${method}`,
        { kind: 'client', attributes: { 'db.system.name': STORAGE_SYSTEM, 'db.operation.name': method } },
        () => original.apply(store, args),
      );
  }
  return traced as unknown as ConversationStore;
}

/** Every method of the port: a method added to it and not here is a compile error. */
const STORE_METHODS = {
  create: true,
  get: true,
  loadForTurn: true,
  listMessages: true,
  getMessage: true,
  list: true,
  countConversations: true,
  delete: true,
  commitTurn: true,
  pauseTurn: true,
  getPendingTurn: true,
  cancelPendingTurn: true,
  beginIdempotent: true,
  renewIdempotent: true,
  releaseIdempotent: true,
  ping: true,
} as const satisfies Record<keyof ConversationStore, true>;

/**
 * TurnJobStore on Table Storage: one table, `${prefix}turnjobs`, keyed like the conversations (PartitionKey = the
 * owner's conversation partition, RowKey = the turn id), so a caller can only ever read jobs of its own partition.
 * The job holds the whole request (the message text may be 400,000 characters, split across properties): the
 * queue message only refers to it, and stays far below the queue's 64 KiB limit.
 */
import { TableClient, type TableEntityResult } from '@azure/data-tables';
import type { Caller, NewTurnJob, TurnJob, TurnJobChanges, TurnJobStatus, TurnJobStore } from '../core/ports';
import { assertEntityFits } from './entitySize';
import { readLongText, writeLongText } from './splitText';
import { createTableClient, type TableConnection } from './tableClient';
import { guardStorage as guard, hasStatus } from './tableConversationStore';
import { conversationPartition, isValidKeyValue } from './tableKeys';

export const TURN_JOBS_TABLE = 'turnjobs';

type Properties = Record<string, unknown>;

const JSON_PROPERTIES = ['result', 'failure', 'lastError', 'delivery'] as const;

export async function createTableTurnJobStore(
  options: TableConnection & { tablePrefix: string },
): Promise<TableTurnJobStore> {
  const store = new TableTurnJobStore(
    createTableClient(`${options.tablePrefix}${TURN_JOBS_TABLE}`, options, {
      tryTimeoutMs: 10_000,
      retry: { maxRetries: 3, retryDelayInMs: 200, maxRetryDelayInMs: 2_000 },
    }),
  );
  await store.ensureTable();
  return store;
}

export class TableTurnJobStore implements TurnJobStore {
  constructor(private readonly table: TableClient) {}

  async ensureTable(): Promise<void> {
    await guard(async () => {
      try {
        await this.table.createTable();
      } catch (error) {
        if (!hasStatus(error, 409)) throw error;
      }
    });
  }

  create(job: NewTurnJob): Promise<{ job: TurnJob; created: boolean }> {
    return guard(async () => {
      if (!isValidKeyValue(job.turnId) || !isValidKeyValue(job.conversationId)) {
        throw new Error('A turn job needs valid turn and conversation ids.');
      }
      const entity: Properties & { partitionKey: string; rowKey: string } = {
        partitionKey: conversationPartition(job.owner, job.conversationId),
        rowKey: job.turnId,
        ownerId: job.owner.id,
        ownerKind: job.owner.kind,
        conversationId: job.conversationId,
        reply: JSON.stringify(job.reply),
        status: 'queued' satisfies TurnJobStatus,
        createdAt: job.createdAt,
        updatedAt: job.createdAt,
        runs: 0,
      };
      writeLongText(entity, 'content', job.content);
      if (job.name !== undefined) entity['name'] = job.name;
      assertEntityFits(entity, 'The turn job');
      try {
        await this.table.createEntity(entity);
        return { job: { ...job, status: 'queued', updatedAt: job.createdAt, runs: 0 }, created: true };
      } catch (error) {
        if (!hasStatus(error, 409)) throw error;
      }
      const existing = await this.get(job.owner, job.conversationId, job.turnId);
      if (!existing) throw new Error(`Turn job ${job.turnId} exists and does not.`);
      return { job: existing, created: false };
    });
  }

  get(owner: Caller, conversationId: string, turnId: string): Promise<TurnJob | undefined> {
    return guard(async () => {
      if (!isValidKeyValue(turnId) || !isValidKeyValue(conversationId)) return undefined;
      try {
        const entity = await this.table.getEntity<Properties>(conversationPartition(owner, conversationId), turnId);
        return toJob(owner, entity);
      } catch (error) {
        if (hasStatus(error, 404)) return undefined;
        throw error;
      }
    });
  }

  update(owner: Caller, conversationId: string, turnId: string, changes: TurnJobChanges): Promise<void> {
    return guard(async () => {
      const entity: Properties & { partitionKey: string; rowKey: string } = {
        partitionKey: conversationPartition(owner, conversationId),
        rowKey: turnId,
      };
      if (changes.status !== undefined) entity['status'] = changes.status;
      if (changes.runs !== undefined) entity['runs'] = changes.runs;
      if (changes.updatedAt !== undefined) entity['updatedAt'] = changes.updatedAt;
      for (const name of JSON_PROPERTIES) {
        const value = changes[name];
        if (value !== undefined) entity[name] = JSON.stringify(value);
      }
      // Merge without an ETag: one worker holds a queue message at a time, and each write carries the whole state
      // of the part it changes.
      await this.table.updateEntity(entity, 'Merge');
    });
  }

  delete(owner: Caller, conversationId: string, turnId: string): Promise<void> {
    return guard(async () => {
      try {
        await this.table.deleteEntity(conversationPartition(owner, conversationId), turnId);
      } catch (error) {
        if (!hasStatus(error, 404)) throw error;
      }
    });
  }
}

function toJob(owner: Caller, entity: TableEntityResult<Properties>): TurnJob {
  const parse = <T>(name: string): T | undefined =>
    typeof entity[name] === 'string' ? (JSON.parse(entity[name]) as T) : undefined;
  const name = entity['name'];
  const job: TurnJob = {
    turnId: String(entity.rowKey),
    owner,
    conversationId: String(entity['conversationId']),
    content: readLongText(entity, 'content') ?? '',
    ...(typeof name === 'string' ? { name } : {}),
    reply: parse<TurnJob['reply']>('reply') ?? { kind: 'none' },
    status: String(entity['status']) as TurnJobStatus,
    createdAt: String(entity['createdAt']),
    updatedAt: String(entity['updatedAt']),
    runs: Number(entity['runs'] ?? 0),
  };
  for (const property of JSON_PROPERTIES) {
    const value = parse<never>(property);
    if (value !== undefined) Object.assign(job, { [property]: value });
  }
  return job;
}

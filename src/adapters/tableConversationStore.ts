/**
 * ConversationStore on Azure Table Storage (`@azure/data-tables`). One table, `${prefix}conversations`, holds one
 * partition per conversation (header, messages, idempotency records; keys in ./tableKeys.ts) and one index
 * partition per caller for listing. A turn is one entity-group transaction guarded by the header's ETag, so it is
 * stored whole or not at all, and a concurrent turn loses with ConcurrencyConflict.
 *
 * The list is most recently active first: each conversation has an activity entry in the index partition keyed by
 * its header's `updatedAt`. A transaction holds one partition, so the entry cannot move in the turn's own
 * transaction: it moves right after, in one transaction of the index partition (new entry, old entry deleted,
 * pointer updated), conditional on the pointer (see moveActivity). The pointer is read beside the turn's load (or
 * known from this instance's last move), so that transaction is the only round trip the move adds after the commit.
 * A list that meets an entry behind its header moves it too.
 */
import {
  RestError,
  TableClient,
  odata,
  type TableEntity,
  type TableEntityResult,
  type TransactionAction,
} from '@azure/data-tables';
import type { TokenCredential } from '@azure/identity';
import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from '../core/dependencies';
import { ConversationBusyError, InvalidRequestError, RateLimitedError, StorageUnavailableError } from '../core/errors';
import {
  ClaimLost,
  ConcurrencyConflict,
  type Caller,
  type Conversation,
  type ConversationStore,
  type ConversationSummary,
  type EncodingName,
  type FinishReason,
  type HistorySummary,
  type IdempotencyBegin,
  type IdempotencyClaim,
  type NewConversation,
  type Page,
  type PendingTurn,
  type PrologueMessage,
  type StoredMessage,
  type ToolCall,
  type ToolDefinition,
  type TurnCommit,
  type TurnPause,
  type TurnRecord,
  type Usage,
  NO_TOTALS,
} from '../core/ports';
import {
  assertBatchFits,
  assertEntityFits,
  entitySizeBytes,
  MAX_BATCH_OPERATIONS,
  MAX_ENTITY_BYTES,
  MAX_ENTITY_PROPERTIES,
  userPropertyCount,
} from './entitySize';
import { partName, readLongText, splitText, writeLongText } from './splitText';
import { runInBackground } from './backgroundWork';
import { HistoryCache } from './historyCache';
import { createTableClient } from './tableClient';
import {
  ACTIVITY_INDEXED_ROW,
  ACTIVITY_ROWS_END,
  ACTIVITY_ROWS_START,
  activityRow,
  callerIndexPartition,
  callerIndexRow,
  conversationPartition,
  CONVERSATION_COUNT_ROW,
  CURSOR_KEY_PARTITION,
  CURSOR_KEY_ROW,
  decodeListCursor,
  encodeListCursor,
  HEADER_ROW,
  idempotencyRow,
  INDEX_ROWS_END,
  isValidKeyValue,
  isValidSeq,
  MESSAGE_ROW_PREFIX,
  MESSAGE_ROWS_END,
  PENDING_ROW,
  messageIdForSeq,
  messagePartRow,
  messageRow,
  messageRowsAfter,
  partFromMessageRow,
  seqFromMessageRow,
} from './tableKeys';

export interface TableConversationStoreOptions {
  /** e.g. `UseDevelopmentStorage=true` or an Azurite/account connection string. */
  connectionString?: string;
  /** `https://<account>.table.core.windows.net`, used with `credential` (managed identity). */
  endpoint?: string;
  credential?: TokenCredential;
  /** Prefix for the table name (letters and digits). */
  tablePrefix: string;
  /** Each HTTP attempt is abandoned after this long (the SDK has no default); default 10 s. */
  tryTimeoutMs?: number;
  /** SDK retries of transient failures (connection errors, 408, 429, 5xx); defaults suit an HTTP request. */
  retry?: { maxRetries?: number; retryDelayInMs?: number; maxRetryDelayInMs?: number };
  /** Memory for the messages of recent conversations (see ./historyCache.ts); 0 turns the cache off. */
  historyCacheBytes?: number;
  /** Where an activity move that failed after its turn was answered is reported. Default: console. */
  log?: Pick<Logger, 'warn'>;
}

export const CONVERSATIONS_TABLE = 'conversations';

type Properties = Record<string, unknown>;
/** An entity as written (keys required). */
type Entity = TableEntity<Properties>;
/** An entity as read (ETag always, keys unless a select left them out). */
type StoredEntity = TableEntityResult<Properties>;

const DEFAULT_TRY_TIMEOUT_MS = 10_000;
const DEFAULT_RETRY = { maxRetries: 3, retryDelayInMs: 200, maxRetryDelayInMs: 2_000 };
/** A page is at most 1,000 entities on the service. */
const MAX_PAGE_SIZE = 1_000;
/** How many times `delete` starts over when a turn commits while it runs. */
const DELETE_ATTEMPTS = 5;
const IDEMPOTENCY_ATTEMPTS = 3;
/** How many times a change of the caller's conversation count starts over after another change won the race. */
const COUNT_ATTEMPTS = 12;
/** How many times an activity entry's move starts over after another move (of the same conversation) won. */
const ACTIVITY_ATTEMPTS = 8;
/** Callers whose index entries all have activity entries, remembered per process (bounded: forgotten when full). */
const MAX_INDEXED_CALLERS_KEPT = 10_000;
/** Conversations whose activity pointer this process remembers (bounded: forgotten all at once when full). */
const MAX_POINTERS_KEPT = 10_000;

/**
 * A conversation's index entry (the activity pointer) as this instance saw it, with its ETag: read beside a turn's
 * load, or as its own last move left it. `createdAt` is the header's, which names the entry's row.
 */
interface KnownPointer {
  createdAt: string;
  /** Resolves to the entry, or undefined when it was missing or could not be read. */
  entry: Promise<StoredEntity | undefined>;
}

export interface CreateOptions {
  /** Refuse the create (429 conversation_limit_reached) when the caller already has this many. */
  maxConversations?: number;
}

export async function createTableConversationStore(
  options: TableConversationStoreOptions,
): Promise<TableConversationStore> {
  const store = new TableConversationStore(
    createTableClient(`${options.tablePrefix}${CONVERSATIONS_TABLE}`, options, {
      tryTimeoutMs: options.tryTimeoutMs ?? DEFAULT_TRY_TIMEOUT_MS,
      retry: { ...DEFAULT_RETRY, ...options.retry },
    }),
    new HistoryCache(options.historyCacheBytes ?? 0),
    options.log,
  );
  await store.ensureTable();
  return store;
}

export class TableConversationStore implements ConversationStore {
  constructor(
    private readonly table: TableClient,
    /** Messages of conversations this instance served lately: a turn then reads only the header and what is new. */
    readonly historyCache: HistoryCache = new HistoryCache(0),
    private readonly log: Pick<Logger, 'warn'> = console,
  ) {}

  /** Creates the table if it is missing (an existing table is fine). */
  async ensureTable(): Promise<void> {
    await this.guard(async () => {
      try {
        await this.table.createTable();
      } catch (error) {
        if (!hasStatus(error, 409)) throw error;
      }
    });
  }

  create(owner: Caller, conversation: NewConversation, options: CreateOptions = {}): Promise<Conversation> {
    return this.guard(async () => {
      if (!isValidKeyValue(conversation.id))
        throw new Error(`Conversation id ${JSON.stringify(conversation.id)} cannot be a key.`);
      const { maxConversations } = options;
      if (maxConversations !== undefined) {
        // Refused before anything is written; the check that holds under concurrency is the one in indexEntry.
        const count = (await this.readCount(owner)).count;
        if (count >= maxConversations) throw conversationLimitReached(count);
      }
      const partitionKey = conversationPartition(owner, conversation.id);
      const header: Entity = {
        partitionKey,
        rowKey: HEADER_ROW,
        createdAt: conversation.createdAt,
        updatedAt: conversation.createdAt,
        messageCount: 0,
      };
      if (conversation.title !== null) writeLongText(header, 'title', conversation.title);
      writeLongText(header, 'metadata', JSON.stringify(conversation.metadata));
      writeLongText(header, 'prologue', JSON.stringify(conversation.prologue));
      if (conversation.tools !== undefined) writeLongText(header, 'tools', JSON.stringify(conversation.tools));
      if (conversation.clientTools !== undefined) {
        writeLongText(header, 'clientTools', JSON.stringify(conversation.clientTools));
      }
      assertEntityFits(header, 'The conversation header (system message, examples and tools)');

      let version: string;
      try {
        version = requireEtag((await this.table.createEntity(header)).etag);
      } catch (error) {
        if (!hasStatus(error, 409)) throw error;
        // A retried create whose first attempt committed: it is ours when it is the same creation.
        const existing = await this.readEntity(partitionKey, HEADER_ROW);
        if (!existing || existing['createdAt'] !== conversation.createdAt) {
          throw new Error(`Conversation ${conversation.id} already exists.`, { cause: error });
        }
        version = requireEtag(existing.etag);
      }

      const activity = activityRow(conversation.createdAt, conversation.id);
      const index: Entity = {
        partitionKey: callerIndexPartition(owner),
        rowKey: callerIndexRow(conversation.createdAt, conversation.id),
        id: conversation.id,
        createdAt: conversation.createdAt,
        activity,
      };
      if (conversation.title !== null) writeLongText(index, 'title', conversation.title);
      const entry = activityEntry(index, activity, conversation.createdAt);
      try {
        await this.addIndexEntry(owner, [index, entry], maxConversations);
      } catch (error) {
        // Refused (or unreachable) after the header was written: take it back, so nothing half-made remains.
        await this.deleteTolerant({ partitionKey, rowKey: HEADER_ROW }).catch(() => {});
        throw error;
      }

      return {
        id: conversation.id,
        title: conversation.title,
        metadata: { ...conversation.metadata },
        prologue: conversation.prologue.map((message) => ({ ...message })),
        createdAt: conversation.createdAt,
        updatedAt: conversation.createdAt,
        messageCount: 0,
        version,
        totals: { ...NO_TOTALS },
        ...(conversation.tools !== undefined ? { tools: [...conversation.tools] } : {}),
        ...(conversation.clientTools !== undefined ? { clientTools: structuredClone(conversation.clientTools) } : {}),
      };
    });
  }

  get(owner: Caller, conversationId: string): Promise<Conversation | undefined> {
    return this.guard(async () => {
      if (!isValidKeyValue(conversationId)) return undefined;
      const header = await this.readEntity(conversationPartition(owner, conversationId), HEADER_ROW);
      return header ? toConversation(conversationId, header) : undefined;
    });
  }

  loadForTurn(
    owner: Caller,
    conversationId: string,
  ): Promise<{ conversation: Conversation; messages: StoredMessage[] } | undefined> {
    return this.guard(async () => {
      if (!isValidKeyValue(conversationId)) return undefined;
      const partitionKey = conversationPartition(owner, conversationId);
      const cached = this.historyCache.get(partitionKey);
      if (!cached) {
        const loaded = await this.loadWhole(partitionKey, conversationId);
        if (loaded) this.observePointer(owner, conversationId, partitionKey, loaded.conversation.createdAt);
        return loaded;
      }

      // The header always comes from storage (count, ETag); only the messages can come from memory.
      const header = await this.readEntity(partitionKey, HEADER_ROW);
      if (!header) {
        this.historyCache.delete(partitionKey);
        return undefined;
      }
      const conversation = toConversation(conversationId, header);
      this.observePointer(owner, conversationId, partitionKey, conversation.createdAt);
      const held = cached.messages.length;
      if (conversation.createdAt !== cached.createdAt || conversation.messageCount < held) {
        // Deleted and created again under the same id since it was cached.
        this.historyCache.delete(partitionKey);
        return this.loadWhole(partitionKey, conversationId);
      }
      let messages = cached.messages;
      if (conversation.messageCount > held) {
        // Turns another instance stored since: read just those. A turn committed after the header was read may
        // add more rows; they are left for the next read (this turn's commit would fail on the ETag anyway).
        const filter = odata`PartitionKey eq ${partitionKey} and RowKey ge ${messageRow(held + 1)} and RowKey lt ${messageRowsAfter(conversation.messageCount)}`;
        const rows: StoredEntity[] = [];
        for await (const entity of this.table.listEntities<Properties>({ queryOptions: { filter } })) rows.push(entity);
        const added = assembleMessages(rows);
        if (added.length !== conversation.messageCount - held) {
          this.historyCache.delete(partitionKey);
          return this.loadWhole(partitionKey, conversationId);
        }
        messages = [...messages, ...added];
        this.historyCache.set(partitionKey, conversation.createdAt, messages);
      }
      return { conversation, messages: [...messages] };
    });
  }

  /** Header and every message in one partition query (and remembered for the next turn). */
  private async loadWhole(
    partitionKey: string,
    conversationId: string,
  ): Promise<{ conversation: Conversation; messages: StoredMessage[] } | undefined> {
    // Idempotency rows ('i...') sort between the header and the messages and are skipped by the filter.
    const filter = odata`PartitionKey eq ${partitionKey} and (RowKey eq ${HEADER_ROW} or (RowKey ge ${MESSAGE_ROW_PREFIX} and RowKey lt ${MESSAGE_ROWS_END}))`;
    let header: StoredEntity | undefined;
    const rows: StoredEntity[] = [];
    // The SDK follows continuation tokens, including those of empty pages.
    for await (const entity of this.table.listEntities<Properties>({ queryOptions: { filter } })) {
      if (entity.rowKey === HEADER_ROW) header = entity;
      else rows.push(entity);
    }
    // A turn committed during a multi-page read may show up only in part: its rows are past the header's count.
    const messages = assembleMessages(rows, true);
    if (!header) return undefined;
    const conversation = toConversation(conversationId, header);
    // Read in one query, but not as of one instant: a turn committed during a multi-page read may show up in the
    // messages and not in the header. What the header counts is the history this turn commits on.
    const history = messages.slice(0, conversation.messageCount);
    this.historyCache.set(partitionKey, conversation.createdAt, history);
    return { conversation, messages: history };
  }

  listMessages(
    owner: Caller,
    conversationId: string,
    options: { afterSeq: number; limit: number },
  ): Promise<{ messages: StoredMessage[]; hasMore: boolean }> {
    return this.guard(async () => {
      if (!isValidKeyValue(conversationId) || !isValidSeq(options.afterSeq + 1) || options.limit < 1) {
        return { messages: [], hasMore: false };
      }
      const partitionKey = conversationPartition(owner, conversationId);
      const filter = odata`PartitionKey eq ${partitionKey} and RowKey ge ${messageRow(options.afterSeq + 1)} and RowKey lt ${MESSAGE_ROWS_END}`;
      // One more message than asked tells whether there is a next page; a long message spans several rows.
      const rows: StoredEntity[] = [];
      let started = 0;
      const pages = this.table
        .listEntities<Properties>({ queryOptions: { filter } })
        .byPage({ maxPageSize: Math.min(options.limit + 1, MAX_PAGE_SIZE) });
      reading: for await (const page of pages) {
        for (const entity of page) {
          if (!partFromMessageRow(entity.rowKey ?? '') && ++started > options.limit) break reading;
          rows.push(entity);
        }
      }
      return { messages: assembleMessages(rows), hasMore: started > options.limit };
    });
  }

  getMessage(owner: Caller, conversationId: string, seq: number): Promise<StoredMessage | undefined> {
    return this.guard(async () => {
      if (!isValidKeyValue(conversationId) || !isValidSeq(seq)) return undefined;
      const partitionKey = conversationPartition(owner, conversationId);
      const entity = await this.readEntity(partitionKey, messageRow(seq));
      if (!entity) return undefined;
      if (typeof entity['contentRows'] !== 'number') return toStoredMessage(entity);
      const filter = odata`PartitionKey eq ${partitionKey} and RowKey gt ${messageRow(seq)} and RowKey lt ${messageRowsAfter(seq)}`;
      const rows = [entity];
      for await (const part of this.table.listEntities<Properties>({ queryOptions: { filter } })) rows.push(part);
      return assembleMessages(rows)[0];
    });
  }

  list(owner: Caller, options: { limit: number; cursor?: string }): Promise<Page<ConversationSummary>> {
    return this.guard(async () => {
      const partitionKey = callerIndexPartition(owner);
      // This instance's own turns are in the order they were answered in, whatever storage has done by now.
      await this.movesSettled(partitionKey);
      await this.indexActivity(owner);
      let filter = odata`PartitionKey eq ${partitionKey} and RowKey ge ${ACTIVITY_ROWS_START} and RowKey lt ${ACTIVITY_ROWS_END}`;
      const secret = await this.cursorSecret();
      if (options.cursor !== undefined) {
        const after = decodeListCursor(options.cursor, secret, partitionKey);
        if (after === undefined) {
          throw new InvalidRequestError('The cursor is not one this API returned.', [
            { field: 'cursor', message: 'unknown cursor' },
          ]);
        }
        // A RowKey bound rather than the SDK's continuation token: stable however the service pages.
        filter += odata` and RowKey gt ${after}`;
      }
      const entries = await this.queryAtMost(filter, options.limit + 1);
      const page = entries.slice(0, options.limit);
      const headers = await Promise.all(
        page.map((entry) =>
          this.readEntity(conversationPartition(owner, stringProperty(entry, 'id')), HEADER_ROW, ['updatedAt']),
        ),
      );
      const items: ConversationSummary[] = [];
      const repairs: Promise<void>[] = [];
      page.forEach((entry, position) => {
        const header = headers[position];
        const id = stringProperty(entry, 'id');
        const createdAt = stringProperty(entry, 'createdAt');
        if (!header) {
          // What an interrupted delete leaves (create writes the header first): the index entries alone.
          repairs.push(
            this.removeIndexEntry(owner, callerIndexRow(createdAt, id)).then(() => this.deleteTolerant(entry)),
          );
          return;
        }
        const updatedAt = stringProperty(header, 'updatedAt');
        items.push({ id, title: readLongText(entry, 'title') ?? null, createdAt, updatedAt });
        // Behind its header: the move after a turn did not happen (the instance stopped, storage failed). This page
        // keeps the order it was read in; the next list has it in place.
        if (entry.rowKey !== activityRow(updatedAt, id)) repairs.push(this.moveActivity(owner, id, createdAt));
      });
      await Promise.all(repairs);
      const last = page.at(-1);
      return entries.length > options.limit && last?.rowKey
        ? { items, nextCursor: encodeListCursor(last.rowKey, secret, partitionKey) }
        : { items };
    });
  }

  /** How many conversations the caller has (the count kept beside the index), at most `atMost`. */
  countConversations(owner: Caller, atMost: number): Promise<number> {
    return this.guard(async () => Math.max(0, Math.min(atMost, (await this.readCount(owner)).count)));
  }

  delete(owner: Caller, conversationId: string): Promise<boolean> {
    return this.guard(async () => {
      if (!isValidKeyValue(conversationId)) return false;
      const partitionKey = conversationPartition(owner, conversationId);
      // Messages and idempotency records first, then the header, then the index entry: a crash at any point leaves
      // a state the next delete finishes (while the header exists the conversation is found and can be deleted).
      await this.movesSettled(callerIndexPartition(owner)); // this instance's own moves do not race the delete
      this.historyCache.delete(partitionKey);
      this.pointers.delete(partitionKey);
      for (let attempt = 0; attempt < DELETE_ATTEMPTS; attempt++) {
        const header = await this.readEntity(partitionKey, HEADER_ROW);
        if (!header) return false;
        const rows: string[] = [];
        const filter = odata`PartitionKey eq ${partitionKey}`;
        for await (const entity of this.table.listEntities<Properties>({
          queryOptions: { filter, select: ['RowKey'] },
        })) {
          if (entity.rowKey && entity.rowKey !== HEADER_ROW) rows.push(entity.rowKey);
        }
        let raced = false;
        for (let start = 0; start < rows.length && !raced; start += MAX_BATCH_OPERATIONS) {
          const actions: TransactionAction[] = rows
            .slice(start, start + MAX_BATCH_OPERATIONS)
            .map((rowKey) => ['delete', { partitionKey, rowKey }]);
          try {
            await this.table.submitTransaction(actions);
          } catch (error) {
            // Another delete removed some of these rows: look again.
            if (!hasStatus(error, 404)) throw error;
            raced = true;
          }
        }
        if (raced) continue;
        try {
          // Only the header as read: if a turn committed meanwhile its messages are still there, so start over.
          await this.table.deleteEntity(partitionKey, HEADER_ROW, { etag: requireEtag(header.etag) });
        } catch (error) {
          if (hasStatus(error, 412)) continue;
          if (!hasStatus(error, 404)) throw error;
        }
        await this.removeIndexEntry(owner, callerIndexRow(stringProperty(header, 'createdAt'), conversationId));
        return true;
      }
      throw new ConversationBusyError('The conversation kept changing while it was being deleted. Try again.');
    });
  }

  commitTurn(owner: Caller, commit: TurnCommit): Promise<void> {
    return this.guard(async () => {
      const last = commit.messages.at(-1);
      if (!last) throw new Error('A turn commits at least one message.');
      commit.messages.forEach((message, index) => {
        const previous = commit.messages[index - 1];
        if (previous && message.seq !== previous.seq + 1) throw new Error('Turn messages must have consecutive seqs.');
      });
      if (!isValidKeyValue(commit.conversationId)) throw new ConcurrencyConflict('The conversation does not exist.');
      const partitionKey = conversationPartition(owner, commit.conversationId);

      // Marks this commit's rows, so a retried batch can recognise its own earlier success (see below).
      const commitId = randomUUID();
      const messageEntities = commit.messages.flatMap((message) => {
        const rows = toMessageEntities(partitionKey, message, commitId);
        for (const row of rows) assertEntityFits(row, `Message ${message.seq}`);
        return rows;
      });
      // Merge, not Replace: the commit carries only what changes; the ETag makes it conditional all the same.
      const header: Entity = {
        partitionKey,
        rowKey: HEADER_ROW,
        messageCount: last.seq,
        updatedAt: commit.updatedAt,
        ...(commit.header
          ? { ...totalsProperties(commit.header.totals), windowStartSeq: commit.header.windowStartSeq }
          : {}),
      };
      // Written only when a new one was made: Merge keeps the stored summary otherwise.
      if (commit.header?.summary) writeLongText(header, 'summary', JSON.stringify(commit.header.summary));
      if (commit.clearPending) Object.assign(header, NO_PENDING);
      const actions: TransactionAction[] = [
        ...messageEntities.map((entity): TransactionAction => ['create', entity]),
        ['update', header, 'Merge', { etag: commit.expectedVersion }],
      ];
      const written: Entity[] = [...messageEntities, header];
      if (commit.clearPending) {
        // The header named a pending turn, so its row exists: both go in this transaction or neither does.
        actions.push(['delete', { partitionKey, rowKey: PENDING_ROW }]);
        written.push({ partitionKey, rowKey: PENDING_ROW });
      }
      if (commit.idempotency)
        this.completeIdempotency(partitionKey, commit.idempotency, commit.updatedAt, actions, written);
      assertBatchFits(written, 'The turn');

      // The pointer as seen BEFORE this commit (see moveActivity): read beside the load, so normally done by now.
      const pointer = await this.pointers.get(partitionKey)?.entry;
      try {
        await this.table.submitTransaction(actions);
      } catch (error) {
        // 412: the header (or the idempotency record) changed; 409: a message row exists; 404: it was deleted.
        if (!hasStatus(error, 412) && !hasStatus(error, 409) && !hasStatus(error, 404)) throw error;
        // The SDK retries a batch whose response was lost; the retry then fails although the first attempt stored
        // the turn. Our commit id on the last message tells the two apart.
        const stored = await this.readEntity(partitionKey, messageRow(last.seq), ['commitId']);
        if (stored?.['commitId'] !== commitId) throw await this.whyRefused(partitionKey, commit.idempotency);
      }
      // Stored: the ETag guard proves these follow the history the turn read.
      this.historyCache.append(partitionKey, commit.messages);
      this.moveAfterAnswer(owner, commit.conversationId, { pointer, updatedAt: commit.updatedAt });
    });
  }

  /**
   * Why a turn's transaction was refused: a claim whose lease ran out and was taken over is lost for good (re-running
   * the turn would pay again); otherwise the conversation moved on and the turn may run again.
   */
  private async whyRefused(
    partitionKey: string,
    idempotency: TurnCommit['idempotency'],
  ): Promise<ClaimLost | ConcurrencyConflict> {
    if (idempotency) {
      const record = await this.readEntity(partitionKey, idempotencyRow(idempotency.key), ['state']);
      if (record?.etag !== idempotency.claim.token) return new ClaimLost();
    }
    return new ConcurrencyConflict();
  }

  pauseTurn(owner: Caller, pause: TurnPause): Promise<void> {
    return this.guard(async () => {
      if (!isValidKeyValue(pause.conversationId)) throw new ConcurrencyConflict('The conversation does not exist.');
      const partitionKey = conversationPartition(owner, pause.conversationId);
      // A turn that pauses again keeps its id: this write's own id tells a retried batch that committed from a rival.
      const commitId = randomUUID();
      const row: Entity = { partitionKey, rowKey: PENDING_ROW, turnId: pause.pending.id, commitId };
      writeLongText(row, 'turn', JSON.stringify(pause.pending));
      assertEntityFits(row, 'The paused turn');
      const header: Entity = {
        partitionKey,
        rowKey: HEADER_ROW,
        pendingId: pause.pending.id,
        pendingExpiresAt: pause.pending.expiresAt,
        updatedAt: pause.updatedAt,
      };
      // Replace, not Merge: a longer earlier pause of this conversation must not leave parts behind.
      const actions: TransactionAction[] = [
        ['upsert', row, 'Replace'],
        ['update', header, 'Merge', { etag: pause.expectedVersion }],
      ];
      const written: Entity[] = [row, header];
      if (pause.idempotency)
        this.completeIdempotency(partitionKey, pause.idempotency, pause.updatedAt, actions, written);
      assertBatchFits(written, 'The paused turn');
      const pointer = await this.pointers.get(partitionKey)?.entry;
      try {
        await this.table.submitTransaction(actions);
      } catch (error) {
        if (!hasStatus(error, 412) && !hasStatus(error, 409) && !hasStatus(error, 404)) throw error;
        // As in commitTurn: a retried batch whose first attempt committed finds its own turn id there.
        const stored = await this.readEntity(partitionKey, HEADER_ROW, ['pendingId']);
        const current = await this.readEntity(partitionKey, PENDING_ROW, ['commitId']);
        if (stored?.['pendingId'] !== pause.pending.id || current?.['commitId'] !== commitId) {
          throw await this.whyRefused(partitionKey, pause.idempotency);
        }
      }
      this.moveAfterAnswer(owner, pause.conversationId, { pointer, updatedAt: pause.updatedAt });
    });
  }

  getPendingTurn(owner: Caller, conversationId: string): Promise<PendingTurn | undefined> {
    return this.guard(async () => {
      if (!isValidKeyValue(conversationId)) return undefined;
      const row = await this.readEntity(conversationPartition(owner, conversationId), PENDING_ROW);
      const text = row ? readLongText(row, 'turn') : undefined;
      return text === undefined ? undefined : (JSON.parse(text) as PendingTurn);
    });
  }

  cancelPendingTurn(owner: Caller, conversationId: string, expectedVersion: string): Promise<boolean> {
    return this.guard(async () => {
      if (!isValidKeyValue(conversationId)) return false;
      const partitionKey = conversationPartition(owner, conversationId);
      try {
        await this.table.submitTransaction([
          ['delete', { partitionKey, rowKey: PENDING_ROW }],
          ['update', { partitionKey, rowKey: HEADER_ROW, ...NO_PENDING }, 'Merge', { etag: expectedVersion }],
        ]);
        return true;
      } catch (error) {
        if (hasStatus(error, 412)) throw new ConcurrencyConflict();
        if (hasStatus(error, 404)) {
          // Already gone (a retried batch that did commit, or a concurrent cancel): done if the header agrees.
          const header = await this.readEntity(partitionKey, HEADER_ROW, ['pendingId']);
          if (!header) return false;
          if (header['pendingId']) throw new ConcurrencyConflict();
          return false;
        }
        throw error;
      }
    });
  }

  /** Adds the completed idempotency record to a turn's transaction. */
  private completeIdempotency(
    partitionKey: string,
    idempotency: NonNullable<TurnCommit['idempotency']>,
    completedAt: string,
    actions: TransactionAction[],
    written: Entity[],
  ): void {
    const record: Entity = {
      partitionKey,
      rowKey: idempotencyRow(idempotency.key),
      state: 'completed',
      requestHash: idempotency.requestHash,
      record: JSON.stringify(idempotency.record),
      completedAt,
    };
    actions.push(['update', record, 'Replace', { etag: idempotency.claim.token }]);
    written.push(record);
  }

  beginIdempotent(
    owner: Caller,
    conversationId: string,
    key: string,
    requestHash: string,
    options: { now: Date; leaseMs: number; takeOver?: boolean },
  ): Promise<IdempotencyBegin> {
    return this.guard(async () => {
      if (!isValidKeyValue(conversationId)) throw new Error('An idempotency key needs an existing conversation.');
      const partitionKey = conversationPartition(owner, conversationId);
      const rowKey = idempotencyRow(key);
      // Identifies our write: an SDK retry of a create/update that did commit then meets its own record.
      const claimId = randomUUID();
      const pending = (): Entity => ({
        partitionKey,
        rowKey,
        state: 'pending',
        requestHash,
        claimId,
        // Milliseconds do not fit Int32: typed as Double (exact up to 2^53) rather than left to inference.
        leaseUntil: { type: 'Double', value: options.now.getTime() + options.leaseMs },
      });
      let seenHash = requestHash;
      for (let attempt = 0; attempt < IDEMPOTENCY_ATTEMPTS; attempt++) {
        try {
          const created = await this.table.createEntity(pending());
          return { state: 'claimed', claim: { token: requireEtag(created.etag) } };
        } catch (error) {
          if (!hasStatus(error, 409)) throw error;
        }
        const existing = await this.readEntity(partitionKey, rowKey);
        if (!existing) continue; // released in between: claim it afresh
        if (existing['claimId'] === claimId) return { state: 'claimed', claim: { token: requireEtag(existing.etag) } };
        seenHash = stringProperty(existing, 'requestHash');
        if (existing['state'] === 'completed') {
          return {
            state: 'completed',
            requestHash: seenHash,
            record: JSON.parse(stringProperty(existing, 'record')) as TurnRecord,
          };
        }
        const leaseUntil = Number(existing['leaseUntil']);
        // A live lease, or an abandoned one for another body (reported as such, so the caller answers 422).
        if ((leaseUntil > options.now.getTime() && !options.takeOver) || seenHash !== requestHash) {
          return { state: 'in_progress', requestHash: seenHash };
        }
        try {
          const taken = await this.table.updateEntity(pending(), 'Replace', { etag: requireEtag(existing.etag) });
          return { state: 'claimed', claim: { token: requireEtag(taken.etag) } };
        } catch (error) {
          // Someone else took it over (or our own retried update did): look again.
          if (!hasStatus(error, 412) && !hasStatus(error, 404)) throw error;
        }
      }
      return { state: 'in_progress', requestHash: seenHash };
    });
  }

  renewIdempotent(
    owner: Caller,
    conversationId: string,
    key: string,
    claim: IdempotencyClaim,
    options: { now: Date; leaseMs: number },
  ): Promise<IdempotencyClaim> {
    return this.guard(async () => {
      const partitionKey = conversationPartition(owner, conversationId);
      const rowKey = idempotencyRow(key);
      const leaseUntil = options.now.getTime() + options.leaseMs;
      const renewId = randomUUID();
      try {
        const renewed = await this.table.updateEntity(
          { partitionKey, rowKey, renewId, leaseUntil: { type: 'Double', value: leaseUntil } },
          'Merge',
          { etag: claim.token },
        );
        return { token: requireEtag(renewed.etag) };
      } catch (error) {
        if (!hasStatus(error, 412) && !hasStatus(error, 404)) throw error;
        // An SDK retry of an update that did commit meets its own lease: still ours.
        const current = await this.readEntity(partitionKey, rowKey, ['state', 'renewId']);
        if (current?.['state'] === 'pending' && current['renewId'] === renewId) {
          return { token: requireEtag(current.etag) };
        }
        throw new ClaimLost();
      }
    });
  }

  releaseIdempotent(owner: Caller, conversationId: string, key: string, claim: IdempotencyClaim): Promise<void> {
    return this.guard(async () => {
      if (!isValidKeyValue(conversationId)) return;
      try {
        // Only while we still hold it: the ETag is the claim.
        await this.table.deleteEntity(conversationPartition(owner, conversationId), idempotencyRow(key), {
          etag: claim.token,
        });
      } catch (error) {
        if (!hasStatus(error, 404) && !hasStatus(error, 412)) throw error;
      }
    });
  }

  ping(): Promise<void> {
    return this.guard(async () => {
      // A one-row query on a partition that never exists: cheap, and it needs the service to answer.
      const pages = this.table
        .listEntities({ queryOptions: { filter: odata`PartitionKey eq ${'ping'}`, select: ['RowKey'] } })
        .byPage({ maxPageSize: 1 });
      await pages.next();
    });
  }

  // ---- helpers --------------------------------------------------------------------------------------------------

  /**
   * The caller's conversation count and its ETag. A caller from before the count existed has none yet: their index
   * entries are counted once, and the first entry added or removed stores the count.
   */
  private async readCount(owner: Caller): Promise<{ count: number; etag?: string }> {
    const partitionKey = callerIndexPartition(owner);
    const stored = await this.readEntity(partitionKey, CONVERSATION_COUNT_ROW);
    if (stored) return { count: numberProperty(stored, 'count'), etag: requireEtag(stored.etag) };
    const filter = odata`PartitionKey eq ${partitionKey} and RowKey lt ${INDEX_ROWS_END}`;
    let count = 0;
    for await (const entity of this.table.listEntities({ queryOptions: { filter, select: ['RowKey'] } })) {
      if (entity.rowKey) count++;
    }
    return { count };
  }

  /** The count row written with `count`, conditional on the one read (or created, when there was none). */
  private countAction(owner: Caller, current: { count: number; etag?: string }, count: number): TransactionAction {
    const entity: Entity = { partitionKey: callerIndexPartition(owner), rowKey: CONVERSATION_COUNT_ROW, count };
    return current.etag ? ['update', entity, 'Replace', { etag: current.etag }] : ['create', entity];
  }

  /**
   * Adds the caller's index entry and its activity entry and raises their count in ONE transaction, conditional on the
   * count read: two creates that read the same count cannot both commit, so the cap holds exactly however many run
   * at once.
   */
  private async addIndexEntry(owner: Caller, entries: Entity[], maxConversations: number | undefined): Promise<void> {
    const [index] = entries;
    if (!index) return;
    const creates = entries.map((entity): TransactionAction => ['create', entity]);
    for (let attempt = 1; attempt <= COUNT_ATTEMPTS; attempt++) {
      const current = isCounted(owner) ? await this.readCount(owner) : undefined;
      if (current && maxConversations !== undefined && current.count >= maxConversations) {
        throw conversationLimitReached(current.count);
      }
      try {
        await this.table.submitTransaction(
          current ? [...creates, this.countAction(owner, current, current.count + 1)] : creates,
        );
        return;
      } catch (error) {
        if (!hasStatus(error, 409) && !hasStatus(error, 412)) throw error;
        // The entry exists: an earlier attempt of this same create committed (the SDK retried a lost response).
        if (await this.readEntity(index.partitionKey, index.rowKey, ['RowKey'])) return;
        await sleep(Math.random() * 20 * 2 ** attempt);
      }
    }
    throw new ConversationBusyError('Too many conversations were being created at once. Try again.');
  }

  /**
   * Removes an index entry with the activity entry it names and lowers the count, in one transaction; an entry
   * already gone was counted down then. A move of the activity entry meanwhile deletes the entry named here, so this
   * transaction fails (404) and starts over; a move after it finds no index entry and stops (a move that read the
   * header before a delete removed it can still leave an activity entry without a header: the list removes those).
   */
  private async removeIndexEntry(owner: Caller, rowKey: string): Promise<void> {
    if (!rowKey) return;
    const partitionKey = callerIndexPartition(owner);
    let checkActivity = false;
    for (let attempt = 1; attempt <= COUNT_ATTEMPTS; attempt++) {
      const index = await this.readEntity(partitionKey, rowKey, ['RowKey', 'activity']);
      if (!index) return;
      let activity = nonEmptyString(index['activity']);
      // After a 404: an activity entry named but missing must not block the removal forever.
      if (activity && checkActivity && !(await this.readEntity(partitionKey, activity, ['RowKey']))) {
        activity = undefined;
      }
      const actions: TransactionAction[] = [['delete', { partitionKey, rowKey }]];
      if (activity) actions.push(['delete', { partitionKey, rowKey: activity }]);
      if (isCounted(owner)) {
        const current = await this.readCount(owner);
        actions.push(this.countAction(owner, current, Math.max(0, current.count - 1)));
      }
      try {
        await this.table.submitTransaction(actions);
        return;
      } catch (error) {
        if (!hasStatus(error, 404) && !hasStatus(error, 409) && !hasStatus(error, 412)) throw error;
        checkActivity = hasStatus(error, 404);
        await sleep(Math.random() * 20 * 2 ** attempt);
      }
    }
    throw new ConversationBusyError('The conversation list kept changing while it was being updated. Try again.');
  }

  /** Activity moves still running after their turns were answered, by the caller's index partition. */
  private readonly movesInFlight = new Map<string, Set<Promise<void>>>();

  /**
   * Starts the activity move of a stored (or paused) turn without waiting for it: the turn is stored, and the answer
   * does not wait for the list order (one more round trip on every turn's path). A list on this instance waits for
   * the caller's moves (movesSettled); another instance's list may meet the entry behind its header for as long as
   * the move takes, and then shows the page as read and moves the entry itself. The host's appTerminate hook waits
   * for moves still running (./backgroundWork.ts).
   */
  private moveAfterAnswer(
    owner: Caller,
    conversationId: string,
    stored: { pointer: StoredEntity | undefined; updatedAt: string },
  ): void {
    const key = callerIndexPartition(owner);
    const move = this.afterActivity(owner, conversationId, stored).catch((error: unknown) => {
      // Nothing is lost: the entry stays behind its header until a list moves it.
      this.log.warn(
        `The list order of conversation ${conversationId} was not updated after its turn: ${error instanceof Error ? error.message : String(error)}`,
      );
    });
    const moves = this.movesInFlight.get(key) ?? new Set();
    this.movesInFlight.set(key, moves.add(move));
    void move.finally(() => {
      moves.delete(move);
      if (moves.size === 0 && this.movesInFlight.get(key) === moves) this.movesInFlight.delete(key);
    });
    runInBackground(move); // what the host's appTerminate hook waits for
  }

  /** Resolves once the activity moves this instance started for the caller's turns have ended. */
  private async movesSettled(callerPartition: string): Promise<void> {
    const moves = this.movesInFlight.get(callerPartition);
    if (moves) await Promise.all(moves);
  }

  /**
   * After a turn stored (or paused) a conversation: its activity entry follows. The turn is stored either way, so
   * storage failing here fails nothing; a list that meets the entry behind moves it.
   */
  private async afterActivity(
    owner: Caller,
    conversationId: string,
    stored: { pointer: StoredEntity | undefined; updatedAt: string },
  ): Promise<void> {
    try {
      if (await this.moveFromPointer(owner, conversationId, stored.pointer, stored.updatedAt)) return;
      // Not known (missing, unreadable, or changed): read it again beside the next load, unless this move learns it.
      this.pointers.delete(conversationPartition(owner, conversationId));
      await this.moveActivity(owner, conversationId);
    } catch (error) {
      if (!isUnavailable(error)) throw error;
    }
  }

  /**
   * The move in one round trip: the entry to the time this instance's own commit just wrote, conditional on the
   * pointer as seen BEFORE that commit. That is the order moveActivity's reads keep (pointer, then header): a later
   * turn's commit comes after ours, and its move changes the pointer, so if it moved first this transaction fails
   * and moveActivity reads again; if this one goes first, the later move fails on the pointer and reads our entry
   * and its newer header. False when it did not move (no pointer known, or the pointer changed): then moveActivity.
   */
  private async moveFromPointer(
    owner: Caller,
    conversationId: string,
    pointer: StoredEntity | undefined,
    updatedAt: string,
  ): Promise<boolean> {
    if (!pointer?.rowKey || !pointer.etag) return false;
    const conversationKey = conversationPartition(owner, conversationId);
    const target = activityRow(updatedAt, conversationId);
    const current = nonEmptyString(pointer['activity']);
    if (current === target) return true;
    try {
      await this.submitMove(conversationKey, pointer, target, updatedAt);
      return true;
    } catch (error) {
      if (!hasStatus(error, 404) && !hasStatus(error, 409) && !hasStatus(error, 412)) throw error;
      this.pointers.delete(conversationKey);
      return false;
    }
  }

  /**
   * The move's transaction (new entry, old one deleted, pointer to the new one, conditional on the pointer's ETag);
   * on success the pointer is remembered as it now stands, for this conversation's next turn here.
   */
  private async submitMove(
    conversationKey: string,
    index: StoredEntity,
    target: string,
    activeAt: string,
  ): Promise<void> {
    const partitionKey = String(index.partitionKey);
    const rowKey = String(index.rowKey);
    const current = nonEmptyString(index['activity']);
    const actions: TransactionAction[] = [['create', activityEntry(index, target, activeAt)]];
    if (current) actions.push(['delete', { partitionKey, rowKey: current }]);
    actions.push(['update', { partitionKey, rowKey, activity: target }, 'Merge', { etag: requireEtag(index.etag) }]);
    const response = await this.table.submitTransaction(actions);
    // Sub-responses come in the order of the actions, and only creates name their row: the pointer's is the last.
    // Were it another's ETag, the next move would only fail on it and read the pointer again.
    const etag = response.subResponses.at(-1)?.etag;
    const createdAt = nonEmptyString(index['createdAt']);
    if (etag && createdAt) {
      this.rememberPointer(conversationKey, createdAt, Promise.resolve({ ...index, activity: target, etag }));
    } else {
      this.pointers.delete(conversationKey);
    }
  }

  /**
   * Moves the conversation's activity entry to its header's `updatedAt`: the new entry, the old one deleted and the
   * pointer to it (the index entry's `activity`) in one transaction of the index partition, conditional on the
   * pointer as read. The pointer is read before the header: a turn stored after the header was read moves the entry
   * after this read of the pointer, so this transaction fails (412) instead of moving the entry back; the next
   * attempt reads the newer header. So however moves interleave, the entry ends at the header's last `updatedAt`.
   */
  private async moveActivity(owner: Caller, conversationId: string, knownCreatedAt?: string): Promise<void> {
    const conversationKey = conversationPartition(owner, conversationId);
    const partitionKey = callerIndexPartition(owner);
    let createdAt = knownCreatedAt;
    if (createdAt === undefined) {
      const header = await this.readEntity(conversationKey, HEADER_ROW, ['createdAt']);
      if (!header) return;
      createdAt = stringProperty(header, 'createdAt');
    }
    for (let attempt = 1; attempt <= ACTIVITY_ATTEMPTS; attempt++) {
      const index = await this.readEntity(partitionKey, callerIndexRow(createdAt, conversationId));
      if (!index?.rowKey) return; // being deleted
      const header = await this.readEntity(conversationKey, HEADER_ROW, ['updatedAt']);
      if (!header) return;
      const updatedAt = stringProperty(header, 'updatedAt');
      const target = activityRow(updatedAt, conversationId);
      if (nonEmptyString(index['activity']) === target) {
        this.rememberPointer(conversationKey, createdAt, Promise.resolve(index));
        return;
      }
      try {
        await this.submitMove(conversationKey, index, target, updatedAt);
        return;
      } catch (error) {
        // 412: another move won; 409: its entry is there already; 404: the old entry went with a removal.
        if (!hasStatus(error, 404) && !hasStatus(error, 409) && !hasStatus(error, 412)) throw error;
        this.pointers.delete(conversationKey);
        await sleep(Math.random() * 10 * 2 ** attempt);
      }
    }
    // Other moves keep winning: each of them ends at a header at least as new as the one this one read.
  }

  /** Conversation partition -> its activity pointer as last seen here (see KnownPointer). */
  private readonly pointers = new Map<string, KnownPointer>();

  /**
   * Starts reading the conversation's activity pointer beside a turn's load, unless this instance knows it already
   * (its own last move left it). Not awaited here: the commit awaits it, long after the model call started.
   */
  private observePointer(owner: Caller, conversationId: string, conversationKey: string, createdAt: string): void {
    if (this.pointers.get(conversationKey)?.createdAt === createdAt) return;
    const read = this.readEntity(callerIndexPartition(owner), callerIndexRow(createdAt, conversationId)).catch(
      () => undefined,
    );
    this.rememberPointer(conversationKey, createdAt, read);
  }

  private rememberPointer(conversationKey: string, createdAt: string, entry: Promise<StoredEntity | undefined>): void {
    if (this.pointers.size >= MAX_POINTERS_KEPT && !this.pointers.has(conversationKey)) this.pointers.clear();
    this.pointers.set(conversationKey, { createdAt, entry });
  }

  private indexedCallers = new Set<string>();

  /**
   * Gives every index entry of the caller an activity entry, once: conversations created before activity entries
   * existed have none. Marked done in the partition (ACTIVITY_INDEXED_ROW) and remembered by this process. Creates
   * and moves running meanwhile write their own entries, and a move is conditional on the pointer, so two instances
   * doing this at once do it once.
   */
  private async indexActivity(owner: Caller): Promise<void> {
    const partitionKey = callerIndexPartition(owner);
    if (this.indexedCallers.has(partitionKey)) return;
    if (!(await this.readEntity(partitionKey, ACTIVITY_INDEXED_ROW, ['RowKey']))) {
      const filter = odata`PartitionKey eq ${partitionKey} and RowKey lt ${INDEX_ROWS_END}`;
      const entries: StoredEntity[] = [];
      for await (const entity of this.table.listEntities<Properties>({
        queryOptions: { filter, select: ['RowKey', 'id', 'createdAt', 'activity'] },
      })) {
        if (!nonEmptyString(entity['activity'])) entries.push(entity);
      }
      for (const entry of entries) {
        const id = stringProperty(entry, 'id');
        if (await this.readEntity(conversationPartition(owner, id), HEADER_ROW, ['RowKey'])) {
          await this.moveActivity(owner, id, stringProperty(entry, 'createdAt'));
        } else {
          await this.removeIndexEntry(owner, entry.rowKey ?? '');
        }
      }
      await this.createTolerant({ partitionKey, rowKey: ACTIVITY_INDEXED_ROW, at: new Date().toISOString() });
    }
    if (this.indexedCallers.size >= MAX_INDEXED_CALLERS_KEPT) this.indexedCallers.clear();
    this.indexedCallers.add(partitionKey);
  }

  private cursorSecretRead?: Promise<Buffer>;

  /**
   * The key that signs list cursors: 32 random bytes kept in the table itself, so every instance signs and checks
   * alike without another setting. Made by whichever instance lists first; read once per process.
   */
  private cursorSecret(): Promise<Buffer> {
    this.cursorSecretRead ??= (async () => {
      const read = async () => {
        const entity = await this.readEntity(CURSOR_KEY_PARTITION, CURSOR_KEY_ROW);
        const value = entity?.['secret'];
        return value instanceof Uint8Array ? Buffer.from(value) : undefined;
      };
      const existing = await read();
      if (existing) return existing;
      await this.createTolerant({
        partitionKey: CURSOR_KEY_PARTITION,
        rowKey: CURSOR_KEY_ROW,
        secret: randomBytes(32),
      });
      const made = await read(); // ours, or the one another instance made first
      if (!made) throw new Error('The list cursor key could not be stored.');
      return made;
    })().catch((error: unknown) => {
      this.cursorSecretRead = undefined; // try again on the next list
      throw error;
    });
    return this.cursorSecretRead;
  }

  /** Runs one store operation, turning "storage did not answer" into StorageUnavailableError (once, here). */
  private async guard<T>(operation: () => Promise<T>): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      if (error instanceof StorageUnavailableError || !isUnavailable(error)) throw error;
      throw new StorageUnavailableError(undefined, error);
    }
  }

  private async readEntity(partitionKey: string, rowKey: string, select?: string[]): Promise<StoredEntity | undefined> {
    try {
      return await this.table.getEntity<Properties>(partitionKey, rowKey, select ? { queryOptions: { select } } : {});
    } catch (error) {
      if (hasStatus(error, 404)) return undefined;
      throw error;
    }
  }

  /** Up to `count` entities of a query, in RowKey order, however the service pages them. */
  private async queryAtMost(filter: string, count: number, select?: string[]): Promise<StoredEntity[]> {
    const results: StoredEntity[] = [];
    const pages = this.table
      .listEntities<Properties>({ queryOptions: { filter, ...(select ? { select } : {}) } })
      .byPage({ maxPageSize: Math.min(count, MAX_PAGE_SIZE) });
    for await (const page of pages) {
      for (const entity of page) {
        results.push(entity);
        if (results.length >= count) return results;
      }
    }
    return results;
  }

  /** Insert that treats "already exists" as done: for writes whose key fully determines their content. */
  private async createTolerant(entity: Entity): Promise<void> {
    try {
      await this.table.createEntity(entity);
    } catch (error) {
      if (!hasStatus(error, 409)) throw error;
    }
  }

  private async deleteTolerant(entity: { partitionKey?: string; rowKey?: string }): Promise<void> {
    if (!entity.partitionKey || !entity.rowKey) return;
    try {
      await this.table.deleteEntity(entity.partitionKey, entity.rowKey);
    } catch (error) {
      if (!hasStatus(error, 404)) throw error;
    }
  }
}

// ---- entity <-> model ------------------------------------------------------------------------------------------

/** Merged into the header when no turn is pending (a Merge cannot remove a property: it is emptied). */
const NO_PENDING = { pendingId: '', pendingExpiresAt: '' };

function toConversation(conversationId: string, header: StoredEntity): Conversation {
  const windowStartSeq = optionalNumber(header, 'windowStartSeq');
  const summary = readLongText(header, 'summary');
  const tools = readLongText(header, 'tools');
  const clientTools = readLongText(header, 'clientTools');
  const pendingId = header['pendingId'];
  const pendingExpiresAt = header['pendingExpiresAt'];
  return {
    id: conversationId,
    title: readLongText(header, 'title') ?? null,
    metadata: JSON.parse(readLongText(header, 'metadata') ?? '{}') as Record<string, string>,
    prologue: JSON.parse(readLongText(header, 'prologue') ?? '[]') as PrologueMessage[],
    createdAt: stringProperty(header, 'createdAt'),
    updatedAt: stringProperty(header, 'updatedAt'),
    messageCount: numberProperty(header, 'messageCount'),
    version: requireEtag(header.etag),
    // Headers written before these existed have none of them.
    totals: {
      promptTokens: optionalNumber(header, 'promptTokensTotal') ?? 0,
      cachedPromptTokens: optionalNumber(header, 'cachedPromptTokensTotal') ?? 0,
      completionTokens: optionalNumber(header, 'completionTokensTotal') ?? 0,
    },
    ...(windowStartSeq !== undefined ? { windowStartSeq } : {}),
    ...(summary !== undefined ? { summary: JSON.parse(summary) as HistorySummary } : {}),
    ...(tools !== undefined ? { tools: JSON.parse(tools) as string[] } : {}),
    ...(clientTools !== undefined ? { clientTools: JSON.parse(clientTools) as ToolDefinition[] } : {}),
    ...(typeof pendingId === 'string' && pendingId !== '' && typeof pendingExpiresAt === 'string'
      ? { pending: { id: pendingId, expiresAt: pendingExpiresAt } }
      : {}),
  };
}

/** Totals only grow; typed as Double so they never outgrow Int32. */
function totalsProperties(totals: Conversation['totals']): Properties {
  return {
    promptTokensTotal: { type: 'Double', value: totals.promptTokens },
    cachedPromptTokensTotal: { type: 'Double', value: totals.cachedPromptTokens },
    completionTokensTotal: { type: 'Double', value: totals.completionTokens },
  };
}

function optionalNumber(entity: Properties, name: string): number | undefined {
  const value = entity[name];
  return typeof value === 'number' ? value : undefined;
}

/**
 * A message as rows: the first holds everything and as much of the content as fits one entity (1 MiB counted as
 * UTF-16, 252 properties, 32,768 units per string); a longer content goes on in rows `m<seq>.01`, `.02`, ... (each
 * packed the same way), all written in the turn's one transaction. The first row says how many follow.
 */
function toMessageEntities(partitionKey: string, message: StoredMessage, commitId: string): Entity[] {
  const first: Entity = {
    partitionKey,
    rowKey: messageRow(message.seq),
    commitId,
    role: message.role,
    createdAt: message.createdAt,
    tokens: message.tokens,
    encoding: message.encoding,
  };
  if (message.name !== undefined) writeLongText(first, 'name', message.name);
  // Arguments the model wrote can be long: split across properties like the text.
  if (message.toolCalls !== undefined) writeLongText(first, 'toolCalls', JSON.stringify(message.toolCalls));
  if (message.toolCallId !== undefined) writeLongText(first, 'toolCallId', message.toolCallId);
  if (message.finishReason !== undefined) first['finishReason'] = message.finishReason;
  if (message.usage !== undefined) {
    first['promptTokens'] = message.usage.promptTokens;
    first['cachedPromptTokens'] = message.usage.cachedPromptTokens;
    first['completionTokens'] = message.usage.completionTokens;
  }
  // Room for the count of rows that follow, so adding it cannot push the first row over.
  first['contentRows'] = 0;
  const rows = [first];
  const chunks = splitText(message.content);
  let row = first;
  let part = 0;
  for (const chunk of chunks) {
    const name = partName('content', part);
    const added = 8 + 2 * name.length + 4 + 2 * chunk.length;
    if (
      part > 0 &&
      (entitySizeBytes(row) + added > MAX_ENTITY_BYTES || userPropertyCount(row) >= MAX_ENTITY_PROPERTIES)
    ) {
      row = { partitionKey, rowKey: messagePartRow(message.seq, rows.length) };
      rows.push(row);
      part = 0;
    }
    row[partName('content', part)] = chunk;
    part++;
  }
  if (rows.length > 1) first['contentRows'] = rows.length - 1;
  else delete first['contentRows'];
  return rows;
}

/**
 * Messages from their rows in RowKey order (a first row, then its continuation rows). A message whose rows are not
 * all there (a range that ended inside it) is left out when `partialLast` allows, else it is an error.
 */
function assembleMessages(entities: readonly StoredEntity[], partialLast = false): StoredMessage[] {
  const messages: { message: StoredMessage; rows: number; expected: number }[] = [];
  for (const entity of entities) {
    const continuation = partFromMessageRow(entity.rowKey ?? '');
    if (continuation) {
      const last = messages.at(-1);
      if (!last || last.message.seq !== continuation.seq || last.rows !== continuation.part)
        throw new Error(`Row ${String(entity.rowKey)} continues no message read before it.`);
      last.message.content += readLongText(entity, 'content') ?? '';
      last.rows++;
      continue;
    }
    const expected = entity['contentRows'];
    messages.push({
      message: toStoredMessage(entity),
      rows: 1,
      expected: typeof expected === 'number' ? expected + 1 : 1,
    });
  }
  const last = messages.at(-1);
  if (last && last.rows !== last.expected) {
    if (!partialLast) throw new Error(`Message ${last.message.seq} is missing some of its rows.`);
    messages.pop();
  }
  for (const entry of messages) {
    if (entry.rows !== entry.expected) throw new Error(`Message ${entry.message.seq} is missing some of its rows.`);
  }
  return messages.map((entry) => entry.message);
}

function toStoredMessage(entity: StoredEntity): StoredMessage {
  const seq = seqFromMessageRow(entity.rowKey ?? '');
  if (seq === undefined) throw new Error(`Row ${String(entity.rowKey)} is not a message.`);
  const role = stringProperty(entity, 'role');
  if (role !== 'user' && role !== 'assistant' && role !== 'tool') {
    throw new Error(`Message ${seq} has the unexpected role ${role}.`);
  }
  const name = readLongText(entity, 'name');
  const finishReason = entity['finishReason'];
  const promptTokens = optionalNumber(entity, 'promptTokens');
  const completionTokens = optionalNumber(entity, 'completionTokens') ?? 0;
  const usage: Usage | undefined =
    promptTokens === undefined
      ? undefined
      : {
          promptTokens,
          completionTokens,
          totalTokens: promptTokens + completionTokens,
          cachedPromptTokens: optionalNumber(entity, 'cachedPromptTokens') ?? 0,
        };
  const toolCalls = readLongText(entity, 'toolCalls');
  const toolCallId = readLongText(entity, 'toolCallId');
  return {
    seq,
    id: messageIdForSeq(seq),
    role,
    content: readLongText(entity, 'content') ?? '',
    ...(name !== undefined ? { name } : {}),
    ...(toolCalls !== undefined ? { toolCalls: JSON.parse(toolCalls) as ToolCall[] } : {}),
    ...(toolCallId !== undefined ? { toolCallId } : {}),
    createdAt: stringProperty(entity, 'createdAt'),
    tokens: numberProperty(entity, 'tokens'),
    encoding: stringProperty(entity, 'encoding') as EncodingName,
    ...(typeof finishReason === 'string' ? { finishReason: finishReason as FinishReason } : {}),
    ...(usage ? { usage } : {}),
  };
}

function stringProperty(entity: Properties & { rowKey?: string }, name: string): string {
  const value = entity[name];
  if (typeof value !== 'string') throw new Error(`Stored entity ${String(entity.rowKey)} has no string ${name}.`);
  return value;
}

function numberProperty(entity: Properties & { rowKey?: string }, name: string): number {
  const value = entity[name];
  if (typeof value !== 'number') throw new Error(`Stored entity ${String(entity.rowKey)} has no number ${name}.`);
  return value;
}

function requireEtag(etag: string | undefined): string {
  if (!etag) throw new Error('Table Storage returned no ETag.');
  return etag;
}

// ---- errors ----------------------------------------------------------------------------------------------------

/**
 * Integrations (webhook principals) open a conversation per thread of theirs and are never capped: their creates
 * skip the count, so a burst of new threads does not queue on one row.
 */
/** The activity entry of an index entry: what the list shows, kept beside the order it is listed in. */
function activityEntry(index: Properties, rowKey: string, activeAt: string): Entity {
  const entry: Entity = {
    partitionKey: String(index['partitionKey']),
    rowKey,
    id: index['id'],
    createdAt: index['createdAt'],
    activeAt,
  };
  const title = readLongText(index, 'title');
  if (title !== undefined) writeLongText(entry, 'title', title);
  return entry;
}

function nonEmptyString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function isCounted(owner: Caller): boolean {
  return owner.kind !== 'integration';
}

function conversationLimitReached(count: number): RateLimitedError {
  return new RateLimitedError(
    `You already have ${count} conversations, the most one caller may keep. Delete some and try again.`,
    60,
    'conversation_limit_reached',
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function hasStatus(error: unknown, status: number): boolean {
  return isRestError(error) && error.statusCode === status;
}

/**
 * A RestError of any copy of the Azure core packages: in the bundle, @azure/storage-queue and @azure/identity come
 * from lazy/ files with copies of their own (scripts/bundle.ts), whose RestError is another class than this one.
 */
export function isRestError(error: unknown): error is RestError {
  return error instanceof RestError || (error instanceof Error && error.name === 'RestError');
}

const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'REQUEST_SEND_ERROR',
  // TLS failures: storage cannot be reached securely.
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** Errors that mean storage did not answer (as opposed to answering "no"): worth a 503 and a retry later. */
/** Runs a storage call, turning an outage (see isUnavailable) into StorageUnavailableError; other errors pass. */
export async function guardStorage<T>(operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    if (error instanceof StorageUnavailableError || !isUnavailable(error)) throw error;
    throw new StorageUnavailableError(undefined, error);
  }
}

export function isUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  // A timed-out attempt (our tryTimeout) and token failures of the credential also leave storage unreachable.
  if (['AbortError', 'CredentialUnavailableError', 'AuthenticationError'].includes(error.name)) return true;
  if (isRestError(error)) {
    if (error.statusCode === undefined) return error.code !== undefined && UNREACHABLE_CODES.has(error.code);
    // 401/403: storage refuses the app's identity (a role assignment missing or still propagating, minutes after a
    // deploy). The client can do nothing about it but retry later: 503 with Retry-After, the cause in the log.
    return (
      error.statusCode === 401 ||
      error.statusCode === 403 ||
      error.statusCode === 408 ||
      error.statusCode === 429 ||
      error.statusCode >= 500
    );
  }
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && UNREACHABLE_CODES.has(code);
}

/**
 * Direct Table Storage access for the benchmarks, in the store's own format (src/adapters/tableConversationStore.ts,
 * keys in src/adapters/tableKeys.ts): seeding conversations of a given history quickly (batched inserts, 100 per
 * entity-group transaction) with the caller's index entry and activity entry that a create through the API writes
 * (so a turn pays for moving its activity entry as it does in production), deleting them, and the storage floor of a turn: one query of the partition plus one
 * entity-group transaction of the user message, the reply and the header update, with TableClient and nothing else.
 */
import { randomUUID } from 'node:crypto';
import {
  TableClient,
  odata,
  type TableEntity,
  type TableEntityResult,
  type TransactionAction,
} from '@azure/data-tables';
import { writeLongText } from '../src/adapters/splitText';
import {
  activityRow,
  callerIndexPartition,
  callerIndexRow,
  conversationPartition,
  HEADER_ROW,
  messageRow,
} from '../src/adapters/tableKeys';
import type { Caller, EncodingName } from '../src/core/ports';
import type { HistoryMessage } from './history';

type Properties = Record<string, unknown>;
type Entity = TableEntity<Properties>;

const MAX_BATCH = 100;

/** A conversation ready to be written under any id: header properties (as the API created them) and messages. */
export interface ConversationTemplate {
  header: Properties;
  messages: readonly HistoryMessage[];
  encoding: EncodingName;
}

/** The two messages a turn stores, with their counts (made once, outside any timing). */
export interface TurnMessages {
  user: HistoryMessage;
  reply: HistoryMessage;
}

export class ConversationTables {
  readonly table: TableClient;

  constructor(
    connectionString: string,
    tableName: string,
    private readonly caller: Caller,
  ) {
    this.table = TableClient.fromConnectionString(connectionString, tableName, { allowInsecureConnection: true });
  }

  partition(conversationId: string): string {
    return conversationPartition(this.caller, conversationId);
  }

  /** The header the API wrote for `conversationId`, without keys and service fields: reused for every copy. */
  async readHeader(conversationId: string): Promise<Properties> {
    const entity = await this.table.getEntity<Properties>(this.partition(conversationId), HEADER_ROW);
    const header: Properties = {};
    for (const [name, value] of Object.entries(entity)) {
      if (['partitionKey', 'rowKey', 'etag', 'timestamp'].includes(name) || name.startsWith('odata')) continue;
      header[name] = value;
    }
    return header;
  }

  /** Writes the template as conversation `conversationId` (header first, then the messages, 100 per batch). */
  async write(conversationId: string, template: ConversationTemplate): Promise<void> {
    const partitionKey = this.partition(conversationId);
    const createdAt = new Date().toISOString();
    const entities: Entity[] = [
      { ...template.header, partitionKey, rowKey: HEADER_ROW, messageCount: template.messages.length },
      ...template.messages.map((message, index) =>
        messageEntity(partitionKey, index + 1, message, template.encoding, 'seed', createdAt),
      ),
    ];
    for (let start = 0; start < entities.length; start += MAX_BATCH) {
      await this.table.submitTransaction(
        entities.slice(start, start + MAX_BATCH).map((entity): TransactionAction => ['create', entity]),
      );
    }
    // The index entry and its activity entry, as create writes them (at the header's creation time).
    const created = String(template.header['createdAt']);
    const index: Entity = {
      partitionKey: callerIndexPartition(this.caller),
      rowKey: callerIndexRow(created, conversationId),
      id: conversationId,
      createdAt: created,
      activity: activityRow(created, conversationId),
    };
    const activity: Entity = {
      partitionKey: index.partitionKey,
      rowKey: String(index['activity']),
      id: conversationId,
      createdAt: created,
      activeAt: created,
    };
    const title = template.header['title'];
    if (typeof title === 'string') {
      index['title'] = title;
      activity['title'] = title;
    }
    await this.table.submitTransaction([
      ['create', index],
      ['create', activity],
    ]);
  }

  /** Deletes every entity of the conversation's partition, and its index entry with the activity entry it names. */
  async remove(conversationId: string): Promise<void> {
    const partitionKey = this.partition(conversationId);
    const rows: string[] = [];
    let createdAt: unknown;
    const filter = odata`PartitionKey eq ${partitionKey}`;
    for await (const entity of this.table.listEntities({ queryOptions: { filter, select: ['RowKey', 'createdAt'] } })) {
      if (entity.rowKey) rows.push(entity.rowKey);
      if (entity.rowKey === HEADER_ROW) createdAt = entity['createdAt'];
    }
    if (typeof createdAt === 'string') {
      const indexPartition = callerIndexPartition(this.caller);
      const indexRow = callerIndexRow(createdAt, conversationId);
      // The app moves the activity entry after it answers a turn, so a move can still be running: delete the index entry and
      // the activity entry it names, and read it again when a move got there first (404).
      for (let attempt = 0; attempt < 8; attempt++) {
        const index = await this.table.getEntity<Properties>(indexPartition, indexRow).catch(() => undefined);
        if (!index) break;
        try {
          await this.table.submitTransaction([
            ['delete', { partitionKey: indexPartition, rowKey: indexRow }],
            ['delete', { partitionKey: indexPartition, rowKey: String(index['activity']) }],
          ]);
          break;
        } catch (error) {
          const status = (error as { statusCode?: number }).statusCode;
          if (status !== 404) throw error;
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
      }
    }
    for (let start = 0; start < rows.length; start += MAX_BATCH) {
      await this.table.submitTransaction(
        rows.slice(start, start + MAX_BATCH).map((rowKey): TransactionAction => ['delete', { partitionKey, rowKey }]),
      );
    }
  }

  /**
   * The storage floor of one turn on `conversationId`: read the whole partition (header and history), then commit
   * the user message, the reply and the header (merge guarded by the ETag just read) in one transaction: the same
   * round trips and the same entities as the app's turn, with no app in between. Returns the entities read.
   */
  async floorTurn(conversationId: string, turn: TurnMessages, encoding: EncodingName): Promise<number> {
    const read = await this.readPartition(conversationId);
    await this.commitTurn(conversationId, read, turn, encoding);
    return read.entities.length;
  }

  /** The floor's read: every entity of the conversation's partition (one query), and the header's ETag and count. */
  async readPartition(conversationId: string): Promise<PartitionRead> {
    const partitionKey = this.partition(conversationId);
    let etag: string | undefined;
    let messageCount = 0;
    const entities: TableEntityResult<Properties>[] = [];
    const filter = odata`PartitionKey eq ${partitionKey}`;
    for await (const entity of this.table.listEntities<Properties>({ queryOptions: { filter } })) {
      entities.push(entity);
      if (entity.rowKey === HEADER_ROW) {
        etag = entity.etag;
        messageCount = Number(entity['messageCount']);
      }
    }
    if (etag === undefined) throw new Error(`Conversation ${conversationId} has no header.`);
    return { etag, messageCount, entities };
  }

  /** The floor's write: the user message, the reply and the header merge (on the ETag read), one transaction. */
  async commitTurn(
    conversationId: string,
    read: Pick<PartitionRead, 'etag' | 'messageCount'>,
    turn: TurnMessages,
    encoding: EncodingName,
  ): Promise<void> {
    const partitionKey = this.partition(conversationId);
    const { etag, messageCount } = read;
    const commitId = randomUUID();
    const now = new Date().toISOString();
    await this.table.submitTransaction([
      ['create', messageEntity(partitionKey, messageCount + 1, turn.user, encoding, commitId, now)],
      ['create', messageEntity(partitionKey, messageCount + 2, turn.reply, encoding, commitId, now)],
      [
        'update',
        { partitionKey, rowKey: HEADER_ROW, messageCount: messageCount + 2, updatedAt: now },
        'Merge',
        { etag },
      ],
    ]);
  }
}

/** What the floor's read found. */
export interface PartitionRead {
  etag: string;
  messageCount: number;
  /** Header and messages, in RowKey order. */
  entities: TableEntityResult<Properties>[];
}

/** A message row exactly as the store writes it (toMessageEntity in tableConversationStore.ts). */
function messageEntity(
  partitionKey: string,
  seq: number,
  message: HistoryMessage,
  encoding: EncodingName,
  commitId: string,
  createdAt: string,
): Entity {
  const entity: Entity = {
    partitionKey,
    rowKey: messageRow(seq),
    commitId,
    role: message.role,
    createdAt,
    tokens: message.tokens,
    encoding,
  };
  writeLongText(entity, 'content', message.content);
  if (message.role === 'assistant') entity['finishReason'] = 'stop';
  return entity;
}

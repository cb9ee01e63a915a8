/**
 * The Table service's size limits, checked before writing. The service counts an entity's size in UTF-16
 * (documented estimate: 4 bytes + 2 per key character + per property 8 bytes + 2 per name character + the value),
 * whereas Azurite checks UTF-8 bytes and would accept entities Azure rejects: so the real limits are enforced here.
 */

export const MAX_ENTITY_BYTES = 1024 * 1024;
/** User properties per entity (255 minus PartitionKey, RowKey and Timestamp). */
export const MAX_ENTITY_PROPERTIES = 252;
export const MAX_BATCH_OPERATIONS = 100;
export const MAX_BATCH_BYTES = 4 * 1024 * 1024;

const KEY_PROPERTIES = new Set(['partitionKey', 'rowKey']);
/** Returned by the service, never written. */
const IGNORED_PROPERTIES = new Set(['etag', 'timestamp', 'odata.etag', 'odata.metadata']);

export interface EntityLike {
  partitionKey?: string;
  rowKey?: string;
  [property: string]: unknown;
}

/** The entity's size as the service counts it (UTF-16), in bytes. */
export function entitySizeBytes(entity: EntityLike): number {
  let size = 4 + 2 * ((entity.partitionKey ?? '').length + (entity.rowKey ?? '').length);
  for (const [name, value] of userProperties(entity)) {
    size += 8 + 2 * name.length + valueSizeBytes(value);
  }
  return size;
}

export function userPropertyCount(entity: EntityLike): number {
  return userProperties(entity).length;
}

/** Throws a clear Error when the entity is over the service's size or property-count limit. */
export function assertEntityFits(entity: EntityLike, what: string): void {
  const size = entitySizeBytes(entity);
  if (size > MAX_ENTITY_BYTES) {
    throw new Error(
      `${what} needs ${size} bytes as Table Storage counts them (UTF-16), over the ${MAX_ENTITY_BYTES}-byte entity limit.`,
    );
  }
  const properties = userPropertyCount(entity);
  if (properties > MAX_ENTITY_PROPERTIES) {
    throw new Error(`${what} has ${properties} properties, over the ${MAX_ENTITY_PROPERTIES}-property entity limit.`);
  }
}

/**
 * A transaction's payload as sent: JSON in UTF-8 (control characters escaped, so up to 6 bytes per code unit),
 * plus a generous allowance per operation for its multipart headers.
 */
export function batchPayloadBytes(entities: readonly EntityLike[]): number {
  const perOperationOverhead = 1024;
  return entities.reduce(
    (total, entity) => total + perOperationOverhead + Buffer.byteLength(JSON.stringify(entity), 'utf8'),
    0,
  );
}

export function assertBatchFits(entities: readonly EntityLike[], what: string): void {
  if (entities.length > MAX_BATCH_OPERATIONS) {
    throw new Error(
      `${what} has ${entities.length} operations, over the ${MAX_BATCH_OPERATIONS}-operation batch limit.`,
    );
  }
  const bytes = batchPayloadBytes(entities);
  if (bytes > MAX_BATCH_BYTES) {
    throw new Error(`${what} needs about ${bytes} bytes, over the ${MAX_BATCH_BYTES}-byte batch limit.`);
  }
}

function userProperties(entity: EntityLike): [string, unknown][] {
  return Object.entries(entity).filter(
    ([name, value]) => value !== undefined && !KEY_PROPERTIES.has(name) && !IGNORED_PROPERTIES.has(name),
  );
}

function valueSizeBytes(value: unknown): number {
  if (typeof value === 'string') return 4 + 2 * value.length;
  if (typeof value === 'boolean') return 1;
  if (typeof value === 'number') return isInt32(value) ? 4 : 8;
  if (typeof value === 'bigint' || value instanceof Date) return 8;
  if (value instanceof Uint8Array) return 4 + value.byteLength;
  if (value !== null && typeof value === 'object' && 'type' in value && 'value' in value) {
    const typed = value as { type: unknown; value: unknown };
    switch (typed.type) {
      case 'String':
        return 4 + 2 * String(typed.value).length;
      case 'Boolean':
        return 1;
      case 'Int32':
        return 4;
      case 'Guid':
        return 16;
      case 'Binary':
        return 4 + Buffer.byteLength(String(typed.value), 'base64');
      default:
        return 8; // Int64, Double, DateTime
    }
  }
  return 0; // null: the property is not stored
}

function isInt32(value: number): boolean {
  return Number.isInteger(value) && value >= -(2 ** 31) && value < 2 ** 31;
}

/**
 * The most a token of a reply can take in a transaction's JSON, in bytes: the longest token of o200k_base and
 * cl100k_base is 128 bytes, and decoded (invalid bytes as U+FFFD, NUL replaced) and JSON-escaped none takes more
 * than 128 (computed over both vocabularies; a unit test checks it). A token is at most 128 UTF-16 units as well.
 */
export const MAX_JSON_BYTES_PER_TOKEN = 128;
/** Room in a turn's transaction for everything but the two messages' text: header, idempotency record, row overhead. */
const TURN_OVERHEAD_BYTES = 64 * 1024;
/** The most JSON bytes one UTF-16 unit of a user message can take (a control character escaped as \u00XX). */
const MAX_JSON_BYTES_PER_UNIT = 6;

/**
 * The largest reply reserve (CHAT_MAX_RESPONSE_TOKENS) whose reply always fits ONE transaction (4 MiB) beside a user
 * message of `maxMessageChars`, however the reply is written: checked at start, so a reply that was paid for is
 * never refused by storage. About 27,500 tokens with the default 100,000-character messages.
 */
export function maxStorableReplyTokens(maxMessageChars: number): number {
  const room = MAX_BATCH_BYTES - TURN_OVERHEAD_BYTES - MAX_JSON_BYTES_PER_UNIT * maxMessageChars;
  return Math.max(0, Math.floor(room / MAX_JSON_BYTES_PER_TOKEN));
}

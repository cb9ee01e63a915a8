/**
 * The messages of recently used conversations, kept in this instance's memory so a turn reads only what is new.
 *
 * Stored messages never change once written (a turn appends; nothing edits or removes a single message), so a
 * cached prefix of a conversation stays true for as long as the conversation itself exists. The store still
 * reads the header on every turn (it carries the count and the ETag the commit is guarded by) and only then
 * decides what the cache may answer: the messages it holds, plus any that other instances appended since. A
 * deleted and re-created conversation has another `createdAt`, which the cache entry must match.
 *
 * Bounded by an estimate of the bytes it holds; least recently used conversations go first.
 */
import type { StoredMessage } from '../core/ports';

export interface CachedHistory {
  /** The conversation's creation time: tells a re-created conversation (same id) from the one cached. */
  createdAt: string;
  /** Messages 1..n in order, frozen. */
  messages: readonly StoredMessage[];
}

export interface HistoryCacheStats {
  conversations: number;
  /** The estimate the bound applies to. */
  bytes: number;
  maxBytes: number;
}

/** Per message beyond its text: the object, its strings and the array slot (measured order of magnitude). */
const MESSAGE_OVERHEAD_BYTES = 200;
/** A single conversation may take at most this share of the cache, so one huge history cannot flush the rest. */
const MAX_SHARE_PER_CONVERSATION = 0.25;

export class HistoryCache {
  /** Map iteration order is insertion order: re-inserting on use keeps the least recently used first. */
  private readonly entries = new Map<string, { history: CachedHistory; bytes: number }>();
  private totalBytes = 0;

  constructor(readonly maxBytes: number) {}

  get(key: string): CachedHistory | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry.history;
  }

  /** Remembers `messages` (1..n of the conversation) for `key`; a history too big for its share is not kept. */
  set(key: string, createdAt: string, messages: readonly StoredMessage[]): void {
    this.delete(key);
    if (this.maxBytes <= 0) return;
    const frozen = messages.map(freezeMessage);
    const bytes = frozen.reduce((sum, message) => sum + messageBytes(message), 0);
    if (bytes > this.maxBytes * MAX_SHARE_PER_CONVERSATION) return;
    this.entries.set(key, { history: { createdAt, messages: Object.freeze(frozen) }, bytes });
    this.totalBytes += bytes;
    for (const [oldest, entry] of this.entries) {
      if (this.totalBytes <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.totalBytes -= entry.bytes;
    }
  }

  /** Adds the messages a turn just stored, when the cache holds exactly the history they follow. */
  append(key: string, messages: readonly StoredMessage[]): void {
    const cached = this.entries.get(key)?.history;
    const first = messages[0];
    if (!cached || !first) return;
    if (cached.messages.length !== first.seq - 1) {
      // Not the continuation of what is cached (another turn got in between): the next read tops it up.
      this.delete(key);
      return;
    }
    this.set(key, cached.createdAt, [...cached.messages, ...messages]);
  }

  delete(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.totalBytes -= entry.bytes;
  }

  stats(): HistoryCacheStats {
    return { conversations: this.entries.size, bytes: this.totalBytes, maxBytes: this.maxBytes };
  }
}

function messageBytes(message: StoredMessage): number {
  // UTF-16 in memory: two bytes per code unit.
  return MESSAGE_OVERHEAD_BYTES + 2 * (message.content.length + (message.name?.length ?? 0));
}

function freezeMessage(message: StoredMessage): StoredMessage {
  return Object.isFrozen(message) ? message : Object.freeze({ ...message });
}

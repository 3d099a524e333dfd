import { LRUCache } from 'lru-cache';
import type { VerifiableKey } from '../keys/VerifiableKey';

export interface LocalCacheOptions {
  readonly maxEntries: number;
  readonly maxBytes: number;
  /** Safety TTL: an entry is dropped this long after its fill, whatever happens. */
  readonly ttlMs: number;
  readonly negativeTtlMs: number;
  /**
   * How long an invalidation is remembered to refuse stale fills; must exceed
   * the longest lookup (Redis plus Postgres time limits).
   */
  readonly floorRetentionMs: number;
}

/** Rough bytes an entry holds, for the memory bound (strings are UTF-16 in V8). */
function entryBytes(key: VerifiableKey): number {
  let bytes = 600 + 2 * (key.id.length + key.accountId.length + key.name.length);
  for (const scope of key.scopes) bytes += 80 + 2 * scope.length;
  for (const entry of key.ipWhitelist) bytes += 120 + 2 * entry.length;
  return bytes;
}

/**
 * The in-process tier: an LRU of keys by secret hash, bounded in entries and
 * bytes with a safety TTL, and a separate small LRU of hashes known not to
 * exist (so that made-up keys cannot crowd out real ones).
 *
 * Stale fills are refused: every lookup takes a `ticket()` before it reads
 * Redis or Postgres and hands it back to `fill`. An invalidation records a
 * version floor for its hash; a fill older than the floor, or one whose
 * ticket predates a `clear()` or a forgotten floor, is dropped.
 */
export class LocalCache {
  private readonly keys: LRUCache<string, VerifiableKey>;
  private readonly unknown: LRUCache<string, true>;
  /** hash → newest version announced, with the generation and time it was heard (insertion-ordered). */
  private readonly floors = new Map<string, { version: number; generation: number; at: number }>();
  private generation = 0;
  /** Tickets below this were issued before a clear or a forgotten floor: their fills are refused. */
  private oldestValidTicket = 0;

  constructor(private readonly options: LocalCacheOptions) {
    this.keys = new LRUCache<string, VerifiableKey>({
      max: options.maxEntries,
      maxSize: options.maxBytes,
      sizeCalculation: entryBytes,
      ttl: options.ttlMs,
    });
    this.unknown = new LRUCache<string, true>({
      max: Math.max(1, Math.floor(options.maxEntries / 10)),
      ttl: options.negativeTtlMs,
    });
  }

  get size(): number {
    return this.keys.size;
  }

  get negativeSize(): number {
    return this.unknown.size;
  }

  get(hash: string): VerifiableKey | undefined {
    return this.keys.get(hash);
  }

  isKnownUnknown(hash: string): boolean {
    return this.unknown.get(hash) === true;
  }

  /** Whether a change newer than `version` of this hash was heard recently (so Redis's copy is stale). */
  isStale(hash: string, version: number): boolean {
    const floor = this.floors.get(hash);
    return floor !== undefined && version < floor.version;
  }

  /** A ticket to take before reading a lower tier; hand it to `fill`. */
  ticket(): number {
    return this.generation;
  }

  /** Stores what a lower tier returned, unless an invalidation or clear went by since `ticket`. */
  fill(hash: string, key: VerifiableKey, ticket: number): boolean {
    if (!this.mayFill(hash, key.version, ticket)) return false;
    this.keys.set(hash, key);
    this.unknown.delete(hash);
    return true;
  }

  fillUnknown(hash: string, ticket: number): boolean {
    if (!this.mayFill(hash, 0, ticket)) return false;
    this.unknown.set(hash, true);
    return true;
  }

  /**
   * Drops the entry if older than `version` and remembers the floor, so that
   * an in-flight lookup cannot put the old record back.
   */
  invalidate(hash: string, version: number, now = Date.now()): void {
    this.generation++;
    const existing = this.floors.get(hash);
    if (existing === undefined || existing.version < version) {
      this.floors.delete(hash);
      this.floors.set(hash, { version, generation: this.generation, at: now });
    }
    const cached = this.keys.peek(hash);
    if (cached !== undefined && cached.version < version) this.keys.delete(hash);
    this.unknown.delete(hash);
  }

  /** Empties both LRUs and refuses every fill that began before. */
  clear(): void {
    this.generation++;
    this.oldestValidTicket = this.generation;
    this.keys.clear();
    this.unknown.clear();
  }

  /** Forgets floors older than the retention; fills whose tickets predate them are then refused. */
  pruneFloors(now = Date.now()): void {
    for (const [hash, floor] of this.floors) {
      if (now - floor.at < this.options.floorRetentionMs) break;
      this.floors.delete(hash);
      this.oldestValidTicket = Math.max(this.oldestValidTicket, floor.generation);
    }
  }

  private mayFill(hash: string, version: number, ticket: number): boolean {
    if (ticket < this.oldestValidTicket) return false;
    const floor = this.floors.get(hash);
    return floor === undefined || version >= floor.version;
  }
}

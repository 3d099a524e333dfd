import { LRUCache } from 'lru-cache';
import type { VerifiableKey } from '../keys/VerifiableKey';

export interface LocalCacheOptions {
  readonly maxEntries: number;
  readonly maxBytes: number;
  /** Safety TTL: an entry is dropped this long after its fill, whatever happens. */
  readonly ttlMs: number;
  readonly negativeTtlMs: number;
}

/**
 * Rough bytes an entry holds, for the memory bound: measured at about 400 for
 * a typical key (strings are UTF-16 at worst in V8; scope lists, accounts and
 * whitelists are shared between keys).
 */
function entryBytes(key: VerifiableKey): number {
  let bytes = 250 + 2 * (key.id.length + key.name.length) + 40 * key.ipWhitelist.length;
  for (const name in key.metadata) bytes += 80 + 2 * (name.length + (key.metadata[name]?.length ?? 0));
  return bytes;
}

/**
 * The in-process tier: an LRU of keys by secret hash, bounded in entries and
 * bytes with a safety TTL, and a separate small LRU of hashes known not to
 * exist (so that made-up keys cannot crowd out real ones). Whether a fill is
 * fresh enough is FillGuard's decision, taken before `set`.
 */
export class LocalCache {
  private readonly keys: LRUCache<string, VerifiableKey>;
  private readonly unknown: LRUCache<string, true>;

  constructor(options: LocalCacheOptions) {
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

  get(hash: string): VerifiableKey | undefined {
    return this.keys.get(hash);
  }

  isKnownUnknown(hash: string): boolean {
    return this.unknown.get(hash) === true;
  }

  set(hash: string, key: VerifiableKey): void {
    this.keys.set(hash, key);
    this.unknown.delete(hash);
  }

  setUnknown(hash: string): void {
    this.unknown.set(hash, true);
  }

  /** Drops the entry of `hash` if older than `version`, and any "no such key" for it. */
  drop(hash: string, version: number): void {
    const cached = this.keys.peek(hash);
    if (cached !== undefined && cached.version < version) this.keys.delete(hash);
    this.unknown.delete(hash);
  }

  clear(): void {
    this.keys.clear();
    this.unknown.clear();
  }
}

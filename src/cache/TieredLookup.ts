import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { toVerifiableKey, type VerifiableKey } from '../keys/VerifiableKey';
import type { KeyStore } from '../store/KeyStore';
import { ENTRY_REJECTIONS, type EntryRejection } from './EntrySeal';
import type { FillGuard } from './FillGuard';
import type { KeyLookup } from './KeyLookup';
import type { LocalCache } from './LocalCache';
import type { RedisEntry, RedisTier } from './RedisTier';
import { SharedReads } from './SharedReads';

/** Which tier answered each lookup: read by the metrics at scrape time. */
export class TierCounts {
  local = 0;
  redis = 0;
  postgres = 0;
  negative = 0;
  /** Fills dropped because a change went by while the lookup ran. */
  refusedFills = 0;
  redisErrors = 0;
  /** Redis entries that failed their seal (read as misses, never trusted), by reason. */
  readonly rejectedEntries = Object.fromEntries(ENTRY_REJECTIONS.map((reason) => [reason, 0])) as Record<EntryRejection, number>;
  /** Changes applied to the caches (CacheControl.drop), by source. */
  readonly drops = Object.fromEntries(DROP_SOURCES.map((source) => [source, 0])) as Record<DropSource, number>;
  /** Times the in-process cache was emptied (trust lost, repair begun or done). */
  clears = 0;
}

/** At most one log line per this interval about rejected Redis entries. */
const REJECTION_LOG_INTERVAL_MS = 60_000;

/**
 * Who dropped a cache entry (the label of keyward_cache_drops_total):
 * `self` the changing instance, `bus` an announcement heard, `outbox` an
 * outbox read, `relay` an overdue outbox row written into Redis, `repair`
 * the repair after a loss of trust.
 */
export type DropSource = 'self' | 'bus' | 'outbox' | 'relay' | 'repair';
export const DROP_SOURCES: readonly DropSource[] = ['self', 'bus', 'outbox', 'relay', 'repair'];

/** What the coherence side (CacheTrust, ChangePropagator) may do to the lookup's state. */
export interface CacheControl {
  /**
   * The one way a change reaches the caches: drops copies of `hash` older
   * than `version` and any lookup of it in flight, and leaves a version floor
   * against stale fills (held long when `undelivered`: an outbox row that
   * no instance has written into Redis yet). Counted by `source`.
   */
  drop(hash: string, version: number, source: DropSource, undelivered?: boolean): void;
  /** Empties the in-process cache, forgets lookups in flight, refuses fills begun before. */
  clear(): void;
  /** Forgets version floors past their retention. */
  prune(): void;
}

/** Whether the caches may be used now; read on every Verify. */
export interface TrustGate {
  /** performance.now() before which the caches may be trusted. */
  readonly until: number;
}

/**
 * Verify's lookup with Redis: in-process LRU, then Redis, then Postgres.
 *
 * The caches are used only while `gate.until` is ahead (CacheTrust keeps it:
 * subscription proven live, outbox read, recovery done); otherwise every
 * lookup reads Postgres and fills nothing. Lookups of one hash share one read
 * while trusted; a change to the hash detaches that read, so that a Verify
 * starting after a change never joins a read from before it. What a lookup
 * read is written into either cache only if FillGuard says no change or
 * reset went by since the lookup began.
 */
export class TieredLookup implements KeyLookup, CacheControl {
  private readonly reads = new SharedReads<VerifiableKey | undefined>();
  private readonly loadFor = (hash: string): Promise<VerifiableKey | undefined> => this.load(hash);
  private redisSuspendedUntil = 0;
  private rejectionLoggedAt = -Infinity;
  private rejectionsUnlogged = 0;

  constructor(
    private readonly local: LocalCache | undefined,
    private readonly guard: FillGuard,
    private readonly redis: RedisTier,
    private readonly store: KeyStore,
    private readonly gate: TrustGate,
    private readonly counts: TierCounts,
    private readonly logger: Logger,
    private readonly suspendMs: number,
  ) {}

  find(hash: string): VerifiableKey | undefined | Promise<VerifiableKey | undefined> {
    if (performance.now() >= this.gate.until) return this.readPostgres(hash);
    const local = this.local;
    if (local !== undefined) {
      const hit = local.get(hash);
      if (hit !== undefined) {
        this.counts.local++;
        return hit;
      }
      if (local.isKnownUnknown(hash)) {
        this.counts.negative++;
        return undefined;
      }
    }
    return this.reads.join(hash, this.loadFor);
  }

  drop(hash: string, version: number, source: DropSource, undelivered = false): void {
    this.counts.drops[source]++;
    this.guard.changed(hash, version, undelivered);
    this.local?.drop(hash, version);
    this.reads.detach(hash);
  }

  clear(): void {
    this.counts.clears++;
    this.guard.reset();
    this.local?.clear();
    this.reads.clear();
  }

  /** Forgets old version floors (CacheTrust calls this on its tick). */
  prune(): void {
    this.guard.prune();
  }

  private get redisUsable(): boolean {
    return performance.now() >= this.redisSuspendedUntil && this.redis.ready;
  }

  private async load(hash: string): Promise<VerifiableKey | undefined> {
    const ticket = this.guard.ticket();
    if (this.redisUsable) {
      try {
        const entry = await this.redis.get(hash);
        if (entry.kind === 'rejected') this.reject(hash, entry);
        // A copy older than a change this instance has heard of (whose tombstone
        // may not have reached Redis yet) counts as a miss.
        const stale = (entry.kind === 'key' || entry.kind === 'unknown') && this.guard.isStale(hash, entry.kind === 'key' ? entry.state.version : 0);
        if (entry.kind === 'key' && !stale) {
          this.counts.redis++;
          const key = toVerifiableKey(entry.state);
          this.fillLocal(hash, key, ticket);
          return key;
        }
        if (entry.kind === 'unknown' && !stale) {
          this.counts.negative++;
          this.fillLocalUnknown(hash, ticket);
          return undefined;
        }
      } catch (error) {
        this.suspendRedis(error);
      }
    }
    const state = await this.store.findForVerify(hash);
    this.counts.postgres++;
    const fillRedis = this.redisUsable && this.guard.mayFill(hash, state?.version ?? 0, ticket);
    // A fill nobody waits for: its failure costs no Verify anything, so it suspends nothing.
    const fillFailed = (): void => {
      this.counts.redisErrors++;
    };
    if (state === undefined) {
      if (fillRedis) this.redis.fillUnknown(hash).catch(fillFailed);
      this.fillLocalUnknown(hash, ticket);
      return undefined;
    }
    // Compare-and-set by version in Redis too: a read from before a change cannot overwrite it.
    if (fillRedis) this.redis.fill(hash, state).catch(fillFailed);
    const key = toVerifiableKey(state);
    this.fillLocal(hash, key, ticket);
    return key;
  }

  private fillLocal(hash: string, key: VerifiableKey, ticket: number): void {
    if (this.local === undefined) return;
    if (this.guard.mayFill(hash, key.version, ticket)) this.local.set(hash, key);
    else this.counts.refusedFills++;
  }

  private fillLocalUnknown(hash: string, ticket: number): void {
    if (this.local === undefined) return;
    if (this.guard.mayFill(hash, 0, ticket)) this.local.setUnknown(hash);
    else this.counts.refusedFills++;
  }

  /** Untrusted caches: Postgres answers, nothing is filled. */
  private async readPostgres(hash: string): Promise<VerifiableKey | undefined> {
    const state = await this.store.findForVerify(hash);
    this.counts.postgres++;
    return state === undefined ? undefined : toVerifiableKey(state);
  }

  /**
   * An entry keyward did not seal is data, not a Redis failure: Redis stays in
   * use, the lookup reads Postgres, and the entry is deleted (if unchanged)
   * so that its `v` cannot block the compare-and-set fills that follow.
   * Logged at most once a minute, with counts, never with the entry's content.
   */
  private reject(hash: string, entry: Extract<RedisEntry, { kind: 'rejected' }>): void {
    this.counts.rejectedEntries[entry.reason]++;
    this.rejectionsUnlogged++;
    this.redis.discard(hash, entry).catch(() => {
      this.counts.redisErrors++;
    });
    const now = performance.now();
    if (now - this.rejectionLoggedAt < REJECTION_LOG_INTERVAL_MS) return;
    this.logger.warn(
      { event: 'redis-entry-rejected', reason: entry.reason, rejected: this.rejectionsUnlogged },
      'redis held entries keyward did not seal (forged, or from another release or secret): read postgres instead and deleted them',
    );
    this.rejectionLoggedAt = now;
    this.rejectionsUnlogged = 0;
  }

  /** After a Redis error or timeout, Verify skips Redis for a while instead of paying the timeout on every call. */
  private suspendRedis(error: unknown): void {
    this.counts.redisErrors++;
    const wasSuspended = performance.now() < this.redisSuspendedUntil;
    this.redisSuspendedUntil = performance.now() + this.suspendMs;
    if (!wasSuspended) this.logger.warn({ err: error, suspendMs: this.suspendMs }, 'redis failed on the verify path; reading postgres for a while');
  }
}

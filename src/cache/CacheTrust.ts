import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { KeywardError } from '../errors';
import type { Invalidation, InvalidationOutbox } from '../store/InvalidationOutbox';
import { isConnectionFailure } from '../store/sqlState';
import type { BusHandlers, InvalidationBus } from './InvalidationBus';
import type { RedisTier } from './RedisTier';
import type { CacheControl, TrustGate } from './TieredLookup';

export interface CacheTrustOptions {
  readonly leaseMs: number;
  /** Outbox rows older than this that the changing instance did not mark delivered are relayed to Redis. */
  readonly relayAfterMs: number;
  /** How far back each outbox read looks (rows can commit out of seq order). */
  readonly outboxWindowMs: number;
  /** Outbox rows older than this no longer matter: every Redis entry they concern has expired. */
  readonly retentionMs: number;
}

export class CacheCounts {
  relayed = 0;
  recoveries = 0;
  trustLost = 0;
}

const REPAIR_BATCH = 1_000;

/** A store error caused by Postgres being unreachable (Redis errors never are). */
const postgresUnreachable = (error: unknown): boolean => error instanceof KeywardError && isConnectionFailure(error.cause);
const PRUNE_EVERY_MS = 60_000;

/**
 * Decides when an instance may use its caches, and keeps them coherent
 * (README, "Caching and revocation"). The caches are trusted while all hold:
 *
 * 1. the invalidation subscription is proven live and membership renewed
 *    within the lease (InvalidationBus.liveUntil);
 * 2. the invalidation outbox was read within the lease, on a connection of
 *    its own, and the overdue rows it showed were written into Redis; or
 *    Postgres cannot be reached at all (then no change can be committed for
 *    this instance to miss, short of a second, simultaneous fault). A slow
 *    Postgres does not count as down: it still commits changes;
 * 3. since trust was last lost, the instance emptied its in-process cache
 *    and wrote a tombstone into Redis for every change still within the
 *    outbox's retention (Redis may have missed some, or lost them in a
 *    restart or failover), then emptied its cache once more. If Postgres
 *    cannot be reached, that repair waits until it can.
 *
 * Every lease/4 it sends the heartbeat, reads the outbox, and re-evaluates.
 * Losing trust empties the in-process cache at once.
 */
export class CacheTrust implements TrustGate, BusHandlers {
  until = Number.NEGATIVE_INFINITY;
  private control: CacheControl | undefined;
  private recovered = false;
  private recovering = false;
  /** Incremented whenever trust is lost, so that a recovery begun before cannot restore it. */
  private trustEpoch = 0;
  private polling = false;
  private polledAt = Number.NEGATIVE_INFINITY;
  private pgDown = false;
  /** Trust was regained while Postgres was down: Redis is repaired from the outbox once it answers. */
  private repairPending = false;
  private since: Date | undefined;
  private readonly seen = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private lastPrune = 0;

  constructor(
    private readonly bus: InvalidationBus,
    private readonly outbox: InvalidationOutbox,
    private readonly tier: RedisTier,
    private readonly options: CacheTrustOptions,
    private readonly counts: CacheCounts,
    private readonly logger: Logger,
  ) {}

  get trusted(): boolean {
    return performance.now() < this.until;
  }

  start(control: CacheControl): void {
    this.control = control;
    this.bus.start(this);
    this.timer = setInterval(() => this.tick(), Math.max(10, Math.floor(this.options.leaseMs / 4)));
    this.tick();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.until = Number.NEGATIVE_INFINITY;
    await this.bus.leave();
  }

  invalidate(hash: string, version: number): void {
    this.control?.invalidate(hash, version);
  }

  subscriptionChanged(): void {
    this.lose('the invalidation subscription changed');
    this.evaluate();
  }

  private get statementTimeoutMs(): number {
    return Math.max(10, Math.floor(this.options.leaseMs / 2));
  }

  /** Moves `until` after a proof or a state change. */
  private refresh(): void {
    if (!this.recovered) {
      this.until = Number.NEGATIVE_INFINITY;
      return;
    }
    const outboxUntil = this.pgDown ? Number.POSITIVE_INFINITY : this.polledAt + this.options.leaseMs;
    this.until = Math.min(this.bus.liveUntil, outboxUntil);
  }

  private tick(): void {
    this.bus.heartbeat();
    void this.poll();
    this.control?.prune();
    this.evaluate();
    const now = Date.now();
    if (now - this.lastPrune > PRUNE_EVERY_MS) {
      this.lastPrune = now;
      this.outbox.prune(this.options.retentionMs, this.options.leaseMs * 4).catch((error: unknown) => {
        this.logger.debug({ err: error }, 'pruning the invalidation outbox failed');
      });
    }
  }

  private evaluate(): void {
    const redisLive = performance.now() < this.bus.liveUntil;
    if (!redisLive) this.lose('the invalidation lease expired');
    else if (!this.recovered && !this.recovering) void this.recover();
    this.refresh();
  }

  private lose(reason: string): void {
    this.trustEpoch++;
    if (this.recovered) {
      this.counts.trustLost++;
      this.logger.warn({ event: 'cache-untrusted', reason }, 'caches bypassed until the subscription is live again');
    }
    this.recovered = false;
    this.until = Number.NEGATIVE_INFINITY;
    this.control?.clear();
  }

  private async recover(): Promise<void> {
    const epoch = this.trustEpoch;
    this.recovering = true;
    try {
      this.control?.clear();
      try {
        await this.repairRedis();
        this.repairPending = false;
      } catch (error) {
        if (!postgresUnreachable(error)) throw error;
        this.pgDown = true;
        this.repairPending = true;
        this.logger.warn({ event: 'repair-deferred' }, 'postgres unreachable: using the caches, repairing redis from the outbox once postgres answers');
      }
      if (epoch !== this.trustEpoch || performance.now() >= this.bus.liveUntil) return;
      this.control?.clear();
      this.recovered = true;
      this.counts.recoveries++;
      this.refresh();
      this.logger.info({ event: 'cache-trusted' }, 'caches in use');
    } catch (error) {
      this.logger.warn({ err: error }, 'cache recovery failed; retrying');
    } finally {
      this.recovering = false;
    }
  }

  /** Writes a tombstone into Redis for every change within the outbox's retention. */
  private async repairRedis(): Promise<void> {
    let after = '0';
    for (;;) {
      const rows = await this.outbox.retained(after, this.options.retentionMs, REPAIR_BATCH, this.statementTimeoutMs * 4);
      await this.relay(rows);
      if (rows.length < REPAIR_BATCH) return;
      after = (rows[rows.length - 1] as Invalidation).seq;
    }
  }

  /** Reads the outbox: drops every change not seen yet, relays overdue ones to Redis. */
  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    const sent = performance.now();
    try {
      let read: Awaited<ReturnType<InvalidationOutbox['recent']>>;
      try {
        read = await this.outbox.recent(this.since, this.options.outboxWindowMs, this.options.relayAfterMs, this.statementTimeoutMs);
      } catch (error) {
        // Only a Postgres that cannot be reached at all keeps the caches trusted;
        // a slow one lets the outbox proof lapse (a slow Postgres still commits).
        this.pgDown = postgresUnreachable(error);
        if (!this.pgDown) this.logger.debug({ err: error }, 'reading the invalidation outbox failed');
        return;
      }
      for (const row of read.rows) {
        if (this.seen.has(row.seq)) continue;
        this.seen.set(row.seq, sent);
        this.control?.invalidate(row.hash, row.version);
      }
      this.pgDown = false;
      if (this.repairPending) {
        await this.repairRedis();
        this.repairPending = false;
      }
      await this.relay(read.rows.filter((row) => !row.delivered && row.overdue));
      for (const [seq, at] of this.seen) {
        if (sent - at < 2 * this.options.outboxWindowMs) break;
        this.seen.delete(seq);
      }
      this.since = read.now;
      this.polledAt = sent;
    } catch (error) {
      // Relaying into Redis failed: the outbox proof lapses until a poll completes.
      this.logger.debug({ err: error }, 'relaying the invalidation outbox failed');
    } finally {
      this.polling = false;
      this.refresh();
    }
  }

  /** Writes tombstones for `rows` into Redis, drops them here, and marks the undelivered ones delivered. */
  private async relay(rows: readonly Invalidation[]): Promise<void> {
    if (rows.length === 0) return;
    await Promise.all(rows.map((row) => this.tier.tombstone(row.hash, row.version)));
    for (const row of rows) this.control?.invalidate(row.hash, row.version);
    const undelivered = rows.filter((row) => !row.delivered).map((row) => row.seq);
    if (undelivered.length > 0) {
      await this.outbox.markDelivered(undelivered, this.statementTimeoutMs * 4);
      this.counts.relayed += undelivered.length;
    }
  }
}

import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { KeywardError } from '../errors';
import { type Invalidation, type InvalidationOutbox, type OutboxRead, parseSnapshot } from '../store/InvalidationOutbox';
import { isConnectionFailure } from '../store/sqlState';
import type { BusHandlers, InvalidationBus } from './InvalidationBus';
import type { RedisTier } from './RedisTier';
import type { CacheControl, TrustGate } from './TieredLookup';

export interface CacheTrustOptions {
  readonly leaseMs: number;
  /** Outbox rows older than this that the changing instance did not mark delivered are relayed to Redis. */
  readonly relayAfterMs: number;
  /** Outbox rows older than this no longer matter: every Redis entry they concern has expired. */
  readonly retentionMs: number;
}

export class CacheCounts {
  relayed = 0;
  recoveries = 0;
  trustLost = 0;
  /** Outbox reads completed (with their relay), their rows, and the longest one in ms. */
  polls = 0;
  polledRows = 0;
  pollMaxMs = 0;
  /** Times the caches went untrusted because no outbox read had completed within the lease. */
  outboxLapses = 0;
}

const REPAIR_BATCH = 1_000;
/**
 * Tombstones sent to Redis together: a bulk change is written in chunks, never
 * thousands of scripts at once. Small enough that a chunk is answered well
 * within KEYWARD_REDIS_TIMEOUT_MS, and that the Verify reads and membership
 * renewals sharing the connection never queue behind much.
 */
const TOMBSTONE_CHUNK = 100;
/**
 * Tombstones one outbox read writes at most (the rest on the next reads), so
 * that a read, relay included, stays well within the lease.
 */
const RELAY_PER_READ = 500;

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
 *    its own (each read returns the changes committed since the previous
 *    one, however old), and the overdue rows it showed were written into
 *    Redis (up to RELAY_PER_READ and a quarter lease; the rest on the next
 *    reads); or
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
  /** The snapshot of the last outbox read: the next one reads the transactions it did not see. */
  private snapshot: string | undefined;
  private outboxLapsed = false;
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
    const lapsed = Number.isFinite(this.polledAt) && performance.now() >= outboxUntil;
    if (lapsed && !this.outboxLapsed) {
      this.counts.outboxLapses++;
      this.logger.warn({ event: 'outbox-lapsed' }, 'no outbox read completed within the lease: caches bypassed until one does');
    }
    this.outboxLapsed = lapsed;
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

  /**
   * Reads the outbox: drops every change committed since the previous read
   * (whatever its age), relays overdue undelivered ones to Redis.
   */
  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    const sent = performance.now();
    try {
      let read: OutboxRead;
      try {
        read = await this.outbox.read(this.snapshot, this.options.retentionMs, this.options.relayAfterMs, RELAY_PER_READ, this.statementTimeoutMs);
      } catch (error) {
        // Only a Postgres that cannot be reached at all keeps the caches trusted;
        // a slow one lets the outbox proof lapse (a slow Postgres still commits).
        this.pgDown = postgresUnreachable(error);
        if (!this.pgDown) this.logger.debug({ err: error }, 'reading the invalidation outbox failed');
        return;
      }
      if (this.snapshot !== undefined && BigInt(parseSnapshot(read.snapshot).xmax) < BigInt(parseSnapshot(this.snapshot).xmax)) {
        // Transaction ids went back (a restore, or a failover to a replica that
        // had not seen the last transactions): ids the previous snapshot counted
        // as seen are being reused. Read everything retained next time; no proof.
        this.logger.warn({ event: 'outbox-snapshot-reset', previous: this.snapshot, now: read.snapshot }, 'transaction ids went back: rereading the outbox');
        this.snapshot = undefined;
        return;
      }
      const readMs = performance.now() - sent;
      for (const row of read.fresh) this.control?.invalidate(row.hash, row.version);
      // Applied here: the next read starts after this one even if the relay
      // below fails (what it had to relay stays undelivered, so overdue reads find it).
      this.snapshot = read.snapshot;
      this.pgDown = false;
      if (this.repairPending) {
        await this.repairRedis();
        this.repairPending = false;
      }
      // Fresh rows past the limit are relayed by the next reads, as overdue ones.
      // Shuffled, like the overdue ones (random order in SQL), so that instances relaying a bulk change share it out.
      // Within a time budget too (at least one chunk), so that a read of a bulk change ends in time for the next.
      const relayed = [...shuffle(read.fresh.filter((row) => !row.delivered && row.overdue)), ...read.overdue].slice(0, RELAY_PER_READ);
      await this.relay(relayed, sent + this.options.leaseMs / 4);
      this.polledAt = sent;
      const tookMs = performance.now() - sent;
      this.counts.polls++;
      this.counts.polledRows += read.fresh.length + read.overdue.length;
      this.counts.pollMaxMs = Math.max(this.counts.pollMaxMs, tookMs);
      if (tookMs > this.options.leaseMs / 4) {
        this.logger.info({ event: 'outbox-read-slow', ms: Math.round(tookMs), readMs: Math.round(readMs), fresh: read.fresh.length, overdue: read.overdue.length }, 'outbox read took over a quarter lease');
      }
    } catch (error) {
      // Relaying into Redis failed: the outbox proof lapses until a poll completes.
      this.logger.debug({ err: error }, 'relaying the invalidation outbox failed');
    } finally {
      this.polling = false;
      this.refresh();
    }
  }

  /**
   * Writes tombstones for `rows` into Redis, drops them here, and marks the
   * undelivered ones delivered (in one statement). Tombstones go TOMBSTONE_CHUNK
   * at a time (the scripts of a chunk go out together; Redis is never sent
   * thousands at once); after `deadline`, no further chunk is begun (the rows
   * left stay undelivered, for the next reads).
   */
  private async relay(rows: readonly Invalidation[], deadline = Number.POSITIVE_INFINITY): Promise<void> {
    let start = 0;
    for (; start < rows.length; start += TOMBSTONE_CHUNK) {
      if (start > 0 && performance.now() >= deadline) break;
      const chunk = rows.slice(start, start + TOMBSTONE_CHUNK);
      const write = () => Promise.all(chunk.map((row) => this.tier.tombstone(row.hash, row.version)));
      // Once more after a failure: a process short of CPU sees its Redis calls time out though Redis answered.
      await write().catch(write);
      for (const row of chunk) this.control?.invalidate(row.hash, row.version);
    }
    const undelivered = rows
      .slice(0, start)
      .filter((row) => !row.delivered)
      .map((row) => row.seq);
    if (undelivered.length > 0) {
      await this.outbox.markDelivered(undelivered, this.statementTimeoutMs * 4);
      this.counts.relayed += undelivered.length;
    }
  }
}

/** `items` in random order (Fisher–Yates), in place. */
function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
  return items;
}

import { performance } from 'node:perf_hooks';
import type { Invalidation, InvalidationOutbox } from '../store/InvalidationOutbox';
import type { RedisTier } from './RedisTier';
import type { CacheControl, DropSource } from './TieredLookup';

/**
 * Tombstones sent to Redis together: a bulk change is written in chunks, never
 * thousands of scripts at once. Small enough that a chunk is answered well
 * within KEYWARD_REDIS_TIMEOUT_MS, and that the Verify reads and membership
 * renewals sharing the connection never queue behind much.
 */
export const TOMBSTONE_CHUNK = 100;

/**
 * Writes outbox rows into Redis as tombstones (compare-and-set by version:
 * never over newer data), drops them from this instance's caches, and marks
 * the undelivered ones delivered in one statement. Used by the outbox reads
 * (rows overdue: source `relay`) and by the repair after a loss of trust
 * (every retained row: source `repair`).
 */
export class OutboxRelay {
  constructor(
    private readonly tier: RedisTier,
    private readonly outbox: InvalidationOutbox,
    private readonly control: CacheControl,
    /** Time limit of the delivered marks (Durations.outboxRepairTimeoutMs). */
    private readonly markTimeoutMs: number,
  ) {}

  /**
   * TOMBSTONE_CHUNK at a time (the scripts of a chunk go out together); after
   * `deadline` (performance.now), no further chunk is begun: the rows left
   * stay undelivered, for the next reads. Resolves with how many rows it
   * marked delivered.
   */
  async write(rows: readonly Invalidation[], source: DropSource, deadline = Number.POSITIVE_INFINITY): Promise<number> {
    let start = 0;
    for (; start < rows.length; start += TOMBSTONE_CHUNK) {
      if (start > 0 && performance.now() >= deadline) break;
      const chunk = rows.slice(start, start + TOMBSTONE_CHUNK);
      const write = () => Promise.all(chunk.map((row) => this.tier.tombstone(row.hash, row.version)));
      // Once more after a failure: a process short of CPU sees its Redis calls time out though Redis answered.
      await write().catch(write);
      for (const row of chunk) this.control.drop(row.hash, row.version, source);
    }
    const undelivered = rows
      .slice(0, start)
      .filter((row) => !row.delivered)
      .map((row) => row.seq);
    if (undelivered.length > 0) await this.outbox.markDelivered(undelivered, this.markTimeoutMs);
    return undelivered.length;
  }
}

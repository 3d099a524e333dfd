import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { type InvalidationOutbox, type OutboxRead, parseSnapshot } from '../store/InvalidationOutbox';
import { failureOf } from '../store/storeFailure';
import type { OutboxRelay } from './OutboxRelay';
import type { CacheControl } from './TieredLookup';
import type { TrustEvent } from './TrustMachine';

/**
 * Tombstones one outbox read writes at most (the rest on the next reads), so
 * that a read, relay included, stays well within the lease.
 */
const RELAY_PER_READ = 500;

export class OutboxCounts {
  relayed = 0;
  /** Outbox reads completed (with their relay), their rows, and the longest one in ms. */
  polls = 0;
  polledRows = 0;
  pollMaxMs = 0;
}

export interface OutboxPollerOptions {
  readonly retentionMs: number;
  /** Undelivered rows older than this are relayed into Redis (Durations.relayAfterMs). */
  readonly relayAfterMs: number;
  /** Time limit of a read (Durations.outboxStatementTimeoutMs). */
  readonly statementTimeoutMs: number;
  /** After this much of a read, no further tombstone chunk is begun (Durations.relayBudgetMs). */
  readonly relayBudgetMs: number;
  /** Reads slower than this are logged. */
  readonly slowMs: number;
}

/**
 * Reads the invalidation outbox (one read at a time): drops every change
 * committed since the previous read, whatever its age (source `outbox`),
 * relays overdue undelivered ones into Redis (source `relay`), and reports
 * the read's outcome to the trust machine: `outbox-read` with when it was
 * sent, or `outbox-failed` with what the failure says about PostgreSQL.
 */
export class OutboxPoller {
  /** The snapshot of the last read: the next one reads the transactions it did not see. */
  private snapshot: string | undefined;
  private polling = false;

  constructor(
    private readonly outbox: InvalidationOutbox,
    private readonly relay: OutboxRelay,
    private readonly control: CacheControl,
    private readonly options: OutboxPollerOptions,
    private readonly counts: OutboxCounts,
    private readonly logger: Logger,
    private readonly report: (event: TrustEvent) => void,
  ) {}

  async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    const sent = performance.now();
    try {
      let read: OutboxRead;
      try {
        read = await this.outbox.read(this.snapshot, this.options.retentionMs, this.options.relayAfterMs, RELAY_PER_READ, this.options.statementTimeoutMs);
      } catch (error) {
        const failure = failureOf(error);
        this.logger.debug({ err: error, failure }, 'reading the invalidation outbox failed');
        this.report({ type: 'outbox-failed', failure: failure.kind });
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
      // An undelivered change may reach Redis only when a relay gets to it: its floor is held until then.
      for (const row of read.fresh) this.control.drop(row.hash, row.version, 'outbox', !row.delivered);
      // Applied here: the next read starts after this one even if the relay
      // below fails (what it had to relay stays undelivered, so overdue reads find it).
      this.snapshot = read.snapshot;
      // Fresh rows past the limit are relayed by the next reads, as overdue ones.
      // Shuffled, like the overdue ones (random order in SQL), so that instances relaying a bulk change share it out.
      // Within a time budget too (at least one chunk), so that a read of a bulk change ends in time for the next.
      const relayed = [...shuffle(read.fresh.filter((row) => !row.delivered && row.overdue)), ...read.overdue].slice(0, RELAY_PER_READ);
      try {
        this.counts.relayed += await this.relay.write(relayed, 'relay', sent + this.options.relayBudgetMs);
      } catch (error) {
        // The read proved nothing until its relay is done: the proof lapses until a read completes.
        this.logger.debug({ err: error }, 'relaying the invalidation outbox failed');
        this.report({ type: 'outbox-failed', failure: 'failed' });
        return;
      }
      const tookMs = performance.now() - sent;
      this.counts.polls++;
      this.counts.polledRows += read.fresh.length + read.overdue.length;
      this.counts.pollMaxMs = Math.max(this.counts.pollMaxMs, tookMs);
      this.report({ type: 'outbox-read', sentAt: sent });
      if (tookMs > this.options.slowMs) {
        this.logger.info({ event: 'outbox-read-slow', ms: Math.round(tookMs), readMs: Math.round(readMs), fresh: read.fresh.length, overdue: read.overdue.length }, 'outbox read took over a quarter lease');
      }
    } finally {
      this.polling = false;
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

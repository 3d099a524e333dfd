import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { KeyChangeListener } from '../admin/KeyAdmin';
import { keyStateOf } from '../keys/VerifiableKey';
import type { InvalidationOutbox } from '../store/InvalidationOutbox';
import type { KeyChange } from '../store/KeyStore';
import { type InvalidationBus, epochNow } from './InvalidationBus';
import type { CacheControl } from './TieredLookup';
import { waitOutMs } from './durations';

export class PropagationCounts {
  /** Changes every live instance confirmed within the ack timeout. */
  confirmed = 0;
  /** Changes that had to wait out the lease (an acknowledgement missing, or Redis unreachable). */
  waitedOutLease = 0;
}

/**
 * Makes a committed change hold on every instance before the admin call
 * returns. Postgres already has it (and its outbox row). Then:
 *
 * 1. this instance drops its own copy;
 * 2. one Redis script writes the new record through (compare-and-set by
 *    version), publishes the change, and lists the live members;
 * 3. every subscribed instance drops its copy and acknowledges; when every
 *    instance that could be trusting its caches has within the ack timeout
 *    (every listed member, as many acks as PUBLISH had other receivers, none
 *    from an unlisted instance, every listed lease known), the call returns;
 * 4. otherwise (a member silent, the member list incomplete, a lease unknown,
 *    Redis unreachable or frozen), the call waits out the longest lease any
 *    member announced (plus the relay delay): by then any instance that did
 *    not hear the change has either read it from the outbox (and relayed it
 *    into Redis) or stopped trusting its caches.
 */
export class ChangePropagator implements KeyChangeListener {
  /** Outbox rows whose change Redis now holds, marked delivered together (one commit for many changes). */
  private delivered: string[] = [];
  private markTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly bus: InvalidationBus,
    private readonly control: CacheControl,
    private readonly outbox: InvalidationOutbox,
    private readonly options: { readonly ackTimeoutMs: number; readonly leaseMs: number; readonly relayAfterMs: number; readonly markDeliveredDelayMs: number; readonly queryTimeoutMs: number },
    private readonly counts: PropagationCounts,
    private readonly logger: Logger,
  ) {}

  async keyChanged(change: KeyChange): Promise<void> {
    // The change committed just now: the start of the propagation, for the revoke breakdown.
    const committedAt = epochNow();
    const state = keyStateOf(change.record);
    this.control.drop(change.secretHash, state.version, 'self');
    let why: { receivers: number; missing: readonly string[]; doubts: readonly string[] } | 'redis unreachable';
    let leaseMs: number;
    try {
      const result = await this.bus.announce(change.secretHash, state, this.options.ackTimeoutMs);
      // Redis holds the new record now: no instance needs to relay this row.
      if (change.outboxSeq !== undefined) this.markDelivered(change.outboxSeq);
      if (this.logger.isLevelEnabled('debug')) {
        const { changeId, scriptDoneAt, ackedAt } = result.trace;
        this.logger.debug(
          { event: 'change-announced', keyId: change.record.id, version: state.version, changeId, startedAt: committedAt, scriptDoneAt, acks: ackedAt, doneAt: epochNow(), confirmed: result.confirmed },
          'change announced',
        );
      }
      if (result.confirmed) {
        this.counts.confirmed++;
        return;
      }
      why = { receivers: result.receivers, missing: result.missing, doubts: result.doubts };
      leaseMs = result.leaseMs;
    } catch {
      why = 'redis unreachable';
      leaseMs = this.bus.longestLeaseMs();
    }
    // The longest lease in the fleet as far as the bus knows, never less than this instance's own.
    leaseMs = Math.max(leaseMs, this.options.leaseMs);
    this.counts.waitedOutLease++;
    this.logger.warn(
      { event: 'ack-missing', keyId: change.record.id, version: state.version, ...(why === 'redis unreachable' ? { missing: why } : why), leaseMs },
      'not every instance confirmed the change; waiting out the cache lease',
    );
    // An instance that missed the announcement stops trusting its caches within
    // its lease, unless it read the outbox since; and an outbox read that began
    // before the row was overdue relays nothing, so that delay counts too.
    await sleep(waitOutMs(leaseMs, this.options.relayAfterMs));
  }

  /** Writes the delivered marks soon, in one statement (well before rows count as overdue). */
  private markDelivered(seq: string): void {
    this.delivered.push(seq);
    this.markTimer ??= setTimeout(() => {
      this.markTimer = undefined;
      const seqs = this.delivered;
      this.delivered = [];
      this.outbox.markDelivered(seqs, this.options.queryTimeoutMs).catch((error: unknown) => {
        this.logger.debug({ err: error }, 'marking invalidations delivered failed; instances will relay them');
      });
    }, this.options.markDeliveredDelayMs);
  }

  /** Writes the marks still waiting (on stop). */
  async flush(): Promise<void> {
    clearTimeout(this.markTimer);
    this.markTimer = undefined;
    const seqs = this.delivered;
    this.delivered = [];
    await this.outbox.markDelivered(seqs, this.options.queryTimeoutMs).catch(() => {});
  }
}

import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { InvalidationOutbox } from '../store/InvalidationOutbox';
import { failureOf } from '../store/storeFailure';
import type { Durations } from './durations';
import type { BusHandlers, InvalidationBus } from './InvalidationBus';
import { OutboxCounts, OutboxPoller } from './OutboxPoller';
import { OutboxPruner } from './OutboxPruner';
import { OutboxRelay } from './OutboxRelay';
import { RedisRepair } from './RedisRepair';
import { RedisServerWatch, ServerWatchCounts } from './RedisServerWatch';
import type { RedisTier } from './RedisTier';
import type { CacheControl, TrustGate } from './TieredLookup';
import { type TrustAction, type TrustEvent, TrustMachine } from './TrustMachine';

export class CacheCounts {
  readonly outbox = new OutboxCounts();
  readonly server = new ServerWatchCounts();
  recoveries = 0;
  trustLost = 0;
  /** Times the caches went untrusted because no outbox read had completed within the lease. */
  outboxLapses = 0;
}

/**
 * Keeps an instance's caches coherent and decides when they may be used
 * (README, "Caching and revocation"): the decision is TrustMachine's (pure);
 * this class feeds it events and carries out its actions, with one part per
 * job:
 *
 * - InvalidationBus (Redis subscriber): announcements, PING and membership proofs;
 * - OutboxPoller (PostgreSQL, a connection of its own): the outbox read and its relay;
 * - RedisRepair (the same connection, statements serialised): the repair after a loss of trust;
 * - OutboxPruner (the pool): old outbox rows deleted;
 * - RedisServerWatch (Redis command connection): Redis losing writes under a live connection.
 *
 * Every heartbeat interval it sends the heartbeat and the witness, reads the
 * outbox, prunes, forgets old version floors and ticks the machine.
 */
export class CacheTrust implements TrustGate, BusHandlers {
  until = Number.NEGATIVE_INFINITY;
  private readonly machine: TrustMachine;
  private readonly poller: OutboxPoller;
  private readonly repair: RedisRepair;
  private readonly pruner: OutboxPruner;
  private readonly watch: RedisServerWatch;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly bus: InvalidationBus,
    /** The outbox on the connection whose reads decide trust. */
    trustOutbox: InvalidationOutbox,
    /** The outbox on the pool (pruning). */
    poolOutbox: InvalidationOutbox,
    tier: RedisTier,
    private readonly control: CacheControl,
    private readonly durations: Durations,
    leaseMs: number,
    private readonly counts: CacheCounts,
    private readonly logger: Logger,
  ) {
    this.machine = new TrustMachine(leaseMs);
    const relay = new OutboxRelay(tier, trustOutbox, control, durations.outboxRepairTimeoutMs);
    const report = (event: TrustEvent): void => this.handle(event);
    this.poller = new OutboxPoller(
      trustOutbox,
      relay,
      control,
      {
        retentionMs: durations.outboxRetentionMs,
        relayAfterMs: durations.relayAfterMs,
        statementTimeoutMs: durations.outboxStatementTimeoutMs,
        relayBudgetMs: durations.relayBudgetMs,
        slowMs: durations.heartbeatIntervalMs,
      },
      counts.outbox,
      logger,
      report,
    );
    this.repair = new RedisRepair(trustOutbox, relay, { retentionMs: durations.outboxRetentionMs, timeoutMs: durations.outboxRepairTimeoutMs });
    this.pruner = new OutboxPruner(poolOutbox, { retentionMs: durations.outboxRetentionMs, everyMs: durations.outboxPruneEveryMs, timeoutMs: durations.outboxRepairTimeoutMs }, logger);
    this.watch = new RedisServerWatch(tier, bus.instanceId, { ttlMs: durations.outboxRetentionMs, timeoutMs: durations.heartbeatTimeoutMs }, counts.server, logger, (lost) =>
      this.handle({ type: 'redis-reset', ...lost }),
    );
  }

  get trusted(): boolean {
    return performance.now() < this.until;
  }

  start(): void {
    this.bus.start(this);
    this.timer = setInterval(() => this.tick(), this.durations.heartbeatIntervalMs);
    this.tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.until = Number.NEGATIVE_INFINITY;
    await this.bus.leave();
  }

  invalidate(hash: string, version: number): void {
    this.control.drop(hash, version, 'bus');
  }

  subscribed(): void {
    this.handle({ type: 'subscribed' });
    this.handle({ type: 'tick' });
  }

  unsubscribed(): void {
    this.handle({ type: 'unsubscribed' });
  }

  pingAnswered(sentAt: number): void {
    this.handle({ type: 'ping-answered', sentAt });
  }

  membershipRenewed(sentAt: number): void {
    this.handle({ type: 'membership-renewed', sentAt });
  }

  membershipLost(): void {
    this.handle({ type: 'membership-lost' });
  }

  private tick(): void {
    this.bus.heartbeat();
    this.watch.check();
    void this.poller.poll();
    this.control.prune();
    this.pruner.maybePrune(performance.now());
    this.handle({ type: 'tick' });
  }

  /** Feeds one event to the machine, carries out its actions, and moves `until`. */
  private handle(event: TrustEvent): void {
    if (this.stopped) return;
    for (const action of this.machine.handle(event, performance.now())) this.act(action);
    this.until = this.machine.trustedUntil;
  }

  private act(action: TrustAction): void {
    switch (action.type) {
      case 'clear':
        this.control.clear();
        break;
      case 'repair':
        this.runRepair(action.attempt);
        break;
      case 'resubscribe':
        this.bus.resubscribe();
        break;
      case 'trusted':
        this.counts.recoveries++;
        if (action.deferred) this.logger.warn({ event: 'repair-deferred' }, 'postgres unreachable: using the caches, repairing redis from the outbox once postgres answers');
        this.logger.info({ event: 'cache-trusted' }, 'caches in use');
        break;
      case 'untrusted':
        this.counts.trustLost++;
        this.logger.warn({ event: 'cache-untrusted', reason: action.reason }, 'caches bypassed until the subscription is live again and redis is repaired');
        break;
      case 'outbox-lapsed':
        this.counts.outboxLapses++;
        this.logger.warn({ event: 'outbox-lapsed' }, 'no outbox read completed within the lease: caches bypassed until one does');
        break;
    }
  }

  private runRepair(attempt: number): void {
    this.repair.run().then(
      (marked) => {
        this.counts.outbox.relayed += marked;
        this.handle({ type: 'repair-done', attempt });
      },
      (error: unknown) => {
        const failure = failureOf(error);
        if (failure.kind !== 'unreachable') this.logger.warn({ err: error, failure }, 'repairing redis from the outbox failed; retrying');
        this.handle({ type: 'repair-failed', attempt, failure: failure.kind });
      },
    );
  }
}

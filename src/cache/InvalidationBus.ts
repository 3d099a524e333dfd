import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { KeyState } from '../keys/VerifiableKey';
import type { RedisTier } from './RedisTier';

export interface BusHandlers {
  /** A change was announced: drop copies of `hash` older than `version`. Runs synchronously, before the ack. */
  invalidate(hash: string, version: number): void;
  /** The subscription dropped or was re-established: announcements in between were lost. */
  subscriptionChanged(): void;
}

export interface AnnounceResult {
  /** Subscribers that PUBLISH reached, this instance's own included. */
  readonly receivers: number;
  /** Live members (other than this instance) that did not acknowledge in time. */
  readonly missing: readonly string[];
}

/** Collects the acknowledgements of one announcement. */
class AckWait {
  private readonly acked = new Set<string>();
  private check: () => void = () => {};

  ack(from: string): void {
    this.acked.add(from);
    this.check();
  }

  /** Resolves with the members of `expected` that have not acknowledged when all have or at `deadline`. */
  until(expected: readonly string[], deadline: number): Promise<string[]> {
    return new Promise((resolve) => {
      const finish = (): void => {
        clearTimeout(timer);
        this.check = () => {};
        resolve(expected.filter((member) => !this.acked.has(member)));
      };
      const timer = setTimeout(finish, Math.max(0, deadline - performance.now()));
      this.check = () => {
        if (expected.every((member) => this.acked.has(member))) finish();
      };
      this.check();
    });
  }
}

/**
 * The Redis pub/sub side of invalidation, on a subscriber connection of its
 * own. Hears announcements (drops the entry, then acknowledges to the
 * announcer), collects acknowledgements of its own announcements, and keeps
 * the two proofs that the in-process cache may be trusted:
 *
 * - a PING answered on the subscriber connection: replies and messages on one
 *   connection arrive in order, so a PONG proves that every announcement
 *   published before the PING was heard (and, the handler being synchronous,
 *   applied);
 * - a membership renewal (`<prefix>members`), so that announcers know to wait
 *   for this instance's acknowledgement while it may be trusting its cache.
 *
 * Both count from the moment they were sent; `liveUntil` is the older one
 * plus the lease.
 */
export class InvalidationBus {
  readonly instanceId = randomUUID();
  private epoch = 0;
  private subscribedEpoch = -1;
  private provenAt = Number.NEGATIVE_INFINITY;
  private renewedAt = Number.NEGATIVE_INFINITY;
  private pingInFlight = false;
  private renewInFlight = false;
  private readonly waits = new Map<string, AckWait>();
  private readonly ackChannel: string;
  private handlers: BusHandlers = { invalidate: () => {}, subscriptionChanged: () => {} };

  constructor(
    private readonly subscriber: Redis,
    private readonly tier: RedisTier,
    private readonly leaseMs: number,
    private readonly logger: Logger,
  ) {
    this.ackChannel = tier.names.acks(this.instanceId);
    // A renewal made on a connection since lost (Redis restarted, failed over)
    // may not be in the members that announcers read now: prove it anew.
    tier.onClose(() => {
      this.renewedAt = Number.NEGATIVE_INFINITY;
    });
  }

  /** Monotonic time (performance.now) until which both proofs hold. */
  get liveUntil(): number {
    return Math.min(this.provenAt, this.renewedAt) + this.leaseMs;
  }

  get subscribed(): boolean {
    return this.subscribedEpoch === this.epoch;
  }

  start(handlers: BusHandlers): void {
    this.handlers = handlers;
    this.subscriber.on('message', this.onMessage);
    this.subscriber.on('ready', this.onReady);
    this.subscriber.on('close', this.onClose);
    if (this.subscriber.status === 'ready') this.onReady();
  }

  /** Sends a PING on the subscriber connection and renews membership (each at most once in flight). */
  heartbeat(): void {
    const epoch = this.epoch;
    if (this.subscribedEpoch === epoch && !this.pingInFlight) {
      const sent = performance.now();
      this.pingInFlight = true;
      this.subscriber
        .ping()
        .then(
          () => {
            if (this.subscribedEpoch === epoch) this.provenAt = Math.max(this.provenAt, sent);
          },
          () => {},
        )
        .finally(() => {
          this.pingInFlight = false;
        });
    }
    if (!this.renewInFlight) {
      const sent = performance.now();
      this.renewInFlight = true;
      // Redis keeps the entry a little longer than this instance trusts itself.
      this.tier
        .renewMembership(this.instanceId, this.leaseMs + Math.max(50, this.leaseMs / 10))
        .then(
          () => {
            this.renewedAt = Math.max(this.renewedAt, sent);
          },
          () => {},
        )
        .finally(() => {
          this.renewInFlight = false;
        });
    }
  }

  /**
   * Writes a committed change through to Redis, publishes it, and waits until
   * every live member acknowledged or `timeoutMs` passed. Rejects when Redis
   * could not be reached: the caller then waits out the lease.
   */
  async announce(hash: string, state: KeyState, timeoutMs: number): Promise<AnnounceResult> {
    const deadline = performance.now() + timeoutMs;
    const changeId = randomUUID();
    const wait = new AckWait();
    this.waits.set(changeId, wait);
    try {
      const { receivers, members } = await this.tier.announce(hash, state, `${changeId} ${this.instanceId} ${hash} ${state.version}`);
      const missing = await wait.until(
        members.filter((member) => member !== this.instanceId),
        deadline,
      );
      return { receivers, missing };
    } finally {
      this.waits.delete(changeId);
    }
  }

  /** Leaves the membership, so that announcers stop waiting for this instance. */
  async leave(): Promise<void> {
    this.subscriber.off('message', this.onMessage);
    this.subscriber.off('ready', this.onReady);
    this.subscriber.off('close', this.onClose);
    this.subscribedEpoch = -1;
    await this.tier.leaveMembership(this.instanceId).catch(() => {});
  }

  private readonly onReady = (): void => {
    const epoch = ++this.epoch;
    this.subscriber.subscribe(this.tier.names.invalidations, this.ackChannel).then(
      () => {
        if (epoch !== this.epoch) return;
        this.subscribedEpoch = epoch;
        this.logger.info({ event: 'subscribed' }, 'listening for invalidations');
        this.handlers.subscriptionChanged();
        this.heartbeat();
      },
      (error: unknown) => {
        // Without the subscription nothing is trusted: start a fresh connection and try again.
        this.logger.warn({ err: error }, 'subscribing to invalidations failed; reconnecting');
        if (epoch === this.epoch) this.subscriber.disconnect(true);
      },
    );
  };

  private readonly onClose = (): void => {
    const wasSubscribed = this.subscribed;
    this.epoch++;
    this.provenAt = Number.NEGATIVE_INFINITY;
    if (wasSubscribed) this.logger.warn({ event: 'unsubscribed' }, 'invalidation subscription lost; bypassing the in-process cache');
    this.handlers.subscriptionChanged();
  };

  private readonly onMessage = (channel: string, message: string): void => {
    if (channel === this.ackChannel) {
      const [changeId, from] = message.split(' ');
      if (changeId !== undefined && from !== undefined) this.waits.get(changeId)?.ack(from);
      return;
    }
    const [changeId, origin, hash, versionText] = message.split(' ');
    const version = Number(versionText);
    if (changeId === undefined || origin === undefined || hash === undefined || !Number.isSafeInteger(version)) {
      this.logger.warn({ event: 'bad-invalidation' }, 'ignored a malformed invalidation message');
      return;
    }
    this.handlers.invalidate(hash, version);
    if (origin !== this.instanceId) {
      this.tier.publish(this.tier.names.acks(origin), `${changeId} ${this.instanceId}`).catch(() => {});
    }
  };
}

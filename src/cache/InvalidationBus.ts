import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Command, type Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { KeyState } from '../keys/VerifiableKey';
import { LEASE_MEMORY_MS } from './durations';
import { type Member, type RedisTier, memberOf, runIdOf } from './RedisTier';

/** What the bus reports (CacheTrust turns all but `invalidate` into TrustMachine events). */
export interface BusHandlers {
  /** A change was announced: drop copies of `hash` older than `version`. Runs synchronously, before the ack. */
  invalidate(hash: string, version: number): void;
  /** The subscription was (re-)established: announcements before it may have been lost. */
  subscribed(): void;
  /** The subscription was lost. */
  unsubscribed(): void;
  /** A PING sent at `sentAt` (performance.now) on the current subscription was answered. */
  pingAnswered(sentAt: number): void;
  /** A membership renewal sent at `sentAt` while subscribed was answered. */
  membershipRenewed(sentAt: number): void;
  /** The command connection closed: a renewal made on it may be gone. */
  membershipLost(): void;
}

/** The durations the bus uses (from Durations). */
export interface BusTimings {
  /** This instance's KEYWARD_CACHE_LEASE_MS, published with its membership. */
  readonly leaseMs: number;
  /** Time limit of a PING or renewal (Durations.heartbeatTimeoutMs). */
  readonly heartbeatTimeoutMs: number;
  /** How long Redis lists the instance after a renewal (Durations.membershipTtlMs). */
  readonly membershipTtlMs: number;
}

const NO_HANDLERS: BusHandlers = {
  invalidate: () => {},
  subscribed: () => {},
  unsubscribed: () => {},
  pingAnswered: () => {},
  membershipRenewed: () => {},
  membershipLost: () => {},
};

export interface AnnounceResult {
  /** Subscribers that PUBLISH reached, this instance's own included when it was subscribed. */
  readonly receivers: number;
  /** True when every instance that could be trusting its caches acknowledged: the change holds everywhere. */
  readonly confirmed: boolean;
  /** Listed members (other than this instance) that did not acknowledge in time. */
  readonly missing: readonly string[];
  /** Why the acknowledgements do not prove the change everywhere (empty when confirmed or only `missing`). */
  readonly doubts: readonly string[];
  /** The longest lease an instance that may not have heard the change can hold: what to wait out when not confirmed. */
  readonly leaseMs: number;
  /** When the announcement's milestones happened (epoch ms, µs resolution), for the revoke breakdown (ChangePropagator logs them at debug level). */
  readonly trace: AnnounceTrace;
}

/** The milestones of one announcement on the announcer's clock. */
export interface AnnounceTrace {
  /** The announcement's id: the receivers' `change-heard` lines carry it. */
  readonly changeId: string;
  /** Redis answered the announce script (on a cluster: the control master's, after the write-through). */
  readonly scriptDoneAt: number;
  /** Each acknowledging instance, and when its ack arrived. */
  readonly ackedAt: Readonly<Record<string, number>>;
}

/** Now as epoch milliseconds with performance.now()'s resolution: one clock for every process on a machine. */
export function epochNow(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Decides from what one announcement got back whether it reached every
 * instance that could be trusting its caches (pure: no I/O, no clock).
 * `receivers` is PUBLISH's count, which includes the announcer's own
 * subscriber when it was subscribed (`selfHeard` tells, once its copy of the
 * message arrives); `members` are the members listed live by Redis's clock.
 * Confirmed only with an ack from every listed member, as many acks as other
 * receivers, no ack from an unlisted instance (then the list is incomplete:
 * wiped, evicted, or Redis's clock stepped) and every listed lease known.
 */
export function judgeAcks(input: {
  readonly self: string;
  readonly receivers: number;
  readonly members: readonly Member[];
  readonly acked: ReadonlySet<string>;
  readonly selfHeard: boolean;
}): { confirmed: boolean; missing: string[]; doubts: string[] } {
  const others = input.members.filter((member) => member.id !== input.self);
  const listed = new Set(others.map((member) => member.id));
  const missing = others.filter((member) => !input.acked.has(member.id)).map((member) => member.id);
  const doubts: string[] = [];
  const expectedAcks = input.receivers - (input.selfHeard ? 1 : 0);
  if (input.acked.size < expectedAcks) doubts.push(`${input.acked.size} acks for ${input.receivers} receivers${input.selfHeard ? ' (this one included)' : ''}`);
  const unlisted = [...input.acked].filter((id) => !listed.has(id));
  if (unlisted.length > 0) doubts.push(`acks from unlisted instances ${unlisted.join(',')}`);
  const unknown = others.filter((member) => member.leaseMs === undefined).map((member) => member.id);
  if (unknown.length > 0) doubts.push(`leases unknown for ${unknown.join(',')}`);
  return { confirmed: missing.length === 0 && doubts.length === 0, missing, doubts };
}

/** Collects the acknowledgements of one announcement. */
class AckWait {
  readonly acked = new Set<string>();
  readonly ackedAt: Record<string, number> = {};
  selfHeard = false;
  private check: () => void = () => {};

  ack(from: string): void {
    this.acked.add(from);
    this.ackedAt[from] ??= epochNow();
    this.check();
  }

  heard(): void {
    this.selfHeard = true;
    this.check();
  }

  /** Resolves once `done()` holds, or at `deadline`. */
  until(done: () => boolean, deadline: number): Promise<void> {
    return new Promise((resolve) => {
      const finish = (): void => {
        clearTimeout(timer);
        this.check = () => {};
        resolve();
      };
      const timer = setTimeout(finish, Math.max(0, deadline - performance.now()));
      this.check = () => {
        if (done()) finish();
      };
      this.check();
    });
  }
}


/**
 * The Redis pub/sub side of invalidation, on a subscriber connection of its
 * own. Hears announcements (drops the entry, then acknowledges to the
 * announcer), collects acknowledgements of its own announcements, and sends
 * the two proofs that the in-process cache may be trusted (reported to
 * CacheTrust's TrustMachine, which keeps them):
 *
 * - a PING answered on the subscriber connection: replies and messages on one
 *   connection arrive in order, so a PONG proves that every announcement
 *   published before the PING was heard (and, the handler being synchronous,
 *   applied);
 * - a membership renewal (`<prefix>members`, `<prefix>{ctl}members` on a
 *   cluster; the member string carrying this instance's lease), so that
 *   announcers know to wait for this instance's acknowledgement, or out its
 *   lease, while it may be trusting its cache. Renewed only while
 *   subscribed: an instance that cannot hear changes trusts nothing, and
 *   must not make every change in the fleet wait for it.
 *
 * Both count from the moment they were sent; the older one plus the lease
 * bounds trust. Both are time-limited by the lease, not by the Redis
 * command timeout: a PONG or renewal that comes late, within the lease, is
 * still proof (a command timeout shorter than the link's round trip would
 * otherwise leave the instance never trusting its caches, silently).
 *
 * On a Redis Cluster (README, "Redis Cluster") the channels are shard
 * channels of the control slot (SSUBSCRIBE on the subscriber connection,
 * which is to the master serving that slot; SPUBLISH), so the announcement,
 * its message and the PING are on one server, in order, as on one Redis.
 * When that master stops serving the slot (failover, migration), Redis
 * unsubscribes the connection (or answers SSUBSCRIBE with MOVED): the
 * subscription counts as lost at once and the connection is made anew to
 * the slot's new master (a master: a replica accepts SSUBSCRIBE too, but
 * hears the messages late). A renewal counts as proof only if it ran on the
 * server the subscription is on (same run_id): a renewal routed to a new
 * master while this connection still hears the old one (a partition during
 * a failover) proves nothing about what it hears; the bus then subscribes
 * again.
 */
export class InvalidationBus {
  readonly instanceId = randomUUID();
  private readonly member: string;
  private epoch = 0;
  private subscribedEpoch = -1;
  private pingInFlight = false;
  private renewInFlight = false;
  private pingFailing = false;
  private renewFailing = false;
  private readonly waits = new Map<string, AckWait>();
  private readonly ackChannel: string;
  /** Leases of the members seen in the member list (RedisNames.members) lately (id → lease, last seen), this instance's own included. */
  private readonly leases = new Map<string, { leaseMs: number; seenAt: number }>();
  private handlers: BusHandlers = NO_HANDLERS;
  private readonly leaseMs: number;
  /** Shard channels on a Redis Cluster (SSUBSCRIBE, `smessage`). */
  private readonly sharded: boolean;
  /** The run_id of the server the subscription is on (cluster only). */
  private subscriberRunId: string | undefined;
  /** Subscribing failed since the last success: logged once. */
  private subscribeFailing = false;

  constructor(
    private readonly subscriber: Redis,
    private readonly tier: RedisTier,
    private readonly timings: BusTimings,
    private readonly logger: Logger,
  ) {
    this.leaseMs = timings.leaseMs;
    this.sharded = tier.names.cluster;
    this.ackChannel = tier.names.acks(this.instanceId);
    this.member = memberOf(this.instanceId, timings.leaseMs);
    // A renewal made on a connection since lost (Redis restarted, failed over)
    // may not be in the members that announcers read now: prove it anew.
    tier.onClose(() => this.handlers.membershipLost());
  }

  get subscribed(): boolean {
    return this.subscribedEpoch === this.epoch;
  }

  /**
   * The longest lease any instance of the fleet may hold, as far as this one
   * knows: its own, and every lease seen in the member list within the last
   * two minutes (so that a list wiped, evicted or emptied by a step of
   * Redis's clock does not make the fleet's leases unknown).
   */
  longestLeaseMs(members: readonly Member[] = []): number {
    const now = performance.now();
    let longest = this.leaseMs;
    for (const member of members) longest = Math.max(longest, member.leaseMs ?? 0);
    for (const [id, seen] of this.leases) {
      if (now - seen.seenAt > LEASE_MEMORY_MS) this.leases.delete(id);
      else longest = Math.max(longest, seen.leaseMs);
    }
    return longest;
  }

  start(handlers: BusHandlers): void {
    this.handlers = handlers;
    this.subscriber.on(this.sharded ? 'smessage' : 'message', this.onMessage);
    this.subscriber.on('ready', this.onReady);
    this.subscriber.on('close', this.onClose);
    if (this.sharded) this.subscriber.on('moved', this.onMoved);
    if (this.subscriber.status === 'ready') this.onReady();
  }

  /** While subscribed, sends a PING on the subscriber connection and renews membership (each at most once in flight). */
  heartbeat(): void {
    const epoch = this.epoch;
    if (this.subscribedEpoch !== epoch) return;
    if (!this.pingInFlight) {
      const sent = performance.now();
      this.pingInFlight = true;
      const ping = new Command('ping', [], { replyEncoding: 'utf8' });
      // Set before sending, so the connection's shorter commandTimeout does not apply.
      ping.setTimeout(this.timings.heartbeatTimeoutMs);
      (this.subscriber.sendCommand(ping) as Promise<unknown>)
        .then(
          () => {
            if (this.subscribedEpoch === epoch) this.handlers.pingAnswered(sent);
            if (this.pingFailing) this.logger.info({ event: 'heartbeat-answered', ms: Math.round(performance.now() - sent) }, 'invalidation heartbeat answered again');
            this.pingFailing = false;
          },
          (error: unknown) => {
            if (!this.pingFailing) this.logger.warn({ event: 'heartbeat-failed', err: error, ms: Math.round(performance.now() - sent) }, 'invalidation heartbeat (PING) failed or not answered within the lease');
            this.pingFailing = true;
          },
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
        .renewMembership(this.member, this.timings.membershipTtlMs, this.timings.heartbeatTimeoutMs)
        .then(
          ({ members, runId }) => {
            const sameServer = !this.sharded || (runId !== undefined && runId === this.subscriberRunId);
            if (!sameServer && this.subscribedEpoch === epoch) {
              // The two proofs disagree on the server: neither counts; subscribe again where the slot is served now.
              this.restart('membership-renewed-elsewhere', 'membership renewed on another server than the subscription is on (a failover under way): subscribing again');
            }
            if (this.subscribedEpoch === epoch && sameServer) this.handlers.membershipRenewed(sent);
            // Renewed after the subscription was lost: leave again (onClose may have left before this landed).
            else if (!this.subscribed) this.tier.leaveMembership(this.member).catch(() => {});
            this.remember(members);
            if (this.renewFailing) this.logger.info({ event: 'membership-renewed' }, 'membership renewed again');
            this.renewFailing = false;
          },
          (error: unknown) => {
            if (!this.renewFailing) this.logger.warn({ event: 'membership-renewal-failed', err: error }, 'membership renewal failed or not answered within the lease');
            this.renewFailing = true;
          },
        )
        .finally(() => {
          this.renewInFlight = false;
        });
    }
  }

  /**
   * Writes a committed change through to Redis, publishes it, and waits until
   * every instance that could be trusting its caches acknowledged (see
   * judgeAcks) or `timeoutMs` passed. Rejects when Redis could not be
   * reached: the caller then waits out `longestLeaseMs()`.
   */
  async announce(hash: string, state: KeyState, timeoutMs: number): Promise<AnnounceResult> {
    const deadline = performance.now() + timeoutMs;
    const changeId = randomUUID();
    const wait = new AckWait();
    this.waits.set(changeId, wait);
    try {
      const { receivers, members } = await this.tier.announce(hash, state, `${changeId} ${this.instanceId} ${hash} ${state.version}`);
      const scriptDoneAt = epochNow();
      this.remember(members);
      const judge = () => judgeAcks({ self: this.instanceId, receivers, members, acked: wait.acked, selfHeard: wait.selfHeard });
      await wait.until(() => judge().confirmed, deadline);
      return { receivers, ...judge(), leaseMs: this.longestLeaseMs(members), trace: { changeId, scriptDoneAt, ackedAt: wait.ackedAt } };
    } finally {
      this.waits.delete(changeId);
    }
  }

  /** Leaves the membership, so that announcers stop waiting for this instance. */
  async leave(): Promise<void> {
    this.subscriber.off(this.sharded ? 'smessage' : 'message', this.onMessage);
    this.subscriber.off('ready', this.onReady);
    this.subscriber.off('close', this.onClose);
    this.subscriber.off('moved', this.onMoved);
    this.subscribedEpoch = -1;
    await this.tier.leaveMembership(this.member).catch(() => {});
  }

  /** Drops the subscriber connection and makes it anew (after Redis lost writes: the server under it may have changed). */
  resubscribe(): void {
    this.subscriber.disconnect(true);
  }

  private remember(members: readonly Member[]): void {
    const now = performance.now();
    for (const member of members) {
      if (member.leaseMs !== undefined) this.leases.set(member.id, { leaseMs: member.leaseMs, seenAt: now });
    }
  }

  private readonly onReady = (): void => {
    const epoch = ++this.epoch;
    this.subscribe().then(
      () => {
        if (epoch !== this.epoch) return;
        this.subscribedEpoch = epoch;
        this.subscribeFailing = false;
        this.logger.info({ event: 'subscribed', instance: this.instanceId, leaseMs: this.leaseMs }, 'listening for invalidations');
        this.handlers.subscribed();
        this.heartbeat();
      },
      (error: unknown) => {
        // Without the subscription nothing is trusted: start a fresh connection and try again.
        if (!this.subscribeFailing) this.logger.warn({ err: error }, 'subscribing to invalidations failed; reconnecting');
        this.subscribeFailing = true;
        if (epoch === this.epoch) this.subscriber.disconnect(true);
      },
    );
  };

  /** Subscribes to the invalidations and this instance's acks (on a cluster, after reading the server's run_id). */
  private async subscribe(): Promise<void> {
    if (!this.sharded) {
      await this.subscriber.subscribe(this.tier.names.invalidations, this.ackChannel);
      return;
    }
    this.subscriberRunId = undefined;
    // A replica of the slot's master accepts SSUBSCRIBE too (Redis 7), but
    // hears SPUBLISH only through the cluster bus, later than a PING's answer:
    // only the master will do (the connector found a stale one: try again).
    const [role] = (await this.subscriber.role()) as [string, ...unknown[]];
    if (role !== 'master') throw new Error(`the server found for the control slot is a ${role} (a failover under way)`);
    const runId = runIdOf(await this.subscriber.info('server'));
    await this.subscriber.ssubscribe(this.tier.names.invalidations, this.ackChannel);
    this.subscriberRunId = runId;
  }

  /**
   * Cluster: the server unsubscribed this connection from a shard channel
   * (the control slot moved away from it) or answered SSUBSCRIBE with MOVED.
   */
  private readonly onMoved = (): void => {
    if (this.subscribed) this.restart('subscription-moved', 'the control slot moved to another redis master; subscribing there');
  };

  /**
   * The subscription is lost at once, before any later PING answer could
   * count, then made anew on a new connection, to the server that serves the
   * control slot by then (the close that follows changes nothing).
   */
  private restart(event: string, message: string): void {
    this.logger.warn({ event }, message);
    this.onClose();
    this.subscriber.disconnect(true);
  }

  private readonly onClose = (): void => {
    const wasSubscribed = this.subscribed;
    this.epoch++;
    if (wasSubscribed) {
      this.logger.warn({ event: 'unsubscribed' }, 'invalidation subscription lost; bypassing the in-process cache');
      // It trusts nothing now (unsubscribed, below): announcers need not wait for it.
      this.tier.leaveMembership(this.member).catch(() => {});
    }
    this.handlers.unsubscribed();
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
      const evictedAt = epochNow();
      this.tier.publish(this.tier.names.acks(origin), `${changeId} ${this.instanceId}`).catch(() => {});
      // The receiving end of the revoke breakdown (bench/revokeLatency.ts), at debug level only.
      if (this.logger.isLevelEnabled('debug')) this.logger.debug({ event: 'change-heard', changeId, instance: this.instanceId, evictedAt, ackSentAt: epochNow() }, 'dropped a changed key and acknowledged');
    } else {
      this.waits.get(changeId)?.heard();
    }
  };
}

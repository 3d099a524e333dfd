import { ConfigError, type Config } from '../config';

/**
 * Every duration keyward derives from its configuration, in one place, and the
 * inequalities between them that revocation (README, "Caching and
 * revocation") depends on, checked at start by `checkDurations`.
 *
 * Local durations are measured on the monotonic clock (performance.now);
 * only timestamps that leave the process (sealed expiries, Redis's own TIME,
 * PostgreSQL's now()) are wall-clock.
 */

/** The part of the configuration the durations derive from. */
export type DurationInputs = Pick<Config, 'cache' | 'db'>;

/** Margin added to a lease where another party must outlast it (Redis's membership expiry, the announcer's wait). */
export function leaseMarginMs(leaseMs: number): number {
  return Math.max(50, leaseMs / 10);
}

/**
 * How long an announcer waits when not every instance confirmed a change,
 * for a fleet whose longest lease is `leaseMs` (ChangePropagator): an instance
 * that missed the announcement stops trusting its caches within its lease
 * unless it read the outbox since, and an outbox read that began before the
 * row was overdue relays nothing, so the relay delay counts too; the margin
 * covers timer lateness and clock-rate differences.
 */
export function waitOutMs(leaseMs: number, relayAfterMs: number): number {
  return leaseMs + relayAfterMs + leaseMarginMs(leaseMs);
}

/** How far past its sealed expiry a Redis entry is still accepted (EntrySeal's default: clock differences between instances). */
export const SEAL_GRACE_MS = 5_000;
/** How often the invalidation outbox is pruned of rows past its retention. */
export const OUTBOX_PRUNE_EVERY_MS = 60_000;
/**
 * How long an instance remembers a lease it saw in the member list after it
 * last saw it, so that a list wiped, evicted or emptied by a step of Redis's
 * clock does not make the fleet's leases unknown to an announcer in doubt.
 */
export const LEASE_MEMORY_MS = 120_000;

export interface Durations {
  /**
   * The longest a Verify lookup takes from its ticket to its fill: a Redis
   * read (KEYWARD_REDIS_TIMEOUT_MS), then a PostgreSQL read
   * (KEYWARD_DB_VERIFY_TIMEOUT_MS, the wait for a batch and a connection
   * included). A fill can land that long after the change it missed.
   */
  readonly longestLookupMs: number;
  /**
   * Every quarter lease CacheTrust sends the heartbeat (PING, membership
   * renewal), reads the outbox and re-evaluates trust: three more chances
   * within the lease after one fails.
   */
  readonly heartbeatIntervalMs: number;
  /**
   * Time limit of a PING or membership renewal: the lease, not the Redis
   * command timeout, because an answer that comes late still proves what it
   * proves, counted from when it was sent.
   */
  readonly heartbeatTimeoutMs: number;
  /**
   * Time limit of the outbox read that proves the instance heard every
   * change: half a lease, so that a read answered proves something (it counts
   * from when it was sent, for a lease) and a slow PostgreSQL frees the
   * connection for the next read.
   */
  readonly outboxStatementTimeoutMs: number;
  /**
   * Time limit of the outbox's repair reads and delivered marks: they prove
   * nothing by themselves, so they get twice the lease.
   */
  readonly outboxRepairTimeoutMs: number;
  /**
   * After this much of an outbox read, no further tombstone chunk is begun:
   * the rest waits for the next read, so that a bulk change cannot stretch a
   * read past the next one.
   */
  readonly relayBudgetMs: number;
  /**
   * Undelivered outbox rows older than this are written into Redis by every
   * instance: the changing instance has had its ack timeout to write the
   * change through and mark it delivered.
   */
  readonly relayAfterMs: number;
  /**
   * The changing instance marks its delivered rows after a third of the relay
   * delay (many in one statement), well before other instances would relay
   * them again (which would be harmless: a tombstone never replaces data of
   * its own version).
   */
  readonly markDeliveredDelayMs: number;
  /**
   * How long Redis lists an instance after a renewal (by Redis's clock): a
   * little longer than the instance trusts itself on it, so that announcers
   * wait for every instance that may trust its caches.
   */
  readonly membershipTtlMs: number;
  /**
   * What an announcer waits when not every instance confirmed a change, with
   * this instance's own lease (ChangePropagator puts the longest lease of the
   * fleet in, never less than this): see `waitOutMs`.
   */
  readonly waitOutMs: number;
  /**
   * After a Redis error on the Verify path, Redis is skipped for one lease:
   * Verify does not pay the Redis timeout on every call, and tries again
   * before the next proof would have lapsed anyway.
   */
  readonly redisSuspendMs: number;
  /**
   * Silence on a Redis connection this long means a dead peer TCP has not
   * noticed: reconnect. Heartbeats keep both connections busy every quarter
   * lease, so twice the lease (at least a second) is never reached by a live one.
   */
  readonly redisSocketTimeoutMs: number;
  /** Time limit of a Redis command on the Verify path and of fills (KEYWARD_REDIS_TIMEOUT_MS). */
  readonly redisCommandTimeoutMs: number;
  /**
   * Time limit of connecting to Redis: ten command timeouts, at least a
   * second (a handshake is slower than a command).
   */
  readonly redisConnectTimeoutMs: number;
  /**
   * How long FillGuard keeps a change's version floor. While it is kept, a
   * fill that read data older than the change is refused and a Redis copy
   * older than it counts as a miss. Longer than the longest lookup (doubled,
   * for event-loop lag) plus the relay delay and a lease (by then the change
   * is in Redis: written through, or relayed by an outbox read), plus a second.
   */
  readonly fillGuardRetentionMs: number;
  /**
   * How long FillGuard keeps the floor of a change read from the outbox
   * undelivered (no instance wrote it into Redis yet): the relay of a large
   * backlog can take longer than `fillGuardRetentionMs`, so it is kept until
   * any Redis entry older than the change has expired (the outbox retention).
   */
  readonly heldFloorRetentionMs: number;
  /**
   * Outbox rows are kept this long (and repaired into Redis after a loss of
   * trust): longer than any Redis entry lives, TTL plus the seal's grace, with
   * the rest of a minute for clocks that differ between instances and PostgreSQL.
   */
  readonly outboxRetentionMs: number;
  /** How often the outbox is pruned (rows past `outboxRetentionMs`). */
  readonly outboxPruneEveryMs: number;
  /** How far past its sealed expiry a Redis entry is still accepted (EntrySeal). */
  readonly sealGraceMs: number;
}

/** Derives every duration from the configuration (see each field for why it has its value). */
export function deriveDurations(config: DurationInputs): Durations {
  const { cache, db } = config;
  const lease = cache.leaseMs;
  const longestLookupMs = db.verifyTimeoutMs + cache.redisTimeoutMs;
  const outboxStatementTimeoutMs = Math.max(10, Math.floor(lease / 2));
  const relayAfterMs = cache.ackTimeoutMs;
  return {
    longestLookupMs,
    heartbeatIntervalMs: Math.max(10, Math.floor(lease / 4)),
    heartbeatTimeoutMs: lease,
    outboxStatementTimeoutMs,
    outboxRepairTimeoutMs: outboxStatementTimeoutMs * 4,
    relayBudgetMs: lease / 4,
    relayAfterMs,
    markDeliveredDelayMs: Math.max(1, Math.floor(relayAfterMs / 3)),
    membershipTtlMs: lease + leaseMarginMs(lease),
    waitOutMs: waitOutMs(lease, relayAfterMs),
    redisSuspendMs: lease,
    redisSocketTimeoutMs: Math.max(1_000, 2 * lease),
    redisCommandTimeoutMs: cache.redisTimeoutMs,
    redisConnectTimeoutMs: Math.max(1_000, cache.redisTimeoutMs * 10),
    fillGuardRetentionMs: 2 * longestLookupMs + relayAfterMs + lease + 1_000,
    outboxRetentionMs: cache.redisTtlMs + 60_000,
    heldFloorRetentionMs: cache.redisTtlMs + 60_000,
    outboxPruneEveryMs: OUTBOX_PRUNE_EVERY_MS,
    sealGraceMs: SEAL_GRACE_MS,
  };
}

const LEASE = 'KEYWARD_CACHE_LEASE_MS';
const REDIS_TIMEOUT = 'KEYWARD_REDIS_TIMEOUT_MS';
const REDIS_TTL = 'KEYWARD_REDIS_TTL_MS';
const VERIFY_TIMEOUT = 'KEYWARD_DB_VERIFY_TIMEOUT_MS';
const ACK_TIMEOUT = 'KEYWARD_INVALIDATION_ACK_TIMEOUT_MS';

/**
 * Throws ConfigError, naming the variables, unless every inequality the
 * safety (and liveness) argument of the caches needs holds. The first two
 * constrain the configuration; the others hold by construction of
 * `deriveDurations` and are checked so that a change to a formula that
 * breaks one stops the process (and the tests) instead of weakening revocation.
 */
export function checkDurations(config: DurationInputs, d: Durations = deriveDurations(config)): void {
  const { cache, db } = config;
  const lease = `${LEASE}=${cache.leaseMs}`;
  const fail = (message: string): never => {
    throw new ConfigError(message);
  };

  // Liveness. A tombstone chunk that times out is retried once, so an outbox read's relay can take
  // twice the Redis timeout, and its proof counts for a lease from when it was sent.
  if (cache.leaseMs < 2 * cache.redisTimeoutMs) {
    fail(`${lease} must be at least twice ${REDIS_TIMEOUT}=${cache.redisTimeoutMs}: an outbox read that relays a change into a slow Redis (one chunk, retried once) must be able to end within the lease, or it never renews the proof and the caches go untrusted`);
  }
  // Safety. A lookup that read PostgreSQL just before a change fills Redis up to
  // longestLookupMs after it; the written-through record (or tombstone) must still be in Redis
  // to refuse that fill by version, or the old record is cached for a whole TTL after the floors are gone.
  if (cache.redisTtlMs <= d.longestLookupMs) {
    fail(
      `${REDIS_TTL}=${cache.redisTtlMs} must be greater than ${VERIFY_TIMEOUT}=${db.verifyTimeoutMs} plus ${REDIS_TIMEOUT}=${cache.redisTimeoutMs}: a lookup that read PostgreSQL before a change can fill Redis that long after the change was written there, and the change's entry must still be there to refuse the old record`,
    );
  }

  // Liveness. A heartbeat (and outbox read) must come more often than the lease it renews.
  if (d.heartbeatIntervalMs >= cache.leaseMs) {
    fail(`the heartbeat interval (${d.heartbeatIntervalMs} ms, from ${lease}) must be shorter than the lease: proofs would lapse between heartbeats`);
  }
  // Liveness. An outbox read answered after a lease proves nothing (it counts from when it was sent).
  if (d.outboxStatementTimeoutMs >= cache.leaseMs) {
    fail(`the outbox read's time limit (${d.outboxStatementTimeoutMs} ms, from ${lease}) must be shorter than the lease: a read answered later proves nothing`);
  }
  // Liveness. A live connection carries a heartbeat every interval; a socket timeout below it reconnects (and drops trust) for nothing.
  if (d.redisSocketTimeoutMs <= d.heartbeatIntervalMs) {
    fail(`the Redis socket timeout (${d.redisSocketTimeoutMs} ms) must be longer than the heartbeat interval (${d.heartbeatIntervalMs} ms, from ${lease}): live connections would be dropped`);
  }
  // Safety. Redis must list an instance for as long as it may trust its caches on that renewal, or announcers would not wait for it.
  if (d.membershipTtlMs <= cache.leaseMs) {
    fail(`the membership expiry (${d.membershipTtlMs} ms) must be longer than ${lease}: an instance trusting its caches could be missing from the member list`);
  }
  // Safety. An announcer in doubt returns only once every instance that missed the change has
  // read it from the outbox or stopped trusting (a lease), and the overdue row was relayed into Redis.
  if (d.waitOutMs <= cache.leaseMs + d.relayAfterMs) {
    fail(`the wait-out of an unconfirmed change (${d.waitOutMs} ms) must be longer than ${lease} plus ${ACK_TIMEOUT}=${cache.ackTimeoutMs} (the relay delay)`);
  }
  // Safety. While a floor is kept, an older Redis copy counts as a miss; it must be kept until the change is in
  // Redis (written through, or relayed once overdue: the relay delay plus a lease), past the longest lookup.
  if (d.fillGuardRetentionMs <= d.longestLookupMs + d.relayAfterMs + cache.leaseMs) {
    fail(
      `the FillGuard retention (${d.fillGuardRetentionMs} ms) must be longer than ${VERIFY_TIMEOUT}=${db.verifyTimeoutMs} plus ${REDIS_TIMEOUT}=${cache.redisTimeoutMs} plus ${ACK_TIMEOUT}=${cache.ackTimeoutMs} plus ${lease}: a floor forgotten before the change reached Redis lets an old Redis copy be trusted`,
    );
  }
  // Safety. An undelivered change's floor must outlast every Redis entry older than it (sealed expiry and grace),
  // however long the relay of a backlog takes.
  if (d.heldFloorRetentionMs <= cache.redisTtlMs + d.sealGraceMs) {
    fail(`the held-floor retention (${d.heldFloorRetentionMs} ms) must be longer than ${REDIS_TTL}=${cache.redisTtlMs} plus the seal's grace (${d.sealGraceMs} ms): an old Redis copy of an undelivered change could be trusted before its tombstone lands`);
  }
  // Safety. The repair after a loss of trust tombstones the retained rows; an older change's
  // entries must all have expired, sealed expiry and grace included.
  if (d.outboxRetentionMs <= cache.redisTtlMs + d.sealGraceMs) {
    fail(`the outbox retention (${d.outboxRetentionMs} ms) must be longer than ${REDIS_TTL}=${cache.redisTtlMs} plus the seal's grace (${d.sealGraceMs} ms): a change dropped from the outbox could still have an old entry in Redis`);
  }
}

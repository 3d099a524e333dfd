import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Durations, type DurationInputs, checkDurations, deriveDurations, waitOutMs } from '../src/cache/durations';
import { FillGuard } from '../src/cache/FillGuard';
import { ConfigError, DEFAULTS } from '../src/config';

const defaults: DurationInputs = { cache: DEFAULTS.cache, db: DEFAULTS.db };

function withCache(cache: Partial<DurationInputs['cache']>, db: Partial<DurationInputs['db']> = {}): DurationInputs {
  return { cache: { ...DEFAULTS.cache, ...cache }, db: { ...DEFAULTS.db, ...db } };
}

/** Asserts that checkDurations refuses, with a message matching every pattern. */
function refused(config: DurationInputs, patterns: readonly RegExp[], derived?: Durations): void {
  assert.throws(
    () => checkDurations(config, derived),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError, `not a ConfigError: ${String(error)}`);
      for (const pattern of patterns) assert.match(error.message, pattern);
      return true;
    },
  );
}

describe('deriveDurations', () => {
  it('derives the documented values from the defaults', () => {
    assert.deepEqual(deriveDurations(defaults), {
      longestLookupMs: 1_100,
      heartbeatIntervalMs: 250,
      heartbeatTimeoutMs: 1_000,
      outboxStatementTimeoutMs: 500,
      outboxRepairTimeoutMs: 2_000,
      relayBudgetMs: 250,
      relayAfterMs: 250,
      markDeliveredDelayMs: 83,
      membershipTtlMs: 1_100,
      waitOutMs: 1_350,
      redisSuspendMs: 1_000,
      redisSocketTimeoutMs: 2_000,
      redisCommandTimeoutMs: 100,
      redisConnectTimeoutMs: 1_000,
      // 2 × (1000 + 100) + 250 + 1000 + 1000, as createCaches computed it before.
      fillGuardRetentionMs: 4_450,
      heldFloorRetentionMs: 360_000,
      outboxRetentionMs: 360_000,
      outboxPruneEveryMs: 60_000,
      sealGraceMs: 5_000,
    });
  });

  it('waits out the longest lease of the fleet plus the relay delay and a margin', () => {
    assert.equal(waitOutMs(1_000, 250), 1_350);
    assert.equal(waitOutMs(10_000, 250), 11_250);
    assert.equal(waitOutMs(100, 1), 151);
  });

  it('meets every derived inequality for any configuration that meets the configured ones', () => {
    let checked = 0;
    for (const leaseMs of [100, 101, 250, 1_000, 4_000, 60_000]) {
      for (const redisTimeoutMs of [1, 50, 100, 2_000, 30_000]) {
        for (const ackTimeoutMs of [1, 2, 250, 2_000, 60_000]) {
          for (const verifyTimeoutMs of [10, 1_000, 60_000]) {
            for (const redisTtlMs of [1_000, 300_000, 86_400_000]) {
              const config = withCache({ leaseMs, redisTimeoutMs, ackTimeoutMs, redisTtlMs }, { verifyTimeoutMs });
              if (leaseMs < 2 * redisTimeoutMs || redisTtlMs <= verifyTimeoutMs + redisTimeoutMs) continue;
              assert.doesNotThrow(() => checkDurations(config), JSON.stringify(config));
              checked++;
            }
          }
        }
      }
    }
    assert.ok(checked > 100, `only ${checked} combinations checked`);
  });
});

describe('checkDurations', () => {
  it('passes the default configuration', () => {
    assert.doesNotThrow(() => checkDurations(defaults));
  });

  it('accepts an ack timeout longer than the lease: the wait-out and the floors include it', () => {
    assert.doesNotThrow(() => checkDurations(withCache({ ackTimeoutMs: 2_000, leaseMs: 1_000 })));
  });

  it('refuses a lease shorter than twice the Redis timeout, naming both', () => {
    refused(withCache({ leaseMs: 1_000, redisTimeoutMs: 501 }), [/^KEYWARD_CACHE_LEASE_MS=1000 must be at least twice KEYWARD_REDIS_TIMEOUT_MS=501: /]);
    assert.doesNotThrow(() => checkDurations(withCache({ leaseMs: 1_000, redisTimeoutMs: 500 })));
  });

  it('refuses a Redis TTL not longer than the longest lookup, naming the three variables', () => {
    refused(withCache({ redisTtlMs: 1_100 }, { verifyTimeoutMs: 1_000 }), [
      /^KEYWARD_REDIS_TTL_MS=1100 must be greater than KEYWARD_DB_VERIFY_TIMEOUT_MS=1000 plus KEYWARD_REDIS_TIMEOUT_MS=100: /,
    ]);
    assert.doesNotThrow(() => checkDurations(withCache({ redisTtlMs: 1_101 }, { verifyTimeoutMs: 1_000 })));
  });

  // The rest hold by construction; a formula changed so that one no longer does is refused.
  const derived = deriveDurations(defaults);
  const broken = (change: Partial<Durations>): Durations => ({ ...derived, ...change });

  it('refuses a heartbeat interval not shorter than the lease', () => {
    refused(defaults, [/^the heartbeat interval \(1000 ms, from KEYWARD_CACHE_LEASE_MS=1000\) must be shorter than the lease/], broken({ heartbeatIntervalMs: 1_000 }));
  });

  it("refuses an outbox read's time limit not shorter than the lease", () => {
    refused(defaults, [/^the outbox read's time limit \(1000 ms, from KEYWARD_CACHE_LEASE_MS=1000\) must be shorter than the lease/], broken({ outboxStatementTimeoutMs: 1_000 }));
  });

  it('refuses a Redis socket timeout not longer than the heartbeat interval', () => {
    refused(defaults, [/^the Redis socket timeout \(250 ms\) must be longer than the heartbeat interval \(250 ms, from KEYWARD_CACHE_LEASE_MS=1000\)/], broken({ redisSocketTimeoutMs: 250 }));
  });

  it('refuses a membership expiry not longer than the lease', () => {
    refused(defaults, [/^the membership expiry \(1000 ms\) must be longer than KEYWARD_CACHE_LEASE_MS=1000/], broken({ membershipTtlMs: 1_000 }));
  });

  it('refuses a wait-out not longer than the lease plus the relay delay', () => {
    refused(
      defaults,
      [/^the wait-out of an unconfirmed change \(1250 ms\) must be longer than KEYWARD_CACHE_LEASE_MS=1000 plus KEYWARD_INVALIDATION_ACK_TIMEOUT_MS=250/],
      broken({ waitOutMs: 1_250 }),
    );
  });

  it('refuses a FillGuard retention not longer than the longest lookup, the relay delay and the lease', () => {
    refused(
      defaults,
      [/^the FillGuard retention \(2350 ms\) must be longer than KEYWARD_DB_VERIFY_TIMEOUT_MS=1000 plus KEYWARD_REDIS_TIMEOUT_MS=100 plus KEYWARD_INVALIDATION_ACK_TIMEOUT_MS=250 plus KEYWARD_CACHE_LEASE_MS=1000: /],
      broken({ fillGuardRetentionMs: 2_350 }),
    );
  });

  it('refuses an outbox retention not longer than the Redis TTL plus the seal grace', () => {
    refused(defaults, [/^the outbox retention \(305000 ms\) must be longer than KEYWARD_REDIS_TTL_MS=300000 plus the seal's grace \(5000 ms\)/], broken({ outboxRetentionMs: 305_000 }));
  });

  it('refuses a held-floor retention not longer than the Redis TTL plus the seal grace', () => {
    refused(defaults, [/^the held-floor retention \(305000 ms\) must be longer than KEYWARD_REDIS_TTL_MS=300000 plus the seal's grace \(5000 ms\)/], broken({ heldFloorRetentionMs: 305_000 }));
  });
});

describe('FillGuard timing', () => {
  const clock = () => {
    let t = 1_000;
    return { now: () => t, advance: (ms: number) => void (t += ms) };
  };

  it('keeps a floor for the retention on its own clock, then forgets it and refuses older tickets', () => {
    const time = clock();
    const guard = new FillGuard(5_000, time.now);
    const before = guard.ticket();
    guard.changed('h', 2);
    time.advance(4_999);
    guard.prune();
    assert.equal(guard.size, 1);
    assert.equal(guard.mayFill('h', 1, guard.ticket()), false);
    time.advance(1);
    guard.prune();
    assert.equal(guard.size, 0);
    // The floor is gone: a lookup that began before it may not fill; one after may.
    assert.equal(guard.mayFill('h', 1, before), false);
    assert.equal(guard.mayFill('h', 2, guard.ticket()), true);
  });

  it('holds the floor of an undelivered change until old Redis entries have expired, while ordinary floors go', () => {
    const time = clock();
    const guard = new FillGuard(5_000, time.now, 60_000);
    guard.changed('relayed-late', 7, true);
    guard.changed('announced', 3);
    time.advance(5_000);
    guard.prune();
    assert.equal(guard.isStale('announced', 2), false, 'the ordinary floor is gone');
    assert.equal(guard.isStale('relayed-late', 6), true, 'a Redis copy older than the undelivered change still counts as a miss');
    assert.equal(guard.mayFill('relayed-late', 7, guard.ticket()), true, 'the new version may fill');
    time.advance(54_999);
    guard.prune();
    assert.equal(guard.isStale('relayed-late', 6), true);
    time.advance(1);
    guard.prune();
    assert.equal(guard.isStale('relayed-late', 6), false);
    assert.equal(guard.size, 0);
  });

  it('is unmoved by steps of the wall clock, forward or back', (t) => {
    const time = clock();
    const guard = new FillGuard(5_000, time.now);
    const wall = Date.now();
    guard.changed('h', 2);
    t.mock.method(Date, 'now', () => wall + 86_400_000);
    guard.prune();
    assert.equal(guard.size, 1, 'a wall clock a day ahead forgot the floor');
    t.mock.method(Date, 'now', () => wall - 86_400_000);
    time.advance(5_000);
    guard.prune();
    assert.equal(guard.size, 0, 'a wall clock a day behind kept the floor');
  });

  it('times floors on performance.now by default, not on the wall clock', (t) => {
    const guard = new FillGuard(60_000);
    const wall = Date.now();
    guard.changed('h', 2);
    t.mock.method(Date, 'now', () => wall + 86_400_000);
    guard.prune();
    assert.equal(guard.size, 1);
    assert.equal(guard.isStale('h', 1), true);
  });
});

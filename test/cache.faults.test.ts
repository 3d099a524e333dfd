import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { VerifyCode } from '../src/gen/keyward/v1/keyward';
import { KeyFormat, hashSecret } from '../src/keys/KeyFormat';
import { assertGrpcError } from './helpers/clients';
import { newAccountId } from './helpers/env';
import { FaultProxy } from './helpers/FaultProxy';
import { Fleet, type Instance } from './helpers/Fleet';
import { assertNoLeaks } from './helpers/leaks';
import { scrapeMetrics, waitForMetric } from './helpers/metrics';
import { entryPayload } from './helpers/redisEntries';
import { PrivateRedis } from './helpers/PrivateRedis';
import { waitUntil } from './helpers/waitUntil';

const OK = VerifyCode.VERIFY_CODE_OK;
const REVOKED = VerifyCode.VERIFY_CODE_REVOKED;

async function assertEverywhere(instances: readonly Instance[], secret: string, code: VerifyCode, what: string): Promise<void> {
  for (const [i, instance] of instances.entries()) {
    const answer = await instance.verifier.verify({ key: secret });
    assert.equal(answer.code, code, `${what}: instance ${i} answered ${answer.code}`);
  }
}

/** One metric of every instance, in order. */
async function metricOfEach(instances: readonly Instance[], name: string): Promise<number[]> {
  return Promise.all(instances.map(async (i) => (await scrapeMetrics(i.server.metricsPort as number)).get(name) ?? 0));
}

/** Waits until every instance has recovered (trusts its caches again) more times than `before` (from metricOfEach) says. */
async function waitRecoveredSince(instances: readonly Instance[], before: readonly number[]): Promise<void> {
  await Promise.all(
    instances.map((i, n) =>
      waitForMetric(
        i.server.metricsPort as number,
        (m) => (m.get('keyward_cache_recoveries_total') ?? 0) > (before[n] ?? 0) && m.get('keyward_cache_trusted') === 1,
      ),
    ),
  );
}

describe('cache coherence under faults', () => {
  it('refuses a stale fill: in each of 10 cycles a lookup read before the revoke and answered after its invalidation is counted refused and cached neither in-process nor in Redis', async () => {
    const redis = await PrivateRedis.start();
    const proxy = await FaultProxy.toTestDatabase();
    // A long lease, so that the held read never outlasts the slow instance's trust in its caches.
    const lease = { KEYWARD_CACHE_LEASE_MS: '4000' };
    const fleet = await Fleet.startEach([
      { REDIS_URL: redis.url, ...lease },
      // Its lookup is held, never failed: no Verify time limit gets in the way on a loaded machine.
      { REDIS_URL: redis.url, DATABASE_URL: proxy.databaseUrl(), KEYWARD_DB_VERIFY_TIMEOUT_MS: '10000', ...lease },
      { REDIS_URL: redis.url, ...lease },
    ]);
    const [a, slow, c] = fleet.instances as [Instance, Instance, Instance];
    const control = redis.client();
    const refusedFills = async (): Promise<number> => (await scrapeMetrics(slow.server.metricsPort as number)).get('keyward_cache_fills_refused_total') ?? 0;
    const redisState = async (secret: string): Promise<{ revokedAt: unknown }> => {
      const [, data] = await control.hmget(`${fleet.redisPrefix}key:${hashSecret(secret)}`, 'v', 'd');
      return JSON.parse(entryPayload(data as string)) as { revokedAt: unknown };
    };
    const cycles = 10;
    try {
      const accountId = newAccountId();
      const refusedBefore = await refusedFills();
      let raced = 0;
      for (let cycle = 0; cycle < cycles; cycle++) {
        const { key, secret } = await a.admin.newKey(accountId);
        const hash = hashSecret(secret);
        // PostgreSQL's answer to the slow instance's lookup of this key (its hash is in the query's parameters) is held.
        proxy.holdAnswersTo(hash);
        const readDone = proxy.heldAnswerTo(hash);
        const early = slow.verifier.verify({ key: secret });
        // PostgreSQL has run the read (the key active) and the slow instance has not heard back: then the revoke.
        await readDone;
        await a.admin.revokeKey({ accountId, keyId: key?.id });
        proxy.releaseAnswers();
        const answer = await early;
        assert.equal(answer.code, OK, `cycle ${cycle}: the read from before the revoke answered ${answer.code}`);
        raced++;
        const refusedSoFar = refusedBefore + cycle + 1;
        await waitUntil(`cycle ${cycle}: the stale fill refused`, async () => (await refusedFills()) >= refusedSoFar);
        assert.notEqual((await redisState(secret)).revokedAt, null, `cycle ${cycle}: Redis kept the revoked record`);
        await assertEverywhere([slow, c, a], secret, REVOKED, `cycle ${cycle}`);
        // The slow instance's Redis read above went after any fill of its own, on the same connection.
        assert.notEqual((await redisState(secret)).revokedAt, null, `cycle ${cycle}: Redis holds the revoked record after the reads`);
      }
      assert.equal(raced, cycles, `only ${raced} of ${cycles} cycles raced the revoke`);
      const refused = (await refusedFills()) - refusedBefore;
      assert.ok(refused >= cycles, `stale fills refused: ${refused}, races: ${raced}`);
    } finally {
      proxy.releaseAnswers();
      control.disconnect();
      assert.deepEqual(await fleet.stop(), [0, 0, 0]);
      await proxy.close();
      await redis.stop();
    }
    await assertNoLeaks();
  });

  it('answers REVOKED everywhere for a revoke made while every subscription is being killed (CLIENT KILL TYPE pubsub), just after it and once every instance has resubscribed', async () => {
    const redis = await PrivateRedis.start();
    const fleet = await Fleet.start(3, { REDIS_URL: redis.url });
    const control = redis.client();
    try {
      const accountId = newAccountId();
      const cycles = 5;
      const lostBefore = await metricOfEach(fleet.instances, 'keyward_cache_trust_lost_total');
      // Fleet.start waited until every instance trusts its caches; each cycle ends the same way.
      for (let cycle = 0; cycle < cycles; cycle++) {
        const { keyId, secret } = await fleet.warmKey(accountId);
        const recoveredBefore = await metricOfEach(fleet.instances, 'keyward_cache_recoveries_total');
        await control.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
        await fleet.at(cycle % 3).admin.revokeKey({ accountId, keyId });
        await assertEverywhere(fleet.instances, secret, REVOKED, `cycle ${cycle}, just after the revoke`);
        await waitRecoveredSince(fleet.instances, recoveredBefore);
        await assertEverywhere(fleet.instances, secret, REVOKED, `cycle ${cycle}, after resubscribing`);
      }
      const lost = await metricOfEach(fleet.instances, 'keyward_cache_trust_lost_total');
      for (const [n, count] of lost.entries()) {
        assert.ok(count - (lostBefore[n] ?? 0) >= cycles, `instance ${n} noticed its subscription was killed ${count - (lostBefore[n] ?? 0)} times in ${cycles} cycles`);
      }
    } finally {
      control.disconnect();
      assert.deepEqual(await fleet.stop(), [0, 0, 0]);
      await redis.stop();
    }
    await assertNoLeaks();
  });

  it('answers REVOKED everywhere for a revoke made while Redis is frozen (SIGSTOP), during the freeze, after SIGCONT and once the caches are trusted again, and the revoke waits out the lease (ack-missing)', async () => {
    const redis = await PrivateRedis.start();
    const fleet = await Fleet.start(3, { REDIS_URL: redis.url });
    try {
      const accountId = newAccountId();
      const { keyId, secret } = await fleet.warmKey(accountId);
      const other = await fleet.warmKey(accountId);
      const recoveredBefore = await metricOfEach(fleet.instances, 'keyward_cache_recoveries_total');
      redis.freeze();
      const started = Date.now();
      const { key } = await fleet.at(1).admin.revokeKey({ accountId, keyId });
      assert.ok(key?.revokedAt instanceof Date, 'the revoke succeeded');
      assert.ok(Date.now() - started < 5_000, 'within the ack timeout plus the lease');
      await assertEverywhere(fleet.instances, secret, REVOKED, 'while frozen');
      await assertEverywhere(fleet.instances, other.secret, OK, 'an untouched key while frozen');
      redis.thaw();
      await assertEverywhere(fleet.instances, secret, REVOKED, 'just after SIGCONT');
      // Trust lapsed during the freeze (longer than the lease): wait for it to come back, not for the state before.
      await waitRecoveredSince(fleet.instances, recoveredBefore);
      await assertEverywhere(fleet.instances, secret, REVOKED, 'once the caches are trusted again');
      await assertEverywhere(fleet.instances, secret, REVOKED, 'from the refilled caches');
      await assertEverywhere(fleet.instances, other.secret, OK, 'an untouched key after SIGCONT');
      const missing = await scrapeMetrics(fleet.at(1).server.metricsPort as number);
      assert.equal(missing.get('keyward_invalidation_acks_missing_total'), 1);
      assert.ok(fleet.at(1).server.logLines().some((line) => line.event === 'ack-missing'), 'the missing acknowledgement was logged');
    } finally {
      redis.thaw();
      assert.deepEqual(await fleet.stop(), [0, 0, 0]);
      await redis.stop();
    }
    await assertNoLeaks();
  });

  it('answers OK and REVOKED correctly on every instance while Redis is killed mid-traffic and restarted, holds a revoke made while it is down, and serves from a cache again once it is back', async () => {
    const redis = await PrivateRedis.start();
    const fleet = await Fleet.start(3, { REDIS_URL: redis.url });
    try {
      const accountId = newAccountId();
      const active = await fleet.warmKey(accountId);
      const revoked = await fleet.warmKey(accountId);
      await fleet.at(0).admin.revokeKey({ accountId, keyId: revoked.keyId });
      let running = true;
      let calls = 0;
      const load = fleet.instances.map(async (instance, i) => {
        try {
          while (running) {
            assert.equal((await instance.verifier.verify({ key: active.secret })).code, OK, `instance ${i}, active key`);
            assert.equal((await instance.verifier.verify({ key: revoked.secret })).code, REVOKED, `instance ${i}, revoked key`);
            calls += 2;
          }
        } catch (error) {
          running = false;
          throw error;
        }
      });
      const loadDone = Promise.all(load);
      loadDone.catch(() => {});
      // Each wait below ends early, with the load's failure, if the load fails.
      const trafficSince = async (what: string, from: number): Promise<void> => {
        await Promise.race([waitUntil(what, () => calls >= from + 60), loadDone]);
      };
      await trafficSince('traffic on the warm caches', calls);
      const lostBefore = await metricOfEach(fleet.instances, 'keyward_cache_trust_lost_total');
      await redis.kill();
      // Every instance noticed and stopped trusting its caches (the traffic goes on meanwhile).
      await Promise.race([
        Promise.all(
          fleet.instances.map((i, n) =>
            waitForMetric(
              i.server.metricsPort as number,
              (m) => (m.get('keyward_cache_trust_lost_total') ?? 0) > (lostBefore[n] ?? 0) && m.get('keyward_cache_trusted') === 0,
            ),
          ),
        ),
        loadDone,
      ]);
      await trafficSince('traffic without Redis', calls);
      const late = await fleet.at(2).admin.newKey(accountId);
      await fleet.at(1).admin.revokeKey({ accountId, keyId: late.key?.id });
      await assertEverywhere(fleet.instances, late.secret, REVOKED, 'revoked while Redis was down');
      const recoveredBefore = await metricOfEach(fleet.instances, 'keyward_cache_recoveries_total');
      await redis.restart();
      await Promise.race([waitRecoveredSince(fleet.instances, recoveredBefore), loadDone]);
      await trafficSince('traffic once Redis is back', calls);
      running = false;
      await loadDone;
      assert.ok(calls > 100, `${calls} calls`);
      for (const instance of fleet.instances) {
        const before = await scrapeMetrics(instance.server.metricsPort as number);
        await instance.verifier.verify({ key: active.secret });
        const after = await scrapeMetrics(instance.server.metricsPort as number);
        const cached = ['local', 'redis'].map((tier) => `keyward_verify_lookups_total{tier="${tier}"}`);
        assert.equal(cached.reduce((sum, name) => sum + (after.get(name) ?? 0) - (before.get(name) ?? 0), 0), 1, 'served from a cache again');
      }
      await assertEverywhere(fleet.instances, late.secret, REVOKED, 'after Redis came back');
    } finally {
      assert.deepEqual(await fleet.stop(), [0, 0, 0]);
      await redis.stop();
    }
    await assertNoLeaks();
  });

  it('keeps answering cached keys (OK and REVOKED) while Postgres is unreachable, also after resubscribing, answers UNAVAILABLE for a key in no cache, and reads Postgres again once it is back', async () => {
    const redis = await PrivateRedis.start();
    const proxy = await FaultProxy.toTestDatabase();
    const fleet = await Fleet.start(2, {
      REDIS_URL: redis.url,
      DATABASE_URL: proxy.databaseUrl(),
      // The outage refuses and cuts connections, so failures come at once;
      // the limits only bound a loaded machine. The run's database is migrated.
      KEYWARD_DB_VERIFY_TIMEOUT_MS: '1000',
      KEYWARD_DB_QUERY_TIMEOUT_MS: '1000',
      KEYWARD_MIGRATE_ON_START: 'false',
    });
    try {
      const accountId = newAccountId();
      const { secret } = await fleet.warmKey(accountId);
      const revoked = await fleet.warmKey(accountId);
      await fleet.at(0).admin.revokeKey({ accountId, keyId: revoked.keyId });
      await assertEverywhere(fleet.instances, revoked.secret, REVOKED, 'before the outage');
      proxy.refuse();
      proxy.cut();
      // Time is what is tested here: the caches must stay in use for longer than a lease (1 s) of outage.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const never = new KeyFormat('fsm_live_', 'fsm_test_').generate('live');
      for (let round = 0; round < 3; round++) {
        await assertEverywhere(fleet.instances, secret, OK, `cached key, Postgres down, round ${round}`);
        await assertEverywhere(fleet.instances, revoked.secret, REVOKED, `cached revoked key, Postgres down, round ${round}`);
        for (const instance of fleet.instances) {
          await assertGrpcError(instance.verifier.verify({ key: never }), status.UNAVAILABLE);
        }
        // Time again: the rounds spread over more leases of the outage.
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      await assertGrpcError(fleet.at(0).admin.newKey(accountId), status.UNAVAILABLE);
      // Losing the subscription while Postgres is down: trust comes back without the outbox, from Redis.
      const recoveredBefore = await metricOfEach(fleet.instances, 'keyward_cache_recoveries_total');
      const deferredBefore = fleet.instances.map((i) => i.server.logLines().filter((line) => line.event === 'repair-deferred').length);
      const control = redis.client();
      await control.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
      control.disconnect();
      await waitRecoveredSince(fleet.instances, recoveredBefore);
      for (const [n, instance] of fleet.instances.entries()) {
        const deferred = instance.server.logLines().filter((line) => line.event === 'repair-deferred').length;
        assert.ok(deferred > (deferredBefore[n] ?? 0), `instance ${n} trusted its caches again without the outbox repair (repair-deferred)`);
      }
      await assertEverywhere(fleet.instances, secret, OK, 'cached key, Postgres down, subscription renewed');
      await assertEverywhere(fleet.instances, revoked.secret, REVOKED, 'cached revoked key, Postgres down, subscription renewed');
      const pollsBefore = await metricOfEach(fleet.instances, 'keyward_outbox_polls_total');
      proxy.pass();
      // An outbox read completed (and with it the deferred repair): Postgres answers again.
      await Promise.all(
        fleet.instances.map((i, n) =>
          waitForMetric(i.server.metricsPort as number, (m) => (m.get('keyward_outbox_polls_total') ?? 0) > (pollsBefore[n] ?? 0) && m.get('keyward_cache_trusted') === 1),
        ),
      );
      assert.equal((await fleet.at(0).verifier.verify({ key: never })).code, VerifyCode.VERIFY_CODE_INVALID_KEY);
    } finally {
      assert.deepEqual(await fleet.stop(), [0, 0]);
      await proxy.close();
      await redis.stop();
    }
    await assertNoLeaks();
  });

  it('answers REVOKED on every instance, and on one started later, when Redis comes back from a snapshot holding the key active (restart from RDB, lagging replica)', async () => {
    const redis = await PrivateRedis.start();
    const fleet = await Fleet.startEach([{ REDIS_URL: redis.url }, { REDIS_URL: redis.url, KEYWARD_LOCAL_CACHE: 'false' }]);
    const control = redis.client();
    let late: Fleet | undefined;
    try {
      const accountId = newAccountId();
      const { keyId, secret } = await fleet.warmKey(accountId);
      await control.save();
      await fleet.at(0).admin.revokeKey({ accountId, keyId });
      await assertEverywhere(fleet.instances, secret, REVOKED, 'after the revoke');
      control.disconnect();
      const recoveredBefore = await metricOfEach(fleet.instances, 'keyward_cache_recoveries_total');
      await redis.restart();
      const [, data] = await (async () => {
        const probe = redis.client();
        try {
          return await probe.hmget(`${fleet.redisPrefix}key:${hashSecret(secret)}`, 'v', 'd');
        } finally {
          probe.disconnect();
        }
      })();
      assert.equal((JSON.parse(entryPayload(data as string)) as { revokedAt: unknown }).revokedAt, null, 'the snapshot holds the key active');
      // Trusted again after the restart (and its repair), not still trusting from before it.
      await waitRecoveredSince(fleet.instances, recoveredBefore);
      await assertEverywhere(fleet.instances, secret, REVOKED, 'after Redis rolled back');
      late = await Fleet.startEach([{ REDIS_URL: redis.url, KEYWARD_REDIS_PREFIX: fleet.redisPrefix }]);
      await assertEverywhere(late.instances, secret, REVOKED, 'on an instance started after the rollback');
    } finally {
      control.disconnect();
      if (late !== undefined) assert.deepEqual(await late.stop(), [0]);
      assert.deepEqual(await fleet.stop(), [0, 0]);
      await redis.stop();
    }
    await assertNoLeaks();
  });

  it('trusts its caches again within a few leases once a PostgreSQL that answered slower than the outbox read limit (connects cut by the limit too) answers in time again', async () => {
    const pgProxy = await FaultProxy.toTestDatabase();
    const fleet = await Fleet.startEach([{ DATABASE_URL: pgProxy.databaseUrl(), KEYWARD_LOG_LEVEL: 'debug' }]);
    const instance = fleet.at(0);
    try {
      pgProxy.delayResponses(600);
      // A read cut by the limit drops the outbox connection; the next one must connect through the delay and is cut while connecting.
      await instance.server.waitFor((line) => line.msg === 'reading the invalidation outbox failed' && (line.failure as { phase?: string } | undefined)?.phase === 'connect');
      await instance.server.waitFor((line) => line.event === 'outbox-lapsed');
      assert.equal((await scrapeMetrics(instance.server.metricsPort as number)).get('keyward_cache_trusted'), 0, 'the outbox proof lapsed while PostgreSQL was slow');
      pgProxy.delayResponses(0);
      // Before the fix, a connect cut by keyward's limit never settled, and the outbox reads stopped for good.
      await waitForMetric(instance.server.metricsPort as number, (m) => m.get('keyward_cache_trusted') === 1, 10_000);
    } finally {
      pgProxy.delayResponses(0);
      assert.deepEqual(await fleet.stop(), [0]);
      await pgProxy.close();
    }
    await assertNoLeaks();
  });

  it('answers REVOKED on every instance, 5 rounds, for a revoke made by an instance cut off from Redis while Postgres is slow (not down) for another', async () => {
    const redis = await PrivateRedis.start();
    const redisProxy = await FaultProxy.start('127.0.0.1', redis.port);
    const pgProxy = await FaultProxy.toTestDatabase();
    const fleet = await Fleet.startEach([
      { REDIS_URL: `redis://127.0.0.1:${redisProxy.port}` },
      // Slow, not down: its lookups may take a few delayed round trips (a new
      // connection, then the query), which must not time out into UNAVAILABLE.
      { REDIS_URL: redis.url, DATABASE_URL: pgProxy.databaseUrl(), KEYWARD_DB_VERIFY_TIMEOUT_MS: '10000' },
      { REDIS_URL: redis.url },
    ]);
    try {
      const accountId = newAccountId();
      const { keyId, secret } = await fleet.warmKey(accountId);
      redisProxy.refuse();
      redisProxy.cut();
      const delayed = pgProxy.waitDelayed();
      pgProxy.delayResponses(600);
      // The delay is in effect: an answer to the slow instance (its outbox reads, every quarter lease) came late.
      await delayed;
      await fleet.at(0).admin.revokeKey({ accountId, keyId });
      for (let round = 0; round < 5; round++) {
        await assertEverywhere(fleet.instances, secret, REVOKED, `round ${round} after the revoke`);
      }
    } finally {
      pgProxy.delayResponses(0);
      redisProxy.pass();
      assert.deepEqual(await fleet.stop(), [0, 0, 0]);
      await pgProxy.close();
      await redisProxy.close();
      await redis.stop();
    }
    await assertNoLeaks();
  });
});

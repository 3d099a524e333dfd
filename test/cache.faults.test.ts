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

const OK = VerifyCode.VERIFY_CODE_OK;
const REVOKED = VerifyCode.VERIFY_CODE_REVOKED;

/** Creates a key on `origin` and verifies it twice on every instance, so that every cache holds it. */
async function warmKey(fleet: Fleet, accountId: string): Promise<{ keyId: string; secret: string }> {
  const { key, secret } = await fleet.at(0).admin.newKey(accountId);
  for (const instance of fleet.instances) {
    assert.equal((await instance.verifier.verify({ key: secret })).code, OK);
    assert.equal((await instance.verifier.verify({ key: secret })).code, OK);
  }
  return { keyId: key?.id as string, secret };
}

async function assertEverywhere(instances: readonly Instance[], secret: string, code: VerifyCode, what: string): Promise<void> {
  for (const [i, instance] of instances.entries()) {
    const answer = await instance.verifier.verify({ key: secret });
    assert.equal(answer.code, code, `${what}: instance ${i} answered ${answer.code}`);
  }
}

describe('cache coherence under faults', () => {
  it('refuses a stale fill: a read from before a revoke that lands after its invalidation is not cached', async () => {
    const redis = await PrivateRedis.start();
    const proxy = await FaultProxy.toTestDatabase();
    // A long lease, so that the slow instance's outbox reads (slow too) keep it trusting its caches.
    const lease = { KEYWARD_CACHE_LEASE_MS: '4000' };
    const fleet = await Fleet.startEach([
      { REDIS_URL: redis.url, ...lease },
      // Its reads are slow, never failed: no Verify time limit gets in the way on a loaded machine.
      { REDIS_URL: redis.url, DATABASE_URL: proxy.databaseUrl(), KEYWARD_DB_VERIFY_TIMEOUT_MS: '10000', ...lease },
      { REDIS_URL: redis.url, ...lease },
    ]);
    const [a, slow, c] = fleet.instances as [Instance, Instance, Instance];
    const control = redis.client();
    try {
      const accountId = newAccountId();
      const refusedBefore = (await scrapeMetrics(slow.server.metricsPort as number)).get('keyward_cache_fills_refused_total') ?? 0;
      let raced = 0;
      for (let cycle = 0; cycle < 10; cycle++) {
        const { key, secret } = await a.admin.newKey(accountId);
        // A lookup of a key nobody has keeps a pooled connection open, so the next read is sent at once.
        await slow.verifier.verify({ key: new KeyFormat('fsm_live_', 'fsm_test_').generate('live') });
        proxy.delayResponses(400);
        // The slow instance reads Postgres now (before the revoke) and gets its answer late (after it).
        const early = slow.verifier.verify({ key: secret });
        await new Promise((resolve) => setTimeout(resolve, 120));
        await a.admin.revokeKey({ accountId, keyId: key?.id });
        // On a loaded machine the early read may not have left before the revoke: then there was no race.
        if ((await early).code === OK) raced++;
        proxy.delayResponses(0);
        await new Promise((resolve) => setTimeout(resolve, 50));
        const [, data] = await control.hmget(`${fleet.redisPrefix}key:${hashSecret(secret)}`, 'v', 'd');
        assert.notEqual((JSON.parse(entryPayload(data as string)) as { revokedAt: unknown }).revokedAt, null, 'Redis kept the revoked record');
        await assertEverywhere([slow, c, a], secret, REVOKED, `cycle ${cycle}`);
      }
      assert.ok(raced >= 5, `only ${raced} of 10 cycles raced the revoke`);
      const refused = ((await scrapeMetrics(slow.server.metricsPort as number)).get('keyward_cache_fills_refused_total') ?? 0) - refusedBefore;
      assert.ok(refused >= raced, `stale fills refused: ${refused}, races: ${raced}`);
    } finally {
      control.disconnect();
      assert.deepEqual(await fleet.stop(), [0, 0, 0]);
      await proxy.close();
      await redis.stop();
    }
    await assertNoLeaks();
  });

  it('holds a revoke made while every subscription is being killed (CLIENT KILL TYPE pubsub)', async () => {
    const redis = await PrivateRedis.start();
    const fleet = await Fleet.start(3, { REDIS_URL: redis.url });
    const control = redis.client();
    try {
      const accountId = newAccountId();
      for (let cycle = 0; cycle < 5; cycle++) {
        await fleet.waitTrusted();
        const { keyId, secret } = await warmKey(fleet, accountId);
        await control.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
        await fleet.at(cycle % 3).admin.revokeKey({ accountId, keyId });
        await assertEverywhere(fleet.instances, secret, REVOKED, `cycle ${cycle}, just after the revoke`);
        await new Promise((resolve) => setTimeout(resolve, 300));
        await assertEverywhere(fleet.instances, secret, REVOKED, `cycle ${cycle}, after resubscribing`);
      }
      const lost = await scrapeMetrics(fleet.at(1).server.metricsPort as number);
      assert.ok((lost.get('keyward_cache_trust_lost_total') ?? 0) >= 1, 'the instance noticed its subscription was killed');
    } finally {
      control.disconnect();
      assert.deepEqual(await fleet.stop(), [0, 0, 0]);
      await redis.stop();
    }
    await assertNoLeaks();
  });

  it('holds a revoke made while Redis is frozen (SIGSTOP), during the freeze and after SIGCONT', async () => {
    const redis = await PrivateRedis.start();
    const fleet = await Fleet.start(3, { REDIS_URL: redis.url });
    try {
      const accountId = newAccountId();
      const { keyId, secret } = await warmKey(fleet, accountId);
      const other = await warmKey(fleet, accountId);
      redis.freeze();
      const started = Date.now();
      const { key } = await fleet.at(1).admin.revokeKey({ accountId, keyId });
      assert.ok(key?.revokedAt instanceof Date, 'the revoke succeeded');
      assert.ok(Date.now() - started < 5_000, 'within the ack timeout plus the lease');
      await assertEverywhere(fleet.instances, secret, REVOKED, 'while frozen');
      await assertEverywhere(fleet.instances, other.secret, OK, 'an untouched key while frozen');
      redis.thaw();
      await assertEverywhere(fleet.instances, secret, REVOKED, 'just after SIGCONT');
      await fleet.waitTrusted();
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

  it('keeps answering correctly when Redis stops mid-traffic, and uses it again once it is back', async () => {
    const redis = await PrivateRedis.start();
    const fleet = await Fleet.start(3, { REDIS_URL: redis.url });
    try {
      const accountId = newAccountId();
      const active = await warmKey(fleet, accountId);
      const revoked = await warmKey(fleet, accountId);
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
      await new Promise((resolve) => setTimeout(resolve, 300));
      await redis.kill();
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const late = await fleet.at(2).admin.newKey(accountId);
      await fleet.at(1).admin.revokeKey({ accountId, keyId: late.key?.id });
      await assertEverywhere(fleet.instances, late.secret, REVOKED, 'revoked while Redis was down');
      await redis.restart();
      await fleet.waitTrusted();
      await new Promise((resolve) => setTimeout(resolve, 300));
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

  it('keeps verifying cached keys while Postgres is unreachable, and never answers OK for a key it never saw', async () => {
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
      const { secret } = await warmKey(fleet, accountId);
      const revoked = await warmKey(fleet, accountId);
      await fleet.at(0).admin.revokeKey({ accountId, keyId: revoked.keyId });
      await assertEverywhere(fleet.instances, revoked.secret, REVOKED, 'before the outage');
      proxy.refuse();
      proxy.cut();
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const never = new KeyFormat('fsm_live_', 'fsm_test_').generate('live');
      for (let round = 0; round < 3; round++) {
        await assertEverywhere(fleet.instances, secret, OK, `cached key, Postgres down, round ${round}`);
        await assertEverywhere(fleet.instances, revoked.secret, REVOKED, `cached revoked key, Postgres down, round ${round}`);
        for (const instance of fleet.instances) {
          await assertGrpcError(instance.verifier.verify({ key: never }), status.UNAVAILABLE);
        }
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
      await assertGrpcError(fleet.at(0).admin.newKey(accountId), status.UNAVAILABLE);
      // Losing the subscription while Postgres is down: trust comes back without the outbox, from Redis.
      const control = redis.client();
      await control.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
      control.disconnect();
      await fleet.waitTrusted();
      await assertEverywhere(fleet.instances, secret, OK, 'cached key, Postgres down, subscription renewed');
      await assertEverywhere(fleet.instances, revoked.secret, REVOKED, 'cached revoked key, Postgres down, subscription renewed');
      proxy.pass();
      await waitForMetric(fleet.at(0).server.metricsPort as number, (m) => m.get('keyward_cache_trusted') === 1);
      assert.equal((await fleet.at(0).verifier.verify({ key: never })).code, VerifyCode.VERIFY_CODE_INVALID_KEY);
    } finally {
      assert.deepEqual(await fleet.stop(), [0, 0]);
      await proxy.close();
      await redis.stop();
    }
    await assertNoLeaks();
  });

  it('holds a revoke when Redis comes back from an older snapshot (restart from RDB, lagging replica)', async () => {
    const redis = await PrivateRedis.start();
    const fleet = await Fleet.startEach([{ REDIS_URL: redis.url }, { REDIS_URL: redis.url, KEYWARD_LOCAL_CACHE: 'false' }]);
    const control = redis.client();
    let late: Fleet | undefined;
    try {
      const accountId = newAccountId();
      const { keyId, secret } = await warmKey(fleet, accountId);
      await control.save();
      await fleet.at(0).admin.revokeKey({ accountId, keyId });
      await assertEverywhere(fleet.instances, secret, REVOKED, 'after the revoke');
      control.disconnect();
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
      await fleet.waitTrusted();
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

  it('holds a revoke made by an instance cut off from Redis while Postgres is slow (not down) for another', async () => {
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
      const { keyId, secret } = await warmKey(fleet, accountId);
      redisProxy.refuse();
      redisProxy.cut();
      pgProxy.delayResponses(600);
      await new Promise((resolve) => setTimeout(resolve, 200));
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

import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { VerifyCode } from '../src/gen/keyward/v1/keyward';
import { judgeAcks } from '../src/cache/InvalidationBus';
import { parseMember } from '../src/cache/RedisTier';
import { newAccountId } from './helpers/env';
import { FaultProxy } from './helpers/FaultProxy';
import { Fleet, type Instance } from './helpers/Fleet';
import { assertNoLeaks } from './helpers/leaks';
import { metricOf, scrapeMetrics, waitForMetric } from './helpers/metrics';
import { PrivateRedis } from './helpers/PrivateRedis';
import { waitUntil } from './helpers/waitUntil';

const OK = VerifyCode.VERIFY_CODE_OK;
const REVOKED = VerifyCode.VERIFY_CODE_REVOKED;

/** The instance's id in Redis, from its latest `subscribed` log line. */
function instanceIdOf(instance: Instance): string {
  const lines = instance.server.logLines().filter((line) => line.event === 'subscribed');
  const id = lines[lines.length - 1]?.instance;
  assert.equal(typeof id, 'string', 'the subscribed log line names the instance');
  return id as string;
}

describe('judgeAcks: when an announcement may return early', () => {
  const lease = 1_000;
  const members = [
    { id: 'self', leaseMs: lease },
    { id: 'b', leaseMs: lease },
    { id: 'c', leaseMs: 10_000 },
  ];

  it('confirms with an ack from every listed member and as many acks as other receivers', () => {
    assert.deepEqual(judgeAcks({ self: 'self', receivers: 3, members, acked: new Set(['b', 'c']), selfHeard: true }), {
      confirmed: true,
      missing: [],
      doubts: [],
    });
    // This instance not subscribed: PUBLISH did not count it.
    assert.equal(judgeAcks({ self: 'self', receivers: 2, members, acked: new Set(['b', 'c']), selfHeard: false }).confirmed, true);
  });

  it('doubts when PUBLISH reached more subscribers than acknowledged (an unlisted instance is silent)', () => {
    const judged = judgeAcks({ self: 'self', receivers: 4, members, acked: new Set(['b', 'c']), selfHeard: true });
    assert.equal(judged.confirmed, false);
    assert.deepEqual(judged.missing, []);
    assert.match(judged.doubts.join(), /2 acks for 4 receivers/);
    // Its own copy not heard yet: it cannot tell whether PUBLISH counted it.
    assert.equal(judgeAcks({ self: 'self', receivers: 3, members, acked: new Set(['b', 'c']), selfHeard: false }).confirmed, false);
  });

  it('doubts on an ack from an unlisted instance, and on a listed member of unknown lease', () => {
    const unlisted = judgeAcks({ self: 'self', receivers: 4, members, acked: new Set(['b', 'c', 'd']), selfHeard: true });
    assert.equal(unlisted.confirmed, false);
    assert.match(unlisted.doubts.join(), /unlisted instances d/);
    const old = judgeAcks({ self: 'self', receivers: 2, members: [{ id: 'self', leaseMs: lease }, parseMember('b')], acked: new Set(['b']), selfHeard: true });
    assert.equal(old.confirmed, false);
    assert.match(old.doubts.join(), /leases unknown for b/);
  });

  it('lists the members that did not acknowledge', () => {
    const judged = judgeAcks({ self: 'self', receivers: 3, members, acked: new Set(['b']), selfHeard: true });
    assert.deepEqual([judged.confirmed, judged.missing], [false, ['c']]);
  });

  it('reads member strings, old ones (a bare id) as lease unknown', () => {
    assert.deepEqual(parseMember('abc lease=10000'), { id: 'abc', leaseMs: 10_000 });
    assert.deepEqual(parseMember('abc'), { id: 'abc', leaseMs: undefined });
    assert.deepEqual(parseMember('abc lease=x'), { id: 'abc', leaseMs: undefined });
  });
});

describe('an admin change holds on every instance that may trust its caches', () => {
  it('H1: waits for an instance missing from the member list whose pub/sub is late', async () => {
    const ROUNDS = 6;
    const redis = await PrivateRedis.start();
    const proxy = await FaultProxy.start('127.0.0.1', redis.port);
    const fleet = await Fleet.startEach([
      { REDIS_URL: redis.url },
      { REDIS_URL: redis.url },
      // Its round trips to Redis take 80 ms more: well within its command time limit.
      { REDIS_URL: `redis://127.0.0.1:${proxy.port}`, KEYWARD_REDIS_TIMEOUT_MS: '400' },
    ]);
    const [a, , late] = fleet.instances as [Instance, Instance, Instance];
    const control = redis.client();
    try {
      const member = `${instanceIdOf(late)} lease=1000`;
      proxy.delayResponses(80);
      await proxy.waitDelayed(3);
      const accountId = newAccountId();
      const missingBefore = await metricOf(a.server, 'keyward_invalidation_acks_missing_total');
      for (let round = 0; round < ROUNDS; round++) {
        const { keyId, secret } = await fleet.warmKey(accountId);
        await waitForMetric((late.server.metricsPort as number), (m) => m.get('keyward_cache_trusted') === 1);
        // Still subscribed and trusting, but unlisted: its entry removed (even rounds) or the whole set wiped (odd).
        if (round % 2 === 0) assert.equal(await control.zrem(`${fleet.redisPrefix}members`, member), 1, `round ${round}: the late instance was listed`);
        else assert.equal(await control.del(`${fleet.redisPrefix}members`), 1);
        await a.admin.revokeKey({ accountId, keyId });
        const answer = await late.verifier.verify({ key: secret });
        assert.equal(answer.code, REVOKED, `round ${round}: the late instance answered ${answer.code} right after RevokeKey returned`);
        for (const instance of fleet.instances) assert.equal((await instance.verifier.verify({ key: secret })).code, REVOKED);
      }
      // The late instance renews every quarter lease and may be listed again by the revoke: most rounds took the doubt path.
      const waited = (await metricOf(a.server, 'keyward_invalidation_acks_missing_total')) - missingBefore;
      assert.ok(waited >= ROUNDS / 2, `only ${waited} of ${ROUNDS} revokes waited out the lease`);
      const doubts = a.server.logLines().filter((line) => line.event === 'ack-missing').map((line) => JSON.stringify(line.doubts));
      assert.ok(
        doubts.some((text) => /unlisted|receivers/.test(text)),
        `ack-missing names the doubt: ${doubts.join(' ')}`,
      );
    } finally {
      control.disconnect();
      assert.deepEqual(await fleet.stop(), [0, 0, 0]);
      await proxy.close();
      await redis.stop();
    }
    await assertNoLeaks();
  });

  it("H2: waits out a silent member's longer lease, not the announcer's own", async () => {
    const ROUNDS = 2;
    const LONG_LEASE = 10_000;
    const redis = await PrivateRedis.start();
    const redisProxy = await FaultProxy.start('127.0.0.1', redis.port);
    const pgProxy = await FaultProxy.toTestDatabase();
    const fleet = await Fleet.startEach([
      { REDIS_URL: redis.url },
      {
        REDIS_URL: `redis://127.0.0.1:${redisProxy.port}`,
        DATABASE_URL: pgProxy.databaseUrl(),
        KEYWARD_CACHE_LEASE_MS: String(LONG_LEASE),
        KEYWARD_REDIS_TIMEOUT_MS: '4000',
        KEYWARD_DB_VERIFY_TIMEOUT_MS: '10000',
      },
    ]);
    const [a, long] = fleet.instances as [Instance, Instance];
    try {
      const accountId = newAccountId();
      const keys = [];
      for (let round = 0; round < ROUNDS; round++) keys.push(await fleet.warmKey(accountId));
      // Its invalidations (and so its acks) arrive 3 s late, far beyond the ack timeout, and its
      // outbox reads 2 s late: it cannot learn of a change before the announcer's own lease runs out.
      // Its heartbeats still come back within its 10 s lease, so it keeps trusting its caches.
      redisProxy.delayResponses(3_000);
      pgProxy.delayResponses(2_000);
      await redisProxy.waitDelayed(2);
      for (const [round, { keyId, secret }] of keys.entries()) {
        await waitForMetric((long.server.metricsPort as number), (m) => m.get('keyward_cache_trusted') === 1);
        const started = performance.now();
        await a.admin.revokeKey({ accountId, keyId });
        const took = performance.now() - started;
        const answer = await long.verifier.verify({ key: secret });
        assert.equal(answer.code, REVOKED, `round ${round}: the long-lease instance answered ${answer.code} ${Math.round(took)} ms after the revoke began`);
        assert.ok(took >= LONG_LEASE, `round ${round}: RevokeKey returned after ${Math.round(took)} ms, before the silent member's lease ran out`);
      }
      const waits = a.server.logLines().filter((line) => line.event === 'ack-missing');
      assert.equal(waits.length, ROUNDS);
      for (const line of waits) assert.equal(line.leaseMs, LONG_LEASE);
    } finally {
      // Stopped with the delays on: reordering bytes already held would corrupt the connections.
      assert.deepEqual(await fleet.stop(), [0, 0]);
      await pgProxy.close();
      await redisProxy.close();
      await redis.stop();
    }
    await assertNoLeaks();
  });

  it('an instance whose subscription is down leaves the member list, so changes do not wait for it', async () => {
    const redis = await PrivateRedis.start();
    const proxy = await FaultProxy.start('127.0.0.1', redis.port);
    const fleet = await Fleet.startEach([{ REDIS_URL: redis.url }, { REDIS_URL: `redis://127.0.0.1:${proxy.port}` }]);
    const [a, b] = fleet.instances as [Instance, Instance];
    const control = redis.client();
    try {
      const member = `${instanceIdOf(b)} lease=1000`;
      const members = `${fleet.redisPrefix}members`;
      assert.notEqual(await control.zscore(members, member), null);
      // B's subscriber cannot come back (its command connection stays open); A's reconnects at once.
      proxy.refuse();
      await control.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
      await b.server.waitFor((line) => line.event === 'unsubscribed');
      await waitForMetric((b.server.metricsPort as number), (m) => m.get('keyward_cache_trusted') === 0);
      await waitForMetric((a.server.metricsPort as number), (m) => m.get('keyward_cache_trusted') === 1);
      await waitUntil('B left the member list', async () => (await control.zscore(members, member)) === null, { timeoutMs: 5_000 });
      const accountId = newAccountId();
      const { key, secret } = await a.admin.newKey(accountId);
      const missingBefore = await metricOf(a.server, 'keyward_invalidation_acks_missing_total');
      const confirmedBefore = await metricOf(a.server, 'keyward_invalidations_confirmed_total');
      const aMember = `${instanceIdOf(a)} lease=1000`;
      for (let round = 0; round < 5; round++) {
        await a.admin.updateScopes({ accountId, keyId: key?.id, scopes: [round % 2 === 0 ? 'jobs:read' : 'jobs:write'] });
        // Two renewals by A: a quarter lease passed, in which B would have renewed too, had it kept renewing.
        let renewals = 0;
        let last = await control.zscore(members, aMember);
        await waitUntil('A renews its membership twice', async () => {
          const score = await control.zscore(members, aMember);
          if (score !== last) renewals++;
          last = score;
          return renewals >= 2;
        }, { timeoutMs: 5_000, intervalMs: 10 });
        assert.equal(await control.zscore(members, member), null, `round ${round}: B renewed its membership while unsubscribed`);
      }
      assert.equal((await metricOf(a.server, 'keyward_invalidations_confirmed_total')) - confirmedBefore, 5);
      assert.equal((await metricOf(a.server, 'keyward_invalidation_acks_missing_total')) - missingBefore, 0);
      proxy.pass();
      await waitForMetric((b.server.metricsPort as number), (m) => m.get('keyward_cache_trusted') === 1, 20_000);
      assert.notEqual(await control.zscore(members, member), null, 'B listed again once subscribed');
      await a.admin.revokeKey({ accountId, keyId: key?.id });
      assert.equal((await b.verifier.verify({ key: secret })).code, REVOKED);
    } finally {
      control.disconnect();
      proxy.pass();
      assert.deepEqual(await fleet.stop(), [0, 0]);
      await proxy.close();
      await redis.stop();
    }
    await assertNoLeaks();
  });

  it('returns without waiting out the lease when every instance acknowledges', async () => {
    const ROUNDS = 20;
    // A generous ack timeout: a loaded machine must not turn a late ack into a lease wait here.
    const fleet = await Fleet.start(3, { KEYWARD_INVALIDATION_ACK_TIMEOUT_MS: '2000' });
    try {
      const accountId = newAccountId();
      const sum = async (name: string) => (await Promise.all(fleet.instances.map((i) => metricOf(i.server, name)))).reduce((x, y) => x + y, 0);
      const confirmedBefore = await sum('keyward_invalidations_confirmed_total');
      const missingBefore = await sum('keyward_invalidation_acks_missing_total');
      for (let round = 0; round < ROUNDS; round++) {
        const { keyId, secret } = await fleet.warmKey(accountId);
        const started = performance.now();
        await fleet.at(round % 3).admin.revokeKey({ accountId, keyId });
        const took = performance.now() - started;
        assert.ok(took < 1_000, `round ${round}: RevokeKey took ${Math.round(took)} ms, as long as the lease`);
        for (const instance of fleet.instances) assert.equal((await instance.verifier.verify({ key: secret })).code, REVOKED);
      }
      assert.equal((await sum('keyward_invalidations_confirmed_total')) - confirmedBefore, ROUNDS);
      assert.equal((await sum('keyward_invalidation_acks_missing_total')) - missingBefore, 0);
    } finally {
      assert.deepEqual(await fleet.stop(), [0, 0, 0]);
    }
    await assertNoLeaks();
  });
});

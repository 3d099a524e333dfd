import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { VerifyCode } from '../src/gen/keyward/v1/keyward';
import { KeyFormat, hashSecret } from '../src/keys/KeyFormat';
import { newAccountId, testRedisUrl } from './helpers/env';
import { Fleet, type Instance } from './helpers/Fleet';
import { assertNoLeaks } from './helpers/leaks';
import { scrapeMetrics, waitForMetric } from './helpers/metrics';
import { entryPayload } from './helpers/redisEntries';
import { waitUntil } from './helpers/waitUntil';

const CYCLES = 200;
const OK = VerifyCode.VERIFY_CODE_OK;

describe('three instances on one Postgres and Redis', () => {
  let fleet: Fleet;
  let redis: Redis;

  before(async () => {
    fleet = await Fleet.start(3);
    redis = new Redis(testRedisUrl());
  });

  after(async () => {
    redis.disconnect();
    assert.deepEqual(await fleet.stop(), [0, 0, 0]);
    await assertNoLeaks();
  });

  const a = (): Instance => fleet.at(0);
  const b = (): Instance => fleet.at(1);
  const c = (): Instance => fleet.at(2);

  it(`answers REVOKED on B, C and A right after RevokeKey returns on A, from warm caches (in-process hits counted), ${CYCLES} cycles`, async () => {
    const accountId = newAccountId();
    const before = await Promise.all([b(), c()].map((i) => scrapeMetrics(i.server.metricsPort as number)));
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const { key, secret } = await a().admin.newKey(accountId);
      for (const instance of [a(), b(), c()]) {
        assert.equal((await instance.verifier.verify({ key: secret })).code, OK);
        assert.equal((await instance.verifier.verify({ key: secret })).code, OK);
      }
      await a().admin.revokeKey({ accountId, keyId: key?.id });
      for (const [name, instance] of [['B', b()], ['C', c()], ['A', a()]] as const) {
        const answer = await instance.verifier.verify({ key: secret });
        assert.equal(answer.code, VerifyCode.VERIFY_CODE_REVOKED, `cycle ${cycle}: instance ${name} answered ${answer.code}`);
      }
    }
    const afterwards = await Promise.all([b(), c()].map((i) => scrapeMetrics(i.server.metricsPort as number)));
    for (const [i, metrics] of afterwards.entries()) {
      const delta = (name: string): number => (metrics.get(name) ?? 0) - (before[i]?.get(name) ?? 0);
      const localHits = delta('keyward_verify_lookups_total{tier="local"}');
      // One in-process hit a cycle (the second Verify), unless the instance had just emptied its cache (trust
      // lost on a loaded machine, a lease lapsed) or refused a fill: each of those may cost a cycle its hit.
      const excused = delta('keyward_cache_clears_total') + delta('keyward_cache_outbox_lapses_total') + delta('keyward_cache_fills_refused_total');
      assert.ok(localHits >= CYCLES - excused && excused <= CYCLES / 20, `the caches were warm: ${localHits} in-process hits in ${CYCLES} cycles, ${excused} clears, lapses or refused fills`);
    }
  });

  it(`answers INSUFFICIENT_SCOPE (403) on every instance right after a scope is removed on any of them, ${CYCLES} times`, async () => {
    const accountId = newAccountId();
    const { key, secret } = await a().admin.newKey(accountId, { scopes: ['jobs:read', 'jobs:write'] });
    const keyId = key?.id;
    const write = { key: secret, requiredScopes: ['jobs:write'] };
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      for (const instance of [a(), b(), c()]) assert.equal((await instance.verifier.verify(write)).code, OK, `cycle ${cycle}: warm`);
      await fleet.at(cycle % 3).admin.updateScopes({ accountId, keyId, scopes: ['jobs:read'] });
      for (const instance of [a(), b(), c()]) {
        const answer = await instance.verifier.verify(write);
        assert.equal(answer.code, VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE, `cycle ${cycle}: answered ${answer.code}`);
        assert.equal(answer.httpStatus, 403);
      }
      await fleet.at((cycle + 1) % 3).admin.updateScopes({ accountId, keyId, scopes: ['jobs:read', 'jobs:write'] });
    }
  });

  it(`answers IP_NOT_ALLOWED on every instance right after the IP whitelist is narrowed on any of them, ${CYCLES} times`, async () => {
    const accountId = newAccountId();
    const { key, secret } = await a().admin.newKey(accountId);
    const keyId = key?.id;
    const outside = { key: secret, clientIp: '192.0.2.1' };
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      for (const instance of [a(), b(), c()]) assert.equal((await instance.verifier.verify(outside)).code, OK, `cycle ${cycle}: warm`);
      await fleet.at(cycle % 3).admin.updateIpWhitelist({ accountId, keyId, ipWhitelist: ['10.0.0.0/8'] });
      for (const instance of [a(), b(), c()]) {
        const answer = await instance.verifier.verify(outside);
        assert.equal(answer.code, VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED, `cycle ${cycle}: answered ${answer.code}`);
      }
      await fleet.at((cycle + 2) % 3).admin.updateIpWhitelist({ accountId, keyId, ipWhitelist: [] });
    }
  });

  it('answers REVOKED to every Verify sent after its key\'s RevokeKey returned (OK or REVOKED while in flight) under concurrent traffic on every instance, and leaves no active copy in any cache or in Redis', async () => {
    const accountId = newAccountId();
    const keys = await Promise.all(Array.from({ length: 40 }, () => a().admin.newKey(accountId)));
    const instances = [a(), b(), c()];
    /** performance.now() when each key's RevokeKey resolved here (undefined: not revoked yet). */
    const revokedAt: Array<number | undefined> = keys.map(() => undefined);
    /** Per instance and key: Verify calls sent after that key's revoke had returned. */
    const sentAfterRevoke = instances.map(() => keys.map(() => 0));
    let running = true;
    let calls = 0;
    const load = instances.flatMap((instance, n) =>
      Array.from({ length: 6 }, async (_, worker) => {
        try {
          for (let i = worker; running; i++) {
            const k = i % keys.length;
            const returnedAt = revokedAt[k];
            const sentAt = performance.now();
            const answer = await instance.verifier.verify({ key: (keys[k] as (typeof keys)[number]).secret });
            if (returnedAt !== undefined && sentAt > returnedAt) {
              assert.equal(
                answer.code,
                VerifyCode.VERIFY_CODE_REVOKED,
                `instance ${n}, key ${k}: a Verify sent ${(sentAt - returnedAt).toFixed(1)} ms after its RevokeKey returned answered ${answer.code}`,
              );
              (sentAfterRevoke[n] as number[])[k] = ((sentAfterRevoke[n] as number[])[k] ?? 0) + 1;
            } else {
              assert.ok(answer.code === OK || answer.code === VerifyCode.VERIFY_CODE_REVOKED, `instance ${n}, key ${k}: answered ${answer.code}`);
            }
            calls++;
          }
        } catch (error) {
          running = false;
          throw error;
        }
      }),
    );
    const loadDone = Promise.all(load);
    loadDone.catch(() => {});
    for (const [i, { key }] of keys.entries()) {
      await fleet.at(i % 3).admin.revokeKey({ accountId, keyId: key?.id });
      revokedAt[i] = performance.now();
      // Traffic between revokes (one call per worker's worth), ended early by a failed load.
      const callsAtRevoke = calls;
      await Promise.race([waitUntil(`Verify traffic after revoke ${i}`, () => calls >= callsAtRevoke + 18, { intervalMs: 1 }), loadDone]);
    }
    // Until every key has been verified on every instance by a call sent after its revoke returned.
    await Promise.race([
      waitUntil('a Verify sent after its revoke returned, for every key on every instance', () => sentAfterRevoke.every((perKey) => perKey.every((count) => count > 0))),
      loadDone,
    ]);
    running = false;
    await loadDone;
    assert.ok(calls > 500, `only ${calls} Verify calls raced the revocations`);

    for (const { secret } of keys) {
      for (const instance of [a(), b(), c()]) {
        assert.equal((await instance.verifier.verify({ key: secret })).code, VerifyCode.VERIFY_CODE_REVOKED);
      }
      const [version, data] = await redis.hmget(`${fleet.redisPrefix}key:${hashSecret(secret)}`, 'v', 'd');
      const payload = data == null ? '' : entryPayload(data);
      if (payload !== '') {
        const state = JSON.parse(payload) as { revokedAt: number | null; version: number };
        assert.notEqual(state.revokedAt, null, `Redis holds an active copy (version ${version})`);
      }
    }
  });

  it('counts in keyward_verify_lookups_total the one tier that answered each Verify (postgres, local, redis, negative; none for a malformed key)', async () => {
    const accountId = newAccountId();
    const { secret } = await a().admin.newKey(accountId);
    const unknown = new KeyFormat('fsm_live_', 'fsm_test_').generate('live');
    const port = (i: () => Instance) => i().server.metricsPort as number;
    const tier = (metrics: Map<string, number>, name: string) => metrics.get(`keyward_verify_lookups_total{tier="${name}"}`) ?? 0;
    const deltas = async (i: () => (typeof fleet.instances)[number], run: () => Promise<unknown>) => {
      const before = await scrapeMetrics(port(i));
      await run();
      const after = await scrapeMetrics(port(i));
      return Object.fromEntries(['local', 'redis', 'postgres', 'negative'].map((name) => [name, tier(after, name) - tier(before, name)]));
    };
    assert.deepEqual(await deltas(b, () => b().verifier.verify({ key: secret })), { local: 0, redis: 0, postgres: 1, negative: 0 });
    assert.deepEqual(await deltas(b, () => b().verifier.verify({ key: secret })), { local: 1, redis: 0, postgres: 0, negative: 0 });
    // B fills Redis after answering (nobody waits for a fill): C's lookup must come after the fill landed.
    await waitUntil('B filled Redis', async () => (await redis.hexists(`${fleet.redisPrefix}key:${hashSecret(secret)}`, 'd')) === 1);
    await waitForMetric(port(c), (m) => m.get('keyward_cache_trusted') === 1);
    assert.deepEqual(await deltas(c, () => c().verifier.verify({ key: secret })), { local: 0, redis: 1, postgres: 0, negative: 0 });
    assert.deepEqual(await deltas(b, () => b().verifier.verify({ key: unknown })), { local: 0, redis: 0, postgres: 1, negative: 0 });
    assert.deepEqual(await deltas(b, () => b().verifier.verify({ key: unknown })), { local: 0, redis: 0, postgres: 0, negative: 1 });
    await waitUntil('B filled Redis with "no such key"', async () => (await redis.hexists(`${fleet.redisPrefix}key:${hashSecret(unknown)}`, 'd')) === 1);
    await waitForMetric(port(c), (m) => m.get('keyward_cache_trusted') === 1);
    assert.deepEqual(await deltas(c, () => c().verifier.verify({ key: unknown })), { local: 0, redis: 0, postgres: 0, negative: 1 });
    assert.deepEqual(await deltas(c, () => c().verifier.verify({ key: 'fsm_live_malformed' })), { local: 0, redis: 0, postgres: 0, negative: 0 });
    const metrics = await scrapeMetrics(port(c));
    assert.ok((metrics.get('keyward_verify_total{code="VERIFY_CODE_INVALID_KEY"}') ?? 0) >= 2);
    assert.equal(metrics.get('keyward_cache_trusted'), 1);
  });
});

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import pg from 'pg';
import { EntrySeal } from '../src/cache/EntrySeal';
import { VerifyCode } from '../src/gen/keyward/v1/keyward';
import { hashSecret } from '../src/keys/KeyFormat';
import { newAccountId, testDatabaseUrl, testRedisUrl } from './helpers/env';
import { Fleet, type Instance } from './helpers/Fleet';
import { assertNoLeaks } from './helpers/leaks';
import { entryPayload, sealedParts } from './helpers/redisEntries';
import { waitUntil } from './helpers/waitUntil';

const CYCLES = 20;
const OK = VerifyCode.VERIFY_CODE_OK;
const EXPIRED = VerifyCode.VERIFY_CODE_EXPIRED;

/**
 * UpdateKey goes through the same propagation as RevokeKey and the others
 * (ChangePropagator): a new name, expiry or metadata holds on every instance
 * before the call returns.
 */
describe('UpdateKey on three instances on one Postgres and Redis', () => {
  let fleet: Fleet;
  let redis: Redis;
  let db: pg.Pool;

  before(async () => {
    fleet = await Fleet.start(3);
    redis = new Redis(testRedisUrl());
    db = new pg.Pool({ connectionString: testDatabaseUrl(), max: 1 });
  });

  after(async () => {
    redis.disconnect();
    await db.end();
    assert.deepEqual(await fleet.stop(), [0, 0, 0]);
    await assertNoLeaks();
  });

  const instances = (): Instance[] => fleet.instances;

  it(`answers with the new name and metadata on every instance right after UpdateKey returns on any of them, from warm caches, ${CYCLES} cycles`, async () => {
    const accountId = newAccountId();
    const { key, secret } = await fleet.at(0).admin.newKey(accountId, { name: 'n0', metadata: { cycle: '0' } });
    const keyId = key?.id;
    const request = { key: secret, requiredScopes: ['jobs:read'] };
    for (let cycle = 1; cycle <= CYCLES; cycle++) {
      for (const instance of instances()) {
        const warm = await instance.verifier.verify(request);
        assert.deepEqual([warm.code, warm.keyName, warm.metadata], [OK, `n${cycle - 1}`, { cycle: String(cycle - 1) }], `cycle ${cycle}: warm`);
      }
      const changer = cycle % 3;
      await fleet.at(changer).admin.updateKey({ accountId, keyId, name: `n${cycle}`, metadata: { cycle: String(cycle) }, updateMask: ['name', 'metadata'] });
      for (const n of [changer + 1, changer + 2, changer].map((i) => i % 3)) {
        const answer = await fleet.at(n).verifier.verify(request);
        assert.deepEqual([answer.code, answer.keyName, answer.metadata], [OK, `n${cycle}`, { cycle: String(cycle) }], `cycle ${cycle}: instance ${n} after UpdateKey on ${changer}`);
      }
    }
  });

  it('answers OK on every instance right after UpdateKey clears an expiry that had passed, and EXPIRED everywhere right after it sets a near one that passes', async () => {
    const accountId = newAccountId();
    const soon = new Date(Date.now() + 1_000);
    const { key, secret } = await fleet.at(0).admin.newKey(accountId, { expiresAt: soon });
    const keyId = key?.id;
    const request = { key: secret };
    await waitUntil('the expiry to pass', () => Date.now() > soon.getTime() + 5);
    for (const instance of instances()) assert.equal((await instance.verifier.verify(request)).code, EXPIRED, 'warm, expired');
    await fleet.at(1).admin.updateKey({ accountId, keyId, updateMask: ['expires_at'] });
    for (const n of [2, 0, 1]) assert.equal((await fleet.at(n).verifier.verify(request)).code, OK, `instance ${n} after the expiry was cleared`);
    const later = new Date(Date.now() + 1_000);
    await fleet.at(2).admin.updateKey({ accountId, keyId, expiresAt: later, updateMask: ['expires_at'] });
    await waitUntil('the new expiry to pass', () => Date.now() > later.getTime() + 5);
    for (const n of [0, 1, 2]) assert.equal((await fleet.at(n).verifier.verify(request)).code, EXPIRED, `instance ${n} after the new expiry passed`);
  });

  it('reads an entry without metadata (written by a release before metadata) as a miss: asks Postgres, answers with the metadata, and replaces the entry', async () => {
    const accountId = newAccountId();
    const { rows } = await db.query<{ secret: Buffer }>("select secret from keyward.instance_secrets where name = 'redis-mac'");
    const seal = new EntrySeal(rows[0]?.secret as Buffer);
    const { secret } = await fleet.at(0).admin.newKey(accountId, { metadata: { integration: 'crm' } });
    const hash = hashSecret(secret);
    const entry = `${fleet.redisPrefix}key:${hash}`;
    // Instance A's lookup fills Redis.
    assert.equal((await fleet.at(0).verifier.verify({ key: secret })).code, OK);
    const d = await waitUntil('the entry filled by instance A', async () => {
      const [version = null, data = null] = await redis.hmget(entry, 'v', 'd');
      return version === '1' && data !== null && entryPayload(data).startsWith('{') ? data : undefined;
    });
    const { metadata: _unknownToOlderReleases, ...older } = JSON.parse(entryPayload(d)) as Record<string, unknown>;
    await redis.hset(entry, 'v', '1', 'd', seal.seal(hash, 1, JSON.stringify(older), 60_000, Date.now()));

    // Instance C never saw the key: its lookup goes to Redis and finds the older entry, which must not read as "no metadata".
    const answer = await fleet.at(2).verifier.verify({ key: secret });
    assert.deepEqual([answer.code, answer.metadata], [OK, { integration: 'crm' }]);
    await waitUntil('the older entry replaced by one with the metadata', async () => {
      const [version = null, data = null] = await redis.hmget(entry, 'v', 'd');
      return version === '1' && data !== null && sealedParts(data).payload.includes('"metadata":{"integration":"crm"}');
    });
  });
});

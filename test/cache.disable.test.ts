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
import { scrapeMetrics } from './helpers/metrics';
import { entryPayload, sealedParts } from './helpers/redisEntries';
import { waitUntil } from './helpers/waitUntil';

const CYCLES = 100;
const OK = VerifyCode.VERIFY_CODE_OK;
const DISABLED = VerifyCode.VERIFY_CODE_DISABLED;

/**
 * DisableKey and EnableKey go through the same propagation as RevokeKey
 * (ChangePropagator): each holds on every instance before the call returns.
 */
describe('DisableKey and EnableKey on three instances on one Postgres and Redis', () => {
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
  const localHits = async (instance: Instance): Promise<number> =>
    (await scrapeMetrics(instance.server.metricsPort as number)).get('keyward_verify_lookups_total{tier="local"}') ?? 0;

  it(`answers DISABLED on every instance right after DisableKey returns on any of them, and OK everywhere right after EnableKey, from warm caches, ${CYCLES} cycles`, async () => {
    const accountId = newAccountId();
    const { key, secret } = await fleet.at(0).admin.newKey(accountId);
    const keyId = key?.id;
    const request = { key: secret, requiredScopes: ['jobs:read'] };
    const hitsBefore = await Promise.all(instances().map(localHits));
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      // Warm: every instance answered OK from what it holds, twice.
      for (const instance of instances()) {
        assert.equal((await instance.verifier.verify(request)).code, OK, `cycle ${cycle}: warm`);
        assert.equal((await instance.verifier.verify(request)).code, OK, `cycle ${cycle}: warm`);
      }
      const disabler = cycle % 3;
      const disabled = await fleet.at(disabler).admin.disableKey({ accountId, keyId });
      assert.ok(disabled.key?.disabledAt instanceof Date);
      // The other instances first, then the one that made the change.
      for (const n of [disabler + 1, disabler + 2, disabler].map((i) => i % 3)) {
        const answer = await fleet.at(n).verifier.verify(request);
        assert.deepEqual([answer.code, answer.httpStatus, answer.valid], [DISABLED, 401, false], `cycle ${cycle}: instance ${n} after DisableKey on ${disabler}`);
      }
      const enabler = (cycle + 1) % 3;
      const enabled = await fleet.at(enabler).admin.enableKey({ accountId, keyId });
      assert.equal(enabled.key?.disabledAt, undefined);
      for (const n of [enabler + 1, enabler + 2, enabler].map((i) => i % 3)) {
        const answer = await fleet.at(n).verifier.verify(request);
        assert.deepEqual([answer.code, answer.httpStatus, answer.valid], [OK, 200, true], `cycle ${cycle}: instance ${n} after EnableKey on ${enabler}`);
      }
    }
    const hitsAfter = await Promise.all(instances().map(localHits));
    for (const [i, after] of hitsAfter.entries()) {
      const hits = after - (hitsBefore[i] ?? 0);
      assert.ok(hits >= CYCLES, `instance ${i}'s cache was warm: ${hits} in-process hits`);
    }
    // Two versions per cycle, and Redis holds the last one, enabled.
    const [version = null, data = null] = await redis.hmget(`${fleet.redisPrefix}key:${hashSecret(secret)}`, 'v', 'd');
    assert.equal(version, String(1 + 2 * CYCLES));
    if (data !== null && entryPayload(data) !== '') {
      assert.equal((JSON.parse(entryPayload(data)) as { disabledAt: unknown }).disabledAt, null);
    }
  });

  it('reads an entry without disabled_at (written by a release before DisableKey) as a miss: asks Postgres, answers as it says, and replaces the entry', async () => {
    const accountId = newAccountId();
    const { rows } = await db.query<{ secret: Buffer }>("select secret from keyward.instance_secrets where name = 'redis-mac'");
    const seal = new EntrySeal(rows[0]?.secret as Buffer);
    /** Rewrites the key's Redis entry as an older release would have filled it: the record as it knew it, sealed under the fleet's secret. */
    const writeOlderEntry = async (secret: string, version: string): Promise<string> => {
      const hash = hashSecret(secret);
      const entry = `${fleet.redisPrefix}key:${hash}`;
      const [v = null, d = null] = await redis.hmget(entry, 'v', 'd');
      assert.equal(v, version);
      const { disabledAt: _unknownToOlderReleases, ...older } = JSON.parse(entryPayload(d as string)) as Record<string, unknown>;
      await redis.hset(entry, 'v', version, 'd', seal.seal(hash, Number(version), JSON.stringify(older), 60_000, Date.now()));
      return entry;
    };
    const replaced = (entry: string, version: string) =>
      waitUntil('the older entry replaced by one that says whether the key is disabled', async () => {
        const [v = null, d = null] = await redis.hmget(entry, 'v', 'd');
        return v === version && d !== null && sealedParts(d).payload.includes('"disabledAt":');
      });

    // Disabled: must not be read as enabled.
    const disabledKey = await fleet.at(0).admin.newKey(accountId);
    await fleet.at(0).admin.disableKey({ accountId, keyId: disabledKey.key?.id });
    const disabledEntry = await writeOlderEntry(disabledKey.secret, '2');
    // Enabled again: must not be read as disabled.
    const enabledKey = await fleet.at(0).admin.newKey(accountId);
    await fleet.at(0).admin.disableKey({ accountId, keyId: enabledKey.key?.id });
    await fleet.at(0).admin.enableKey({ accountId, keyId: enabledKey.key?.id });
    const enabledEntry = await writeOlderEntry(enabledKey.secret, '3');

    // Instance C never saw either key: its lookups go to Redis and find the older entries.
    const disabled = await fleet.at(2).verifier.verify({ key: disabledKey.secret });
    assert.deepEqual([disabled.code, disabled.httpStatus], [DISABLED, 401]);
    const enabled = await fleet.at(2).verifier.verify({ key: enabledKey.secret });
    assert.deepEqual([enabled.code, enabled.httpStatus], [OK, 200]);
    await replaced(disabledEntry, '2');
    await replaced(enabledEntry, '3');
  });
});

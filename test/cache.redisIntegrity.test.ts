import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { EntrySeal } from '../src/cache/EntrySeal';
import { VerifyCode } from '../src/gen/keyward/v1/keyward';
import { DEFAULT_SCOPES } from '../src/keys/scopes';
import { KeyFormat, hashSecret } from '../src/keys/KeyFormat';
import type { KeyState } from '../src/keys/VerifiableKey';
import { newAccountId, testRedisUrl } from './helpers/env';
import { Fleet, type Instance } from './helpers/Fleet';
import { assertNoLeaks } from './helpers/leaks';
import { scrapeMetrics } from './helpers/metrics';
import { entryPayload, joinSealed, sealedParts } from './helpers/redisEntries';
import { waitUntil } from './helpers/waitUntil';

const OK = VerifyCode.VERIFY_CODE_OK;
const INVALID_KEY = VerifyCode.VERIFY_CODE_INVALID_KEY;
const REVOKED = VerifyCode.VERIFY_CODE_REVOKED;
/** A version no real key reaches: a compare-and-set by version would keep it forever. */
const HUGE = '999999999999999';
/** Put in every forged record, to prove no log line carries an entry's content. */
const MARKER = 'forged-by-redis-integrity-test';

describe('EntrySeal', () => {
  const seal = new EntrySeal(randomBytes(32));
  const hash = hashSecret('a');
  const now = 1_700_000_000_000;
  const sealed = seal.seal(hash, 7, '{"x":1}', 60_000, now);

  it('opens what it sealed, for that hash and version, until the sealed expiry plus the grace', () => {
    assert.deepEqual(seal.open(hash, '7', sealed, now), { ok: true, payload: '{"x":1}' });
    assert.deepEqual(seal.open(hash, '7', sealed, now + 65_000), { ok: true, payload: '{"x":1}' });
    assert.deepEqual(seal.open(hash, '7', sealed, now + 65_001), { ok: false, reason: 'expired' });
    for (const payload of ['-', '']) assert.deepEqual(seal.open(hash, '0', seal.seal(hash, 0, payload, 1_000, now), now), { ok: true, payload });
  });

  it('refuses entries without a seal, of another schema, hash, version, payload or secret', () => {
    const parts = sealedParts(sealed);
    const refused = (versionField: string | null, data: string | null, forHash = hash) => {
      const opened = seal.open(forHash, versionField, data, now);
      return opened.ok ? 'accepted' : opened.reason;
    };
    for (const legacy of ['{"x":1}', '-', '', null, '1.7.x', `1.7.${now}.short.{}`]) assert.equal(refused('7', legacy), 'unsealed', String(legacy));
    assert.equal(refused('7', `2${sealed.slice(1)}`), 'schema');
    assert.equal(refused('7', sealed, hashSecret('b')), 'mac');
    assert.equal(refused('7', joinSealed({ ...parts, payload: '{"x":2}' })), 'mac');
    assert.equal(refused('7', joinSealed({ ...parts, version: HUGE })), 'mac');
    assert.equal(refused('7', joinSealed({ ...parts, expiresAt: String(now + 3_600_000) })), 'mac');
    assert.equal(refused('7', joinSealed({ ...parts, mac: randomBytes(32).toString('base64url') })), 'mac');
    assert.equal(refused('7', new EntrySeal(randomBytes(32)).seal(hash, 7, '{"x":1}', 60_000, now)), 'mac');
    assert.equal(refused(HUGE, sealed), 'version');
    assert.equal(refused(null, sealed), 'version');
  });
});

describe('Redis entries keyward did not seal, on two instances without an in-process cache', () => {
  let fleet: Fleet;
  let redis: Redis;
  const format = new KeyFormat('fsm_live_', 'fsm_test_');

  before(async () => {
    // No in-process tier: every lookup reads Redis first.
    fleet = await Fleet.startEach([{ KEYWARD_LOCAL_CACHE: 'false' }, { KEYWARD_LOCAL_CACHE: 'false' }]);
    redis = new Redis(testRedisUrl());
  });

  after(async () => {
    redis.disconnect();
    assert.deepEqual(await fleet.stop(), [0, 0]);
    await assertNoLeaks();
  });

  const a = (): Instance => fleet.at(0);
  const b = (): Instance => fleet.at(1);
  const entryOf = (secret: string): string => `${fleet.redisPrefix}key:${hashSecret(secret)}`;
  const metrics = (instance: Instance): Promise<Map<string, number>> => scrapeMetrics(instance.server.metricsPort as number);
  const rejected = (m: Map<string, number>, reason: string): number => m.get(`keyward_redis_entries_rejected_total{reason="${reason}"}`) ?? 0;
  const tier = (m: Map<string, number>, name: string): number => m.get(`keyward_verify_lookups_total{tier="${name}"}`) ?? 0;

  /** Waits until Redis holds an entry for `secret` whose fields satisfy `match`; returns them. */
  const waitForEntry = (secret: string, what: string, match: (v: string | null, d: string | null) => boolean) =>
    waitUntil(`Redis entry: ${what}`, async () => {
      const [v = null, d = null] = await redis.hmget(entryOf(secret), 'v', 'd');
      return match(v, d) ? { v, d } : undefined;
    });
  /** Waits until keyward wrote the record of `secret` at `version` into Redis. */
  const waitForRecord = (secret: string, version: number) =>
    waitForEntry(secret, `sealed record at version ${version}`, (v, d) => v === String(version) && d !== null && entryPayload(d).startsWith('{'));

  const forgedRecord = (accountId: string): KeyState => ({
    id: randomUUID(),
    accountId,
    name: MARKER,
    environment: 'live',
    scopes: DEFAULT_SCOPES,
    ipWhitelist: [],
    expiresAt: null,
    revokedAt: null,
    disabledAt: null,
    metadata: {},
    version: 1,
  });
  const madeUpMac = (): string => randomBytes(32).toString('base64url');
  const later = (): string => String(Date.now() + 3_600_000);

  it('answers INVALID_KEY for a forged entry of a key PostgreSQL never had, with no MAC or a made-up one, and counts it', async () => {
    const before = await metrics(b());
    const record = JSON.stringify(forgedRecord(newAccountId()));
    const everyScope = (secret: string) => ({ key: secret, requiredScopes: [...DEFAULT_SCOPES] });

    const unsealed = format.generate('live');
    await redis.hset(entryOf(unsealed), 'v', '1', 'd', record);
    assert.equal((await b().verifier.verify(everyScope(unsealed))).code, INVALID_KEY);
    // Deleted, then replaced by keyward's own (sealed) "no such key".
    await waitForEntry(unsealed, 'sealed "no such key"', (v, d) => v === '0' && d !== null && d !== record && entryPayload(d) === '-');

    const madeUp = format.generate('live');
    const forged = joinSealed({ schema: '1', version: '1', expiresAt: later(), mac: madeUpMac(), payload: record });
    await redis.hset(entryOf(madeUp), 'v', '1', 'd', forged);
    assert.equal((await b().verifier.verify(everyScope(madeUp))).code, INVALID_KEY);
    await waitForEntry(madeUp, 'sealed "no such key"', (v, d) => v === '0' && d !== null && d !== forged && entryPayload(d) === '-');

    const afterwards = await metrics(b());
    assert.equal(rejected(afterwards, 'unsealed') - rejected(before, 'unsealed'), 1);
    assert.equal(rejected(afterwards, 'mac') - rejected(before, 'mac'), 1);
    assert.equal(tier(afterwards, 'redis') - tier(before, 'redis'), 0, 'no forged entry answered');
    assert.equal(tier(afterwards, 'postgres') - tier(before, 'postgres'), 2);
  });

  it('does not let a forged "no such key" entry refuse a real key', async () => {
    const accountId = newAccountId();
    const { secret } = await a().admin.newKey(accountId);
    const before = await metrics(b());
    for (const d of ['-', joinSealed({ schema: '1', version: '0', expiresAt: later(), mac: madeUpMac(), payload: '-' })]) {
      await redis.hset(entryOf(secret), 'v', '0', 'd', d);
      assert.equal((await b().verifier.verify({ key: secret })).code, OK);
      await waitForRecord(secret, 1);
    }
    const afterwards = await metrics(b());
    assert.equal(rejected(afterwards, 'unsealed') - rejected(before, 'unsealed'), 1);
    assert.equal(rejected(afterwards, 'mac') - rejected(before, 'mac'), 1);
    assert.equal(tier(afterwards, 'negative') - tier(before, 'negative'), 0);
  });

  it('answers REVOKED when a revoked key is put back with its pre-revoke entry and a huge version, and later changes still write through', async () => {
    const accountId = newAccountId();
    const { key, secret } = await a().admin.newKey(accountId);
    assert.equal((await a().verifier.verify({ key: secret })).code, OK);
    const { d: preRevoke } = await waitForRecord(secret, 1);
    await a().admin.revokeKey({ accountId, keyId: key?.id });
    for (const instance of [a(), b()]) assert.equal((await instance.verifier.verify({ key: secret })).code, REVOKED);
    const before = await metrics(b());

    // keyward's own (validly sealed) pre-revoke data, under a huge `v`.
    await redis.hset(entryOf(secret), 'v', HUGE, 'd', preRevoke as string);
    assert.equal((await b().verifier.verify({ key: secret })).code, REVOKED);
    const { d: refilled } = await waitForRecord(secret, 2);
    assert.notEqual((JSON.parse(entryPayload(refilled as string)) as KeyState).revokedAt, null);
    // The same with the version inside the seal changed too, and a made-up MAC.
    await redis.hset(entryOf(secret), 'v', HUGE, 'd', joinSealed({ ...sealedParts(preRevoke as string), version: HUGE, expiresAt: later(), mac: madeUpMac() }));
    assert.equal((await b().verifier.verify({ key: secret })).code, REVOKED);
    await waitForRecord(secret, 2);
    const afterwards = await metrics(b());
    assert.equal(rejected(afterwards, 'version') - rejected(before, 'version'), 1);
    assert.equal(rejected(afterwards, 'mac') - rejected(before, 'mac'), 1);

    // An active key under a forged, huge-version entry granting every scope: refused by what PostgreSQL says,
    // then an admin change writes through (the forged entry is gone) and the other instance hits it in Redis.
    const other = await a().admin.newKey(accountId, { scopes: ['jobs:read'] });
    const write = { key: other.secret, requiredScopes: ['jobs:write'] };
    assert.equal((await a().verifier.verify({ key: other.secret })).code, OK);
    await waitForRecord(other.secret, 1);
    const grant = JSON.stringify({ ...forgedRecord(accountId), id: other.key?.id, version: Number(HUGE) });
    await redis.hset(entryOf(other.secret), 'v', HUGE, 'd', joinSealed({ schema: '1', version: HUGE, expiresAt: later(), mac: madeUpMac(), payload: grant }));
    assert.equal((await b().verifier.verify(write)).code, VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE);
    await waitForRecord(other.secret, 1);
    await a().admin.updateScopes({ accountId, keyId: other.key?.id, scopes: ['jobs:read', 'jobs:write'] });
    const [v, d] = await redis.hmget(entryOf(other.secret), 'v', 'd');
    assert.equal(v, '2', 'UpdateScopes wrote its version through');
    assert.deepEqual((JSON.parse(entryPayload(d as string)) as KeyState).scopes, ['jobs:read', 'jobs:write']);
    const hitsBefore = tier(await metrics(b()), 'redis');
    assert.equal((await b().verifier.verify(write)).code, OK);
    assert.equal(tier(await metrics(b()), 'redis') - hitsBefore, 1, 'answered from the written-through entry');
    await a().admin.revokeKey({ accountId, keyId: other.key?.id });
    const [revokedV, revokedD] = await redis.hmget(entryOf(other.secret), 'v', 'd');
    assert.equal(revokedV, '3', 'RevokeKey wrote its version through');
    assert.notEqual((JSON.parse(entryPayload(revokedD as string)) as KeyState).revokedAt, null);
    assert.equal((await b().verifier.verify(write)).code, REVOKED);
  });

  it('reads PostgreSQL for an entry of an unknown schema version', async () => {
    const { secret } = await a().admin.newKey(newAccountId());
    assert.equal((await a().verifier.verify({ key: secret })).code, OK);
    const { d } = await waitForRecord(secret, 1);
    const before = await metrics(b());
    await redis.hset(entryOf(secret), 'd', `2${(d as string).slice(1)}`);
    assert.equal((await b().verifier.verify({ key: secret })).code, OK);
    const afterwards = await metrics(b());
    assert.equal(rejected(afterwards, 'schema') - rejected(before, 'schema'), 1);
    assert.equal(tier(afterwards, 'postgres') - tier(before, 'postgres'), 1);
    assert.equal(tier(afterwards, 'redis') - tier(before, 'redis'), 0);
    await waitForEntry(secret, 'resealed in schema 1', (v, data) => v === '1' && data !== null && data.startsWith('1.'));
  });

  it('keeps using Redis after forged entries, and logs them at most once a minute without their content', async () => {
    const key = await a().admin.newKey(newAccountId());
    assert.equal((await a().verifier.verify({ key: key.secret })).code, OK);
    await waitForRecord(key.secret, 1);
    const before = await metrics(b());
    for (let i = 0; i < 3; i++) assert.equal((await b().verifier.verify({ key: key.secret })).code, OK);
    const afterwards = await metrics(b());
    assert.equal(tier(afterwards, 'redis') - tier(before, 'redis'), 3, 'Redis answered every lookup');
    assert.equal(afterwards.get('keyward_cache_trusted'), 1);
    assert.equal(afterwards.get('keyward_verify_redis_errors_total'), 0, 'no forged entry counted as a Redis error');
    const lines = b().server.logLines();
    assert.equal(lines.filter((line) => line.msg.startsWith('redis failed on the verify path')).length, 0, 'Redis was never suspended');
    const logged = lines.filter((line) => line.event === 'redis-entry-rejected');
    assert.equal(logged.length, 1, 'several rejections within a minute: one line');
    assert.ok(!b().server.log.includes(MARKER), 'no forged content in the log');
  });

  it('uses one MAC key on every instance: an entry filled by one is a Redis hit on the other', async () => {
    const { secret } = await b().admin.newKey(newAccountId());
    assert.equal((await b().verifier.verify({ key: secret })).code, OK);
    await waitForRecord(secret, 1);
    const before = await metrics(a());
    assert.equal((await a().verifier.verify({ key: secret })).code, OK);
    const afterwards = await metrics(a());
    assert.equal(tier(afterwards, 'redis') - tier(before, 'redis'), 1);
    assert.equal(tier(afterwards, 'postgres') - tier(before, 'postgres'), 0);
    for (const reason of ['unsealed', 'schema', 'version', 'mac', 'expired', 'type']) assert.equal(rejected(afterwards, reason), rejected(before, reason), reason);
  });

  it('treats a Redis key of another type as a bad entry, not a Redis failure, and deletes it', async () => {
    const { secret } = await a().admin.newKey(newAccountId());
    await redis.set(entryOf(secret), MARKER);
    const before = await metrics(b());
    assert.equal((await b().verifier.verify({ key: secret })).code, OK);
    await waitForRecord(secret, 1);
    const afterwards = await metrics(b());
    assert.equal(rejected(afterwards, 'type') - rejected(before, 'type'), 1);
    assert.equal(afterwards.get('keyward_verify_redis_errors_total'), 0);
    assert.equal((await b().verifier.verify({ key: secret })).code, OK);
    assert.equal(tier(await metrics(b()), 'redis') - tier(afterwards, 'redis'), 1, 'Redis still in use');
  });
});

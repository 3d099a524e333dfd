import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { type ServiceError, status } from '@grpc/grpc-js';
import pg from 'pg';
import { VerifyCode, type VerifyRequest, type VerifyResponse } from '../src/gen/keyward/v1/keyward';
import { type KeyUses, UsageStore } from '../src/store/UsageStore';
import { AdminClient, VerifierClient } from './helpers/clients';
import { newAccountId, testDatabaseUrl } from './helpers/env';
import { FaultProxy } from './helpers/FaultProxy';
import { Fleet } from './helpers/Fleet';
import { assertNoLeaks } from './helpers/leaks';
import { scrapeMetrics, waitForMetric } from './helpers/metrics';
import { ServerProcess } from './helpers/serverProcess';
import { waitUntil } from './helpers/waitUntil';

interface StoredUsage {
  request_count: string;
  refused_count: string;
  last_used_at: Date | null;
  last_used_ip: string | null;
}

async function storedUsage(db: pg.Pool, keyId: string): Promise<StoredUsage | undefined> {
  const { rows } = await db.query<StoredUsage>('select * from keyward.key_usage where key_id = $1', [keyId]);
  return rows[0];
}

/** A key of the load, how often it is called, and how many of those calls it must refuse. */
interface LoadKey {
  keyId: string;
  secret: string;
  calls: number;
  refused: number;
  revoked: boolean;
}

/**
 * Creates keys (some revoked), warms every instance's cache with them, and
 * drives Verify calls (at least 120 + 13 × i for key i), spread round-robin
 * over the instances, 16 in flight per instance, counting them per key.
 * Every fifth call of a key asks for a scope the key lacks. `during` runs
 * alongside the load, and the load goes on until it is done.
 */
async function driveLoad(fleet: Fleet, keyCount: number, during?: () => Promise<void>): Promise<LoadKey[]> {
  // While Postgres is faulty, a Verify may answer UNAVAILABLE (a slow outbox
  // read makes an instance bypass its caches, README "Caching and
  // revocation"); a REST service answers 503 and its client retries. Such a
  // call identified no key, so it counts no use; the retry is counted once.
  const retryUnavailable = during !== undefined;
  const accountId = newAccountId();
  const keys: LoadKey[] = [];
  for (let i = 0; i < keyCount; i++) {
    const { key, secret } = await fleet.at(0).admin.newKey(accountId);
    const revoked = i % 4 === 1;
    if (revoked) await fleet.at(0).admin.revokeKey({ accountId, keyId: key?.id });
    keys.push({ keyId: key?.id as string, secret, calls: 0, refused: 0, revoked });
  }
  // Warm every cache, so that the load can go on while Postgres is away.
  for (const key of keys) {
    for (const instance of fleet.instances) {
      await instance.verifier.verify({ key: key.secret, clientIp: '10.0.0.1' });
      key.calls++;
      if (key.revoked) key.refused++;
    }
  }
  const plan: Array<{ key: LoadKey; j: number }> = [];
  for (const [i, key] of keys.entries()) {
    for (let j = 0; j < 120 + 13 * i; j++) plan.push({ key, j });
  }
  let next = 0;
  let duringDone = during === undefined;
  const duringRun = during?.().finally(() => {
    duringDone = true;
  });
  const workers = fleet.instances.flatMap((instance, n) =>
    Array.from({ length: 16 }, async () => {
      for (let index = next++; index < plan.length || !duringDone; index = next++) {
        const { key, j } = plan[index % plan.length] as (typeof plan)[number];
        const target = fleet.at((index + n) % fleet.instances.length);
        const scopeMissing = j % 5 === 0;
        const request = { key: key.secret, clientIp: `10.0.0.${j % 250}`, requiredScopes: scopeMissing ? ['jobs:write'] : [] };
        const answer = await verifyRetryingUnavailable(target.verifier, request, retryUnavailable);
        const expected = key.revoked ? VerifyCode.VERIFY_CODE_REVOKED : scopeMissing ? VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE : VerifyCode.VERIFY_CODE_OK;
        assert.equal(answer.code, expected, `instance ${instance.server.port}`);
        key.calls++;
        if (expected !== VerifyCode.VERIFY_CODE_OK) key.refused++;
      }
    }),
  );
  await Promise.all([...workers, duringRun]);
  // A last call per key, from an address of its own, strictly after every other.
  await new Promise((resolve) => setTimeout(resolve, 5));
  for (const [i, key] of keys.entries()) {
    const answer = await fleet.at(i % fleet.instances.length).verifier.verify({ key: key.secret, clientIp: `203.0.113.${i}` });
    key.calls++;
    if (answer.code !== VerifyCode.VERIFY_CODE_OK) key.refused++;
  }
  return keys;
}

async function verifyRetryingUnavailable(verifier: VerifierClient, request: Partial<VerifyRequest>, retryUnavailable: boolean): Promise<VerifyResponse> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await verifier.verify(request);
    } catch (error) {
      if (!retryUnavailable || (error as ServiceError).code !== status.UNAVAILABLE || attempt === 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

async function assertStoredExactly(db: pg.Pool, keys: readonly LoadKey[], startedAt: number): Promise<void> {
  for (const [i, key] of keys.entries()) {
    const usage = await storedUsage(db, key.keyId);
    assert.ok(usage !== undefined, `key ${i}: no usage stored`);
    assert.equal(Number(usage.request_count), key.calls, `key ${i}: request_count`);
    assert.equal(Number(usage.refused_count), key.refused, `key ${i}: refused_count`);
    assert.equal(usage.last_used_ip, `203.0.113.${i}`, `key ${i}: last_used_ip`);
    assert.ok((usage.last_used_at?.getTime() ?? 0) >= startedAt && (usage.last_used_at?.getTime() ?? 0) <= Date.now());
  }
}

describe('usage counting', () => {
  let db: pg.Pool;

  before(() => {
    db = new pg.Pool({ connectionString: testDatabaseUrl(), max: 4 });
  });

  after(async () => {
    await db.end();
    await assertNoLeaks();
  });

  it('stores exact counts from three instances, written only by their SIGTERM flush', async () => {
    const fleet = await Fleet.start(3, { KEYWARD_USAGE_FLUSH_MS: '3600000' });
    const startedAt = Date.now();
    let keys: LoadKey[];
    try {
      keys = await driveLoad(fleet, 12);
      assert.equal(await storedUsage(db, keys[0]?.keyId as string), undefined, 'nothing written before the stop');
    } finally {
      assert.deepEqual(await fleet.stop(), [0, 0, 0]);
    }
    await assertStoredExactly(db, keys, startedAt);
    assert.ok(keys.reduce((sum, k) => sum + k.calls, 0) > 2_000);
  });

  it('stores exact counts when Postgres refuses, then stalls and cuts connections during the load', async () => {
    const proxy = await FaultProxy.toTestDatabase();
    const fleet = await Fleet.start(3, {
      DATABASE_URL: proxy.databaseUrl(),
      KEYWARD_USAGE_FLUSH_MS: '100',
      KEYWARD_DB_QUERY_TIMEOUT_MS: '4000',
    });
    const startedAt = Date.now();
    let keys: LoadKey[];
    const scrapeAll = () => Promise.all(fleet.instances.map((i) => scrapeMetrics(i.server.metricsPort as number)));
    /** Waits until `name` has grown past `floors` on every instance. */
    const growEverywhere = (name: string, floors: readonly Map<string, number>[]) =>
      Promise.all(fleet.instances.map((i, n) => waitForMetric(i.server.metricsPort as number, (m) => (m.get(name) ?? 0) > (floors[n]?.get(name) ?? 0))));
    const fleetSum = (metrics: readonly Map<string, number>[], name: string) => metrics.reduce((sum, m) => sum + (m.get(name) ?? 0), 0);
    try {
      keys = await driveLoad(fleet, 12, async () => {
        // Every instance is writing uses.
        await growEverywhere('keyward_usage_batches_written_total', []);
        proxy.refuse();
        proxy.cut();
        let floors = await scrapeAll();
        await growEverywhere('keyward_usage_batches_failed_total', floors);
        proxy.pass();
        floors = await scrapeAll();
        await growEverywhere('keyward_usage_batches_written_total', floors);
        // A usage write runs and commits, its answer is held, then the connections die:
        // that instance cannot know whether its batch was written, and sends it again.
        proxy.delayResponses(1_500);
        await proxy.heldAnswerTo('insert into keyward.usage_batches');
        proxy.cut();
        proxy.delayResponses(0);
        await waitUntil('the batch whose answer was lost is sent again', async () => fleetSum(await scrapeAll(), 'keyward_usage_batches_deduplicated_total') >= 1, {
          intervalMs: 50,
        });
      });
      const metrics = await scrapeAll();
      assert.ok(fleetSum(metrics, 'keyward_usage_batches_failed_total') > 0, 'the outage made some batch fail');
      assert.ok(fleetSum(metrics, 'keyward_usage_batches_deduplicated_total') >= 1, 'a retried batch was recognised as applied');
      assert.equal(fleetSum(metrics, 'keyward_usage_rejected_total'), 0);
    } finally {
      assert.deepEqual(await fleet.stop(), [0, 0, 0]);
      await proxy.close();
    }
    await assertStoredExactly(db, keys, startedAt);
  });

  it('shows request_count, refused_count, last_used_at and last_used_ip in GetKey and ListKeys', async () => {
    const server = await ServerProcess.start({ KEYWARD_USAGE_FLUSH_MS: '50' });
    const admin = new AdminClient(server.address);
    const verifier = new VerifierClient(server.address);
    try {
      const accountId = newAccountId();
      const { key, secret } = await admin.newKey(accountId, { ipWhitelist: ['198.51.100.0/24'] });
      const unused = await admin.newKey(accountId);
      const before = Date.now();
      for (const clientIp of ['198.51.100.1', '198.51.100.2', '192.0.2.1', '198.51.100.3', '2001:db8::1', '198.51.100.9']) {
        await verifier.verify({ key: secret, clientIp });
      }
      await verifier.verify({ key: secret, clientIp: '198.51.100.7', requiredScopes: ['jobs:write'] });
      let shown = (await admin.getKey({ accountId, keyId: key?.id })).key;
      await waitUntil('7 uses written', async () => {
        shown = (await admin.getKey({ accountId, keyId: key?.id })).key;
        return shown?.requestCount === 7n;
      }).catch(() => undefined);
      assert.equal(shown?.requestCount, 7n);
      assert.equal(shown?.refusedCount, 3n);
      assert.equal(shown?.lastUsedIp, '198.51.100.7');
      assert.ok((shown?.lastUsedAt?.getTime() ?? 0) >= before - 1_000);
      const listed = await admin.listKeys({ accountId });
      assert.deepEqual(listed.keys.find((k) => k.id === key?.id), shown);
      const never = listed.keys.find((k) => k.id === unused.key?.id);
      assert.equal(never?.requestCount, 0n);
      assert.equal(never?.lastUsedAt, undefined);
      assert.equal(never?.lastUsedIp, '');
    } finally {
      admin.close();
      verifier.close();
      assert.equal(await server.stop(), 0);
    }
  });

  it('never moves last_used_at backwards, whatever order batches arrive in, and applies a batch once', async () => {
    const store = new UsageStore(db);
    const accountId = newAccountId();
    const { rows } = await db.query<{ id: string }>(
      `insert into keyward.api_keys (account_id, name, environment, secret_hash, display, scopes)
       select $1, 'k' || g, 'live', sha256(($1 || g)::bytea), 'fsm_live_x…y', '{jobs:read}' from generate_series(1, 40) g returning id`,
      [accountId],
    );
    const ids = rows.map((row) => row.id);
    const t0 = Date.parse('2026-03-01T10:00:00.123Z');
    const uses = (at: number, ip: string, keyIds = ids): KeyUses[] => keyIds.map((keyId) => ({ keyId, count: 2, refused: 1, lastAt: at, lastIp: ip }));

    assert.equal(await store.apply(`test:${randomUUID()}`, uses(t0 + 60_000, '192.0.2.2'), 5_000), true);
    assert.equal(await store.apply(`test:${randomUUID()}`, uses(t0, '192.0.2.1'), 5_000), true);
    const replayed = `test:${randomUUID()}`;
    assert.equal(await store.apply(replayed, uses(t0 + 30_000, '192.0.2.3'), 5_000), true);
    assert.equal(await store.apply(replayed, uses(t0 + 90_000, '192.0.2.9'), 5_000), false, 'a batch id is applied once');

    // Instances flushing the same keys at once, in different orders: no deadlock, exact sums.
    const shuffled = () => [...ids].sort(() => Math.random() - 0.5);
    await Promise.all(Array.from({ length: 12 }, (_, n) => store.apply(`test:${randomUUID()}`, uses(t0 + n, '192.0.2.4', shuffled()), 5_000)));

    for (const id of ids) {
      const usage = await storedUsage(db, id);
      assert.equal(usage?.request_count, String(2 * 15));
      assert.equal(usage?.refused_count, String(15));
      assert.equal(usage?.last_used_at?.getTime(), t0 + 60_000);
      assert.equal(usage?.last_used_ip, '192.0.2.2');
    }
  });
});

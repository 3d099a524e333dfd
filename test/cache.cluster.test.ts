import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import { keySlot } from '../src/cache/clusterSlots';
import { VerifyCode } from '../src/gen/keyward/v1/keyward';
import { hashSecret } from '../src/keys/KeyFormat';
import { newAccountId } from './helpers/env';
import { Fleet, type Instance } from './helpers/Fleet';
import { assertNoLeaks } from './helpers/leaks';
import { metricOf, waitForMetric } from './helpers/metrics';
import { RedisCluster } from './helpers/RedisCluster';
import { entryPayload } from './helpers/redisEntries';
import { waitUntil } from './helpers/waitUntil';

const OK = VerifyCode.VERIFY_CODE_OK;
const REVOKED = VerifyCode.VERIFY_CODE_REVOKED;
const DISABLED = VerifyCode.VERIFY_CODE_DISABLED;
const CYCLES = 30;
const LOSS = 'keyward_redis_lost_writes_total';
const CONFIRMED = 'keyward_invalidations_confirmed_total';
const MISSING = 'keyward_invalidation_acks_missing_total';

/** Every key matching `pattern` on one node (SCAN: the node's own keys only). */
async function scanNode(node: Redis, pattern: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1_000);
    found.push(...keys);
    cursor = next;
  } while (cursor !== '0');
  return found;
}

/**
 * Revokes a fresh warm key on instance `at` (REVOKED on every instance at
 * once), until a revoke is confirmed by every instance's acknowledgement:
 * at most `tries`, since an ack can come later than the ack timeout on a
 * machine short of CPU (the change then waits out the lease, correctly).
 */
async function revokeUntilConfirmed(fleet: Fleet, at: number, tries = 3): Promise<void> {
  for (let attempt = 0; attempt < tries; attempt++) {
    const accountId = newAccountId();
    const { keyId, secret } = await fleet.warmKey(accountId);
    const before = await metricOf(fleet.at(at).server, CONFIRMED);
    await fleet.at(at).admin.revokeKey({ accountId, keyId });
    for (const [n, instance] of fleet.instances.entries()) assert.equal((await instance.verifier.verify({ key: secret })).code, REVOKED, `instance ${n}`);
    if ((await metricOf(fleet.at(at).server, CONFIRMED)) > before) return;
  }
  assert.fail(`none of ${tries} revokes on instance ${at} was confirmed by every instance`);
}

describe('three instances on a Redis Cluster of three masters (REDIS_CLUSTER_NODES)', () => {
  let cluster: RedisCluster;
  let fleet: Fleet;
  /** The test's own cluster client (routing), and one plain client per master. */
  let router: Cluster;
  let masters: Redis[];

  before(async () => {
    cluster = await RedisCluster.start(3);
    // The first instance without an in-process cache: it reads Redis on every Verify.
    const env = { REDIS_URL: '', REDIS_CLUSTER_NODES: cluster.nodesEnv };
    fleet = await Fleet.startEach([{ ...env, KEYWARD_LOCAL_CACHE: 'false' }, env, env]);
    router = new Cluster(cluster.nodes.map((node) => ({ host: '127.0.0.1', port: node.port })));
    await new Promise((resolve) => router.once('ready', resolve));
    masters = cluster.nodes.map((node) => cluster.client(node));
  });

  after(async () => {
    router?.disconnect();
    for (const master of masters ?? []) master.disconnect();
    if (fleet !== undefined) assert.deepEqual(await fleet.stop(), [0, 0, 0]);
    await cluster?.stop();
    await assertNoLeaks();
  });

  const instances = (): Instance[] => fleet.instances;
  /** The plain client of the master serving `key` now (CLUSTER SLOTS, asked afresh). */
  const masterOf = async (key: string): Promise<Redis> => {
    const slot = keySlot(key);
    const ranges = await (masters[0] as Redis).cluster('SLOTS');
    const port = ranges.find(([start, end]) => start <= slot && slot <= end)?.[2]?.[1];
    const index = cluster.nodes.findIndex((node) => node.port === port);
    assert.ok(index >= 0, `a master serves ${key}`);
    return masters[index] as Redis;
  };

  it(`answers REVOKED on every instance right after RevokeKey returns on any of them, from warm caches, confirmed by acknowledgements, ${CYCLES} cycles`, async () => {
    const accountId = newAccountId();
    const before = await Promise.all(instances().map((i) => metricOf(i.server, CONFIRMED)));
    const missingBefore = await Promise.all(instances().map((i) => metricOf(i.server, MISSING)));
    const localBefore = await metricOf(fleet.at(1).server, 'keyward_verify_lookups_total{tier="local"}');
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const { keyId, secret } = await fleet.warmKey(accountId);
      await fleet.at(cycle % 3).admin.revokeKey({ accountId, keyId });
      for (const [n, instance] of instances().entries()) {
        const answer = await instance.verifier.verify({ key: secret });
        assert.equal(answer.code, REVOKED, `cycle ${cycle}: instance ${n} answered ${answer.code} after a revoke on ${cycle % 3}`);
      }
    }
    const confirmed = await Promise.all(instances().map(async (i, n) => (await metricOf(i.server, CONFIRMED)) - (before[n] as number)));
    const missing = await Promise.all(instances().map(async (i, n) => (await metricOf(i.server, MISSING)) - (missingBefore[n] as number)));
    // Every revoke was either confirmed by every instance (sharded pub/sub, acks on the control slot) or waited out the lease.
    assert.deepEqual(confirmed.map((n, i) => n + (missing[i] as number)), [CYCLES / 3, CYCLES / 3, CYCLES / 3]);
    // An ack can come later than the ack timeout (250 ms) on a machine short of CPU; all but a few are confirmed.
    const total = confirmed.reduce((sum, n) => sum + n, 0);
    assert.ok(total >= CYCLES - 3, `${total} of ${CYCLES} revokes confirmed by every instance (${missing.join(', ')} waited out the lease)`);
    const localHits = (await metricOf(fleet.at(1).server, 'keyward_verify_lookups_total{tier="local"}')) - localBefore;
    assert.ok(localHits >= CYCLES, `the in-process caches were warm: ${localHits} hits`);
  });

  it('answers DISABLED everywhere right after DisableKey, OK right after EnableKey, and INSUFFICIENT_SCOPE right after a scope is removed, on any instance', async () => {
    const accountId = newAccountId();
    const { key, secret } = await fleet.at(0).admin.newKey(accountId, { scopes: ['jobs:read', 'jobs:write'] });
    const keyId = key?.id as string;
    const write = { key: secret, requiredScopes: ['jobs:write'] };
    for (let cycle = 0; cycle < 6; cycle++) {
      for (const instance of instances()) assert.equal((await instance.verifier.verify(write)).code, OK, `cycle ${cycle}: warm`);
      await fleet.at(cycle % 3).admin.disableKey({ accountId, keyId });
      for (const [n, instance] of instances().entries()) assert.equal((await instance.verifier.verify(write)).code, DISABLED, `cycle ${cycle}: instance ${n} after DisableKey`);
      await fleet.at((cycle + 1) % 3).admin.enableKey({ accountId, keyId });
      for (const [n, instance] of instances().entries()) assert.equal((await instance.verifier.verify(write)).code, OK, `cycle ${cycle}: instance ${n} after EnableKey`);
      await fleet.at((cycle + 2) % 3).admin.updateScopes({ accountId, keyId, scopes: ['jobs:read'] });
      for (const [n, instance] of instances().entries()) {
        assert.equal((await instance.verifier.verify(write)).code, VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE, `cycle ${cycle}: instance ${n} after a scope was removed`);
      }
      await fleet.at(cycle % 3).admin.updateScopes({ accountId, keyId, scopes: ['jobs:read', 'jobs:write'] });
    }
  });

  it('spreads the entries over every master, keeps the control keys in one slot, and a write witness of every instance on every master', async () => {
    const prefix = fleet.redisPrefix;
    const accountId = newAccountId();
    for (let i = 0; i < 24; i++) await fleet.warmKey(accountId);
    const entries = await Promise.all(masters.map((master) => scanNode(master, `${prefix}key:*`)));
    assert.ok(
      entries.every((keys) => keys.length > 0),
      `entries on every master: ${entries.map((keys) => keys.length).join(', ')}`,
    );
    // The control keys: one slot, one master, which also holds the members.
    const control = [`${prefix}{ctl}members`, `${prefix}{ctl}invalidations`, `${prefix}{ctl}acks:x`].map(keySlot);
    assert.equal(new Set(control).size, 1);
    assert.equal(Number(await router.cluster('KEYSLOT', `${prefix}{ctl}members`)), control[0], 'the slot keyward computes is the cluster\'s');
    const members = await (await masterOf(`${prefix}{ctl}members`)).zrange(`${prefix}{ctl}members`, '0', '-1');
    assert.equal(members.length, 3, 'the three instances listed');
    assert.deepEqual(await router.exists(`${prefix}members`), 0, 'no single-Redis control names on a cluster');
    // Each instance writes one witness per master, in a slot that master serves.
    const witnesses = await Promise.all(masters.map((master) => scanNode(master, `${prefix}{*}witness:*`)));
    assert.deepEqual(
      witnesses.map((keys) => keys.length),
      [3, 3, 3],
      `one witness per instance on every master: ${witnesses.map((keys) => keys.join(' ')).join(' | ')}`,
    );
  });

  it('follows the control slot to another master (a resharding): the instances subscribe there, trust again, and a revoke is confirmed by every instance', async () => {
    const prefix = fleet.redisPrefix;
    const slot = keySlot(`${prefix}{ctl}members`);
    const source = await masterOf(`${prefix}{ctl}members`);
    const target = masters.find((master) => master !== source) as Redis;
    const [sourceId, targetId] = (await Promise.all([source.cluster('MYID'), target.cluster('MYID')])) as [string, string];
    // The steps of redis-cli --cluster reshard, for one slot: keys migrated, then the slot assigned everywhere.
    await target.cluster('SETSLOT', slot, 'IMPORTING', sourceId);
    await source.cluster('SETSLOT', slot, 'MIGRATING', targetId);
    for (;;) {
      const keys = (await source.cluster('GETKEYSINSLOT', slot, 100)) as string[];
      if (keys.length === 0) break;
      await source.migrate('127.0.0.1', cluster.nodes[masters.indexOf(target)]?.port as number, '', 0, 5_000, 'REPLACE', 'KEYS', ...keys);
    }
    for (const master of masters) await master.cluster('SETSLOT', slot, 'NODE', targetId);
    // Redis unsubscribed every instance's subscriber from the slot's shard channels: each lost its subscription, then subscribed on the new master.
    for (const instance of instances()) await instance.server.waitFor((line) => line.event === 'subscription-moved', 10_000);
    await fleet.waitTrusted();
    const clients = ((await target.client('LIST')) as string).split('\n').filter((line) => line.includes('name=keyward-sub'));
    assert.equal(clients.length, 3, 'the three subscribers now on the master serving the control slot');
    await revokeUntilConfirmed(fleet, 1);
  });

  it('notices a master that lost writes (FLUSHALL and an old entry put back, connections kept): every instance repairs Redis from the outbox and answers REVOKED', async () => {
    const prefix = fleet.redisPrefix;
    const controlMaster = await masterOf(`${prefix}{ctl}members`);
    const accountId = newAccountId();
    // A key whose entry lives on another master than the control slot: only that master's witness can tell.
    let warmed = await fleet.warmKey(accountId);
    while ((await masterOf(`${prefix}key:${hashSecret(warmed.secret)}`)) === controlMaster) warmed = await fleet.warmKey(accountId);
    const entry = `${prefix}key:${hashSecret(warmed.secret)}`;
    const master = await masterOf(entry);
    const saved = { dump: (await master.dumpBuffer(entry)) as Buffer, pttl: await master.pttl(entry) };
    assert.ok(saved.pttl > 0);
    const before = await Promise.all(instances().map((i) => metricOf(i.server, LOSS)));

    await fleet.at(2).admin.revokeKey({ accountId, keyId: warmed.keyId });
    for (const instance of instances()) assert.equal((await instance.verifier.verify({ key: warmed.secret })).code, REVOKED);
    // That master goes back to before the revoke, its witnesses gone, over connections that stay up.
    const results = (await master.multi().flushall().restore(entry, saved.pttl, saved.dump, 'REPLACE').exec()) ?? [];
    for (const [error] of results) assert.equal(error, null);
    assert.equal((JSON.parse(entryPayload((await master.hget(entry, 'd')) as string)) as { revokedAt: unknown }).revokedAt, null, 'the master holds the key active again');

    for (const [n, instance] of instances().entries()) {
      await waitForMetric(instance.server.metricsPort as number, (m) => (m.get(LOSS) ?? 0) > (before[n] as number), 10_000);
    }
    await fleet.waitTrusted();
    const witnessTag = (await scanNode(master, `${prefix}{*}witness:*`))[0]?.split('}')[0] as string;
    for (const [n, instance] of instances().entries()) {
      // The line may reach this process's pipe after the metric moved: wait for it.
      const told = await instance.server.waitFor((line) => line.event === 'redis-lost-writes' && String(line.witness).startsWith(witnessTag), 5_000);
      assert.ok(told, `instance ${n}: the witness on that master told`);
    }
    // The repair wrote a tombstone for every retained change over the old entry (compare-and-set by version).
    assert.equal(entryPayload((await master.hget(entry, 'd')) as string), '', 'the old entry replaced by a tombstone');
    for (const [n, instance] of instances().entries()) assert.equal((await instance.verifier.verify({ key: warmed.secret })).code, REVOKED, `instance ${n}`);
  });
});

describe('three instances on a Redis Cluster whose control master fails over to its replica', () => {
  let cluster: RedisCluster;
  let fleet: Fleet;

  before(async () => {
    cluster = await RedisCluster.start(3, 1);
    fleet = await Fleet.startEach(Array.from({ length: 3 }, () => ({ REDIS_URL: '', REDIS_CLUSTER_NODES: cluster.nodesEnv })));
  });

  after(async () => {
    if (fleet !== undefined) assert.deepEqual(await fleet.stop(), [0, 0, 0]);
    await cluster?.stop();
    await assertNoLeaks();
  });

  it('follows the new master (a new run_id: repaired as lost writes, subscribed anew), then a revoke is confirmed by every instance', async () => {
    const prefix = fleet.redisPrefix;
    const members = `${prefix}{ctl}members`;
    const probe = cluster.client(cluster.nodes[0] as (typeof cluster.nodes)[number]);
    try {
      const slot = keySlot(members);
      const ranges = await probe.cluster('SLOTS');
      const oldPort = ranges.find(([start, end]) => start <= slot && slot <= end)?.[2]?.[1] as number;
      const replica = await cluster.replicaOf(oldPort);
      const accountId = newAccountId();
      const { keyId, secret } = await fleet.warmKey(accountId);
      const losses = await Promise.all(fleet.instances.map((i) => metricOf(i.server, LOSS)));

      await cluster.failover(replica);
      // What the instances warned of, to tell why one did not recover.
      const warnings = (): string =>
        fleet.instances.map((i, n) => `instance ${n}: ${i.server.logLines().filter((line) => line.level >= 30 && line.time !== undefined).map((line) => JSON.stringify(line)).join('\n')}`).join('\n');
      try {
        for (const [n, instance] of fleet.instances.entries()) {
          await waitForMetric(instance.server.metricsPort as number, (m) => (m.get(LOSS) ?? 0) > (losses[n] as number), 10_000);
        }
        await fleet.waitTrusted();
      } catch (error) {
        throw new Error(`${(error as Error).message}\n${warnings()}`);
      }
      const promoted = cluster.client(replica);
      try {
        await waitUntil('the three subscribers on the new master', async () => {
          const list = (await promoted.client('LIST')) as string;
          return list.split('\n').filter((line) => line.includes('name=keyward-sub')).length === 3;
        });
      } finally {
        promoted.disconnect();
      }
      for (const [n, instance] of fleet.instances.entries()) {
        // The demoted master unsubscribed the connection from the slot it no longer serves (or, slower than the witness, it was resubscribed).
        const followed = instance.server.logLines().some((line) => line.event === 'subscription-moved' || line.event === 'unsubscribed');
        assert.ok(followed, `instance ${n} dropped its subscription on the old master`);
      }
      // A key warmed before the failover, revoked after it.
      await fleet.at(0).admin.revokeKey({ accountId, keyId });
      for (const [n, instance] of fleet.instances.entries()) assert.equal((await instance.verifier.verify({ key: secret })).code, REVOKED, `instance ${n}`);
      await revokeUntilConfirmed(fleet, 0);
    } finally {
      probe.disconnect();
    }
  });
});

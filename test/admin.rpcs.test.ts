import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import pg from 'pg';
import { type ApiKey, Environment } from '../src/gen/keyward/v1/keyward';
import { AdminClient, assertGrpcError, responseText, secretsSeen } from './helpers/clients';
import { newAccountId, testDatabaseUrl } from './helpers/env';
import { assertNoLeaks } from './helpers/leaks';
import { ServerProcess } from './helpers/serverProcess';

describe('admin RPCs over the wire', () => {
  let server: ServerProcess;
  let client: AdminClient;
  let db: pg.Pool;

  before(async () => {
    server = await ServerProcess.start();
    client = new AdminClient(server.address);
    db = new pg.Pool({ connectionString: testDatabaseUrl(), max: 2 });
  });

  after(async () => {
    client.close();
    await db.end();
    assert.equal(await server.stop(), 0);
    for (const secret of secretsSeen) assert.ok(!server.log.includes(secret), 'a secret reached the server log');
    await assertNoLeaks();
  });

  const countKeys = async (accountId: string): Promise<number> => {
    const { rows } = await db.query<{ n: string }>('select count(*) as n from keyward.api_keys where account_id = $1', [accountId]);
    return Number(rows[0]?.n);
  };

  describe('CreateKey', () => {
    it('returns the key and its secret, and stores only the hash', async () => {
      const accountId = newAccountId();
      const expiresAt = new Date(Date.now() + 86_400_000);
      const { key, secret } = await client.createKey({
        accountId,
        name: '  CRM Integration ',
        environment: Environment.ENVIRONMENT_TEST,
        scopes: ['jobs:write', 'jobs:read', 'jobs:read', 'technicians:read'],
        ipWhitelist: ['203.0.113.7/24', '2001:db8::1'],
        expiresAt,
      });
      assert.match(secret, /^fsm_test_[0-9A-Za-z]{49}$/);
      assert.ok(key !== undefined);
      assert.match(key.id, /^[0-9a-f-]{36}$/);
      assert.equal(key.accountId, accountId);
      assert.equal(key.name, 'CRM Integration');
      assert.equal(key.environment, Environment.ENVIRONMENT_TEST);
      assert.equal(key.display, `fsm_test_${secret.slice(9, 13)}…${secret.slice(-4)}`);
      assert.deepEqual(key.scopes, ['jobs:read', 'jobs:write', 'technicians:read']);
      assert.deepEqual(key.ipWhitelist, ['203.0.113.0/24', '2001:db8::1']);
      assert.equal(key.expiresAt?.getTime(), expiresAt.getTime());
      assert.equal(key.revokedAt, undefined);
      assert.equal(key.lastUsedAt, undefined);
      assert.equal(key.requestCount, 0n);
      assert.ok(Math.abs((key.createdAt?.getTime() ?? 0) - Date.now()) < 60_000);

      const { rows } = await db.query('select * from keyward.api_keys where id = $1', [key.id]);
      const stored = JSON.stringify(rows[0]);
      assert.ok(!stored.includes(secret) && !stored.includes(secret.slice(9, -4)), 'the secret is stored');
      assert.equal((rows[0] as { secret_hash: Buffer }).secret_hash.length, 32);
    });

    it('creates live keys with the live prefix', async () => {
      const { key, secret } = await client.newKey(newAccountId());
      assert.match(secret, /^fsm_live_/);
      assert.equal(key?.environment, Environment.ENVIRONMENT_LIVE);
      assert.match(key?.display ?? '', /^fsm_live_/);
    });

    const invalid: Array<[string, Record<string, unknown>, RegExp]> = [
      ['an empty name', { name: '   ' }, /^name "   ": must not be empty/],
      ['an oversized name', { name: 'n'.repeat(201) }, /^name "n{80}…": must be at most 200 characters/],
      ['an unknown scope', { scopes: ['jobs:read', 'jobs:delete'] }, /^scopes\[1\] "jobs:delete": unknown scope/],
      ['no scope', { scopes: [] }, /^scopes "": at least one scope is required/],
      ['a bad CIDR', { ipWhitelist: ['10.0.0.0/8', '10.0.0.0/40'] }, /^ip_whitelist\[1\] "10\.0\.0\.0\/40"/],
      ['an unspecified environment', { environment: Environment.ENVIRONMENT_UNSPECIFIED }, /^environment "ENVIRONMENT_UNSPECIFIED"/],
      ['an expiry in the past', { expiresAt: new Date(Date.now() - 1000) }, /^expires_at "[0-9T:.-]+Z": must be in the future/],
      ['an empty account', { accountId: '' }, /^account_id "": must not be empty/],
      ['an oversized account', { accountId: 'a'.repeat(129) }, /^account_id "a{80}…": must be at most 128/],
    ];
    for (const [what, change, message] of invalid) {
      it(`refuses ${what} with INVALID_ARGUMENT naming the field, and stores nothing`, async () => {
        const accountId = newAccountId();
        const request = { accountId, name: 'k', environment: Environment.ENVIRONMENT_LIVE, scopes: ['jobs:read'], ...change };
        await assertGrpcError(client.createKey(request), status.INVALID_ARGUMENT, message);
        assert.equal(await countKeys(accountId), 0);
        assert.equal(await countKeys(String(request.accountId)), 0);
      });
    }
  });

  describe('GetKey', () => {
    it('returns the key as created, without its secret', async () => {
      const accountId = newAccountId();
      const created = await client.newKey(accountId, { scopes: ['assets:meter'] });
      const { key } = await client.getKey({ accountId, keyId: created.key?.id });
      assert.deepEqual(key, created.key);
      assert.ok(!responseText(key).includes(created.secret));
    });

    it('answers NOT_FOUND for an unknown id and INVALID_ARGUMENT for a malformed one', async () => {
      const accountId = newAccountId();
      await assertGrpcError(
        client.getKey({ accountId, keyId: '00000000-0000-4000-8000-000000000000' }),
        status.NOT_FOUND,
        /^key_id "00000000-0000-4000-8000-000000000000": no such key/,
      );
      await assertGrpcError(client.getKey({ accountId, keyId: 'fsm_live_x' }), status.INVALID_ARGUMENT, /^key_id "fsm_live_x"/);
    });
  });

  describe('ListKeys', () => {
    it('lists newest first, pages stably while keys are added, and leaves revoked keys out unless asked', async () => {
      const accountId = newAccountId();
      const ids: string[] = [];
      for (let i = 0; i < 7; i++) ids.push((await client.newKey(accountId, { name: `key ${i}` })).key?.id as string);
      await client.revokeKey({ accountId, keyId: ids[2] });
      await client.newKey(newAccountId()); // another account's key never shows

      const first = await client.listKeys({ accountId, pageSize: 3 });
      assert.deepEqual(first.keys.map((k) => k.id), [ids[6], ids[5], ids[4]]);
      assert.notEqual(first.nextPageToken, '');
      const added = (await client.newKey(accountId, { name: 'added while paging' })).key?.id;
      const second = await client.listKeys({ accountId, pageSize: 3, pageToken: first.nextPageToken });
      assert.deepEqual(second.keys.map((k) => k.id), [ids[3], ids[1], ids[0]]);
      assert.equal(second.nextPageToken, '');

      const all = await client.listKeys({ accountId, includeRevoked: true });
      assert.deepEqual(all.keys.map((k) => k.id), [added, ...[...ids].reverse()]);
      assert.equal(all.nextPageToken, '');
      assert.ok(all.keys.find((k) => k.id === ids[2])?.revokedAt instanceof Date);
    });

    it('refuses a page token of another query or a forged one', async () => {
      const accountId = newAccountId();
      for (let i = 0; i < 3; i++) await client.newKey(accountId);
      const { nextPageToken } = await client.listKeys({ accountId, pageSize: 1 });
      await assertGrpcError(
        client.listKeys({ accountId: newAccountId(), pageToken: nextPageToken }),
        status.INVALID_ARGUMENT,
        /^page_token ".*": was issued for another account_id or include_revoked/,
      );
      await assertGrpcError(
        client.listKeys({ accountId, includeRevoked: true, pageToken: nextPageToken }),
        status.INVALID_ARGUMENT,
        /^page_token/,
      );
      await assertGrpcError(client.listKeys({ accountId, pageToken: 'garbage' }), status.INVALID_ARGUMENT, /^page_token "garbage": is not/);
    });

    it('caps the page size at 1000 and defaults it to 50', async () => {
      const accountId = newAccountId();
      const values = Array.from({ length: 1_003 }, (_, i) => `('${accountId}', 'bulk ${i}', 'live', sha256('${accountId}${i}'::bytea), 'fsm_live_x…y', '{jobs:read}')`);
      await db.query(`insert into keyward.api_keys (account_id, name, environment, secret_hash, display, scopes) values ${values.join(',')}`);
      const byDefault = await client.listKeys({ accountId });
      assert.equal(byDefault.keys.length, 50);
      const capped = await client.listKeys({ accountId, pageSize: 5_000 });
      assert.equal(capped.keys.length, 1_000);
      const rest = await client.listKeys({ accountId, pageSize: 5_000, pageToken: capped.nextPageToken });
      assert.equal(rest.keys.length, 3);
      assert.equal(rest.nextPageToken, '');
    });
  });

  describe('UpdateScopes and UpdateIpWhitelist', () => {
    it('replace the set and return the key as it now is', async () => {
      const accountId = newAccountId();
      const keyId = (await client.newKey(accountId, { ipWhitelist: ['10.0.0.0/8'] })).key?.id;
      const scoped = await client.updateScopes({ accountId, keyId, scopes: ['webhooks:manage', 'assets:transfer'] });
      assert.deepEqual(scoped.key?.scopes, ['assets:transfer', 'webhooks:manage']);
      const listed = await client.updateIpWhitelist({ accountId, keyId, ipWhitelist: ['::ffff:192.0.2.1', '2001:db8::/48'] });
      assert.deepEqual(listed.key?.ipWhitelist, ['192.0.2.1', '2001:db8::/48']);
      assert.deepEqual(listed.key?.scopes, ['assets:transfer', 'webhooks:manage']);
      const cleared = await client.updateIpWhitelist({ accountId, keyId, ipWhitelist: [] });
      assert.deepEqual(cleared.key?.ipWhitelist, []);
      assert.deepEqual((await client.getKey({ accountId, keyId })).key?.ipWhitelist, []);
    });

    it('refuse bad input naming the field, and leave the key as it was', async () => {
      const accountId = newAccountId();
      const keyId = (await client.newKey(accountId, { ipWhitelist: ['10.0.0.0/8'] })).key?.id;
      await assertGrpcError(client.updateScopes({ accountId, keyId, scopes: ['admin:all'] }), status.INVALID_ARGUMENT, /^scopes\[0\] "admin:all"/);
      await assertGrpcError(client.updateScopes({ accountId, keyId, scopes: [] }), status.INVALID_ARGUMENT, /^scopes "": at least one/);
      await assertGrpcError(
        client.updateIpWhitelist({ accountId, keyId, ipWhitelist: ['192.0.2.0/24', 'nope'] }),
        status.INVALID_ARGUMENT,
        /^ip_whitelist\[1\] "nope"/,
      );
      const { key } = await client.getKey({ accountId, keyId });
      assert.deepEqual(key?.scopes, ['jobs:read']);
      assert.deepEqual(key?.ipWhitelist, ['10.0.0.0/8']);
    });

    it('refuse to change a revoked key with FAILED_PRECONDITION', async () => {
      const accountId = newAccountId();
      const keyId = (await client.newKey(accountId)).key?.id;
      await client.revokeKey({ accountId, keyId });
      await assertGrpcError(client.updateScopes({ accountId, keyId, scopes: ['jobs:write'] }), status.FAILED_PRECONDITION, /revoked/);
      await assertGrpcError(client.updateIpWhitelist({ accountId, keyId, ipWhitelist: [] }), status.FAILED_PRECONDITION, /revoked/);
    });
  });

  describe('UpdateKey and metadata', () => {
    const stored = async (keyId: string | undefined) => {
      const { rows } = await db.query<{ version: string; name: string; expires_at: Date | null; metadata: Record<string, string> }>(
        'select version, name, expires_at, metadata from keyward.api_keys where id = $1',
        [keyId],
      );
      return rows[0];
    };
    const updateEvents = async (keyId: string | undefined) => {
      const { rows } = await db.query<{ actor: string; changes: Record<string, { before: unknown; after: unknown }> }>(
        "select actor, changes from keyward.key_events where key_id = $1 and action = 'update' order by id",
        [keyId],
      );
      return rows;
    };

    it('CreateKey stores metadata; GetKey and ListKeys return it', async () => {
      const accountId = newAccountId();
      const metadata = { integration: 'crm', 'team.owner': 'ops-1', note: 'a=b, c' };
      const created = (await client.newKey(accountId, { metadata })).key;
      assert.deepEqual(created?.metadata, metadata);
      assert.deepEqual((await client.getKey({ accountId, keyId: created?.id })).key?.metadata, metadata);
      assert.deepEqual((await client.listKeys({ accountId })).keys[0]?.metadata, metadata);
      assert.deepEqual((await stored(created?.id))?.metadata, metadata);
      assert.deepEqual((await client.newKey(accountId)).key?.metadata, {});
    });

    it('changes only the paths of the mask, each a new version with an update event of before and after', async () => {
      const accountId = newAccountId();
      const expiresAt = new Date(Date.now() + 86_400_000);
      const created = (await client.newKey(accountId, { name: 'old', expiresAt, metadata: { a: '1' } })).key;
      const keyId = created?.id;

      const named = await client.updateKey({ accountId, keyId, name: '  new name ', metadata: { ignored: 'x' }, updateMask: ['name'] });
      assert.equal(named.key?.name, 'new name');
      assert.deepEqual(named.key?.metadata, { a: '1' });
      assert.equal(named.key?.expiresAt?.getTime(), expiresAt.getTime());

      const later = new Date(Date.now() + 7 * 86_400_000);
      const extended = await client.updateKey({ accountId, keyId, expiresAt: later, updateMask: ['expires_at'] });
      assert.equal(extended.key?.expiresAt?.getTime(), later.getTime());
      assert.equal(extended.key?.name, 'new name');

      const cleared = await client.updateKey({ accountId, keyId, updateMask: ['expires_at'] });
      assert.equal(cleared.key?.expiresAt, undefined);

      const tagged = await client.updateKey({ accountId, keyId, name: 'ignored', metadata: { b: '2', c: '' }, updateMask: ['metadata'] });
      assert.deepEqual(tagged.key?.metadata, { b: '2', c: '' });
      assert.equal(tagged.key?.name, 'new name');

      const all = await client.updateKey({ accountId, keyId, name: 'all', expiresAt: later, metadata: {}, updateMask: ['metadata', 'name', 'expires_at'] });
      assert.equal(all.key?.name, 'all');
      assert.deepEqual(all.key?.metadata, {});

      const row = await stored(keyId);
      assert.equal(row?.version, '6');
      assert.equal(row?.name, 'all');
      assert.deepEqual(row?.metadata, {});
      const events = await updateEvents(keyId);
      assert.equal(events.length, 5);
      assert.deepEqual(events[0]?.changes, { name: { before: 'old', after: 'new name' } });
      assert.deepEqual(Object.keys(events[1]?.changes ?? {}), ['expires_at']);
      assert.deepEqual(events[2]?.changes.expires_at?.after, null);
      assert.deepEqual(events[3]?.changes, { metadata: { before: { a: '1' }, after: { b: '2', c: '' } } });
      assert.deepEqual(Object.keys(events[4]?.changes ?? {}).sort(), ['expires_at', 'metadata', 'name']);
      assert.equal(events[0]?.actor, 'default');
    });

    it('an update to the same values still makes a new version and an event (before equals after)', async () => {
      const accountId = newAccountId();
      const keyId = (await client.newKey(accountId, { name: 'same' })).key?.id;
      await client.updateKey({ accountId, keyId, name: 'same', updateMask: ['name'] });
      assert.equal((await stored(keyId))?.version, '2');
      assert.deepEqual((await updateEvents(keyId))[0]?.changes, { name: { before: 'same', after: 'same' } });
    });

    it('refuses a bad update_mask or value naming it, and leaves the key as it was', async () => {
      const accountId = newAccountId();
      const keyId = (await client.newKey(accountId, { name: 'kept', metadata: { a: '1' } })).key?.id;
      const cases: Array<[Record<string, unknown>, RegExp]> = [
        [{ name: 'x' }, /^update_mask "": must name at least one field: name, expires_at, metadata/],
        [{ name: 'x', updateMask: [] }, /^update_mask "": must name at least one field/],
        [{ name: 'x', updateMask: ['name', 'scopes'] }, /^update_mask\.paths\[1\] "scopes": unknown path; UpdateKey changes name, expires_at, metadata/],
        [{ name: 'x', updateMask: ['*'] }, /^update_mask\.paths\[0\] "\*": unknown path/],
        [{ name: 'x', updateMask: [''] }, /^update_mask\.paths\[0\] "": unknown path/],
        [{ name: 'x', updateMask: ['name', 'name'] }, /^update_mask\.paths\[1\] "name": named twice/],
        [{ name: '  ', updateMask: ['name'] }, /^name " {2}": must not be empty/],
        [{ expiresAt: new Date(Date.now() - 1000), updateMask: ['expires_at'] }, /^expires_at "[0-9T:.-]+Z": must be in the future/],
        [{ metadata: { 'Bad Key': 'v' }, updateMask: ['metadata'] }, /^metadata\["Bad Key"\]: the key must be a lower-case letter/],
        [{ metadata: { ok: 'v'.repeat(257) }, updateMask: ['metadata'] }, /^metadata\["ok"\] "257 characters": the value must be at most 256 characters/],
        [{ metadata: { ok: 'tab\there' }, updateMask: ['metadata'] }, /^metadata\["ok"\] "tab\\there": the value must not hold control characters/],
        [{ metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])), updateMask: ['metadata'] }, /^metadata "17 entries": must have at most 16 entries/],
        [
          { metadata: Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`k${i}`, 'v'.repeat(250)])), updateMask: ['metadata'] },
          /^metadata\["k8"\] "v{80}…": the metadata must be at most 2048 bytes in all/,
        ],
        [{ metadata: { ['k'.repeat(41)]: 'v' }, updateMask: ['metadata'] }, /^metadata\["k{41}"\]: the key must be/],
      ];
      for (const [request, details] of cases) {
        await assertGrpcError(client.updateKey({ accountId, keyId, ...request }), status.INVALID_ARGUMENT, details);
      }
      const row = await stored(keyId);
      assert.equal(row?.version, '1');
      assert.equal(row?.name, 'kept');
      assert.deepEqual(row?.metadata, { a: '1' });
      assert.deepEqual(await updateEvents(keyId), []);
      await assertGrpcError(
        client.newKey(accountId, { metadata: { '9lives': 'x' } }),
        status.INVALID_ARGUMENT,
        /^metadata\["9lives"\]: the key must be/,
      );
    });

    it('accepts metadata at its limits', async () => {
      const accountId = newAccountId();
      const metadata = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${String(i).padStart(2, '0')}`, 'v'.repeat(125)]));
      assert.equal(Object.keys(metadata).length * (3 + 125), 2048);
      const keyId = (await client.newKey(accountId)).key?.id;
      assert.deepEqual((await client.updateKey({ accountId, keyId, metadata, updateMask: ['metadata'] })).key?.metadata, metadata);
      const longKey = `a${'b'.repeat(39)}`;
      assert.deepEqual((await client.newKey(accountId, { metadata: { [longKey]: 'v'.repeat(256) } })).key?.metadata, { [longKey]: 'v'.repeat(256) });
    });

    it('refuses a revoked key with FAILED_PRECONDITION, and a key of another account with NOT_FOUND', async () => {
      const accountId = newAccountId();
      const keyId = (await client.newKey(accountId)).key?.id;
      await assertGrpcError(client.updateKey({ accountId: newAccountId(), keyId, name: 'x', updateMask: ['name'] }), status.NOT_FOUND, /^key_id "/);
      await client.revokeKey({ accountId, keyId });
      await assertGrpcError(client.updateKey({ accountId, keyId, name: 'x', updateMask: ['name'] }), status.FAILED_PRECONDITION, /revoked; a revoked key cannot be changed/);
      assert.equal((await stored(keyId))?.name, 'test key');
      assert.deepEqual(await updateEvents(keyId), []);
    });
  });

  describe('RotateKey', () => {
    const grace = (ms: number) => ({ seconds: BigInt(Math.trunc(ms / 1000)), nanos: (ms % 1000) * 1_000_000 });
    const row = async (keyId: string | undefined) =>
      (await db.query('select version, revoked_at, expires_at, replaced_by_key_id, rotated_from_key_id from keyward.api_keys where id = $1', [keyId])).rows[0] as {
        version: string;
        revoked_at: Date | null;
        expires_at: Date | null;
        replaced_by_key_id: string | null;
        rotated_from_key_id: string | null;
      };
    const outboxRows = async (keyId: string | undefined) =>
      Number(
        (
          await db.query<{ n: string }>(
            'select count(*) as n from keyward.key_invalidations o join keyward.api_keys k on k.secret_hash = o.secret_hash where k.id = $1',
            [keyId],
          )
        ).rows[0]?.n,
      );

    it('makes a new key with the same fields and a new secret; the old key expires after the grace period', async () => {
      const accountId = newAccountId();
      const created = await client.newKey(accountId, {
        name: 'CRM',
        environment: Environment.ENVIRONMENT_TEST,
        scopes: ['jobs:read', 'technicians:read'],
        ipWhitelist: ['203.0.113.0/24'],
        metadata: { team: 'ops' },
      });
      const oldId = created.key?.id;
      const before = Date.now();
      const { key, secret } = await client.rotateKey({ accountId, keyId: oldId, gracePeriod: grace(3_600_000) });
      const afterMs = Date.now();
      assert.match(secret, /^fsm_test_[0-9A-Za-z]{49}$/);
      assert.notEqual(secret, created.secret);
      assert.ok(key !== undefined);
      assert.notEqual(key.id, oldId);
      assert.deepEqual(
        [key.accountId, key.name, key.environment, key.scopes, key.ipWhitelist, key.metadata, key.expiresAt, key.revokedAt, key.rotatedFromKeyId, key.replacedByKeyId],
        [accountId, 'CRM', Environment.ENVIRONMENT_TEST, ['jobs:read', 'technicians:read'], ['203.0.113.0/24'], { team: 'ops' }, undefined, undefined, oldId, ''],
      );
      assert.equal(key.display, `fsm_test_${secret.slice(9, 13)}…${secret.slice(-4)}`);

      const old = (await client.getKey({ accountId, keyId: oldId })).key;
      assert.equal(old?.replacedByKeyId, key.id);
      assert.equal(old?.rotatedFromKeyId, '');
      assert.equal(old?.revokedAt, undefined);
      const expiresAt = old?.expiresAt?.getTime() ?? 0;
      assert.ok(expiresAt >= before + 3_600_000 - 1_000 && expiresAt <= afterMs + 3_600_000 + 1_000, `expires_at ${old?.expiresAt?.toISOString()}`);
      assert.equal((await row(oldId)).version, '2');
      assert.equal(await outboxRows(oldId), 1);
      assert.equal(await outboxRows(key.id), 0);
      const stored = JSON.stringify((await db.query('select * from keyward.api_keys where id = $1', [key.id])).rows[0]);
      assert.ok(!stored.includes(secret.slice(9, -4)), 'the secret is stored');
    });

    it('never moves an earlier expiry later', async () => {
      const accountId = newAccountId();
      const expiresAt = new Date(Date.now() + 60_000);
      const oldId = (await client.newKey(accountId, { expiresAt })).key?.id;
      await client.rotateKey({ accountId, keyId: oldId, gracePeriod: grace(86_400_000) });
      assert.equal((await row(oldId)).expires_at?.getTime(), expiresAt.getTime());
    });

    it('lets UpdateKey bring the grace end of a replaced key forward, but never move it later or clear it', async () => {
      const accountId = newAccountId();
      const oldId = (await client.newKey(accountId)).key?.id as string;
      await client.rotateKey({ accountId, keyId: oldId, gracePeriod: grace(3_600_000) });
      const graceEnd = (await row(oldId)).expires_at as Date;
      const refusal = new RegExp(`^expires_at (unset|"[0-9T:.-]+Z"): key "${oldId}" was replaced by a rotation .* brought forward, not moved later or cleared$`);
      for (const expiresAt of [new Date(graceEnd.getTime() + 1000), undefined]) {
        await assertGrpcError(client.updateKey({ accountId, keyId: oldId, expiresAt, updateMask: ['expires_at'] }), status.FAILED_PRECONDITION, refusal);
        assert.equal((await row(oldId)).expires_at?.getTime(), graceEnd.getTime());
      }
      const sooner = new Date(graceEnd.getTime() - 600_000);
      await client.updateKey({ accountId, keyId: oldId, expiresAt: sooner, updateMask: ['expires_at'] });
      assert.equal((await row(oldId)).expires_at?.getTime(), sooner.getTime());
      // Other fields of a replaced key still change.
      assert.equal((await client.updateKey({ accountId, keyId: oldId, name: 'retiring', updateMask: ['name'] })).key?.name, 'retiring');
    });

    it('revokes the old key at once with a grace period of 0 or unset', async () => {
      const accountId = newAccountId();
      for (const gracePeriod of [grace(0), undefined]) {
        const oldId = (await client.newKey(accountId)).key?.id;
        const { key } = await client.rotateKey({ accountId, keyId: oldId, gracePeriod });
        const old = (await client.getKey({ accountId, keyId: oldId })).key;
        assert.ok(old?.revokedAt instanceof Date);
        assert.equal(old?.expiresAt, undefined);
        assert.equal(old?.replacedByKeyId, key?.id);
      }
    });

    it('refuses a revoked key or one already replaced with FAILED_PRECONDITION saying why, and changes nothing', async () => {
      const accountId = newAccountId();
      const revokedId = (await client.newKey(accountId)).key?.id;
      await client.revokeKey({ accountId, keyId: revokedId });
      await assertGrpcError(client.rotateKey({ accountId, keyId: revokedId, gracePeriod: grace(1000) }), status.FAILED_PRECONDITION, /^key_id "[0-9a-f-]+": the key is revoked/);

      const oldId = (await client.newKey(accountId)).key?.id;
      const first = await client.rotateKey({ accountId, keyId: oldId, gracePeriod: grace(60_000) });
      const snapshot = await row(oldId);
      await assertGrpcError(
        client.rotateKey({ accountId, keyId: oldId, gracePeriod: grace(60_000) }),
        status.FAILED_PRECONDITION,
        new RegExp(`^key_id "${oldId}": the key was already replaced by key "${first.key?.id}"`),
      );
      assert.deepEqual(await row(oldId), snapshot);
      assert.equal(await countKeys(accountId), 3);
    });

    it('lets one of two concurrent rotations win; the other is FAILED_PRECONDITION', async () => {
      const accountId = newAccountId();
      const oldId = (await client.newKey(accountId)).key?.id;
      const outcomes = await Promise.allSettled([
        client.rotateKey({ accountId, keyId: oldId, gracePeriod: grace(60_000) }),
        client.rotateKey({ accountId, keyId: oldId, gracePeriod: grace(60_000) }),
      ]);
      const won = outcomes.filter((outcome) => outcome.status === 'fulfilled');
      const lost = outcomes.filter((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected');
      assert.equal(won.length, 1);
      assert.equal(lost.length, 1);
      assert.equal((lost[0]?.reason as { code: number }).code, status.FAILED_PRECONDITION);
      assert.equal(await countKeys(accountId), 2);
      assert.equal((await row(oldId)).version, '2');
    });

    const invalid: Array<[string, { seconds: bigint; nanos: number }, RegExp]> = [
      ['a negative grace period', { seconds: -1n, nanos: 0 }, /^grace_period "-1s 0ns": must not be negative/],
      ['a grace period over 30 days', { seconds: 30n * 86_400n + 1n, nanos: 0 }, /^grace_period "2592001s 0ns": must be at most 30 days/],
      ['a malformed Duration', { seconds: 1n, nanos: -5 }, /^grace_period "1s -5ns": is not a valid google.protobuf.Duration/],
    ];
    for (const [what, gracePeriod, message] of invalid) {
      it(`refuses ${what} with INVALID_ARGUMENT naming grace_period, and changes nothing`, async () => {
        const accountId = newAccountId();
        const oldId = (await client.newKey(accountId)).key?.id;
        await assertGrpcError(client.rotateKey({ accountId, keyId: oldId, gracePeriod }), status.INVALID_ARGUMENT, message);
        assert.equal(await countKeys(accountId), 1);
        assert.equal((await row(oldId)).version, '1');
      });
    }

    it('accepts exactly 30 days', async () => {
      const accountId = newAccountId();
      const oldId = (await client.newKey(accountId)).key?.id;
      await client.rotateKey({ accountId, keyId: oldId, gracePeriod: grace(30 * 86_400_000) });
      assert.ok(((await row(oldId)).expires_at?.getTime() ?? 0) > Date.now() + 30 * 86_400_000 - 60_000);
    });

    it('answers NOT_FOUND for a key of another account or no key, and changes nothing', async () => {
      const accountId = newAccountId();
      const other = newAccountId();
      const oldId = (await client.newKey(accountId)).key?.id;
      await assertGrpcError(client.rotateKey({ accountId: other, keyId: oldId }), status.NOT_FOUND, new RegExp(`^key_id "${oldId}": no such key`));
      await assertGrpcError(
        client.rotateKey({ accountId, keyId: '00000000-0000-4000-8000-000000000000' }),
        status.NOT_FOUND,
        /^key_id "00000000-0000-4000-8000-000000000000": no such key/,
      );
      assert.equal(await countKeys(other), 0);
      assert.equal(await countKeys(accountId), 1);
      assert.equal((await row(oldId)).version, '1');
    });
  });

  describe('RevokeKey', () => {
    it('sets revoked_at once; revoking again changes nothing', async () => {
      const accountId = newAccountId();
      const keyId = (await client.newKey(accountId)).key?.id;
      const first = await client.revokeKey({ accountId, keyId });
      assert.ok(first.key?.revokedAt instanceof Date);
      const second = await client.revokeKey({ accountId, keyId });
      assert.deepEqual(second.key, first.key);
    });
  });

  describe('DisableKey and EnableKey', () => {
    const storedRow = async (keyId: string | undefined) => {
      const { rows } = await db.query<{ version: string; disabled_at: Date | null }>('select version, disabled_at from keyward.api_keys where id = $1', [keyId]);
      return rows[0];
    };
    const outboxRows = async (keyId: string | undefined): Promise<string[]> => {
      const { rows } = await db.query<{ version: string }>(
        'select o.version from keyward.key_invalidations o join keyward.api_keys k on k.secret_hash = o.secret_hash where k.id = $1 order by o.seq',
        [keyId],
      );
      return rows.map((row) => row.version);
    };

    it('disable sets disabled_at and enable clears it, each a new version with its outbox row', async () => {
      const accountId = newAccountId();
      const created = (await client.newKey(accountId)).key;
      const keyId = created?.id;
      assert.equal(created?.disabledAt, undefined);
      const disabled = (await client.disableKey({ accountId, keyId })).key;
      assert.ok(disabled?.disabledAt instanceof Date);
      assert.ok(Math.abs((disabled.disabledAt?.getTime() ?? 0) - Date.now()) < 60_000);
      assert.deepEqual({ ...disabled, disabledAt: undefined }, { ...created, disabledAt: undefined });
      assert.equal((await storedRow(keyId))?.version, '2');
      assert.deepEqual((await client.getKey({ accountId, keyId })).key, disabled);

      const enabled = (await client.enableKey({ accountId, keyId })).key;
      assert.equal(enabled?.disabledAt, undefined);
      assert.deepEqual(enabled, created);
      assert.deepEqual(await storedRow(keyId), { version: '3', disabled_at: null });
      assert.deepEqual(await outboxRows(keyId), ['2', '3']);
    });

    it('are idempotent: disabling a disabled key or enabling an enabled one returns it unchanged, without a new version', async () => {
      const accountId = newAccountId();
      const keyId = (await client.newKey(accountId)).key?.id;
      const enabledAgain = (await client.enableKey({ accountId, keyId })).key;
      assert.equal(enabledAgain?.disabledAt, undefined);
      assert.equal((await storedRow(keyId))?.version, '1');
      const first = (await client.disableKey({ accountId, keyId })).key;
      const second = (await client.disableKey({ accountId, keyId })).key;
      assert.deepEqual(second, first, 'the same disabled_at');
      assert.equal((await storedRow(keyId))?.version, '2');
      assert.deepEqual(await outboxRows(keyId), ['2']);
    });

    it('refuse a revoked key with FAILED_PRECONDITION saying why, and change nothing', async () => {
      const accountId = newAccountId();
      const keyId = (await client.newKey(accountId)).key?.id;
      await client.revokeKey({ accountId, keyId });
      await assertGrpcError(client.disableKey({ accountId, keyId }), status.FAILED_PRECONDITION, new RegExp(`^key_id "${keyId}": the key is revoked; a revoked key cannot be disabled$`));
      await assertGrpcError(client.enableKey({ accountId, keyId }), status.FAILED_PRECONDITION, new RegExp(`^key_id "${keyId}": the key is revoked; a revoked key cannot be enabled$`));
      assert.deepEqual(await storedRow(keyId), { version: '2', disabled_at: null });

      // Disabled, then revoked: still revoked for good, and its disabled_at kept.
      const other = (await client.newKey(accountId)).key?.id;
      const disabledAt = (await client.disableKey({ accountId, keyId: other })).key?.disabledAt;
      const revoked = (await client.revokeKey({ accountId, keyId: other })).key;
      assert.ok(revoked?.revokedAt instanceof Date);
      assert.equal(revoked.disabledAt?.getTime(), disabledAt?.getTime());
      await assertGrpcError(client.enableKey({ accountId, keyId: other }), status.FAILED_PRECONDITION, /revoked key cannot be enabled/);
      await assertGrpcError(client.disableKey({ accountId, keyId: other }), status.FAILED_PRECONDITION, /revoked key cannot be disabled/);
    });

    it('refuse bad input naming the field, and an unknown key with NOT_FOUND', async () => {
      const accountId = newAccountId();
      const keyId = (await client.newKey(accountId)).key?.id;
      for (const call of [client.disableKey.bind(client), client.enableKey.bind(client)]) {
        await assertGrpcError(call({ accountId: '', keyId }), status.INVALID_ARGUMENT, /^account_id "": must not be empty/);
        await assertGrpcError(call({ accountId, keyId: 'not-a-uuid' }), status.INVALID_ARGUMENT, /^key_id "not-a-uuid"/);
        await assertGrpcError(
          call({ accountId, keyId: '00000000-0000-4000-8000-000000000000' }),
          status.NOT_FOUND,
          new RegExp(`^key_id "00000000-0000-4000-8000-000000000000": no such key in account_id "${accountId}"`),
        );
      }
      assert.deepEqual(await storedRow(keyId), { version: '1', disabled_at: null });
    });

    it('list disabled keys as other active ones (ListKeys leaves out only revoked keys)', async () => {
      const accountId = newAccountId();
      const keyId = (await client.newKey(accountId)).key?.id;
      await client.disableKey({ accountId, keyId });
      const { keys } = await client.listKeys({ accountId });
      assert.deepEqual(keys.map((key) => [key.id, key.disabledAt instanceof Date]), [[keyId, true]]);
    });
  });

  it('keeps tenants apart: another account gets NOT_FOUND from every RPC and sees nothing in lists', async () => {
    const owner = newAccountId();
    const stranger = newAccountId();
    const keyId = (await client.newKey(owner)).key?.id as string;
    const notFound = new RegExp(`^key_id "${keyId}": no such key in account_id "${stranger}"`);
    await assertGrpcError(client.getKey({ accountId: stranger, keyId }), status.NOT_FOUND, notFound);
    await assertGrpcError(client.updateScopes({ accountId: stranger, keyId, scopes: ['jobs:write'] }), status.NOT_FOUND, notFound);
    await assertGrpcError(client.updateIpWhitelist({ accountId: stranger, keyId, ipWhitelist: ['10.0.0.1'] }), status.NOT_FOUND, notFound);
    await assertGrpcError(client.revokeKey({ accountId: stranger, keyId }), status.NOT_FOUND, notFound);
    await assertGrpcError(client.disableKey({ accountId: stranger, keyId }), status.NOT_FOUND, notFound);
    await assertGrpcError(client.enableKey({ accountId: stranger, keyId }), status.NOT_FOUND, notFound);
    assert.deepEqual((await client.listKeys({ accountId: stranger, includeRevoked: true })).keys, []);
    const { key } = await client.getKey({ accountId: owner, keyId });
    assert.deepEqual(key?.scopes, ['jobs:read']);
    assert.equal(key?.revokedAt, undefined);
    assert.equal(key?.disabledAt, undefined);
  });

  it('refuses admin calls without the admin token, with a wrong one, or with another scheme', async () => {
    const accountId = newAccountId();
    const keyId = (await client.newKey(accountId)).key?.id;
    for (const token of [null, 'wrong-token-wrong-token', '']) {
      const stranger = new AdminClient(server.address, token);
      try {
        await assertGrpcError(stranger.createKey({ accountId, name: 'x', environment: Environment.ENVIRONMENT_LIVE, scopes: ['jobs:read'] }), status.UNAUTHENTICATED);
        await assertGrpcError(stranger.getKey({ accountId, keyId }), status.UNAUTHENTICATED);
        await assertGrpcError(stranger.listKeys({ accountId }), status.UNAUTHENTICATED);
        await assertGrpcError(stranger.updateScopes({ accountId, keyId, scopes: ['jobs:write'] }), status.UNAUTHENTICATED);
        await assertGrpcError(stranger.updateIpWhitelist({ accountId, keyId, ipWhitelist: [] }), status.UNAUTHENTICATED);
        await assertGrpcError(stranger.revokeKey({ accountId, keyId }), status.UNAUTHENTICATED);
        await assertGrpcError(stranger.disableKey({ accountId, keyId }), status.UNAUTHENTICATED);
        await assertGrpcError(stranger.enableKey({ accountId, keyId }), status.UNAUTHENTICATED);
        await assertGrpcError(stranger.updateKey({ accountId, keyId, name: 'x', updateMask: ['name'] }), status.UNAUTHENTICATED);
      } finally {
        stranger.close();
      }
    }
    assert.equal(await countKeys(accountId), 1);
    const { key } = await client.getKey({ accountId, keyId });
    assert.equal(key?.revokedAt, undefined);
    assert.equal(key?.disabledAt, undefined);
  });

  it('never sends a secret in any response but CreateKey and RotateKey (its new secret)', async () => {
    const accountId = newAccountId();
    const { key, secret } = await client.newKey(accountId);
    const keyId = key?.id;
    const responses: unknown[] = [
      await client.getKey({ accountId, keyId }),
      await client.listKeys({ accountId, includeRevoked: true }),
      await client.updateScopes({ accountId, keyId, scopes: ['jobs:write'] }),
      await client.updateIpWhitelist({ accountId, keyId, ipWhitelist: ['10.0.0.1'] }),
      await client.disableKey({ accountId, keyId }),
      await client.enableKey({ accountId, keyId }),
      await client.revokeKey({ accountId, keyId }),
    ];
    const rotatedFrom = (await client.newKey(accountId)).key?.id;
    const rotated = await client.rotateKey({ accountId, keyId: rotatedFrom, gracePeriod: { seconds: 60n, nanos: 0 } });
    assert.ok(!responseText(rotated.key).includes(rotated.secret.slice(9, -4)));
    responses.push(rotated.key);
    const body = secret.slice(9, -4);
    for (const response of responses) {
      const text = responseText(response);
      assert.ok(!text.includes(body), `secret in ${text}`);
    }
    const keys = (responses[1] as { keys: ApiKey[] }).keys;
    assert.equal(keys.length, 1);
  });
});

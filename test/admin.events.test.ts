import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import pg from 'pg';
import { type KeyEvent, KeyAction } from '../src/gen/keyward/v1/keyward';
import { peerAddress } from '../src/grpc/peerAddress';
import { hashSecret } from '../src/keys/KeyFormat';
import { AdminClient, assertGrpcError, responseText } from './helpers/clients';
import { newAccountId, testDatabaseUrl } from './helpers/env';
import { assertNoLeaks } from './helpers/leaks';
import { ServerProcess } from './helpers/serverProcess';

const CI = 'ci-events-token-0123456789abcdef';
const CONSOLE = 'console-events-token-0123456789abcdef';

/** A change's values, parsed ('' before: none). */
const changesOf = (event: KeyEvent | undefined): Record<string, { before?: unknown; after: unknown }> =>
  Object.fromEntries(
    (event?.changes ?? []).map((change) => [
      change.field,
      change.beforeJson === '' ? { after: JSON.parse(change.afterJson) } : { before: JSON.parse(change.beforeJson), after: JSON.parse(change.afterJson) },
    ]),
  );

describe('the caller address of an event', () => {
  it('is the peer without its port, canonical, or null when the peer is no IP address', () => {
    const cases: Array<[string, string | null]> = [
      ['127.0.0.1:5000', '127.0.0.1'],
      ['::ffff:127.0.0.1:5000', '127.0.0.1'],
      ['::1:5000', '::1'],
      ['2001:DB8:0::1:443', '2001:db8::1'],
      ['[::1]:5000', '::1'],
      ['ipv4:10.0.0.1:80', '10.0.0.1'],
      ['ipv6:[2001:db8::1]:80', '2001:db8::1'],
      ['10.0.0.1', '10.0.0.1'],
      ['/run/keyward.sock', null],
      ['unknown', null],
      ['', null],
    ];
    for (const [peer, expected] of cases) assert.equal(peerAddress(peer), expected, peer);
  });
});

describe('the audit trail and ListKeyEvents over the wire', () => {
  let server: ServerProcess;
  let ci: AdminClient;
  let console_: AdminClient;
  let db: pg.Pool;

  before(async () => {
    server = await ServerProcess.start({ KEYWARD_ADMIN_TOKEN: undefined, KEYWARD_ADMIN_TOKENS: `ci:${CI},console:${CONSOLE}` });
    ci = new AdminClient(server.address, CI);
    console_ = new AdminClient(server.address, CONSOLE);
    db = new pg.Pool({ connectionString: testDatabaseUrl(), max: 2 });
  });

  after(async () => {
    ci.close();
    console_.close();
    await db.end();
    assert.equal(await server.stop(), 0);
    await assertNoLeaks();
  });

  const allEvents = async (accountId: string, keyId = ''): Promise<KeyEvent[]> => (await ci.listKeyEvents({ accountId, keyId, pageSize: 1000 })).events;
  const storedEvents = async (accountId: string): Promise<Array<Record<string, unknown>>> =>
    (await db.query('select * from keyward.key_events where account_id = $1 order by id', [accountId])).rows as Array<Record<string, unknown>>;

  it('records each change once, newest first, with its actor, the caller address and the fields before and after', async () => {
    const accountId = newAccountId();
    const expiresAt = new Date(Date.UTC(2099, 0, 31, 18, 0, 0));
    const created = await ci.createKey({ accountId, name: 'CRM', environment: 1, scopes: ['jobs:read'], ipWhitelist: ['10.0.0.0/8'], expiresAt });
    const keyId = created.key?.id as string;
    await console_.updateScopes({ accountId, keyId, scopes: ['jobs:read', 'jobs:write'] });
    await ci.updateIpWhitelist({ accountId, keyId, ipWhitelist: [] });
    const disabled = await console_.disableKey({ accountId, keyId });
    await console_.disableKey({ accountId, keyId }); // a no-op: no event
    await ci.enableKey({ accountId, keyId });
    await ci.enableKey({ accountId, keyId }); // a no-op: no event
    const revoked = await console_.revokeKey({ accountId, keyId });
    await ci.revokeKey({ accountId, keyId }); // a no-op: no event

    const events = await allEvents(accountId, keyId);
    assert.deepEqual(
      events.map((event) => [event.action, event.actor, event.clientAddress, event.keyId]),
      [
        [KeyAction.KEY_ACTION_REVOKE, 'console', '127.0.0.1', keyId],
        [KeyAction.KEY_ACTION_ENABLE, 'ci', '127.0.0.1', keyId],
        [KeyAction.KEY_ACTION_DISABLE, 'console', '127.0.0.1', keyId],
        [KeyAction.KEY_ACTION_WHITELIST, 'ci', '127.0.0.1', keyId],
        [KeyAction.KEY_ACTION_SCOPES, 'console', '127.0.0.1', keyId],
        [KeyAction.KEY_ACTION_CREATE, 'ci', '127.0.0.1', keyId],
      ],
    );
    const ids = events.map((event) => BigInt(event.id));
    assert.deepEqual([...ids].sort((a, b) => (a > b ? -1 : 1)), ids, 'newest first');
    for (const event of events) assert.ok(event.at instanceof Date && Math.abs(event.at.getTime() - Date.now()) < 60_000);

    const [revoke, enable, disable, whitelist, scopes, create] = events;
    assert.deepEqual(changesOf(create), {
      name: { after: 'CRM' },
      environment: { after: 'live' },
      scopes: { after: ['jobs:read'] },
      ip_whitelist: { after: ['10.0.0.0/8'] },
      expires_at: { after: '2099-01-31T18:00:00.000000Z' },
      metadata: { after: {} },
    });
    assert.deepEqual(create?.changes.map((change) => change.field), ['name', 'environment', 'scopes', 'ip_whitelist', 'expires_at', 'metadata']);
    assert.deepEqual(changesOf(scopes), { scopes: { before: ['jobs:read'], after: ['jobs:read', 'jobs:write'] } });
    assert.deepEqual(changesOf(whitelist), { ip_whitelist: { before: ['10.0.0.0/8'], after: [] } });
    const disabledAt = changesOf(disable).disabled_at;
    assert.equal(disabledAt?.before, null);
    assert.equal(new Date(disabledAt?.after as string).getTime(), disabled.key?.disabledAt?.getTime());
    assert.equal(changesOf(enable).disabled_at?.after, null);
    assert.equal(changesOf(enable).disabled_at?.before, disabledAt?.after);
    assert.equal(changesOf(revoke).revoked_at?.before, null);
    assert.equal(new Date(changesOf(revoke).revoked_at?.after as string).getTime(), revoked.key?.revokedAt?.getTime());

    // Never the secret, its hash or its body: not in the answer, not in the table.
    const secret = created.secret;
    const stored = JSON.stringify(await storedEvents(accountId));
    for (const text of [responseText(events), stored]) {
      for (const needle of [secret, hashSecret(secret), secret.slice(9), secret.slice(9, -4), created.key?.display as string]) {
        assert.ok(!text.includes(needle), `an event holds ${needle === secret ? 'the secret' : 'a form of it'}`);
      }
    }
  });

  it('records a rotation: rotate on the old key (before and after), create on the new one naming rotated_from_key_id', async () => {
    const accountId = newAccountId();
    const oldId = (await ci.newKey(accountId, { name: 'CRM', scopes: ['jobs:read'], metadata: { team: 'ops' } })).key?.id as string;
    const { key } = await console_.rotateKey({ accountId, keyId: oldId, gracePeriod: { seconds: 3600n, nanos: 0 } });
    const newId = key?.id as string;
    const old = (await ci.getKey({ accountId, keyId: oldId })).key;

    const events = await allEvents(accountId);
    assert.deepEqual(
      events.map((event) => [event.action, event.actor, event.keyId]),
      [
        [KeyAction.KEY_ACTION_CREATE, 'console', newId],
        [KeyAction.KEY_ACTION_ROTATE, 'console', oldId],
        [KeyAction.KEY_ACTION_CREATE, 'ci', oldId],
      ],
    );
    const [created, rotated] = events;
    assert.deepEqual(changesOf(rotated), {
      expires_at: { before: null, after: (changesOf(rotated).expires_at?.after as string) },
      revoked_at: { before: null, after: null },
      replaced_by_key_id: { before: null, after: newId },
    });
    assert.equal(new Date(changesOf(rotated).expires_at?.after as string).getTime(), old?.expiresAt?.getTime());
    assert.deepEqual(rotated?.changes.map((change) => change.field), ['expires_at', 'revoked_at', 'replaced_by_key_id']);
    assert.deepEqual(changesOf(created), {
      name: { after: 'CRM' },
      environment: { after: 'live' },
      scopes: { after: ['jobs:read'] },
      ip_whitelist: { after: [] },
      expires_at: { after: null },
      metadata: { after: { team: 'ops' } },
      rotated_from_key_id: { after: oldId },
    });

    // Rotating again is refused and writes nothing; a grace period of 0 records the revocation.
    await assertGrpcError(ci.rotateKey({ accountId, keyId: oldId }), status.FAILED_PRECONDITION, /already replaced/);
    const { key: third } = await ci.rotateKey({ accountId, keyId: newId, gracePeriod: { seconds: 0n, nanos: 0 } });
    const revoking = (await allEvents(accountId, newId))[0];
    assert.equal(revoking?.action, KeyAction.KEY_ACTION_ROTATE);
    assert.deepEqual(changesOf(revoking).expires_at, { before: null, after: null });
    assert.equal(changesOf(revoking).revoked_at?.before, null);
    assert.equal(new Date(changesOf(revoking).revoked_at?.after as string).getTime(), (await ci.getKey({ accountId, keyId: newId })).key?.revokedAt?.getTime());
    assert.deepEqual(changesOf(revoking).replaced_by_key_id, { before: null, after: third?.id });
    assert.equal((await storedEvents(accountId)).length, 5);
  });

  it('commits the event with the change: the key, its outbox row and its event, one each', async () => {
    const accountId = newAccountId();
    const keyId = (await ci.newKey(accountId)).key?.id as string;
    const { rows: before } = await db.query<{ version: string; hash: string }>("select version, encode(secret_hash, 'hex') as hash from keyward.api_keys where id = $1", [keyId]);
    await console_.updateScopes({ accountId, keyId, scopes: ['jobs:write'] });
    const { rows } = await db.query<{ version: string; scopes: string[]; outbox: string; events: string }>(
      `select k.version, k.scopes,
              (select count(*) from keyward.key_invalidations o where o.secret_hash = k.secret_hash and o.version = k.version) as outbox,
              (select count(*) from keyward.key_events e where e.key_id = k.id and e.action = 'scopes') as events
         from keyward.api_keys k where k.id = $1`,
      [keyId],
    );
    assert.deepEqual(rows[0], { version: String(Number(before[0]?.version) + 1), scopes: ['jobs:write'], outbox: '1', events: '1' });
  });

  it("chains concurrent changes of one key: each event's before is the previous event's after", async () => {
    const accountId = newAccountId();
    const keyId = (await ci.newKey(accountId)).key?.id as string;
    const sets = [['jobs:write'], ['jobs:read', 'jobs:write'], ['technicians:read'], ['jobs:read'], ['customers:read', 'jobs:read']];
    await Promise.all(
      Array.from({ length: 20 }, (_, index) =>
        (index % 2 === 0 ? ci : console_).updateScopes({ accountId, keyId, scopes: sets[index % sets.length] as string[] }),
      ),
    );
    const oldestFirst = (await allEvents(accountId, keyId)).reverse();
    assert.equal(oldestFirst.length, 21);
    let current: unknown = ['jobs:read'];
    for (const event of oldestFirst.slice(1)) {
      const { before, after } = changesOf(event).scopes ?? { after: undefined };
      assert.deepEqual(before, current, `event ${event.id}`);
      current = after;
    }
    assert.deepEqual(current, (await ci.getKey({ accountId, keyId })).key?.scopes);
  });

  it('writes nothing for a change that fails: refused input, a revoked key, a missing key', async () => {
    const accountId = newAccountId();
    await assertGrpcError(ci.newKey(accountId, { scopes: ['jobs:delete'] }), status.INVALID_ARGUMENT, /^scopes\[0\]/);
    assert.deepEqual(await storedEvents(accountId), []);
    const keyId = (await ci.newKey(accountId)).key?.id as string;
    await assertGrpcError(ci.updateScopes({ accountId, keyId, scopes: ['jobs:delete'] }), status.INVALID_ARGUMENT, /^scopes\[0\]/);
    await assertGrpcError(ci.updateIpWhitelist({ accountId, keyId, ipWhitelist: ['10.0.0.0/40'] }), status.INVALID_ARGUMENT, /^ip_whitelist\[0\]/);
    await assertGrpcError(ci.disableKey({ accountId, keyId: '00000000-0000-4000-8000-000000000000' }), status.NOT_FOUND);
    await ci.revokeKey({ accountId, keyId });
    await assertGrpcError(ci.updateScopes({ accountId, keyId, scopes: ['jobs:write'] }), status.FAILED_PRECONDITION);
    await assertGrpcError(ci.disableKey({ accountId, keyId }), status.FAILED_PRECONDITION);
    assert.deepEqual((await storedEvents(accountId)).map((row) => row.action), ['create', 'revoke']);
  });

  it('rolls the change back when its event cannot be written (one statement: both or neither)', async () => {
    const accountId = newAccountId();
    const keyId = (await ci.newKey(accountId)).key?.id as string;
    const fn = `test_fail_event_${accountId.replace(/[^a-z0-9]/gi, '_')}`.slice(0, 60);
    // A trigger that fails this account's next event: the change's statement fails as a whole.
    await db.query(`create function keyward.${fn}() returns trigger language plpgsql as $$
      begin if new.account_id = '${accountId}' then raise exception 'event refused'; end if; return new; end $$`);
    await db.query(`create trigger ${fn} before insert on keyward.key_events for each row execute function keyward.${fn}()`);
    try {
      await assertGrpcError(console_.updateScopes({ accountId, keyId, scopes: ['jobs:write'] }), status.INTERNAL);
    } finally {
      await db.query(`drop trigger ${fn} on keyward.key_events`);
      await db.query(`drop function keyward.${fn}()`);
    }
    const key = (await ci.getKey({ accountId, keyId })).key;
    assert.deepEqual(key?.scopes, ['jobs:read'], 'the change was kept without its event');
    assert.deepEqual((await storedEvents(accountId)).map((row) => row.action), ['create']);
  });

  it('pages newest first across pages, each event once', async () => {
    const accountId = newAccountId();
    for (let index = 0; index < 4; index++) {
      const keyId = (await ci.newKey(accountId)).key?.id as string;
      await console_.disableKey({ accountId, keyId });
    }
    const whole = await allEvents(accountId);
    assert.equal(whole.length, 8);
    const paged: KeyEvent[] = [];
    let pageToken = '';
    let pages = 0;
    do {
      const page = await console_.listKeyEvents({ accountId, pageSize: 3, pageToken });
      assert.ok(page.events.length <= 3);
      paged.push(...page.events);
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== '');
    assert.equal(pages, 3);
    assert.deepEqual(paged.map((event) => event.id), whole.map((event) => event.id));
    assert.deepEqual(whole.slice(0, 2).map((event) => event.action), [KeyAction.KEY_ACTION_DISABLE, KeyAction.KEY_ACTION_CREATE]);

    // One key's events, paged too.
    const keyId = whole[0]?.keyId as string;
    const first = await ci.listKeyEvents({ accountId, keyId, pageSize: 1 });
    const second = await ci.listKeyEvents({ accountId, keyId, pageSize: 1, pageToken: first.nextPageToken });
    assert.deepEqual([...first.events, ...second.events].map((event) => event.action), [KeyAction.KEY_ACTION_DISABLE, KeyAction.KEY_ACTION_CREATE]);
    assert.equal(second.nextPageToken, '');

    // Tokens are for the query they came from.
    await assertGrpcError(ci.listKeyEvents({ accountId, pageToken: first.nextPageToken }), status.INVALID_ARGUMENT, /^page_token .*another account_id or key_id/);
    await assertGrpcError(ci.listKeyEvents({ accountId: newAccountId(), keyId, pageToken: first.nextPageToken }), status.INVALID_ARGUMENT, /^page_token/);
    const keysToken = (await ci.listKeys({ accountId, pageSize: 1 })).nextPageToken;
    await assertGrpcError(ci.listKeyEvents({ accountId, pageToken: keysToken }), status.INVALID_ARGUMENT, /^page_token/);
    await assertGrpcError(ci.listKeys({ accountId, pageToken: first.nextPageToken }), status.INVALID_ARGUMENT, /^page_token/);
    const tampered = Buffer.from(JSON.stringify({ v: 1, e: 1, a: accountId, k: keyId, s: '9'.repeat(20) })).toString('base64url');
    await assertGrpcError(ci.listKeyEvents({ accountId, keyId, pageToken: tampered }), status.INVALID_ARGUMENT, /^page_token/);
    await assertGrpcError(ci.listKeyEvents({ accountId, pageToken: 'x'.repeat(513) }), status.INVALID_ARGUMENT, /^page_token/);
    await assertGrpcError(ci.listKeyEvents({ accountId, keyId: 'not-a-key' }), status.INVALID_ARGUMENT, /^key_id/);
    await assertGrpcError(ci.listKeyEvents({ accountId: '' }), status.INVALID_ARGUMENT, /^account_id/);
  });

  it("never shows another account's events: its key id gives an empty list, as an unknown one does", async () => {
    const mine = newAccountId();
    const theirs = newAccountId();
    const theirKey = (await ci.newKey(theirs)).key?.id as string;
    await ci.revokeKey({ accountId: theirs, keyId: theirKey });
    await ci.newKey(mine);
    assert.deepEqual(await allEvents(mine, theirKey), []);
    assert.deepEqual(await allEvents(mine, '00000000-0000-4000-8000-000000000000'), []);
    assert.ok((await allEvents(mine)).every((event) => event.keyId !== theirKey));
    assert.equal((await allEvents(theirs, theirKey)).length, 2);
  });

  it('needs an admin token', async () => {
    const anonymous = new AdminClient(server.address, null);
    try {
      await assertGrpcError(anonymous.listKeyEvents({ accountId: newAccountId() }), status.UNAUTHENTICATED);
    } finally {
      anonymous.close();
    }
  });
});

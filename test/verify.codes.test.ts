import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { Environment, VerifyCode } from '../src/gen/keyward/v1/keyward';
import { KeyFormat } from '../src/keys/KeyFormat';
import { AdminClient, VerifierClient, assertGrpcError, secretsSeen } from './helpers/clients';
import { newAccountId } from './helpers/env';
import { FaultProxy } from './helpers/FaultProxy';
import { assertNoLeaks } from './helpers/leaks';
import { ServerProcess } from './helpers/serverProcess';
import { waitUntil } from './helpers/waitUntil';

describe('Verify over the wire', () => {
  let server: ServerProcess;
  let admin: AdminClient;
  let verifier: VerifierClient;

  before(async () => {
    server = await ServerProcess.start();
    admin = new AdminClient(server.address);
    verifier = new VerifierClient(server.address);
  });

  after(async () => {
    admin.close();
    verifier.close();
    assert.equal(await server.stop(), 0);
    for (const secret of secretsSeen) assert.ok(!server.log.includes(secret), 'a secret reached the server log');
    await assertNoLeaks();
  });

  it('answers OK 200 with the key, its account and its full scope list', async () => {
    const accountId = newAccountId();
    const { key, secret } = await admin.newKey(accountId, { name: 'CRM', scopes: ['jobs:read', 'technicians:read'] });
    const answer = await verifier.verify({ key: secret, clientIp: '198.51.100.1', requiredScopes: ['jobs:read'] });
    assert.deepEqual(answer, {
      valid: true,
      code: VerifyCode.VERIFY_CODE_OK,
      httpStatus: 200,
      keyId: key?.id,
      accountId,
      environment: Environment.ENVIRONMENT_LIVE,
      scopes: ['jobs:read', 'technicians:read'],
      missingScopes: [],
      keyName: 'CRM',
      metadata: {},
    });
  });

  it('answers with the key\'s metadata as soon as UpdateKey returns, and EXPIRED or OK as its expiry moves', async () => {
    const accountId = newAccountId();
    const { key, secret } = await admin.newKey(accountId, { metadata: { integration: 'crm' } });
    const keyId = key?.id;
    const request = { key: secret, clientIp: '198.51.100.1', requiredScopes: ['jobs:read'] };
    assert.deepEqual((await verifier.verify(request)).metadata, { integration: 'crm' });
    await admin.updateKey({ accountId, keyId, name: 'renamed', metadata: { integration: 'erp', team: 'ops' }, updateMask: ['name', 'metadata'] });
    const renamed = await verifier.verify(request);
    assert.equal(renamed.code, VerifyCode.VERIFY_CODE_OK);
    assert.equal(renamed.keyName, 'renamed');
    assert.deepEqual(renamed.metadata, { integration: 'erp', team: 'ops' });

    // An expiry moved near, then reached: EXPIRED (with the metadata); cleared: OK again.
    const soon = new Date(Date.now() + 1_000);
    await admin.updateKey({ accountId, keyId, expiresAt: soon, updateMask: ['expires_at'] });
    assert.equal((await verifier.verify(request)).code, VerifyCode.VERIFY_CODE_OK);
    await waitUntil('the expiry to pass', () => Date.now() > soon.getTime() + 5);
    const expired = await verifier.verify(request);
    assert.equal(expired.code, VerifyCode.VERIFY_CODE_EXPIRED);
    assert.deepEqual(expired.metadata, { integration: 'erp', team: 'ops' });
    await admin.updateKey({ accountId, keyId, updateMask: ['expires_at'] });
    assert.equal((await verifier.verify(request)).code, VerifyCode.VERIFY_CODE_OK);
    await admin.updateKey({ accountId, keyId, metadata: {}, updateMask: ['metadata'] });
    assert.deepEqual((await verifier.verify(request)).metadata, {});
  });

  it('answers MISSING_KEY 401 for an empty key', async () => {
    const answer = await verifier.verify({ key: '', clientIp: '198.51.100.1', requiredScopes: ['jobs:read'] });
    assert.equal(answer.valid, false);
    assert.equal(answer.code, VerifyCode.VERIFY_CODE_MISSING_KEY);
    assert.equal(answer.httpStatus, 401);
    assert.equal(answer.keyId, '');
  });

  it('answers INVALID_KEY 401 for garbage, typos and unknown well-formed keys', async () => {
    const { secret } = await admin.newKey(newAccountId());
    const typo = secret.slice(0, 20) + (secret[20] === 'a' ? 'b' : 'a') + secret.slice(21);
    const unknown = new KeyFormat('fsm_live_', 'fsm_test_').generate('live');
    for (const key of ['garbage', 'Bearer x', typo, secret.slice(0, -1), unknown, secret.replace('fsm_live_', 'fsm_test_'), 'k'.repeat(5000)]) {
      const answer = await verifier.verify({ key, clientIp: '198.51.100.1' });
      assert.equal(answer.code, VerifyCode.VERIFY_CODE_INVALID_KEY, key.slice(0, 20));
      assert.equal(answer.httpStatus, 401);
      assert.equal(answer.valid, false);
      assert.equal(answer.keyId, '');
    }
  });

  it('answers REVOKED 401 as soon as RevokeKey returns', async () => {
    const accountId = newAccountId();
    const { key, secret } = await admin.newKey(accountId);
    assert.equal((await verifier.verify({ key: secret })).code, VerifyCode.VERIFY_CODE_OK);
    await admin.revokeKey({ accountId, keyId: key?.id });
    const answer = await verifier.verify({ key: secret });
    assert.equal(answer.code, VerifyCode.VERIFY_CODE_REVOKED);
    assert.equal(answer.httpStatus, 401);
    assert.equal(answer.keyId, key?.id);
  });

  it('answers DISABLED 401 as soon as DisableKey returns, and OK again as soon as EnableKey returns', async () => {
    const accountId = newAccountId();
    const { key, secret } = await admin.newKey(accountId, { name: 'CRM', ipWhitelist: ['203.0.113.0/24'] });
    const request = { key: secret, clientIp: '203.0.113.7', requiredScopes: ['jobs:read'] };
    assert.equal((await verifier.verify(request)).code, VerifyCode.VERIFY_CODE_OK);
    await admin.disableKey({ accountId, keyId: key?.id });
    assert.deepEqual(await verifier.verify(request), {
      valid: false,
      code: VerifyCode.VERIFY_CODE_DISABLED,
      httpStatus: 401,
      keyId: key?.id,
      accountId,
      environment: Environment.ENVIRONMENT_LIVE,
      scopes: ['jobs:read'],
      missingScopes: [],
      keyName: 'CRM',
      metadata: {},
    });
    // Disabled comes before the address and scope checks.
    assert.equal((await verifier.verify({ key: secret, clientIp: '198.51.100.1', requiredScopes: ['jobs:write'] })).code, VerifyCode.VERIFY_CODE_DISABLED);
    await admin.enableKey({ accountId, keyId: key?.id });
    const answer = await verifier.verify(request);
    assert.deepEqual([answer.valid, answer.code, answer.httpStatus], [true, VerifyCode.VERIFY_CODE_OK, 200]);
    // Disabled, then revoked: REVOKED, the final state, wins.
    await admin.disableKey({ accountId, keyId: key?.id });
    await admin.revokeKey({ accountId, keyId: key?.id });
    assert.equal((await verifier.verify(request)).code, VerifyCode.VERIFY_CODE_REVOKED);
  });

  it('answers EXPIRED 401 once expires_at has passed', async () => {
    const { secret } = await admin.newKey(newAccountId(), { expiresAt: new Date(Date.now() + 1_200) });
    assert.equal((await verifier.verify({ key: secret })).code, VerifyCode.VERIFY_CODE_OK);
    await new Promise((resolve) => setTimeout(resolve, 1_300));
    const answer = await verifier.verify({ key: secret });
    assert.equal(answer.code, VerifyCode.VERIFY_CODE_EXPIRED);
    assert.equal(answer.httpStatus, 401);
  });

  it('answers IP_NOT_ALLOWED 403 outside the whitelist, or without a usable client address', async () => {
    const { secret } = await admin.newKey(newAccountId(), { ipWhitelist: ['203.0.113.0/24'] });
    assert.equal((await verifier.verify({ key: secret, clientIp: '203.0.113.9' })).code, VerifyCode.VERIFY_CODE_OK);
    for (const clientIp of ['203.0.114.9', '', 'localhost', '2001:db8::1']) {
      const answer = await verifier.verify({ key: secret, clientIp });
      assert.equal(answer.code, VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED, clientIp);
      assert.equal(answer.httpStatus, 403);
      assert.equal(answer.valid, false);
    }
  });

  it('matches IPv6 ranges, and IPv4-mapped IPv6 clients against IPv4 entries', async () => {
    const { secret } = await admin.newKey(newAccountId(), { ipWhitelist: ['2001:db8::/32', '203.0.113.7'] });
    for (const [clientIp, code] of [
      ['2001:db8:ffff::1', VerifyCode.VERIFY_CODE_OK],
      ['2001:0db8:0000:0000:0000:0000:0000:0001', VerifyCode.VERIFY_CODE_OK],
      ['2001:db9::1', VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED],
      ['::ffff:203.0.113.7', VerifyCode.VERIFY_CODE_OK],
      ['::ffff:203.0.113.8', VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED],
      ['203.0.113.7', VerifyCode.VERIFY_CODE_OK],
    ] as const) {
      assert.equal((await verifier.verify({ key: secret, clientIp })).code, code, clientIp);
    }
  });

  it('answers INSUFFICIENT_SCOPE 403 with the missing scopes', async () => {
    const { secret } = await admin.newKey(newAccountId(), { scopes: ['jobs:read', 'customers:read'] });
    const answer = await verifier.verify({ key: secret, requiredScopes: ['jobs:read', 'jobs:write', 'assets:transfer'] });
    assert.equal(answer.code, VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE);
    assert.equal(answer.httpStatus, 403);
    assert.equal(answer.valid, false);
    assert.deepEqual(answer.missingScopes, ['jobs:write', 'assets:transfer']);
    assert.deepEqual(answer.scopes, ['jobs:read', 'customers:read']);
  });

  it('follows changes of scopes and whitelist at once', async () => {
    const accountId = newAccountId();
    const { key, secret } = await admin.newKey(accountId, { scopes: ['jobs:read', 'jobs:write'] });
    const keyId = key?.id;
    assert.equal((await verifier.verify({ key: secret, requiredScopes: ['jobs:write'] })).code, VerifyCode.VERIFY_CODE_OK);
    await admin.updateScopes({ accountId, keyId, scopes: ['jobs:read'] });
    assert.equal((await verifier.verify({ key: secret, requiredScopes: ['jobs:write'] })).code, VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE);
    await admin.updateIpWhitelist({ accountId, keyId, ipWhitelist: ['10.0.0.0/8'] });
    assert.equal((await verifier.verify({ key: secret, clientIp: '192.0.2.1' })).code, VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED);
    assert.equal((await verifier.verify({ key: secret, clientIp: '10.1.2.3' })).code, VerifyCode.VERIFY_CODE_OK);
    await admin.updateIpWhitelist({ accountId, keyId, ipWhitelist: [] });
    assert.equal((await verifier.verify({ key: secret, clientIp: '192.0.2.1' })).code, VerifyCode.VERIFY_CODE_OK);
  });

  it('answers VerifyStream requests with the verdicts of Verify, by request_id, errors included', async () => {
    const accountId = newAccountId();
    const active = await admin.newKey(accountId, { scopes: ['jobs:read'] });
    const revoked = await admin.newKey(accountId);
    await admin.revokeKey({ accountId, keyId: revoked.key?.id });
    const unknown = new KeyFormat('fsm_live_', 'fsm_test_').generate('live');
    const requests = [
      { requestId: 'ok', key: active.secret, requiredScopes: ['jobs:read'] },
      { requestId: 'scope', key: active.secret, requiredScopes: ['jobs:write'] },
      { requestId: 'revoked', key: revoked.secret },
      { requestId: 'unknown', key: unknown },
      { requestId: 'malformed', key: 'fsm_live_nope' },
      { requestId: 'missing', key: '' },
      { requestId: 'bad-scope', key: active.secret, requiredScopes: ['jobs:fly'] },
    ];
    const responses = await verifier.verifyStream(requests);
    assert.deepEqual(responses.map((r) => r.requestId).sort(), requests.map((r) => r.requestId).sort());
    for (const request of requests.filter((r) => r.requestId !== 'bad-scope')) {
      const streamed = responses.find((r) => r.requestId === request.requestId)?.outcome;
      assert.equal(streamed?.$case, 'result', request.requestId);
      assert.deepEqual(streamed?.value, await verifier.verify(request), request.requestId);
    }
    const error = responses.find((r) => r.requestId === 'bad-scope')?.outcome;
    assert.deepEqual(error, { $case: 'error', value: { code: status.INVALID_ARGUMENT, message: 'required_scopes[0] "jobs:fly": unknown scope; known scopes: jobs:read, jobs:write, customers:read, customers:write, assets:read, assets:write, assets:transfer, assets:meter, assets:service, technicians:read, webhooks:manage' } });
  });

  it('answers VerifyStream requests as soon as each is ready, out of order when a lookup waits', async () => {
    // A server of its own behind a proxy that holds Postgres's answers for
    // 500 ms, so the lookup surely waits while the malformed keys are answered.
    const proxy = await FaultProxy.toTestDatabase();
    const slow = await ServerProcess.start({ DATABASE_URL: proxy.databaseUrl(), KEYWARD_DB_VERIFY_TIMEOUT_MS: '10000' });
    const slowVerifier = new VerifierClient(slow.address);
    try {
      proxy.delayResponses(500);
      const unknown = new KeyFormat('fsm_live_', 'fsm_test_').generate('live');
      const malformed = Array.from({ length: 50 }, (_, i) => ({ requestId: `malformed-${i}`, key: 'garbage' }));
      const responses = await slowVerifier.verifyStream([{ requestId: 'needs-postgres', key: unknown }, ...malformed]);
      assert.deepEqual(
        responses.map((r) => r.requestId),
        [...malformed.map((r) => r.requestId), 'needs-postgres'],
        'answers that need no lookup overtake the one that does',
      );
      const last = responses[50]?.outcome;
      assert.ok(last?.$case === 'result');
      assert.equal(last.value.code, VerifyCode.VERIFY_CODE_INVALID_KEY);
    } finally {
      slowVerifier.close();
      await slow.stop();
      await proxy.close();
    }
  });

  it('refuses an unknown required scope with INVALID_ARGUMENT naming it', async () => {
    await assertGrpcError(
      verifier.verify({ key: '', requiredScopes: ['jobs:read', 'jobs:destroy'] }),
      status.INVALID_ARGUMENT,
      /^required_scopes\[1\] "jobs:destroy": unknown scope/,
    );
  });
});

describe('Verify with a verifier token', () => {
  it('requires the token when KEYWARD_VERIFIER_TOKEN is set', async () => {
    const server = await ServerProcess.start({ KEYWARD_VERIFIER_TOKEN: 'verifier-token-0123456789' });
    const admin = new AdminClient(server.address);
    const anonymous = new VerifierClient(server.address);
    const wrong = new VerifierClient(server.address, 'wrong-token-0123456789');
    const admitted = new VerifierClient(server.address, 'verifier-token-0123456789');
    try {
      const { secret } = await admin.newKey(newAccountId());
      await assertGrpcError(anonymous.verify({ key: secret }), status.UNAUTHENTICATED, /verifier token/);
      await assertGrpcError(anonymous.verifyStream([{ requestId: '1', key: secret }]), status.UNAUTHENTICATED, /verifier token/);
      await assertGrpcError(wrong.verify({ key: secret }), status.UNAUTHENTICATED);
      assert.equal((await admitted.verify({ key: secret })).code, VerifyCode.VERIFY_CODE_OK);
      const [streamed] = await admitted.verifyStream([{ requestId: '1', key: secret }]);
      assert.equal(streamed?.outcome?.$case === 'result' && streamed.outcome.value.code, VerifyCode.VERIFY_CODE_OK);
    } finally {
      for (const client of [admin, anonymous, wrong, admitted]) client.close();
      assert.equal(await server.stop(), 0);
    }
    await assertNoLeaks();
  });
});

describe('Verify when Postgres is unreachable', () => {
  it('still refuses malformed keys (no I/O), and answers UNAVAILABLE for keys it would have to look up', async () => {
    const server = await ServerProcess.start({
      DATABASE_URL: 'postgres://postgres@127.0.0.1:1/keyward',
      KEYWARD_MIGRATE_ON_START: 'false',
      KEYWARD_DB_VERIFY_TIMEOUT_MS: '500',
      KEYWARD_DB_QUERY_TIMEOUT_MS: '500',
    });
    const admin = new AdminClient(server.address);
    const verifier = new VerifierClient(server.address);
    try {
      assert.equal((await verifier.verify({ key: 'fsm_live_garbage' })).code, VerifyCode.VERIFY_CODE_INVALID_KEY);
      assert.equal((await verifier.verify({ key: '' })).code, VerifyCode.VERIFY_CODE_MISSING_KEY);
      const wellFormed = new KeyFormat('fsm_live_', 'fsm_test_').generate('live');
      await assertGrpcError(verifier.verify({ key: wellFormed }), status.UNAVAILABLE, /unavailable/);
      await assertGrpcError(admin.listKeys({ accountId: newAccountId() }), status.UNAVAILABLE, /unavailable/);
      assert.ok(!server.log.includes(wellFormed));
      assert.equal((await verifier.verify({ key: '' })).code, VerifyCode.VERIFY_CODE_MISSING_KEY, 'the server is unharmed');
    } finally {
      admin.close();
      verifier.close();
      assert.equal(await server.stop(), 0);
    }
    await assertNoLeaks();
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createGuard, type GuardOutcome, outcomeOfResponse, parseTrustedProxies, refusalOf, resolveClientAddress, splitForwardedFor } from '../src/client/guard';
import { apiKeyOf, forwardedForOf } from '../src/client/guard/httpHeaders';
import { Environment, VerifyCode, type VerifyRequest, VerifyResponse } from '../src/gen/keyward/v1/keyward';
import { assertNoLeaks } from './helpers/leaks';

const WORDING = { realm: 'api', retryAfterSeconds: 1 };

function resolve(remote: string | undefined, xff: string | undefined, trusted: string[]): string {
  return resolveClientAddress(remote, splitForwardedFor(xff), parseTrustedProxies(trusted));
}

function refusedBody(outcome: GuardOutcome): { status: number; code: string; message: string; headers: Readonly<Record<string, string>> } {
  assert.equal(outcome.allowed, false);
  if (outcome.allowed) throw new Error('unreachable');
  return { status: outcome.status, code: outcome.body.error.code, message: outcome.body.error.message, headers: outcome.headers };
}

describe('X-Forwarded-For: the client address', () => {
  it('is the socket peer when no proxy is trusted, whatever the header says', () => {
    assert.equal(resolve('198.51.100.9', '203.0.113.7', []), '198.51.100.9');
    assert.equal(resolve('127.0.0.1', '203.0.113.7, 10.0.0.1', ['10.0.0.0/8']), '127.0.0.1');
  });

  it('is the peer when the peer is untrusted, even if the header names trusted hops', () => {
    assert.equal(resolve('198.51.100.9', '10.0.0.1', ['10.0.0.0/8']), '198.51.100.9');
  });

  it('is the rightmost hop past the trusted ones, never a hop the client wrote further left', () => {
    // The client sent "X-Forwarded-For: 1.2.3.4"; the edge proxy appended what it saw, 203.0.113.7;
    // an inner proxy appended the edge's address.
    assert.equal(resolve('10.0.0.2', '1.2.3.4, 203.0.113.7, 10.0.0.1', ['10.0.0.0/8']), '203.0.113.7');
    assert.equal(resolve('10.0.0.2', '203.0.113.7', ['10.0.0.0/8']), '203.0.113.7');
  });

  it('is the leftmost hop when every hop is trusted, and the peer when the header is absent or empty', () => {
    assert.equal(resolve('10.0.0.2', '10.9.9.9, 10.0.0.1', ['10.0.0.0/8']), '10.9.9.9');
    assert.equal(resolve('10.0.0.2', undefined, ['10.0.0.0/8']), '10.0.0.2');
    assert.equal(resolve('10.0.0.2', ' , ', ['10.0.0.0/8']), '10.0.0.2');
  });

  it('is no address when the hop it stops at is no address', () => {
    assert.equal(resolve('10.0.0.2', '203.0.113.7, unknown', ['10.0.0.0/8']), '');
    assert.equal(resolve('10.0.0.2', '010.0.0.1', ['10.0.0.0/8']), '');
    assert.equal(resolve('10.0.0.2', 'fe80::1%eth0', ['10.0.0.0/8']), '');
    assert.equal(resolve(undefined, '203.0.113.7', ['0.0.0.0/0']), '');
  });

  it('reads hops of several headers in order, and hops with ports', () => {
    assert.equal(apiKeyOf({}), '');
    assert.equal(forwardedForOf({ 'X-Forwarded-For': ['1.2.3.4', '203.0.113.7'] }), '1.2.3.4,203.0.113.7');
    assert.equal(resolve('10.0.0.2', forwardedForOf({ 'x-forwarded-for': ['1.2.3.4', '203.0.113.7'] }), ['10.0.0.0/8']), '203.0.113.7');
    assert.equal(resolve('10.0.0.2', '203.0.113.7:51234', ['10.0.0.0/8']), '203.0.113.7');
    assert.equal(resolve('10.0.0.2', '[2001:db8::7]:443', ['10.0.0.0/8']), '2001:db8::7');
  });

  it('handles IPv6 peers, hops and ranges, in canonical form', () => {
    assert.equal(resolve('2001:DB8:0:0:0:0:0:1', undefined, []), '2001:db8::1');
    assert.equal(resolve('fd00::5', '2001:db8::7, fd00::4', ['fd00::/8']), '2001:db8::7');
    assert.equal(resolve('fd00::5', '2001:db8::7', ['10.0.0.0/8']), 'fd00::5');
    assert.equal(resolve('::1', '203.0.113.7', ['::1']), '203.0.113.7');
  });

  it('reads IPv4-mapped addresses (a dual-stack socket) as the IPv4 address they mean', () => {
    assert.equal(resolve('::ffff:127.0.0.1', undefined, []), '127.0.0.1');
    assert.equal(resolve('::ffff:127.0.0.1', '203.0.113.7', ['127.0.0.1/32']), '203.0.113.7');
    assert.equal(resolve('::ffff:10.0.0.2', '::ffff:203.0.113.7', ['::ffff:10.0.0.0/104']), '203.0.113.7');
    // The deprecated IPv4-compatible form is an IPv6 address (RFC 4291), not the IPv4 it spells.
    assert.equal(resolve('::127.0.0.1', '203.0.113.7', ['127.0.0.1/32']), '::7f00:1');
  });

  it('refuses trusted-proxy entries that are not addresses or ranges, naming them', () => {
    for (const bad of ['10.0.0.0/33', 'localhost', '10.0.0/8', '::ffff:10.0.0.0/8', '2001:db8::/129', '']) {
      assert.throws(() => parseTrustedProxies([bad]), new RegExp(`^Error: trustedProxies: ${JSON.stringify(bad).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
    }
    assert.equal(parseTrustedProxies(['10.0.0.1', ' 192.168.0.0/16 ', '::1', 'fd00::/8']).ranges.length, 4);
  });
});

describe('X-API-Key', () => {
  it('is read in any case and trimmed; two values are never one key', () => {
    assert.equal(apiKeyOf({ 'x-api-key': ' fsm_live_abc ' }), 'fsm_live_abc');
    assert.equal(apiKeyOf({ 'X-API-KEY': 'fsm_live_abc' }), 'fsm_live_abc');
    assert.equal(apiKeyOf({ 'X-Api-Key': 'fsm_live_abc' }), 'fsm_live_abc');
    assert.equal(apiKeyOf({ 'x-api-key': ['a', 'b'] }), 'a, b');
    assert.equal(apiKeyOf({ 'x-api-key': undefined, authorization: 'Bearer x' }), '');
  });
});

describe('Verify codes to HTTP answers', () => {
  const identified = { keyId: 'k1', accountId: 'acct-1', environment: Environment.ENVIRONMENT_LIVE, scopes: ['jobs:read'], keyName: 'CRM' };

  it('maps every refusal to its status, error code and challenge', () => {
    const cases: Array<[VerifyCode, number, string, string]> = [
      [VerifyCode.VERIFY_CODE_MISSING_KEY, 401, 'missing_api_key', 'ApiKey realm="api"'],
      [VerifyCode.VERIFY_CODE_INVALID_KEY, 401, 'invalid_api_key', 'ApiKey realm="api", error="invalid_key"'],
      [VerifyCode.VERIFY_CODE_REVOKED, 401, 'revoked_api_key', 'ApiKey realm="api", error="invalid_key"'],
      [VerifyCode.VERIFY_CODE_EXPIRED, 401, 'expired_api_key', 'ApiKey realm="api", error="invalid_key"'],
      [VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED, 403, 'ip_not_allowed', 'ApiKey realm="api", error="ip_not_allowed"'],
      [VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE, 403, 'insufficient_scope', 'ApiKey realm="api", error="insufficient_scope"'],
    ];
    for (const [code, status, errorCode, challenge] of cases) {
      const response = VerifyResponse.fromPartial({ valid: false, code, httpStatus: status, ...identified });
      const refused = refusedBody(outcomeOfResponse(response, '203.0.113.7', WORDING));
      assert.deepEqual([refused.status, refused.code, refused.headers['WWW-Authenticate'], refused.headers['Cache-Control']], [status, errorCode, challenge, 'no-store']);
    }
  });

  it('names the missing scopes and the refused address', () => {
    const scope = VerifyResponse.fromPartial({ valid: false, code: VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE, httpStatus: 403, missingScopes: ['jobs:write', 'assets:read'] });
    const refused = refusedBody(outcomeOfResponse(scope, '203.0.113.7', WORDING));
    assert.equal(refused.message, 'The API key lacks the scopes jobs:write, assets:read.');
    assert.equal(refused.headers['WWW-Authenticate'], 'ApiKey realm="api", error="insufficient_scope", scope="jobs:write assets:read"');
    const ip = VerifyResponse.fromPartial({ valid: false, code: VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED, httpStatus: 403 });
    assert.equal(refusedBody(outcomeOfResponse(ip, '203.0.113.7', WORDING)).message, 'The API key may not be used from 203.0.113.7.');
  });

  it('maps codes by their proto name (DISABLED included), and refuses codes it does not know as invalid', () => {
    assert.equal(refusalOf(VerifyCode.VERIFY_CODE_REVOKED).code, 'revoked_api_key');
    assert.deepEqual({ ...refusalOf(VerifyCode.VERIFY_CODE_DISABLED) }, { status: 401, code: 'disabled_api_key', challenge: 'invalid_key' });
    const disabled = VerifyResponse.fromPartial({ valid: false, code: VerifyCode.VERIFY_CODE_DISABLED, httpStatus: 401, ...identified });
    const body = refusedBody(outcomeOfResponse(disabled, '', WORDING));
    assert.deepEqual([body.code, body.message], ['disabled_api_key', 'The API key is disabled.']);
    for (const unknown of [VerifyCode.VERIFY_CODE_UNSPECIFIED, VerifyCode.UNRECOGNIZED, 9, 99]) {
      assert.deepEqual({ ...refusalOf(unknown) }, { status: 401, code: 'invalid_api_key', challenge: 'invalid_key' });
    }
    const future = VerifyResponse.fromPartial({ valid: false, code: 9 as VerifyCode, httpStatus: 401, ...identified });
    assert.equal(refusedBody(outcomeOfResponse(future, '', WORDING)).code, 'invalid_api_key');
  });

  it('lets through only valid with OK, putting the key (and metadata when present) on the outcome', () => {
    const ok = VerifyResponse.fromPartial({ valid: true, code: VerifyCode.VERIFY_CODE_OK, httpStatus: 200, ...identified });
    assert.deepEqual(outcomeOfResponse(ok, '203.0.113.7', WORDING), {
      allowed: true,
      apiKey: { id: 'k1', accountId: 'acct-1', name: 'CRM', environment: 'live', scopes: ['jobs:read'], clientIp: '203.0.113.7' },
    });
    const withMetadata = { ...ok, environment: Environment.ENVIRONMENT_TEST, metadata: { team: 'crm' } } as VerifyResponse;
    const allowed = outcomeOfResponse(withMetadata, '', WORDING);
    assert.ok(allowed.allowed);
    assert.deepEqual([allowed.apiKey.environment, allowed.apiKey.metadata], ['test', { team: 'crm' }]);
    // An inconsistent answer refuses.
    assert.equal(outcomeOfResponse({ ...ok, valid: false }, '', WORDING).allowed, false);
    assert.equal(outcomeOfResponse({ ...ok, code: VerifyCode.VERIFY_CODE_UNSPECIFIED }, '', WORDING).allowed, false);
  });
});

describe('createGuard', () => {
  function verifierAnswering(answer: (request: Partial<VerifyRequest>) => Promise<VerifyResponse>): { verify: typeof answer; requests: Array<Partial<VerifyRequest>> } {
    const requests: Array<Partial<VerifyRequest>> = [];
    return {
      requests,
      verify: (request) => {
        requests.push(request);
        return answer(request);
      },
    };
  }
  const OK = VerifyResponse.fromPartial({ valid: true, code: VerifyCode.VERIFY_CODE_OK, httpStatus: 200, keyId: 'k1', accountId: 'a1', scopes: ['jobs:read'] });

  it('answers a missing key itself, without asking keyward', async () => {
    const verifier = verifierAnswering(() => Promise.reject(new Error('must not be called')));
    const refused = refusedBody(await createGuard({ verifier }).verifyHttpRequest({}, '127.0.0.1', ['jobs:read']));
    assert.deepEqual([refused.status, refused.code], [401, 'missing_api_key']);
    assert.equal(verifier.requests.length, 0);
  });

  it('sends the key, the resolved address and the scopes, and asks keyward every time (no cache)', async () => {
    const verifier = verifierAnswering(() => Promise.resolve(OK));
    const guard = createGuard({ verifier, trustedProxies: ['127.0.0.1/32'] });
    for (let i = 0; i < 3; i++) {
      const outcome = await guard.verifyHttpRequest({ 'X-Api-Key': 'fsm_live_x', 'x-forwarded-for': '1.1.1.1, 203.0.113.7' }, '::ffff:127.0.0.1', ['jobs:read']);
      assert.equal(outcome.allowed, true);
    }
    assert.deepEqual(verifier.requests, Array(3).fill({ key: 'fsm_live_x', clientIp: '203.0.113.7', requiredScopes: ['jobs:read'] }));
  });

  it('answers 503 with Retry-After when keyward fails or does not answer within the deadline', async () => {
    const unavailable = Object.assign(new Error('14 UNAVAILABLE: No connection established'), { code: 14 });
    const errors: Error[] = [];
    const failing = createGuard({ verifier: verifierAnswering(() => Promise.reject(unavailable)), onError: (error) => errors.push(error), retryAfterSeconds: 2 });
    const refused = refusedBody(await failing.verifyHttpRequest({ 'x-api-key': 'k' }, '127.0.0.1', []));
    assert.deepEqual([refused.status, refused.code, refused.headers['Retry-After'], refused.headers['Cache-Control']], [503, 'service_unavailable', '2', 'no-store']);
    assert.deepEqual(errors, [unavailable]);

    let settle: (() => void) | undefined;
    const silent = createGuard({ verifier: verifierAnswering(() => new Promise((resolve) => (settle = () => resolve(OK)))), deadlineMs: 50 });
    const started = performance.now();
    const late = refusedBody(await silent.verifyHttpRequest({ 'x-api-key': 'k' }, '127.0.0.1', []));
    assert.equal(late.status, 503);
    assert.ok(performance.now() - started < 1000, 'the deadline bounds the wait');
    settle?.();
  });

  it('answers 500 when the failure is the service configuration (a wrong verifier token, an unknown scope)', async () => {
    for (const code of [3, 16]) {
      const guard = createGuard({ verifier: verifierAnswering(() => Promise.reject(Object.assign(new Error('refused'), { code }))) });
      const refused = refusedBody(await guard.verifyHttpRequest({ 'x-api-key': 'k' }, '127.0.0.1', []));
      assert.deepEqual([refused.status, refused.code, refused.headers['Retry-After']], [500, 'internal_error', undefined]);
    }
  });

  it('refuses bad options, naming them', () => {
    const verifier = verifierAnswering(() => Promise.resolve(OK));
    assert.throws(() => createGuard({ verifier, trustedProxies: ['10.0.0.0/8', 'proxy.internal'] }), /trustedProxies: "proxy\.internal"/);
    assert.throws(() => createGuard({ verifier, deadlineMs: 0 }), /deadlineMs: 0/);
  });

  it('leaves nothing open', async () => {
    await assertNoLeaks();
  });
});

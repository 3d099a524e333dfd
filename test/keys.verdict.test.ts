import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VerifyCode } from '../src/gen/keyward/v1/keyward';
import { type KeyState, toVerifiableKey } from '../src/keys/VerifiableKey';
import { decideVerdict } from '../src/keys/verdict';

const NOW = Date.parse('2026-06-01T12:00:00Z');
const base: KeyState = {
  id: 'k',
  accountId: 'a',
  name: 'n',
  environment: 'live',
  scopes: ['jobs:read', 'technicians:read'],
  ipWhitelist: ['203.0.113.0/24'],
  expiresAt: null,
  revokedAt: null,
  disabledAt: null,
  metadata: {},
  version: 1,
};
const verdict = (state: Partial<KeyState>, ip = '203.0.113.7', scopes = ['jobs:read']) =>
  decideVerdict(toVerifiableKey({ ...base, ...state }), ip, scopes, NOW);

describe('decideVerdict', () => {
  it('accepts an active key from an allowed address with its scopes', () => {
    assert.deepEqual(verdict({}), { code: VerifyCode.VERIFY_CODE_OK, httpStatus: 200, missingScopes: [] });
    assert.equal(verdict({}, '203.0.113.7', []).code, VerifyCode.VERIFY_CODE_OK);
  });

  it('checks revoked before expired, expired before address, address before scope', () => {
    const everythingWrong = { revokedAt: NOW - 1, expiresAt: NOW - 1 };
    assert.equal(verdict(everythingWrong, '198.51.100.1', ['jobs:write']).code, VerifyCode.VERIFY_CODE_REVOKED);
    assert.equal(verdict({ expiresAt: NOW - 1 }, '198.51.100.1', ['jobs:write']).code, VerifyCode.VERIFY_CODE_EXPIRED);
    assert.equal(verdict({}, '198.51.100.1', ['jobs:write']).code, VerifyCode.VERIFY_CODE_IP_NOT_ALLOWED);
    assert.equal(verdict({}, '203.0.113.7', ['jobs:write']).code, VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE);
  });

  it('checks revoked before disabled, disabled before expired, address and scope', () => {
    assert.equal(verdict({ revokedAt: NOW - 1, disabledAt: NOW - 2 }).code, VerifyCode.VERIFY_CODE_REVOKED);
    const disabledAndMore = { disabledAt: NOW - 1, expiresAt: NOW - 1 };
    assert.deepEqual(verdict(disabledAndMore, '198.51.100.1', ['jobs:write']), { code: VerifyCode.VERIFY_CODE_DISABLED, httpStatus: 401, missingScopes: [] });
    assert.equal(verdict({ disabledAt: NOW }, '198.51.100.1').code, VerifyCode.VERIFY_CODE_DISABLED);
    assert.equal(verdict({ disabledAt: NOW }, '203.0.113.7', ['assets:write']).code, VerifyCode.VERIFY_CODE_DISABLED);
  });

  it('answers DISABLED whenever disabled_at is set, whatever its time, and nothing of it once cleared', () => {
    assert.equal(verdict({ disabledAt: NOW + 60_000 }).code, VerifyCode.VERIFY_CODE_DISABLED);
    assert.equal(verdict({ disabledAt: 0 }).httpStatus, 401);
    assert.equal(verdict({ disabledAt: null }).code, VerifyCode.VERIFY_CODE_OK);
  });

  it('answers 401 for revoked and expired, 403 for address and scope', () => {
    assert.equal(verdict({ revokedAt: NOW }).httpStatus, 401);
    assert.equal(verdict({ expiresAt: NOW }).httpStatus, 401);
    assert.equal(verdict({}, '198.51.100.1').httpStatus, 403);
    assert.equal(verdict({}, '203.0.113.7', ['assets:write']).httpStatus, 403);
  });

  it('treats expires_at as exclusive: expired at that very millisecond', () => {
    assert.equal(verdict({ expiresAt: NOW }).code, VerifyCode.VERIFY_CODE_EXPIRED);
    assert.equal(verdict({ expiresAt: NOW + 1 }).code, VerifyCode.VERIFY_CODE_OK);
  });

  it('lists every missing scope once', () => {
    const result = verdict({}, '203.0.113.7', ['jobs:read', 'jobs:write', 'assets:read', 'jobs:write']);
    assert.equal(result.code, VerifyCode.VERIFY_CODE_INSUFFICIENT_SCOPE);
    assert.deepEqual(result.missingScopes, ['jobs:write', 'assets:read']);
  });
});

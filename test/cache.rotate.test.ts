import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { VerifyCode } from '../src/gen/keyward/v1/keyward';
import { newAccountId } from './helpers/env';
import { Fleet, type Instance } from './helpers/Fleet';
import { assertNoLeaks } from './helpers/leaks';
import { waitUntil } from './helpers/waitUntil';

const OK = VerifyCode.VERIFY_CODE_OK;
const REVOKED = VerifyCode.VERIFY_CODE_REVOKED;
const EXPIRED = VerifyCode.VERIFY_CODE_EXPIRED;
const GRACE_MS = 1_500;

/**
 * RotateKey changes the old key through the same propagation as RevokeKey
 * (ChangePropagator): its revocation, or its new expiry, holds on every
 * instance before the call returns; the new key works everywhere at once.
 */
describe('RotateKey on three instances on one Postgres and Redis', () => {
  let fleet: Fleet;

  before(async () => {
    fleet = await Fleet.start(3);
  });

  after(async () => {
    assert.deepEqual(await fleet.stop(), [0, 0, 0]);
    await assertNoLeaks();
  });

  const instances = (): Instance[] => fleet.instances;
  const codes = async (secret: string): Promise<VerifyCode[]> =>
    Promise.all(instances().map(async (instance) => (await instance.verifier.verify({ key: secret, requiredScopes: ['jobs:read'] })).code));

  it('with a grace period of 0: the old key is REVOKED on every instance right after the call returns, the new one OK everywhere', async () => {
    const accountId = newAccountId();
    for (let rotator = 0; rotator < 3; rotator++) {
      const { key, secret } = await fleet.at(rotator).admin.newKey(accountId);
      // Warm: every instance answered OK from what it holds, twice.
      assert.deepEqual(await codes(secret), [OK, OK, OK]);
      assert.deepEqual(await codes(secret), [OK, OK, OK]);
      const rotated = await fleet.at(rotator).admin.rotateKey({ accountId, keyId: key?.id, gracePeriod: { seconds: 0n, nanos: 0 } });
      assert.deepEqual(await codes(secret), [REVOKED, REVOKED, REVOKED], `old key after RotateKey on ${rotator}`);
      assert.deepEqual(await codes(rotated.secret), [OK, OK, OK], `new key after RotateKey on ${rotator}`);
    }
  });

  it(`with a grace period of ${GRACE_MS} ms: the old key is OK everywhere until then and EXPIRED everywhere after, the new one OK throughout`, async () => {
    const accountId = newAccountId();
    const { key, secret } = await fleet.at(1).admin.newKey(accountId);
    assert.deepEqual(await codes(secret), [OK, OK, OK]);
    assert.deepEqual(await codes(secret), [OK, OK, OK]);
    const rotated = await fleet.at(1).admin.rotateKey({ accountId, keyId: key?.id, gracePeriod: { seconds: 1n, nanos: 500_000_000 } });
    const old = (await fleet.at(2).admin.getKey({ accountId, keyId: key?.id })).key;
    const expiresAt = old?.expiresAt?.getTime() ?? 0;
    assert.equal(old?.replacedByKeyId, rotated.key?.id);
    const answersBefore = await codes(secret);
    const answeredBy = Date.now();
    // Only meaningful if the answers came before the expiry (they take milliseconds; the grace is 1.5 s).
    assert.ok(answeredBy < expiresAt, `answered at ${answeredBy}, after the expiry ${expiresAt}`);
    assert.deepEqual(answersBefore, [OK, OK, OK], 'old key within its grace period');
    assert.deepEqual(await codes(rotated.secret), [OK, OK, OK]);
    // Nothing announces an expiry (the verdict compares expires_at with the clock): wait for the first
    // instance to answer EXPIRED, never before expires_at, then every instance must agree.
    const expiredAt = await waitUntil(
      'the old key EXPIRED on the first instance',
      async () => ((await fleet.at(0).verifier.verify({ key: secret })).code === EXPIRED ? Date.now() : undefined),
      { timeoutMs: GRACE_MS + 5_000 },
    );
    assert.ok(expiredAt >= expiresAt, `EXPIRED at ${expiredAt}, before the expiry ${expiresAt}`);
    assert.deepEqual(await codes(secret), [EXPIRED, EXPIRED, EXPIRED], 'old key after its grace period');
    assert.deepEqual(await codes(rotated.secret), [OK, OK, OK]);
  });
});

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
import { createApp } from '../src/app';
import { configureFromEnv } from '../src/config';
import { VerifyCode } from '../src/gen/keyward/v1/keyward';
import { AdminClient, VerifierClient } from './helpers/clients';
import { newAccountId } from './helpers/env';
import { assertNoLeaks } from './helpers/leaks';

describe('the embedded app in process', () => {
  it('stops cleanly: PGlite, its socket, the pool, the lock and every timer gone; stop is safe twice', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'keyward-embedded-app-'));
    try {
      const config = configureFromEnv({ KEYWARD_DATA_DIR: dataDir, KEYWARD_ADDR: '127.0.0.1:0', KEYWARD_USAGE_FLUSH_MS: '50' });
      const app = createApp(config, pino({ level: 'silent' }));
      const { port } = await app.start();
      assert.ok(existsSync(path.join(dataDir, 'keyward.lock')));
      const admin = new AdminClient(`127.0.0.1:${port}`, readFileSync(path.join(dataDir, 'admin-token'), 'utf8').trim());
      const verifier = new VerifierClient(`127.0.0.1:${port}`);
      const accountId = newAccountId();
      const { secret, key } = await admin.newKey(accountId);
      assert.equal((await verifier.verify({ key: secret })).code, VerifyCode.VERIFY_CODE_OK);
      assert.equal((await verifier.verify({ key: secret })).code, VerifyCode.VERIFY_CODE_OK);
      await admin.revokeKey({ accountId, keyId: key?.id as string });
      assert.equal((await verifier.verify({ key: secret })).code, VerifyCode.VERIFY_CODE_REVOKED);
      admin.close();
      verifier.close();
      await Promise.all([app.stop(), app.stop()]);
      await app.stop();
      assert.equal(existsSync(path.join(dataDir, 'keyward.lock')), false);
      assert.equal(existsSync(path.join(dataDir, '.s.PGSQL.5432')), false);
      await assertNoLeaks();
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

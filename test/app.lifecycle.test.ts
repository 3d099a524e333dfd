import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import pino from 'pino';
import { createApp } from '../src/app';
import { configureFromEnv } from '../src/config';
import { VerifyCode } from '../src/gen/keyward/v1/keyward';
import { AdminClient, VerifierClient } from './helpers/clients';
import { ADMIN_TOKEN, newAccountId, testDatabaseUrl, testRedisUrl } from './helpers/env';
import { assertNoLeaks } from './helpers/leaks';
import { waitForMetric } from './helpers/metrics';

describe('the app in process', () => {
  const redisModes = {
    'with Redis': testRedisUrl(),
    'with Redis unreachable': 'redis://127.0.0.1:1',
    'without Redis': undefined,
  };
  for (const [mode, redisUrl] of Object.entries(redisModes)) {
    it(`stops cleanly ${mode}: no server, socket, pool, connection or timer left behind; stop is safe twice`, async () => {
      const config = configureFromEnv({
        DATABASE_URL: testDatabaseUrl(),
        KEYWARD_ADMIN_TOKEN: ADMIN_TOKEN,
        KEYWARD_ADDR: '127.0.0.1:0',
        KEYWARD_METRICS_ADDR: '127.0.0.1:0',
        KEYWARD_USAGE_FLUSH_MS: '50',
        ...(redisUrl === undefined ? {} : { REDIS_URL: redisUrl, KEYWARD_REDIS_PREFIX: `test-${randomUUID().slice(0, 8)}:` }),
      });
      const app = createApp(config, pino({ level: 'silent' }));
      const { port, metricsPort } = await app.start();
      assert.deepEqual(await app.start(), { port, metricsPort }, 'start twice answers the same');
      if (mode === 'with Redis') await waitForMetric(metricsPort as number, (m) => m.get('keyward_cache_trusted') === 1);
      const admin = new AdminClient(`127.0.0.1:${port}`);
      const verifier = new VerifierClient(`127.0.0.1:${port}`);
      const { secret } = await admin.newKey(newAccountId());
      assert.equal((await verifier.verify({ key: secret })).code, VerifyCode.VERIFY_CODE_OK);
      assert.equal((await verifier.verify({ key: secret })).code, VerifyCode.VERIFY_CODE_OK);
      admin.close();
      verifier.close();
      await Promise.all([app.stop(), app.stop()]);
      await app.stop();
      await assertNoLeaks();
    });
  }
});

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { VerifyCode } from '../../src/gen/keyward/v1/keyward';
import { AdminClient, VerifierClient } from './clients';
import { testRedisUrl } from './env';
import { scrapeMetrics, waitForMetric } from './metrics';
import { ServerProcess } from './serverProcess';

export interface Instance {
  readonly server: ServerProcess;
  readonly admin: AdminClient;
  readonly verifier: VerifierClient;
}

/**
 * Several real keyward processes on one Postgres and one Redis, under a
 * Redis prefix of their own (so parallel test files never hear each other).
 */
export class Fleet {
  private constructor(
    readonly instances: Instance[],
    readonly redisPrefix: string,
  ) {}

  static start(size: number, env: Record<string, string> = {}): Promise<Fleet> {
    return Fleet.startEach(Array.from({ length: size }, () => env));
  }

  /** One instance per element of `envs`, each with that environment added. */
  static async startEach(envs: ReadonlyArray<Record<string, string>>): Promise<Fleet> {
    const redisPrefix = `test-${randomUUID().slice(0, 8)}:`;
    const servers = await Promise.all(
      envs.map((env) =>
        ServerProcess.start({ REDIS_URL: testRedisUrl(), KEYWARD_REDIS_PREFIX: redisPrefix, KEYWARD_METRICS_ADDR: '127.0.0.1:0', ...env }),
      ),
    );
    const fleet = new Fleet(
      servers.map((server) => ({ server, admin: new AdminClient(server.address), verifier: new VerifierClient(server.address) })),
      redisPrefix,
    );
    await fleet.waitTrusted();
    return fleet;
  }

  /** Creates a key on the first instance and verifies it twice on every instance, so that every cache holds it. */
  async warmKey(accountId: string): Promise<{ keyId: string; secret: string }> {
    const { key, secret } = await this.at(0).admin.newKey(accountId);
    for (const instance of this.instances) {
      assert.equal((await instance.verifier.verify({ key: secret })).code, VerifyCode.VERIFY_CODE_OK);
      assert.equal((await instance.verifier.verify({ key: secret })).code, VerifyCode.VERIFY_CODE_OK);
    }
    return { keyId: key?.id as string, secret };
  }

  at(i: number): Instance {
    return this.instances[i] as Instance;
  }

  /** Waits until every instance trusts its caches (subscribed, outbox read, recovered). */
  async waitTrusted(timeoutMs = 20_000): Promise<void> {
    await Promise.all(
      this.instances.map((i) => waitForMetric(i.server.metricsPort as number, (m) => m.get('keyward_cache_trusted') === 1, timeoutMs)),
    );
  }

  /** Closes the clients and stops every process; resolves with their exit codes. */
  async stop(): Promise<Array<number | null>> {
    for (const instance of this.instances) {
      instance.admin.close();
      instance.verifier.close();
    }
    return Promise.all(this.instances.map((instance) => instance.server.stop()));
  }
}

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Metadata, type ServiceError, status } from '@grpc/grpc-js';
import pg from 'pg';
import { VerifyCode, VerifyRequest, type VerifyResponse } from '../src/gen/keyward/v1/keyward';
import { AdminClient, VerifierClient } from './helpers/clients';
import { newAccountId, testDatabaseUrl } from './helpers/env';
import { FaultProxy } from './helpers/FaultProxy';
import { assertNoLeaks } from './helpers/leaks';
import { withScratchDatabase } from './helpers/scratchDatabase';
import { ServerProcess } from './helpers/serverProcess';
import { waitUntil } from './helpers/waitUntil';

/** A Verify with a client deadline: a server that does not keep its own limit shows as DEADLINE_EXCEEDED. */
function verifyWithin(verifier: VerifierClient, request: Partial<VerifyRequest>, deadlineMs: number): Promise<VerifyResponse> {
  return new Promise((resolve, reject) => {
    verifier.raw.verify(VerifyRequest.fromPartial(request), new Metadata(), { deadline: Date.now() + deadlineMs }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

async function codeOf(promise: Promise<unknown>): Promise<status | 'ok'> {
  try {
    await promise;
    return 'ok';
  } catch (error) {
    return (error as ServiceError).code;
  }
}

/** Statements of keyward's Verify pool that PostgreSQL is still running. */
async function verifyStatementsRunning(db: pg.Pool, databaseName: string): Promise<number> {
  const { rows } = await db.query<{ n: string }>(
    `select count(*) as n from pg_stat_activity
      where datname = $1 and application_name = 'keyward-verify' and state = 'active'`,
    [databaseName],
  );
  return Number(rows[0]?.n);
}

describe('Verify time limits under a slow PostgreSQL', () => {
  let db: pg.Pool;

  before(() => {
    db = new pg.Pool({ connectionString: testDatabaseUrl(), max: 3 });
  });

  after(async () => {
    await db.end();
    await assertNoLeaks();
  });

  it('has PostgreSQL cancel a Verify lookup that ran out of time, and answers every queued lookup UNAVAILABLE within the limit', async () => {
    // A database of its own: the test locks keyward.api_keys, which would stall every other test file on the run's database.
    await withScratchDatabase('keyward_deadlines', async (databaseUrl) => {
      const ownDatabase = new URL(databaseUrl).pathname.slice(1);
      // The statement limit of every other query is long: only the Verify pool's own limit can end these statements.
      const server = await ServerProcess.start({
        DATABASE_URL: databaseUrl,
        KEYWARD_DB_VERIFY_TIMEOUT_MS: '300',
        KEYWARD_DB_QUERY_TIMEOUT_MS: '60000',
        KEYWARD_DB_POOL_MAX: '4',
      });
      const admin = new AdminClient(server.address);
      const verifier = new VerifierClient(server.address);
      const locker = new pg.Client({ connectionString: databaseUrl });
      await locker.connect();
      try {
        const { secret } = await admin.newKey(newAccountId());
        assert.equal((await verifier.verify({ key: secret })).code, VerifyCode.VERIFY_CODE_OK, 'the key verifies before the lock');

        // Every lookup now waits for the lock inside PostgreSQL.
        await locker.query('begin');
        await locker.query('lock table keyward.api_keys in access exclusive mode');
        const codes = await Promise.all(Array.from({ length: 40 }, () => codeOf(verifyWithin(verifier, { key: secret }, 5_000))));
        assert.deepEqual(new Set(codes), new Set([status.UNAVAILABLE]), 'all 40 lookups (two run at once, the rest queued) answered within the limit');

        // While the lock is still held, PostgreSQL has ended every statement of the Verify pool.
        // (Without the Verify pool's statement_timeout they would wait for the lock for the 60 s statement limit.)
        await waitUntil(
          'statements that ran out of time are cancelled in PostgreSQL, not left waiting for the lock',
          async () => (await verifyStatementsRunning(db, ownDatabase)) === 0,
          { timeoutMs: 10_000 },
        );
        await locker.query('rollback');
        assert.equal((await verifier.verify({ key: secret })).code, VerifyCode.VERIFY_CODE_OK, 'Verify works again once PostgreSQL answers');
      } finally {
        await locker.query('rollback').catch(() => {});
        await locker.end();
        admin.close();
        verifier.close();
        assert.equal(await server.stop(), 0);
      }
    });
  });

  it('keeps answering admin calls while every Verify lookup waits on a PostgreSQL that answers late', async () => {
    const proxy = await FaultProxy.toTestDatabase();
    const server = await ServerProcess.start({
      DATABASE_URL: proxy.databaseUrl(),
      KEYWARD_MIGRATE_ON_START: 'false',
      KEYWARD_DB_VERIFY_TIMEOUT_MS: '300',
      KEYWARD_DB_POOL_MAX: '4',
    });
    const admin = new AdminClient(server.address);
    const verifier = new VerifierClient(server.address);
    try {
      const accountId = newAccountId();
      const { key, secret } = await admin.newKey(accountId);
      // Only the Verify pool's connections (application_name keyward-verify) get their answers 4 s late.
      proxy.delayResponses(4_000, 'keyward-verify');
      const verifies = Array.from({ length: 60 }, () => codeOf(verifyWithin(verifier, { key: secret }, 3_000)));
      const adminCalls = [
        codeOf(admin.getKey({ accountId, keyId: key?.id })),
        codeOf(admin.listKeys({ accountId })),
        codeOf(admin.newKey(accountId)),
        codeOf(admin.updateScopes({ accountId, keyId: key?.id, scopes: ['jobs:read', 'jobs:write'] })),
      ];
      assert.deepEqual(await Promise.all(adminCalls), ['ok', 'ok', 'ok', 'ok'], 'admin calls get connections of their own');
      assert.deepEqual(new Set(await Promise.all(verifies)), new Set([status.UNAVAILABLE]), 'each Verify answered UNAVAILABLE before the late answers came back');
    } finally {
      admin.close();
      verifier.close();
      assert.equal(await server.stop(), 0);
      await proxy.close();
    }
  });
});

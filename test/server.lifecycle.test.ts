import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { describe, it } from 'node:test';
import { type Client, credentials, loadPackageDefinition, type ServiceError, status } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import pg from 'pg';
import { VerifyCode } from '../src/gen/keyward/v1/keyward';
import { KeyFormat } from '../src/keys/KeyFormat';
import { AdminClient, VerifierClient, assertGrpcError } from './helpers/clients';
import { newAccountId, testDatabaseUrl } from './helpers/env';
import { FaultProxy } from './helpers/FaultProxy';
import { assertNoLeaks } from './helpers/leaks';
import { ServerProcess } from './helpers/serverProcess';

type GrpcConstructor = new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => Client;

function loadService(protoFile: string, includeDir: string, name: string): GrpcConstructor {
  const definition = loadPackageDefinition(loadSync(protoFile, { includeDirs: [includeDir], enums: String }));
  return name.split('.').reduce((node: unknown, part) => (node as Record<string, unknown>)[part], definition) as GrpcConstructor;
}

describe('server lifecycle', () => {
  // Without DATABASE_URL keyward starts embedded (test/embedded.server.test.ts).
  it('refuses to start with DATABASE_URL but no KEYWARD_ADMIN_TOKEN, or with a bad setting, naming the variable', async () => {
    for (const [missing, env] of [
      ['KEYWARD_ADMIN_TOKEN', { KEYWARD_ADMIN_TOKEN: undefined }],
      ['KEYWARD_ADDR', { KEYWARD_ADDR: 'nowhere' }],
    ] as const) {
      const server = ServerProcess.spawn(env);
      assert.equal(await server.waitForExit(), 1);
      const lines = server.logLines();
      assert.equal(lines.length, 1, server.log);
      assert.match(lines[0]?.msg ?? '', new RegExp(`^invalid configuration: ${missing}`));
    }
  });

  it('serves grpc.health.v1 and server reflection', async () => {
    const server = await ServerProcess.start();
    const Health = loadService(path.basename(healthProtoPath), path.dirname(healthProtoPath), 'grpc.health.v1.Health');
    const reflectionDir = path.join(path.dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto');
    const Reflection = loadService('grpc/reflection/v1/reflection.proto', reflectionDir, 'grpc.reflection.v1.ServerReflection');
    const health = new Health(server.address, credentials.createInsecure()) as Client & {
      check(request: { service: string }, callback: (error: ServiceError | null, response: { status: string }) => void): void;
    };
    const reflection = new Reflection(server.address, credentials.createInsecure()) as Client & {
      serverReflectionInfo(): NodeJS.ReadWriteStream & { write(message: object): boolean };
    };
    try {
      for (const service of ['', 'keyward.v1.KeyAdminService', 'keyward.v1.KeyVerifierService']) {
        const answer = await new Promise<{ status: string }>((resolve, reject) =>
          health.check({ service }, (error, response) => (error ? reject(error) : resolve(response))),
        );
        assert.equal(answer.status, 'SERVING', service);
      }
      const listed = await new Promise<string[]>((resolve, reject) => {
        const stream = reflection.serverReflectionInfo();
        stream.on('data', (message: { listServicesResponse?: { service: Array<{ name: string }> } }) => {
          resolve((message.listServicesResponse?.service ?? []).map((s) => s.name));
          stream.end();
        });
        stream.on('error', reject);
        stream.write({ listServices: '' });
      });
      assert.ok(listed.includes('keyward.v1.KeyAdminService'), listed.join());
      assert.ok(listed.includes('keyward.v1.KeyVerifierService'), listed.join());
      assert.ok(listed.includes('grpc.health.v1.Health'), listed.join());
    } finally {
      health.close();
      reflection.close();
      assert.equal(await server.stop(), 0);
    }
    const events = server.logLines().map((line) => line.event);
    assert.deepEqual(events.filter((e) => e === 'start' || e === 'stop'), ['start', 'stop']);
    await assertNoLeaks();
  });

  it('starts several instances at once on a fresh database, migrating it once', async () => {
    const database = `keyward_lifecycle_${randomUUID().replaceAll('-', '')}`;
    const adminUrl = new URL(testDatabaseUrl());
    const root = new pg.Client({ connectionString: testDatabaseUrl() });
    await root.connect();
    await root.query(`create database ${database}`);
    adminUrl.pathname = `/${database}`;
    const servers = await Promise.all([1, 2, 3].map(() => ServerProcess.start({ DATABASE_URL: adminUrl.toString() })));
    try {
      const applied = servers.flatMap((s) => s.logLines().filter((line) => line.msg === 'migration applied'));
      const fresh = new pg.Client({ connectionString: adminUrl.toString() });
      await fresh.connect();
      const { rows } = await fresh.query<{ name: string }>('select name from keyward.migrations order by id');
      await fresh.end();
      assert.ok(rows.length >= 1);
      assert.deepEqual(
        applied.map((line) => line.migration).sort(),
        rows.map((row) => row.name).sort(),
        'each migration applied by exactly one instance',
      );
      const clients = servers.map((s) => new AdminClient(s.address));
      const accountId = newAccountId();
      await clients[0]?.newKey(accountId);
      for (const client of clients) assert.equal((await client.listKeys({ accountId })).keys.length, 1);
      for (const client of clients) client.close();
    } finally {
      for (const server of servers) assert.equal(await server.stop(), 0);
      await root.query(`drop database ${database} with (force)`);
      await root.end();
    }
    await assertNoLeaks();
  });

  it('on SIGTERM stops taking calls, finishes those in flight, and exits 0', async () => {
    const proxy = await FaultProxy.toTestDatabase();
    const server = await ServerProcess.start({ DATABASE_URL: proxy.databaseUrl(), KEYWARD_DB_VERIFY_TIMEOUT_MS: '10000' });
    const verifier = new VerifierClient(server.address);
    try {
      assert.equal((await verifier.verify({ key: '' })).code, VerifyCode.VERIFY_CODE_MISSING_KEY);
      proxy.stall();
      const inFlight = verifier.verify({ key: new KeyFormat('fsm_live_', 'fsm_test_').generate('live') });
      await new Promise((resolve) => setTimeout(resolve, 200));
      server.signal('SIGTERM');
      await server.waitFor((line) => line.event === 'signal');
      const late = new VerifierClient(server.address);
      await assertGrpcError(late.verify({ key: '' }), status.UNAVAILABLE);
      late.close();
      proxy.pass();
      assert.equal((await inFlight).code, VerifyCode.VERIFY_CODE_INVALID_KEY, 'the call in flight was answered');
      assert.equal(await server.waitForExit(), 0);
      assert.ok(server.logLines().some((line) => line.event === 'stop'));
    } finally {
      verifier.close();
      await server.stop();
      await proxy.close();
    }
    await assertNoLeaks();
  });
});

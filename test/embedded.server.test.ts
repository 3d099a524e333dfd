import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { VerifyCode } from '../src/gen/keyward/v1/keyward';
import { AdminClient, VerifierClient, assertGrpcError } from './helpers/clients';
import { ADMIN_TOKEN, newAccountId } from './helpers/env';
import { metricOf } from './helpers/metrics';
import { ServerProcess } from './helpers/serverProcess';
import { waitUntil } from './helpers/waitUntil';

/** A first start runs initdb in WebAssembly: seconds alone, more with other test files running. */
const EMBEDDED_START_MS = 90_000;

const dirs: string[] = [];
function dataDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'keyward-embedded-'));
  dirs.push(dir);
  return dir;
}
const servers: ServerProcess[] = [];
after(async () => {
  await Promise.all(servers.map((server) => server.stop()));
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** The environment of an embedded keyward: no DATABASE_URL, no Redis, no admin token (unless `env` says). */
function embeddedEnv(dir: string, env: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    DATABASE_URL: undefined,
    REDIS_URL: undefined,
    KEYWARD_ADMIN_TOKEN: undefined,
    KEYWARD_DATA_DIR: dir,
    KEYWARD_METRICS_ADDR: '127.0.0.1:0',
    KEYWARD_USAGE_FLUSH_MS: '50',
    ...env,
  };
}

async function startEmbedded(dir: string, env: Record<string, string | undefined> = {}): Promise<ServerProcess> {
  const server = await ServerProcess.start(embeddedEnv(dir, env), EMBEDDED_START_MS);
  servers.push(server);
  return server;
}

function startedLine(server: ServerProcess): Record<string, unknown> {
  return server.logLines().find((line) => line.msg === 'keyward started') as Record<string, unknown>;
}

async function verifyCode(server: ServerProcess, key: string): Promise<VerifyCode> {
  const verifier = new VerifierClient(server.address);
  try {
    return (await verifier.verify({ key })).code;
  } finally {
    verifier.close();
  }
}

describe('embedded mode: no DATABASE_URL, no Redis, no admin token', () => {
  it('generates a 0600 admin token, caches in process and drops a revoked key at once, and keeps keys, revocations and uses across a restart', async (t) => {
    const dir = dataDir();
    let server = await startEmbedded(dir);
    const started = startedLine(server);
    assert.equal(started.database, 'embedded, single instance');
    assert.equal(started.dataDir, dir);
    assert.equal(started.pgdata, path.join(dir, 'pgdata'));
    t.diagnostic(`first start (initdb + migrations): ${started.ms} ms, of which PGlite ${started.embeddedStartMs} ms, migrations ${started.migrateMs} ms`);

    const tokenFile = path.join(dir, 'admin-token');
    assert.equal(statSync(tokenFile).mode & 0o777, 0o600);
    const token = readFileSync(tokenFile, 'utf8').trim();
    assert.match(token, /^[A-Za-z0-9_-]{43}$/);
    const tokenLines = server.logLines().filter((line) => line.event === 'admin-token');
    assert.equal(tokenLines.length, 1);
    assert.equal(tokenLines[0]?.file, tokenFile);
    assert.ok(tokenLines[0]?.msg.includes(token), 'the first start prints the token it generated');
    assert.equal(server.log.split(token).length, 2, 'printed once');

    let admin = new AdminClient(server.address, token);
    await assertGrpcError(new AdminClient(server.address, ADMIN_TOKEN).listKeys({ accountId: newAccountId() }), status.UNAUTHENTICATED);
    const accountId = newAccountId();
    const revoked = await admin.newKey(accountId);
    const kept = await admin.newKey(accountId);
    const revokedId = revoked.key?.id as string;
    const keptId = kept.key?.id as string;

    // Warm the in-process cache, then revoke: the next Verify must see it.
    for (let i = 0; i < 3; i++) assert.equal(await verifyCode(server, revoked.secret), VerifyCode.VERIFY_CODE_OK);
    assert.equal(await metricOf(server, 'keyward_verify_lookups_total{tier="postgres"}'), 1, 'one read of PostgreSQL');
    assert.equal(await metricOf(server, 'keyward_verify_lookups_total{tier="local"}'), 2, 'then answered in process');
    await admin.revokeKey({ accountId, keyId: revokedId });
    assert.equal(await verifyCode(server, revoked.secret), VerifyCode.VERIFY_CODE_REVOKED);
    assert.equal(await metricOf(server, 'keyward_cache_drops_total{source="self"}'), 1);
    for (let i = 0; i < 3; i++) assert.equal(await verifyCode(server, kept.secret), VerifyCode.VERIFY_CODE_OK);
    await waitUntil('the uses of the kept key written', async () => (await admin.getKey({ accountId, keyId: keptId })).key?.requestCount === 3n);
    admin.close();

    assert.equal(await server.stop(), 0);
    assert.equal(existsSync(path.join(dir, 'keyward.lock')), false, 'the lock is released at stop');

    server = await startEmbedded(dir);
    const again = server.logLines().filter((line) => line.event === 'admin-token');
    assert.equal(again.length, 1);
    assert.equal(again[0]?.msg, `no admin token configured: using the one kept in ${tokenFile}`);
    assert.equal(server.log.includes(token), false, 'later starts print where the token is, not the token');
    t.diagnostic(`restart: ${startedLine(server).ms} ms, of which PGlite ${startedLine(server).embeddedStartMs} ms`);

    admin = new AdminClient(server.address, token);
    assert.equal(await verifyCode(server, revoked.secret), VerifyCode.VERIFY_CODE_REVOKED);
    assert.equal(await verifyCode(server, kept.secret), VerifyCode.VERIFY_CODE_OK);
    await waitUntil('the uses before and after the restart', async () => (await admin.getKey({ accountId, keyId: keptId })).key?.requestCount === 4n);
    const listed = await admin.listKeys({ accountId, includeRevoked: true });
    assert.deepEqual(listed.keys.map((key) => key.id).sort(), [revokedId, keptId].sort());
    admin.close();
  });

  it('refuses a second instance on the same data directory, naming it and the holder; starts it once the first has stopped', async () => {
    const dir = dataDir();
    const first = await startEmbedded(dir, { KEYWARD_ADMIN_TOKEN: ADMIN_TOKEN });
    assert.equal(existsSync(path.join(dir, 'admin-token')), false, 'a configured token: none generated');
    const second = ServerProcess.spawn(embeddedEnv(dir, { KEYWARD_ADMIN_TOKEN: ADMIN_TOKEN }));
    assert.equal(await second.waitForExit(), 1);
    const lockFile = path.join(dir, 'keyward.lock');
    assert.ok(
      second.log.includes(`the data directory ${dir} is in use: another keyward (pid ${first.child.pid}) holds ${lockFile}`),
      `the refusal names the directory and the holder:\n${second.log}`,
    );
    assert.equal(JSON.parse(readFileSync(lockFile, 'utf8')).pid, first.child.pid, 'the refused start leaves the lock alone');

    const admin = new AdminClient(first.address);
    const { secret } = await admin.newKey(newAccountId());
    admin.close();
    assert.equal(await verifyCode(first, secret), VerifyCode.VERIFY_CODE_OK, 'the first keeps serving');
    assert.equal(await first.stop(), 0);

    const third = await startEmbedded(dir, { KEYWARD_ADMIN_TOKEN: ADMIN_TOKEN });
    assert.equal(await verifyCode(third, secret), VerifyCode.VERIFY_CODE_OK);
  });

  it('is not blocked by the lock of a dead process, and recovers its data after a SIGKILL', async () => {
    const dir = dataDir();
    const dead = spawnSync(process.execPath, ['-e', '']).pid as number;
    writeFileSync(path.join(dir, 'keyward.lock'), JSON.stringify({ pid: dead, hostname: hostname(), since: new Date().toISOString() }));
    const killed = await startEmbedded(dir, { KEYWARD_ADMIN_TOKEN: ADMIN_TOKEN });
    const admin = new AdminClient(killed.address);
    const accountId = newAccountId();
    const { secret, key } = await admin.newKey(accountId);
    const { secret: revokedSecret, key: revokedKey } = await admin.newKey(accountId);
    await admin.revokeKey({ accountId, keyId: revokedKey?.id as string });
    admin.close();
    killed.signal('SIGKILL');
    await killed.waitForExit();
    assert.equal(JSON.parse(readFileSync(path.join(dir, 'keyward.lock'), 'utf8')).pid, killed.child.pid, 'a killed process leaves its lock');

    const next = await startEmbedded(dir, { KEYWARD_ADMIN_TOKEN: ADMIN_TOKEN });
    assert.equal(await verifyCode(next, secret), VerifyCode.VERIFY_CODE_OK);
    assert.equal(await verifyCode(next, revokedSecret), VerifyCode.VERIFY_CODE_REVOKED);
    const reader = new AdminClient(next.address);
    assert.equal((await reader.getKey({ accountId, keyId: key?.id as string })).key?.name, 'test key');
    reader.close();
  });
});

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { Metadata, Server, status } from '@grpc/grpc-js';
import pino from 'pino';
import type { KeyAdmin } from '../src/admin/KeyAdmin';
import { Environment } from '../src/gen/keyward/v1/keyward';
import { createAdminService } from '../src/grpc/adminService';
import {
  type AdminAuthFailure,
  createAdminAuthFailureReporter,
  createAdminAuthenticator,
  createAdminTokenCheck,
} from '../src/grpc/auth';
import { bindServer, shutdownServer } from '../src/grpc/server';
import { AdminServiceDefinition } from '../src/grpc/serializers';
import { AdminClient, assertGrpcError } from './helpers/clients';
import { ADMIN_TOKEN, newAccountId } from './helpers/env';
import { assertNoLeaks } from './helpers/leaks';
import { scrapeMetrics } from './helpers/metrics';
import { type LogLine, ServerProcess } from './helpers/serverProcess';
import { waitUntil } from './helpers/waitUntil';

const CI = 'ci-token-0123456789abcdef';
const CONSOLE = 'console-token-0123456789abcdef';
const UNKNOWN = 'unknown-token-0123456789abcdef';
const TOKENS = [CI, CONSOLE, UNKNOWN, ADMIN_TOKEN];

const withAuthorization = (...values: string[]): Metadata => {
  const metadata = new Metadata();
  for (const value of values) metadata.add('authorization', value);
  return metadata;
};

/** A pino logger whose lines land in `lines`. */
function capturingLogger(): { logger: pino.Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line.startsWith('{')) lines.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  return { logger: pino({ level: 'info' }, stream), lines };
}

describe('admin token check', () => {
  const check = createAdminTokenCheck([
    { name: 'ci', token: CI },
    { name: 'console', token: CONSOLE },
  ]);

  it('names the actor by the token presented', () => {
    assert.deepEqual(check(withAuthorization(`Bearer ${CI}`)), { actor: { name: 'ci' } });
    assert.deepEqual(check(withAuthorization(`bearer   ${CONSOLE} `)), { actor: { name: 'console' } });
  });

  it('tells a missing, a malformed and an unknown token apart', () => {
    const cases: Array<[Metadata, AdminAuthFailure]> = [
      [new Metadata(), 'missing'],
      [withAuthorization(`Basic ${CI}`), 'malformed'],
      [withAuthorization('Bearer '), 'malformed'],
      [withAuthorization(CI), 'malformed'],
      [withAuthorization(`Bearer ${CI}`, `Bearer ${CONSOLE}`), 'malformed'],
      [withAuthorization(`Bearer ${UNKNOWN}`), 'unknown_token'],
      [withAuthorization(`Bearer ${CI}x`), 'unknown_token'],
      [withAuthorization(`Bearer ${CI.slice(0, -1)}`), 'unknown_token'],
    ];
    for (const [metadata, failure] of cases) assert.deepEqual(check(metadata), { failure }, JSON.stringify(metadata.getMap()));
  });

  it('reports each failure with its peer to the reporter, never the actor of a good call', () => {
    const reported: Array<[AdminAuthFailure, string]> = [];
    const authenticate = createAdminAuthenticator(check, (reason, peer) => reported.push([reason, peer]));
    assert.deepEqual(authenticate(withAuthorization(`Bearer ${CI}`), '10.0.0.1:5000'), { name: 'ci' });
    assert.equal(authenticate(withAuthorization(`Bearer ${UNKNOWN}`), '10.0.0.2:5000'), undefined);
    assert.equal(authenticate(new Metadata(), '10.0.0.3:5000'), undefined);
    assert.deepEqual(reported, [
      ['unknown_token', '10.0.0.2:5000'],
      ['missing', '10.0.0.3:5000'],
    ]);
  });

  it('counts every failure and logs at most one line per reason per interval, with the count it left out', () => {
    const { logger, lines } = capturingLogger();
    const counted: AdminAuthFailure[] = [];
    let now = 10_000;
    const report = createAdminAuthFailureReporter(logger, (reason) => counted.push(reason), { intervalMs: 1_000, now: () => now });
    report('unknown_token', 'a:1');
    report('unknown_token', 'a:2');
    report('missing', 'b:1');
    now += 999;
    report('unknown_token', 'a:3');
    now += 1;
    report('unknown_token', 'a:4');
    report('unknown_token', 'a:5');
    assert.deepEqual(counted, ['unknown_token', 'unknown_token', 'missing', 'unknown_token', 'unknown_token', 'unknown_token']);
    assert.deepEqual(
      lines.map(({ level, event, reason, peer, suppressed }) => ({ level, event, reason, peer, suppressed })),
      [
        { level: 40, event: 'admin-auth-failed', reason: 'unknown_token', peer: 'a:1', suppressed: 0 },
        { level: 40, event: 'admin-auth-failed', reason: 'missing', peer: 'b:1', suppressed: 0 },
        { level: 40, event: 'admin-auth-failed', reason: 'unknown_token', peer: 'a:4', suppressed: 2 },
      ],
    );
  });

  it('refuses to be built without a token', () => {
    assert.throws(() => createAdminTokenCheck([]), /at least one admin token/);
  });
});

describe('named admin tokens over the wire', () => {
  let dir: string;
  let server: ServerProcess;
  const servers: ServerProcess[] = [];
  const clients: AdminClient[] = [];

  const start = async (env: Record<string, string | undefined>): Promise<ServerProcess> => {
    const started = await ServerProcess.start({ KEYWARD_METRICS_ADDR: '127.0.0.1:0', ...env });
    servers.push(started);
    return started;
  };
  const client = (target: ServerProcess, token: string | null): AdminClient => {
    const made = new AdminClient(target.address, token);
    clients.push(made);
    return made;
  };
  const failures = async (target: ServerProcess, reason: AdminAuthFailure): Promise<number> =>
    (await scrapeMetrics(target.metricsPort as number)).get(`keyward_admin_auth_failures_total{reason="${reason}"}`) as number;
  const failureLines = (target: ServerProcess, reason: AdminAuthFailure): LogLine[] =>
    target.logLines().filter((line) => line.event === 'admin-auth-failed' && line.reason === reason);
  /** A complete admin round trip: create with one token, read and revoke with the other. */
  const roundTrip = async (creator: AdminClient, other: AdminClient): Promise<void> => {
    const accountId = newAccountId();
    const keyId = (await creator.newKey(accountId)).key?.id;
    assert.equal((await other.getKey({ accountId, keyId })).key?.id, keyId);
    assert.deepEqual((await other.listKeys({ accountId })).keys.map((k) => k.id), [keyId]);
    assert.ok((await other.revokeKey({ accountId, keyId })).key?.revokedAt instanceof Date);
  };

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'keyward-admin-tokens-'));
    server = await start({ KEYWARD_ADMIN_TOKEN: undefined, KEYWARD_ADMIN_TOKENS: `ci:${CI},console:${CONSOLE}` });
  });

  after(async () => {
    for (const made of clients) made.close();
    for (const started of servers) {
      assert.equal(await started.stop(), 0);
      for (const token of TOKENS) assert.ok(!started.log.includes(token), 'a token reached the server log');
    }
    rmSync(dir, { recursive: true, force: true });
    await assertNoLeaks();
  });

  it('accepts each named token for every admin RPC, and refuses the test default token it was not given', async () => {
    await roundTrip(client(server, CI), client(server, CONSOLE));
    await roundTrip(client(server, CONSOLE), client(server, CI));
    await assertGrpcError(client(server, ADMIN_TOKEN).listKeys({ accountId: newAccountId() }), status.UNAUTHENTICATED);
  });

  it('answers UNAUTHENTICATED to an unknown, a missing and a malformed token, counting each by reason', async () => {
    const accountId = newAccountId();
    const before = { unknown: await failures(server, 'unknown_token'), missing: await failures(server, 'missing'), malformed: await failures(server, 'malformed') };
    await assertGrpcError(client(server, UNKNOWN).createKey({ accountId, name: 'x', environment: Environment.ENVIRONMENT_LIVE, scopes: ['jobs:read'] }), status.UNAUTHENTICATED);
    assert.equal(await failures(server, 'unknown_token'), before.unknown + 1);
    await assertGrpcError(client(server, null).listKeys({ accountId }), status.UNAUTHENTICATED);
    assert.equal(await failures(server, 'missing'), before.missing + 1);
    const basic = client(server, null);
    await assertGrpcError(
      new Promise((resolve, reject) => basic.raw.listKeys({ accountId, pageSize: 0, pageToken: '', includeRevoked: false }, withAuthorization(`Basic ${CI}`), (e, r) => (e ? reject(e) : resolve(r)))),
      status.UNAUTHENTICATED,
    );
    assert.equal(await failures(server, 'malformed'), before.malformed + 1);
    assert.equal(await failures(server, 'unknown_token'), before.unknown + 1, 'counted once, under its reason only');
    const metrics = await scrapeMetrics(server.metricsPort as number);
    assert.ok((metrics.get('keyward_admin_calls_total{method="CreateKey",code="UNAUTHENTICATED"}') ?? 0) >= 1);
    assert.equal(await countKeysOf(client(server, CI), accountId), 0);
  });

  it('logs a failure as a warning with its reason and peer address, never the token', async () => {
    const line = await server.waitFor((l) => l.event === 'admin-auth-failed' && l.reason === 'unknown_token');
    assert.equal(line.level, 40);
    assert.match(String(line.peer), /127\.0\.0\.1:\d+/);
    assert.equal(line.suppressed, 0);
    await server.waitFor((l) => l.event === 'admin-auth-failed' && l.reason === 'missing');
    await server.waitFor((l) => l.event === 'admin-auth-failed' && l.reason === 'malformed');
    for (const token of TOKENS) assert.ok(!server.log.includes(token), 'a token reached the log');
  });

  it('logs at most one failure line per reason per second, and the next line says how many it left out', async () => {
    const unknown = client(server, UNKNOWN);
    const linesBefore = failureLines(server, 'unknown_token').length;
    const countedBefore = await failures(server, 'unknown_token');
    const started = Date.now();
    for (let i = 0; i < 20; i++) await assertGrpcError(unknown.getKey({ accountId: newAccountId(), keyId: '00000000-0000-4000-8000-000000000000' }), status.UNAUTHENTICATED);
    assert.equal(await failures(server, 'unknown_token'), countedBefore + 20, 'every failure is counted');
    // One more failure at a time until a line reports the failures left unlogged.
    const reporting = await waitUntil('a line with suppressed > 0', async () => {
      await assertGrpcError(unknown.listKeys({ accountId: newAccountId() }), status.UNAUTHENTICATED);
      return failureLines(server, 'unknown_token').find((line, index) => index >= linesBefore && (line.suppressed as number) > 0);
    });
    assert.ok((reporting.suppressed as number) >= 1);
    const logged = failureLines(server, 'unknown_token').length - linesBefore;
    assert.ok(logged <= Math.floor((Date.now() - started) / 1_000) + 1, `${logged} lines in ${Date.now() - started} ms`);
  });

  it('keeps KEYWARD_ADMIN_TOKEN working alone, as the token named "default"', async () => {
    const alone = await start({});
    await roundTrip(client(alone, ADMIN_TOKEN), client(alone, ADMIN_TOKEN));
    await assertGrpcError(client(alone, CI).listKeys({ accountId: newAccountId() }), status.UNAUTHENTICATED);
    assert.equal(await failures(alone, 'unknown_token'), 1);
  });

  it('retires a token: after a restart without it, it fails while the other still works (tokens from a 0600 file)', async () => {
    const file = path.join(dir, 'admin-tokens');
    writeFileSync(file, `# keyward admin tokens\nci:${CI}\nconsole:${CONSOLE}\n`, { mode: 0o600 });
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const first = await start({ KEYWARD_ADMIN_TOKEN: undefined, KEYWARD_ADMIN_TOKENS_FILE: file });
    await roundTrip(client(first, CI), client(first, CONSOLE));
    assert.equal(await first.stop(), 0);

    writeFileSync(file, `# ci retired\nconsole:${CONSOLE}\n`, { mode: 0o600 });
    const second = await start({ KEYWARD_ADMIN_TOKEN: undefined, KEYWARD_ADMIN_TOKENS_FILE: file });
    await assertGrpcError(client(second, CI).listKeys({ accountId: newAccountId() }), status.UNAUTHENTICATED);
    assert.equal(await failures(second, 'unknown_token'), 1);
    await roundTrip(client(second, CONSOLE), client(second, CONSOLE));
  });

  it("puts the actor on an admin call's error log line", async () => {
    const { logger, lines } = capturingLogger();
    const broken = { get: async () => Promise.reject(new Error('store exploded')) } as unknown as KeyAdmin;
    const authenticate = createAdminAuthenticator(
      createAdminTokenCheck([
        { name: 'ci', token: CI },
        { name: 'console', token: CONSOLE },
      ]),
      () => {},
    );
    const grpc = new Server();
    grpc.addService(AdminServiceDefinition, createAdminService(broken, authenticate, logger));
    const port = await bindServer(grpc, '127.0.0.1:0');
    const caller = new AdminClient(`127.0.0.1:${port}`, CONSOLE);
    try {
      await assertGrpcError(caller.getKey({ accountId: newAccountId(), keyId: '00000000-0000-4000-8000-000000000000' }), status.INTERNAL, /^internal error$/);
      const line = lines.find((l) => l.msg === 'internal error');
      assert.equal(line?.actor, 'console');
      assert.equal(line?.method, 'GetKey');
    } finally {
      caller.close();
      await shutdownServer(grpc, 1_000);
    }
  });
});

async function countKeysOf(admin: AdminClient, accountId: string): Promise<number> {
  return (await admin.listKeys({ accountId, includeRevoked: true })).keys.length;
}

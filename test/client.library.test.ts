import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ServiceError, credentials, status } from '@grpc/grpc-js';
import { Environment, KeyAction, KeywardClient, VerifyCode } from '../src/client';
import { VerifyStreamSession } from '../src/client/VerifyStreamSession';
import { backoffMs } from '../src/client/retryPolicy';
import { KeyVerifierServiceClient } from '../src/gen/keyward/v1/keyward';
import { packageRoot } from '../src/packageRoot';
import { assertGrpcError } from './helpers/clients';
import { ADMIN_TOKEN, newAccountId } from './helpers/env';
import { FaultProxy } from './helpers/FaultProxy';
import { assertNoLeaks } from './helpers/leaks';
import { scrapeMetrics } from './helpers/metrics';
import { ServerProcess } from './helpers/serverProcess';
import { waitUntil } from './helpers/waitUntil';

const ROOT = packageRoot();
const VERIFIER_TOKEN = 'test-verifier-token-0123456789';
/**
 * Packages of the server (and the web frameworks the guard adapts to, which
 * are the application's, not ours) that `keyward/client` must never load.
 */
const SERVER_PACKAGES = ['pg', 'pg-pool', 'ioredis', 'pino', 'prom-client', '@grpc/proto-loader', '@grpc/reflection', 'grpc-health-check', 'express', 'fastify'];

/** The packages (by name) a fresh node process has loaded after requiring `specifier` from the package root. */
function packagesLoadedBy(specifier: string): Promise<string[]> {
  const script = `
    require(${JSON.stringify(specifier)});
    const names = new Set();
    for (const file of Object.keys(require.cache)) {
      const match = /node_modules[\\\\/]((?:@[^\\\\/]+[\\\\/])?[^\\\\/]+)/.exec(file);
      if (match) names.add(match[1].replace(/\\\\/g, '/'));
    }
    process.stdout.write(JSON.stringify([...names].sort()));`;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script], { cwd: ROOT }, (error, stdout, stderr) =>
      error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(JSON.parse(stdout) as string[]),
    );
  });
}

async function rejection(promise: Promise<unknown>): Promise<ServiceError> {
  try {
    await promise;
  } catch (error) {
    return error as ServiceError;
  }
  assert.fail('expected the call to fail');
}

/** Sum of a metric's samples whose `name{labels}` starts with `prefix`. */
async function metricSum(port: number, prefix: string): Promise<number> {
  let sum = 0;
  for (const [name, value] of await scrapeMetrics(port)) if (name.startsWith(prefix)) sum += value;
  return sum;
}

describe('keyward/client', () => {
  describe('package', () => {
    it('loads none of the server dependencies, through the package name as through the file', async () => {
      for (const specifier of ['keyward/client', './dist/src/client/index.js']) {
        const loaded = await packagesLoadedBy(specifier);
        assert.ok(loaded.includes('@grpc/grpc-js'), `${specifier}: expected @grpc/grpc-js among ${loaded.join(', ')}`);
        const server = loaded.filter((name) => SERVER_PACKAGES.includes(name));
        assert.deepEqual(server, [], `${specifier} loaded server packages: ${server.join(', ')}`);
      }
    });

    it('exports the client and the message types through the package exports map', async () => {
      const script = `const c = require('keyward/client'); process.stdout.write(JSON.stringify({
        client: typeof c.KeywardClient, ok: c.VerifyCode.VERIFY_CODE_OK, live: c.Environment.ENVIRONMENT_LIVE,
        apiKey: typeof c.ApiKey.toJSON, file: require.resolve('keyward/client') }));`;
      const exported = await new Promise<Record<string, unknown>>((resolve, reject) =>
        execFile(process.execPath, ['-e', script], { cwd: ROOT }, (error, stdout) => (error ? reject(error) : resolve(JSON.parse(stdout)))),
      );
      assert.deepEqual(exported, {
        client: 'function',
        ok: VerifyCode.VERIFY_CODE_OK,
        live: Environment.ENVIRONMENT_LIVE,
        apiKey: 'function',
        file: path.join(ROOT, 'dist', 'src', 'client', 'index.js'),
      });
    });

    it("starts nothing when the package itself is required: only `npm start` (dist/src/main.js as the program) runs the server", async () => {
      const { stdout, stderr } = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) => {
        execFile(process.execPath, ['-e', "require('keyward'); process.stdout.write('loaded')"], { cwd: ROOT, env: { PATH: process.env.PATH ?? '' }, timeout: 10_000 }, (error, out, err) =>
          error ? reject(new Error(`${error.message}\n${err}`)) : resolve({ stdout: out, stderr: err }),
        );
      });
      assert.equal(stdout, 'loaded', 'no log line: no server started');
      assert.equal(stderr, '');
    });

    it('rests on generated code that imports only @bufbuild/protobuf and @grpc/grpc-js', () => {
      for (const file of ['src/gen/keyward/v1/keyward.ts', 'src/gen/google/protobuf/timestamp.ts']) {
        const source = readFileSync(path.join(ROOT, file), 'utf8');
        const imported = [...source.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"/gm)].map((match) => match[1] as string);
        const packages = imported.filter((specifier) => !specifier.startsWith('.'));
        assert.ok(packages.length > 0, `no imports found in ${file}`);
        for (const specifier of packages) assert.match(specifier, /^(@bufbuild\/protobuf|@grpc\/grpc-js)(\/|$)/, `${file} imports ${specifier}`);
      }
    });

    it('refuses options it cannot honour', () => {
      assert.throws(() => new KeywardClient({ address: '127.0.0.1:1', retries: -1 }), /retries/);
      assert.throws(() => new KeywardClient({ address: '127.0.0.1:1', deadlineMs: 0 }), /deadlineMs/);
      assert.throws(() => new KeywardClient({ address: '127.0.0.1:1', tls: { cert: Buffer.from('x') } }), /tls\.cert and tls\.key/);
    });

    it('rejects a token a header cannot carry, without echoing it', async () => {
      const broken = new KeywardClient({ address: '127.0.0.1:1', adminToken: 'token-with\nline-break' });
      try {
        const error = await rejection(broken.createKey({}));
        assert.match(error.message, /the token holds characters a gRPC header cannot carry/);
        assert.doesNotMatch(error.message, /line-break/);
      } finally {
        broken.close();
      }
    });

    it('backs off 25–50 ms before the first retry, doubling up to 1 s', () => {
      assert.equal(backoffMs(1, () => 0), 25);
      assert.equal(backoffMs(1, () => 1), 50);
      assert.equal(backoffMs(2, () => 1), 100);
      assert.equal(backoffMs(10, () => 1), 1_000);
    });
  });

  describe('against a real server', () => {
    let server: ServerProcess;
    let client: KeywardClient;

    before(async () => {
      server = await ServerProcess.start({ KEYWARD_VERIFIER_TOKEN: VERIFIER_TOKEN, KEYWARD_METRICS_ADDR: '127.0.0.1:0' });
      client = new KeywardClient({ address: server.address, adminToken: ADMIN_TOKEN, verifierToken: VERIFIER_TOKEN });
    });

    after(async () => {
      client.close();
      assert.equal(await server.stop(), 0);
      await assertNoLeaks();
    });

    it('creates, reads, lists, changes, verifies and revokes a key', async () => {
      const accountId = newAccountId();
      const created = await client.createKey({
        accountId,
        name: 'client library',
        environment: Environment.ENVIRONMENT_TEST,
        scopes: ['jobs:read'],
        ipWhitelist: ['203.0.113.7/24'],
        metadata: { integration: 'crm' },
      });
      assert.match(created.secret, /^fsm_test_[0-9A-Za-z]{49}$/);
      assert.deepEqual(created.key?.metadata, { integration: 'crm' });
      const keyId = created.key?.id as string;
      assert.deepEqual(created.key?.ipWhitelist, ['203.0.113.0/24']);

      assert.equal((await client.getKey({ accountId, keyId })).key?.name, 'client library');
      assert.deepEqual(
        (await client.listKeys({ accountId })).keys.map((key) => key.id),
        [keyId],
      );

      const verdict = await client.verify({ key: created.secret, clientIp: '203.0.113.9', requiredScopes: ['jobs:read'] });
      assert.deepEqual([verdict.valid, verdict.code, verdict.httpStatus, verdict.keyId], [true, VerifyCode.VERIFY_CODE_OK, 200, keyId]);

      assert.deepEqual((await client.updateScopes({ accountId, keyId, scopes: ['jobs:write', 'jobs:read'] })).key?.scopes, ['jobs:read', 'jobs:write']);
      assert.deepEqual((await client.updateIpWhitelist({ accountId, keyId, ipWhitelist: [] })).key?.ipWhitelist, []);
      const fromElsewhere = await client.verify({ key: created.secret, clientIp: '198.51.100.1', requiredScopes: ['jobs:write'] });
      assert.equal(fromElsewhere.code, VerifyCode.VERIFY_CODE_OK);
      assert.deepEqual(fromElsewhere.metadata, { integration: 'crm' });

      const updated = await client.updateKey({ accountId, keyId, name: 'renamed', metadata: { integration: 'erp' }, updateMask: ['name', 'metadata'] });
      assert.deepEqual([updated.key?.name, updated.key?.metadata], ['renamed', { integration: 'erp' }]);
      const afterUpdate = await client.verify({ key: created.secret });
      assert.deepEqual([afterUpdate.keyName, afterUpdate.metadata], ['renamed', { integration: 'erp' }]);
      const refused = await client.updateKey({ accountId, keyId, updateMask: ['scopes'] }).then(
        () => undefined,
        (error: ServiceError) => error,
      );
      assert.deepEqual([refused?.code, refused?.details], [status.INVALID_ARGUMENT, 'update_mask.paths[0] "scopes": unknown path; UpdateKey changes name, expires_at, metadata']);

      const disabled = await client.disableKey({ accountId, keyId });
      assert.ok(disabled.key?.disabledAt instanceof Date);
      const whileDisabled = await client.verify({ key: created.secret });
      assert.deepEqual([whileDisabled.valid, whileDisabled.code, whileDisabled.httpStatus], [false, VerifyCode.VERIFY_CODE_DISABLED, 401]);
      assert.equal((await client.enableKey({ accountId, keyId })).key?.disabledAt, undefined);
      assert.equal((await client.verify({ key: created.secret })).code, VerifyCode.VERIFY_CODE_OK);

      const rotated = await client.rotateKey({ accountId, keyId, gracePeriod: { seconds: 60n, nanos: 0 } });
      assert.equal(rotated.secret.slice(0, 9), created.secret.slice(0, 9), 'the same environment');
      assert.deepEqual([rotated.key?.name, rotated.key?.metadata, rotated.key?.rotatedFromKeyId], ['renamed', { integration: 'erp' }, keyId]);
      assert.equal((await client.getKey({ accountId, keyId })).key?.replacedByKeyId, rotated.key?.id);
      assert.equal((await client.verify({ key: rotated.secret })).code, VerifyCode.VERIFY_CODE_OK);
      assert.equal((await client.verify({ key: created.secret })).code, VerifyCode.VERIFY_CODE_OK, 'the old key within its grace period');
      const again = await client.rotateKey({ accountId, keyId }).then(
        () => undefined,
        (error: ServiceError) => error,
      );
      assert.equal(again?.code, status.FAILED_PRECONDITION);
      assert.match(again?.details ?? '', /already replaced/);
      await client.revokeKey({ accountId, keyId: rotated.key?.id });

      const revoked = await client.revokeKey({ accountId, keyId });
      assert.ok(revoked.key?.revokedAt instanceof Date);
      const afterRevoke = await client.verify({ key: created.secret });
      assert.deepEqual([afterRevoke.valid, afterRevoke.code, afterRevoke.httpStatus], [false, VerifyCode.VERIFY_CODE_REVOKED, 401]);
      assert.deepEqual((await client.listKeys({ accountId })).keys, []);
    });

    it("lists a key's and an account's audit events, newest first, paged, and retries the call when the connection drops", async () => {
      const accountId = newAccountId();
      const keyId = (await client.createKey({ accountId, name: 'audited', environment: Environment.ENVIRONMENT_LIVE, scopes: ['jobs:read'] })).key?.id as string;
      await client.updateScopes({ accountId, keyId, scopes: ['jobs:write'] });
      await client.revokeKey({ accountId, keyId });
      const first = await client.listKeyEvents({ accountId, keyId, pageSize: 2 });
      assert.deepEqual(first.events.map((event) => [event.action, event.actor, event.clientAddress]), [
        [KeyAction.KEY_ACTION_REVOKE, 'default', '127.0.0.1'],
        [KeyAction.KEY_ACTION_SCOPES, 'default', '127.0.0.1'],
      ]);
      assert.deepEqual(first.events[1]?.changes, [{ field: 'scopes', beforeJson: '["jobs:read"]', afterJson: '["jobs:write"]' }]);
      const second = await client.listKeyEvents({ accountId, pageToken: first.nextPageToken, keyId });
      assert.deepEqual([second.events.map((event) => event.action), second.nextPageToken], [[KeyAction.KEY_ACTION_CREATE], '']);
      assert.equal((await client.listKeyEvents({ accountId })).events.length, 3);
      await assertGrpcError(client.listKeyEvents({ accountId, pageToken: 'tampered' }), status.INVALID_ARGUMENT, /^page_token/);

      const metricsPort = server.metricsPort as number;
      const calls = (): Promise<number> => metricSum(metricsPort, 'keyward_admin_calls_total{method="ListKeyEvents"');
      const proxy = await FaultProxy.start('127.0.0.1', server.port);
      const flaky = new KeywardClient({ address: `127.0.0.1:${proxy.port}`, adminToken: ADMIN_TOKEN, deadlineMs: 10_000, retries: 2 });
      try {
        await flaky.getKey({ accountId, keyId });
        proxy.holdAnswersTo(keyId);
        const callsBefore = await calls();
        const listing = rejection(flaky.listKeyEvents({ accountId, keyId }));
        for (let attempt = 1; attempt <= 3; attempt++) {
          await waitUntil(`ListKeyEvents attempt ${attempt} answered by the server`, async () => (await calls()) - callsBefore >= attempt);
          proxy.cut();
        }
        assert.equal((await listing).code, status.UNAVAILABLE);
        assert.equal((await calls()) - callsBefore, 3, 'ListKeyEvents: one call and two retries');
      } finally {
        flaky.close();
        await proxy.close();
      }
    });

    it('rejects with the ServiceError: its code and the message naming the field', async () => {
      const accountId = newAccountId();
      await assertGrpcError(
        client.createKey({ accountId, name: 'x', environment: Environment.ENVIRONMENT_LIVE, scopes: ['jobs:delete'] }),
        status.INVALID_ARGUMENT,
        /^scopes\[0\] "jobs:delete": unknown scope/,
      );
      await assertGrpcError(client.getKey({ accountId, keyId: '00000000-0000-4000-8000-000000000000' }), status.NOT_FOUND);
    });

    it('sends each token only where it belongs', async () => {
      const adminOnly = new KeywardClient({ address: server.address, adminToken: ADMIN_TOKEN });
      const verifierOnly = new KeywardClient({ address: server.address, verifierToken: VERIFIER_TOKEN });
      const swapped = new KeywardClient({ address: server.address, adminToken: VERIFIER_TOKEN, verifierToken: ADMIN_TOKEN });
      try {
        await assertGrpcError(adminOnly.verify({ key: '' }), status.UNAUTHENTICATED);
        assert.equal((await verifierOnly.verify({ key: '' })).code, VerifyCode.VERIFY_CODE_MISSING_KEY);
        await assertGrpcError(verifierOnly.listKeys({ accountId: newAccountId() }), status.UNAUTHENTICATED);
        await assertGrpcError(swapped.listKeys({ accountId: newAccountId() }), status.UNAUTHENTICATED);
        await assertGrpcError(swapped.verify({ key: '' }), status.UNAUTHENTICATED);
      } finally {
        adminOnly.close();
        verifierOnly.close();
        swapped.close();
      }
    });

    it('sends Verify calls over one VerifyStream, each answered as unary Verify answers it, an error rejecting its call only', async () => {
      const accountId = newAccountId();
      const { secret } = await client.createKey({ accountId, name: 'stream', environment: Environment.ENVIRONMENT_LIVE, scopes: ['jobs:read'], ipWhitelist: ['203.0.113.0/24'] });
      const requests = [
        { key: secret, clientIp: '203.0.113.9', requiredScopes: ['jobs:read'] },
        { key: secret, clientIp: '203.0.113.9', requiredScopes: ['jobs:write'] },
        { key: secret, clientIp: '198.51.100.1' },
        { key: 'fsm_live_not-a-key' },
        { key: '' },
        { key: secret, clientIp: 'not an address' },
        { key: secret, clientIp: '1'.repeat(80) },
        { key: secret, requiredScopes: ['no:such-scope'] },
      ];
      const outcome = (call: Promise<unknown>): Promise<unknown> => call.then((answer) => answer, (error: ServiceError) => ({ code: error.code, details: error.details }));
      const unary = await Promise.all(requests.map((request) => outcome(client.verify(request))));
      for (const field of ['client_ip', 'required_scopes[0]']) {
        assert.ok(unary.some((answer) => (answer as { details?: string }).details?.startsWith(field)), `one request is refused naming ${field}`);
      }

      const channel = new KeyVerifierServiceClient(server.address, credentials.createInsecure());
      let streams = 0;
      const open = channel.verifyStream.bind(channel);
      channel.verifyStream = ((...args: Parameters<typeof open>) => {
        streams++;
        return open(...args);
      }) as typeof channel.verifyStream;
      const session = new VerifyStreamSession(channel, VERIFIER_TOKEN, 10_000, 2);
      try {
        for (let round = 0; round < 20; round++) {
          const streamed = await Promise.all(requests.map((request) => outcome(session.verify(request))));
          assert.deepEqual(streamed, unary, `round ${round}`);
        }
        assert.equal(streams, 1, 'every call went over one stream');
        assert.equal(session.inFlight, 0);
        session.close();
        assert.equal((await rejection(session.verify({ key: secret }))).code, status.CANCELLED);
      } finally {
        channel.close();
      }
      // Through the client, and refused as a whole without the verifier token (not retried).
      const viaClient = client.openVerifyStream();
      const untokened = new KeywardClient({ address: server.address }).openVerifyStream();
      try {
        assert.equal((await viaClient.verify({ key: secret, clientIp: '203.0.113.9' })).code, VerifyCode.VERIFY_CODE_OK);
        assert.equal((await rejection(untokened.verify({ key: secret }))).code, status.UNAUTHENTICATED);
      } finally {
        viaClient.close();
        untokened.close();
      }
    });

    it('retries a streamed Verify on a new stream when its stream drops, and gives up at the deadline when nothing answers', async () => {
      const metricsPort = server.metricsPort as number;
      const { secret } = await client.createKey({ accountId: newAccountId(), name: 'stream drop', environment: Environment.ENVIRONMENT_LIVE, scopes: ['jobs:read'] });
      const proxy = await FaultProxy.start('127.0.0.1', server.port);
      const flaky = new KeywardClient({ address: `127.0.0.1:${proxy.port}`, verifierToken: VERIFIER_TOKEN, deadlineMs: 10_000, retries: 2 });
      const session = flaky.openVerifyStream();
      const verifies = (): Promise<number> => metricSum(metricsPort, 'keyward_verify_total{');
      try {
        assert.equal((await session.verify({ key: secret })).code, VerifyCode.VERIFY_CODE_OK);
        // The server answers the call; the answer is held in the proxy, then its connection is cut.
        proxy.holdAnswersTo(secret);
        const before = await verifies();
        const call = session.verify({ key: secret });
        await waitUntil('the streamed Verify answered by the server', async () => (await verifies()) > before);
        proxy.cut();
        proxy.releaseAnswers();
        assert.equal((await call).code, VerifyCode.VERIFY_CODE_OK, 'answered on a new stream');
        assert.equal((await verifies()) - before, 2, 'one call and one retry');

        proxy.stall();
        const started = Date.now();
        const error = await rejection(session.verify({ key: secret }, { deadlineMs: 300 }));
        assert.ok([status.DEADLINE_EXCEEDED, status.UNAVAILABLE].includes(error.code), `${error.code} ${error.details}`);
        assert.ok(Date.now() - started < 2_000, 'settled near its deadline');
      } finally {
        session.close();
        flaky.close();
        await proxy.close();
      }
    });

    it('gives up at the deadline when the server stalls, retries included', async () => {
      const proxy = await FaultProxy.start('127.0.0.1', server.port);
      const stalled = new KeywardClient({ address: `127.0.0.1:${proxy.port}`, adminToken: ADMIN_TOKEN, verifierToken: VERIFIER_TOKEN, deadlineMs: 1_500, retries: 2 });
      try {
        // Connected first, so that what is measured is the call, not the connection.
        assert.equal((await stalled.verify({ key: '' })).code, VerifyCode.VERIFY_CODE_MISSING_KEY);
        proxy.stall();
        let started = Date.now();
        const error = await rejection(stalled.verify({ key: '' }));
        let elapsed = Date.now() - started;
        assert.equal(error.code, status.DEADLINE_EXCEEDED, error.details);
        assert.ok(elapsed >= 1_490 && elapsed < 2_900, `gave up after ${elapsed} ms, deadline 1500 ms for the call and its retries`);

        started = Date.now();
        assert.equal((await rejection(stalled.listKeys({ accountId: newAccountId() }, { deadlineMs: 150 }))).code, status.DEADLINE_EXCEEDED);
        elapsed = Date.now() - started;
        assert.ok(elapsed >= 140 && elapsed < 1_200, `gave up after ${elapsed} ms, per-call deadline 150 ms`);
        started = Date.now();
        assert.equal((await rejection(stalled.revokeKey({ accountId: newAccountId(), keyId: '00000000-0000-4000-8000-000000000000' }, { deadlineMs: 150 }))).code, status.DEADLINE_EXCEEDED);
        assert.ok(Date.now() - started < 1_200);
      } finally {
        stalled.close();
        await proxy.close();
      }
    });

    it('retries Verify when the connection drops under it, and never retries a change', async () => {
      const metricsPort = server.metricsPort as number;
      const accountId = newAccountId();
      const { key, secret } = await client.createKey({ accountId, name: 'retries', environment: Environment.ENVIRONMENT_LIVE, scopes: ['jobs:read'] });
      const keyId = key?.id as string;
      const proxy = await FaultProxy.start('127.0.0.1', server.port);
      const flaky = new KeywardClient({ address: `127.0.0.1:${proxy.port}`, adminToken: ADMIN_TOKEN, verifierToken: VERIFIER_TOKEN, deadlineMs: 10_000, retries: 2 });
      const verifies = (): Promise<number> => metricSum(metricsPort, 'keyward_verify_total{');
      const changes = (): Promise<number> => metricSum(metricsPort, 'keyward_admin_calls_total{method="UpdateScopes"');
      try {
        await flaky.getKey({ accountId, keyId });
        // Each request reaches the server and is answered there; the answer (everything after the request on
        // its connection, while a new connection's start-up flows) is held in the proxy until the connection is
        // cut under it, which the client sees as UNAVAILABLE.
        proxy.holdAnswersTo(secret);

        const verifiesBefore = await verifies();
        const verify = rejection(flaky.verify({ key: secret }));
        for (let attempt = 1; attempt <= 3; attempt++) {
          await waitUntil(`Verify attempt ${attempt} answered by the server`, async () => (await verifies()) - verifiesBefore >= attempt);
          proxy.cut();
        }
        assert.equal((await verify).code, status.UNAVAILABLE);
        assert.equal((await verifies()) - verifiesBefore, 3, 'Verify: one call and two retries');

        proxy.holdAnswersTo(keyId);
        const changesBefore = await changes();
        const change = rejection(flaky.updateScopes({ accountId, keyId, scopes: ['jobs:write'] }));
        await waitUntil('UpdateScopes answered by the server', async () => (await changes()) > changesBefore);
        proxy.cut();
        // Had the client retried, the retry's answer would be held, and the call would end at its deadline.
        const error = await change;
        assert.equal(error.code, status.UNAVAILABLE, error.details);
        assert.equal((await changes()) - changesBefore, 1, 'UpdateScopes: one call, no retry');
        assert.deepEqual((await client.getKey({ accountId, keyId })).key?.scopes, ['jobs:write'], 'the change whose answer was lost was applied');

        for (const [method, call, disabledAfter] of [
          ['DisableKey', () => flaky.disableKey({ accountId, keyId }), true],
          ['EnableKey', () => flaky.enableKey({ accountId, keyId }), false],
          ['UpdateKey', () => flaky.updateKey({ accountId, keyId, metadata: { lost: 'answer' }, updateMask: ['metadata'] }), false],
        ] as const) {
          const calls = (): Promise<number> => metricSum(metricsPort, `keyward_admin_calls_total{method="${method}"`);
          const callsBefore = await calls();
          const toggle = rejection(call());
          await waitUntil(`${method} answered by the server`, async () => (await calls()) > callsBefore);
          proxy.cut();
          const toggleError = await toggle;
          assert.equal(toggleError.code, status.UNAVAILABLE, toggleError.details);
          assert.equal((await calls()) - callsBefore, 1, `${method}: one call, no retry`);
          const { key: now } = await client.getKey({ accountId, keyId });
          assert.equal(now?.disabledAt instanceof Date, disabledAfter, `the ${method} whose answer was lost was applied`);
          if (method === 'UpdateKey') assert.deepEqual(now?.metadata, { lost: 'answer' }, 'the UpdateKey whose answer was lost was applied');
        }

        // RotateKey: its answer (naming the old key in rotated_from_key_id) is held and lost; a retry would
        // be refused (already replaced) and the first new secret lost with it, so the client never retries.
        const rotations = (): Promise<number> => metricSum(metricsPort, 'keyward_admin_calls_total{method="RotateKey"');
        const rotationsBefore = await rotations();
        const rotation = rejection(flaky.rotateKey({ accountId, keyId, gracePeriod: { seconds: 60n, nanos: 0 } }));
        await waitUntil('RotateKey answered by the server', async () => (await rotations()) > rotationsBefore);
        proxy.cut();
        assert.equal((await rotation).code, status.UNAVAILABLE);
        assert.equal((await rotations()) - rotationsBefore, 1, 'RotateKey: one call, no retry');
        assert.notEqual((await client.getKey({ accountId, keyId })).key?.replacedByKeyId, '', 'the RotateKey whose answer was lost was applied');
      } finally {
        flaky.close();
        await proxy.close();
      }
    });
  });
});

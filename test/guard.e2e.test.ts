import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { KeywardClient, type VerifyStreamSession, createFastifyPreHandler, createGuard, createNodeHttpGuard } from '../src/client';
import { packageRoot } from '../src/packageRoot';
import { AdminClient, secretsSeen } from './helpers/clients';
import { newAccountId, testRedisUrl } from './helpers/env';
import { assertNoLeaks } from './helpers/leaks';
import { ServerProcess } from './helpers/serverProcess';
import { waitUntil } from './helpers/waitUntil';

const ROOT = packageRoot();
/** The compiled example, started as `npm run example` starts it (npm test builds first). */
const EXAMPLE = path.join(ROOT, 'dist', 'examples', 'jobs-api', 'server.js');

/** A jobs-api example process of a test, with everything it printed. */
class ExampleProcess {
  readonly output: string[] = [];
  port = 0;
  private readonly exited: Promise<number | null>;

  private constructor(readonly child: ChildProcess) {
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    child.stdout?.on('data', (chunk: Buffer) => this.output.push(chunk.toString('utf8')));
    child.stderr?.on('data', (chunk: Buffer) => this.output.push(chunk.toString('utf8')));
  }

  get log(): string {
    return this.output.join('');
  }

  lines(): Array<Record<string, unknown>> {
    return this.log
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  /** Starts the example on a free port against `keywardAddress`, and waits for its "listening" line. */
  static async start(keywardAddress: string, env: Record<string, string> = {}): Promise<ExampleProcess> {
    const child = spawn(process.execPath, [EXAMPLE], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', EXAMPLE_PORT: '0', KEYWARD_ADDR: keywardAddress, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const example = new ExampleProcess(child);
    const listening = await waitUntil(`the example's "listening" line`, () => {
      if (child.exitCode !== null) throw new Error(`the example exited (${child.exitCode}):\n${example.log}`);
      return example.lines().find((line) => line.msg === 'jobs-api listening');
    });
    example.port = listening.port as number;
    return example;
  }

  async stop(): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }
}

interface HttpAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: { error?: { code: string; message: string }; [field: string]: unknown };
}

/** One HTTP request on its own connection (nothing kept alive past the test), with a JSON answer. */
function request(port: number, method: string, urlPath: string, headers: Record<string, string> = {}, body?: unknown): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      { host: '127.0.0.1', port, method, path: urlPath, agent: false, headers: { ...headers, ...(payload === undefined ? {} : { 'content-type': 'application/json' }) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          try {
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: JSON.parse(text) as HttpAnswer['body'] });
          } catch {
            reject(new Error(`${method} ${urlPath}: ${res.statusCode} with a body that is not JSON: ${text}`));
          }
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** Asserts a refusal: status, error code, the JSON body's shape, and the headers every refusal carries. */
function assertRefused(answer: HttpAnswer, status: number, code: string): void {
  assert.equal(answer.status, status, `expected ${status} ${code}, got ${answer.status} ${JSON.stringify(answer.body)}`);
  assert.equal(answer.body.error?.code, code);
  assert.equal(typeof answer.body.error?.message, 'string');
  assert.deepEqual(Object.keys(answer.body), ['error']);
  assert.match(answer.headers['content-type'] ?? '', /^application\/json/);
  assert.equal(answer.headers['cache-control'], 'no-store');
  if (status === 401 || status === 403) assert.match(answer.headers['www-authenticate'] ?? '', /^ApiKey realm="api"/);
  if (status === 503) assert.equal(answer.headers['retry-after'], '1');
}

describe('the jobs API example behind the guard, against a real keyward', () => {
  let keyward: ServerProcess;
  let admin: AdminClient;
  /** Trusts no proxy: X-Forwarded-For is ignored. */
  let direct: ExampleProcess;
  /** Trusts 127.0.0.1 as its proxy: X-Forwarded-For from it is honoured. */
  let proxied: ExampleProcess;

  before(async () => {
    keyward = await ServerProcess.start({ REDIS_URL: testRedisUrl(), KEYWARD_REDIS_PREFIX: `test-${randomUUID().slice(0, 8)}:` });
    admin = new AdminClient(keyward.address);
    [direct, proxied] = await Promise.all([ExampleProcess.start(keyward.address), ExampleProcess.start(keyward.address, { EXAMPLE_TRUSTED_PROXIES: '10.0.0.0/8, 127.0.0.1/32' })]);
  });

  after(async () => {
    admin.close();
    assert.deepEqual(await Promise.all([direct.stop(), proxied.stop()]), [0, 0]);
    assert.equal(await keyward.stop(), 0);
    for (const secret of secretsSeen) {
      assert.ok(!direct.log.includes(secret) && !proxied.log.includes(secret), 'a secret reached the example log');
      assert.ok(!keyward.log.includes(secret), 'a secret reached the keyward log');
    }
    await assertNoLeaks();
  });

  it('answers 401 missing_api_key without X-API-Key', async () => {
    const answer = await request(direct.port, 'GET', '/v1/jobs');
    assertRefused(answer, 401, 'missing_api_key');
    assert.equal(answer.headers['www-authenticate'], 'ApiKey realm="api"');
  });

  it('answers 401 invalid_api_key for garbage, whatever the header name case', async () => {
    const spellings: Array<Record<string, string>> = [{ 'X-API-Key': 'garbage' }, { 'x-api-key': 'fsm_live_nope' }, { 'X-Api-KEY': 'Bearer x' }];
    for (const headers of spellings) {
      const answer = await request(direct.port, 'GET', '/v1/jobs', headers);
      assertRefused(answer, 401, 'invalid_api_key');
      assert.equal(answer.headers['www-authenticate'], 'ApiKey realm="api", error="invalid_key"');
    }
  });

  it('lets a key with the scope through, with its account on the request, and refuses a key lacking it with 403 insufficient_scope', async () => {
    const accountId = newAccountId();
    const reader = await admin.newKey(accountId, { scopes: ['jobs:read'] });
    const writer = await admin.newKey(accountId, { scopes: ['jobs:read', 'jobs:write'] });

    const created = await request(direct.port, 'POST', '/v1/jobs', { 'X-API-Key': writer.secret }, { title: 'Replace the pump seal' });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal((created.body.job as { createdByKeyId: string }).createdByKeyId, writer.key?.id);

    const listed = await request(direct.port, 'GET', '/v1/jobs', { 'x-api-key': reader.secret });
    assert.equal(listed.status, 200);
    assert.equal(listed.body.accountId, accountId);
    assert.deepEqual(
      (listed.body.jobs as Array<{ title: string }>).map((job) => job.title),
      ['Replace the pump seal'],
    );
    // Another account sees none of it.
    const stranger = await admin.newKey(newAccountId());
    assert.deepEqual((await request(direct.port, 'GET', '/v1/jobs', { 'x-api-key': stranger.secret })).body.jobs, []);

    const refused = await request(direct.port, 'POST', '/v1/jobs', { 'X-API-Key': reader.secret }, { title: 'not allowed' });
    assertRefused(refused, 403, 'insufficient_scope');
    assert.equal(refused.body.error?.message, 'The API key lacks the scope jobs:write.');
    assert.equal(refused.headers['www-authenticate'], 'ApiKey realm="api", error="insufficient_scope", scope="jobs:write"');
  });

  it('answers 401 revoked_api_key at once after RevokeKey returns, from a warm keyward cache', async () => {
    const accountId = newAccountId();
    for (let cycle = 0; cycle < 5; cycle++) {
      const { key, secret } = await admin.newKey(accountId);
      for (let i = 0; i < 3; i++) assert.equal((await request(direct.port, 'GET', '/v1/jobs', { 'X-API-Key': secret })).status, 200);
      await admin.revokeKey({ accountId, keyId: key?.id });
      assertRefused(await request(direct.port, 'GET', '/v1/jobs', { 'X-API-Key': secret }), 401, 'revoked_api_key');
      assertRefused(await request(proxied.port, 'GET', '/v1/jobs', { 'X-API-Key': secret }), 401, 'revoked_api_key');
    }
  });

  it('answers 403 ip_not_allowed for an address outside the whitelist', async () => {
    const { secret } = await admin.newKey(newAccountId(), { ipWhitelist: ['203.0.113.0/24'] });
    const answer = await request(direct.port, 'GET', '/v1/jobs', { 'X-API-Key': secret });
    assertRefused(answer, 403, 'ip_not_allowed');
    assert.equal(answer.body.error?.message, 'The API key may not be used from 127.0.0.1.');
  });

  it('ignores X-Forwarded-For from an untrusted peer: a client cannot choose its address', async () => {
    const local = await admin.newKey(newAccountId(), { ipWhitelist: ['127.0.0.1'] });
    const remote = await admin.newKey(newAccountId(), { ipWhitelist: ['203.0.113.7'] });
    assert.equal((await request(direct.port, 'GET', '/v1/jobs', { 'X-API-Key': local.secret, 'X-Forwarded-For': '203.0.113.7' })).status, 200);
    const spoofed = await request(direct.port, 'GET', '/v1/jobs', { 'X-API-Key': remote.secret, 'X-Forwarded-For': '203.0.113.7' });
    assertRefused(spoofed, 403, 'ip_not_allowed');
  });

  it('honours X-Forwarded-For from a trusted proxy, from the right: only the hop the proxy appended counts', async () => {
    const local = await admin.newKey(newAccountId(), { ipWhitelist: ['127.0.0.1'] });
    const remote = await admin.newKey(newAccountId(), { ipWhitelist: ['203.0.113.7'] });
    assert.equal((await request(proxied.port, 'GET', '/v1/jobs', { 'X-API-Key': remote.secret, 'X-Forwarded-For': '203.0.113.7' })).status, 200);
    // Through two trusted hops (10.0.0.0/8 and the peer 127.0.0.1).
    assert.equal((await request(proxied.port, 'GET', '/v1/jobs', { 'X-API-Key': remote.secret, 'x-forwarded-for': '203.0.113.7, 10.1.2.3' })).status, 200);
    assertRefused(await request(proxied.port, 'GET', '/v1/jobs', { 'X-API-Key': local.secret, 'X-Forwarded-For': '203.0.113.7' }), 403, 'ip_not_allowed');
    // The client wrote "127.0.0.1" itself; the proxy appended the address it saw (198.51.100.1): that one is judged.
    const spoofed = await request(proxied.port, 'GET', '/v1/jobs', { 'X-API-Key': local.secret, 'X-Forwarded-For': '127.0.0.1, 198.51.100.1' });
    assertRefused(spoofed, 403, 'ip_not_allowed');
    assert.equal(spoofed.body.error?.message, 'The API key may not be used from 198.51.100.1.');
  });

  it('loads neither express nor fastify with the client library and its guard', () => {
    const loaded = execFileSync(
      process.execPath,
      ['-e', `require(${JSON.stringify(path.join(ROOT, 'dist', 'src', 'client'))}); console.log(Object.keys(require.cache).filter((p) => /node_modules[\\\\/](express|fastify)[\\\\/]/.test(p)).length)`],
      { encoding: 'utf8' },
    );
    assert.equal(loaded.trim(), '0');
  });
});

describe('the jobs API example when keyward is down', () => {
  it('answers 503 with Retry-After and a JSON body, never letting the request through', async () => {
    const keyward = await ServerProcess.start();
    const admin = new AdminClient(keyward.address);
    const example = await ExampleProcess.start(keyward.address);
    try {
      const { secret } = await admin.newKey(newAccountId());
      assert.equal((await request(example.port, 'GET', '/v1/jobs', { 'X-API-Key': secret })).status, 200);
      admin.close();
      assert.equal(await keyward.stop(), 0);
      const started = performance.now();
      const answer = await request(example.port, 'GET', '/v1/jobs', { 'X-API-Key': secret });
      assertRefused(answer, 503, 'service_unavailable');
      assert.ok(performance.now() - started < 5000, 'answered within the guard deadline (2 s), not held');
      // Without a key it is still a 401: that needs no keyward.
      assertRefused(await request(example.port, 'GET', '/v1/jobs'), 401, 'missing_api_key');
      await waitUntil('the failure in the example log', () => example.lines().some((line) => line.msg === 'keyward unavailable'));
      assert.ok(!example.log.includes(secret), 'the key reached the example log');
    } finally {
      admin.close();
      await keyward.stop();
      assert.equal(await example.stop(), 0);
    }
    await assertNoLeaks();
  });
});

describe('the jobs API example against a keyward with a verifier token', () => {
  it('sends KEYWARD_VERIFIER_TOKEN with Verify, and answers 500 (not 503, not through) without it', async () => {
    const keyward = await ServerProcess.start({ KEYWARD_VERIFIER_TOKEN: 'test-verifier-token-0123456789' });
    const admin = new AdminClient(keyward.address);
    const [withToken, withoutToken] = await Promise.all([
      ExampleProcess.start(keyward.address, { KEYWARD_VERIFIER_TOKEN: 'test-verifier-token-0123456789' }),
      ExampleProcess.start(keyward.address),
    ]);
    try {
      const { secret } = await admin.newKey(newAccountId());
      assert.equal((await request(withToken.port, 'GET', '/v1/jobs', { 'X-API-Key': secret })).status, 200);
      assertRefused(await request(withoutToken.port, 'GET', '/v1/jobs', { 'X-API-Key': secret }), 500, 'internal_error');
    } finally {
      admin.close();
      assert.deepEqual(await Promise.all([withToken.stop(), withoutToken.stop()]), [0, 0]);
      assert.equal(await keyward.stop(), 0);
    }
    await assertNoLeaks();
  });
});

describe('the Fastify and node:http adapters, in process (node:http verifying over one VerifyStream)', () => {
  let keyward: ServerProcess;
  let admin: AdminClient;
  let client: KeywardClient;
  let session: VerifyStreamSession;
  let fastify: FastifyInstance;
  let plain: http.Server;

  before(async () => {
    keyward = await ServerProcess.start();
    admin = new AdminClient(keyward.address);
    client = new KeywardClient({ address: keyward.address });
    const guard = createGuard({ verifier: client });

    const requireFastify = createFastifyPreHandler(guard);
    fastify = Fastify();
    fastify.get('/v1/jobs', { preHandler: requireFastify('jobs:read') }, async (request) => ({ via: 'fastify', apiKey: request.apiKey }));
    fastify.post('/v1/jobs', { preHandler: requireFastify('jobs:write') }, async (_request, reply) => reply.code(201).send({ via: 'fastify' }));
    await fastify.listen({ host: '127.0.0.1', port: 0 });

    // The node:http guard asks keyward over the client's stream session: the same answers, one HTTP/2 stream.
    session = client.openVerifyStream();
    const requireNode = createNodeHttpGuard(createGuard({ verifier: session }));
    plain = http.createServer((req, res) => {
      const scope = req.method === 'POST' ? 'jobs:write' : 'jobs:read';
      void requireNode(req, res, scope).then((apiKey) => {
        if (apiKey === undefined) return;
        res.writeHead(req.method === 'POST' ? 201 : 200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ via: 'node:http', apiKey }));
      });
    });
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
  });

  after(async () => {
    await fastify.close();
    await new Promise((resolve) => plain.close(resolve));
    session.close();
    client.close();
    admin.close();
    assert.equal(await keyward.stop(), 0);
    await assertNoLeaks();
  });

  const ports = (): Array<[string, number]> => [
    ['fastify', (fastify.server.address() as AddressInfo).port],
    ['node:http', (plain.address() as AddressInfo).port],
  ];

  it('lets a key with the scope through, with the verified key on the request', async () => {
    const accountId = newAccountId();
    const { key, secret } = await admin.newKey(accountId, { name: 'CRM', scopes: ['jobs:read', 'technicians:read'] });
    for (const [via, port] of ports()) {
      const answer = await request(port, 'GET', '/v1/jobs', { 'X-API-KEY': secret });
      assert.equal(answer.status, 200, `${via}: ${JSON.stringify(answer.body)}`);
      assert.deepEqual(answer.body, {
        via,
        apiKey: { id: key?.id, accountId, name: 'CRM', environment: 'live', scopes: ['jobs:read', 'technicians:read'], clientIp: '127.0.0.1' },
      });
    }
  });

  it('refuses a missing scope, a missing key and a revoked key, with the JSON body and headers', async () => {
    const accountId = newAccountId();
    const { key, secret } = await admin.newKey(accountId, { scopes: ['jobs:read'] });
    for (const [, port] of ports()) {
      assertRefused(await request(port, 'POST', '/v1/jobs', { 'x-api-key': secret }), 403, 'insufficient_scope');
      assertRefused(await request(port, 'GET', '/v1/jobs'), 401, 'missing_api_key');
    }
    await admin.revokeKey({ accountId, keyId: key?.id });
    for (const [, port] of ports()) assertRefused(await request(port, 'GET', '/v1/jobs', { 'x-api-key': secret }), 401, 'revoked_api_key');
  });
});

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import tls from 'node:tls';
import { type ChannelCredentials, credentials, status } from '@grpc/grpc-js';
import { VerifyCode } from '../src/gen/keyward/v1/keyward';
import { AdminClient, VerifierClient, assertGrpcError } from './helpers/clients';
import { ADMIN_TOKEN, newAccountId } from './helpers/env';
import { assertNoLeaks } from './helpers/leaks';
import { type LogLine, ServerProcess } from './helpers/serverProcess';
import { waitUntil } from './helpers/waitUntil';

/** A certificate and its key, as files. */
interface Issued {
  readonly cert: string;
  readonly key: string;
  readonly commonName: string;
}

/** A throwaway PKI made with openssl: CAs, and certificates they sign. */
class TestPki {
  constructor(readonly dir: string) {}

  ca(name: string): Issued {
    const commonName = `keyward test ${name}`;
    this.openssl('req', '-x509', ...this.newKey(name), '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${commonName}`);
    return this.files(name, commonName);
  }

  /** A leaf signed by `ca`: for the server (127.0.0.1 and localhost) or for a client. */
  issue(ca: Issued, name: string, use: 'server' | 'client'): Issued {
    const commonName = `keyward-${name}`;
    this.openssl('req', '-new', ...this.newKey(name), '-out', `${name}.csr`, '-subj', `/CN=${commonName}`);
    const extensions =
      use === 'server'
        ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n'
        : 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n';
    writeFileSync(path.join(this.dir, `${name}.ext`), extensions);
    this.openssl(
      'x509', '-req', '-in', `${name}.csr`, '-CA', ca.cert, '-CAkey', ca.key,
      '-set_serial', `0x${randomBytes(12).toString('hex')}`, '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.crt`,
    );
    return this.files(name, commonName);
  }

  private newKey(name: string): string[] {
    return ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`];
  }

  private files(name: string, commonName: string): Issued {
    return { cert: path.join(this.dir, `${name}.crt`), key: path.join(this.dir, `${name}.key`), commonName };
  }

  private openssl(...args: string[]): void {
    execFileSync('openssl', args, { cwd: this.dir, stdio: 'pipe' });
  }
}

/** Replaces a file the way Vault Agent and most tools do: write aside, rename over. */
function replaceFile(target: string, contents: Buffer | string): void {
  const aside = `${target}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(aside, contents);
  renameSync(aside, target);
}

function fingerprint(certFile: string): string {
  return new X509Certificate(readFileSync(certFile)).fingerprint256;
}

/**
 * Opens a fresh TLS connection (ALPN h2, as gRPC clients do), trusting `ca`,
 * and returns the certificate the server presented.
 */
function peerCertificate(port: number, ca: Buffer, client?: { cert: Buffer; key: Buffer }): Promise<tls.PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, ALPNProtocols: ['h2'], ...client });
    socket.once('secureConnect', () => {
      const certificate = socket.getPeerCertificate();
      const alpn = socket.alpnProtocol;
      socket.destroy();
      if (alpn === 'h2') resolve(certificate);
      else reject(new Error(`server negotiated ALPN ${String(alpn)}, not h2`));
    });
    socket.once('error', reject);
  });
}

const loaded =
  (trigger: string, commonName: string) =>
  (line: LogLine): boolean =>
    line.event === 'tls-loaded' && line.trigger === trigger && line.subject === `CN=${commonName}`;

const refused =
  (trigger: string, error: RegExp) =>
  (line: LogLine): boolean =>
    line.event === 'tls-reload-failed' && line.trigger === trigger && error.test(String(line.error));

/** Resolves with the matching lines once there are `count` of them. */
async function waitForCount(server: ServerProcess, match: (line: LogLine) => boolean, count: number, timeoutMs = 10_000): Promise<LogLine[]> {
  return waitUntil(
    `${count} matching log lines`,
    () => {
      const lines = server.logLines().filter(match);
      return lines.length >= count ? lines : undefined;
    },
    { timeoutMs },
  );
}

describe('TLS on the gRPC port', () => {
  let dir: string;
  let ca: Issued;
  let caPem: Buffer;
  let server1: Issued;
  let server2: Issued;
  let server3: Issued;
  let client: Issued;
  let rogueClient: Issued;
  let clientCredentials: ChannelCredentials;
  let rogueCredentials: ChannelCredentials;

  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'keyward-tls-'));
    const pki = new TestPki(dir);
    ca = pki.ca('ca');
    caPem = readFileSync(ca.cert);
    server1 = pki.issue(ca, 'server-1', 'server');
    server2 = pki.issue(ca, 'server-2', 'server');
    server3 = pki.issue(ca, 'server-3', 'server');
    client = pki.issue(ca, 'client', 'client');
    const rogueCa = pki.ca('rogue-ca');
    rogueClient = pki.issue(rogueCa, 'rogue-client', 'client');
    clientCredentials = credentials.createSsl(caPem, readFileSync(client.key), readFileSync(client.cert));
    rogueCredentials = credentials.createSsl(caPem, readFileSync(rogueClient.key), readFileSync(rogueClient.cert));
  });

  after(async () => {
    rmSync(dir, { recursive: true, force: true });
    await assertNoLeaks();
  });

  /** Copies `issued` to files of their own that a test may replace. */
  function liveFiles(name: string, issued: Issued): { cert: string; key: string } {
    const live = { cert: path.join(dir, `${name}.live.crt`), key: path.join(dir, `${name}.live.key`) };
    copyFileSync(issued.cert, live.cert);
    copyFileSync(issued.key, live.key);
    return live;
  }

  /** Asserts that the log never shows any private key of the run. */
  function assertNoKeyMaterial(server: ServerProcess): void {
    assert.doesNotMatch(server.log, /PRIVATE KEY/);
    for (const issued of [server1, server2, server3, client]) {
      const body = readFileSync(issued.key, 'utf8').split('\n').filter((line) => line !== '' && !line.startsWith('-----'));
      for (const line of body) assert.ok(!server.log.includes(line), `the log shows part of ${issued.key}`);
    }
  }

  it('serves TLS: a client trusting the CA creates and verifies keys; a plaintext client gets UNAVAILABLE', async () => {
    const live = liveFiles('tls', server1);
    const server = await ServerProcess.start({ KEYWARD_TLS_CERT_FILE: live.cert, KEYWARD_TLS_KEY_FILE: live.key });
    const tlsCredentials = credentials.createSsl(caPem);
    const admin = new AdminClient(server.address, ADMIN_TOKEN, tlsCredentials);
    const verifier = new VerifierClient(server.address, undefined, tlsCredentials);
    const plaintext = new AdminClient(server.address);
    try {
      const started = await server.waitFor((line) => line.msg === 'keyward started');
      assert.equal(started.transport, 'tls');
      const first = await server.waitFor((line) => line.event === 'tls-loaded');
      assert.equal(first.trigger, 'start');
      assert.equal(first.msg, 'TLS certificates loaded');
      assert.equal(first.certFile, live.cert);
      assert.equal(first.keyFile, live.key);
      assert.equal(first.subject, `CN=${server1.commonName}`);
      assert.equal(first.issuer, `CN=${ca.commonName}`);
      assert.equal(first.fingerprint256, fingerprint(server1.cert));
      assert.ok(Date.parse(String(first.notAfter)) > Date.now(), String(first.notAfter));

      const created = await admin.newKey(newAccountId());
      const verdict = await verifier.verify({ key: created.secret, requiredScopes: ['jobs:read'] });
      assert.equal(verdict.code, VerifyCode.VERIFY_CODE_OK);
      await assertGrpcError(plaintext.newKey(newAccountId()), status.UNAVAILABLE);
      assert.equal((await peerCertificate(server.port, caPem)).subject.CN, server1.commonName);
    } finally {
      admin.close();
      verifier.close();
      plaintext.close();
      assert.equal(await server.stop(), 0);
    }
    assertNoKeyMaterial(server);
  });

  it('with KEYWARD_TLS_CLIENT_CA_FILE, serves only callers with a client certificate that CA signed (mutual TLS)', async () => {
    const live = liveFiles('mtls', server1);
    const server = await ServerProcess.start({ KEYWARD_TLS_CERT_FILE: live.cert, KEYWARD_TLS_KEY_FILE: live.key, KEYWARD_TLS_CLIENT_CA_FILE: ca.cert });
    const anonymous = new AdminClient(server.address, ADMIN_TOKEN, credentials.createSsl(caPem));
    const rogue = new AdminClient(server.address, ADMIN_TOKEN, rogueCredentials);
    const admin = new AdminClient(server.address, ADMIN_TOKEN, clientCredentials);
    try {
      const started = await server.waitFor((line) => line.msg === 'keyward started');
      assert.equal(started.transport, 'mtls');
      const first = await server.waitFor((line) => line.event === 'tls-loaded');
      assert.equal(first.clientCaFile, ca.cert);
      assert.deepEqual(first.clientCaSubjects, [`CN=${ca.commonName}`]);

      await assertGrpcError(anonymous.newKey(newAccountId()), status.UNAVAILABLE);
      await assertGrpcError(rogue.newKey(newAccountId()), status.UNAVAILABLE);
      const created = await admin.newKey(newAccountId());
      assert.equal(created.key?.name, 'test key');
    } finally {
      anonymous.close();
      rogue.close();
      admin.close();
      assert.equal(await server.stop(), 0);
    }
  });

  it('on SIGHUP, gives new connections the replaced certificate files, and mutual TLS still holds', async () => {
    const live = liveFiles('sighup', server1);
    const clientPem = { cert: readFileSync(client.cert), key: readFileSync(client.key) };
    // A period far beyond the test: only the signal can pick the new files up.
    const server = await ServerProcess.start({
      KEYWARD_TLS_CERT_FILE: live.cert,
      KEYWARD_TLS_KEY_FILE: live.key,
      KEYWARD_TLS_CLIENT_CA_FILE: ca.cert,
      KEYWARD_TLS_RELOAD_MS: '3600000',
    });
    const early = new AdminClient(server.address, ADMIN_TOKEN, clientCredentials);
    try {
      await early.newKey(newAccountId());
      assert.equal((await peerCertificate(server.port, caPem, clientPem)).subject.CN, server1.commonName);

      replaceFile(live.key, readFileSync(server2.key));
      replaceFile(live.cert, readFileSync(server2.cert));
      server.signal('SIGHUP');
      const reloaded = await server.waitFor(loaded('signal', server2.commonName));
      assert.equal(reloaded.msg, 'TLS certificates reloaded');
      assert.equal(reloaded.fingerprint256, fingerprint(server2.cert));

      const presented = await peerCertificate(server.port, caPem, clientPem);
      assert.equal(presented.subject.CN, server2.commonName);
      assert.equal(presented.fingerprint256, fingerprint(server2.cert));
      // The connection opened before the rotation goes on; new ones are still mutual TLS.
      await early.newKey(newAccountId());
      const fresh = new AdminClient(server.address, ADMIN_TOKEN, credentials.createSsl(caPem, clientPem.key, clientPem.cert));
      const rogue = new AdminClient(server.address, ADMIN_TOKEN, rogueCredentials);
      try {
        await fresh.newKey(newAccountId());
        await assertGrpcError(rogue.newKey(newAccountId()), status.UNAVAILABLE);
      } finally {
        fresh.close();
        rogue.close();
      }

      // A SIGHUP with nothing new changes nothing, and says so.
      server.signal('SIGHUP');
      await server.waitFor((line) => line.event === 'tls-unchanged' && line.trigger === 'signal');
      assert.equal((await peerCertificate(server.port, caPem, clientPem)).subject.CN, server2.commonName);
    } finally {
      early.close();
      assert.equal(await server.stop(), 0);
    }
    assert.equal(server.logLines().filter((line) => line.event === 'tls-loaded').length, 2);
  });

  it('picks up replaced files without a signal, also through a swapped symlink as the kubelet does', async () => {
    // The kubelet's layout: tls.crt -> ..data/tls.crt, ..data -> a versioned directory, swapped by rename.
    const volume = path.join(dir, 'volume');
    const version = (name: string, issued: Issued): void => {
      mkdirSync(path.join(volume, name), { recursive: true });
      copyFileSync(issued.cert, path.join(volume, name, 'tls.crt'));
      copyFileSync(issued.key, path.join(volume, name, 'tls.key'));
    };
    version('v1', server1);
    symlinkSync('v1', path.join(volume, '..data'));
    symlinkSync('..data/tls.crt', path.join(volume, 'tls.crt'));
    symlinkSync('..data/tls.key', path.join(volume, 'tls.key'));
    const server = await ServerProcess.start({
      KEYWARD_TLS_CERT_FILE: path.join(volume, 'tls.crt'),
      KEYWARD_TLS_KEY_FILE: path.join(volume, 'tls.key'),
      KEYWARD_TLS_RELOAD_MS: '200',
    });
    try {
      assert.equal((await peerCertificate(server.port, caPem)).subject.CN, server1.commonName);
      version('v2', server3);
      symlinkSync('v2', path.join(volume, '..data_tmp'));
      renameSync(path.join(volume, '..data_tmp'), path.join(volume, '..data'));
      await server.waitFor(loaded('poll', server3.commonName), 10_000);
      assert.equal((await peerCertificate(server.port, caPem)).subject.CN, server3.commonName);
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });

  it('keeps serving the previous certificates when the replacement is unusable, with a warning, until good files come', async () => {
    const live = liveFiles('broken', server1);
    const server = await ServerProcess.start({
      KEYWARD_TLS_CERT_FILE: live.cert,
      KEYWARD_TLS_KEY_FILE: live.key,
      KEYWARD_TLS_RELOAD_MS: '200',
      KEYWARD_LOG_LEVEL: 'debug',
    });
    const admin = new AdminClient(server.address, ADMIN_TOKEN, credentials.createSsl(caPem));
    const stillServing = async (): Promise<void> => {
      const presented = await peerCertificate(server.port, caPem);
      assert.equal(presented.fingerprint256, fingerprint(server1.cert));
      await admin.newKey(newAccountId());
    };
    try {
      // A key that is not the certificate's: seen by the periodic read, and by SIGHUP.
      replaceFile(live.key, readFileSync(client.key));
      const mismatch = /does not hold the private key of the certificate/;
      const warned = await server.waitFor(refused('poll', mismatch), 10_000);
      assert.equal(warned.level, 40);
      assert.equal(warned.msg, 'TLS certificates not reloaded: still serving the previous ones');
      assert.equal(warned.keyFile, live.key);
      await stillServing();
      // The next periodic reads find the same broken files: they say so at debug level only.
      const periodic = await waitForCount(server, refused('poll', mismatch), 3);
      assert.deepEqual(periodic.map((line) => line.level).slice(0, 3), [40, 20, 20]);
      server.signal('SIGHUP');
      await server.waitFor(refused('signal', mismatch));
      await stillServing();

      // A certificate file that is not PEM.
      replaceFile(live.key, readFileSync(server1.key));
      replaceFile(live.cert, 'not a certificate\n');
      server.signal('SIGHUP');
      await server.waitFor(refused('signal', new RegExp(`^${live.cert}: no PEM certificate in it`)));
      await stillServing();

      // A key file that is gone.
      replaceFile(live.cert, readFileSync(server1.cert));
      unlinkSync(live.key);
      server.signal('SIGHUP');
      await server.waitFor(refused('signal', new RegExp(`^${live.key}: cannot be read \\(ENOENT\\)`)));
      await stillServing();

      // Good files again: picked up by the next read.
      replaceFile(live.key, readFileSync(server2.key));
      replaceFile(live.cert, readFileSync(server2.cert));
      await server.waitFor(loaded('poll', server2.commonName), 10_000);
      assert.equal((await peerCertificate(server.port, caPem)).subject.CN, server2.commonName);
    } finally {
      admin.close();
      assert.equal(await server.stop(), 0);
    }
    assertNoKeyMaterial(server);
  });

  it('fails the start when the files cannot be served, naming the file', async () => {
    const missing = path.join(dir, 'missing.crt');
    const encrypted = path.join(dir, 'encrypted.key');
    execFileSync('openssl', ['ec', '-in', server1.key, '-aes256', '-passout', 'pass:secret', '-out', encrypted], { stdio: 'pipe' });
    for (const [env, message] of [
      [{ KEYWARD_TLS_CERT_FILE: missing, KEYWARD_TLS_KEY_FILE: server1.key }, `${missing}: cannot be read (ENOENT)`],
      [{ KEYWARD_TLS_CERT_FILE: server1.cert, KEYWARD_TLS_KEY_FILE: server2.key }, `${server2.key} does not hold the private key of the certificate in ${server1.cert}`],
      [{ KEYWARD_TLS_CERT_FILE: server1.cert, KEYWARD_TLS_KEY_FILE: encrypted }, `${encrypted}: the private key is encrypted`],
      [{ KEYWARD_TLS_CERT_FILE: server1.cert, KEYWARD_TLS_KEY_FILE: server1.key, KEYWARD_TLS_CLIENT_CA_FILE: server1.key }, `${server1.key}: no PEM certificate in it`],
    ] as const) {
      const server = ServerProcess.spawn(env);
      assert.equal(await server.waitForExit(), 1, server.log);
      const failed = server.logLines().find((line) => line.msg === 'start failed');
      assert.ok(failed !== undefined, server.log);
      assert.ok(String((failed.err as { message?: string } | undefined)?.message).startsWith(message), server.log);
      assertNoKeyMaterial(server);
    }
  });

  it('without TLS, SIGHUP leaves the plaintext server running', async () => {
    const server = await ServerProcess.start();
    const admin = new AdminClient(server.address);
    try {
      assert.equal((await server.waitFor((line) => line.msg === 'keyward started')).transport, 'plaintext');
      server.signal('SIGHUP');
      await server.waitFor((line) => line.event === 'tls-unchanged');
      await admin.newKey(newAccountId());
    } finally {
      admin.close();
      assert.equal(await server.stop(), 0);
    }
  });
});

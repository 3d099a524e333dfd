import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import { type ServerCredentials, experimental } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { TlsConfig } from '../config';

/** What asked for a (re)load: the start, SIGHUP, or the periodic read of the files. */
export type TlsTrigger = 'start' | 'signal' | 'poll';

/** The TLS of a running server: its credentials, and the files read again on demand and on a timer. */
export interface ServerTls {
  /** Pass to `bindAsync`: new connections get whatever certificates were loaded last. */
  readonly credentials: ServerCredentials;
  /**
   * Reads the files again and, if they changed and are usable, serves them to
   * new connections. Unusable files keep the current certificates (warning
   * logged). Never rejects; resolves with whether new certificates are served.
   */
  reload(trigger: TlsTrigger): Promise<boolean>;
  /** Stops the periodic reads. */
  stop(): void;
}

/** The contents of the three files, as read. */
interface Pem {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer | undefined;
}

/** What the log says about loaded certificates: never anything of the key. */
interface CertificateSummary {
  readonly subject: string;
  readonly issuer: string;
  readonly serial: string;
  readonly notBefore: string;
  readonly notAfter: string;
  readonly fingerprint256: string;
  readonly clientCaSubjects: string[] | undefined;
}

/** Files that cannot be served; the message names the file and never holds key material. */
export class TlsFileError extends Error {
  override readonly name = 'TlsFileError';
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

/**
 * Loads the certificate files (throwing TlsFileError when they cannot be
 * served, so that the start fails) and keeps them fresh: `reload` on SIGHUP,
 * and a read every `reloadMs` that reloads when the contents changed.
 *
 * The server side is grpc-js's own: `createCertificateProviderServerCredentials`
 * (the credentials xDS uses) calls `setSecureContext` on the listening
 * HTTP/2 server whenever a provider reports new certificates, so new
 * connections get them without a rebind and open connections go on. The
 * provider is ours rather than grpc-js's FileWatcherCertificateProvider,
 * which reports a missing file as "no certificate" and does not check what it
 * read: either makes grpc-js drop every new connection until the files are
 * good again. This one reports only files that passed the checks TLS itself
 * makes (key matches certificate, PEM parses), so a bad rotation keeps the
 * previous certificates serving.
 *
 * Polling compares contents, not inodes or mtimes: cert-manager, Vault Agent
 * and the kubelet replace files by renaming or by swapping a symlink, which
 * watchers of the old inode never see.
 */
export async function startTls(config: TlsConfig, logger: Logger): Promise<ServerTls> {
  const files = { certFile: config.certFile, keyFile: config.keyFile, clientCaFile: config.clientCaFile };
  let current = await readUsable(config);
  logLoaded(logger, files, current, 'start');

  const identityListeners = new Set<experimental.IdentityCertificateUpdateListener>();
  const caListeners = new Set<experimental.CaCertificateUpdateListener>();
  const identity = (): experimental.IdentityCertificateUpdate => ({ certificate: current.pem.cert, privateKey: current.pem.key });
  const provider: experimental.CertificateProvider = {
    // Deliver on the next tick, as grpc-js's own providers do: the credentials
    // register the server's watcher only after adding their listener here.
    addIdentityCertificateListener(listener) {
      identityListeners.add(listener);
      process.nextTick(() => {
        if (identityListeners.has(listener)) listener(identity());
      });
    },
    removeIdentityCertificateListener: (listener) => identityListeners.delete(listener),
    addCaCertificateListener(listener) {
      caListeners.add(listener);
      process.nextTick(() => {
        if (caListeners.has(listener) && current.pem.ca !== undefined) listener({ caCertificate: current.pem.ca });
      });
    },
    removeCaCertificateListener: (listener) => caListeners.delete(listener),
  };
  const mutual = config.clientCaFile !== undefined;
  // The exported function names its first two parameters the wrong way round;
  // by position they are (identity, CA), which is how grpc-js-xds calls it.
  const credentials = experimental.createCertificateProviderServerCredentials(provider, mutual ? provider : null, mutual);

  /** The failure last warned about, so that periodic reads warn once about a broken file, not every period. */
  let lastWarned: string | undefined;
  const load = async (trigger: TlsTrigger): Promise<boolean> => {
    let next: Loaded;
    try {
      next = await readUsable(config);
    } catch (error) {
      const message = error instanceof TlsFileError ? error.message : String(error);
      const repeated = trigger === 'poll' && message === lastWarned;
      const fields = { event: 'tls-reload-failed', trigger, ...files, error: message };
      if (repeated) logger.debug(fields, 'TLS certificates still not reloaded');
      else logger.warn(fields, 'TLS certificates not reloaded: still serving the previous ones');
      lastWarned = message;
      return false;
    }
    lastWarned = undefined;
    const identityChanged = !next.pem.cert.equals(current.pem.cert) || !next.pem.key.equals(current.pem.key);
    const caChanged = !sameBuffer(next.pem.ca, current.pem.ca);
    if (!identityChanged && !caChanged) {
      if (trigger === 'signal') logger.info({ event: 'tls-unchanged', trigger, ...files }, 'TLS certificates unchanged');
      return false;
    }
    current = next;
    if (identityChanged) for (const listener of identityListeners) listener(identity());
    if (caChanged && next.pem.ca !== undefined) for (const listener of caListeners) listener({ caCertificate: next.pem.ca });
    logLoaded(logger, files, current, trigger);
    return true;
  };

  // One read at a time: a SIGHUP during a periodic read waits for it, then reads again.
  let queue: Promise<unknown> = Promise.resolve();
  const reload = (trigger: TlsTrigger): Promise<boolean> => {
    const result = queue
      .then(() => load(trigger))
      .catch((error: unknown) => {
        // Not a file problem (those are handled in load): a bug, logged, and the next reload still runs.
        logger.error({ event: 'tls-reload-failed', trigger, err: error }, 'TLS certificates not reloaded');
        return false;
      });
    queue = result;
    return result;
  };
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const schedule = (): void => {
    if (stopped) return;
    timer = setTimeout(() => void reload('poll').then(schedule), config.reloadMs);
    timer.unref();
  };
  schedule();

  return {
    credentials,
    reload,
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

interface Loaded {
  readonly pem: Pem;
  readonly summary: CertificateSummary;
}

/**
 * Reads and checks the files. A failed check is tried once more at once: a
 * rotation renames the certificate and the key one after the other, and a read
 * between the two sees a certificate with the other's key.
 */
async function readUsable(config: TlsConfig): Promise<Loaded> {
  try {
    return checkPem(config, await readPem(config));
  } catch {
    return checkPem(config, await readPem(config));
  }
}

async function readPem(config: TlsConfig): Promise<Pem> {
  const read = (file: string): Promise<Buffer> =>
    readFile(file).catch((error: NodeJS.ErrnoException) => {
      throw new TlsFileError(`${file}: cannot be read (${error.code ?? error.message})`);
    });
  const [cert, key, ca] = await Promise.all([read(config.certFile), read(config.keyFile), config.clientCaFile === undefined ? undefined : read(config.clientCaFile)]);
  return { cert, key, ca };
}

/** Checks what TLS will check when the files are served, so that what passes here cannot fail in grpc-js. */
function checkPem(files: Pick<TlsConfig, 'certFile' | 'keyFile' | 'clientCaFile'>, pem: Pem): Loaded {
  const chain = parseCertificates(files.certFile, pem.cert, 'certificate chain');
  const leaf = chain[0] as X509Certificate;
  if (/^-----BEGIN ENCRYPTED PRIVATE KEY-----|^Proc-Type: 4,ENCRYPTED/m.test(pem.key.toString('latin1'))) {
    throw new TlsFileError(`${files.keyFile}: the private key is encrypted; keyward takes no passphrase, give it an unencrypted key`);
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(pem.key);
  } catch (error) {
    // OpenSSL's reason (e.g. "unsupported", "bad decrypt"), never the bytes it read.
    throw new TlsFileError(`${files.keyFile}: not a usable PEM private key (${(error as NodeJS.ErrnoException).code ?? 'unreadable'})`);
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new TlsFileError(`${files.keyFile} does not hold the private key of the certificate in ${files.certFile} (${leaf.subject.replaceAll('\n', ', ')})`);
  }
  const caCertificates = pem.ca === undefined ? undefined : parseCertificates(files.clientCaFile as string, pem.ca, 'CA bundle');
  try {
    createSecureContext({ cert: pem.cert, key: pem.key, ca: pem.ca });
  } catch (error) {
    throw new TlsFileError(`${files.certFile}, ${files.keyFile}: refused by TLS (${(error as NodeJS.ErrnoException).code ?? 'unknown reason'})`);
  }
  return {
    pem,
    summary: {
      subject: leaf.subject.replaceAll('\n', ', '),
      issuer: leaf.issuer.replaceAll('\n', ', '),
      serial: leaf.serialNumber,
      notBefore: new Date(leaf.validFrom).toISOString(),
      notAfter: new Date(leaf.validTo).toISOString(),
      fingerprint256: leaf.fingerprint256,
      clientCaSubjects: caCertificates?.map((ca) => ca.subject.replaceAll('\n', ', ')),
    },
  };
}

function parseCertificates(file: string, pem: Buffer, what: string): X509Certificate[] {
  const blocks = pem.toString('latin1').match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new TlsFileError(`${file}: no PEM certificate in it (expected a ${what})`);
  return blocks.map((block, index) => {
    try {
      return new X509Certificate(block);
    } catch {
      throw new TlsFileError(`${file}: certificate ${index + 1} of the ${what} does not parse`);
    }
  });
}

function logLoaded(logger: Logger, files: Omit<TlsConfig, 'reloadMs'>, loaded: Loaded, trigger: TlsTrigger): void {
  const fields = { event: 'tls-loaded', trigger, ...files, ...loaded.summary };
  logger.info(fields, trigger === 'start' ? 'TLS certificates loaded' : 'TLS certificates reloaded');
  if (Date.parse(loaded.summary.notAfter) <= Date.now()) {
    logger.warn({ event: 'tls-expired', ...files, notAfter: loaded.summary.notAfter }, 'the TLS certificate has expired');
  }
}

function sameBuffer(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.equals(b);
}

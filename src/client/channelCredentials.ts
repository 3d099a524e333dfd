import { type ChannelCredentials, credentials } from '@grpc/grpc-js';

/** TLS settings of a KeywardClient: PEM contents, not file names. */
export interface KeywardTlsOptions {
  /** CA bundle that signed the server's certificate; absent: the system's roots. */
  ca?: Buffer;
  /** Client certificate chain for mutual TLS; needs `key`. */
  cert?: Buffer;
  /** Private key of `cert`. */
  key?: Buffer;
}

/** Plaintext for `false` or absent, else TLS (mutual with cert and key). */
export function createChannelCredentials(tls: false | KeywardTlsOptions | undefined): ChannelCredentials {
  if (tls === undefined || tls === false) return credentials.createInsecure();
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    throw new TypeError('KeywardClient: tls.cert and tls.key must be given together (mutual TLS) or not at all');
  }
  return credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null);
}

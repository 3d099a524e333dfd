import { readFileSync } from 'node:fs';
import { KeywardClient } from '../client/KeywardClient';
import type { KeywardTlsOptions } from '../client/channelCredentials';
import { usageError } from './CliError';

/** The options every command takes (defined on the root command). */
export interface ConnectionOptions {
  addr?: string;
  token?: string;
  tokenFile?: string;
  tls?: boolean;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  deadlineMs?: string;
}

/** Where the CLI connects without --addr and KEYWARD_ADDR. */
export const DEFAULT_CLI_ADDRESS = '127.0.0.1:50051';
/** A person waits longer than a REST request: a revoke may wait out the fleet's lease. */
export const DEFAULT_CLI_DEADLINE_MS = 10_000;

/** Which token a command sends: admin calls need one; Verify one only when the server has one. */
export type TokenRole = 'admin' | 'verifier';

const TOKEN_VARIABLE: Record<TokenRole, string> = { admin: 'KEYWARD_ADMIN_TOKEN', verifier: 'KEYWARD_VERIFIER_TOKEN' };

/**
 * The address to connect to: --addr, else KEYWARD_ADDR (the variable the
 * server listens on, so that the CLI run next to a server finds it: a
 * wildcard host becomes the loopback one), else 127.0.0.1:50051.
 */
export function resolveAddress(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  const address = flag ?? env.KEYWARD_ADDR ?? DEFAULT_CLI_ADDRESS;
  if (address.startsWith('0.0.0.0:')) return `127.0.0.1:${address.slice('0.0.0.0:'.length)}`;
  if (address.startsWith('[::]:')) return `[::1]:${address.slice('[::]:'.length)}`;
  return address;
}

function readFlagFile(flag: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    throw usageError(`cannot read ${flag} ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

/** The token: --token, else --token-file (surrounding white space dropped), else the role's variable. */
export function resolveToken(options: ConnectionOptions, role: TokenRole, env: NodeJS.ProcessEnv): string | undefined {
  if (options.token !== undefined && options.tokenFile !== undefined) throw usageError('give --token or --token-file, not both');
  const token = options.token ?? (options.tokenFile === undefined ? env[TOKEN_VARIABLE[role]] : readFlagFile('--token-file', options.tokenFile).toString('utf8').trim());
  if (token === undefined || token === '') {
    if (role === 'admin') throw usageError(`no admin token: pass --token-file FILE, set ${TOKEN_VARIABLE.admin}, or pass --token`);
    return undefined;
  }
  return token;
}

/** TLS from the --tls* flags: any of them turns TLS on; --tls alone trusts the system's CAs. */
export function resolveTls(options: ConnectionOptions): false | KeywardTlsOptions {
  if (options.tls !== true && options.tlsCa === undefined && options.tlsCert === undefined && options.tlsKey === undefined) return false;
  if ((options.tlsCert === undefined) !== (options.tlsKey === undefined)) throw usageError('give --tls-cert and --tls-key together (mutual TLS)');
  return {
    ...(options.tlsCa === undefined ? {} : { ca: readFlagFile('--tls-ca', options.tlsCa) }),
    ...(options.tlsCert === undefined ? {} : { cert: readFlagFile('--tls-cert', options.tlsCert) }),
    ...(options.tlsKey === undefined ? {} : { key: readFlagFile('--tls-key', options.tlsKey) }),
  };
}

function resolveDeadline(value: string | undefined): number {
  if (value === undefined) return DEFAULT_CLI_DEADLINE_MS;
  const deadlineMs = Number(value);
  if (!/^\d+$/.test(value) || deadlineMs <= 0) throw usageError(`--deadline-ms ${JSON.stringify(value)}: not a positive whole number of milliseconds`);
  return deadlineMs;
}

/** A client for one command, from its options and the environment. */
export function connect(options: ConnectionOptions, role: TokenRole, env: NodeJS.ProcessEnv = process.env): KeywardClient {
  const token = resolveToken(options, role, env);
  return new KeywardClient({
    address: resolveAddress(options.addr, env),
    tls: resolveTls(options),
    deadlineMs: resolveDeadline(options.deadlineMs),
    ...(role === 'admin' ? { adminToken: token } : { verifierToken: token }),
  });
}

/** Runs `use` with a client, and closes the client whatever happens. */
export async function withClient<T>(options: ConnectionOptions, role: TokenRole, use: (client: KeywardClient) => Promise<T>): Promise<T> {
  const client = connect(options, role);
  try {
    return await use(client);
  } finally {
    client.close();
  }
}

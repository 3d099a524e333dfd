import { readFileSync } from 'node:fs';
import { checkDurations } from './cache/durations';
import { DEFAULT_SCOPES } from './keys/scopes';

/** Thrown when the environment does not describe a runnable keyward; names the variable. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/** Everything keyward reads from its environment, validated. */
export interface Config {
  /** Unset: the embedded PostgreSQL (PGlite) keeping its data in `dataDir`, one instance only (README, "Embedded mode"). */
  readonly databaseUrl: string | undefined;
  /** Where the embedded PostgreSQL keeps its data, its lock and the generated admin token; only used when `databaseUrl` is unset. */
  readonly dataDir: string;
  /** Unset (and no `redisClusterNodes`): no Redis tier (see README, "Caching"). */
  readonly redisUrl: string | undefined;
  /** Seed nodes of a Redis Cluster, `host:port` each, instead of `redisUrl` (README, "Redis Cluster"). */
  readonly redisClusterNodes: readonly string[] | undefined;
  readonly redisPrefix: string;
  /** gRPC listen address, host:port (port 0 picks a free one). */
  readonly addr: string;
  /** Prometheus listen address, host:port; unset disables the endpoint. */
  readonly metricsAddr: string | undefined;
  /**
   * Every accepted admin token, each with the name that becomes the actor of
   * its calls; at least one, except in embedded mode where none configured
   * means keyward generates one in the data directory at start.
   */
  readonly adminTokens: readonly AdminToken[];
  /** When set, Verify requires `authorization: Bearer <token>` too. */
  readonly verifierToken: string | undefined;
  readonly livePrefix: string;
  readonly testPrefix: string;
  /** The scope catalog, in the order it was configured. */
  readonly scopes: readonly string[];
  readonly logLevel: LogLevel;
  readonly migrateOnStart: boolean;
  /** How long a stop waits for calls in flight before cancelling them. */
  readonly shutdownTimeoutMs: number;
  /** V8's old-generation growing factor, as (1 + percent/100); 0 leaves V8's own (up to 4×). */
  readonly heapGrowingPercent: number;
  readonly cache: {
    /** The in-process tier; only used with Redis, or embedded (see README, "Caching and revocation", "Embedded mode"). */
    readonly localEnabled: boolean;
    readonly maxEntries: number;
    readonly maxBytes: number;
    /** Safety TTL of an in-process entry. */
    readonly ttlMs: number;
    /** How long "no such key" is remembered, in process and in Redis. */
    readonly negativeTtlMs: number;
    readonly redisTtlMs: number;
    /** Time limit of each Redis command. */
    readonly redisTimeoutMs: number;
    /** How long a proof that the subscription is live lets an instance trust its caches. */
    readonly leaseMs: number;
    /** How long an admin change waits for every instance to confirm it dropped its copy. */
    readonly ackTimeoutMs: number;
  };
  readonly usage: {
    /** Count uses per key (request_count, last_used_at, last_used_ip). */
    readonly enabled: boolean;
    readonly flushIntervalMs: number;
    readonly batchMaxKeys: number;
    readonly maxPendingKeys: number;
  };
  /** Unset: plaintext gRPC (README, "Operations → Transport"). */
  readonly tls: TlsConfig | undefined;
  readonly db: {
    readonly poolMax: number;
    /** Time limit of a Postgres query on the Verify path. */
    readonly verifyTimeoutMs: number;
    /** Time limit of any other Postgres query, and of taking a connection. */
    readonly queryTimeoutMs: number;
  };
}

/** An admin token and its name: the actor of the admin calls made with it. */
export interface AdminToken {
  /** Matches ADMIN_TOKEN_NAME_PATTERN; `default` for KEYWARD_ADMIN_TOKEN. */
  readonly name: string;
  readonly token: string;
}

/** TLS of the gRPC port, from PEM files that are re-read while running. */
export interface TlsConfig {
  /** PEM certificate chain, leaf first. */
  readonly certFile: string;
  /** PEM private key of the leaf certificate. */
  readonly keyFile: string;
  /** PEM CA bundle; when set, callers must present a client certificate it signed (mutual TLS). */
  readonly clientCaFile: string | undefined;
  /** How often the files are read to pick up a replacement (SIGHUP reads them at once). */
  readonly reloadMs: number;
}

export const DEFAULTS = {
  dataDir: './.keyward',
  redisPrefix: 'keyward:',
  addr: '0.0.0.0:50051',
  livePrefix: 'fsm_live_',
  testPrefix: 'fsm_test_',
  scopes: DEFAULT_SCOPES,
  logLevel: 'info',
  migrateOnStart: true,
  shutdownTimeoutMs: 10_000,
  heapGrowingPercent: 100,
  cache: {
    localEnabled: true,
    maxEntries: 100_000,
    maxBytes: 100 * 1024 * 1024,
    ttlMs: 60_000,
    negativeTtlMs: 10_000,
    redisTtlMs: 300_000,
    redisTimeoutMs: 100,
    leaseMs: 1_000,
    ackTimeoutMs: 250,
  },
  usage: { enabled: true, flushIntervalMs: 1_000, batchMaxKeys: 5_000, maxPendingKeys: 250_000 },
  db: { poolMax: 10, verifyTimeoutMs: 1_000, queryTimeoutMs: 5_000 },
  tls: { reloadMs: 60_000 },
} as const satisfies Omit<Config, 'databaseUrl' | 'redisUrl' | 'redisClusterNodes' | 'metricsAddr' | 'adminTokens' | 'verifierToken' | 'tls'> & {
  tls: Pick<TlsConfig, 'reloadMs'>;
};

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const MIN_TOKEN_LENGTH = 16;
const PREFIX_PATTERN = /^[a-z][a-z0-9]*_([a-z0-9]+_)?$/;
const SCOPE_PATTERN = /^[a-z][a-z0-9_-]*(:[a-z][a-z0-9_-]*)*$/;
/** Names of admin tokens: a lower-case letter, then up to 62 lower-case letters, digits, `_` or `-`. */
export const ADMIN_TOKEN_NAME_PATTERN = /^[a-z][a-z0-9_-]{0,62}$/;
/** The name of KEYWARD_ADMIN_TOKEN's token. */
export const DEFAULT_ADMIN_TOKEN_NAME = 'default';
/** What `authorization: Bearer <token>` can carry: printable ASCII without spaces. */
const BEARER_TOKEN_PATTERN = /^[!-~]+$/;

/** Reads a whole text file (KEYWARD_ADMIN_TOKENS_FILE); throws Node's error when it cannot. */
export type TextFileReader = (path: string) => string;

/**
 * Reads keyward's configuration from an environment (normally `process.env`).
 * Pure but for reading KEYWARD_ADMIN_TOKENS_FILE through `readTextFile`:
 * tests pass literal objects. Throws ConfigError naming the first bad
 * variable and its value (tokens and URLs are never echoed), or the variables
 * of a combination of durations that revocation cannot rely on.
 */
export function configureFromEnv(
  env: Readonly<Record<string, string | undefined>>,
  readTextFile: TextFileReader = (path) => readFileSync(path, 'utf8'),
): Config {
  const read = (name: string): string | undefined => {
    const value = env[name];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  };
  const int = (name: string, fallback: number, min: number, max: number): number => {
    const raw = read(name);
    if (raw === undefined) return fallback;
    if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
      throw new ConfigError(`${name}=${JSON.stringify(raw)} must be a whole number from ${min} to ${max}`);
    }
    return Number(raw);
  };
  const bool = (name: string, fallback: boolean): boolean => {
    const raw = read(name);
    if (raw === undefined) return fallback;
    if (raw === 'true' || raw === '1') return true;
    if (raw === 'false' || raw === '0') return false;
    throw new ConfigError(`${name}=${JSON.stringify(raw)} must be true or false`);
  };
  const address = (name: string, fallback: string | undefined): string | undefined => {
    const raw = read(name) ?? fallback;
    if (raw === undefined) return undefined;
    const match = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(raw);
    if (match === null || Number(match[2]) > 65535) {
      throw new ConfigError(`${name}=${JSON.stringify(raw)} must be host:port (port 0 to 65535)`);
    }
    return raw;
  };
  const url = (name: string, value: string | undefined, protocols: readonly string[]): string | undefined => {
    if (value === undefined) return undefined;
    let parsed: URL;
    try {
      parsed = new URL(value);
    } catch {
      throw new ConfigError(`${name} is not a URL (value not shown: it may hold a password)`);
    }
    if (!protocols.includes(parsed.protocol)) {
      throw new ConfigError(`${name} must start with ${protocols.map((p) => `${p}//`).join(' or ')}, not ${parsed.protocol}//`);
    }
    return value;
  };
  const token = (name: string, value: string | undefined): string | undefined => {
    if (value !== undefined && value.length < MIN_TOKEN_LENGTH) {
      throw new ConfigError(`${name} must be at least ${MIN_TOKEN_LENGTH} characters long (value not shown)`);
    }
    return value;
  };
  const prefix = (name: string, fallback: string): string => {
    const raw = read(name) ?? fallback;
    if (!PREFIX_PATTERN.test(raw) || raw.length > 32) {
      throw new ConfigError(`${name}=${JSON.stringify(raw)} must be lower-case letters and digits ending in "_", like "fsm_live_"`);
    }
    return raw;
  };

  const databaseUrl = url('DATABASE_URL', read('DATABASE_URL'), ['postgres:', 'postgresql:']);
  const dataDir = read('KEYWARD_DATA_DIR');
  if (databaseUrl !== undefined && dataDir !== undefined) {
    throw new ConfigError(
      `KEYWARD_DATA_DIR=${JSON.stringify(dataDir)} is only for the embedded PostgreSQL, used when DATABASE_URL is unset; with DATABASE_URL the data lives in that server: unset one of them`,
    );
  }
  // Embedded mode generates a token when none is configured (README, "Embedded mode"); a real server never does.
  const adminTokenEntries = parseAdminTokens(read, readTextFile, databaseUrl === undefined);
  const verifierToken = token('KEYWARD_VERIFIER_TOKEN', read('KEYWARD_VERIFIER_TOKEN'));
  const sameAsVerifier = adminTokenEntries.find((entry) => entry.token === verifierToken);
  if (sameAsVerifier !== undefined) {
    throw new ConfigError(`KEYWARD_VERIFIER_TOKEN must differ from every admin token: it equals ${sameAsVerifier.origin} (values not shown)`);
  }
  const adminTokens = adminTokenEntries.map(({ name, token: value }): AdminToken => ({ name, token: value }));

  const livePrefix = prefix('KEYWARD_LIVE_PREFIX', DEFAULTS.livePrefix);
  const testPrefix = prefix('KEYWARD_TEST_PREFIX', DEFAULTS.testPrefix);
  if (livePrefix.startsWith(testPrefix) || testPrefix.startsWith(livePrefix)) {
    throw new ConfigError(
      `KEYWARD_LIVE_PREFIX=${JSON.stringify(livePrefix)} and KEYWARD_TEST_PREFIX=${JSON.stringify(testPrefix)} must differ, neither a prefix of the other`,
    );
  }

  const logLevel = read('KEYWARD_LOG_LEVEL') ?? DEFAULTS.logLevel;
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError(`KEYWARD_LOG_LEVEL=${JSON.stringify(logLevel)} must be one of ${LOG_LEVELS.join(', ')}`);
  }

  const redisPrefix = read('KEYWARD_REDIS_PREFIX') ?? DEFAULTS.redisPrefix;
  if (!/^[\w:.-]{1,64}$/.test(redisPrefix)) {
    throw new ConfigError(`KEYWARD_REDIS_PREFIX=${JSON.stringify(redisPrefix)} must be 1 to 64 of A-Z a-z 0-9 _ : . -`);
  }

  const cache = {
    localEnabled: bool('KEYWARD_LOCAL_CACHE', DEFAULTS.cache.localEnabled),
    maxEntries: int('KEYWARD_CACHE_MAX_ENTRIES', DEFAULTS.cache.maxEntries, 1, 100_000_000),
    maxBytes: int('KEYWARD_CACHE_MAX_BYTES', DEFAULTS.cache.maxBytes, 1_024, 2 ** 40),
    ttlMs: int('KEYWARD_CACHE_TTL_MS', DEFAULTS.cache.ttlMs, 1, 86_400_000),
    negativeTtlMs: int('KEYWARD_CACHE_NEGATIVE_TTL_MS', DEFAULTS.cache.negativeTtlMs, 1, 3_600_000),
    redisTtlMs: int('KEYWARD_REDIS_TTL_MS', DEFAULTS.cache.redisTtlMs, 1_000, 86_400_000),
    redisTimeoutMs: int('KEYWARD_REDIS_TIMEOUT_MS', DEFAULTS.cache.redisTimeoutMs, 1, 60_000),
    leaseMs: int('KEYWARD_CACHE_LEASE_MS', DEFAULTS.cache.leaseMs, 100, 60_000),
    ackTimeoutMs: int('KEYWARD_INVALIDATION_ACK_TIMEOUT_MS', DEFAULTS.cache.ackTimeoutMs, 1, 60_000),
  };

  const redisUrl = url('REDIS_URL', read('REDIS_URL'), ['redis:', 'rediss:']);
  const redisClusterNodes = parseClusterNodes(read('REDIS_CLUSTER_NODES'));
  if (redisUrl !== undefined && redisClusterNodes !== undefined) {
    throw new ConfigError('REDIS_URL and REDIS_CLUSTER_NODES are both set: use REDIS_URL for one Redis, REDIS_CLUSTER_NODES for a Redis Cluster, not both');
  }

  const migrateOnStart = bool('KEYWARD_MIGRATE_ON_START', DEFAULTS.migrateOnStart);
  if (databaseUrl === undefined && !migrateOnStart) {
    throw new ConfigError(
      'KEYWARD_MIGRATE_ON_START=false needs DATABASE_URL: the embedded PostgreSQL (DATABASE_URL unset) can only be migrated by the keyward that holds it, at start',
    );
  }

  const config: Config = {
    databaseUrl,
    dataDir: dataDir ?? DEFAULTS.dataDir,
    redisUrl,
    redisClusterNodes,
    redisPrefix,
    addr: address('KEYWARD_ADDR', DEFAULTS.addr) as string,
    metricsAddr: address('KEYWARD_METRICS_ADDR', undefined),
    adminTokens,
    verifierToken,
    livePrefix,
    testPrefix,
    scopes: parseScopes(read('KEYWARD_SCOPES')),
    logLevel: logLevel as LogLevel,
    migrateOnStart,
    shutdownTimeoutMs: int('KEYWARD_SHUTDOWN_TIMEOUT_MS', DEFAULTS.shutdownTimeoutMs, 0, 600_000),
    heapGrowingPercent: int('KEYWARD_HEAP_GROWING_PERCENT', DEFAULTS.heapGrowingPercent, 0, 300),
    cache,
    tls: parseTls(read, int),
    usage: {
      enabled: bool('KEYWARD_USAGE_TRACKING', DEFAULTS.usage.enabled),
      flushIntervalMs: int('KEYWARD_USAGE_FLUSH_MS', DEFAULTS.usage.flushIntervalMs, 10, 3_600_000),
      batchMaxKeys: int('KEYWARD_USAGE_BATCH_MAX_KEYS', DEFAULTS.usage.batchMaxKeys, 1, 100_000),
      maxPendingKeys: int('KEYWARD_USAGE_MAX_PENDING_KEYS', DEFAULTS.usage.maxPendingKeys, 1, 100_000_000),
    },
    db: {
      poolMax: int('KEYWARD_DB_POOL_MAX', DEFAULTS.db.poolMax, 1, 1_000),
      verifyTimeoutMs: int('KEYWARD_DB_VERIFY_TIMEOUT_MS', DEFAULTS.db.verifyTimeoutMs, 10, 60_000),
      queryTimeoutMs: int('KEYWARD_DB_QUERY_TIMEOUT_MS', DEFAULTS.db.queryTimeoutMs, 10, 600_000),
    },
  };
  // The inequalities between durations that revocation depends on (src/cache/durations.ts).
  checkDurations(config);
  return config;
}

/** An admin token with where it was configured, for error messages (never its value). */
interface AdminTokenEntry extends AdminToken {
  /** E.g. `KEYWARD_ADMIN_TOKENS token "ci"`. */
  readonly origin: string;
}

/**
 * The admin tokens of the three sources, all optional but at least one token
 * in all: KEYWARD_ADMIN_TOKEN (named `default`), KEYWARD_ADMIN_TOKENS
 * (`name:token,name:token`) and KEYWARD_ADMIN_TOKENS_FILE (one `name:token`
 * a line; blank lines and lines starting with `#` ignored, CRLF tolerated).
 * Names are unique and match ADMIN_TOKEN_NAME_PATTERN; tokens are at least
 * MIN_TOKEN_LENGTH printable ASCII characters without spaces, all distinct.
 * A message names the variable and the entry (by its name, or by its position
 * when the name is unusable: a line without a colon may be a bare token),
 * never a token.
 */
function parseAdminTokens(read: (name: string) => string | undefined, readTextFile: TextFileReader, noneAllowed: boolean): AdminTokenEntry[] {
  const entries: AdminTokenEntry[] = [];
  const add = (position: string, name: string, value: string, origin: string): void => {
    if (!BEARER_TOKEN_PATTERN.test(value)) {
      throw new ConfigError(`${origin} must be printable ASCII without spaces, as an authorization header carries it (value not shown)`);
    }
    if (value.length < MIN_TOKEN_LENGTH) throw new ConfigError(`${origin} must be at least ${MIN_TOKEN_LENGTH} characters long (value not shown)`);
    const sameName = entries.find((entry) => entry.name === name);
    if (sameName !== undefined) throw new ConfigError(`${position}: the admin token name "${name}" is already used by ${sameName.origin}`);
    const sameToken = entries.find((entry) => entry.token === value);
    if (sameToken !== undefined) {
      throw new ConfigError(`${origin} has the same token as ${sameToken.origin}: every admin token must be distinct (values not shown)`);
    }
    entries.push({ name, token: value, origin });
  };
  /** One `name:token` of the list or the file; `position` names the variable and the entry's place. */
  const addPair = (position: string, pair: string, origin: (name: string) => string): void => {
    const colon = pair.indexOf(':');
    const name = pair.slice(0, Math.max(colon, 0)).trim();
    const value = pair.slice(colon + 1).trim();
    if (colon < 0 || name === '' || value === '') throw new ConfigError(`${position} must be name:token (value not shown)`);
    if (!ADMIN_TOKEN_NAME_PATTERN.test(name)) {
      throw new ConfigError(
        `${position}: the name must match ${ADMIN_TOKEN_NAME_PATTERN.source} (a lower-case letter, then up to 62 lower-case letters, digits, _ or -); value not shown, it may be a token`,
      );
    }
    add(position, name, value, origin(name));
  };

  const single = read('KEYWARD_ADMIN_TOKEN');
  if (single !== undefined) add('KEYWARD_ADMIN_TOKEN', DEFAULT_ADMIN_TOKEN_NAME, single, 'KEYWARD_ADMIN_TOKEN');

  const list = read('KEYWARD_ADMIN_TOKENS');
  if (list !== undefined) {
    const before = entries.length;
    list.split(',').forEach((pair, index) => {
      if (pair.trim() !== '') addPair(`KEYWARD_ADMIN_TOKENS entry ${index + 1}`, pair, (name) => `KEYWARD_ADMIN_TOKENS token "${name}"`);
    });
    if (entries.length === before) throw new ConfigError('KEYWARD_ADMIN_TOKENS holds no name:token entry');
  }

  const file = read('KEYWARD_ADMIN_TOKENS_FILE');
  if (file !== undefined) {
    const variable = `KEYWARD_ADMIN_TOKENS_FILE=${JSON.stringify(file)}`;
    let text: string;
    try {
      text = readTextFile(file);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException | undefined)?.code ?? 'unknown error';
      throw new ConfigError(`${variable} cannot be read (${code})`);
    }
    const before = entries.length;
    text
      .replace(/^\uFEFF/, '')
      .split('\n')
      .forEach((raw, index) => {
        const line = raw.trim();
        const position = `${variable} line ${index + 1}`;
        if (line !== '' && !line.startsWith('#')) addPair(position, line, (name) => `${position} (token "${name}")`);
      });
    if (entries.length === before) throw new ConfigError(`${variable} holds no name:token line`);
  }

  if (entries.length === 0 && !noneAllowed) {
    throw new ConfigError(
      'KEYWARD_ADMIN_TOKEN, KEYWARD_ADMIN_TOKENS or KEYWARD_ADMIN_TOKENS_FILE is required with DATABASE_URL: the bearer token (or name:token list) admin RPCs must present',
    );
  }
  return entries;
}

/**
 * REDIS_CLUSTER_NODES: `host:port,host:port,…`, the seed nodes keyward asks
 * for the cluster's layout (one is enough; more survive one being down).
 * Hosts are names, IPv4 addresses or bracketed IPv6 addresses.
 */
function parseClusterNodes(raw: string | undefined): readonly string[] | undefined {
  if (raw === undefined) return undefined;
  const nodes = raw.split(',').map((node) => node.trim());
  nodes.forEach((node, index) => {
    const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})$/.exec(node);
    if (match === null || Number(match[2]) < 1 || Number(match[2]) > 65535) {
      throw new ConfigError(`REDIS_CLUSTER_NODES entry ${index + 1} ${JSON.stringify(node)} must be host:port (port 1 to 65535)`);
    }
  });
  if (new Set(nodes).size !== nodes.length) throw new ConfigError(`REDIS_CLUSTER_NODES=${JSON.stringify(raw)} lists a node twice`);
  return nodes;
}

function parseTls(
  read: (name: string) => string | undefined,
  int: (name: string, fallback: number, min: number, max: number) => number,
): TlsConfig | undefined {
  const certFile = read('KEYWARD_TLS_CERT_FILE');
  const keyFile = read('KEYWARD_TLS_KEY_FILE');
  const clientCaFile = read('KEYWARD_TLS_CLIENT_CA_FILE');
  const reloadMs = int('KEYWARD_TLS_RELOAD_MS', DEFAULTS.tls.reloadMs, 100, 86_400_000);
  if (certFile === undefined && keyFile === undefined) {
    if (clientCaFile !== undefined) {
      throw new ConfigError(
        `KEYWARD_TLS_CLIENT_CA_FILE=${JSON.stringify(clientCaFile)} needs KEYWARD_TLS_CERT_FILE and KEYWARD_TLS_KEY_FILE: mutual TLS is TLS plus client certificates`,
      );
    }
    if (read('KEYWARD_TLS_RELOAD_MS') !== undefined) {
      throw new ConfigError('KEYWARD_TLS_RELOAD_MS is set but KEYWARD_TLS_CERT_FILE and KEYWARD_TLS_KEY_FILE are not: there is nothing to reload');
    }
    return undefined;
  }
  if (certFile === undefined || keyFile === undefined) {
    const [set, unset] = certFile === undefined ? ['KEYWARD_TLS_KEY_FILE', 'KEYWARD_TLS_CERT_FILE'] : ['KEYWARD_TLS_CERT_FILE', 'KEYWARD_TLS_KEY_FILE'];
    throw new ConfigError(`KEYWARD_TLS_CERT_FILE and KEYWARD_TLS_KEY_FILE must be set together: ${set} is set, ${unset} is not`);
  }
  return { certFile, keyFile, clientCaFile, reloadMs };
}

function parseScopes(raw: string | undefined): readonly string[] {
  if (raw === undefined) return DEFAULTS.scopes;
  const scopes = raw.split(',').map((s) => s.trim());
  for (const scope of scopes) {
    if (!SCOPE_PATTERN.test(scope) || scope.length > 64) {
      throw new ConfigError(
        `KEYWARD_SCOPES has ${JSON.stringify(scope)}: each scope must look like "resource:action" (lower case, at most 64 characters)`,
      );
    }
  }
  if (new Set(scopes).size !== scopes.length) {
    throw new ConfigError(`KEYWARD_SCOPES=${JSON.stringify(raw)} lists a scope twice`);
  }
  return scopes;
}

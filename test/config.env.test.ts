import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ADMIN_TOKEN_NAME_PATTERN, ConfigError, DEFAULTS, configureFromEnv } from '../src/config';
import { DEFAULT_SCOPES } from '../src/keys/scopes';

const minimal = { DATABASE_URL: 'postgres://u@db:5432/keyward', KEYWARD_ADMIN_TOKEN: 'a'.repeat(32) };

function refused(env: Record<string, string>, message: RegExp): void {
  assert.throws(() => configureFromEnv(env), (error: unknown) => error instanceof ConfigError && message.test(error.message));
}

describe('configureFromEnv', () => {
  it('fills every default from two variables', () => {
    const config = configureFromEnv(minimal);
    assert.equal(config.addr, '0.0.0.0:50051');
    assert.equal(config.redisUrl, undefined);
    assert.equal(config.metricsAddr, undefined);
    assert.equal(config.verifierToken, undefined);
    assert.equal(config.livePrefix, 'fsm_live_');
    assert.equal(config.testPrefix, 'fsm_test_');
    assert.deepEqual(config.scopes, DEFAULT_SCOPES);
    assert.equal(config.db.verifyTimeoutMs, DEFAULTS.db.verifyTimeoutMs);
    assert.equal(config.migrateOnStart, true);
  });

  it('requires an admin token with DATABASE_URL, naming the variables', () => {
    const noAdminToken = /^KEYWARD_ADMIN_TOKEN, KEYWARD_ADMIN_TOKENS or KEYWARD_ADMIN_TOKENS_FILE is required with DATABASE_URL: /;
    refused({ DATABASE_URL: minimal.DATABASE_URL }, noAdminToken);
    refused({ ...minimal, KEYWARD_ADMIN_TOKEN: '   ' }, noAdminToken);
    refused({ ...minimal, KEYWARD_ADMIN_TOKEN: '', KEYWARD_ADMIN_TOKENS: ' ', KEYWARD_ADMIN_TOKENS_FILE: '' }, noAdminToken);
  });

  it('runs embedded without DATABASE_URL, in ./.keyward unless KEYWARD_DATA_DIR says, and leaves the admin token to be generated', () => {
    const embedded = configureFromEnv({});
    assert.equal(embedded.databaseUrl, undefined);
    assert.equal(embedded.dataDir, './.keyward');
    assert.deepEqual(embedded.adminTokens, []);
    assert.equal(configureFromEnv({ KEYWARD_DATA_DIR: ' /var/lib/keyward ' }).dataDir, '/var/lib/keyward');
    const configured = configureFromEnv({ KEYWARD_ADMIN_TOKEN: minimal.KEYWARD_ADMIN_TOKEN });
    assert.deepEqual(configured.adminTokens, [{ name: 'default', token: minimal.KEYWARD_ADMIN_TOKEN }]);
    refused({ ...minimal, KEYWARD_DATA_DIR: '/var/lib/keyward' }, /^KEYWARD_DATA_DIR="\/var\/lib\/keyward" is only for the embedded PostgreSQL, used when DATABASE_URL is unset/);
  });

  it('reads REDIS_CLUSTER_NODES as seed nodes, instead of REDIS_URL, naming a bad entry', () => {
    const config = configureFromEnv({ ...minimal, REDIS_CLUSTER_NODES: '10.0.0.1:7000, redis-b.internal:7001,[::1]:7002' });
    assert.deepEqual(config.redisClusterNodes, ['10.0.0.1:7000', 'redis-b.internal:7001', '[::1]:7002']);
    assert.equal(config.redisUrl, undefined);
    assert.equal(configureFromEnv(minimal).redisClusterNodes, undefined);
    refused({ ...minimal, REDIS_CLUSTER_NODES: '10.0.0.1:7000,10.0.0.2' }, /^REDIS_CLUSTER_NODES entry 2 "10\.0\.0\.2" must be host:port/);
    refused({ ...minimal, REDIS_CLUSTER_NODES: '10.0.0.1:0' }, /^REDIS_CLUSTER_NODES entry 1 "10\.0\.0\.1:0"/);
    refused({ ...minimal, REDIS_CLUSTER_NODES: 'a:1,,b:2' }, /^REDIS_CLUSTER_NODES entry 2 ""/);
    refused({ ...minimal, REDIS_CLUSTER_NODES: 'a:1,a:1' }, /lists a node twice/);
    refused({ ...minimal, REDIS_URL: 'redis://127.0.0.1:6379', REDIS_CLUSTER_NODES: 'a:1' }, /^REDIS_URL and REDIS_CLUSTER_NODES are both set/);
  });

  it('names the variable and the value of a bad setting', () => {
    refused({ ...minimal, KEYWARD_ADDR: 'localhost' }, /^KEYWARD_ADDR="localhost" must be host:port/);
    refused({ ...minimal, KEYWARD_ADDR: '0.0.0.0:70000' }, /^KEYWARD_ADDR="0\.0\.0\.0:70000"/);
    refused({ ...minimal, KEYWARD_DB_POOL_MAX: 'ten' }, /^KEYWARD_DB_POOL_MAX="ten" must be a whole number from 1/);
    refused({ ...minimal, KEYWARD_DB_POOL_MAX: '0' }, /^KEYWARD_DB_POOL_MAX="0"/);
    refused({ ...minimal, KEYWARD_LOG_LEVEL: 'loud' }, /^KEYWARD_LOG_LEVEL="loud" must be one of/);
    refused({ ...minimal, KEYWARD_MIGRATE_ON_START: 'yes' }, /^KEYWARD_MIGRATE_ON_START="yes" must be true or false/);
    refused({ ...minimal, KEYWARD_LIVE_PREFIX: 'Live' }, /^KEYWARD_LIVE_PREFIX="Live"/);
    refused({ ...minimal, KEYWARD_TEST_PREFIX: 'fsm_live_' }, /must differ/);
    refused({ ...minimal, KEYWARD_SCOPES: 'jobs:read,Jobs Write' }, /^KEYWARD_SCOPES has "Jobs Write"/);
    refused({ ...minimal, KEYWARD_SCOPES: 'jobs:read,jobs:read' }, /lists a scope twice/);
    refused({ ...minimal, KEYWARD_REDIS_PREFIX: 'has space' }, /^KEYWARD_REDIS_PREFIX="has space"/);
  });

  it('never echoes a token or a URL that may hold a password', () => {
    for (const [env, secret] of [
      [{ ...minimal, KEYWARD_ADMIN_TOKEN: 'short-secret' }, 'short-secret'],
      [{ ...minimal, KEYWARD_VERIFIER_TOKEN: 'tiny-secret' }, 'tiny-secret'],
      [{ ...minimal, DATABASE_URL: 'not a url with hunter2' }, 'hunter2'],
      [{ ...minimal, REDIS_URL: 'http://user:hunter2@redis' }, 'hunter2'],
    ] as const) {
      assert.throws(
        () => configureFromEnv(env),
        (error: unknown) => error instanceof ConfigError && !error.message.includes(secret),
      );
    }
  });

  it('reads the scope catalog, the prefixes and the optional addresses', () => {
    const config = configureFromEnv({
      ...minimal,
      KEYWARD_SCOPES: 'orders:read, orders:write',
      KEYWARD_LIVE_PREFIX: 'acme_live_',
      KEYWARD_TEST_PREFIX: 'acme_test_',
      KEYWARD_METRICS_ADDR: '127.0.0.1:9464',
      KEYWARD_ADDR: '[::]:50051',
      REDIS_URL: 'redis://127.0.0.1:6379',
      KEYWARD_VERIFIER_TOKEN: 'v'.repeat(20),
    });
    assert.deepEqual(config.scopes, ['orders:read', 'orders:write']);
    assert.equal(config.livePrefix, 'acme_live_');
    assert.equal(config.metricsAddr, '127.0.0.1:9464');
    assert.equal(config.addr, '[::]:50051');
    assert.equal(config.redisUrl, 'redis://127.0.0.1:6379');
    assert.equal(config.verifierToken, 'v'.repeat(20));
  });

  it('refuses a verifier token equal to the admin token', () => {
    refused(
      { ...minimal, KEYWARD_VERIFIER_TOKEN: minimal.KEYWARD_ADMIN_TOKEN },
      /^KEYWARD_VERIFIER_TOKEN must differ from every admin token: it equals KEYWARD_ADMIN_TOKEN \(values not shown\)$/,
    );
  });

  it('leaves TLS off unless the certificate and key files are named', () => {
    assert.equal(configureFromEnv(minimal).tls, undefined);
    assert.equal(configureFromEnv({ ...minimal, KEYWARD_TLS_CERT_FILE: ' ', KEYWARD_TLS_KEY_FILE: '' }).tls, undefined);
  });

  it('reads TLS and mutual TLS files, and the reload period', () => {
    const files = { KEYWARD_TLS_CERT_FILE: '/etc/keyward/tls.crt', KEYWARD_TLS_KEY_FILE: '/etc/keyward/tls.key' };
    assert.deepEqual(configureFromEnv({ ...minimal, ...files }).tls, {
      certFile: '/etc/keyward/tls.crt',
      keyFile: '/etc/keyward/tls.key',
      clientCaFile: undefined,
      reloadMs: DEFAULTS.tls.reloadMs,
    });
    assert.deepEqual(configureFromEnv({ ...minimal, ...files, KEYWARD_TLS_CLIENT_CA_FILE: '/etc/keyward/ca.crt', KEYWARD_TLS_RELOAD_MS: '5000' }).tls, {
      certFile: '/etc/keyward/tls.crt',
      keyFile: '/etc/keyward/tls.key',
      clientCaFile: '/etc/keyward/ca.crt',
      reloadMs: 5000,
    });
  });

  it('refuses half a TLS setting, naming the variables', () => {
    refused(
      { ...minimal, KEYWARD_TLS_CERT_FILE: '/etc/keyward/tls.crt' },
      /^KEYWARD_TLS_CERT_FILE and KEYWARD_TLS_KEY_FILE must be set together: KEYWARD_TLS_CERT_FILE is set, KEYWARD_TLS_KEY_FILE is not$/,
    );
    refused(
      { ...minimal, KEYWARD_TLS_KEY_FILE: '/etc/keyward/tls.key', KEYWARD_TLS_CLIENT_CA_FILE: '/etc/keyward/ca.crt' },
      /^KEYWARD_TLS_CERT_FILE and KEYWARD_TLS_KEY_FILE must be set together: KEYWARD_TLS_KEY_FILE is set, KEYWARD_TLS_CERT_FILE is not$/,
    );
    refused(
      { ...minimal, KEYWARD_TLS_CLIENT_CA_FILE: '/etc/keyward/ca.crt' },
      /^KEYWARD_TLS_CLIENT_CA_FILE="\/etc\/keyward\/ca\.crt" needs KEYWARD_TLS_CERT_FILE and KEYWARD_TLS_KEY_FILE/,
    );
    refused({ ...minimal, KEYWARD_TLS_RELOAD_MS: '1000' }, /^KEYWARD_TLS_RELOAD_MS is set but KEYWARD_TLS_CERT_FILE and KEYWARD_TLS_KEY_FILE are not/);
    const files = { KEYWARD_TLS_CERT_FILE: '/etc/keyward/tls.crt', KEYWARD_TLS_KEY_FILE: '/etc/keyward/tls.key' };
    refused({ ...minimal, ...files, KEYWARD_TLS_RELOAD_MS: '50' }, /^KEYWARD_TLS_RELOAD_MS="50" must be a whole number from 100 to 86400000/);
    refused({ ...minimal, ...files, KEYWARD_TLS_RELOAD_MS: '1m' }, /^KEYWARD_TLS_RELOAD_MS="1m"/);
  });

  it('accepts the default durations, and an ack timeout longer than the lease', () => {
    assert.equal(configureFromEnv({ ...minimal, REDIS_URL: 'redis://127.0.0.1:6379' }).cache.leaseMs, DEFAULTS.cache.leaseMs);
    assert.equal(configureFromEnv({ ...minimal, KEYWARD_INVALIDATION_ACK_TIMEOUT_MS: '2000' }).cache.ackTimeoutMs, 2000);
  });

  it('refuses a lease shorter than twice the Redis timeout, naming both variables', () => {
    refused(
      { ...minimal, KEYWARD_CACHE_LEASE_MS: '1000', KEYWARD_REDIS_TIMEOUT_MS: '501' },
      /^KEYWARD_CACHE_LEASE_MS=1000 must be at least twice KEYWARD_REDIS_TIMEOUT_MS=501: /,
    );
    assert.equal(configureFromEnv({ ...minimal, KEYWARD_CACHE_LEASE_MS: '1000', KEYWARD_REDIS_TIMEOUT_MS: '500' }).cache.redisTimeoutMs, 500);
  });

  it('refuses a Redis TTL not longer than a lookup (PostgreSQL plus Redis limits), naming the three variables', () => {
    refused(
      { ...minimal, KEYWARD_REDIS_TTL_MS: '5100', KEYWARD_DB_VERIFY_TIMEOUT_MS: '5000' },
      /^KEYWARD_REDIS_TTL_MS=5100 must be greater than KEYWARD_DB_VERIFY_TIMEOUT_MS=5000 plus KEYWARD_REDIS_TIMEOUT_MS=100: /,
    );
    assert.equal(configureFromEnv({ ...minimal, KEYWARD_REDIS_TTL_MS: '5101', KEYWARD_DB_VERIFY_TIMEOUT_MS: '5000' }).cache.redisTtlMs, 5101);
  });
});

describe('configureFromEnv: named admin tokens', () => {
  const base = { DATABASE_URL: minimal.DATABASE_URL };
  const CI = 'ci-token-0123456789abcdef';
  const CONSOLE = 'console-token-0123456789abcdef';
  const DEFAULT = 'default-token-0123456789abcdef';
  const SHORT = 'short-token-15c';
  /** Every token value any case below configures: none may appear in an error message. */
  const secrets = [CI, CONSOLE, DEFAULT, SHORT, 'bare-token-without-a-name-0123', 'has space-token-0123456789', 'Upper-case-token-0123456789'];
  let dir: string;

  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'keyward-tokens-'));
  });

  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const escaped = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

  /** Writes a tokens file readable by its owner only, as a mounted secret should be. */
  const tokensFile = (name: string, text: string): string => {
    const file = path.join(dir, name);
    writeFileSync(file, text, { mode: 0o600 });
    assert.equal(statSync(file).mode & 0o777, 0o600);
    return file;
  };

  /** Refused with a ConfigError matching `message` that shows no token. */
  const refusedQuietly = (env: Record<string, string>, message: RegExp): void => {
    assert.throws(
      () => configureFromEnv(env),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError, String(error));
        assert.match(error.message, message);
        for (const secret of secrets) assert.ok(!error.message.includes(secret), `a token in: ${error.message}`);
        return true;
      },
    );
  };

  it('names KEYWARD_ADMIN_TOKEN "default"', () => {
    assert.deepEqual(configureFromEnv({ ...base, KEYWARD_ADMIN_TOKEN: DEFAULT }).adminTokens, [{ name: 'default', token: DEFAULT }]);
  });

  it('reads KEYWARD_ADMIN_TOKENS alone: spaces around entries, a trailing comma, a colon inside a token', () => {
    const config = configureFromEnv({ ...base, KEYWARD_ADMIN_TOKENS: ` ci:${CI} , console-2 : ${CONSOLE}:x ,` });
    assert.deepEqual(config.adminTokens, [
      { name: 'ci', token: CI },
      { name: 'console-2', token: `${CONSOLE}:x` },
    ]);
  });

  it('reads KEYWARD_ADMIN_TOKENS_FILE: comments, blank lines, CRLF, a byte order mark', () => {
    const file = tokensFile('tokens', `\uFEFF# admin tools\r\n\r\nci:${CI}\r\n   # the console\r\n  console_2:${CONSOLE}  \r\n\r\n`);
    assert.deepEqual(configureFromEnv({ ...base, KEYWARD_ADMIN_TOKENS_FILE: ` ${file} ` }).adminTokens, [
      { name: 'ci', token: CI },
      { name: 'console_2', token: CONSOLE },
    ]);
  });

  it('combines the three sources: KEYWARD_ADMIN_TOKEN, then the list, then the file', () => {
    const file = tokensFile('combined', `console:${CONSOLE}\n`);
    const config = configureFromEnv({ ...base, KEYWARD_ADMIN_TOKEN: DEFAULT, KEYWARD_ADMIN_TOKENS: `ci:${CI}`, KEYWARD_ADMIN_TOKENS_FILE: file });
    assert.deepEqual(
      config.adminTokens.map((t) => t.name),
      ['default', 'ci', 'console'],
    );
    assert.deepEqual(
      config.adminTokens.map((t) => t.token),
      [DEFAULT, CI, CONSOLE],
    );
  });

  it(`accepts names matching ${ADMIN_TOKEN_NAME_PATTERN.source}, up to 63 characters`, () => {
    const longest = `a${'b'.repeat(62)}`;
    const names = configureFromEnv({ ...base, KEYWARD_ADMIN_TOKENS: `x:${CI},${longest}:${CONSOLE},a-1_b:${DEFAULT}` }).adminTokens.map((t) => t.name);
    assert.deepEqual(names, ['x', longest, 'a-1_b']);
  });

  it('refuses a bad name, naming the entry by its position and never echoing it', () => {
    for (const name of ['CI', '1ci', '_ci', 'c i', 'ci.tools', `a${'b'.repeat(63)}`, 'Upper-case-token-0123456789']) {
      refusedQuietly(
        { ...base, KEYWARD_ADMIN_TOKENS: `ci:${CI},${name}:${CONSOLE}` },
        /^KEYWARD_ADMIN_TOKENS entry 2: the name must match \^\[a-z\]\[a-z0-9_-\]\{0,62\}\$ .*value not shown/,
      );
    }
  });

  it('refuses an entry that is not name:token, never echoing it (it may be a bare token)', () => {
    refusedQuietly({ ...base, KEYWARD_ADMIN_TOKENS: 'bare-token-without-a-name-0123' }, /^KEYWARD_ADMIN_TOKENS entry 1 must be name:token \(value not shown\)$/);
    refusedQuietly({ ...base, KEYWARD_ADMIN_TOKENS: `ci:${CI},:${CONSOLE}` }, /^KEYWARD_ADMIN_TOKENS entry 2 must be name:token/);
    refusedQuietly({ ...base, KEYWARD_ADMIN_TOKENS: `ci:${CI},,console:` }, /^KEYWARD_ADMIN_TOKENS entry 3 must be name:token/);
    refusedQuietly({ ...base, KEYWARD_ADMIN_TOKENS: ' , ,' }, /^KEYWARD_ADMIN_TOKENS holds no name:token entry$/);
  });

  it('refuses a token shorter than 16 characters or one a bearer header cannot carry, naming the entry', () => {
    refusedQuietly({ ...base, KEYWARD_ADMIN_TOKEN: SHORT }, /^KEYWARD_ADMIN_TOKEN must be at least 16 characters long \(value not shown\)$/);
    refusedQuietly(
      { ...base, KEYWARD_ADMIN_TOKENS: `ci:${CI},console:${SHORT}` },
      /^KEYWARD_ADMIN_TOKENS token "console" must be at least 16 characters long \(value not shown\)$/,
    );
    refusedQuietly({ ...base, KEYWARD_ADMIN_TOKENS: 'ci:has space-token-0123456789' }, /^KEYWARD_ADMIN_TOKENS token "ci" must be printable ASCII without spaces/);
    refusedQuietly({ ...base, KEYWARD_ADMIN_TOKENS: `ci:${CI}é` }, /^KEYWARD_ADMIN_TOKENS token "ci" must be printable ASCII/);
  });

  it('refuses a name used twice, in one source or across them', () => {
    refusedQuietly(
      { ...base, KEYWARD_ADMIN_TOKENS: `ci:${CI},ci:${CONSOLE}` },
      /^KEYWARD_ADMIN_TOKENS entry 2: the admin token name "ci" is already used by KEYWARD_ADMIN_TOKENS token "ci"$/,
    );
    refusedQuietly(
      { ...base, KEYWARD_ADMIN_TOKEN: DEFAULT, KEYWARD_ADMIN_TOKENS: `default:${CI}` },
      /^KEYWARD_ADMIN_TOKENS entry 1: the admin token name "default" is already used by KEYWARD_ADMIN_TOKEN$/,
    );
    const file = tokensFile('same-name', `# tools\nci:${CONSOLE}\n`);
    refusedQuietly(
      { ...base, KEYWARD_ADMIN_TOKENS: `ci:${CI}`, KEYWARD_ADMIN_TOKENS_FILE: file },
      new RegExp(`^KEYWARD_ADMIN_TOKENS_FILE="${escaped(file)}" line 2: the admin token name "ci" is already used by KEYWARD_ADMIN_TOKENS token "ci"$`),
    );
  });

  it('refuses the same token twice, under two names or two sources, and a verifier token equal to any admin token', () => {
    refusedQuietly(
      { ...base, KEYWARD_ADMIN_TOKENS: `ci:${CI},console:${CI}` },
      /^KEYWARD_ADMIN_TOKENS token "console" has the same token as KEYWARD_ADMIN_TOKENS token "ci": every admin token must be distinct \(values not shown\)$/,
    );
    refusedQuietly(
      { ...base, KEYWARD_ADMIN_TOKEN: CI, KEYWARD_ADMIN_TOKENS: `ci:${CI}` },
      /^KEYWARD_ADMIN_TOKENS token "ci" has the same token as KEYWARD_ADMIN_TOKEN: /,
    );
    const file = tokensFile('same-token', `console:${CI}\n`);
    refusedQuietly(
      { ...base, KEYWARD_ADMIN_TOKENS: `ci:${CI}`, KEYWARD_ADMIN_TOKENS_FILE: file },
      new RegExp(`^KEYWARD_ADMIN_TOKENS_FILE="${escaped(file)}" line 1 \\(token "console"\\) has the same token as KEYWARD_ADMIN_TOKENS token "ci"`),
    );
    refusedQuietly(
      { ...base, KEYWARD_ADMIN_TOKENS: `ci:${CI},console:${CONSOLE}`, KEYWARD_VERIFIER_TOKEN: CONSOLE },
      /^KEYWARD_VERIFIER_TOKEN must differ from every admin token: it equals KEYWARD_ADMIN_TOKENS token "console" \(values not shown\)$/,
    );
  });

  it('names a bad line of the file by its number, never showing a token', () => {
    const cases: Array<[string, RegExp]> = [
      [`ci:${CI}\r\n# comment\r\nbare-token-without-a-name-0123\r\n`, /line 3 must be name:token \(value not shown\)$/],
      [`\n\nUpper-case-token-0123456789:${CI}\n`, /line 3: the name must match /],
      [`ci:${CI}\nconsole:${SHORT}\n`, /line 2 \(token "console"\) must be at least 16 characters long \(value not shown\)$/],
      [`ci:has space-token-0123456789\n`, /line 1 \(token "ci"\) must be printable ASCII/],
    ];
    cases.forEach(([text, message], index) => {
      const file = tokensFile(`bad-${index}`, text);
      refusedQuietly({ ...base, KEYWARD_ADMIN_TOKENS_FILE: file }, new RegExp(`^KEYWARD_ADMIN_TOKENS_FILE="${escaped(file)}" ${message.source}`));
    });
  });

  it('refuses a file that cannot be read or holds no token, naming the variable and the path', () => {
    const missing = path.join(dir, 'no-such-file');
    refusedQuietly({ ...base, KEYWARD_ADMIN_TOKEN: DEFAULT, KEYWARD_ADMIN_TOKENS_FILE: missing }, new RegExp(`^KEYWARD_ADMIN_TOKENS_FILE="${escaped(missing)}" cannot be read \\(ENOENT\\)$`));
    refusedQuietly({ ...base, KEYWARD_ADMIN_TOKENS_FILE: dir }, new RegExp(`^KEYWARD_ADMIN_TOKENS_FILE="${escaped(dir)}" cannot be read \\(EISDIR\\)$`));
    const empty = tokensFile('empty', '# nothing yet\r\n\r\n');
    refusedQuietly({ ...base, KEYWARD_ADMIN_TOKEN: DEFAULT, KEYWARD_ADMIN_TOKENS_FILE: empty }, new RegExp(`^KEYWARD_ADMIN_TOKENS_FILE="${escaped(empty)}" holds no name:token line$`));
  });

  it('reads the file through the reader it is given', () => {
    const read: string[] = [];
    const config = configureFromEnv({ ...base, KEYWARD_ADMIN_TOKENS_FILE: '/run/secrets/keyward-admin' }, (file) => {
      read.push(file);
      return `ci:${CI}\n`;
    });
    assert.deepEqual(read, ['/run/secrets/keyward-admin']);
    assert.deepEqual(config.adminTokens, [{ name: 'ci', token: CI }]);
  });
});

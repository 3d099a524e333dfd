import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, DEFAULTS, configureFromEnv } from '../src/config';
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

  it('requires DATABASE_URL and KEYWARD_ADMIN_TOKEN, naming them', () => {
    refused({ KEYWARD_ADMIN_TOKEN: 'a'.repeat(32) }, /^DATABASE_URL is required/);
    refused({ DATABASE_URL: minimal.DATABASE_URL }, /^KEYWARD_ADMIN_TOKEN is required/);
    refused({ ...minimal, KEYWARD_ADMIN_TOKEN: '   ' }, /^KEYWARD_ADMIN_TOKEN is required/);
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
    refused({ ...minimal, KEYWARD_VERIFIER_TOKEN: minimal.KEYWARD_ADMIN_TOKEN }, /must differ/);
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

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, configureFromEnv } from '../src/config';

describe('configureFromEnv in embedded mode (no DATABASE_URL)', () => {
  it('refuses KEYWARD_MIGRATE_ON_START=false: nothing else can migrate the embedded PostgreSQL', () => {
    assert.throws(
      () => configureFromEnv({ KEYWARD_MIGRATE_ON_START: 'false' }),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.message ===
          'KEYWARD_MIGRATE_ON_START=false needs DATABASE_URL: the embedded PostgreSQL (DATABASE_URL unset) can only be migrated by the keyward that holds it, at start',
    );
    assert.equal(configureFromEnv({ KEYWARD_MIGRATE_ON_START: 'true' }).migrateOnStart, true);
    assert.equal(configureFromEnv({ DATABASE_URL: 'postgres://u@db/k', KEYWARD_ADMIN_TOKEN: 'a'.repeat(32), KEYWARD_MIGRATE_ON_START: 'false' }).migrateOnStart, false);
  });
});

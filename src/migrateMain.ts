import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { ConfigError, configureFromEnv } from './config';
import { createLogger } from './logger';
import { packageRoot } from './packageRoot';
import { createPool } from './store/db';
import { migrate } from './store/migrate';

/** `npm run migrate`: applies pending migrations to DATABASE_URL and exits. */
async function main(): Promise<void> {
  const logger = createLogger();
  let config;
  try {
    // Only DATABASE_URL matters here; admin tokens are not needed to migrate (nor their file readable):
    // one random token stands in for all of them.
    const { KEYWARD_ADMIN_TOKENS: _tokens, KEYWARD_ADMIN_TOKENS_FILE: _tokensFile, ...env } = process.env;
    config = configureFromEnv({ ...env, KEYWARD_ADMIN_TOKEN: randomBytes(24).toString('hex') });
  } catch (error) {
    logger.fatal({ event: 'config' }, error instanceof ConfigError ? `invalid configuration: ${error.message}` : String(error));
    process.exit(1);
  }
  if (config.databaseUrl === undefined) {
    // pg would fall back to a server on localhost; the embedded database is migrated by the keyward that holds it.
    logger.fatal({ event: 'config' }, 'invalid configuration: DATABASE_URL is required by npm run migrate; in embedded mode keyward migrates its own database at start');
    process.exit(1);
  }
  const pool = createPool(config, logger);
  try {
    const applied = await migrate(pool, path.join(packageRoot(), 'migrations'), logger);
    logger.info({ event: 'migrate', applied }, applied.length === 0 ? 'database is up to date' : 'migrations applied');
  } catch (error) {
    logger.fatal({ err: error }, 'migration failed');
    process.exitCode = 1;
  } finally {
    await pool.end();
  }
}

void main();

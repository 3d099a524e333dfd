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
    // Only DATABASE_URL matters here; an admin token is not needed to migrate.
    config = configureFromEnv({ KEYWARD_ADMIN_TOKEN: 'x'.repeat(16), ...process.env });
  } catch (error) {
    logger.fatal({ event: 'config' }, error instanceof ConfigError ? `invalid configuration: ${error.message}` : String(error));
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

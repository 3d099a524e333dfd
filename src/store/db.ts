import pg from 'pg';
import type { Logger } from 'pino';
import type { Config } from '../config';
import { KeywardError, coerceError } from '../errors';
import { isStoreUnavailable } from './sqlState';

/** The one Postgres pool of an instance. An idle connection dying is logged, never fatal. */
export function createPool(config: Config, logger: Logger): pg.Pool {
  const pool = new pg.Pool({
    connectionString: config.databaseUrl,
    max: config.db.poolMax,
    connectionTimeoutMillis: config.db.queryTimeoutMs,
    idleTimeoutMillis: 30_000,
    query_timeout: config.db.queryTimeoutMs,
    statement_timeout: config.db.queryTimeoutMs,
    keepAlive: true,
    application_name: 'keyward',
  });
  pool.on('error', (error) => logger.warn({ err: error }, 'idle postgres connection failed'));
  return pool;
}

/**
 * Runs one statement on the pool within `timeoutMs`, counting the wait for a
 * connection. Outages and timeouts become UNAVAILABLE; other errors pass on.
 */
export async function query<Row extends pg.QueryResultRow>(
  pool: pg.Pool,
  text: string,
  values: readonly unknown[],
  timeoutMs: number,
): Promise<Row[]> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('Query read timeout (including the wait for a connection)')), timeoutMs);
  });
  try {
    const result = await Promise.race([pool.query<Row>({ text, values: values as unknown[], query_timeout: timeoutMs } as pg.QueryConfig), expired]);
    return result.rows;
  } catch (thrown) {
    const error = coerceError(thrown);
    if (isStoreUnavailable(error)) throw new KeywardError('UNAVAILABLE', 'the key store (PostgreSQL) is unavailable; try again', { cause: error });
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

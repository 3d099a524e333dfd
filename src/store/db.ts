import pg from 'pg';
import type { Logger } from 'pino';
import type { Config } from '../config';
import { KeywardError, coerceError } from '../errors';
import { isStoreUnavailable } from './sqlState';

/**
 * How an instance's KEYWARD_DB_POOL_MAX connections are shared: Verify
 * lookups get all but two (at least one) in a pool of their own, so that a
 * slow PostgreSQL holding every Verify query can never take the connections
 * admin calls and usage writes rely on; those get the rest (at least one).
 */
export function poolSizes(poolMax: number): { verify: number; main: number } {
  const verify = Math.max(1, poolMax - 2);
  return { verify, main: Math.max(1, poolMax - verify) };
}

/**
 * A Postgres pool of an instance: `main` for admin calls, usage writes and
 * migrations; `verify` for Verify's lookups, whose statements PostgreSQL
 * itself cancels after KEYWARD_DB_VERIFY_TIMEOUT_MS (statement_timeout), so
 * that a lookup that ran out of time frees its connection. An idle
 * connection dying is logged, never fatal.
 */
export function createPool(config: Config, logger: Logger, role: 'main' | 'verify' = 'main'): pg.Pool {
  const timeoutMs = role === 'verify' ? config.db.verifyTimeoutMs : config.db.queryTimeoutMs;
  const pool = new pg.Pool({
    connectionString: config.databaseUrl,
    max: poolSizes(config.db.poolMax)[role],
    connectionTimeoutMillis: timeoutMs,
    idleTimeoutMillis: 30_000,
    query_timeout: timeoutMs,
    statement_timeout: timeoutMs,
    keepAlive: true,
    application_name: role === 'verify' ? 'keyward-verify' : 'keyward',
  });
  pool.on('error', (error) => logger.warn({ err: error, pool: role }, 'idle postgres connection failed'));
  return pool;
}

/**
 * Runs one statement on `pool` and settles only when the driver is done
 * with its connection: at the answer, or at `timeoutMs` after it was sent
 * (the driver then closes the connection; the pool's statement_timeout has
 * PostgreSQL cancel the statement). Unlike `query`, it never settles early,
 * so a caller that counts statements in flight counts connections in use.
 */
export async function querySettled<Row extends pg.QueryResultRow>(
  pool: pg.Pool,
  text: string,
  values: readonly unknown[],
  timeoutMs: number,
): Promise<Row[]> {
  try {
    const result = await pool.query<Row>({ text, values: values as unknown[], query_timeout: timeoutMs } as pg.QueryConfig);
    return result.rows;
  } catch (thrown) {
    const error = coerceError(thrown);
    if (isStoreUnavailable(error)) throw new KeywardError('UNAVAILABLE', 'the key store (PostgreSQL) is unavailable; try again', { cause: error });
    throw error;
  }
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

/** Runs one statement within a time limit; an outage becomes UNAVAILABLE (with the driver's error as cause). */
export type Runner = <Row extends pg.QueryResultRow>(text: string, values: readonly unknown[], timeoutMs: number) => Promise<Row[]>;

export function poolRunner(pool: pg.Pool): Runner {
  return (text, values, timeoutMs) => query(pool, text, values, timeoutMs);
}

/**
 * One Postgres connection of its own, outside the pool, so that what runs on
 * it (the invalidation outbox reads that decide cache trust) never waits
 * behind Verify lookups for a pooled connection. Connects on first use; a
 * connection that failed or timed out is dropped and made anew next time.
 */
export class DedicatedConnection {
  private client: pg.Client | undefined;
  private connecting: Promise<pg.Client> | undefined;

  constructor(
    private readonly connectionString: string,
    private readonly logger: Logger,
  ) {}

  readonly run: Runner = async <Row extends pg.QueryResultRow>(text: string, values: readonly unknown[], timeoutMs: number): Promise<Row[]> => {
    try {
      const client = await this.connect(timeoutMs);
      const result = await client.query<Row>({ text, values: values as unknown[], query_timeout: timeoutMs } as pg.QueryConfig);
      return result.rows;
    } catch (thrown) {
      const error = coerceError(thrown);
      this.discard();
      if (isStoreUnavailable(error)) throw new KeywardError('UNAVAILABLE', 'the key store (PostgreSQL) is unavailable; try again', { cause: error });
      throw error;
    }
  };

  async close(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.connecting = undefined;
    await client?.end().catch(() => {});
  }

  private connect(timeoutMs: number): Promise<pg.Client> {
    if (this.client !== undefined) return Promise.resolve(this.client);
    this.connecting ??= (async () => {
      const client = new pg.Client({ connectionString: this.connectionString, connectionTimeoutMillis: timeoutMs, application_name: 'keyward-outbox', keepAlive: true });
      client.on('error', (error) => {
        this.logger.debug({ err: error }, 'outbox connection failed');
        if (this.client === client) this.discard();
      });
      try {
        await client.connect();
      } catch (error) {
        this.connecting = undefined;
        await client.end().catch(() => {});
        throw error;
      }
      this.client = client;
      this.connecting = undefined;
      return client;
    })();
    return this.connecting;
  }

  private discard(): void {
    const client = this.client;
    this.client = undefined;
    client?.end().catch(() => {});
  }
}

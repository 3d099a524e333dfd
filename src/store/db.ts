import { performance } from 'node:perf_hooks';
import pg from 'pg';
import type { Logger } from 'pino';
import type { Config } from '../config';
import { coerceError } from '../errors';
import { type FailurePhase, storeError } from './storeFailure';

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
 * Connections of the embedded PostgreSQL (README, "Embedded mode"): one in
 * total, in one pool that is both the main and the Verify pool (and, with
 * Redis, also runs the outbox reads).
 *
 * PGlite is one PostgreSQL backend, one session. pglite-socket multiplexes
 * its connections onto it by protocol message: it queues messages of every
 * connection, runs them one at a time, and only while a transaction block
 * is open keeps to the connection that opened it. Between statements,
 * session state (the unnamed prepared statement and portal of the extended
 * protocol that every parameterised query uses, the implicit transaction
 * that runs until Sync, an error that makes the backend skip messages until
 * Sync) would be shared by whichever connections' messages run next; that
 * today they rarely interleave comes from the timing of its event loop, not
 * from a guarantee (its README: "not all use cases are guaranteed to work").
 * With one connection, every statement, transaction (migrations) and
 * `for update` runs exactly as on a server with one session. It costs no
 * throughput: PGlite runs one statement at a time whatever the connections.
 */
export const EMBEDDED_POOL_SIZE = 1;

/**
 * A Postgres pool of an instance: `main` for admin calls, usage writes and
 * migrations; `verify` for Verify's lookups, whose statements PostgreSQL
 * itself cancels after KEYWARD_DB_VERIFY_TIMEOUT_MS (statement_timeout), so
 * that a lookup that ran out of time frees its connection. An idle
 * connection dying is logged, never fatal. `connection` overrides where it
 * connects (default DATABASE_URL) and its size (default poolSizes): the
 * embedded PostgreSQL's pool (EMBEDDED_POOL_SIZE).
 */
export function createPool(
  config: Config,
  logger: Logger,
  role: 'main' | 'verify' = 'main',
  connection: { readonly connectionString?: string; readonly max?: number } = {},
): pg.Pool {
  const timeoutMs = role === 'verify' ? config.db.verifyTimeoutMs : config.db.queryTimeoutMs;
  const pool = new pg.Pool({
    connectionString: connection.connectionString ?? config.databaseUrl,
    max: connection.max ?? poolSizes(config.db.poolMax)[role],
    connectionTimeoutMillis: timeoutMs,
    idleTimeoutMillis: 30_000,
    // No driver-side query_timeout: keyward times each statement itself (onPoolClient), so it knows a timeout from a failure.
    statement_timeout: timeoutMs,
    keepAlive: true,
    application_name: role === 'verify' ? 'keyward-verify' : 'keyward',
  });
  pool.on('error', (error) => logger.warn({ err: error, pool: role }, 'idle postgres connection failed'));
  return pool;
}

/**
 * Runs `text` on a client taken from `pool`, classifying a failure by phase
 * (taking a connection, or the statement) and by what was observed (the
 * connection ending under the statement; keyward's own time limit running
 * out, after which the connection is ended and never reused), never by a
 * driver's message (storeFailure.ts). The pool's connection timeout bounds
 * the wait for a connection; the statement gets what is left of `timeoutMs`.
 */
async function onPoolClient<Row extends pg.QueryResultRow>(pool: pg.Pool, text: string, values: readonly unknown[], timeoutMs: number): Promise<Row[]> {
  const deadline = performance.now() + timeoutMs;
  let phase: FailurePhase = 'connect';
  let timedOut = false;
  let connectionLost = false;
  try {
    const client = await pool.connect().catch((error: unknown) => {
      timedOut = performance.now() >= deadline;
      throw error;
    });
    phase = 'query';
    let released = false;
    const release = (destroy: boolean): void => {
      if (released) return;
      released = true;
      client.off('error', onError);
      client.release(destroy);
    };
    const onError = (): void => {
      connectionLost = true;
    };
    client.on('error', onError);
    // At the limit the connection is ended: the statement fails at once, and PostgreSQL
    // cancels it (statement_timeout, or the closed socket) instead of holding the connection.
    const timer = setTimeout(() => {
      timedOut = true;
      release(true);
    }, Math.max(1, deadline - performance.now()));
    try {
      const result = await client.query<Row>({ text, values: values as unknown[] });
      release(false);
      return result.rows;
    } catch (error) {
      release(true);
      throw error;
    } finally {
      clearTimeout(timer);
    }
  } catch (thrown) {
    throw storeError(coerceError(thrown), phase, { timedOut, connectionLost });
  }
}

/**
 * Runs one statement on `pool` and settles only when the driver is done
 * with its connection: at the answer, or when keyward ends the connection
 * at `timeoutMs` (the pool's statement_timeout has PostgreSQL cancel the
 * statement too). It never settles before the connection is given back, so
 * a caller that counts statements in flight counts connections in use.
 * Unreachable or slow: StoreUnavailable.
 */
export function querySettled<Row extends pg.QueryResultRow>(pool: pg.Pool, text: string, values: readonly unknown[], timeoutMs: number): Promise<Row[]> {
  return onPoolClient<Row>(pool, text, values, timeoutMs);
}

/**
 * Runs one statement on the pool within `timeoutMs`, counting the wait for a
 * connection. Outages and timeouts become StoreUnavailable (UNAVAILABLE);
 * other errors pass on.
 */
export function query<Row extends pg.QueryResultRow>(pool: pg.Pool, text: string, values: readonly unknown[], timeoutMs: number): Promise<Row[]> {
  return onPoolClient<Row>(pool, text, values, timeoutMs);
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
  /** Connection errors seen: one during a statement means the connection ended under it. */
  private lost = 0;
  /** The last statement queued: the next one runs after it settles. */
  private tail: Promise<unknown> = Promise.resolve();
  /** The client of the connection attempt under way. */
  private pendingClient: pg.Client | undefined;

  constructor(
    private readonly connectionString: string,
    private readonly logger: Logger,
  ) {}

  /**
   * Runs statements one at a time, in order (the outbox reads and the repair
   * share this connection): each one's time limit starts at its turn.
   */
  readonly run: Runner = <Row extends pg.QueryResultRow>(text: string, values: readonly unknown[], timeoutMs: number): Promise<Row[]> => {
    const result = this.tail.then(() => this.runNow<Row>(text, values, timeoutMs));
    this.tail = result.catch(() => {});
    return result;
  };

  /**
   * One statement, connecting first if needed, within `timeoutMs` in all:
   * at the limit keyward stops waiting (it never relies on the driver to
   * settle a connect or a query it ended) and drops the connection, so that
   * the next statement of the queue can begin.
   */
  private async runNow<Row extends pg.QueryResultRow>(text: string, values: readonly unknown[], timeoutMs: number): Promise<Row[]> {
    let phase: FailurePhase = 'connect';
    let timedOut = false;
    const lostBefore = this.lost;
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        this.discard();
        reject(new Error(`no answer within ${timeoutMs} ms`));
      }, timeoutMs);
    });
    try {
      const client = await Promise.race([this.connect(), expired]);
      phase = 'query';
      const answer = client.query<Row>({ text, values: values as unknown[] });
      answer.catch(() => {}); // settled here or by the race; never unhandled
      return (await Promise.race([answer, expired])).rows;
    } catch (thrown) {
      this.discard();
      throw storeError(coerceError(thrown), phase, { timedOut, connectionLost: this.lost !== lostBefore });
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.discard();
    await client?.end().catch(() => {});
  }

  /** Connects, once at a time; an attempt abandoned by discard() ends its client when it completes. */
  private connect(): Promise<pg.Client> {
    if (this.client !== undefined) return Promise.resolve(this.client);
    if (this.connecting !== undefined) return this.connecting;
    const client = new pg.Client({ connectionString: this.connectionString, application_name: 'keyward-outbox', keepAlive: true });
    client.on('error', (error) => {
      this.lost++;
      this.logger.debug({ err: error }, 'outbox connection failed');
      if (this.client === client) this.discard();
    });
    const attempt: Promise<pg.Client> = client.connect().then(
      () => {
        if (this.connecting !== attempt) {
          client.end().catch(() => {});
          throw new Error('connection attempt abandoned');
        }
        this.connecting = undefined;
        this.pendingClient = undefined;
        this.client = client;
        return client;
      },
      (error: unknown) => {
        if (this.connecting === attempt) this.connecting = undefined;
        client.end().catch(() => {});
        throw error;
      },
    );
    attempt.catch(() => {}); // its callers may have stopped waiting (time limit)
    this.connecting = attempt;
    this.pendingClient = client;
    return attempt;
  }

  /** Drops the connection (and any attempt under way): the next statement connects anew. */
  private discard(): void {
    const client = this.client;
    this.client = undefined;
    client?.end().catch(() => {});
    if (this.connecting !== undefined) {
      this.connecting = undefined;
      // An attempt that never settles (pg does not settle connect() after end()) is simply forgotten.
      this.pendingClient?.end().catch(() => {});
    }
    this.pendingClient = undefined;
  }
}

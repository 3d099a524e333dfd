import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { packageRoot } from '../../src/packageRoot';
import { migrate } from '../../src/store/migrate';

const SERVER_URL = process.env.KEYWARD_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/**
 * Runs `body` with a fresh database named `<prefix>_<time>_<pid>`, migrated,
 * and drops it afterwards whatever happens (test runs, benchmarks).
 */
export async function withScratchDatabase<T>(prefix: string, body: (databaseUrl: string) => Promise<T>): Promise<T> {
  const name = `${prefix}_${Date.now()}_${process.pid}`;
  const root = new pg.Client({ connectionString: SERVER_URL });
  await root.connect();
  await root.query(`create database ${name}`);
  const url = new URL(SERVER_URL);
  url.pathname = `/${name}`;
  try {
    const pool = new pg.Pool({ connectionString: url.toString(), max: 1 });
    await migrate(pool, path.join(packageRoot(), 'migrations'), pino({ level: 'warn' }));
    await pool.end();
    return await body(url.toString());
  } finally {
    await root.query(`drop database if exists ${name} with (force)`);
    await root.end();
  }
}

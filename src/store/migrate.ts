import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import type { Logger } from 'pino';

/** Advisory lock key that serialises migrators: instances starting together take turns. */
const MIGRATION_LOCK_KEY = 0x6b657977; // "keyw"
const MIGRATION_FILE = /^(\d{4})_[a-z0-9_]+\.sql$/;

/**
 * Applies the numbered `.sql` files of `dir` that this database has not seen,
 * in order, each in its own transaction, under a Postgres advisory lock.
 * Forward only: a file, once applied, is never changed. Returns the names applied.
 */
export async function migrate(pool: pg.Pool, dir: string, logger: Logger): Promise<string[]> {
  const files = readdirSync(dir)
    .filter((name) => MIGRATION_FILE.test(name))
    .sort();
  const client = await pool.connect();
  const applied: string[] = [];
  try {
    await client.query('select pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    try {
      await client.query('create schema if not exists keyward');
      await client.query(`
        create table if not exists keyward.migrations (
          id         integer     primary key,
          name       text        not null,
          applied_at timestamptz not null default now()
        )`);
      const { rows } = await client.query<{ id: number }>('select id from keyward.migrations');
      const done = new Set(rows.map((row) => row.id));
      for (const name of files) {
        const id = Number(MIGRATION_FILE.exec(name)?.[1]);
        if (done.has(id)) continue;
        const sql = readFileSync(path.join(dir, name), 'utf8');
        await client.query('begin');
        try {
          await client.query(sql);
          await client.query('insert into keyward.migrations (id, name) values ($1, $2)', [id, name]);
          await client.query('commit');
        } catch (error) {
          await client.query('rollback');
          throw new Error(`migration ${name} failed: ${(error as Error).message}`, { cause: error });
        }
        applied.push(name);
        logger.info({ migration: name }, 'migration applied');
      }
    } finally {
      await client.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
    }
  } finally {
    client.release();
  }
  return applied;
}

/**
 * `npm test`: makes a fresh database for the run, migrates it, runs every
 * test file with Node's test runner (files in parallel), drops the database,
 * and exits with the runner's status.
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { migrate } from '../src/store/migrate';

const ROOT = path.resolve(__dirname, '..');
const SERVER_URL = process.env.KEYWARD_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const CONCURRENCY = process.env.KEYWARD_TEST_CONCURRENCY ?? '3';

async function main(): Promise<number> {
  const only = process.argv.slice(2);
  const files = (only.length > 0 ? only : readdirSync(path.join(ROOT, 'test')).filter((name) => name.endsWith('.test.ts')).sort()).map(
    (name) => (path.isAbsolute(name) || name.startsWith('test/') ? name : path.join('test', name)),
  );
  const database = `keyward_test_${Date.now()}_${process.pid}`;
  const admin = new pg.Client({ connectionString: SERVER_URL });
  await admin.connect();
  await admin.query(`create database ${database}`);
  const url = new URL(SERVER_URL);
  url.pathname = `/${database}`;
  const databaseUrl = url.toString();
  try {
    const pool = new pg.Pool({ connectionString: databaseUrl, max: 1 });
    await migrate(pool, path.join(ROOT, 'migrations'), pino({ level: 'warn' }));
    await pool.end();
    const code = await new Promise<number>((resolve) => {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', '--test', `--test-concurrency=${CONCURRENCY}`, '--test-reporter=spec', ...files],
        { cwd: ROOT, stdio: 'inherit', env: { ...process.env, KEYWARD_TEST_DATABASE_URL: databaseUrl } },
      );
      child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal === null ? 1 : 128)));
    });
    return code;
  } finally {
    await admin.query(`drop database if exists ${database} with (force)`);
    await admin.end();
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);

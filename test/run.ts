/**
 * `npm test`: makes a fresh database for the run, migrates it, runs every
 * test file with Node's test runner (files in parallel), drops the database,
 * and exits with the runner's status.
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { withScratchDatabase } from './helpers/scratchDatabase';

const ROOT = path.resolve(__dirname, '..');
const CONCURRENCY = process.env.KEYWARD_TEST_CONCURRENCY ?? '3';

function runTests(files: string[], databaseUrl: string): Promise<number> {
  return new Promise<number>((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--test', `--test-concurrency=${CONCURRENCY}`, '--test-timeout=180000', '--test-reporter=spec', ...files], {
      cwd: ROOT,
      stdio: 'inherit',
      env: { ...process.env, KEYWARD_TEST_DATABASE_URL: databaseUrl },
    });
    child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal === null ? 1 : 128)));
  });
}

const only = process.argv.slice(2);
const files = (only.length > 0 ? only : readdirSync(path.join(ROOT, 'test')).filter((name) => name.endsWith('.test.ts')).sort()).map((name) =>
  path.isAbsolute(name) || name.startsWith('test/') ? name : path.join('test', name),
);

withScratchDatabase('keyward_test', (databaseUrl) => runTests(files, databaseUrl)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);

import { randomUUID } from 'node:crypto';

/** Admin token every test server is started with. */
export const ADMIN_TOKEN = 'test-admin-token-0123456789';

/** The run's database (made by test/run.ts); a file run on its own falls back to `test`. */
export function testDatabaseUrl(): string {
  return process.env.KEYWARD_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
}

export function testRedisUrl(): string {
  return process.env.KEYWARD_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
}

/** A fresh tenant, so that tests sharing the run's database never see each other's keys. */
export function newAccountId(): string {
  return `acct-${randomUUID()}`;
}

import pg from 'pg';
import { KeyFormat, hashSecret } from '../src/keys/KeyFormat';

const format = new KeyFormat('fsm_live_', 'fsm_test_');
const CHUNK = 5_000;

export interface SeedOptions {
  readonly accountId: string;
  readonly scopes: readonly string[];
  readonly ipWhitelist: readonly string[];
}

/**
 * Stores `count` real keys (secrets known to the benchmark) with multi-row
 * inserts, and returns their secrets.
 */
export async function seedKeys(databaseUrl: string, count: number, options: SeedOptions): Promise<string[]> {
  const secrets = Array.from({ length: count }, () => format.generate('live'));
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    for (let i = 0; i < secrets.length; i += CHUNK) {
      const chunk = secrets.slice(i, i + CHUNK);
      await client.query(
        `insert into keyward.api_keys (account_id, name, environment, secret_hash, display, scopes, ip_whitelist)
         select $1::text, 'bench key ' || (n + $5::integer), 'live', h, d, $3::text[], $4::text[]
           from unnest($2::bytea[], $6::text[]) with ordinality as t(h, d, n)`,
        [options.accountId, chunk.map((s) => Buffer.from(hashSecret(s), 'hex')), options.scopes, options.ipWhitelist, i, chunk.map((s) => format.display(s, 'live'))],
      );
    }
  } finally {
    await client.end();
  }
  return secrets;
}

/** Stores `count` keys nobody has the secret of, spread over 10,000 accounts, in one statement. */
export async function seedFiller(databaseUrl: string, count: number): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query(
      `insert into keyward.api_keys (account_id, name, environment, secret_hash, display, scopes)
       select 'filler-' || (g % 10000), 'filler ' || g, 'live', sha256(('filler ' || g)::bytea), 'fsm_live_xxxx…xxxx', '{jobs:read}'
         from generate_series(1, $1::integer) g`,
      [count],
    );
    await client.query('analyze keyward.api_keys');
  } finally {
    await client.end();
  }
}

/** A secret with a good shape and a wrong checksum (a typo of `secret`). */
export function typoOf(secret: string): string {
  return secret.slice(0, -1) + (secret.endsWith('A') ? 'B' : 'A');
}

export function unknownSecret(): string {
  return format.generate('live');
}

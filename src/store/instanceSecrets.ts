import type { Runner } from './db';

/** The name of the secret that keys the MAC of keyward's Redis entries (migration 0005). */
export const MAC_SECRET_NAME = 'redis-mac';

/**
 * Reads a secret from keyward.instance_secrets (made once by its migration).
 * Throws when the row is missing or too short: an instance must not start
 * with a weak or made-up key.
 */
export async function readInstanceSecret(run: Runner, name: string, timeoutMs: number): Promise<Buffer> {
  const rows = await run<{ secret: Buffer }>('select secret from keyward.instance_secrets where name = $1::text', [name], timeoutMs);
  const secret = rows[0]?.secret;
  if (secret === undefined || secret.length < 32) {
    throw new Error(`keyward.instance_secrets has no usable "${name}" secret (migration 0005 makes it): run the migrations`);
  }
  return secret;
}

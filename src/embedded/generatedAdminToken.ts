import { randomBytes } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** The file, in the data directory, of the admin token embedded mode generates when none is configured. */
export const ADMIN_TOKEN_FILE_NAME = 'admin-token';

/** What a token of the file must be: what KEYWARD_ADMIN_TOKEN accepts (config.ts), at least 16 printable ASCII characters. */
const USABLE_TOKEN = /^[\x21-\x7e]{16,}$/;

/** The token, where it is kept, and whether this start made it (then it is printed, once). */
export interface GeneratedAdminToken {
  readonly token: string;
  readonly file: string;
  readonly created: boolean;
}

/**
 * Checks what an existing token file holds (pure: content and mode are
 * inputs). Returns the token, or the reason it cannot be used: unusable
 * content, or a file other users may read (as ssh refuses a readable key).
 */
export function checkTokenFile(file: string, content: string, mode: number): string {
  if ((mode & 0o077) !== 0) {
    throw new Error(`${file} is readable or writable by other users (mode ${(mode & 0o777).toString(8).padStart(4, '0')}): chmod 600 it`);
  }
  const token = content.trim();
  if (!USABLE_TOKEN.test(token)) {
    throw new Error(`${file} does not hold a usable admin token (at least 16 printable ASCII characters, no spaces): remove it to have a new one generated`);
  }
  return token;
}

/** 32 bytes of the CSPRNG, base64url: 43 characters. */
export function newAdminToken(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * The admin token of an embedded keyward started without one: read from
 * `<dataDir>/admin-token`, or generated and written there (mode 0600, O_EXCL)
 * when the file does not exist. The caller holds the data directory's lock,
 * so no other keyward writes the file meanwhile.
 */
export function loadOrCreateAdminToken(dataDir: string): GeneratedAdminToken {
  const file = path.join(dataDir, ADMIN_TOKEN_FILE_NAME);
  let content: string;
  try {
    content = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    const token = newAdminToken();
    writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
    return { token, file, created: true };
  }
  return { token: checkTokenFile(file, content, statSync(file).mode), file, created: false };
}

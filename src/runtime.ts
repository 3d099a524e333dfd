import crypto from 'node:crypto';
import zlib from 'node:zlib';

/** The oldest Node.js keyward runs on: `zlib.crc32` came in 20.15 (and 22.2), `crypto.hash` in 20.12. */
export const MINIMUM_NODE = '20.15.0';

/**
 * What keyward relies on that older runtimes lack, checked at start: every
 * key's checksum is a `zlib.crc32`, every lookup a `crypto.hash`. Without
 * them CreateKey and Verify would throw on every call; better to refuse to
 * start and say which Node is needed. Returns the problem, or undefined.
 */
export function checkRuntime(version: string = process.version): string | undefined {
  const missing = [
    typeof zlib.crc32 === 'function' ? undefined : 'zlib.crc32',
    typeof crypto.hash === 'function' ? undefined : 'crypto.hash',
  ].filter((name) => name !== undefined);
  if (missing.length === 0) return undefined;
  return `keyward needs Node.js ${MINIMUM_NODE} or later (package.json "engines"); this is Node.js ${version}, which lacks ${missing.join(' and ')}`;
}

import { createHash, timingSafeEqual } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';

/** Checks `authorization: Bearer <token>` metadata. */
export type TokenCheck = (metadata: Metadata) => boolean;

/**
 * A check of the bearer token against `expected`, in constant time: both
 * sides are hashed first, so neither the length nor a prefix of the token
 * shows in the time taken.
 */
export function createTokenCheck(expected: string): TokenCheck {
  const expectedDigest = createHash('sha256').update(expected).digest();
  return (metadata) => {
    const values = metadata.get('authorization');
    if (values.length !== 1 || typeof values[0] !== 'string') return false;
    const match = /^Bearer\s+(\S+)\s*$/i.exec(values[0]);
    if (match === null) return false;
    return timingSafeEqual(createHash('sha256').update(match[1] as string).digest(), expectedDigest);
  };
}

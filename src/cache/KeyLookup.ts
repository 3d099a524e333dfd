import type { VerifiableKey } from '../keys/VerifiableKey';

/**
 * Finds the key Verify was given, by the SHA-256 of its secret. Answers
 * synchronously when it can (an in-process hit costs no await) and with a
 * promise otherwise; undefined means no such key. A store outage rejects
 * with an UNAVAILABLE KeywardError.
 */
export interface KeyLookup {
  find(secretHash: string): VerifiableKey | undefined | Promise<VerifiableKey | undefined>;
}

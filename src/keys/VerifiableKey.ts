import type { Environment } from './KeyFormat';
import type { KeyRecord } from './KeyRecord';
import { compileWhitelist, type IpCheck } from './ipWhitelist';

/**
 * What Verify needs of a key: the stored fields it reports, in the plain shape
 * that the caches hold and Redis serialises (see `KeyState`), plus the checks
 * compiled once per load so that each Verify only runs them.
 */
export interface KeyState {
  readonly id: string;
  readonly accountId: string;
  readonly name: string;
  readonly environment: Environment;
  readonly scopes: readonly string[];
  readonly ipWhitelist: readonly string[];
  /** Epoch milliseconds, or null. */
  readonly expiresAt: number | null;
  readonly revokedAt: number | null;
  readonly version: number;
}

export interface VerifiableKey extends KeyState {
  readonly scopeSet: ReadonlySet<string>;
  readonly allowsIp: IpCheck;
}

export function toVerifiableKey(state: KeyState): VerifiableKey {
  return { ...state, scopeSet: new Set(state.scopes), allowsIp: compileWhitelist(state.ipWhitelist) };
}

/** The Verify-relevant part of a stored key. */
export function keyStateOf(record: KeyRecord): KeyState {
  return {
    id: record.id,
    accountId: record.accountId,
    name: record.name,
    environment: record.environment,
    scopes: record.scopes,
    ipWhitelist: record.ipWhitelist,
    expiresAt: record.expiresAt === null ? null : record.expiresAt.getTime(),
    revokedAt: record.revokedAt === null ? null : record.revokedAt.getTime(),
    version: record.version,
  };
}

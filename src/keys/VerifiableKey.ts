import type { Environment } from './KeyFormat';
import type { KeyRecord } from './KeyRecord';
import { compileWhitelist, type IpCheck } from './ipWhitelist';
import type { KeyMetadata } from './metadata';

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
  /**
   * Epoch milliseconds while the key is disabled, else null. Always present
   * in what this release writes to Redis; an entry without it was written by
   * a release that did not know disabling, and is read as a miss (RedisTier).
   */
  readonly disabledAt: number | null;
  /**
   * The key's metadata ({} when none), sent in Verify's answer. Like
   * `disabledAt`, always present in what this release writes to Redis; an
   * entry without it is from a release before metadata and is read as a miss,
   * never as a key without metadata.
   */
  readonly metadata: KeyMetadata;
  readonly version: number;
}

/**
 * A key as the caches hold it. Kept small (the in-process cache holds up to
 * 100,000 of them): strings and lists that many keys share (account, scope
 * lists, compiled whitelists) are shared, not copied.
 */
export interface VerifiableKey extends KeyState {
  readonly allowsIp: IpCheck;
}

/**
 * Strings and lists that many keys hold alike, stored once. Bounded: when
 * full it starts again empty (sharing is an optimisation, never required).
 */
class Interner<T> {
  private readonly entries = new Map<string, T>();
  constructor(private readonly max: number) {}
  get(text: string, make: () => T): T {
    let value = this.entries.get(text);
    if (value === undefined) {
      if (this.entries.size >= this.max) this.entries.clear();
      value = make();
      this.entries.set(text, value);
    }
    return value;
  }
}

const accounts = new Interner<string>(10_000);
const scopeLists = new Interner<readonly string[]>(10_000);
const whitelists = new Interner<IpCheck>(10_000);
const NO_ENTRIES: readonly string[] = Object.freeze([]);
const NO_METADATA: KeyMetadata = Object.freeze({});

export function toVerifiableKey(state: KeyState): VerifiableKey {
  return {
    id: state.id,
    accountId: accounts.get(state.accountId, () => state.accountId),
    name: state.name,
    environment: state.environment === 'live' ? 'live' : 'test',
    scopes: scopeLists.get(state.scopes.join(' '), () => Object.freeze([...state.scopes])),
    ipWhitelist: state.ipWhitelist.length === 0 ? NO_ENTRIES : scopeLists.get(`@${state.ipWhitelist.join(' ')}`, () => Object.freeze([...state.ipWhitelist])),
    expiresAt: state.expiresAt,
    revokedAt: state.revokedAt,
    disabledAt: state.disabledAt,
    metadata: Object.keys(state.metadata).length === 0 ? NO_METADATA : Object.freeze({ ...state.metadata }),
    version: state.version,
    allowsIp: whitelists.get(state.ipWhitelist.join(' '), () => compileWhitelist(state.ipWhitelist)),
  };
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
    disabledAt: record.disabledAt === null ? null : record.disabledAt.getTime(),
    metadata: record.metadata,
    version: record.version,
  };
}

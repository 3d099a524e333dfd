import { toVerifiableKey, type VerifiableKey } from '../keys/VerifiableKey';
import type { KeyStore } from '../store/KeyStore';
import type { KeyLookup } from './KeyLookup';

/** Every Verify reads Postgres: the lookup of an instance without Redis. */
export class PostgresLookup implements KeyLookup {
  constructor(private readonly store: KeyStore) {}

  async find(secretHash: string): Promise<VerifiableKey | undefined> {
    const state = await this.store.findForVerify(secretHash);
    return state === undefined ? undefined : toVerifiableKey(state);
  }
}

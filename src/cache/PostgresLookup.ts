import { toVerifiableKey, type VerifiableKey } from '../keys/VerifiableKey';
import type { KeyStore } from '../store/KeyStore';
import type { KeyLookup } from './KeyLookup';
import type { TierCounts } from './TieredLookup';

/** Every Verify reads Postgres: the lookup of an instance without Redis. */
export class PostgresLookup implements KeyLookup {
  constructor(
    private readonly store: KeyStore,
    private readonly counts: TierCounts,
  ) {}

  async find(secretHash: string): Promise<VerifiableKey | undefined> {
    const state = await this.store.findForVerify(secretHash);
    this.counts.postgres++;
    return state === undefined ? undefined : toVerifiableKey(state);
  }
}

import type { KeyChangeListener } from '../admin/KeyAdmin';
import { toVerifiableKey, type VerifiableKey } from '../keys/VerifiableKey';
import type { KeyChange, KeyStore } from '../store/KeyStore';
import type { FillGuard } from './FillGuard';
import type { KeyLookup } from './KeyLookup';
import type { LocalCache } from './LocalCache';
import type { TierCounts } from './TieredLookup';
import { SharedReads } from './SharedReads';

/**
 * Verify's lookup of the embedded, single-instance keyward without Redis:
 * the in-process LRU, then PostgreSQL. It is also the admin calls' change
 * listener: a change drops the key's copy (and any lookup of it in flight)
 * before the call returns, and leaves a version floor so that a lookup that
 * read the old row cannot cache it afterwards (FillGuard).
 *
 * Sound only because this process is the only writer of the data: the
 * embedded PostgreSQL lives in this process and its data directory is locked
 * (DataDirLock), so every change to a key goes through this listener.
 */
export class LocalLookup implements KeyLookup, KeyChangeListener {
  private readonly reads = new SharedReads<VerifiableKey | undefined>();
  private readonly loadFor = (hash: string): Promise<VerifiableKey | undefined> => this.load(hash);

  constructor(
    private readonly local: LocalCache,
    private readonly guard: FillGuard,
    private readonly store: KeyStore,
    private readonly counts: TierCounts,
  ) {}

  find(hash: string): VerifiableKey | undefined | Promise<VerifiableKey | undefined> {
    const hit = this.local.get(hash);
    if (hit !== undefined) {
      this.counts.local++;
      return hit;
    }
    if (this.local.isKnownUnknown(hash)) {
      this.counts.negative++;
      return undefined;
    }
    // Lookups of one hash share one read; a change detaches it (keyChanged), so a Verify after a change never joins a read from before.
    return this.reads.join(hash, this.loadFor);
  }

  async keyChanged(change: KeyChange): Promise<void> {
    this.counts.drops.self++;
    this.guard.changed(change.secretHash, change.record.version);
    this.local.drop(change.secretHash, change.record.version);
    this.reads.detach(change.secretHash);
    this.guard.prune();
  }

  private async load(hash: string): Promise<VerifiableKey | undefined> {
    const ticket = this.guard.ticket();
    const state = await this.store.findForVerify(hash);
    this.counts.postgres++;
    const version = state?.version ?? 0;
    if (!this.guard.mayFill(hash, version, ticket)) {
      this.counts.refusedFills++;
      return state === undefined ? undefined : toVerifiableKey(state);
    }
    if (state === undefined) {
      this.local.setUnknown(hash);
      return undefined;
    }
    const key = toVerifiableKey(state);
    this.local.set(hash, key);
    return key;
  }
}

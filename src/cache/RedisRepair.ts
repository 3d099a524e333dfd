import type { Invalidation, InvalidationOutbox } from '../store/InvalidationOutbox';
import type { OutboxRelay } from './OutboxRelay';

/** Retained rows read per statement of a repair. */
const REPAIR_BATCH = 1_000;

/**
 * The repair after a loss of trust: writes a tombstone into Redis for every
 * change still within the outbox's retention (Redis may have missed some, or
 * lost them in a restart, a failover or a flush), and drops each from this
 * instance's caches. Throws what the outbox or Redis threw (CacheTrust
 * classifies it: storeFailure.ts).
 */
export class RedisRepair {
  constructor(
    private readonly outbox: InvalidationOutbox,
    private readonly relay: OutboxRelay,
    private readonly options: { readonly retentionMs: number; readonly timeoutMs: number },
  ) {}

  /** Resolves with the number of rows it marked delivered. */
  async run(): Promise<number> {
    let after = '0';
    let marked = 0;
    for (;;) {
      const rows = await this.outbox.retained(after, this.options.retentionMs, REPAIR_BATCH, this.options.timeoutMs);
      marked += await this.relay.write(rows, 'repair');
      if (rows.length < REPAIR_BATCH) return marked;
      after = (rows[rows.length - 1] as Invalidation).seq;
    }
  }
}

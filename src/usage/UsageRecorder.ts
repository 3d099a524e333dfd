import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { VerifiableKey } from '../keys/VerifiableKey';
import type { Verdict } from '../keys/verdict';
import type { KeyUses, UsageStore } from '../store/UsageStore';
import type { UseRecorder } from '../verify/Verifier';

export interface UsageOptions {
  readonly flushIntervalMs: number;
  /** A batch holds at most this many keys; reaching it starts a flush at once. */
  readonly batchMaxKeys: number;
  /** Keys waiting to be written, at most (memory bound while Postgres is down). */
  readonly maxPendingKeys: number;
  readonly queryTimeoutMs: number;
}

/** Read by the metrics at scrape time. */
export class UsageCounts {
  recorded = 0;
  /** Uses of keys that did not fit within maxPendingKeys: lost. */
  dropped = 0;
  /** Postgres statements issued (one per batch attempt). */
  statements = 0;
  flushed = 0;
  failed = 0;
}

interface PendingUses {
  count: number;
  refused: number;
  lastAt: number;
  lastIp: string;
}

const PRUNE_EVERY_MS = 10 * 60_000;
const BATCH_ID_RETENTION_MS = 24 * 3_600_000;

/**
 * Counts uses of keys in memory and writes them in batches: on an interval,
 * and at once when a batch fills up. Each use costs Verify a map update.
 *
 * A batch, once taken, keeps its id until Postgres confirms it, and is
 * retried as is: a retry after an ambiguous failure (the statement committed,
 * the answer was lost) is then recognised and not counted twice. Uses
 * recorded meanwhile wait in the next batch, up to maxPendingKeys keys.
 */
export class UsageRecorder implements UseRecorder {
  private pending = new Map<string, PendingUses>();
  private batch: { readonly id: string; readonly uses: KeyUses[] } | undefined;
  private sequence = 0;
  private flushing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failing = false;
  private lastPrune = Date.now();
  private readonly instanceId = randomUUID();

  constructor(
    private readonly store: UsageStore,
    private readonly options: UsageOptions,
    private readonly counts: UsageCounts,
    private readonly logger: Logger,
  ) {}

  /** Keys with uses not yet written to Postgres. */
  get pendingKeys(): number {
    return this.pending.size + (this.batch?.uses.length ?? 0);
  }

  recordUse(key: VerifiableKey, clientIp: string, nowMs: number, verdict: Verdict): void {
    let uses = this.pending.get(key.id);
    if (uses === undefined) {
      if (this.pendingKeys >= this.options.maxPendingKeys) {
        this.counts.dropped++;
        return;
      }
      uses = { count: 0, refused: 0, lastAt: 0, lastIp: '' };
      this.pending.set(key.id, uses);
      if (this.pending.size >= this.options.batchMaxKeys && this.flushing === undefined) void this.flush();
    }
    uses.count++;
    if (verdict.httpStatus !== 200) uses.refused++;
    if (nowMs >= uses.lastAt) {
      uses.lastAt = nowMs;
      uses.lastIp = clientIp;
    }
    this.counts.recorded++;
  }

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.options.flushIntervalMs);
  }

  /**
   * Stops the interval and writes everything recorded, retrying until
   * `deadlineMs` (epoch ms). Resolves with the number of uses it could not write.
   */
  async stop(deadlineMs: number): Promise<number> {
    clearInterval(this.timer);
    while (this.pendingKeys > 0 && Date.now() < deadlineMs) {
      await this.flush();
      if (this.pendingKeys > 0) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    let lost = 0;
    for (const uses of this.pending.values()) lost += uses.count;
    for (const uses of this.batch?.uses ?? []) lost += uses.count;
    if (lost > 0) this.logger.error({ event: 'usage-lost', uses: lost, keys: this.pendingKeys }, 'usage counts could not be written before stopping');
    return lost;
  }

  /** Writes what has been recorded; one flush at a time (a second call joins the first). */
  flush(): Promise<void> {
    this.flushing ??= this.write().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  /**
   * Writes the batch that failed last time, if any, then what is pending now;
   * more only while full batches are waiting (under load, new uses keep
   * arriving: they wait for the next interval, not for an endless loop).
   */
  private async write(): Promise<void> {
    let rounds = this.batch === undefined ? 1 : 2;
    while (rounds > 0 || this.pending.size >= this.options.batchMaxKeys) {
      rounds--;
      if (this.batch === undefined) {
        if (this.pending.size === 0) break;
        this.batch = this.take();
      }
      this.counts.statements++;
      try {
        await this.store.apply(this.batch.id, this.batch.uses, this.options.queryTimeoutMs);
      } catch (error) {
        this.counts.failed++;
        if (!this.failing) this.logger.warn({ err: error, pendingKeys: this.pendingKeys }, 'writing usage counts failed; keeping them to retry');
        this.failing = true;
        return;
      }
      if (this.failing) this.logger.info({ event: 'usage-resumed' }, 'usage counts written again');
      this.failing = false;
      this.counts.flushed++;
      this.batch = undefined;
    }
    if (Date.now() - this.lastPrune > PRUNE_EVERY_MS) {
      this.lastPrune = Date.now();
      await this.store.pruneBatches(BATCH_ID_RETENTION_MS, this.options.queryTimeoutMs).catch(() => {});
    }
  }

  /** Moves up to batchMaxKeys keys out of `pending` into a batch with a new id. */
  private take(): { id: string; uses: KeyUses[] } {
    let source: Iterable<[string, PendingUses]>;
    if (this.pending.size <= this.options.batchMaxKeys) {
      source = this.pending;
      this.pending = new Map();
    } else {
      const taken: Array<[string, PendingUses]> = [];
      for (const entry of this.pending) {
        taken.push(entry);
        if (taken.length === this.options.batchMaxKeys) break;
      }
      for (const [keyId] of taken) this.pending.delete(keyId);
      source = taken;
    }
    const uses: KeyUses[] = [];
    for (const [keyId, use] of source) uses.push({ keyId, count: use.count, refused: use.refused, lastAt: use.lastAt, lastIp: use.lastIp });
    return { id: `${this.instanceId}:${++this.sequence}`, uses };
  }
}

import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { canonicalClientIp } from '../keys/clientIp';
import type { VerifiableKey } from '../keys/VerifiableKey';
import type { Verdict } from '../keys/verdict';
import { classifyWriteFailure, sqlStateOf, type WriteFailure } from '../store/sqlState';
import type { KeyUses, UsageStore } from '../store/UsageStore';
import type { UseRecorder } from '../verify/Verifier';
import { RetryBackoff } from './RetryBackoff';

export interface UsageOptions {
  readonly flushIntervalMs: number;
  /** A batch holds at most this many keys; reaching it starts a flush at once. */
  readonly batchMaxKeys: number;
  /** Keys waiting to be written, at most (memory bound while Postgres is down). */
  readonly maxPendingKeys: number;
  readonly queryTimeoutMs: number;
}

/** Time and chance, injected so that tests can fix them. */
export interface RetryTiming {
  /** Monotonic milliseconds. */
  readonly nowMs: () => number;
  /** A number in [0, 1). */
  readonly random: () => number;
}

const REAL_TIMING: RetryTiming = { nowMs: () => performance.now(), random: Math.random };

/** The longest wait between two attempts of a write that keeps failing transiently. */
export const RETRY_CAP_MS = 30_000;

/** Read by the metrics at scrape time. */
export class UsageCounts {
  recorded = 0;
  /** Uses of keys that did not fit within maxPendingKeys: lost. */
  dropped = 0;
  /** Postgres statements issued (one per batch attempt). */
  statements = 0;
  /** Batches (or parts of a split batch) written, deduplicated ones included. */
  flushed = 0;
  /** Batch attempts that failed, whatever the failure. */
  failed = 0;
  /** Batches Postgres had already applied when a retry sent them again (the retry changed nothing). */
  deduplicated = 0;
  /** Batch attempts Postgres refused for their content (permanent failures): split, or dropped when of one key. */
  refused = 0;
  /** Entries (one key's uses in a batch) dropped because Postgres refused them on their own. */
  rejectedEntries = 0;
  /** Uses lost in those entries. */
  rejectedUses = 0;
}

interface PendingUses {
  count: number;
  refused: number;
  lastAt: number;
  lastIp: string;
}

/** Uses taken out of `pending`, written in one statement under one batch id. */
interface Batch {
  readonly id: string;
  readonly uses: readonly KeyUses[];
}

const PRUNE_EVERY_MS = 10 * 60_000;
const BATCH_ID_RETENTION_MS = 24 * 3_600_000;
/** Rejected entries logged one by one per flush; the rest are logged as one sum. */
const REJECTIONS_LOGGED_PER_FLUSH = 10;

/**
 * Counts uses of keys in memory and writes them in batches: on an interval,
 * and at once when a batch fills up. Each use costs Verify a map update.
 *
 * A failed write is classified (`classifyWriteFailure`):
 * - transient (Postgres down, slow, busy): the batch keeps its id and is
 *   retried as is, after a capped exponential backoff with full jitter
 *   (interval flushes skip until then). A retry after an ambiguous failure
 *   (the statement committed, the answer was lost) is then recognised by its
 *   id and not counted twice. Uses recorded meanwhile wait in the next
 *   batch, up to maxPendingKeys keys.
 * - permanent (Postgres refuses a value): the statement committed nothing,
 *   so its id was not recorded and its halves may be written under ids of
 *   their own (`<id>/0`, `<id>/1`), recursively, until the entries Postgres
 *   refuses on their own are found: those are dropped, counted and logged by
 *   key id and SQLSTATE (never their values). The rest is written at once.
 */
export class UsageRecorder implements UseRecorder {
  private pending = new Map<string, PendingUses>();
  /** Taken and not yet written, in order: one batch, or the parts of a split one. */
  private parts: Batch[] = [];
  private partKeys = 0;
  private sequence = 0;
  private flushing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failing = false;
  private readonly backoff: RetryBackoff;
  private lastPrune: number;
  /** Rejected entries logged one by one in this flush, and the others, logged as one sum at its end. */
  private rejectionsLogged = 0;
  private unloggedRejections = { entries: 0, uses: 0 };
  private readonly instanceId = randomUUID();

  constructor(
    private readonly store: UsageStore,
    private readonly options: UsageOptions,
    private readonly counts: UsageCounts,
    private readonly logger: Logger,
    private readonly timing: RetryTiming = REAL_TIMING,
  ) {
    this.backoff = new RetryBackoff({ baseMs: options.flushIntervalMs, capMs: Math.max(RETRY_CAP_MS, options.flushIntervalMs) }, timing.random);
    this.lastPrune = timing.nowMs();
  }

  /** Keys with uses not yet written to Postgres. */
  get pendingKeys(): number {
    return this.pending.size + this.partKeys;
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
   * Stops the interval and writes everything recorded, retrying (every
   * 100 ms, whatever the backoff) until `deadlineMs` (epoch ms). Resolves
   * with the number of uses it could not write.
   */
  async stop(deadlineMs: number): Promise<number> {
    clearInterval(this.timer);
    while (this.pendingKeys > 0 && Date.now() < deadlineMs) {
      await this.flush(true);
      if (this.pendingKeys > 0) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    let lost = 0;
    for (const uses of this.pending.values()) lost += uses.count;
    for (const part of this.parts) for (const uses of part.uses) lost += uses.count;
    if (lost > 0) this.logger.error({ event: 'usage-lost', uses: lost, keys: this.pendingKeys }, 'usage counts could not be written before stopping');
    return lost;
  }

  /**
   * Writes what has been recorded; one flush at a time (a second call joins
   * the first). While a transient failure is being backed off, does nothing
   * unless `force`d.
   */
  flush(force = false): Promise<void> {
    this.flushing ??= this.write(force).finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  /**
   * Writes what is left of a batch that failed before, if any, then what is
   * pending now; more only while full batches are waiting (under load, new
   * uses keep arriving: they wait for the next interval, not for an endless
   * loop). Stops at the first transient failure.
   */
  private async write(force: boolean): Promise<void> {
    if (!force && !this.backoff.ready(this.timing.nowMs())) return;
    this.rejectionsLogged = 0;
    try {
      let fresh = 1;
      for (;;) {
        if (this.parts.length === 0) {
          if (this.pending.size === 0 || (fresh <= 0 && this.pending.size < this.options.batchMaxKeys)) break;
          fresh--;
          const batch = this.take();
          this.parts.push(batch);
          this.partKeys += batch.uses.length;
        }
        if ((await this.attempt(this.parts[0] as Batch)) === 'transient') return;
      }
    } finally {
      this.logUnloggedRejections();
    }
    if (this.timing.nowMs() - this.lastPrune > PRUNE_EVERY_MS) {
      this.lastPrune = this.timing.nowMs();
      await this.store.pruneBatches(BATCH_ID_RETENTION_MS, this.options.queryTimeoutMs).catch(() => {});
    }
  }

  /** One statement for the first part; resolves with how it failed, if it did. */
  private async attempt(part: Batch): Promise<WriteFailure | undefined> {
    this.counts.statements++;
    let applied: boolean;
    try {
      applied = await this.store.apply(part.id, part.uses, this.options.queryTimeoutMs);
    } catch (error) {
      this.counts.failed++;
      const failure = classifyWriteFailure(error);
      if (failure === 'transient') this.retryLater(error);
      else this.splitOrDrop(part, sqlStateOf(error) ?? 'unknown', (error as { constraint?: unknown }).constraint);
      return failure;
    }
    this.parts.shift();
    this.partKeys -= part.uses.length;
    this.counts.flushed++;
    if (!applied) this.counts.deduplicated++;
    this.backoff.succeeded();
    if (this.failing) this.logger.info({ event: 'usage-resumed' }, 'usage counts written again');
    this.failing = false;
    return undefined;
  }

  private retryLater(error: unknown): void {
    const retryInMs = this.backoff.failed(this.timing.nowMs());
    // Transient failures (connection, time limit, conflict) carry no values of the batch.
    if (!this.failing) this.logger.warn({ event: 'usage-write-failed', err: error, pendingKeys: this.pendingKeys, retryInMs }, 'writing usage counts failed; keeping them to retry');
    this.failing = true;
  }

  /**
   * Replaces a refused part by its two halves, or drops it when it holds one
   * key. Logs the SQLSTATE and key ids, never the error's message or detail:
   * they may quote the refused value (a client address, for one).
   */
  private splitOrDrop(part: Batch, sqlState: string, constraint: unknown): void {
    this.counts.refused++;
    this.parts.shift();
    const constraintField = typeof constraint === 'string' && constraint !== '' ? { constraint } : {};
    if (part.uses.length > 1) {
      if (!part.id.includes('/')) {
        this.logger.warn(
          { event: 'usage-batch-refused', batchId: part.id, keys: part.uses.length, sqlState, ...constraintField },
          'PostgreSQL refused a usage batch; writing it in parts to find the entries it refuses',
        );
      }
      const middle = Math.ceil(part.uses.length / 2);
      this.parts.unshift({ id: `${part.id}/0`, uses: part.uses.slice(0, middle) }, { id: `${part.id}/1`, uses: part.uses.slice(middle) });
      return;
    }
    const uses = part.uses[0] as KeyUses;
    this.partKeys--;
    this.counts.rejectedEntries++;
    this.counts.rejectedUses += uses.count;
    if (this.rejectionsLogged < REJECTIONS_LOGGED_PER_FLUSH) {
      this.rejectionsLogged++;
      this.logger.warn(
        { event: 'usage-rejected', keyId: uses.keyId, uses: uses.count, sqlState, ...constraintField },
        'PostgreSQL refused the usage of a key; its uses in this batch are dropped',
      );
    } else {
      this.unloggedRejections.entries++;
      this.unloggedRejections.uses += uses.count;
    }
  }

  private logUnloggedRejections(): void {
    const { entries, uses } = this.unloggedRejections;
    if (entries === 0) return;
    this.unloggedRejections = { entries: 0, uses: 0 };
    this.logger.warn({ event: 'usage-rejected', entries, uses }, 'PostgreSQL refused the usage of more keys; their uses in this batch are dropped');
  }

  /** Moves up to batchMaxKeys keys out of `pending` into a batch with a new id. */
  private take(): Batch {
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
    // The caller's address is made canonical here, once per key and batch, not on every Verify.
    for (const [keyId, use] of source) uses.push({ keyId, count: use.count, refused: use.refused, lastAt: use.lastAt, lastIp: canonicalClientIp(use.lastIp) });
    return { id: `${this.instanceId}:${++this.sequence}`, uses };
  }
}

import { KeywardError } from '../errors';

interface Waiting<V> {
  readonly key: string;
  /** performance.now() by which the lookup must be answered. */
  readonly deadline: number;
  resolve(value: V | undefined): void;
  reject(error: unknown): void;
}

export interface LookupBatcherOptions {
  readonly maxBatch: number;
  /** Queries at once: as many as the connections they run on (the batcher counts a query until it has really ended). */
  readonly maxInFlight: number;
  /** A lookup's time limit, from the moment it is asked: the wait for a batch and a connection included. */
  readonly timeoutMs: number;
}

/** Runs one query for `keys` within `timeoutMs`; settles only once the query is over and its connection free again. */
export type BatchFetch<V> = (keys: string[], timeoutMs: number) => Promise<Map<string, V>>;

const timedOut = (timeoutMs: number): KeywardError =>
  new KeywardError('UNAVAILABLE', `the key store (PostgreSQL) did not answer within ${timeoutMs} ms; try again`);

/**
 * Gathers the lookups that arrive while others are in flight into one query
 * (`where x = any($1)`): under load, Postgres answers many Verify calls per
 * round trip instead of one. A lookup only ever joins a query not sent yet,
 * so what it reads is never older than the lookup itself.
 *
 * Every lookup is answered by its deadline, whether it is still queued or its
 * query is slow: timers (one per queue and per batch, not per lookup) reject
 * what is due with UNAVAILABLE. A query that ran out of time still counts
 * against `maxInFlight` until it has really ended (its statement cancelled by
 * PostgreSQL's statement_timeout, or its connection closed), so a slow
 * PostgreSQL never makes the batcher use more connections than it was given.
 */
export class LookupBatcher<V> {
  private queue: Array<Waiting<V>> = [];
  private scheduled = false;
  private inFlight = 0;
  private queueTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly fetch: BatchFetch<V>,
    private readonly options: LookupBatcherOptions,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Queries running now (for tests and metrics). */
  get running(): number {
    return this.inFlight;
  }

  find(key: string): Promise<V | undefined> {
    return new Promise((resolve, reject) => {
      this.queue.push({ key, deadline: this.now() + this.options.timeoutMs, resolve, reject });
      this.schedule();
      if (this.queueTimer === undefined) this.armQueueTimer();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight >= this.options.maxInFlight) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    while (this.queue.length > 0 && this.inFlight < this.options.maxInFlight) {
      this.dispatch(this.queue.splice(0, this.options.maxBatch));
    }
    clearTimeout(this.queueTimer);
    this.armQueueTimer();
  }

  private dispatch(batch: Array<Waiting<V>>): void {
    const now = this.now();
    const live = batch.filter((waiting) => {
      if (waiting.deadline > now) return true;
      waiting.reject(timedOut(this.options.timeoutMs));
      return false;
    });
    if (live.length === 0) return;
    this.inFlight++;
    // Lookups arrive in deadline order: the last one's is the query's.
    const timeoutMs = Math.max(1, Math.ceil((live[live.length - 1] as Waiting<V>).deadline - now));
    let expiry: NodeJS.Timeout | undefined;
    let answered = 0;
    const expire = (): void => {
      const at = this.now();
      while (answered < live.length && (live[answered] as Waiting<V>).deadline <= at) {
        (live[answered] as Waiting<V>).reject(timedOut(this.options.timeoutMs));
        answered++;
      }
      if (answered < live.length) expiry = setTimeout(expire, (live[answered] as Waiting<V>).deadline - at);
    };
    expiry = setTimeout(expire, (live[0] as Waiting<V>).deadline - now);
    this.fetch([...new Set(live.map((waiting) => waiting.key))], timeoutMs).then(
      (found) => {
        for (let i = answered; i < live.length; i++) (live[i] as Waiting<V>).resolve(found.get((live[i] as Waiting<V>).key));
      },
      (error: unknown) => {
        for (let i = answered; i < live.length; i++) (live[i] as Waiting<V>).reject(error);
      },
    ).finally(() => {
      clearTimeout(expiry);
      this.inFlight--;
      if (this.queue.length > 0) this.schedule();
    });
  }

  /** Rejects queued lookups that are due, and sets a timer for the next one. */
  private armQueueTimer(): void {
    this.queueTimer = undefined;
    const head = this.queue[0];
    if (head === undefined) return;
    this.queueTimer = setTimeout(() => {
      const at = this.now();
      let due = 0;
      while (due < this.queue.length && (this.queue[due] as Waiting<V>).deadline <= at) due++;
      for (const waiting of this.queue.splice(0, due)) waiting.reject(timedOut(this.options.timeoutMs));
      this.armQueueTimer();
    }, Math.max(0, head.deadline - this.now()));
  }
}

import { KeywardError } from '../errors';

interface Waiting<V> {
  readonly key: string;
  readonly since: number;
  resolve(value: V | undefined): void;
  reject(error: unknown): void;
}

/**
 * Gathers the lookups that arrive while others are in flight into one query
 * (`where x = any($1)`): under load, Postgres answers many Verify calls per
 * round trip instead of one. A lookup only ever joins a query not sent yet,
 * so what it reads is never older than the lookup itself.
 */
export class LookupBatcher<V> {
  private queue: Array<Waiting<V>> = [];
  private scheduled = false;
  private inFlight = 0;

  constructor(
    private readonly fetch: (keys: string[]) => Promise<Map<string, V>>,
    private readonly options: { readonly maxBatch: number; readonly maxInFlight: number; readonly timeoutMs: number },
  ) {}

  find(key: string): Promise<V | undefined> {
    return new Promise((resolve, reject) => {
      this.queue.push({ key, since: performance.now(), resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight >= this.options.maxInFlight) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.scheduled = false;
    const now = performance.now();
    while (this.queue.length > 0 && this.inFlight < this.options.maxInFlight) {
      const batch = this.queue.splice(0, this.options.maxBatch);
      const live = batch.filter((waiting) => {
        if (now - waiting.since <= this.options.timeoutMs) return true;
        waiting.reject(new KeywardError('UNAVAILABLE', 'the key store (PostgreSQL) is unavailable; try again'));
        return false;
      });
      if (live.length === 0) continue;
      this.inFlight++;
      this.fetch([...new Set(live.map((waiting) => waiting.key))]).then(
        (found) => {
          for (const waiting of live) waiting.resolve(found.get(waiting.key));
        },
        (error: unknown) => {
          for (const waiting of live) waiting.reject(error);
        },
      ).finally(() => {
        this.inFlight--;
        if (this.queue.length > 0) this.schedule();
      });
    }
  }
}

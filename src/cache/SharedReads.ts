/**
 * Reads in flight by hash, shared: a lookup of a hash already being read
 * joins that read instead of starting another. `detach` (a change to the
 * hash went by) and `clear` make later lookups start reads of their own, so a
 * Verify that begins after a change never joins a read from before it; the
 * detached read still settles for those already waiting on it.
 */
export class SharedReads<T> {
  private readonly inflight = new Map<string, Promise<T>>();

  /** The read of `hash` under way, or the one `load` starts now (forgotten once it settles). */
  join(hash: string, load: (hash: string) => Promise<T>): Promise<T> {
    const pending = this.inflight.get(hash);
    if (pending !== undefined) return pending;
    const started = load(hash);
    this.inflight.set(hash, started);
    const forget = (): void => {
      if (this.inflight.get(hash) === started) this.inflight.delete(hash);
    };
    started.then(forget, forget);
    return started;
  }

  detach(hash: string): void {
    this.inflight.delete(hash);
  }

  clear(): void {
    this.inflight.clear();
  }
}

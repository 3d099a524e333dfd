import { performance } from 'node:perf_hooks';

/**
 * Refuses stale fills, for both cache tiers. Every lookup takes a `ticket()`
 * before it reads Redis or Postgres, and asks `mayFill` before it writes what
 * it read into a cache. Every change heard of leaves a version floor for its
 * hash; a fill older than the floor is refused, and so is one whose ticket
 * predates a `reset()` (trust lost) or a floor since forgotten.
 */
export class FillGuard {
  /** hash → newest version heard of, with the generation and (monotonic) time it was heard (insertion-ordered). */
  private readonly floors = new Map<string, { version: number; generation: number; at: number }>();
  private generation = 0;
  /** Tickets below this were issued before a reset or a forgotten floor. */
  private oldestValidTicket = 0;

  /**
   * @param retentionMs how long a floor is kept (Durations.fillGuardRetentionMs):
   *   longer than any lookup (Redis plus Postgres time limits) and than the
   *   time until a change is in Redis (relayed once overdue, within a lease).
   * @param now the monotonic clock floors are timed on (performance.now): a
   *   step of the wall clock must neither forget every floor at once nor keep
   *   them forever.
   */
  constructor(
    private readonly retentionMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  ticket(): number {
    return this.generation;
  }

  /** Records that `hash` changed to `version`. */
  changed(hash: string, version: number): void {
    const now = this.now();
    this.generation++;
    const existing = this.floors.get(hash);
    if (existing === undefined || existing.version < version) {
      this.floors.delete(hash);
      this.floors.set(hash, { version, generation: this.generation, at: now });
    }
  }

  /** Refuses every fill whose lookup began before now. */
  reset(): void {
    this.generation++;
    this.oldestValidTicket = this.generation;
  }

  /** Whether a lookup that took `ticket` may cache `version` of `hash` (0 for "no such key"). */
  mayFill(hash: string, version: number, ticket: number): boolean {
    return ticket >= this.oldestValidTicket && !this.isStale(hash, version);
  }

  /** Whether a change newer than `version` of this hash was heard of recently. */
  isStale(hash: string, version: number): boolean {
    const floor = this.floors.get(hash);
    return floor !== undefined && version < floor.version;
  }

  /** Forgets floors older than the retention; fills whose tickets predate them are then refused. */
  prune(): void {
    const now = this.now();
    for (const [hash, floor] of this.floors) {
      if (now - floor.at < this.retentionMs) break;
      this.floors.delete(hash);
      this.oldestValidTicket = Math.max(this.oldestValidTicket, floor.generation);
    }
  }

  get size(): number {
    return this.floors.size;
  }
}

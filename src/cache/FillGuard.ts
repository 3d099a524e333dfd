import { performance } from 'node:perf_hooks';

/**
 * Refuses stale fills, for both cache tiers. Every lookup takes a `ticket()`
 * before it reads Redis or Postgres, and asks `mayFill` before it writes what
 * it read into a cache. Every change heard of leaves a version floor for its
 * hash; a fill older than the floor is refused, and so is one whose ticket
 * predates a `reset()` (trust lost) or a floor since forgotten.
 *
 * A change read from the outbox that no instance has written into Redis yet
 * (undelivered) is `held`: its floor is kept much longer (until any Redis
 * entry older than it has expired), because relaying a large backlog into
 * Redis (a bulk change) can take longer than the usual retention, and an
 * old Redis copy must count as a miss until the tombstone lands.
 */
export class FillGuard {
  /** hash → newest version heard of, with the generation and (monotonic) time it was heard (insertion-ordered). */
  private readonly floors = new Map<string, { version: number; generation: number; at: number }>();
  /** The same for held floors (kept `heldMs`), apart so that each map stays ordered by time. */
  private readonly held = new Map<string, { version: number; generation: number; at: number }>();
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
    /** How long a held floor is kept (Durations.heldFloorRetentionMs). */
    private readonly heldMs: number = retentionMs,
  ) {}

  ticket(): number {
    return this.generation;
  }

  /** Records that `hash` changed to `version`; `held`: the change may not be in Redis for a long while. */
  changed(hash: string, version: number, held = false): void {
    const now = this.now();
    this.generation++;
    const floors = held ? this.held : this.floors;
    const existing = floors.get(hash);
    if (existing === undefined || existing.version < version) {
      floors.delete(hash);
      floors.set(hash, { version, generation: this.generation, at: now });
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
    if (floor !== undefined && version < floor.version) return true;
    if (this.held.size === 0) return false;
    const held = this.held.get(hash);
    return held !== undefined && version < held.version;
  }

  /** Forgets floors older than the retention; fills whose tickets predate them are then refused. */
  prune(): void {
    const now = this.now();
    this.pruneMap(this.floors, now, this.retentionMs);
    this.pruneMap(this.held, now, this.heldMs);
  }

  private pruneMap(floors: Map<string, { generation: number; at: number }>, now: number, retentionMs: number): void {
    for (const [hash, floor] of floors) {
      if (now - floor.at < retentionMs) break;
      floors.delete(hash);
      this.oldestValidTicket = Math.max(this.oldestValidTicket, floor.generation);
    }
  }

  get size(): number {
    return this.floors.size + this.held.size;
  }
}

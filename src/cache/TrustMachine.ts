import type { FailureKind } from '../store/storeFailure';

/**
 * When an instance may use its caches, as a pure state machine: timestamped
 * events in, "trusted until" and actions out; no I/O, no timers, no clock of
 * its own (CacheTrust feeds it performance.now() and carries out the
 * actions). README, "Caching and revocation", states the argument; each
 * rule below is one of its lines.
 *
 * The caches are trusted until the earliest of:
 * - the subscription proofs: a PING answered on the subscriber connection
 *   and a membership renewal, each counted from when it was sent, plus the
 *   lease; only while subscribed, and only proofs sent since the current
 *   subscription was made;
 * - the outbox proof: the last completed outbox read, from when it was
 *   sent, plus the lease; or never, while PostgreSQL is unreachable (no
 *   change can commit that this instance could miss); or already, while a
 *   repair deferred by an unreachable PostgreSQL waits to run now that it answers;
 * and only in the `trusted` phase, reached by a repair (every retained
 * outbox row tombstoned into Redis) that began after trust was last lost
 * and ended while the subscription proofs held. Every loss of trust
 * empties the in-process cache; so do the start and the end of a repair.
 */
export type TrustPhase = 'untrusted' | 'repairing' | 'trusted';

export type TrustEvent =
  /** The subscription was (re-)established: announcements in between were lost. */
  | { readonly type: 'subscribed' }
  /** The subscription was lost. */
  | { readonly type: 'unsubscribed' }
  /** A PING sent at `sentAt` on the current subscription was answered. */
  | { readonly type: 'ping-answered'; readonly sentAt: number }
  /** A membership renewal sent at `sentAt` on the current subscription was answered. */
  | { readonly type: 'membership-renewed'; readonly sentAt: number }
  /** The command connection closed: announcers may no longer see this instance's renewal. */
  | { readonly type: 'membership-lost' }
  /** An outbox read sent at `sentAt` completed, its relay included. */
  | { readonly type: 'outbox-read'; readonly sentAt: number }
  /** An outbox read failed. */
  | { readonly type: 'outbox-failed'; readonly failure: FailureKind }
  /** The repair of `attempt` completed. */
  | { readonly type: 'repair-done'; readonly attempt: number }
  /** The repair of `attempt` failed. */
  | { readonly type: 'repair-failed'; readonly attempt: number; readonly failure: FailureKind }
  /** Redis lost writes without dropping the connections (its data went back or was flushed; `serverChanged`: another server answers). */
  | { readonly type: 'redis-reset'; readonly reason: string; readonly serverChanged: boolean }
  /** Time passed (every heartbeat interval): lapses are noticed and repairs begun on ticks. */
  | { readonly type: 'tick' };

export type TrustAction =
  /** Empty the in-process cache and refuse fills of lookups begun before. */
  | { readonly type: 'clear' }
  /** Tombstone every retained outbox row into Redis, then report repair-done or repair-failed with `attempt`. */
  | { readonly type: 'repair'; readonly attempt: number }
  /** Drop the subscription and make it anew (after redis-reset of another server: the subscription was on the old one). */
  | { readonly type: 'resubscribe' }
  /** The caches are in use again; `deferred`: without the repair, which waits for PostgreSQL. */
  | { readonly type: 'trusted'; readonly deferred: boolean }
  /** The caches stopped being trusted (emitted only when they were). */
  | { readonly type: 'untrusted'; readonly reason: string }
  /** No outbox read completed within the lease: caches bypassed until one does (trust not lost). */
  | { readonly type: 'outbox-lapsed' };

export class TrustMachine {
  private phase_: TrustPhase = 'untrusted';
  private subscribed = false;
  /** When the current subscription was made: proofs sent before it belong to an older one. */
  private subscribedAt = Number.POSITIVE_INFINITY;
  private provenAt = Number.NEGATIVE_INFINITY;
  private renewedAt = Number.NEGATIVE_INFINITY;
  private polledAt = Number.NEGATIVE_INFINITY;
  private pgUnreachable = false;
  /** Trusted without the repair (PostgreSQL was unreachable): it runs once PostgreSQL answers. */
  private repairPending = false;
  private pendingRepairRunning = false;
  /** Numbers repairs; incremented at every loss of trust, so that a repair begun before cannot restore it. */
  private attempt = 0;
  private lapsed = false;
  private until = Number.NEGATIVE_INFINITY;

  constructor(private readonly leaseMs: number) {}

  get phase(): TrustPhase {
    return this.phase_;
  }

  /** performance.now() before which the caches may be used. */
  get trustedUntil(): number {
    return this.until;
  }

  /** Until when the subscription proofs hold (announcements heard, membership listed). */
  get liveUntil(): number {
    return this.subscribed ? Math.min(this.provenAt, this.renewedAt) + this.leaseMs : Number.NEGATIVE_INFINITY;
  }

  /** Applies `event`, which happened at `now` (monotonic ms); returns what to do, in order. */
  handle(event: TrustEvent, now: number): TrustAction[] {
    const actions: TrustAction[] = [];
    switch (event.type) {
      case 'subscribed':
        this.subscribed = true;
        this.subscribedAt = now;
        this.resetProofs();
        this.lose('the invalidation subscription was re-established (announcements in between were lost)', actions);
        break;
      case 'unsubscribed':
        this.subscribed = false;
        this.resetProofs();
        this.lose('the invalidation subscription was lost', actions);
        break;
      case 'ping-answered':
        if (this.subscribed && event.sentAt >= this.subscribedAt) this.provenAt = Math.max(this.provenAt, event.sentAt);
        break;
      case 'membership-renewed':
        if (this.subscribed && event.sentAt >= this.subscribedAt) this.renewedAt = Math.max(this.renewedAt, event.sentAt);
        break;
      case 'membership-lost':
        this.renewedAt = Number.NEGATIVE_INFINITY;
        break;
      case 'outbox-read':
        this.polledAt = Math.max(this.polledAt, event.sentAt);
        this.pgUnreachable = false;
        if (this.phase_ === 'trusted' && this.repairPending && !this.pendingRepairRunning) {
          this.pendingRepairRunning = true;
          actions.push({ type: 'repair', attempt: this.attempt });
        }
        break;
      case 'outbox-failed':
        // Only a PostgreSQL that cannot be reached keeps the caches trusted; a slow one still commits changes.
        this.pgUnreachable = event.failure === 'unreachable';
        break;
      case 'repair-done':
        if (event.attempt !== this.attempt) break;
        if (this.phase_ === 'repairing') this.becomeTrusted(now, false, actions);
        else if (this.pendingRepairRunning) {
          this.pendingRepairRunning = false;
          this.repairPending = false;
        }
        break;
      case 'repair-failed':
        if (event.attempt !== this.attempt) break;
        if (event.failure === 'unreachable') this.pgUnreachable = true;
        if (this.phase_ === 'repairing') {
          if (event.failure === 'unreachable') {
            this.repairPending = true;
            this.becomeTrusted(now, true, actions);
          } else this.phase_ = 'untrusted'; // tried again at the next tick
        } else if (this.pendingRepairRunning) this.pendingRepairRunning = false; // tried again after the next outbox read
        break;
      case 'redis-reset':
        this.lose(event.reason, actions);
        if (event.serverChanged) actions.push({ type: 'resubscribe' });
        break;
      case 'tick':
        break;
    }
    this.evaluate(event, now, actions);
    return actions;
  }

  private resetProofs(): void {
    this.provenAt = Number.NEGATIVE_INFINITY;
    this.renewedAt = Number.NEGATIVE_INFINITY;
  }

  private get outboxUntil(): number {
    if (this.pgUnreachable) return Number.POSITIVE_INFINITY;
    if (this.repairPending) return Number.NEGATIVE_INFINITY;
    return this.polledAt + this.leaseMs;
  }

  private becomeTrusted(now: number, deferred: boolean, actions: TrustAction[]): void {
    if (now >= this.liveUntil) {
      // The subscription proofs lapsed during the repair: begin again at the next tick.
      this.phase_ = 'untrusted';
      return;
    }
    this.phase_ = 'trusted';
    this.lapsed = false;
    actions.push({ type: 'clear' }, { type: 'trusted', deferred });
  }

  private lose(reason: string, actions: TrustAction[]): void {
    this.attempt++;
    if (this.phase_ === 'trusted') actions.push({ type: 'untrusted', reason });
    this.phase_ = 'untrusted';
    this.repairPending = false;
    this.pendingRepairRunning = false;
    actions.push({ type: 'clear' });
  }

  private evaluate(event: TrustEvent, now: number, actions: TrustAction[]): void {
    if (this.phase_ !== 'untrusted' && now >= this.liveUntil) this.lose('the invalidation lease expired', actions);
    // Repairs begin on ticks only, so that one failing at once is retried at the heartbeat's pace.
    if (this.phase_ === 'untrusted' && event.type === 'tick' && now < this.liveUntil) {
      this.phase_ = 'repairing';
      actions.push({ type: 'clear' }, { type: 'repair', attempt: this.attempt });
    }
    const outboxUntil = this.outboxUntil;
    if (this.phase_ === 'trusted') {
      const lapsed = Number.isFinite(this.polledAt) && !this.repairPending && now >= outboxUntil;
      if (lapsed && !this.lapsed) actions.push({ type: 'outbox-lapsed' });
      this.lapsed = lapsed;
      this.until = Math.min(this.liveUntil, outboxUntil);
    } else this.until = Number.NEGATIVE_INFINITY;
  }
}

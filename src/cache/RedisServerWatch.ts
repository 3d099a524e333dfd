import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { RedisTier } from './RedisTier';

/**
 * Decides from the answers of one instance's write witness whether Redis lost
 * writes without dropping the connection (pure: no I/O, no clock of its own).
 *
 * The instance alone writes its witness (`<prefix>witness:<instance>`; on a
 * cluster one per master, `<prefix>{<tag>}witness:<instance>`), one
 * write in flight at a time, each value greater than the last; each write
 * answers the value it replaced and the server's run_id. Redis lost writes
 * when:
 * - the run_id changed: another server answers on the same connection (a
 *   failover behind a proxy that keeps client connections), or a restart;
 * - the value replaced is older than one already confirmed, or missing
 *   while a confirmed one cannot have expired yet: the data went back (a
 *   restore, a failover to a lagging replica) or was flushed.
 * A write whose answer never came (a timeout) may or may not have run, so it
 * raises nothing; writes on one connection run in order, so a later write
 * finds it or an older value that was confirmed. After the connection closes
 * nothing is expected (writes of the old and the new connection are not
 * ordered, and a restart is handled already: the subscription drops with
 * the connections) until a write on the new one is answered.
 */
export interface LostWrites {
  readonly reason: string;
  /** Another server answers (run_id changed): subscriptions made on the old one are gone too. */
  readonly serverChanged: boolean;
}

export class ServerWitness {
  private sent = 0;
  private confirmed: number | undefined;
  private confirmedAt = Number.NEGATIVE_INFINITY;
  private runId: string | undefined;

  constructor(private readonly ttlMs: number) {}

  /** The value of the next write. */
  next(): string {
    this.sent++;
    return String(this.sent);
  }

  /**
   * The write of `value` (from next()) was answered at `now` (monotonic ms)
   * with what it replaced and the server's run_id: why Redis lost writes
   * (and whether the server itself changed), or undefined.
   */
  answered(value: string, previous: string | null, runId: string | undefined, now: number): LostWrites | undefined {
    let lost: LostWrites | undefined;
    if (runId !== undefined && this.runId !== undefined && runId !== this.runId) lost = { reason: `the Redis server changed (run_id ${this.runId} → ${runId})`, serverChanged: true };
    else if (this.confirmed !== undefined) {
      if (previous === null) {
        // Margin: the TTL runs on Redis's clock, from when the write ran.
        if (now - this.confirmedAt < this.ttlMs / 2) lost = { reason: 'the write witness is gone (Redis flushed or replaced)', serverChanged: false };
      } else if (Number(previous) < this.confirmed) lost = { reason: `the write witness went back from ${this.confirmed} to ${previous}`, serverChanged: false };
    }
    if (runId !== undefined) this.runId = runId;
    this.confirmed = Number(value);
    this.confirmedAt = now;
    return lost;
  }

  /** The connection closed: writes on the next one are not ordered after those on this one, and may reach another server. */
  connectionClosed(): void {
    this.confirmed = undefined;
    this.runId = undefined;
  }
}

export class ServerWatchCounts {
  /** Times Redis was found to have lost writes over a live connection. */
  resets = 0;
  /** 1 while Redis's eviction policy is noeviction, 0 when it is another, -1 until known. */
  noEviction = -1;
}

/**
 * Watches the Redis server under the command connection (README, "Caching
 * and revocation"): writes the instance's witness every heartbeat (one at a
 * time) and reports a loss of writes (ServerWitness) to CacheTrust, which
 * handles it as a loss of trust with the repair. Checks the eviction policy
 * once per connection: anything but noeviction can evict a tombstone.
 *
 * On a Redis Cluster there is one witness per master (RedisTier.witnessKeys:
 * in the first slot each master serves), each with its own ServerWitness
 * kept by slot, not by server: a failover of any master to a replica that
 * lost writes, a restart or a FLUSHALL of any master is noticed (the value
 * went back or is gone, or another run_id serves the slot), and a witness
 * whose master changed (failover, or the slot migrated) raises the loss
 * once: a repair, never a miss.
 */
export class RedisServerWatch {
  /** Witness key → its state and whether a write is in flight. */
  private readonly witnesses = new Map<string, { witness: ServerWitness; inFlight: boolean }>();
  private policyKnown = false;

  constructor(
    private readonly tier: RedisTier,
    private readonly instanceId: string,
    private readonly options: { readonly ttlMs: number; readonly timeoutMs: number },
    private readonly counts: ServerWatchCounts,
    private readonly logger: Logger,
    private readonly report: (lost: LostWrites) => void,
  ) {
    tier.onClose(() => {
      if (tier.witnessesEndWithConnection) for (const { witness } of this.witnesses.values()) witness.connectionClosed();
      this.policyKnown = false;
    });
  }

  check(): void {
    if (!this.tier.ready) return;
    if (!this.policyKnown) this.checkPolicy();
    // States are kept when a key drops out of the layout for a while (a
    // refresh in the middle of a failover): forgetting one would forget what
    // a new server must still hold. At most one per slot that was ever first.
    for (const key of this.tier.witnessKeys(this.instanceId)) {
      let state = this.witnesses.get(key);
      if (state === undefined) {
        state = { witness: new ServerWitness(this.options.ttlMs), inFlight: false };
        this.witnesses.set(key, state);
      }
      if (!state.inFlight) this.write(key, state);
    }
  }

  private write(key: string, state: { witness: ServerWitness; inFlight: boolean }): void {
    state.inFlight = true;
    const value = state.witness.next();
    this.tier
      .witness(key, value, this.options.ttlMs, this.options.timeoutMs)
      .then(
        ({ previous, runId }) => {
          const lost = state.witness.answered(value, previous, runId, performance.now());
          if (lost === undefined) return;
          this.counts.resets++;
          this.logger.warn({ event: 'redis-lost-writes', reason: lost.reason, witness: key }, 'redis lost writes without dropping the connection: caches bypassed until redis is repaired from the outbox');
          this.report(lost);
        },
        (error: unknown) => this.logger.debug({ err: error }, 'the redis write witness failed'),
      )
      .finally(() => {
        state.inFlight = false;
      });
  }

  private checkPolicy(): void {
    this.policyKnown = true;
    this.tier.evictionPolicy().then(
      (policy) => {
        if (policy === undefined) return;
        this.counts.noEviction = policy === 'noeviction' ? 1 : 0;
        if (policy !== 'noeviction') {
          this.logger.warn({ event: 'redis-eviction-policy', policy }, 'redis may evict keyward entries (maxmemory-policy is not noeviction): an evicted tombstone can let a stale copy be filled again; set maxmemory-policy noeviction');
        }
      },
      () => {
        this.policyKnown = false;
      },
    );
  }
}

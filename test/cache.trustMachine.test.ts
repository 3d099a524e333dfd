import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type TrustAction, type TrustEvent, TrustMachine } from '../src/cache/TrustMachine';
import { ServerWitness } from '../src/cache/RedisServerWatch';

/**
 * The trust state machine on a fake clock: one test per row of the README's
 * "When a dependency fails" table (the rows that concern trust), in
 * milliseconds, with the default lease of 1,000 ms and heartbeats every 250.
 */
const LEASE = 1_000;
const BEAT = 250;

/** A machine and a clock; `at(ms, event)` moves the clock and applies the event. */
class Harness {
  readonly machine = new TrustMachine(LEASE);
  now = 0;
  readonly log: Array<{ at: number; actions: TrustAction[] }> = [];
  /** Repairs asked for and not yet reported. */
  readonly repairs: number[] = [];

  at(ms: number, event: TrustEvent): TrustAction[] {
    assert.ok(ms >= this.now, 'the fake clock only moves forward');
    this.now = ms;
    const actions = this.machine.handle(event, ms);
    this.log.push({ at: ms, actions });
    for (const action of actions) if (action.type === 'repair') this.repairs.push(action.attempt);
    return actions;
  }

  get trusted(): boolean {
    return this.now < this.machine.trustedUntil;
  }

  /** A healthy heartbeat at `ms`: PING and renewal answered, outbox read, all sent at `ms`, then a tick. */
  beat(ms: number, outbox: 'read' | 'unreachable' | 'slow' | 'none' = 'read'): TrustAction[] {
    const actions = [...this.at(ms, { type: 'ping-answered', sentAt: ms }), ...this.at(ms, { type: 'membership-renewed', sentAt: ms })];
    if (outbox === 'read') actions.push(...this.at(ms, { type: 'outbox-read', sentAt: ms }));
    else if (outbox !== 'none') actions.push(...this.at(ms, { type: 'outbox-failed', failure: outbox }));
    actions.push(...this.at(ms, { type: 'tick' }));
    return actions;
  }

  /** Reports the oldest repair asked for as done. */
  repairDone(ms: number): TrustAction[] {
    const attempt = this.repairs.shift();
    assert.notEqual(attempt, undefined, 'a repair was asked for');
    return this.at(ms, { type: 'repair-done', attempt: attempt as number });
  }

  repairFailed(ms: number, failure: 'unreachable' | 'slow' | 'failed'): TrustAction[] {
    const attempt = this.repairs.shift();
    assert.notEqual(attempt, undefined, 'a repair was asked for');
    return this.at(ms, { type: 'repair-failed', attempt: attempt as number, failure });
  }

  /** Subscribed, heartbeat, repair done: trusted at 0 + the repair. */
  static trusted(): Harness {
    const h = new Harness();
    h.at(0, { type: 'subscribed' });
    const actions = h.beat(0);
    assert.deepEqual(types(actions), ['clear', 'repair'], 'the first tick with both proofs begins the repair');
    assert.equal(h.trusted, false, 'nothing trusted before the repair');
    assert.deepEqual(types(h.repairDone(10)), ['clear', 'trusted']);
    assert.equal(h.trusted, true);
    return h;
  }
}

const types = (actions: readonly TrustAction[]): string[] => actions.map((a) => a.type);
const has = (actions: readonly TrustAction[], type: TrustAction['type']): boolean => actions.some((a) => a.type === type);

describe('TrustMachine: the start', () => {
  it('trusts nothing until subscribed, both proofs answered, and a repair begun after them done', () => {
    const h = new Harness();
    h.at(0, { type: 'tick' });
    assert.equal(h.repairs.length, 0, 'no repair without the subscription proofs');
    h.at(0, { type: 'subscribed' });
    h.at(5, { type: 'ping-answered', sentAt: 0 });
    h.at(6, { type: 'tick' });
    assert.equal(h.repairs.length, 0, 'no repair with the PING alone: the membership renewal is missing');
    h.at(7, { type: 'membership-renewed', sentAt: 0 });
    assert.equal(h.repairs.length, 0, 'repairs begin on ticks only');
    h.at(BEAT, { type: 'tick' });
    assert.equal(h.machine.phase, 'repairing');
    h.at(300, { type: 'outbox-read', sentAt: 260 });
    assert.equal(h.trusted, false, 'an outbox read does not replace the repair');
    h.repairDone(400);
    assert.equal(h.machine.phase, 'trusted');
    assert.equal(h.machine.trustedUntil, Math.min(0 + LEASE, 260 + LEASE), 'until the oldest proof plus the lease');
  });

  it('counts every proof from when it was sent, not from when it was answered', () => {
    const h = Harness.trusted();
    h.at(900, { type: 'ping-answered', sentAt: 500 });
    h.at(900, { type: 'membership-renewed', sentAt: 600 });
    h.at(900, { type: 'outbox-read', sentAt: 700 });
    h.at(900, { type: 'tick' });
    assert.equal(h.machine.trustedUntil, 500 + LEASE);
  });
});

describe('TrustMachine: each row of "When a dependency fails"', () => {
  it('Redis down, frozen or unreachable: trust ends one lease after the last answered PING was sent, and the cache is emptied at the next event', () => {
    const h = Harness.trusted();
    h.beat(250);
    h.beat(500);
    // From here on Redis answers nothing; the outbox still reads.
    for (const t of [750, 1_000, 1_250]) {
      h.at(t, { type: 'outbox-read', sentAt: t });
      const actions = h.at(t, { type: 'tick' });
      assert.equal(has(actions, 'untrusted'), false, `still trusted at ${t}`);
    }
    assert.equal(h.machine.trustedUntil, 500 + LEASE);
    h.now = 1_499;
    assert.equal(h.trusted, true, 'trusted 1 ms before the lease runs out');
    h.now = 1_500;
    assert.equal(h.trusted, false, 'untrusted the moment the lease runs out, before any event');
    const actions = h.at(1_500, { type: 'outbox-read', sentAt: 1_500 });
    assert.deepEqual(types(actions), ['untrusted', 'clear'], 'the cache emptied at the first event after the lapse');
    assert.equal(h.repairs.length, 0, 'no repair while Redis does not answer');
    h.at(1_750, { type: 'tick' });
    assert.equal(h.machine.phase, 'untrusted');
  });

  it('Redis back (restart, SIGCONT, reconnect): resubscribed, proofs answered, repaired, trusted again without a restart', () => {
    const h = Harness.trusted();
    assert.deepEqual(types(h.at(300, { type: 'unsubscribed' })), ['untrusted', 'clear']);
    h.at(2_000, { type: 'subscribed' });
    assert.equal(h.trusted, false);
    const actions = h.beat(2_010);
    assert.deepEqual(types(actions), ['clear', 'repair']);
    assert.deepEqual(types(h.repairDone(2_100)), ['clear', 'trusted']);
    assert.equal(h.trusted, true);
    assert.equal(h.machine.trustedUntil, 2_010 + LEASE);
  });

  it('pub/sub connection dropped (Redis up): untrusted and emptied at once, emptied again when trusted anew', () => {
    const h = Harness.trusted();
    h.beat(250);
    const lost = h.at(260, { type: 'unsubscribed' });
    assert.deepEqual(types(lost), ['untrusted', 'clear']);
    assert.equal(h.trusted, false, 'no wait for the lease');
    // Proofs sent before the drop do not count for the new subscription.
    h.at(270, { type: 'subscribed' });
    h.at(280, { type: 'ping-answered', sentAt: 250 });
    h.at(280, { type: 'membership-renewed', sentAt: 250 });
    h.at(280, { type: 'tick' });
    assert.equal(h.machine.liveUntil, Number.NEGATIVE_INFINITY, 'proofs of the old subscription were reset');
    h.beat(500);
    assert.deepEqual(types(h.repairDone(520)), ['clear', 'trusted']);
  });

  it('one instance partitioned from Redis: as "Redis down" for that instance (its lease lapses, its cache is emptied)', () => {
    const h = Harness.trusted();
    h.at(250, { type: 'outbox-read', sentAt: 250 });
    assert.deepEqual(types(h.at(1_000, { type: 'tick' })), ['untrusted', 'clear']);
    h.at(1_100, { type: 'membership-lost' });
    assert.equal(h.machine.liveUntil, Number.NEGATIVE_INFINITY, 'a renewal made on a closed connection proves nothing');
  });

  it('PostgreSQL down (unreachable): trust continues without outbox reads, also across a lost subscription (repair deferred), and the repair runs once PostgreSQL answers', () => {
    const h = Harness.trusted();
    h.beat(250, 'unreachable');
    for (let t = 500; t <= 5_000; t += BEAT) {
      const actions = h.beat(t, 'unreachable');
      assert.equal(has(actions, 'untrusted') || has(actions, 'outbox-lapsed'), false, `trusted at ${t} with PostgreSQL unreachable`);
    }
    assert.equal(h.trusted, true);
    // The subscription drops and comes back while PostgreSQL is still unreachable.
    h.at(5_100, { type: 'unsubscribed' });
    h.at(5_200, { type: 'subscribed' });
    h.beat(5_250, 'unreachable');
    assert.deepEqual(types(h.repairFailed(5_300, 'unreachable')), ['clear', 'trusted'], 'trusted without the repair');
    assert.deepEqual(h.log.at(-1)?.actions.at(-1), { type: 'trusted', deferred: true });
    assert.equal(h.trusted, true);
    // PostgreSQL answers: the next read asks for the deferred repair; the outbox proof waits for it.
    const read = h.at(5_500, { type: 'outbox-read', sentAt: 5_500 });
    assert.deepEqual(types(read), ['repair']);
    assert.equal(h.trusted, false, 'no trust on a read while the deferred repair has not run');
    h.at(5_600, { type: 'ping-answered', sentAt: 5_500 });
    h.at(5_600, { type: 'membership-renewed', sentAt: 5_500 });
    h.repairDone(5_700);
    assert.equal(h.trusted, true);
    assert.equal(h.machine.trustedUntil, 5_500 + LEASE);
  });

  it('PostgreSQL down, the deferred repair failing again because it is still unreachable: trust continues, the repair is asked for after the next read', () => {
    const h = Harness.trusted();
    h.at(250, { type: 'unsubscribed' });
    h.at(260, { type: 'subscribed' });
    h.beat(300, 'unreachable');
    h.repairFailed(310, 'unreachable');
    h.at(500, { type: 'outbox-read', sentAt: 500 });
    h.repairFailed(520, 'unreachable');
    assert.equal(h.trusted, true, 'unreachable again: trusted');
    assert.deepEqual(types(h.at(750, { type: 'outbox-read', sentAt: 750 })), ['repair']);
  });

  it('PostgreSQL slow (outbox reads time out): the outbox proof lapses one lease after the last read was sent, counted once, and comes back with a read, without emptying the cache', () => {
    const h = Harness.trusted();
    h.beat(250);
    const lapses: number[] = [];
    for (let t = 500; t <= 2_000; t += BEAT) {
      const actions = h.beat(t, 'slow');
      if (has(actions, 'outbox-lapsed')) lapses.push(t);
      assert.equal(has(actions, 'clear'), false, 'a slow PostgreSQL empties nothing');
    }
    assert.deepEqual(lapses, [1_250], 'lapsed at the last read (250) plus the lease, once');
    assert.equal(h.trusted, false);
    assert.equal(h.machine.phase, 'trusted', 'trust itself is kept: the changes are read by transaction when reads come back');
    h.beat(2_250);
    assert.equal(h.trusted, true);
  });

  it('PostgreSQL slow or failing during the repair: no trust, the repair is tried again at the next tick', () => {
    const h = new Harness();
    h.at(0, { type: 'subscribed' });
    h.beat(0);
    h.repairFailed(100, 'slow');
    assert.equal(h.machine.phase, 'untrusted');
    assert.equal(h.repairs.length, 0, 'not at once');
    h.beat(250);
    assert.equal(h.repairs.length, 1, 'again at the tick');
    h.repairFailed(300, 'failed');
    h.beat(500);
    h.repairDone(600);
    assert.equal(h.trusted, true);
  });

  it('member list wiped, evicted or Redis clock stepped: nothing changes for trust while PINGs and renewals are answered', () => {
    const h = Harness.trusted();
    for (let t = 250; t <= 3_000; t += BEAT) assert.equal(has(h.beat(t), 'untrusted'), false);
    assert.equal(h.trusted, true);
  });

  it('Redis lost writes over a live connection (restore, failover behind a proxy, flush): untrusted at once, resubscribed, repaired', () => {
    const h = Harness.trusted();
    h.beat(250);
    const actions = h.at(300, { type: 'redis-reset', reason: 'the write witness went back', serverChanged: false });
    assert.deepEqual(types(actions), ['untrusted', 'clear'], 'the same server: the subscription still holds');
    assert.equal(h.trusted, false);
    h.beat(500);
    h.repairDone(520);
    assert.equal(h.trusted, true);
    assert.deepEqual(types(h.at(600, { type: 'redis-reset', reason: 'run_id changed', serverChanged: true })), ['untrusted', 'clear', 'resubscribe'], 'another server: subscribe there');
    h.at(620, { type: 'unsubscribed' });
    h.at(630, { type: 'subscribed' });
    h.beat(750);
    h.repairDone(770);
    assert.equal(h.trusted, true);
  });

  it('PostgreSQL and Redis down: untrusted once the lease lapses, and no repair is begun', () => {
    const h = Harness.trusted();
    h.at(250, { type: 'outbox-failed', failure: 'unreachable' });
    h.at(250, { type: 'tick' });
    assert.deepEqual(types(h.at(1_000, { type: 'tick' })), ['untrusted', 'clear']);
    for (let t = 1_250; t <= 3_000; t += BEAT) h.at(t, { type: 'tick' });
    assert.equal(h.repairs.length, 0);
    assert.equal(h.trusted, false);
  });

  it('a repair begun before a loss of trust cannot restore trust, nor one that ends after the lease lapsed', () => {
    const h = new Harness();
    h.at(0, { type: 'subscribed' });
    h.beat(0);
    const stale = h.repairs.shift() as number;
    h.at(50, { type: 'unsubscribed' });
    h.at(60, { type: 'subscribed' });
    h.beat(250);
    assert.deepEqual(h.at(300, { type: 'repair-done', attempt: stale }), [], 'the old repair is ignored');
    assert.equal(h.trusted, false);
    // The current repair ends after the proofs (sent at 250) lapsed at 1,250.
    assert.equal(has(h.repairDone(1_300), 'trusted'), false);
    assert.equal(h.machine.phase, 'untrusted');
  });
});

describe('ServerWitness: Redis losing writes without dropping the connection', () => {
  const TTL = 60_000;

  it('reports nothing while each write finds the last confirmed value or a newer one', () => {
    const w = new ServerWitness(TTL);
    let previous: string | null = null;
    for (let i = 0; i < 5; i++) {
      const value = w.next();
      assert.equal(w.answered(value, previous, 'a', i * 250), undefined);
      previous = value;
    }
  });

  it('accepts a write that timed out and may or may not have run', () => {
    const w = new ServerWitness(TTL);
    const first = w.next();
    w.answered(first, null, 'a', 0);
    const lost = w.next(); // never answered
    const third = w.next();
    assert.equal(w.answered(third, lost, 'a', 500), undefined, 'it ran');
    const w2 = new ServerWitness(TTL);
    const one = w2.next();
    w2.answered(one, null, 'a', 0);
    w2.next();
    assert.equal(w2.answered(w2.next(), one, 'a', 500), undefined, 'it did not run');
  });

  it('reports a value older than one confirmed, a missing one within the TTL, and a changed run_id', () => {
    const w = new ServerWitness(TTL);
    const one = w.next();
    w.answered(one, null, 'a', 0);
    const two = w.next();
    w.answered(two, one, 'a', 250);
    assert.deepEqual(w.answered(w.next(), one, 'a', 500), { reason: 'the write witness went back from 2 to 1', serverChanged: false });
    assert.match(w.answered(w.next(), null, 'a', 750)?.reason ?? '', /gone/);
    assert.deepEqual(w.answered(w.next(), String(4), 'b', 1_000), { reason: 'the Redis server changed (run_id a → b)', serverChanged: true });
  });

  it('expects nothing after the connection closed (another server may answer the new one), and a missing value after the TTL is no evidence', () => {
    const w = new ServerWitness(TTL);
    w.answered(w.next(), null, 'a', 0);
    w.connectionClosed();
    assert.equal(w.answered(w.next(), null, 'b', 100), undefined);
    assert.equal(w.answered(w.next(), null, 'b', 100 + TTL), undefined, 'expired while the instance was paused');
  });
});

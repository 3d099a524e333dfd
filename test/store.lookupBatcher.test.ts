import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { KeywardError } from '../src/errors';
import { LookupBatcher } from '../src/store/LookupBatcher';

/** A fetch whose answers the test gives, one deferred per call. */
class HeldFetch {
  readonly calls: Array<{ keys: string[]; timeoutMs: number; answer(found: Map<string, string>): void; fail(error: unknown): void }> = [];

  readonly fetch = (keys: string[], timeoutMs: number): Promise<Map<string, string>> =>
    new Promise((resolve, reject) => this.calls.push({ keys, timeoutMs, answer: resolve, fail: reject }));
}

/** Where a lookup's promise stands, read synchronously after the fake clock moved. */
function track<V>(promise: Promise<V>): { state: 'pending' | 'resolved' | 'rejected'; value?: V; error?: unknown } {
  const tracked: { state: 'pending' | 'resolved' | 'rejected'; value?: V; error?: unknown } = { state: 'pending' };
  promise.then(
    (value) => Object.assign(tracked, { state: 'resolved', value }),
    (error: unknown) => Object.assign(tracked, { state: 'rejected', error }),
  );
  return tracked;
}

const isUnavailable = (error: unknown): boolean => error instanceof KeywardError && error.code === 'UNAVAILABLE';

describe('LookupBatcher deadlines (fake clock)', () => {
  let clock = 0;
  const now = (): number => clock;
  const settle = async (): Promise<void> => {
    for (let i = 0; i < 10; i++) await Promise.resolve();
  };
  /** Lets promise callbacks run, moves the fake clock and its timers, and runs what that made due. */
  const advance = async (ms: number): Promise<void> => {
    await settle();
    clock += ms;
    mock.timers.tick(ms);
    await settle();
    mock.timers.tick(0);
    await settle();
  };

  beforeEach(() => {
    clock = 0;
    mock.timers.enable({ apis: ['setTimeout', 'setImmediate'] });
  });
  afterEach(() => mock.timers.reset());

  it('gathers lookups that arrive together into one query, given the time left to the newest', async () => {
    const held = new HeldFetch();
    const batcher = new LookupBatcher(held.fetch, { maxBatch: 500, maxInFlight: 2, timeoutMs: 1_000 }, now);
    const a = track(batcher.find('a'));
    const b = track(batcher.find('b'));
    const a2 = track(batcher.find('a'));
    await advance(0);
    assert.equal(held.calls.length, 1);
    assert.deepEqual(held.calls[0]?.keys, ['a', 'b']);
    assert.equal(held.calls[0]?.timeoutMs, 1_000);
    held.calls[0]?.answer(new Map([['a', 'A']]));
    await advance(0);
    assert.deepEqual([a.value, b.value, a2.value], ['A', undefined, 'A']);
    assert.equal(b.state, 'resolved');
  });

  it('answers a lookup UNAVAILABLE at its deadline while its query hangs, and keeps counting that query until it ends', async () => {
    const held = new HeldFetch();
    const batcher = new LookupBatcher(held.fetch, { maxBatch: 500, maxInFlight: 1, timeoutMs: 1_000 }, now);
    const first = track(batcher.find('a'));
    await advance(0);
    await advance(400);
    const second = track(batcher.find('b'));
    await advance(0);
    assert.equal(held.calls.length, 1, 'the only connection is busy: the second lookup waits in the queue');

    await advance(599);
    assert.equal(first.state, 'pending', 'not before its deadline');
    await advance(1);
    assert.equal(first.state, 'rejected');
    assert.ok(isUnavailable(first.error));
    assert.equal(batcher.running, 1, 'the hung query still holds its connection');
    assert.equal(held.calls.length, 1, 'no second query while the first has not ended');

    await advance(400);
    assert.equal(second.state, 'rejected', 'a queued lookup is answered at its own deadline too');
    assert.ok(isUnavailable(second.error));

    const third = track(batcher.find('c'));
    held.calls[0]?.answer(new Map([['a', 'A']]));
    await advance(0);
    assert.equal(first.state, 'rejected', 'a late answer changes nothing');
    assert.equal(held.calls.length, 2, 'the connection is free again: the next lookup runs');
    assert.deepEqual(held.calls[1]?.keys, ['c']);
    held.calls[1]?.answer(new Map([['c', 'C']]));
    await advance(0);
    assert.equal(third.value, 'C');
  });

  it('answers each lookup of a slow query at its own deadline, and the rest with the answer', async () => {
    const held = new HeldFetch();
    const batcher = new LookupBatcher(held.fetch, { maxBatch: 500, maxInFlight: 1, timeoutMs: 1_000 }, now);
    const blocker = track(batcher.find('x'));
    await advance(0);
    const early = track(batcher.find('a'));
    await advance(300);
    const late = track(batcher.find('b'));
    held.calls[0]?.answer(new Map());
    await advance(0);
    assert.equal(blocker.state, 'resolved');
    assert.deepEqual(held.calls[1]?.keys, ['a', 'b']);
    assert.equal(held.calls[1]?.timeoutMs, 1_000, 'the query may take as long as its newest lookup may wait');
    await advance(700);
    assert.equal(early.state, 'rejected', 'the older lookup is due first');
    assert.equal(late.state, 'pending');
    held.calls[1]?.answer(new Map([['b', 'B']]));
    await advance(0);
    assert.equal(late.value, 'B');
  });

  it('passes a failed query on to its lookups', async () => {
    const held = new HeldFetch();
    const batcher = new LookupBatcher(held.fetch, { maxBatch: 500, maxInFlight: 1, timeoutMs: 1_000 }, now);
    const lookup = track(batcher.find('a'));
    await advance(0);
    const failure = new KeywardError('UNAVAILABLE', 'down');
    held.calls[0]?.fail(failure);
    await advance(0);
    assert.equal(lookup.error, failure);
    assert.equal(batcher.running, 0);
  });
});

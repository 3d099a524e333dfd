import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import pino from 'pino';
import type { VerifiableKey } from '../src/keys/VerifiableKey';
import { OK, REVOKED, type Verdict } from '../src/keys/verdict';
import { type KeyUses, UsageStore } from '../src/store/UsageStore';
import { UsageCounts, UsageRecorder, type UsageOptions } from '../src/usage/UsageRecorder';
import { newAccountId, testDatabaseUrl } from './helpers/env';
import { FaultProxy } from './helpers/FaultProxy';
import { assertNoLeaks } from './helpers/leaks';
import { waitUntil } from './helpers/waitUntil';

interface StoredUsage {
  request_count: string;
  refused_count: string;
  last_used_at: Date | null;
  last_used_ip: string | null;
}

/** What the recorder should have written for a key. */
interface Expected {
  count: number;
  refused: number;
  lastAt: number;
  lastIp: string;
}

/** The statement every usage write sends (src/store/UsageStore.ts). */
const USAGE_WRITE = 'insert into keyward.usage_batches';

async function insertKeys(db: pg.Pool, count: number): Promise<string[]> {
  const accountId = newAccountId();
  const { rows } = await db.query<{ id: string }>(
    `insert into keyward.api_keys (account_id, name, environment, secret_hash, display, scopes)
     select $1, 'k' || g, 'live', sha256(($1 || g)::bytea), 'fsm_live_x…y', '{jobs:read}' from generate_series(1, $2::int) g returning id`,
    [accountId, count],
  );
  return rows.map((row) => row.id);
}

async function storedUsage(db: pg.Pool, keyId: string): Promise<StoredUsage | undefined> {
  const { rows } = await db.query<StoredUsage>('select * from keyward.key_usage where key_id = $1', [keyId]);
  return rows[0];
}

async function assertStored(db: pg.Pool, expected: ReadonlyMap<string, Expected>): Promise<void> {
  for (const [keyId, want] of expected) {
    const usage = await storedUsage(db, keyId);
    assert.ok(usage !== undefined, `${keyId}: nothing stored`);
    assert.equal(Number(usage.request_count), want.count, `${keyId}: request_count`);
    assert.equal(Number(usage.refused_count), want.refused, `${keyId}: refused_count`);
    assert.equal(usage.last_used_at?.getTime(), want.lastAt, `${keyId}: last_used_at`);
    assert.equal(usage.last_used_ip, want.lastIp, `${keyId}: last_used_ip`);
  }
}

/** A pino logger writing its JSON lines into `lines`. */
function capturingLogger(lines: string[]): pino.Logger {
  return pino({ level: 'trace' }, { write: (line: string) => void lines.push(line) });
}

/** Records uses as Verify does (only the key's id and the verdict's status matter to the recorder), and what they should sum to. */
class UseLog {
  readonly expected = new Map<string, Expected>();

  constructor(private readonly recorder: UsageRecorder) {}

  use(keyId: string, clientIp: string, atMs: number, verdict: Verdict = OK): void {
    this.recorder.recordUse({ id: keyId } as VerifiableKey, clientIp, atMs, verdict);
    const sum = this.expected.get(keyId) ?? { count: 0, refused: 0, lastAt: 0, lastIp: '' };
    sum.count++;
    if (verdict.httpStatus !== 200) sum.refused++;
    if (atMs >= sum.lastAt) {
      sum.lastAt = atMs;
      sum.lastIp = clientIp;
    }
    this.expected.set(keyId, sum);
  }

  forget(keyId: string): void {
    this.expected.delete(keyId);
  }
}


/** The real store, noting when each write starts. */
class TimedStore extends UsageStore {
  readonly startedAt: number[] = [];

  override apply(batchId: string, uses: readonly KeyUses[], timeoutMs: number): Promise<boolean> {
    this.startedAt.push(performance.now());
    return super.apply(batchId, uses, timeoutMs);
  }
}

const options = (flushIntervalMs: number): UsageOptions => ({ flushIntervalMs, batchMaxKeys: 1_000, maxPendingKeys: 10_000, queryTimeoutMs: 5_000 });
const T0 = Date.parse('2026-03-02T08:00:00.000Z');

describe('usage writes', () => {
  let db: pg.Pool;

  before(() => {
    db = new pg.Pool({ connectionString: testDatabaseUrl(), max: 4 });
  });

  after(async () => {
    await db.end();
    await assertNoLeaks();
  });

  it('drops only the entries PostgreSQL refuses, counts and logs them by key id without their values, and writes the rest', async () => {
    const ids = await insertKeys(db, 40);
    const counts = new UsageCounts();
    const lines: string[] = [];
    const recorder = new UsageRecorder(new UsageStore(db), options(3_600_000), counts, capturingLogger(lines));
    const uses = new UseLog(recorder);
    const poisoned = ids[17] as string;
    // A key that is not (or no longer) stored: the foreign key refuses it.
    const ghost = randomUUID();
    for (const [i, keyId] of ids.entries()) {
      for (let n = 0; n <= i % 7; n++) uses.use(keyId, `198.51.100.${i}`, T0 + 1_000 * i + n, n === 1 ? REVOKED : OK);
    }
    // A time PostgreSQL cannot store (to_timestamp out of range). (A client address cannot poison a batch:
    // the recorder writes only its canonical form, so a NUL in it is stored as no address.)
    uses.use(poisoned, '192.0.2.17\u0000', 1e20);
    for (let n = 0; n < 3; n++) uses.use(ghost, '192.0.2.99', T0 + n);
    const lost = (uses.expected.get(poisoned)?.count ?? 0) + 3;
    uses.forget(poisoned);
    uses.forget(ghost);

    await recorder.flush();

    assert.equal(recorder.pendingKeys, 0);
    await assertStored(db, uses.expected);
    assert.equal(await storedUsage(db, poisoned), undefined, 'the refused entry is dropped');
    assert.equal(await storedUsage(db, ghost), undefined);
    assert.equal(counts.rejectedEntries, 2);
    assert.equal(counts.rejectedUses, lost);
    assert.ok(counts.refused >= 2 && counts.refused === counts.failed, `${counts.refused} refusals, ${counts.failed} failures`);
    // Two bad entries among 41: bisecting costs a few statements per bad entry, not one per entry.
    assert.ok(counts.statements <= 2 * 2 * Math.ceil(Math.log2(41)) + 1, `${counts.statements} statements`);
    assert.equal(counts.deduplicated, 0);

    const logged = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    const rejected = logged.filter((line) => line.event === 'usage-rejected');
    assert.deepEqual(
      rejected.map(({ keyId, sqlState, uses: n }) => ({ keyId, sqlState, uses: n })).sort((a, b) => String(a.sqlState).localeCompare(String(b.sqlState))),
      [
        { keyId: poisoned, sqlState: '22008', uses: lost - 3 },
        { keyId: ghost, sqlState: '23503', uses: 3 },
      ],
    );
    assert.ok(logged.some((line) => line.event === 'usage-batch-refused'));
    const text = lines.join('');
    for (const secret of ['\u0000', '\\u0000', '0x00', 'invalid byte sequence', '198.51.100.', '192.0.2.', 'is not present in table']) {
      assert.ok(!text.includes(secret), `the log holds ${JSON.stringify(secret)}`);
    }

    // The next batch is written as usual: one statement.
    const statements = counts.statements;
    for (const keyId of [...ids.slice(0, 5), poisoned]) uses.use(keyId, '203.0.113.5', T0 + 2_000_000);
    await recorder.flush();
    assert.equal(counts.statements, statements + 1);
    assert.equal(counts.rejectedEntries, 2);
    await assertStored(db, uses.expected);
    await recorder.stop(Date.now() + 1_000);
  });

  it('never refuses a batch it applied before, so a refused batch committed nothing and its parts may take new ids', async () => {
    const store = new UsageStore(db);
    const ids = await insertKeys(db, 3);
    const batchId = `test:${randomUUID()}`;
    const good = ids.map((keyId): KeyUses => ({ keyId, count: 1, refused: 0, lastAt: T0, lastIp: '192.0.2.1' }));
    assert.equal(await store.apply(batchId, good, 5_000), true);
    // The same id again, now with a key that is not stored (as if deleted since): no row is written, nothing refused.
    const withGhost = [...good, { keyId: randomUUID(), count: 1, refused: 0, lastAt: T0, lastIp: '192.0.2.1' }];
    assert.equal(await store.apply(batchId, withGhost, 5_000), false);
    await assert.rejects(store.apply(`test:${randomUUID()}`, withGhost, 5_000), { code: '23503' });
    for (const keyId of ids) assert.equal((await storedUsage(db, keyId))?.request_count, '1');
  });

  it('backs off while PostgreSQL cannot be reached, then writes exact counts', async () => {
    const ids = await insertKeys(db, 20);
    const proxy = await FaultProxy.toTestDatabase();
    const pool = new pg.Pool({ connectionString: proxy.databaseUrl(), max: 2 });
    pool.on('error', () => {});
    const counts = new UsageCounts();
    const lines: string[] = [];
    const store = new TimedStore(pool);
    // Every draw at the top: each delay is its ceiling (49, 99, 198, 396, … ms), so gaps have a known floor.
    const recorder = new UsageRecorder(store, options(50), counts, capturingLogger(lines), { nowMs: () => performance.now(), random: () => 0.99 });
    const uses = new UseLog(recorder);
    recorder.start();
    try {
      for (const [i, keyId] of ids.entries()) uses.use(keyId, `198.51.100.${i}`, T0 + i);
      await waitUntil('first write', () => counts.flushed >= 1 && recorder.pendingKeys === 0, { intervalMs: 10 });

      proxy.refuse();
      proxy.cut();
      const failedBefore = counts.failed;
      const startedBefore = store.startedAt.length;
      for (let round = 1; failedBefore + 5 > counts.failed; round++) {
        for (const [i, keyId] of ids.entries()) uses.use(keyId, `198.51.100.${i}`, T0 + 1_000 * round + i, i % 3 === 0 ? REVOKED : OK);
        // Paces the traffic (a round of uses every 20 ms) until five writes have failed; the loop's condition is the wait.
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const failing = store.startedAt.slice(startedBefore, startedBefore + 5);
      const gaps = failing.slice(1).map((at, i) => at - (failing[i] as number));
      for (const [i, floor] of [49, 99, 198, 396].entries()) assert.ok((gaps[i] as number) >= floor, `gap ${i}: ${gaps[i]} ms, backoff ${floor} ms`);
      const spanMs = (failing[4] as number) - (failing[0] as number);
      assert.ok(spanMs / 50 >= 14, `five attempts spread over ${spanMs} ms, i.e. ${Math.floor(spanMs / 50)} flush intervals`);

      proxy.pass();
      for (const [i, keyId] of ids.entries()) uses.use(keyId, `203.0.113.${i}`, T0 + 1_000_000 + i);
      await waitUntil('written after the outage', () => recorder.pendingKeys === 0, { intervalMs: 10 });
      await assertStored(pool, uses.expected);
      assert.equal(counts.rejectedEntries, 0);
      const events = lines.map((line) => (JSON.parse(line) as { event?: string }).event);
      assert.equal(events.filter((event) => event === 'usage-write-failed').length, 1, 'the outage is logged once');
      assert.ok(events.includes('usage-resumed'));

      // After a success the backoff starts again from the base: the next failure is retried within about an interval.
      const failedNow = counts.failed;
      proxy.refuse();
      proxy.cut();
      uses.use(ids[0] as string, '203.0.113.200', T0 + 2_000_000);
      await waitUntil('retried soon after a fresh failure', () => counts.failed >= failedNow + 2, { timeoutMs: 2_000, intervalMs: 10 });
      proxy.pass();
      await waitUntil('written again', () => recorder.pendingKeys === 0, { intervalMs: 10 });
      await assertStored(pool, uses.expected);
    } finally {
      await recorder.stop(Date.now() + 5_000);
      await pool.end();
      await proxy.close();
    }
  });

  it('retries a write whose answer was lost under the same id: applied once, counted as deduplicated', async () => {
    const ids = await insertKeys(db, 10);
    const proxy = await FaultProxy.toTestDatabase();
    const pool = new pg.Pool({ connectionString: proxy.databaseUrl(), max: 2 });
    pool.on('error', () => {});
    const counts = new UsageCounts();
    const recorder = new UsageRecorder(new UsageStore(pool), options(50), counts, capturingLogger([]));
    const uses = new UseLog(recorder);
    recorder.start();
    try {
      for (const [i, keyId] of ids.entries()) uses.use(keyId, `198.51.100.${i}`, T0 + i);
      await waitUntil('first write', () => recorder.pendingKeys === 0, { intervalMs: 10 });
      // The next write commits, its answer is held, then the connection dies.
      proxy.delayResponses(3_000);
      const held = proxy.heldAnswerTo(USAGE_WRITE);
      for (const [i, keyId] of ids.entries()) uses.use(keyId, `203.0.113.${i}`, T0 + 1_000 + i, REVOKED);
      await held;
      proxy.cut();
      proxy.delayResponses(0);
      await waitUntil('retried', () => recorder.pendingKeys === 0, { intervalMs: 10 });
      assert.equal(counts.deduplicated, 1);
      assert.ok(counts.failed >= 1);
      await assertStored(pool, uses.expected);
    } finally {
      await recorder.stop(Date.now() + 5_000);
      await pool.end();
      await proxy.close();
    }
  });
});

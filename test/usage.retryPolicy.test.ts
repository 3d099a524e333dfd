import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import pg from 'pg';
import { KeywardError } from '../src/errors';
import { query } from '../src/store/db';
import { classifyWriteFailure, sqlStateOf } from '../src/store/sqlState';
import { RetryBackoff, nextRetryDelay } from '../src/usage/RetryBackoff';
import { testDatabaseUrl } from './helpers/env';
import { assertNoLeaks } from './helpers/leaks';

/** An error as node-postgres makes it from PostgreSQL's ErrorResponse. */
function answered(code: string): pg.DatabaseError {
  const error = new pg.DatabaseError(`postgres said ${code}`, 0, 'error');
  error.code = code;
  error.severity = 'ERROR';
  return error;
}

function nodeError(code: string): Error {
  return Object.assign(new Error(`${code} 127.0.0.1:5432`), { code });
}

/** Same sequence every run (a linear congruential generator), in [0, 1). */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1_664_525) + 1_013_904_223) >>> 0;
    return state / 2 ** 32;
  };
}

describe('classifyWriteFailure', () => {
  it('calls transient what PostgreSQL answers about itself, not about the statement', () => {
    const transient = [
      '08000', '08001', '08003', '08006', '08P01', // connection exceptions
      '40001', '40P01', '40003', // serialization failure, deadlock, completion unknown
      '53000', '53100', '53200', '53300', // insufficient resources, too many connections
      '57000', '57014', '57P01', '57P02', '57P03', '57P05', // cancelled, shutting down, idle timeout
      '58000', '58030', // system and I/O errors
      '25006', // read-only: a standby after a failover
      '55P03', // lock not available
      '28000', '28P01', '3D000', // authentication, no such database (at connect)
    ];
    for (const code of transient) assert.equal(classifyWriteFailure(answered(code)), 'transient', code);
  });

  it('calls permanent what PostgreSQL refuses in the statement', () => {
    const permanent = [
      '22021', // invalid byte sequence (a NUL in a text value)
      '22P02', // invalid text representation
      '22003', '22008', // numeric and datetime out of range
      '23503', '23505', '23502', '23514', // foreign key, unique, not null, check
      '21000', // cardinality (a key twice in one statement)
      '42P01', '42501', '42804', '42601', // undefined table, privilege, datatype, syntax
      '54000', '0A000', 'XX000', 'P0001',
    ];
    for (const code of permanent) assert.equal(classifyWriteFailure(answered(code)), 'permanent', code);
  });

  it('calls transient network errors, time limits, keyward UNAVAILABLE and errors of unknown outcome', () => {
    for (const code of ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN']) {
      assert.equal(classifyWriteFailure(nodeError(code)), 'transient', code);
    }
    const unavailable = (cause: unknown) => new KeywardError('UNAVAILABLE', 'the key store (PostgreSQL) is unavailable; try again', { cause });
    assert.equal(classifyWriteFailure(unavailable(nodeError('ECONNREFUSED'))), 'transient');
    assert.equal(classifyWriteFailure(unavailable(answered('57014'))), 'transient');
    assert.equal(classifyWriteFailure(unavailable(new Error('Query read timeout (including the wait for a connection)'))), 'transient');
    assert.equal(classifyWriteFailure(new AggregateError([nodeError('ECONNREFUSED'), nodeError('ECONNREFUSED')], 'connect failed')), 'transient');
    // Without a SQLSTATE nobody knows whether the statement committed: its id must be kept.
    assert.equal(classifyWriteFailure(new Error('Connection terminated unexpectedly')), 'transient');
    assert.equal(classifyWriteFailure(Object.assign(new Error('x'), { code: 'ERR_STREAM_DESTROYED' })), 'transient');
    assert.equal(classifyWriteFailure('a string thrown'), 'transient');
    assert.equal(classifyWriteFailure(undefined), 'transient');
  });

  it('reads the SQLSTATE of an answer, also behind keyward UNAVAILABLE, and never a Node error code', () => {
    assert.equal(sqlStateOf(answered('22021')), '22021');
    assert.equal(sqlStateOf(new KeywardError('UNAVAILABLE', 'unavailable', { cause: answered('57P01') })), '57P01');
    assert.equal(sqlStateOf(nodeError('EPIPE')), undefined);
    assert.equal(sqlStateOf(nodeError('ECONNRESET')), undefined);
    assert.equal(sqlStateOf(new Error('no code')), undefined);
    assert.equal(sqlStateOf('not an error'), undefined);
  });

  it('classifies what PostgreSQL and the driver really raise', async () => {
    const db = new pg.Pool({ connectionString: testDatabaseUrl(), max: 1 });
    // PostgreSQL cancels its statements after 20 ms.
    const impatient = new pg.Pool({ connectionString: testDatabaseUrl(), max: 1, statement_timeout: 20 });
    // Nothing listens on port 1: refused at connect, turned into UNAVAILABLE by query().
    const nowhere = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:1/postgres', max: 1 });
    const failure = (pool: pg.Pool, text: string, values: unknown[]) => query(pool, text, values, 5_000).then(() => undefined, (error: unknown) => error);
    try {
      const nul = await failure(db, 'select $1::text[]', [['192.0.2.1\u0000']]);
      assert.equal(sqlStateOf(nul), '22021');
      assert.equal(classifyWriteFailure(nul), 'permanent');
      assert.equal(classifyWriteFailure(await failure(db, 'select $1::uuid[]', [['not-a-uuid']])), 'permanent');
      const refused = await failure(nowhere, 'select 1', []);
      assert.ok(refused instanceof KeywardError && refused.code === 'UNAVAILABLE');
      assert.equal(classifyWriteFailure(refused), 'transient');
      const cancelled = await failure(impatient, 'select pg_sleep(1)', []);
      assert.equal(sqlStateOf(cancelled), '57014');
      assert.equal(classifyWriteFailure(cancelled), 'transient');
    } finally {
      await Promise.all([db.end(), impatient.end(), nowhere.end()]);
    }
  });
});

describe('retry backoff', () => {
  const policy = { baseMs: 100, capMs: 30_000 };

  it('doubles the ceiling of the delay from the base up to the cap (full jitter)', () => {
    const top = () => 0.999_999_9;
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map((attempt) => nextRetryDelay(attempt, policy, top)),
      [99, 199, 399, 799, 1599, 3199, 6399, 12_799, 25_599, 29_999, 29_999],
    );
    assert.deepEqual([1, 2, 3].map((attempt) => nextRetryDelay(attempt, policy, () => 0.5)), [50, 100, 200]);
    assert.equal(nextRetryDelay(1, policy, () => 0), 0);
    assert.equal(nextRetryDelay(10_000, policy, top), 29_999, 'no overflow after many failures');
  });

  it('stays within [0, min(cap, base × 2^(attempt − 1))) for any attempt and any draw', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2_000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        fc.integer({ min: 1, max: 3_600_000 }),
        (attempt, draw, baseMs) => {
          const capMs = Math.max(30_000, baseMs);
          const delay = nextRetryDelay(attempt, { baseMs, capMs }, () => draw);
          const ceiling = Math.min(capMs, baseMs * 2 ** (attempt - 1));
          return Number.isInteger(delay) && delay >= 0 && delay < ceiling;
        },
      ),
    );
  });

  it('holds attempts back until the delay has passed, and starts again from the base after a success', () => {
    const backoff = new RetryBackoff(policy, () => 0.5);
    assert.equal(backoff.ready(0), true);
    assert.equal(backoff.failed(1_000), 50);
    assert.equal(backoff.ready(1_049), false);
    assert.equal(backoff.ready(1_050), true);
    assert.equal(backoff.failed(1_050), 100);
    assert.equal(backoff.failed(1_150), 200);
    assert.equal(backoff.attempts, 3);
    assert.equal(backoff.ready(1_349), false);
    backoff.succeeded();
    assert.equal(backoff.attempts, 0);
    assert.equal(backoff.ready(1_349), true);
    assert.equal(backoff.failed(2_000), 50, 'from the base again');
  });

  it('turns a flush every interval into few attempts while failing, and never waits much beyond the cap', () => {
    // A fake clock: the flush interval ticks every 100 ms for ten minutes, every attempt fails.
    for (const seed of [1, 2, 3, 42, 2026]) {
      const backoff = new RetryBackoff(policy, seeded(seed));
      const attempts: number[] = [];
      for (let now = 0; now <= 600_000; now += 100) {
        if (!backoff.ready(now)) continue;
        attempts.push(now);
        backoff.failed(now);
      }
      const gaps = attempts.slice(1).map((at, i) => at - (attempts[i] as number));
      assert.ok(attempts.length < 120, `seed ${seed}: ${attempts.length} attempts in 6,000 ticks`);
      assert.ok(Math.max(...gaps) <= policy.capMs + 100, `seed ${seed}: a gap of ${Math.max(...gaps)} ms`);
      // After the first minute the ceiling is the cap: attempts come about every 15 s on average.
      const late = attempts.filter((at) => at >= 60_000).length;
      assert.ok(late >= 20 && late <= 70, `seed ${seed}: ${late} attempts in the last nine minutes`);
    }
  });
});

describe('usage retry policy resources', () => {
  it('leaves nothing open', async () => {
    await assertNoLeaks();
  });
});

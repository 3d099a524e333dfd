import type pg from 'pg';
import { query } from './db';

/** A change as the outbox records it. */
export interface Invalidation {
  readonly seq: string;
  readonly hash: string;
  readonly version: number;
  readonly delivered: boolean;
  /** Older than the age after which the changing instance has given up delivering it. */
  readonly overdue: boolean;
}

interface InvalidationRow {
  seq: string;
  hash: string;
  version: string;
  delivered: boolean;
  overdue: boolean;
  db_now: Date;
}

const toInvalidation = (row: InvalidationRow): Invalidation => ({
  seq: row.seq,
  hash: row.hash,
  version: Number(row.version),
  delivered: row.delivered,
  overdue: row.overdue,
});

/**
 * The Postgres side of the invalidation outbox (table keyward.key_invalidations).
 * Rows are written by KeyStore in the change's own statement.
 */
export class InvalidationOutbox {
  constructor(private readonly pool: pg.Pool) {}

  /**
   * Changes committed since `since` minus `windowMs` (Postgres's clock), with
   * Postgres's now to pass as `since` next time. Reading by time, with a window of overlap, rather
   * than by seq: seqs can commit out of order.
   */
  async recent(since: Date | undefined, windowMs: number, overdueMs: number, timeoutMs: number): Promise<{ rows: Invalidation[]; now: Date | undefined }> {
    const rows = await query<InvalidationRow>(
      this.pool,
      `select r.seq, r.hash, r.version, r.delivered, r.overdue, clock.db_now
         from (select now() as db_now) clock
         left join lateral (
           select seq, encode(secret_hash, 'hex') as hash, version, delivered_at is not null as delivered,
                  created_at < clock.db_now - make_interval(secs => $3::float8 / 1000) as overdue
             from keyward.key_invalidations
            where created_at > coalesce($1::timestamptz, clock.db_now) - make_interval(secs => $2::float8 / 1000)
         ) r on true
        order by r.seq`,
      [since ?? null, windowMs, overdueMs],
      timeoutMs,
    );
    return { rows: rows.filter((row) => row.seq !== null).map(toInvalidation), now: rows[0]?.db_now };
  }

  /** Changes not yet known to be in Redis, younger than `retentionMs` (older ones have expired there). */
  async undelivered(retentionMs: number, limit: number, timeoutMs: number): Promise<Invalidation[]> {
    const rows = await query<InvalidationRow>(
      this.pool,
      `select seq, encode(secret_hash, 'hex') as hash, version, false as delivered, true as overdue, now() as db_now
         from keyward.key_invalidations
        where delivered_at is null and created_at > now() - make_interval(secs => $1::float8 / 1000)
        order by seq
        limit $2::integer`,
      [retentionMs, limit],
      timeoutMs,
    );
    return rows.map(toInvalidation);
  }

  async markDelivered(seqs: readonly string[], timeoutMs: number): Promise<void> {
    if (seqs.length === 0) return;
    await query(
      this.pool,
      'update keyward.key_invalidations set delivered_at = now() where seq = any($1::bigint[]) and delivered_at is null',
      [seqs],
      timeoutMs,
    );
  }

  /** Deletes rows older than `retentionMs`: by then every Redis entry they could concern has expired. */
  async prune(retentionMs: number, timeoutMs: number): Promise<void> {
    await query(
      this.pool,
      'delete from keyward.key_invalidations where created_at < now() - make_interval(secs => $1::float8 / 1000)',
      [retentionMs],
      timeoutMs,
    );
  }
}

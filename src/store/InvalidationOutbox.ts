import type { Runner } from './db';

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
  /** @param run where statements run: the pool, or a connection of their own (CacheTrust). */
  constructor(private readonly run: Runner) {}

  /**
   * Changes committed since `since` minus `windowMs` (Postgres's clock), with
   * Postgres's now to pass as `since` next time. Reading by time, with a window of overlap, rather
   * than by seq: seqs can commit out of order.
   */
  async recent(since: Date | undefined, windowMs: number, overdueMs: number, timeoutMs: number): Promise<{ rows: Invalidation[]; now: Date | undefined }> {
    const rows = await this.run<InvalidationRow>(
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

  /**
   * Every change younger than `retentionMs` (older ones concern no Redis entry
   * any more: all have expired), delivered or not, in seq order after `afterSeq`.
   */
  async retained(afterSeq: string, retentionMs: number, limit: number, timeoutMs: number): Promise<Invalidation[]> {
    const rows = await this.run<InvalidationRow>(
      `select seq, encode(secret_hash, 'hex') as hash, version, delivered_at is not null as delivered, true as overdue, now() as db_now
         from keyward.key_invalidations
        where seq > $1::bigint and created_at > now() - make_interval(secs => $2::float8 / 1000)
        order by seq
        limit $3::integer`,
      [afterSeq, retentionMs, limit],
      timeoutMs,
    );
    return rows.map(toInvalidation);
  }

  async markDelivered(seqs: readonly string[], timeoutMs: number): Promise<void> {
    if (seqs.length === 0) return;
    await this.run(
      'update keyward.key_invalidations set delivered_at = now() where seq = any($1::bigint[]) and delivered_at is null',
      [seqs],
      timeoutMs,
    );
  }

  /** Deletes rows older than `retentionMs`: by then every Redis entry they could concern has expired. */
  async prune(retentionMs: number, timeoutMs: number): Promise<void> {
    await this.run(
      'delete from keyward.key_invalidations where created_at < now() - make_interval(secs => $1::float8 / 1000)',
      [retentionMs],
      timeoutMs,
    );
  }
}

import type pg from 'pg';
import { query } from './db';

/** Uses of one key within a batch. */
export interface KeyUses {
  readonly keyId: string;
  readonly count: number;
  readonly refused: number;
  /** Epoch milliseconds of the latest use in the batch. */
  readonly lastAt: number;
  readonly lastIp: string;
}

/**
 * The Postgres side of usage counting: one statement applies a whole batch,
 * at most once per batch id.
 */
export class UsageStore {
  constructor(private readonly pool: pg.Pool) {}

  /**
   * Adds a batch of uses, unless a batch with this id was applied before
   * (then it changes nothing: retrying after an ambiguous failure is safe).
   * `last_used_at` only moves forward, and `last_used_ip` with it. Rows are
   * written in key order so that instances flushing at once cannot deadlock.
   * Returns whether the batch was new.
   *
   * Whether PostgreSQL refuses a batch (a value it cannot store, a key that
   * no longer exists) depends on its content only, never on whether it was
   * applied before: values are checked when bound, rows when written, and a
   * batch applied before writes no row (`exists (select 1 from batch)` is
   * evaluated once, before any). So a refused batch committed nothing, and
   * its entries may be written again under another id.
   */
  async apply(batchId: string, uses: readonly KeyUses[], timeoutMs: number): Promise<boolean> {
    const rows = await query<{ applied: boolean }>(
      this.pool,
      `with batch as (
         insert into keyward.usage_batches (id) values ($1::text) on conflict do nothing returning id
       ), written as (
         insert into keyward.key_usage as u (key_id, request_count, refused_count, last_used_at, last_used_ip)
         select i.key_id, i.n, i.refused, to_timestamp(i.at_ms / 1000.0), nullif(i.ip, '')
           from unnest($2::uuid[], $3::bigint[], $4::bigint[], $5::float8[], $6::text[]) as i(key_id, n, refused, at_ms, ip)
          where exists (select 1 from batch)
          order by i.key_id
         on conflict (key_id) do update set
           request_count = u.request_count + excluded.request_count,
           refused_count = u.refused_count + excluded.refused_count,
           last_used_ip  = case when u.last_used_at is null or excluded.last_used_at > u.last_used_at
                                then excluded.last_used_ip else u.last_used_ip end,
           last_used_at  = greatest(u.last_used_at, excluded.last_used_at)
         returning 1
       )
       select exists (select 1 from batch) as applied`,
      [
        batchId,
        uses.map((u) => u.keyId),
        uses.map((u) => u.count),
        uses.map((u) => u.refused),
        uses.map((u) => u.lastAt),
        uses.map((u) => u.lastIp),
      ],
      timeoutMs,
    );
    return rows[0]?.applied === true;
  }

  /** Forgets batch ids older than `ageMs` (a retry never comes that late). */
  async pruneBatches(ageMs: number, timeoutMs: number): Promise<void> {
    await query(
      this.pool,
      'delete from keyward.usage_batches where applied_at < now() - make_interval(secs => $1::float8 / 1000)',
      [ageMs],
      timeoutMs,
    );
  }
}

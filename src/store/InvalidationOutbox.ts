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

/** What one outbox read found (InvalidationOutbox.read). */
export interface OutboxRead {
  /** Changes committed since the previous read's snapshot (or all retained ones, on a first read). */
  readonly fresh: Invalidation[];
  /** Undelivered changes older than the relay delay that are not in `fresh`. */
  readonly overdue: Invalidation[];
  /** The read's snapshot (pg_snapshot as text): the `previous` of the next read. */
  readonly snapshot: string;
}

/** A pg_snapshot's text form, `xmin:xmax:xip,xip,…`: what a read after it must look at. */
export function parseSnapshot(text: string): { xmax: string; xip: string[] } {
  const match = /^(\d+):(\d+):([\d,]*)$/.exec(text);
  if (match === null) throw new Error(`not a pg_snapshot: ${JSON.stringify(text)}`);
  return { xmax: match[2] as string, xip: match[3] === '' ? [] : (match[3] as string).split(',') };
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
   * One read of the outbox, in one statement (so under one snapshot):
   *
   * - `fresh`: the rows of every transaction that `previous` (the snapshot
   *   of the last read) did not see, because it was still in progress or
   *   had not begun, whenever it committed and however old its rows' created_at.
   *   Without `previous` (first read after start), every row within `retentionMs`;
   * - `overdue`: undelivered rows older than `overdueMs` (and within
   *   `retentionMs`) that are not fresh: at most `overdueLimit`, picked at
   *   random, so that instances relaying a backlog together share it out;
   * - `snapshot`: this statement's snapshot, to pass as `previous` next time.
   *
   * Reading by transaction rather than by time: seqs and created_at are taken
   * at insert, and a transaction can commit any time later.
   */
  async read(previous: string | undefined, retentionMs: number, overdueMs: number, overdueLimit: number, timeoutMs: number): Promise<OutboxRead> {
    const since = previous === undefined ? undefined : parseSnapshot(previous);
    // $1 xmax and $2 xip of the previous snapshot: a transaction it did not see has txid >= xmax or is in xip.
    const unseen =
      since === undefined
        ? '($1::xid8 is null and $2::xid8[] is null and created_at > clock.db_now - make_interval(secs => $3::float8 / 1000))'
        : '(txid >= $1::xid8 or txid = any($2::xid8[]))';
    const rows = await this.run<InvalidationRow & { snapshot: string; fresh: boolean | null }>(
      `select clock.snapshot::text as snapshot, r.seq, r.hash, r.version, r.delivered, r.overdue, r.fresh, clock.db_now
         from (select pg_current_snapshot() as snapshot, now() as db_now) clock
         left join lateral (
           (select seq, encode(secret_hash, 'hex') as hash, version, delivered_at is not null as delivered,
                   created_at < clock.db_now - make_interval(secs => $4::float8 / 1000) as overdue, true as fresh
              from keyward.key_invalidations
             where ${unseen})
           union all
           (select seq, encode(secret_hash, 'hex') as hash, version, false, true, false
              from keyward.key_invalidations
             where delivered_at is null
               and created_at < clock.db_now - make_interval(secs => $4::float8 / 1000)
               and created_at > clock.db_now - make_interval(secs => $3::float8 / 1000)
               and not ${unseen}
             order by random()
             limit $5::integer)
         ) r on true`,
      [since?.xmax ?? null, since?.xip ?? null, retentionMs, overdueMs, overdueLimit],
      timeoutMs,
    );
    const first = rows[0];
    if (first === undefined) throw new Error('the outbox read returned no row');
    const found = rows.filter((row) => row.seq !== null);
    return {
      fresh: found.filter((row) => row.fresh === true).map(toInvalidation),
      overdue: found.filter((row) => row.fresh === false).map(toInvalidation),
      snapshot: first.snapshot,
    };
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

import type pg from 'pg';
import type { Environment } from '../keys/KeyFormat';
import type { AdminContext, KeyEventRecord } from '../keys/KeyEvent';
import type { KeyRecord } from '../keys/KeyRecord';
import type { KeyMetadata } from '../keys/metadata';
import { type KeyState, keyStateOf } from '../keys/VerifiableKey';
import { LookupBatcher } from './LookupBatcher';
import { query, querySettled } from './db';
import { EVENT_COLUMNS, type EventSpec, type KeyEventRow, changesJson, eventValues, insertEventCte, jsonTime, toEventRecord } from './keyEventSql';

/** What CreateKey stores: everything but the secret, which only its hash stands for. */
export interface NewKey {
  readonly accountId: string;
  readonly name: string;
  readonly environment: Environment;
  readonly secretHash: string;
  readonly display: string;
  readonly scopes: readonly string[];
  readonly ipWhitelist: readonly string[];
  readonly expiresAt: Date | null;
  readonly metadata: KeyMetadata;
}

/** What UpdateKey changes: only the fields present (those of the update mask); `expiresAt: null` clears the expiry. */
export interface KeyUpdate {
  readonly name?: string;
  readonly expiresAt?: Date | null;
  readonly metadata?: KeyMetadata;
}

/** A committed change: the record as it now is, and the hash caches know it by. */
export interface KeyChange {
  readonly record: KeyRecord;
  readonly secretHash: string;
  /** False when the change was a no-op (revoking a revoked key, disabling a disabled one, enabling an enabled one). */
  readonly changed: boolean;
  /** The change's row in the invalidation outbox (none for a no-op). */
  readonly outboxSeq: string | undefined;
}

export type ChangeOutcome = KeyChange | 'not_found' | 'revoked';

/** RotateKey's outcome: the old key's change (told to the caches) and the new key, or why nothing was done. */
export type RotateOutcome = { readonly old: KeyChange; readonly created: KeyRecord } | 'not_found' | 'revoked' | { readonly replacedBy: string };

/** What RotateKey stores for the new key: the rest is copied from the old one. */
export interface RotatedSecret {
  readonly secretHash: string;
  readonly display: string;
}

export interface KeyPage {
  readonly records: KeyRecord[];
  /** The position of each record, for a page token. */
  readonly seqs: string[];
  /** Whether more keys follow the page. */
  readonly more: boolean;
}

interface KeyRow {
  id: string;
  seq: string;
  account_id: string;
  name: string;
  environment: Environment;
  display: string;
  scopes: string[];
  ip_whitelist: string[];
  created_at: Date;
  expires_at: Date | null;
  revoked_at: Date | null;
  disabled_at: Date | null;
  metadata: KeyMetadata;
  version: string;
  rotated_from_key_id: string | null;
  replaced_by_key_id: string | null;
  secret_hash: Buffer;
  request_count: string | null;
  refused_count: string | null;
  last_used_at: Date | null;
  last_used_ip: string | null;
}

const KEY_COLUMNS = `k.id, k.seq, k.account_id, k.name, k.environment, k.display, k.scopes, k.ip_whitelist,
  k.created_at, k.expires_at, k.revoked_at, k.disabled_at, k.metadata, k.version, k.rotated_from_key_id, k.replaced_by_key_id, k.secret_hash`;
export interface KeyEventPage {
  readonly events: KeyEventRecord[];
  /** Whether more events follow the page. */
  readonly more: boolean;
}

/** What CreateKey records: the initial fields as after-values, never the secret, its hash or the display form. */
const CREATE_CHANGES = changesJson([
  ['name', undefined, 'to_jsonb(k.name)'],
  ['environment', undefined, 'to_jsonb(k.environment)'],
  ['scopes', undefined, 'to_jsonb(k.scopes)'],
  ['ip_whitelist', undefined, 'to_jsonb(k.ip_whitelist)'],
  ['expires_at', undefined, jsonTime('k.expires_at')],
  ['metadata', undefined, 'k.metadata'],
]);

/** What RotateKey records on the new key: what CREATE_CHANGES does, and the key it replaces. */
const ROTATED_CREATE_CHANGES = `${CREATE_CHANGES} || ${changesJson([['rotated_from_key_id', undefined, 'to_jsonb(k.rotated_from_key_id::text)']])}`;

/** What RotateKey records on the old key: its expiry or revocation, and the key replacing it. */
const ROTATE_CHANGES = changesJson([
  ['expires_at', jsonTime('old.expires_at'), jsonTime('k.expires_at')],
  ['revoked_at', jsonTime('old.revoked_at'), jsonTime('k.revoked_at')],
  ['replaced_by_key_id', 'to_jsonb(old.replaced_by_key_id::text)', 'to_jsonb(k.replaced_by_key_id::text)'],
]);

/** What UpdateKey records for each field it may change (only those in the mask). */
const UPDATE_CHANGES = {
  name: ['name', 'to_jsonb(old.name)', 'to_jsonb(k.name)'],
  expiresAt: ['expires_at', jsonTime('old.expires_at'), jsonTime('k.expires_at')],
  metadata: ['metadata', 'old.metadata', 'k.metadata'],
} as const;

const EVENTS: Record<'scopes' | 'whitelist' | 'revoke' | 'disable' | 'enable', EventSpec> = {
  scopes: { action: 'scopes', changes: changesJson([['scopes', 'to_jsonb(old.scopes)', 'to_jsonb(k.scopes)']]) },
  whitelist: { action: 'whitelist', changes: changesJson([['ip_whitelist', 'to_jsonb(old.ip_whitelist)', 'to_jsonb(k.ip_whitelist)']]) },
  revoke: { action: 'revoke', changes: changesJson([['revoked_at', jsonTime('old.revoked_at'), jsonTime('k.revoked_at')]]) },
  disable: { action: 'disable', changes: changesJson([['disabled_at', jsonTime('old.disabled_at'), jsonTime('k.disabled_at')]]) },
  enable: { action: 'enable', changes: changesJson([['disabled_at', jsonTime('old.disabled_at'), jsonTime('k.disabled_at')]]) },
};

/** Selects keys with their usage; `from` names the keys `k`. */
const selectKeys = (from: string, extraColumns = ''): string =>
  `select ${KEY_COLUMNS}, u.request_count, u.refused_count, u.last_used_at, u.last_used_ip${extraColumns === '' ? '' : `, ${extraColumns}`}
     from ${from} left join keyward.key_usage u on u.key_id = k.id`;

/**
 * The Postgres side of keys: the source of truth. Every statement is one
 * round trip; every change increments `version`, writes its invalidation
 * outbox row and its audit event (keyward.key_events) in the same statement,
 * and returns the row as it now is.
 */
export class KeyStore {
  private readonly verifyReads: LookupBatcher<KeyState>;

  constructor(
    /** Admin reads and changes. */
    private readonly pool: pg.Pool,
    /** Verify lookups only, one query per connection at most (see LookupBatcher). */
    private readonly verifyPool: pg.Pool,
    private readonly timeouts: { readonly verifyMs: number; readonly queryMs: number },
    /** Connections of `verifyPool`. */
    verifyConnections: number,
  ) {
    this.verifyReads = new LookupBatcher((hashes, timeoutMs) => this.fetchForVerify(hashes, timeoutMs), {
      maxBatch: 500,
      maxInFlight: verifyConnections,
      timeoutMs: timeouts.verifyMs,
    });
  }

  /** Inserts a key and its `create` event, in one statement. */
  async insert(key: NewKey, context: AdminContext): Promise<KeyRecord> {
    const rows = await this.run<KeyRow>(
      `with k as (
         insert into keyward.api_keys (account_id, name, environment, secret_hash, display, scopes, ip_whitelist, expires_at, metadata)
         values ($1::text, $2::text, $3::text, $4::bytea, $5::text, $6::text[], $7::text[], $8::timestamptz, $9::jsonb)
         returning *
       ), ${insertEventCte('k', CREATE_CHANGES, 10)}
       select ${KEY_COLUMNS}, null as request_count, null as refused_count, null as last_used_at, null as last_used_ip
         from k cross join event`,
      [
        key.accountId,
        key.name,
        key.environment,
        Buffer.from(key.secretHash, 'hex'),
        key.display,
        key.scopes,
        key.ipWhitelist,
        key.expiresAt,
        JSON.stringify(key.metadata),
        ...eventValues('create', context),
      ],
    );
    return toRecord(rows[0] as KeyRow);
  }

  /**
   * Rotates a key in one statement: locks the old row (active and not yet
   * replaced), inserts the new key with the old one's name, environment,
   * scopes, whitelist and metadata (no expiry, enabled) and `rotated_from_key_id`,
   * and changes the old key: `replaced_by_key_id`, and with a grace period of
   * 0 `revoked_at` = now, otherwise `expires_at` = now + grace, never later
   * than the expiry it had; version + 1 and an outbox row, as every change.
   * Audit: `rotate` on the old key (before/after), `create` on the new one
   * naming `rotated_from_key_id`. Of two concurrent rotations, the second
   * waits on the lock, then finds the key replaced.
   */
  async rotate(accountId: string, keyId: string, fresh: RotatedSecret, graceMicros: bigint, context: AdminContext): Promise<RotateOutcome> {
    const rows = await this.run<KeyRow & { outbox_seq: string; fresh_id: string; which: 'old' | 'new' }>(
      `with old as (
         select k.* from keyward.api_keys k
          where k.account_id = $1::text and k.id = $2::uuid and k.revoked_at is null and k.replaced_by_key_id is null
            for update
       ), fresh as (
         insert into keyward.api_keys (account_id, name, environment, secret_hash, display, scopes, ip_whitelist, expires_at, metadata, rotated_from_key_id)
         select old.account_id, old.name, old.environment, $3::bytea, $4::text, old.scopes, old.ip_whitelist, null, old.metadata, old.id
           from old
         returning *
       ), changed as (
         update keyward.api_keys k
            set revoked_at = case when $5::bigint = 0 then clock_timestamp() end,
                expires_at = case when $5::bigint = 0 then k.expires_at
                                  else least(k.expires_at, clock_timestamp() + $5::bigint * interval '1 microsecond') end,
                replaced_by_key_id = fresh.id, version = k.version + 1, updated_at = clock_timestamp()
           from old, fresh
          where k.id = old.id
         returning k.*
       ), outbox as (
         insert into keyward.key_invalidations (secret_hash, version)
         select secret_hash, version from changed
         returning seq
       ), event as (
         insert into keyward.key_events (account_id, key_id, action, actor, client_address, changes)
         select k.account_id, k.id, 'rotate', $6::text, $7::text, ${ROTATE_CHANGES}
           from changed k join old on old.id = k.id
         union all
         select k.account_id, k.id, 'create', $6::text, $7::text, ${ROTATED_CREATE_CHANGES}
           from fresh k
         returning id
       ), done as (select count(*) as events from event)
       ${selectKeys('changed k cross join outbox cross join done', "outbox.seq as outbox_seq, 'old' as which")}
       union all
       select ${KEY_COLUMNS}, null, null, null, null, null, 'new' from fresh k cross join done`,
      [accountId, keyId, Buffer.from(fresh.secretHash, 'hex'), fresh.display, graceMicros.toString(), context.actor, context.clientAddress],
    );
    const oldRow = rows.find((row) => row.which === 'old');
    const newRow = rows.find((row) => row.which === 'new');
    if (oldRow !== undefined && newRow !== undefined) {
      return {
        old: { record: toRecord(oldRow), secretHash: oldRow.secret_hash.toString('hex'), changed: true, outboxSeq: oldRow.outbox_seq },
        created: toRecord(newRow),
      };
    }
    const existing = await this.run<{ revoked: boolean; replaced_by: string | null }>(
      'select revoked_at is not null as revoked, replaced_by_key_id as replaced_by from keyward.api_keys where account_id = $1::text and id = $2::uuid',
      [accountId, keyId],
    );
    const found = existing[0];
    if (found === undefined) return 'not_found';
    if (found.replaced_by !== null) return { replacedBy: found.replaced_by };
    return 'revoked';
  }

  /**
   * One page of an account's audit events (of one key when `keyId` is set),
   * newest first, strictly older than `beforeId`. A key of another account
   * simply has none here.
   */
  async listEvents(accountId: string, keyId: string | undefined, beforeId: string | undefined, limit: number): Promise<KeyEventPage> {
    const rows = await this.run<KeyEventRow>(
      `select ${EVENT_COLUMNS} from keyward.key_events e
        where e.account_id = $1::text
          and ($2::uuid is null or e.key_id = $2::uuid)
          and ($3::bigint is null or e.id < $3::bigint)
        order by e.id desc
        limit $4::integer`,
      [accountId, keyId ?? null, beforeId ?? null, limit + 1],
    );
    const more = rows.length > limit;
    return { events: (more ? rows.slice(0, limit) : rows).map(toEventRecord), more };
  }

  async get(accountId: string, keyId: string): Promise<KeyRecord | undefined> {
    const rows = await this.run<KeyRow>(
      `${selectKeys('keyward.api_keys k')} where k.account_id = $1::text and k.id = $2::uuid`,
      [accountId, keyId],
    );
    return rows[0] === undefined ? undefined : toRecord(rows[0]);
  }

  /** One page of an account's keys, newest first, strictly older than `beforeSeq`. */
  async list(accountId: string, includeRevoked: boolean, beforeSeq: string | undefined, limit: number): Promise<KeyPage> {
    const rows = await this.run<KeyRow>(
      `${selectKeys('keyward.api_keys k')}
        where k.account_id = $1::text
          and ($2::boolean or k.revoked_at is null)
          and ($3::bigint is null or k.seq < $3::bigint)
        order by k.seq desc
        limit $4::integer`,
      [accountId, includeRevoked, beforeSeq ?? null, limit + 1],
    );
    const more = rows.length > limit;
    const page = more ? rows.slice(0, limit) : rows;
    return { records: page.map(toRecord), seqs: page.map((row) => row.seq), more };
  }

  updateScopes(accountId: string, keyId: string, scopes: readonly string[], context: AdminContext): Promise<ChangeOutcome> {
    return this.changeActive(accountId, keyId, 'scopes = $3::text[]', [scopes], EVENTS.scopes, context);
  }

  updateIpWhitelist(accountId: string, keyId: string, ipWhitelist: readonly string[], context: AdminContext): Promise<ChangeOutcome> {
    return this.changeActive(accountId, keyId, 'ip_whitelist = $3::text[]', [ipWhitelist], EVENTS.whitelist, context);
  }

  /**
   * Sets the fields present in `update` (at least one) on an active key: a
   * new version, its outbox row and an `update` event recording those
   * fields, even when they already had these values (as updateScopes does).
   */
  async updateKey(accountId: string, keyId: string, update: KeyUpdate, context: AdminContext): Promise<ChangeOutcome | 'grace_extended'> {
    const assignments: string[] = [];
    const values: unknown[] = [];
    const changes: Array<readonly [string, string, string]> = [];
    const set = (column: string, cast: string, value: unknown, change: readonly [string, string, string]): void => {
      values.push(value);
      assignments.push(`${column} = $${values.length + 2}::${cast}`);
      changes.push(change);
    };
    if (update.name !== undefined) set('name', 'text', update.name, UPDATE_CHANGES.name);
    // A rotated key's expiry is the end of its grace period: it may come sooner, never later (nor be cleared).
    let when = 'true';
    if (update.expiresAt !== undefined) {
      set('expires_at', 'timestamptz', update.expiresAt, UPDATE_CHANGES.expiresAt);
      const expiresAt = `$${values.length + 2}::timestamptz`;
      when = `(k.replaced_by_key_id is null or ${expiresAt} <= k.expires_at)`;
    }
    if (update.metadata !== undefined) set('metadata', 'jsonb', JSON.stringify(update.metadata), UPDATE_CHANGES.metadata);
    if (assignments.length === 0) throw new Error('updateKey needs at least one field');
    const outcome = await this.change(accountId, keyId, assignments.join(', '), values, { action: 'update', changes: changesJson(changes) }, context, when);
    return outcome === 'unchanged' ? 'grace_extended' : outcome;
  }

  /** Revokes an active key; a revoked key comes back unchanged (`changed: false`, no event). */
  async revoke(accountId: string, keyId: string, context: AdminContext): Promise<KeyChange | 'not_found'> {
    const outcome = await this.changeActive(accountId, keyId, 'revoked_at = clock_timestamp()', [], EVENTS.revoke, context);
    if (outcome !== 'revoked') return outcome;
    return (await this.unchanged(accountId, keyId)) ?? 'not_found';
  }

  /**
   * Disables an active, enabled key (sets `disabled_at`). A disabled key comes
   * back unchanged (`changed: false`, no new version); a revoked one is 'revoked'.
   */
  disable(accountId: string, keyId: string, context: AdminContext): Promise<ChangeOutcome> {
    return this.toggle(accountId, keyId, 'disabled_at = clock_timestamp()', 'k.disabled_at is null', EVENTS.disable, context);
  }

  /** Enables a disabled key (clears `disabled_at`); as `disable`, an enabled key comes back unchanged. */
  enable(accountId: string, keyId: string, context: AdminContext): Promise<ChangeOutcome> {
    return this.toggle(accountId, keyId, 'disabled_at = null', 'k.disabled_at is not null', EVENTS.enable, context);
  }

  /** A change that applies only while `when` holds; when it does not, the key as it is (and no event). */
  private async toggle(accountId: string, keyId: string, assignment: string, when: string, event: EventSpec, context: AdminContext): Promise<ChangeOutcome> {
    const outcome = await this.change(accountId, keyId, assignment, [], event, context, when);
    if (outcome !== 'unchanged') return outcome;
    // Between the two statements the key may have been revoked: say so rather than return it.
    const current = await this.unchanged(accountId, keyId);
    if (current === undefined) return 'not_found';
    return current.record.revokedAt === null ? current : 'revoked';
  }

  /** The key as it is, as a no-op change (no outbox row). */
  private async unchanged(accountId: string, keyId: string): Promise<KeyChange | undefined> {
    const rows = await this.run<KeyRow>(`${selectKeys('keyward.api_keys k')} where k.account_id = $1::text and k.id = $2::uuid`, [
      accountId,
      keyId,
    ]);
    if (rows[0] === undefined) return undefined;
    return { record: toRecord(rows[0]), secretHash: rows[0].secret_hash.toString('hex'), changed: false, outboxSeq: undefined };
  }

  /**
   * The key with this secret hash, for Verify, within the Verify time limit.
   * Lookups that arrive together share one query.
   */
  findForVerify(secretHash: string): Promise<KeyState | undefined> {
    return this.verifyReads.find(secretHash);
  }

  private async fetchForVerify(hashes: string[], timeoutMs: number): Promise<Map<string, KeyState>> {
    const rows = await querySettled<KeyRow>(
      this.verifyPool,
      `select ${KEY_COLUMNS} from keyward.api_keys k where k.secret_hash = any($1::bytea[])`,
      [hashes.map((hash) => Buffer.from(hash, 'hex'))],
      timeoutMs,
    );
    return new Map(rows.map((row) => [row.secret_hash.toString('hex'), keyStateOf(toRecord(row))]));
  }

  /** `change` without a further condition: a key it did not update is missing or revoked. */
  private async changeActive(
    accountId: string,
    keyId: string,
    assignment: string,
    values: readonly unknown[],
    event: EventSpec,
    context: AdminContext,
  ): Promise<ChangeOutcome> {
    const outcome = await this.change(accountId, keyId, assignment, values, event, context);
    return outcome === 'unchanged' ? 'revoked' : outcome;
  }

  /**
   * Applies `assignment` to an active key of the account, incrementing its
   * version, and records the change in the invalidation outbox and its event
   * in the audit trail in the same statement (so in the same transaction:
   * all three commit, or none). `old` is the row before the change, locked
   * first so that the event's before-values are those the change replaced,
   * even under concurrent changes. Tells a missing key from a
   * revoked one when nothing was updated, and, with a further condition
   * `when`, a key that does not meet it ('unchanged').
   */
  private async change(
    accountId: string,
    keyId: string,
    assignment: string,
    values: readonly unknown[],
    event: EventSpec,
    context: AdminContext,
    when = 'true',
  ): Promise<ChangeOutcome | 'unchanged'> {
    const rows = await this.run<KeyRow & { outbox_seq: string }>(
      `with old as (
         select k.id, k.name, k.expires_at, k.metadata, k.scopes, k.ip_whitelist, k.revoked_at, k.disabled_at
           from keyward.api_keys k
          where k.account_id = $1::text and k.id = $2::uuid and k.revoked_at is null and ${when}
            for update
       ), changed as (
         update keyward.api_keys k
            set ${assignment}, version = k.version + 1, updated_at = clock_timestamp()
           from old
          where k.id = old.id and k.account_id = $1::text and k.revoked_at is null and ${when}
         returning k.*
       ), outbox as (
         insert into keyward.key_invalidations (secret_hash, version)
         select secret_hash, version from changed
         returning seq
       ), ${insertEventCte('changed k join old on old.id = k.id', event.changes, values.length + 3)}
       ${selectKeys('changed k cross join outbox cross join event', 'outbox.seq as outbox_seq')}`,
      [accountId, keyId, ...values, ...eventValues(event.action, context)],
    );
    const row = rows[0];
    if (row !== undefined) {
      return { record: toRecord(row), secretHash: row.secret_hash.toString('hex'), changed: true, outboxSeq: row.outbox_seq };
    }
    const existing = await this.run<{ revoked: boolean }>(
      'select revoked_at is not null as revoked from keyward.api_keys where account_id = $1::text and id = $2::uuid',
      [accountId, keyId],
    );
    if (existing[0] === undefined) return 'not_found';
    return existing[0].revoked ? 'revoked' : 'unchanged';
  }

  private run<Row extends pg.QueryResultRow>(text: string, values: readonly unknown[]): Promise<Row[]> {
    return query<Row>(this.pool, text, values, this.timeouts.queryMs);
  }
}

function toRecord(row: KeyRow): KeyRecord {
  return {
    id: row.id,
    accountId: row.account_id,
    name: row.name,
    environment: row.environment,
    display: row.display,
    scopes: row.scopes,
    ipWhitelist: row.ip_whitelist,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
    disabledAt: row.disabled_at,
    metadata: row.metadata,
    version: Number(row.version),
    rotatedFromKeyId: row.rotated_from_key_id,
    replacedByKeyId: row.replaced_by_key_id,
    usage: {
      requestCount: BigInt(row.request_count ?? 0),
      refusedCount: BigInt(row.refused_count ?? 0),
      lastUsedAt: row.last_used_at,
      lastUsedIp: row.last_used_ip,
    },
  };
}

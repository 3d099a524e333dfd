import { type AdminContext, EVENT_FIELDS, type FieldChange, type KeyAction, type KeyEventRecord } from '../keys/KeyEvent';

/**
 * SQL pieces of the audit trail (keyward.key_events): the event a change
 * writes in its own statement, and the rows ListKeyEvents reads. The changes
 * are built in SQL from the rows before and after, so the event records what
 * was committed, never what the caller asked for.
 */

/** A timestamptz as JSON: RFC 3339 in UTC with microseconds, or JSON null; whatever the session's time zone. */
export const jsonTime = (expression: string): string =>
  `to_jsonb(to_char((${expression}) at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))`;

/** `{field: {before, after}}` entries for jsonb_build_object; a `before` of undefined leaves it out (creation). */
export function changesJson(entries: ReadonlyArray<readonly [field: string, before: string | undefined, after: string]>): string {
  const parts = entries.map(([field, before, after]) =>
    before === undefined
      ? `'${field}', jsonb_build_object('after', ${after})`
      : `'${field}', jsonb_build_object('before', ${before}, 'after', ${after})`,
  );
  return `jsonb_build_object(${parts.join(', ')})`;
}

/** What a change of an existing key records: its action and its changes, over `old` (before) and `k` (after). */
export interface EventSpec {
  readonly action: KeyAction;
  readonly changes: string;
}

/**
 * A CTE `event` inserting one event per row of `changedFrom` (a FROM clause
 * naming the new row `k`, and for changes of existing keys the old one `old`).
 * `param` is the number of the first of three parameters: action, actor, client address.
 */
export function insertEventCte(changedFrom: string, changes: string, param: number): string {
  return `event as (
         insert into keyward.key_events (account_id, key_id, action, actor, client_address, changes)
         select k.account_id, k.id, $${param}::text, $${param + 1}::text, $${param + 2}::text, ${changes}
           from ${changedFrom}
         returning id
       )`;
}

/** The values of insertEventCte's three parameters. */
export const eventValues = (action: KeyAction, context: AdminContext): unknown[] => [action, context.actor, context.clientAddress];

export interface KeyEventRow {
  id: string;
  account_id: string;
  key_id: string;
  action: KeyAction;
  actor: string;
  client_address: string | null;
  at: Date;
  changes: Record<string, { before?: unknown; after?: unknown }>;
}

export const EVENT_COLUMNS = 'e.id, e.account_id, e.key_id, e.action, e.actor, e.client_address, e.at, e.changes';

const FIELD_ORDER = new Map<string, number>(EVENT_FIELDS.map((field, index) => [field, index]));

export function toEventRecord(row: KeyEventRow): KeyEventRecord {
  const changes: FieldChange[] = Object.entries(row.changes)
    .map(([field, value]) => ({ field, before: value.before, after: value.after }))
    .sort((a, b) => (FIELD_ORDER.get(a.field) ?? EVENT_FIELDS.length) - (FIELD_ORDER.get(b.field) ?? EVENT_FIELDS.length) || (a.field < b.field ? -1 : 1));
  return {
    id: row.id,
    accountId: row.account_id,
    keyId: row.key_id,
    action: row.action,
    actor: row.actor,
    clientAddress: row.client_address,
    at: row.at,
    changes,
  };
}

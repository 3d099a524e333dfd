/** What an admin change did to a key, as stored in keyward.key_events.action. */
export type KeyAction = 'create' | 'revoke' | 'disable' | 'enable' | 'scopes' | 'whitelist' | 'rotate' | 'update';

/**
 * Who makes an admin change, recorded with its event: the name of the admin
 * token presented, and the caller's canonical address (null without one,
 * e.g. over a Unix socket).
 */
export interface AdminContext {
  readonly actor: string;
  readonly clientAddress: string | null;
}

/** The fields an event may record, in the order events list them. Never the secret, its hash or the display form. */
export const EVENT_FIELDS = ['name', 'environment', 'scopes', 'ip_whitelist', 'expires_at', 'metadata', 'revoked_at', 'disabled_at', 'rotated_from_key_id', 'replaced_by_key_id'] as const;

/** One field's values before and after a change, as JSON values (`undefined` before: the field had none, at creation). */
export interface FieldChange {
  readonly field: string;
  readonly before: unknown;
  readonly after: unknown;
}

/** One committed admin change, as ListKeyEvents returns it. */
export interface KeyEventRecord {
  /** Decimal; increasing in commit order within a statement's sequence. */
  readonly id: string;
  readonly accountId: string;
  readonly keyId: string;
  readonly action: KeyAction;
  readonly actor: string;
  readonly clientAddress: string | null;
  readonly at: Date;
  readonly changes: readonly FieldChange[];
}

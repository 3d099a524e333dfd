-- The audit trail (issue 12): one row per committed admin change, written by
-- the statement that makes the change (src/store/KeyStore.ts), so the change
-- and its event commit together or not at all. A no-op (revoking a revoked
-- key, disabling a disabled one, enabling an enabled one) writes none.
--
-- changes is {"field": {"before": …, "after": …}} over name, environment,
-- scopes, ip_whitelist, expires_at, revoked_at and disabled_at; it never
-- holds the secret, its hash or the display form. client_address is the
-- caller's address in canonical form (as last_used_ip), null when the
-- connection had none. Events are kept forever for now: no pruning.
create table keyward.key_events (
  id bigint generated always as identity primary key,
  account_id text not null,
  key_id uuid not null,
  action text not null
    check (action in ('create', 'revoke', 'disable', 'enable', 'scopes', 'whitelist', 'rotate', 'update')),
  actor text not null,
  client_address text,
  at timestamptz not null default clock_timestamp(),
  changes jsonb not null default '{}'::jsonb
);

-- ListKeyEvents: an account's events, or one key's, newest first (keyset paging on id).
create index key_events_account_id on keyward.key_events (account_id, id desc);
create index key_events_account_key_id on keyward.key_events (account_id, key_id, id desc);

-- API keys. Only the SHA-256 of a secret is stored; the secret itself never is.
create table keyward.api_keys (
  id           uuid        primary key default gen_random_uuid(),
  -- Insertion order, for "newest first" keyset paging (created_at can tie).
  seq          bigint      generated always as identity,
  account_id   text        not null,
  name         text        not null,
  environment  text        not null,
  secret_hash  bytea       not null,
  display      text        not null,
  scopes       text[]      not null,
  ip_whitelist text[]      not null default '{}',
  created_at   timestamptz not null default clock_timestamp(),
  updated_at   timestamptz not null default clock_timestamp(),
  expires_at   timestamptz,
  revoked_at   timestamptz,
  -- Incremented by every change, so that caches can refuse older copies.
  version      bigint      not null default 1,
  constraint api_keys_seq_key unique (seq),
  constraint api_keys_secret_hash_key unique (secret_hash),
  constraint api_keys_secret_hash_is_sha256 check (octet_length(secret_hash) = 32),
  constraint api_keys_environment_check check (environment in ('live', 'test')),
  constraint api_keys_scopes_not_empty check (cardinality(scopes) > 0)
);

-- ListKeys: one account, newest first, with and without revoked keys.
create index api_keys_account_seq_idx on keyward.api_keys (account_id, seq desc);
create index api_keys_account_active_seq_idx on keyward.api_keys (account_id, seq desc) where revoked_at is null;

-- Usage of each key, aggregated in memory by every instance and flushed in
-- batches (one statement for many keys), never written per Verify.
create table keyward.key_usage (
  key_id        uuid        primary key references keyward.api_keys (id),
  -- Verify calls that presented the key, whatever their verdict.
  request_count bigint      not null default 0,
  -- Of those, the ones refused (revoked, expired, address, scope).
  refused_count bigint      not null default 0,
  -- Only ever moves forward, whatever order flushes arrive in.
  last_used_at  timestamptz,
  last_used_ip  text
);

-- Flushed batches, so that retrying a batch whose first attempt may have
-- committed (the connection died before the answer) does not count it twice.
create table keyward.usage_batches (
  id         text        primary key,
  applied_at timestamptz not null default now()
);

create index usage_batches_applied_at_idx on keyward.usage_batches (applied_at);

-- Invalidation outbox: one row per change to a key, written in the change's
-- own statement. Instances poll it to drop cached copies they were not told
-- about over Redis, and write its tombstones into Redis when the changing
-- instance could not (see README, "Caching and revocation").
create table keyward.key_invalidations (
  seq          bigint      generated always as identity primary key,
  secret_hash  bytea       not null,
  version      bigint      not null,
  created_at   timestamptz not null default clock_timestamp(),
  -- Set once Redis is known to hold this version (or a tombstone of it).
  delivered_at timestamptz
);

create index key_invalidations_created_at_idx on keyward.key_invalidations (created_at);
create index key_invalidations_undelivered_idx on keyward.key_invalidations (created_at) where delivered_at is null;

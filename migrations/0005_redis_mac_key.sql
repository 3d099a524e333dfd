-- Secrets that only keyward instances hold (they read them at start, before
-- they serve). 'redis-mac' keys the HMAC-SHA256 that authenticates every
-- entry keyward writes into Redis, so that write access to Redis alone
-- cannot mint a key entry or un-revoke a key (see README, "Caching and
-- revocation", and src/cache/EntrySeal.ts).
--
-- The secret is made here, once: 32 bytes, the SHA-256 of three
-- gen_random_uuid() values (core PostgreSQL since 13, drawn from
-- pg_strong_random: 3 x 122 random bits in, 256 out), so that no instance
-- has to race another to create it. Rotating it is: update the row, restart
-- every instance (entries sealed under the old secret are then misses,
-- rejected once each).
create table keyward.instance_secrets (
  name       text        primary key,
  secret     bytea       not null check (length(secret) >= 32),
  created_at timestamptz not null default now()
);

insert into keyward.instance_secrets (name, secret)
values ('redis-mac', sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')));

-- Disabling a key (DisableKey) is reversible, unlike revoking it: while
-- disabled_at is set, Verify answers VERIFY_CODE_DISABLED; EnableKey clears
-- it. Like every other change, both increment version and write an
-- invalidation outbox row in the same statement (src/store/KeyStore.ts).
-- A revoked key cannot be disabled or enabled, but one disabled before it
-- was revoked keeps its disabled_at.
alter table keyward.api_keys
  add column disabled_at timestamptz;

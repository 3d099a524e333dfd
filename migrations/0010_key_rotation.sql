-- Rotation (issue 12): RotateKey makes a new key with the old one's name,
-- environment, scopes, whitelist and metadata, and in the same statement
-- sets the old key's expires_at (or revoked_at for a grace period of 0) and
-- replaced_by_key_id (src/store/KeyStore.ts). A key is replaced at most once:
-- the statement locks the old row and refuses one already replaced.
alter table keyward.api_keys
  add column rotated_from_key_id uuid,
  add column replaced_by_key_id uuid;

-- Metadata (issue 12): free-form string labels of a key, set by CreateKey and
-- UpdateKey, returned by GetKey, ListKeys and Verify. The limits (entries, key
-- pattern, value length, total size) are checked by keyward before writing
-- (src/keys/metadata.ts); the table only insists on a JSON object, so that an
-- existing key reads as {} and nothing but an object is ever stored.
alter table keyward.api_keys
  add column metadata jsonb not null default '{}'::jsonb
    constraint api_keys_metadata_object check (jsonb_typeof(metadata) = 'object');

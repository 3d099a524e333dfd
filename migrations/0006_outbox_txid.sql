-- The invalidation outbox is read by transaction, not by time: each row
-- records the id of the transaction that inserted it, and each read returns
-- the rows of the transactions its previous read's snapshot did not see
-- (still in progress, or not yet begun), however late they commit (README,
-- "Caching and revocation"). Rows already here get this migration's id:
-- instances read every retained row at start anyway.
alter table keyward.key_invalidations
  add column txid xid8 not null default pg_current_xact_id();

create index key_invalidations_txid_idx on keyward.key_invalidations (txid);

-- Account traits from group calls, one row per account and distinct traits
-- JSON, with the latest time it was sent: SDKs repeat the same group call
-- every session, and those rows collapse. pkg/accounts merges an account's
-- rows per key, latest event time first (Segment's rule: a later call
-- overwrites the keys it sets and keeps the others).
CREATE TABLE IF NOT EXISTS account_traits (
    tenant_id   String,
    account_id  String,
    traits      String,
    traits_hash UInt64,
    updated_at  DateTime('UTC'),
    message_id  String
) ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (tenant_id, account_id, traits_hash);

-- The group calls stored before, from the table this one replaces (0007
-- drops it). Run again after a failure, it adds rows that collapse.
INSERT INTO account_traits (tenant_id, account_id, traits, traits_hash, updated_at, message_id)
SELECT tenant_id, account_id, if(traits = '', '{}', traits), cityHash64(if(traits = '', '{}', traits)), updated_at, message_id FROM accounts;

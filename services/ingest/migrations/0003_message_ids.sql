-- The writer's dedup index: which messageIds of a tenant are stored. A
-- messageId claimed here within the dedup horizon (ingest.writer.dedup_horizon,
-- 24 h by default) is not stored again, whatever the batching or timing of
-- the retry that carries it.
--
-- A claim is written before the events it covers, and names the account the
-- event was stored under and the stream message that claimed it; a
-- redelivery of that message (a crash between the two inserts) finds its own
-- claims and inserts the rows that are missing, under the same account. A
-- claim is released (a later row with released = 1) when its message is
-- dead-lettered, so a replay after a fix stores it.
--
-- One partition per day of claimed_at: the writer drops the days past the
-- horizon (the 18.16 server has no TTL).
CREATE TABLE IF NOT EXISTS message_ids (
    tenant_id  String,
    message_id String,
    id_hash    UInt64,
    account_id String,
    stream_seq UInt64,
    claimed_at DateTime('UTC'),
    version    UInt64,
    released   UInt8
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(claimed_at)
ORDER BY (tenant_id, message_id);

-- The writer's dedup index: which messageIds of a tenant are stored. A
-- messageId stored within the dedup horizon (ingest.writer.dedup_horizon,
-- 24 h by default) is not stored again, whatever the batching or timing of
-- the retry that carries it. The writer keeps the hashes in memory and
-- reads this table to confirm a hit, and when it starts.
--
-- The materialized view fills it from every insert into events, in the
-- same statement: a row of events and its row here are written together
-- (an insert is atomic per block, and the view writes each block's rows),
-- so "claimed here" means "stored there", and the writer makes one insert
-- per batch. id_hash is cityHash64(tenant NUL messageId), which the writer
-- computes alike (dedup.Hash).
--
-- One partition per day of claimed_at: the writer drops the days past the
-- horizon (the 18.16 server has no TTL).
CREATE TABLE IF NOT EXISTS message_ids (
    tenant_id  String,
    message_id String,
    id_hash    UInt64,
    claimed_at DateTime('UTC')
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(claimed_at)
ORDER BY (tenant_id, message_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS message_ids_from_events TO message_ids AS
SELECT tenant_id, message_id, cityHash64(concat(tenant_id, '\0', message_id)) AS id_hash, now() AS claimed_at
FROM events;

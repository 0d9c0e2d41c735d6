-- Usage events, one row per call and messageId: the writer checks each
-- messageId against message_ids (0003) before it inserts, so a client retry,
-- however re-batched or re-timed, adds no row. (ReplacingMergeTree merges
-- only rows with an equal sort key, and a retry's account or skew-corrected
-- timestamp can differ, so merges alone would not dedup it.) Queries still
-- count distinct messageIds, so an answer never depends on merges.
CREATE TABLE IF NOT EXISTS events (
    tenant_id          String,
    account_id         String,
    message_id         String,
    type               String,
    name               String,
    user_id            String,
    anonymous_id       String,
    source_id          String,
    timestamp          DateTime('UTC'),
    timestamp_ms       UInt16,
    original_timestamp DateTime('UTC'),
    sent_at            DateTime('UTC'),
    received_at        DateTime('UTC'),
    properties         String,
    traits             String,
    context            String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (tenant_id, account_id, timestamp, message_id);

-- Users and their latest account and traits, from identify and group calls.
-- Rows accumulate; reads take the latest non-empty value per column.
CREATE TABLE IF NOT EXISTS users (
    tenant_id  String,
    user_id    String,
    account_id String,
    traits     String,
    updated_at DateTime('UTC'),
    message_id String
) ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, user_id, message_id);

-- Accounts (Segment groups) and their latest traits, from group calls.
CREATE TABLE IF NOT EXISTS accounts (
    tenant_id  String,
    account_id String,
    traits     String,
    updated_at DateTime('UTC'),
    message_id String
) ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, account_id, message_id);

-- The track, page and screen events of accounts again, sorted by name
-- before account, with the columns milestone tracking reads and the
-- messageId and user (else the anonymous id) as cityHash64 hashes. A
-- milestone read wants a few event names of a page of accounts; in events,
-- sorted by account, the names it doesn't want share the granules of those
-- it does, so it decompressed and filtered every event of the page. From
-- here it reads only the names it wants: a backfill of 100 million events
-- (4 of 20 names) took 25.2-34.0 s against 28.6-36.2 s from events, 2.1 to
-- 6.3 s less in each of four pairs alternated in one process. It costs the
-- ingest writer about a tenth of its throughput (BenchmarkWriterDrain,
-- embedded: 165,000-189,000 events/s with the view, 185,000-218,000
-- without, four pairs).
--
-- The view below fills it on every insert into events, in the same
-- statement, so a reader sees an event here as soon as the insert returns.
-- Readers count each messageId of a name once, so a row here twice (the
-- INSERT below racing the view, or run again after a failure) changes no
-- answer, and a plain MergeTree will do. Like account_activity, it only
-- follows inserts: deleting events would have to delete here too.
CREATE TABLE IF NOT EXISTS events_by_name (
    tenant_id    String,
    name         String,
    account_id   String,
    timestamp    DateTime('UTC'),
    timestamp_ms UInt16,
    message_hash UInt64,
    user_hash    UInt64,
    properties   String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (tenant_id, name, account_id, timestamp);

CREATE MATERIALIZED VIEW IF NOT EXISTS events_by_name_view TO events_by_name AS
SELECT tenant_id, name, account_id, timestamp, timestamp_ms, cityHash64(message_id) AS message_hash,
    if(user_id = '' AND anonymous_id = '', 0, cityHash64(if(user_id != '', user_id, anonymous_id))) AS user_hash, properties
FROM events WHERE account_id != '' AND type IN ('track', 'page', 'screen');

-- The events stored before the view.
INSERT INTO events_by_name (tenant_id, name, account_id, timestamp, timestamp_ms, message_hash, user_hash, properties)
SELECT tenant_id, name, account_id, timestamp, timestamp_ms, cityHash64(message_id),
    if(user_id = '' AND anonymous_id = '', 0, cityHash64(if(user_id != '', user_id, anonymous_id))), properties
FROM events WHERE account_id != '' AND type IN ('track', 'page', 'screen');

-- The base version of a table, for any engine.
CREATE TABLE IF NOT EXISTS things (
    tenant_id String,
    id        UInt64,
    name      String
) ENGINE = MergeTree ORDER BY (tenant_id, id);

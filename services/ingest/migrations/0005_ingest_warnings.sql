-- Calls refused one by one inside batches whose other calls were stored
-- (a bad timestamp, a missing userId...), per tenant, minute, API, reason
-- and field within the call. Each ingest process adds its counts every
-- 10 s; SummingMergeTree folds them, and queries sum.
CREATE TABLE IF NOT EXISTS ingest_warnings (
    tenant_id String,
    minute    DateTime('UTC'),
    api       String,
    code      String,
    field     String,
    calls     UInt64
) ENGINE = SummingMergeTree(calls)
ORDER BY (tenant_id, minute, api, code, field);

-- The latest refused call of each kind, as an example (its first 2 KB).
CREATE TABLE IF NOT EXISTS ingest_warning_samples (
    tenant_id String,
    api       String,
    code      String,
    field     String,
    seen_at   DateTime('UTC'),
    message   String,
    call      String
) ENGINE = ReplacingMergeTree(seen_at)
ORDER BY (tenant_id, api, code, field);

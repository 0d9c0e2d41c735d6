-- Refused ingest requests per tenant, minute, API and reason. Each ingest
-- process adds its counts every 10 s; SummingMergeTree folds them, and
-- queries sum, so answers do not depend on merges.
CREATE TABLE IF NOT EXISTS ingest_rejections (
    tenant_id String,
    minute    DateTime('UTC'),
    api       String,
    reason    String,
    requests  UInt64
) ENGINE = SummingMergeTree(requests)
ORDER BY (tenant_id, minute, api, reason);

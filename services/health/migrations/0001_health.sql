-- Per account and UTC day: its events (each messageId once), the names
-- it used (track events by name, pages and screens as "page:<name>" and
-- "screen:<name>"), and the users who sent them. One row per account and
-- day, not per event name: a score reads 30-odd rows per account, and
-- real usage repeats the same names every day. The scorer rebuilds the
-- rows of the (account, day) pairs each stored notice names, from the
-- events (DESIGN.md "Detection", point 6): a materialized view would see a
-- duplicate row before any dedup. The latest version wins; reads use
-- FINAL, so answers never depend on merges.
CREATE TABLE IF NOT EXISTS account_day_usage (
    tenant_id  String,
    account_id String,
    day        Date,
    events     UInt64,
    names      Array(String),
    users      Array(String),
    version    UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, account_id, day);

-- Each account's latest score: what the accounts API answers and what the
-- scorer compares a new score with. state is the scorer's JSON (the
-- components, the cancel-intent evidence and its hits, recent peaks).
-- The columns beside it are what List filters and sorts on.
CREATE TABLE IF NOT EXISTS account_health (
    tenant_id         String,
    account_id        String,
    score             UInt8,
    band              String,
    change            Int16,
    fit               String,
    onboarding_status String,
    intent_score      Float64,
    at_risk           UInt8,
    churned_at        DateTime('UTC'),
    state             String,
    evaluated_at      DateTime('UTC'),
    version           UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, account_id);

-- Every score change, with its components.
CREATE TABLE IF NOT EXISTS health_history (
    tenant_id    String,
    account_id   String,
    at           DateTime('UTC'),
    score        UInt8,
    band         String,
    intent_score Float64,
    components   String
) ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, account_id, at);

-- CSM sentiment: the latest per account wins; a recompute never writes it.
CREATE TABLE IF NOT EXISTS health_sentiment (
    tenant_id  String,
    account_id String,
    score      UInt8,
    note       String,
    author     String,
    set_at     DateTime('UTC'),
    expires_at DateTime('UTC'),
    version    UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, account_id);

-- One record per account and churn, classified when recorded.
CREATE TABLE IF NOT EXISTS churn_records (
    tenant_id       String,
    account_id      String,
    churned_at      DateTime('UTC'),
    source          String,
    reason          String,
    fit             String,
    foreseen        UInt8,
    first_risk_kind String,
    first_risk_at   DateTime('UTC'),
    lead_seconds    Int64,
    recorded_at     DateTime('UTC')
) ENGINE = ReplacingMergeTree(recorded_at)
ORDER BY (tenant_id, account_id, churned_at);

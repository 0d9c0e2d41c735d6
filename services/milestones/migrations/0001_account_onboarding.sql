-- Each account's latest evaluation: what the accounts and milestones APIs
-- answer, and what the evaluator compares a new evaluation with to find
-- transitions. One row per evaluation that changed something; the latest
-- (highest version, the evaluation clock in nanoseconds) wins, and reads
-- use FINAL so answers never depend on merges.
--
-- status is empty for an account no journey applies to; state is the
-- progress.State JSON (milestones, times, cause). The last event time is
-- not kept here: it changes with every event, and rewriting the row for
-- it would cost a write per account per evaluation under load; the
-- accounts API reads it from the events, and the owner from the traits
-- (the tenant's owner trait can change).
CREATE TABLE IF NOT EXISTS account_onboarding (
    tenant_id      String,
    account_id     String,
    journey_id     String,
    status         String,
    start          DateTime('UTC'),
    first_event_at DateTime('UTC'),
    state          String,
    evaluated_at   DateTime('UTC'),
    version        UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, account_id);

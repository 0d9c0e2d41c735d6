-- Every signal published to SIGNALS, for listing (stickpoint signals list).
-- payload is the stickpoint.signals.v1.Signal as published, protobuf in
-- base64. A signal's id is derived from what it says (tenant, account, kind and the
-- transition's identity), so a signal emitted again after a crash
-- collapses into one row; reads use FINAL, so answers never depend on
-- merges.
CREATE TABLE IF NOT EXISTS signals (
    tenant_id   String,
    account_id  String,
    signal_id   String,
    kind        String,
    severity    String,
    occurred_at DateTime('UTC'),
    detected_at DateTime('UTC'),
    summary     String,
    payload     String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(detected_at)
ORDER BY (tenant_id, account_id, signal_id);

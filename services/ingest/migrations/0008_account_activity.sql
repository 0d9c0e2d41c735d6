-- Each account's first and last event time, kept by ClickHouse as events
-- are stored: the view below runs on every insert into events, in the same
-- statement, so a reader that sees an event sees it here as soon as the
-- insert returns. Listing a tenant's accounts and reading their first
-- events then reads a row or a few per account, where it scanned every
-- event (a backfill of 100 million events spent one scan on the list and
-- one more, a page at a time, on the first events). Rows accumulate per
-- insert and merge in the background; readers take minMerge and maxMerge
-- (pkg/accounts).
CREATE TABLE IF NOT EXISTS account_activity (
    tenant_id   String,
    account_id  String,
    first_event AggregateFunction(min, DateTime('UTC')),
    last_event  AggregateFunction(max, DateTime('UTC'))
) ENGINE = AggregatingMergeTree
ORDER BY (tenant_id, account_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS account_activity_view TO account_activity AS
SELECT tenant_id, account_id, minState(timestamp) AS first_event, maxState(timestamp) AS last_event
FROM events WHERE account_id != '' GROUP BY tenant_id, account_id;

-- The events stored before the view. One stored while this runs may be
-- counted twice, which a first and a last don't mind; so does a run again
-- after a failure.
INSERT INTO account_activity (tenant_id, account_id, first_event, last_event)
SELECT tenant_id, account_id, minState(timestamp), maxState(timestamp)
FROM events WHERE account_id != '' GROUP BY tenant_id, account_id;

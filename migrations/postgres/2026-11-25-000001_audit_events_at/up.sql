-- The purge of audit events past MFA_AUDIT_RETENTION_DAYS finds the
-- oldest by time; without an index it would read the whole table each time.
-- CONCURRENTLY: building it on a large audit table must not hold up the
-- writes of the servers still running during an upgrade (every audited
-- change inserts into this table). It cannot run in a transaction, hence
-- metadata.toml; IF NOT EXISTS lets a retried upgrade go on.
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_events_at_idx ON audit_events (at);

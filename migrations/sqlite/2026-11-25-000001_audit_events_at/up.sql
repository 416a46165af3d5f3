-- The purge of audit events past MFA_AUDIT_RETENTION_DAYS finds the
-- oldest by time; without an index it would read the whole table each time.
CREATE INDEX audit_events_at_idx ON audit_events (at);

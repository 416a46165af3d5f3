DROP INDEX IF EXISTS audit_events_anonymous_at_idx;

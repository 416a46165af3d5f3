DROP INDEX IF EXISTS audit_events_at_idx;

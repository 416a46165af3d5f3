DROP TABLE audit_events;
DROP TABLE email_changes;
DROP TABLE failure_counters;
DROP TABLE sessions;

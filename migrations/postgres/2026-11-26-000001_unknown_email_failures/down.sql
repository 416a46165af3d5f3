DROP TABLE unknown_email_failures;
ALTER TABLE failure_counters DROP COLUMN last_failure_at;

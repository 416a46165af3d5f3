-- The address each audited request came from (behind a balancer, the
-- client its trusted proxies named), so that an admin reading the trail
-- sees where a reset or a run of failed logins came from without the
-- server's logs. NULL for the operator's command line, background work
-- and every event written before this column.
ALTER TABLE audit_events ADD COLUMN client_address TEXT;

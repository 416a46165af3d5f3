-- The purge deletes the events of password attempts at addresses no user
-- has a day after them, whatever the audit retention: anyone can make them
-- and no admin sees them. This index holds only those rows, so that the
-- purge finds them without reading the audit trail of every org.
-- The condition is repeated word for word by the store's query
-- (`anonymous_audit_events!`), or the index would not be used.
CREATE INDEX audit_events_anonymous_at_idx ON audit_events (at)
 WHERE org_id IS NULL AND actor_user_id IS NULL AND target_user_id IS NULL
   AND action IN ('login_failed', 'locked_out', 'refused_while_locked_out');

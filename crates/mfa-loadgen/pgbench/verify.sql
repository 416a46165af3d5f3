-- One MFA verify as mfa-store sends it on the locked path (statements as
-- logged by PostgreSQL with log_statement = all; the path of every code
-- check but a right authenticator code from a user with no failures, which
-- takes verify-fast.sql's): the token lookup, then a write transaction of
-- seven round trips. Each verify raises the accepted step by one (under a
-- bound no run reaches), so that every update changes the row as the
-- server's does.
\set u random(1, 100000)
\set now 2000000000 + :client_id
SELECT sessions.id, sessions.token_hash, sessions.user_id, sessions.org_id, sessions.level, sessions.created_at, sessions.expires_at, sessions.last_seen_at, sessions.revoked_at, users.is_super_admin, memberships.user_id, memberships.org_id, memberships.is_active, memberships.is_admin, memberships.all_access, memberships.mfa_opt_out, memberships.exclude_from_membership_count, memberships.has_advanced_permissions FROM ((sessions INNER JOIN users ON (sessions.user_id = users.id)) LEFT OUTER JOIN memberships ON ((memberships.user_id = sessions.user_id) AND (memberships.org_id = sessions.org_id))) WHERE (sessions.token_hash = encode(sha256(('token-' || :u)::bytea), 'hex'));
BEGIN;
SELECT users.id FROM users WHERE (users.id = :u) FOR NO KEY UPDATE;
SELECT failure_counters.failures, failure_counters.locked_until, authenticators.user_id, authenticators.secret_ciphertext, authenticators.algorithm, authenticators.digits, authenticators.period, authenticators.verified, authenticators.expires_at, authenticators.verified_at, authenticators.last_used_step, authenticators.created_at FROM ((users LEFT OUTER JOIN failure_counters ON ((failure_counters.user_id = users.id) AND (failure_counters.kind = 'code'))) LEFT OUTER JOIN authenticators ON (authenticators.user_id = users.id)) WHERE (users.id = :u);
UPDATE authenticators SET last_used_step = last_used_step + 1 WHERE (((authenticators.user_id = :u) AND (authenticators.verified = TRUE)) AND ((authenticators.last_used_step IS NULL) OR (authenticators.last_used_step < 9000000000))) RETURNING authenticators.user_id;
INSERT INTO audit_events (at, org_id, actor_user_id, target_user_id, action, detail) VALUES (:now, 1, :u, :u, 'mfa_verify_succeeded', 'method: authenticator') RETURNING audit_events.id;
UPDATE sessions SET token_hash = encode(sha256(('token-' || :u)::bytea), 'hex'), level = 'full', expires_at = :now + 43200, last_seen_at = :now WHERE (((sessions.id = :u) AND (sessions.revoked_at IS NULL)) AND (sessions.expires_at > :now)) RETURNING sessions.id;
COMMIT;

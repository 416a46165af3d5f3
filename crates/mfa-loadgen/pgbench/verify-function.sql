-- The same work as verify.sql with the write transaction in one
-- server-side function (setup.sql): two round trips instead of eight.
\set u random(1, 100000)
\set now 2000000000 + :client_id
SELECT sessions.id, sessions.token_hash, sessions.user_id, sessions.org_id, sessions.level, sessions.created_at, sessions.expires_at, sessions.last_seen_at, sessions.revoked_at, users.is_super_admin, memberships.user_id, memberships.org_id, memberships.is_active, memberships.is_admin, memberships.all_access, memberships.mfa_opt_out, memberships.exclude_from_membership_count, memberships.has_advanced_permissions FROM ((sessions INNER JOIN users ON (sessions.user_id = users.id)) LEFT OUTER JOIN memberships ON ((memberships.user_id = sessions.user_id) AND (memberships.org_id = sessions.org_id))) WHERE (sessions.token_hash = encode(sha256(('token-' || :u)::bytea), 'hex'));
SELECT pgbench_verify(:u, 9000000000, encode(sha256(('token-' || :u)::bytea), 'hex'), :now);

-- Data for the pgbench scripts beside this file: 100,000 members of one
-- org, each with a verified authenticator and a session, in a database the
-- server's migrations (migrations/postgres) have been applied to. Run by
-- run.sh; not used by the server or the harness.

INSERT INTO orgs (name, created_at) VALUES ('pgbench', 0);

INSERT INTO users (email, first_name, last_name, password_hash, created_at, search_text)
SELECT 'user' || g || '@pgbench.test', 'First' || g, 'Last' || g, 'not-a-hash', 0,
       lower('First' || g || chr(31) || 'Last' || g || chr(31) || 'user' || g || '@pgbench.test')
  FROM generate_series(1, 100000) AS g;

INSERT INTO memberships (user_id, org_id, search_text)
SELECT id, 1, search_text FROM users;

INSERT INTO authenticators (user_id, secret_ciphertext, algorithm, digits, period,
                            verified, expires_at, verified_at, last_used_step, created_at)
SELECT id, sha256(id::text::bytea), 'SHA1', 6, 30, TRUE, 0, 0, 1, 0 FROM users;

-- The token of user n hashes to encode(sha256('token-n'), 'hex'); a
-- verify rotates it to the same value so that every transaction finds it.
INSERT INTO sessions (token_hash, user_id, org_id, level, created_at, expires_at, last_seen_at)
SELECT encode(sha256(('token-' || id)::bytea), 'hex'), id, 1, 'partial', 0, 9999999999, 0
  FROM users;

-- The whole verify as one server-side call: the comparison for a stored
-- procedure (the server does not use one; docs/PERFORMANCE.md).
CREATE FUNCTION pgbench_verify(uid BIGINT, step BIGINT, token TEXT, now_s BIGINT)
RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    fails INTEGER;
    locked BIGINT;
    auth authenticators%ROWTYPE;
BEGIN
    PERFORM id FROM users WHERE id = uid FOR NO KEY UPDATE;
    SELECT failures, locked_until INTO fails, locked
      FROM failure_counters WHERE user_id = uid AND kind = 'code';
    SELECT * INTO auth FROM authenticators WHERE user_id = uid;
    UPDATE authenticators SET last_used_step = last_used_step + 1
     WHERE user_id = uid AND verified AND (last_used_step IS NULL OR last_used_step < step);
    INSERT INTO audit_events (at, org_id, actor_user_id, target_user_id, action, detail)
    VALUES (now_s, 1, uid, uid, 'mfa_verify_succeeded', 'method: authenticator');
    UPDATE sessions SET token_hash = token, level = 'full', expires_at = now_s + 43200,
                        last_seen_at = now_s
     WHERE id = uid AND revoked_at IS NULL AND expires_at > now_s;
    RETURN FOUND;
END
$$;

VACUUM ANALYZE;

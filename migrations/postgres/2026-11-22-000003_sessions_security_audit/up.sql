-- Sessions, failure counters with lockout, email changes and the audit log.

CREATE TABLE sessions (
    id BIGSERIAL PRIMARY KEY,
    -- hex SHA-256 of the bearer token; the token itself is never stored
    token_hash TEXT NOT NULL CONSTRAINT sessions_token_hash_key UNIQUE,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id BIGINT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    level TEXT NOT NULL
        CONSTRAINT sessions_level_known CHECK (level IN ('partial', 'full')),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_org_id_idx ON sessions (org_id);

CREATE TABLE failure_counters (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL
        CONSTRAINT failure_counters_kind_known CHECK (kind IN ('code', 'password')),
    failures INTEGER NOT NULL DEFAULT 0
        CONSTRAINT failure_counters_failures_non_negative CHECK (failures >= 0),
    locked_until BIGINT,
    CONSTRAINT failure_counters_pkey PRIMARY KEY (user_id, kind)
);

CREATE TABLE email_changes (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    new_email TEXT NOT NULL,
    -- hex SHA-256 of the confirmation token
    token_hash TEXT NOT NULL CONSTRAINT email_changes_token_hash_key UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    consumed_at BIGINT
);

CREATE INDEX email_changes_user_id_idx ON email_changes (user_id, id);

-- No foreign keys: the log outlives the users and orgs it mentions.
CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    org_id BIGINT,
    actor_user_id BIGINT,
    target_user_id BIGINT,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);

CREATE INDEX audit_events_org_id_idx ON audit_events (org_id, id DESC);
CREATE INDEX audit_events_actor_user_id_idx ON audit_events (actor_user_id, id DESC);
CREATE INDEX audit_events_target_user_id_idx ON audit_events (target_user_id, id DESC);

-- Organisations, users and the memberships that join them.
-- Times are Unix seconds (BIGINT); ids are BIGSERIAL.

CREATE TABLE orgs (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    is_mfa_enforced BOOLEAN NOT NULL DEFAULT FALSE,
    mfa_enforced_at BIGINT,
    mfa_grace_period_hours INTEGER NOT NULL DEFAULT 0
        CONSTRAINT orgs_grace_period_non_negative CHECK (mfa_grace_period_hours >= 0),
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    -- normalised to lower case by the application; unique
    email TEXT NOT NULL CONSTRAINT users_email_key UNIQUE,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    -- argon2id PHC string
    password_hash TEXT NOT NULL,
    is_super_admin BOOLEAN NOT NULL DEFAULT FALSE,
    mfa_opt_in BOOLEAN NOT NULL DEFAULT FALSE,
    last_login_at BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE memberships (
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id BIGINT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    all_access BOOLEAN NOT NULL DEFAULT FALSE,
    mfa_opt_out BOOLEAN NOT NULL DEFAULT FALSE,
    exclude_from_membership_count BOOLEAN NOT NULL DEFAULT FALSE,
    has_advanced_permissions BOOLEAN NOT NULL DEFAULT FALSE,
    CONSTRAINT memberships_pkey PRIMARY KEY (user_id, org_id)
);

CREATE INDEX memberships_org_id_idx ON memberships (org_id);

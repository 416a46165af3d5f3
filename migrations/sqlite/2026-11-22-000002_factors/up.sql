-- Second factors: the TOTP authenticator, the email factor with its codes,
-- and recovery codes.

CREATE TABLE authenticators (
    -- at most one authenticator per user, pending or verified
    user_id BIGINT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- 96-bit nonce || AES-256-GCM ciphertext and tag of the shared secret,
    -- with the user id as associated data; never the plaintext
    secret_ciphertext BLOB NOT NULL,
    algorithm TEXT NOT NULL
        CONSTRAINT authenticators_algorithm_known CHECK (algorithm IN ('SHA1', 'SHA256', 'SHA512')),
    digits INTEGER NOT NULL,
    period BIGINT NOT NULL,
    verified BOOLEAN NOT NULL DEFAULT FALSE,
    -- end of the enrollment window (meaningful while pending)
    expires_at BIGINT NOT NULL,
    verified_at BIGINT,
    -- highest TOTP step ever accepted
    last_used_step BIGINT,
    created_at BIGINT NOT NULL,
    CONSTRAINT authenticators_verified_at_iff_verified
        CHECK (verified = (verified_at IS NOT NULL))
);

CREATE TABLE email_factors (
    user_id BIGINT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    verified_at BIGINT NOT NULL
);

CREATE TABLE email_codes (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL
        CONSTRAINT email_codes_purpose_known CHECK (purpose IN ('enroll', 'login')),
    -- hex SHA-256 over salt and code
    code_hash TEXT NOT NULL,
    salt TEXT NOT NULL,
    sent_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    consumed_at BIGINT
);

CREATE INDEX email_codes_user_id_idx ON email_codes (user_id, id);

CREATE TABLE recovery_codes (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- argon2id PHC string
    code_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE INDEX recovery_codes_user_id_idx ON recovery_codes (user_id, id);

-- Lockouts for unknown emails, and failures forgotten after a quiet spell.
--
-- A login with an email no user has is counted and locked out as a wrong
-- password of a known user is, so that a lockout does not tell known
-- emails from unknown ones. The email is stored only as a keyed hash
-- (HMAC-SHA256 under a key derived from the encryption key): the table
-- does not list the addresses people tried. Its rows are deleted once
-- their failures are forgotten, so a user's failures are forgotten after
-- the same quiet spell (the time of the last failure, below).
ALTER TABLE failure_counters ADD COLUMN last_failure_at BIGINT;

CREATE TABLE unknown_email_failures (
    email_key TEXT NOT NULL CONSTRAINT unknown_email_failures_pkey PRIMARY KEY,
    failures INTEGER NOT NULL
        CONSTRAINT unknown_email_failures_failures_non_negative CHECK (failures >= 0),
    locked_until BIGINT,
    last_failure_at BIGINT NOT NULL
);

-- The purge finds the forgotten counters by the time of their last failure.
CREATE INDEX unknown_email_failures_last_failure_at_idx
    ON unknown_email_failures (last_failure_at);

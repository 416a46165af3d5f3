-- Users' password counts are not restored: they start again at zero.
CREATE TABLE unknown_email_failures (
    email_key TEXT NOT NULL CONSTRAINT unknown_email_failures_pkey PRIMARY KEY,
    failures INTEGER NOT NULL
        CONSTRAINT unknown_email_failures_failures_non_negative CHECK (failures >= 0),
    locked_until BIGINT,
    last_failure_at BIGINT NOT NULL
);

INSERT INTO unknown_email_failures (email_key, failures, locked_until, last_failure_at)
    SELECT email_key, failures, locked_until, last_failure_at FROM password_failures;

DROP TABLE password_failures;

CREATE INDEX unknown_email_failures_last_failure_at_idx
    ON unknown_email_failures (last_failure_at);

-- Password failures are counted by address, known or not.
--
-- Until now a user's password failures were kept under the user's id and
-- an unknown email's under a keyed hash of the address, and the counts
-- were handed over when an address gained or lost its user. A login
-- racing such a change could write to the side that had just been handed
-- over (a count lost or left behind), or to a user being deleted (a
-- foreign-key error instead of a refusal). One counter per address, under
-- the keyed hash, for every login: nothing to hand over, nothing to race.
--
-- Users' password counters cannot be carried over (SQL cannot compute the
-- keyed hash): they are forgotten, as a key rotation forgets them. At
-- worst an account gets its five guesses once more.
CREATE TABLE password_failures (
    email_key TEXT NOT NULL CONSTRAINT password_failures_pkey PRIMARY KEY,
    failures INTEGER NOT NULL
        CONSTRAINT password_failures_failures_non_negative CHECK (failures >= 0),
    locked_until BIGINT,
    last_failure_at BIGINT NOT NULL
);

INSERT INTO password_failures (email_key, failures, locked_until, last_failure_at)
    SELECT email_key, failures, locked_until, last_failure_at FROM unknown_email_failures;

DROP TABLE unknown_email_failures;

-- The purge finds the forgotten counters by the time of their last failure.
CREATE INDEX password_failures_last_failure_at_idx
    ON password_failures (last_failure_at);

DELETE FROM failure_counters WHERE kind = 'password';

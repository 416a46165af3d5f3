-- Whether a factor of the user was verified in the session: set when MFA
-- completes on it (the session's token is rotated) and when it enrolls the
-- user's first factor. A session opened where no MFA was owed has not, and
-- may not change the factors of a user who has one. Sessions open at the
-- upgrade count as not: a user with a factor verifies one again
-- (POST /user/auth/mfa/verify) before changing factors from such a session.
ALTER TABLE sessions ADD COLUMN mfa_passed BOOLEAN NOT NULL DEFAULT FALSE;

ALTER TABLE sessions DROP COLUMN mfa_passed;

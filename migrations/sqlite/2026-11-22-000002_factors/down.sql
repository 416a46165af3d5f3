DROP TABLE recovery_codes;
DROP TABLE email_codes;
DROP TABLE email_factors;
DROP TABLE authenticators;

-- PostgreSQL only: SQLite has no fast path of the authenticator code check
-- (its write transaction costs no round trip), so nothing to create. The
-- migration exists so that both backends list the same migrations.
SELECT 1;

-- The admin's user search ("name or email contains", case-insensitive) at
-- 100,000 users: one lower-cased copy of first name, last name and email,
-- joined by U+001F, that the store keeps up to date on every write of a
-- user, with a trigram index so that `LIKE '%…%'` does not scan the table.
ALTER TABLE users ADD COLUMN search_text TEXT NOT NULL DEFAULT '';

UPDATE users
   SET search_text = lower(first_name || chr(31) || last_name || chr(31) || email);

-- pg_trgm ships with PostgreSQL (contrib) and is a trusted extension since
-- PostgreSQL 13: a database owner may install it. Where it is missing or not
-- allowed, searches scan the users table: slower, still correct.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm is not available (%): user search will scan the users table', SQLERRM;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX users_search_text_trgm_idx ON users USING gin (search_text gin_trgm_ops);
    END IF;
END
$$;

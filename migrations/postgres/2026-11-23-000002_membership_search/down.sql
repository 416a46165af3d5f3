DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX users_search_text_trgm_idx ON users USING gin (search_text gin_trgm_ops);
    END IF;
END
$$;
DROP INDEX IF EXISTS memberships_search_text_trgm_idx;
DROP INDEX memberships_org_search_idx;
ALTER TABLE memberships DROP COLUMN search_text;

-- The admin's user search reads an org's members: with the search text only
-- on users, counting the matches of a term that every member has (their
-- company's domain) took one membership lookup per user, 100,000 at
-- 100,000 members. A copy of users.search_text on each membership, kept up
-- to date by the store in the transaction that writes the user or the
-- membership, lets the search stay on memberships: the B-tree below holds
-- the org's entries in user id order, so a page is the first matches of a
-- range and a count an index-only pass over it; the trigram index finds the
-- few members a rare term matches. The planner picks per term (the store
-- does not let PostgreSQL fall back to one generic plan for all terms).
-- Names of at most 100 characters and emails of at most 254 bytes keep the
-- entries well below the B-tree's limit of about 2.7 kB.
ALTER TABLE memberships ADD COLUMN search_text TEXT NOT NULL DEFAULT '';

UPDATE memberships
   SET search_text = users.search_text
  FROM users
 WHERE users.id = memberships.user_id;

CREATE INDEX memberships_org_search_idx ON memberships (org_id, user_id, search_text);

-- As in 2026-11-23-000001_user_search: only where pg_trgm is installed.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX memberships_search_text_trgm_idx
            ON memberships USING gin (search_text gin_trgm_ops);
    END IF;
END
$$;

-- Nothing searches users.search_text any more; the column stays as the
-- source of a new membership's copy.
DROP INDEX IF EXISTS users_search_text_trgm_idx;

CREATE INDEX users_search_text_idx ON users (search_text);
DROP INDEX memberships_org_search_idx;
ALTER TABLE memberships DROP COLUMN search_text;

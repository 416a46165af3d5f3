-- The admin's user search reads an org's members: with the search text only
-- on users, counting the matches of a term that every member has (their
-- company's domain) took one membership lookup per user, 100,000 at
-- 100,000 members. A copy of users.search_text on each membership, kept up
-- to date by the store in the transaction that writes the user or the
-- membership, lets the search stay in the index below: the org's entries in
-- user id order, so a page is the first matches of a range and the count
-- one pass over that range, without reading users or the table.
ALTER TABLE memberships ADD COLUMN search_text TEXT NOT NULL DEFAULT '';

UPDATE memberships
   SET search_text = users.search_text
  FROM users
 WHERE users.id = memberships.user_id;

CREATE INDEX memberships_org_search_idx ON memberships (org_id, user_id, search_text);

-- Nothing searches users.search_text any more; the column stays as the
-- source of a new membership's copy.
DROP INDEX users_search_text_idx;

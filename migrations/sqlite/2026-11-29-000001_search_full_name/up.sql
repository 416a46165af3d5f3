-- The admin's search finds "Mary Mem" in Mary Member: the search text gains
-- the full name, first and last joined by a space, after the three fields
-- it had (a search still never spans the U+001F separators).
-- lower() here is the store's Unicode-aware one: mfa-store registers it on
-- every connection, the one running migrations included.
UPDATE users
   SET search_text = lower(first_name || char(31) || last_name || char(31) || email
                           || char(31) || first_name || ' ' || last_name);

UPDATE memberships
   SET search_text = (SELECT users.search_text FROM users WHERE users.id = memberships.user_id);

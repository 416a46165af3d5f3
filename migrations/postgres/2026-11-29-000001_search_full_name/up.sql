-- The admin's search finds "Mary Mem" in Mary Member: the search text gains
-- the full name, first and last joined by a space, after the three fields
-- it had (a search still never spans the U+001F separators).
UPDATE users
   SET search_text = lower(first_name || chr(31) || last_name || chr(31) || email
                           || chr(31) || first_name || ' ' || last_name);

UPDATE memberships
   SET search_text = users.search_text
  FROM users
 WHERE users.id = memberships.user_id;

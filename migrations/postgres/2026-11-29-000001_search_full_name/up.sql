-- The admin's search finds "Mary Mem" in Mary Member: the search text gains
-- the full name, first and last joined by a space, after the three fields
-- it had (a search still never spans the U+001F separators).
--
-- Built from the fields already in the search text, which the store
-- lower-cased with Rust's `to_lowercase`, as it does every search term:
-- PostgreSQL's lower() differs (a final sigma, a dotted capital I, and
-- nothing at all beyond ASCII under the C locale), and users written before
-- the upgrade would no longer be found by their own names. The three
-- fields are taken anew, so that running this twice changes nothing.
UPDATE users
   SET search_text = split_part(search_text, chr(31), 1) || chr(31)
                  || split_part(search_text, chr(31), 2) || chr(31)
                  || split_part(search_text, chr(31), 3) || chr(31)
                  || split_part(search_text, chr(31), 1) || ' '
                  || split_part(search_text, chr(31), 2);

UPDATE memberships
   SET search_text = users.search_text
  FROM users
 WHERE users.id = memberships.user_id;

UPDATE users
   SET search_text = split_part(search_text, chr(31), 1) || chr(31)
                  || split_part(search_text, chr(31), 2) || chr(31)
                  || split_part(search_text, chr(31), 3);

UPDATE memberships
   SET search_text = users.search_text
  FROM users
 WHERE users.id = memberships.user_id;

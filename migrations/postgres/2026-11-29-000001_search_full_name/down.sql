UPDATE users
   SET search_text = lower(first_name || chr(31) || last_name || chr(31) || email);

UPDATE memberships
   SET search_text = users.search_text
  FROM users
 WHERE users.id = memberships.user_id;

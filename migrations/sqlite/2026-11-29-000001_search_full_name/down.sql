UPDATE users
   SET search_text = lower(first_name || char(31) || last_name || char(31) || email);

UPDATE memberships
   SET search_text = (SELECT users.search_text FROM users WHERE users.id = memberships.user_id);

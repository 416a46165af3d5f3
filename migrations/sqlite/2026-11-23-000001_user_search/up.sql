-- The admin's user search ("name or email contains", case-insensitive) at
-- 100,000 users: one lower-cased copy of first name, last name and email,
-- joined by U+001F, that the store keeps up to date on every write of a
-- user. `LIKE '%…%'` on it is SQLite's built-in LIKE over one narrow column
-- (through the index below, which a search scans instead of the table)
-- instead of a Rust lower() call per column and row.
ALTER TABLE users ADD COLUMN search_text TEXT NOT NULL DEFAULT '';

-- lower() here is the store's Unicode-aware one: mfa-store registers it on
-- every connection, the one running migrations included.
UPDATE users
   SET search_text = lower(first_name || char(31) || last_name || char(31) || email);

CREATE INDEX users_search_text_idx ON users (search_text);

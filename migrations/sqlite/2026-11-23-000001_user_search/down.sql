DROP INDEX users_search_text_idx;
ALTER TABLE users DROP COLUMN search_text;

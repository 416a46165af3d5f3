//! SQL functions used by the queries.

use diesel::sql_types::Text;

diesel::define_sql_function! {
    /// `lower(text)`. PostgreSQL's is Unicode-aware; SQLite's built-in folds
    /// ASCII only, so every SQLite connection replaces it with Rust's
    /// `str::to_lowercase` (see `sqlite::configure`), so that `lower()` in SQL
    /// behaves the same on both backends. The user search no longer calls it
    /// per row: it matches `users.search_text`, lower-cased in Rust when a
    /// user is written; the migration that filled that column for existing
    /// users used this function.
    fn lower(x: Text) -> Text;
}

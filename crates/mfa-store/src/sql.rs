//! SQL functions used by the queries.

use diesel::sql_types::Text;

diesel::define_sql_function! {
    /// `lower(text)`. PostgreSQL's is Unicode-aware; SQLite's built-in folds
    /// ASCII only, so every SQLite connection replaces it with Rust's
    /// `str::to_lowercase` (see `sqlite::configure`): case-insensitive search
    /// behaves the same on both backends.
    fn lower(x: Text) -> Text;
}

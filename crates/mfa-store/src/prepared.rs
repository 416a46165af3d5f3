//! [`Prepared`]: keep the prepared form of a fixed-shape write.
//!
//! diesel keeps prepared statements per connection, but never those of an
//! `UPDATE` or an upsert (`ON CONFLICT … DO UPDATE`): a changeset with
//! optional fields can produce different SQL from call to call, so diesel
//! plays safe. Every MFA verify and login runs several such statements, and
//! each was parsed and planned anew: SQLite's parser was 6% of the server's
//! CPU in an MFA verify (`perf`, call graphs), inside the single writer's
//! turn; on PostgreSQL the server parsed and planned them on every call.
//!
//! Wrapped in [`Prepared`], a statement goes to the cache like a `SELECT`,
//! but only when its rows are loaded (`get_result`, `load`): `execute`
//! hands the statement on by reference, and a reference gets diesel's own
//! (walking) answer. So wrapped writes end in `RETURNING` a key and are
//! loaded; the number of rows is the number of keys.
//! The cache key of a statement without a static query id is its SQL text
//! (and bind types), so a statement whose text did vary would only get
//! several entries, never a wrong one; wrap only statements whose text is
//! fixed, to keep the cache small.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::{QueryResult, RunQueryDsl};

/// A statement whose SQL text never varies, so its prepared form can be
/// kept and reused (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prepared<Q>(pub(crate) Q);

impl<Q: QueryId> QueryId for Prepared<Q> {
    type QueryId = Prepared<Q::QueryId>;
    const HAS_STATIC_QUERY_ID: bool = Q::HAS_STATIC_QUERY_ID;
}

impl<Q, DB> QueryFragment<DB> for Prepared<Q>
where
    DB: Backend,
    Q: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        Ok(true)
    }
}

impl<Q: Query> Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}

impl<Q, Conn> RunQueryDsl<Conn> for Prepared<Q> {}

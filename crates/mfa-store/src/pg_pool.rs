//! The PostgreSQL pool, without a test query on every checkout.
//!
//! r2d2 normally checks each connection it hands out with `SELECT 1`: one
//! more round trip per transaction, about a tenth of an MFA verify's. Here
//! connections are handed out unchecked; one that turns out to be lost
//! (PostgreSQL restarted, the backend was terminated, the network dropped)
//! is marked [`PgConn::lost`] when a statement on it fails that way, and
//! r2d2 then discards it instead of returning it to the pool. A
//! transaction that fails at its `BEGIN` has run nothing, so the store
//! retries it on another connection (`DbStore`'s PostgreSQL paths): after
//! a restart, requests succeed as before, and no statement ever runs twice.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::PgConnection;
use diesel::connection::SimpleConnection as _;
use diesel::r2d2::{ConnectionManager, HandleError, ManageConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// How often a database that refuses connections is logged at most.
pub(crate) const CONNECT_FAILURE_LOG_EVERY: Duration = Duration::from_secs(30);

/// The pool's failures to open a connection, as one warning per
/// [`CONNECT_FAILURE_LOG_EVERY`] with the count of those not logged
/// since. r2d2's own handler logs an `ERROR` per attempt, and the pool
/// tries again as soon as a request waits or a connection is missing:
/// 33 lines in a two-second outage in a test, thousands in a real one.
/// The requests themselves are answered `503` and logged as such.
#[derive(Debug, Default)]
pub(crate) struct ConnectFailureLog {
    /// When the last warning was written, and the failures since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl ConnectFailureLog {
    /// Whether a failure at `now` is written: `Some(failures not
    /// written since the last warning)`, or `None` to count it.
    fn record(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, unlogged) = &mut *state;
        if last.is_some_and(|at| now.duration_since(at) < CONNECT_FAILURE_LOG_EVERY) {
            *unlogged += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(unlogged))
    }
}

impl HandleError<diesel::r2d2::Error> for ConnectFailureLog {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        if let Some(unlogged) = self.record(Instant::now()) {
            tracing::warn!(
                %error,
                not_logged_since = unlogged,
                "cannot open a PostgreSQL connection; the pool keeps trying (logged every {} s \
                 at most)",
                CONNECT_FAILURE_LOG_EVERY.as_secs()
            );
        }
    }
}

/// A pooled PostgreSQL connection that can be marked lost.
pub(crate) struct PgConn {
    conn: PgConnection,
    lost: bool,
}

impl PgConn {
    /// Mark the connection lost if `error` says it is: diesel reports a
    /// connection that libpq found closed as `ClosedConnection`, and a
    /// statement libpq could not send on it as `UnableToSendCommand`.
    /// Whether it did.
    pub(crate) fn note(&mut self, error: &DieselError) -> bool {
        let lost = matches!(
            error,
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _
            )
        );
        self.lost |= lost;
        lost
    }
}

impl Deref for PgConn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

/// diesel's connection manager, with lost connections discarded and each
/// connection's lock waits bounded.
#[derive(Debug)]
pub(crate) struct PgManager {
    manager: ConnectionManager<PgConnection>,
    /// `SET lock_timeout` run on each new connection.
    set_lock_timeout: String,
}

impl PgManager {
    /// Connections to `url` that wait at most `lock_timeout` for a lock:
    /// a row held by a transaction that does not end (an operator's open
    /// `psql` session, say) fails the statement waiting for it
    /// ([`crate::Error::Busy`], answered as an outage) instead of holding
    /// its request, its connection and its thread for as long.
    pub(crate) fn new(url: &str, lock_timeout: Duration) -> PgManager {
        PgManager {
            manager: ConnectionManager::new(url),
            set_lock_timeout: format!("SET lock_timeout = {}", lock_timeout.as_millis().max(1)),
        }
    }
}

impl ManageConnection for PgManager {
    type Connection = PgConn;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<PgConn, Self::Error> {
        let mut conn = self.manager.connect()?;
        conn.batch_execute(&self.set_lock_timeout)
            .map_err(diesel::r2d2::Error::QueryError)?;
        Ok(PgConn { conn, lost: false })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), Self::Error> {
        self.manager.is_valid(&mut conn.conn)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.lost || self.manager.has_broken(&mut conn.conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_are_logged_once_per_interval_with_a_count() {
        let log = ConnectFailureLog::default();
        let start = Instant::now();
        assert_eq!(log.record(start), Some(0), "the first is written");
        for i in 1..=32 {
            assert_eq!(log.record(start + Duration::from_millis(60 * i)), None);
        }
        let later = start + CONNECT_FAILURE_LOG_EVERY;
        assert_eq!(log.record(later), Some(32), "then with the count");
        assert_eq!(log.record(later + Duration::from_secs(1)), None);
        assert_eq!(log.record(later + CONNECT_FAILURE_LOG_EVERY), Some(1));
    }
}

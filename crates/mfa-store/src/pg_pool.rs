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
use std::time::{Duration, Instant};

use diesel::PgConnection;
use diesel::connection::SimpleConnection as _;
use diesel::r2d2::{ConnectionManager, HandleError, ManageConnection};

use crate::log_throttle::LogThrottle;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// How often a database that refuses connections is logged at most.
pub(crate) const CONNECT_FAILURE_LOG_EVERY: Duration = Duration::from_secs(30);

/// The pool's failures to open a connection, as one warning per
/// [`CONNECT_FAILURE_LOG_EVERY`] with the count of those not logged
/// since. r2d2's own handler logs an `ERROR` per attempt, and the pool
/// tries again as soon as a request waits or a connection is missing:
/// 33 lines in a two-second outage in a test, thousands in a real one.
/// The requests themselves are answered `503` and logged as such.
#[derive(Debug)]
pub(crate) struct ConnectFailureLog(LogThrottle);

impl Default for ConnectFailureLog {
    fn default() -> ConnectFailureLog {
        ConnectFailureLog(LogThrottle::new(CONNECT_FAILURE_LOG_EVERY))
    }
}

impl HandleError<diesel::r2d2::Error> for ConnectFailureLog {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        if let Some(unlogged) = self.0.record(Instant::now()) {
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

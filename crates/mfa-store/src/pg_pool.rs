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
use std::time::Duration;

use diesel::PgConnection;
use diesel::connection::SimpleConnection as _;
use diesel::r2d2::{ConnectionManager, ManageConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};

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

//! The crate's one error type, and its translation to the domain's
//! [`StoreError`] at the port boundary.
//!
//! Layers: diesel, r2d2, migration and AEAD failures become [`Error`] inside
//! this crate; [`Error`] becomes [`StoreError`] where a [`mfa_core::StoreTx`]
//! method returns; the server maps [`mfa_core::MfaError`] to HTTP. The text of
//! an [`Error`] never contains a secret value: database errors carry only the
//! database's message (never the details that echo row values), connection
//! errors never echo the URL, and key errors never echo the key.

use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind};
use mfa_core::StoreError;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database URL names no supported backend (the text is the scheme
    /// or the reason, never the whole URL, which may hold a password).
    #[error("unsupported database URL: {0}")]
    UnsupportedUrl(String),
    /// The database could not be opened or reached: the text is the
    /// database's own (SQLite's or libpq's) error message.
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    /// A connection did not take the settings this crate relies on (SQLite
    /// pragmas are read back at open).
    #[error("the database connection is not configured as required: {0}")]
    Configuration(String),
    /// Applying, reverting or listing migrations failed.
    #[error("database migration failed: {0}")]
    Migration(String),
    /// The database has migrations applied that this build does not know:
    /// a newer version migrated it. Nothing was changed.
    #[error(
        "the database was migrated by a newer version ({}, unknown to this one): \
         run that version, or restore the backup taken before its upgrade",
        .0.join(", ")
    )]
    NewerSchema(Vec<String>),
    /// No connection could be taken from the pool in time.
    #[error("no database connection available: {0}")]
    Pool(String),
    /// The database gave up on a statement it could not run in time: a
    /// lock held elsewhere past the wait allowed (SQLite's busy timeout,
    /// PostgreSQL's `lock_timeout`), or the statement cancelled
    /// (`statement_timeout`, `pg_cancel_backend`). Nothing it did stays;
    /// the same operation may succeed later. The text is the database's.
    #[error("the database did not answer in time: {0}")]
    Busy(String),
    /// The database rolled the transaction back whole to break a deadlock
    /// or a serialization conflict with another: nothing it did stays, and
    /// running it again is safe (a write is, by the store itself:
    /// [`rolled_back_by_database`]). The text is the database's.
    #[error("{ROLLED_BACK}{0}")]
    RolledBack(String),
    /// A port call of the store's own (an upgrade's rewrite, run through
    /// [`mfa_core::StoreTx`]) found the database unavailable; the text is
    /// the port's.
    #[error("{0}")]
    Unavailable(String),
    /// A user with this email already exists.
    #[error("a user with this email already exists")]
    DuplicateEmail,
    /// The user is already a member of this org.
    #[error("the user is already a member of this org")]
    DuplicateMembership,
    /// Another uniqueness rule was broken; the text names the rule.
    #[error("already exists: {0}")]
    UniqueViolation(String),
    /// A row refers to one that does not exist (a foreign key failed); the
    /// text names the rule.
    #[error("a referenced record does not exist: {0}")]
    MissingReference(String),
    /// The row to change does not exist.
    #[error("not found")]
    NotFound,
    /// A query failed for another reason.
    #[error("database query failed: {0}")]
    Query(diesel::result::Error),
    /// The encryption key is malformed.
    #[error("invalid encryption key: {0}")]
    InvalidKey(&'static str),
    /// A stored secret did not decrypt: wrong key, or the ciphertext was
    /// altered or moved to another user.
    #[error("cannot decrypt a stored authenticator secret: wrong key or altered data")]
    Decrypt,
    /// Encryption failed (only for absurdly long input).
    #[error("cannot encrypt an authenticator secret")]
    Encrypt,
    /// A key rotation found a stored secret that decrypts with neither the
    /// old nor the new key; the rotation changed nothing.
    #[error(
        "the authenticator secret of user {user_id} decrypts with neither the old nor the new \
         key; nothing was changed"
    )]
    KeyMismatch {
        /// The owner of the secret.
        user_id: i64,
    },
    /// The database was written with another encryption key: the one it
    /// recorded (claimed by the first process that opened it, replaced by
    /// [`crate::DbStore::rotate_encryption_key`]) has another fingerprint.
    /// Nothing was written.
    #[error(
        "the encryption key (fingerprint {this}) is not the database's (fingerprint \
         {database}): every process on a database must have the key it was written with, the \
         new one after a key rotation"
    )]
    NotTheDatabaseKey {
        /// The fingerprint the database recorded.
        database: crate::KeyFingerprint,
        /// The fingerprint of the key given.
        this: crate::KeyFingerprint,
    },
    /// The database recorded no key yet (it was written before keys were
    /// recorded), and the key given opens none of the stored secrets tried:
    /// it is not the one they were written with. Nothing was written.
    #[error(
        "the encryption key (fingerprint {this}) opens none of the {checked} stored \
         authenticator secrets checked: it is not the key they were written with"
    )]
    KeyOpensNoSecret {
        /// The fingerprint of the key given.
        this: crate::KeyFingerprint,
        /// Secrets tried.
        checked: u64,
    },
    /// [`crate::DbStore::replace_lost_key`] with the key the database
    /// records: nothing is lost. Nothing was changed.
    #[error(
        "the database records this encryption key already: it is not lost, and nothing was \
         removed"
    )]
    KeyNotLost,
    /// [`crate::DbStore::replace_lost_key`] with a key that opens stored
    /// secrets: it is not lost (a database written before keys were
    /// recorded, opened with its own key). Nothing was changed.
    #[error(
        "this encryption key opens {opened} of the {checked} stored authenticator secrets \
         checked: it is not lost (start the server with it), and nothing was removed"
    )]
    KeyOpensSecrets {
        /// Secrets it opened.
        opened: u64,
        /// Secrets tried.
        checked: u64,
    },
    /// A stored value does not fit the domain (e.g. an unknown enum name).
    #[error("unexpected data in the database: {0}")]
    Corrupt(String),
    /// A value from the domain does not fit its column.
    #[error("value out of range for the database: {0}")]
    OutOfRange(&'static str),
}

impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::Error as D;
        match e {
            D::NotFound => Error::NotFound,
            D::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => unique_violation(&*info),
            D::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, info) => {
                Error::MissingReference(rule_name(&*info))
            }
            D::DatabaseError(DatabaseErrorKind::Unknown, info) if broke_a_deadlock(&*info) => {
                Error::RolledBack(info.message().to_string())
            }
            D::DatabaseError(DatabaseErrorKind::Unknown, info) if gave_up_waiting(&*info) => {
                Error::Busy(info.message().to_string())
            }
            // Rolled back whole by the database, so nothing changed and
            // the same request may simply be sent again.
            D::DatabaseError(DatabaseErrorKind::SerializationFailure, info) => {
                Error::RolledBack(info.message().to_string())
            }
            other => Error::Query(other),
        }
    }
}

impl From<diesel::ConnectionError> for Error {
    fn from(e: diesel::ConnectionError) -> Self {
        // BadConnection carries libpq's or SQLite's message; the other
        // variants describe the URL's shape without repeating it.
        match e {
            diesel::ConnectionError::BadConnection(message) => Error::Connect(message),
            other => Error::Connect(other.to_string()),
        }
    }
}

impl From<diesel::r2d2::PoolError> for Error {
    fn from(e: diesel::r2d2::PoolError) -> Self {
        Error::Pool(e.to_string())
    }
}

/// Whether the database gave up on a statement for a lock it waited for
/// too long, or cancelled it. diesel reports neither SQLite's
/// `SQLITE_BUSY` nor PostgreSQL's SQLSTATEs 55P03, 57014 and 40P01 apart
/// (`DatabaseErrorKind::Unknown`, without the code), so their messages
/// tell: SQLite's are fixed English; PostgreSQL's follow the server's
/// `lc_messages`, and under another language than English such an error
/// stays a failed query.
fn gave_up_waiting(info: &(dyn DatabaseErrorInformation + Send + Sync)) -> bool {
    let message = info.message();
    message.starts_with("database is locked")
        || message.starts_with("database table is locked")
        || message.starts_with("canceling statement due to")
}

/// Whether PostgreSQL broke a deadlock by rolling this transaction back
/// (SQLSTATE 40P01, told by its message as [`gave_up_waiting`] says).
fn broke_a_deadlock(info: &(dyn DatabaseErrorInformation + Send + Sync)) -> bool {
    info.message().starts_with("deadlock detected")
}

/// How an [`Error::RolledBack`] reads, and so the domain's
/// `StoreError::Unavailable` made of it.
const ROLLED_BACK: &str = "the database rolled the transaction back: ";

/// Whether the text of a `StoreError::Unavailable` is an
/// [`Error::RolledBack`]'s: the whole transaction was undone by the
/// database, and may run again.
pub(crate) fn rolled_back_by_database(unavailable: &str) -> bool {
    unavailable.starts_with(ROLLED_BACK)
}

/// The name of the rule an error broke: PostgreSQL's constraint name, or
/// SQLite's "table.column" list (SQLite reports no constraint names).
fn rule_name(info: &(dyn DatabaseErrorInformation + Send + Sync)) -> String {
    if let Some(name) = info.constraint_name() {
        return name.to_string();
    }
    let message = info.message();
    message
        .split_once(" constraint failed: ")
        .map(|(_, columns)| columns.to_string())
        .unwrap_or_else(|| message.to_string())
}

fn unique_violation(info: &(dyn DatabaseErrorInformation + Send + Sync)) -> Error {
    let rule = rule_name(info);
    match rule.as_str() {
        "users_email_key" | "users.email" => Error::DuplicateEmail,
        "memberships_pkey" | "memberships.user_id, memberships.org_id" => {
            Error::DuplicateMembership
        }
        _ => Error::UniqueViolation(rule),
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::DuplicateEmail | Error::DuplicateMembership | Error::UniqueViolation(_) => {
                StoreError::UniqueViolation(e.to_string())
            }
            Error::NotFound | Error::MissingReference(_) => StoreError::NotFound,
            Error::Pool(_)
            | Error::Connect(_)
            | Error::Busy(_)
            | Error::RolledBack(_)
            | Error::Unavailable(_)
            | Error::Query(diesel::result::Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            )) => StoreError::Unavailable(e.to_string()),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

/// Shorthand: a diesel result as a port result.
pub(crate) trait DbResultExt<T> {
    /// Translate the error for the port.
    fn db(self) -> Result<T, StoreError>;
}

impl<T> DbResultExt<T> for Result<T, diesel::result::Error> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::from(Error::from(e)))
    }
}

impl<T> DbResultExt<T> for Result<T, Error> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(StoreError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database's error as diesel reports one it has no kind for.
    struct Reported(&'static str);

    impl DatabaseErrorInformation for Reported {
        fn message(&self) -> &str {
            self.0
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            None
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn translated(message: &'static str) -> StoreError {
        let reported = diesel::result::Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(Reported(message)),
        );
        StoreError::from(Error::from(reported))
    }

    #[test]
    fn a_statement_the_database_gave_up_on_is_unavailable() {
        // Waited too long: unavailable, and not run again by the store
        // (the wait was the time allowed).
        for message in [
            "database is locked",
            "database table is locked: users",
            "canceling statement due to lock timeout",
            "canceling statement due to statement timeout",
            "canceling statement due to user request",
        ] {
            assert!(
                matches!(translated(message), StoreError::Unavailable(ref why) if !rolled_back_by_database(why)),
                "{message}"
            );
        }
        // Rolled back by the database: unavailable, and run again.
        let serialization = diesel::result::Error::DatabaseError(
            DatabaseErrorKind::SerializationFailure,
            Box::new(Reported(
                "could not serialize access due to concurrent update",
            )),
        );
        for rolled_back in [
            translated("deadlock detected"),
            StoreError::from(Error::from(serialization)),
        ] {
            assert!(
                matches!(rolled_back, StoreError::Unavailable(ref why) if rolled_back_by_database(why)),
                "{rolled_back:?}"
            );
        }
        for message in ["syntax error at or near \"SELEC\"", "disk I/O error"] {
            assert!(
                matches!(translated(message), StoreError::Backend(_)),
                "{message}"
            );
        }
    }
}

//! Throw-away databases for tests (feature `test-support`).
//!
//! ```no_run
//! use mfa_store::test_support::{TestDatabase, test_options};
//!
//! let db = TestDatabase::sqlite();
//! let store = db.open(test_options()).unwrap();
//! // PostgreSQL only when MFA_TEST_DATABASE_URL is set:
//! if let Some(pg) = TestDatabase::postgres() {
//!     let store = pg.open(test_options()).unwrap();
//! }
//! ```
//!
//! Failures to create a database panic with a message: this module is for
//! tests, where a panic is the report.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use crate::{Backend, DbStore, EncryptionKey, Error, StoreOptions, with_database};

/// The environment variable naming a PostgreSQL server for tests, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`. Each test database is
/// created on that server and dropped afterwards; the named database itself
/// is only used to run `CREATE DATABASE` and `DROP DATABASE`.
pub const DATABASE_URL_VAR: &str = "MFA_TEST_DATABASE_URL";

/// Options with the tests' key and default pool sizes. One fixed key: the
/// stores a test opens on one database must share it, as every process on
/// a database must ([`DbStore::verify_encryption_key`]).
pub fn test_options() -> StoreOptions {
    StoreOptions::new(EncryptionKey::from_bytes([0x5a; crate::KEY_LEN]))
}

/// A fresh, empty database that is removed on drop. Drop the stores opened
/// on it first (PostgreSQL's `DROP DATABASE … WITH (FORCE)` ends leftover
/// connections anyway).
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Sqlite {
        path: PathBuf,
        /// Removed (with the database and its -wal and -shm files) on drop.
        _dir: tempfile::TempDir,
    },
    Postgres {
        admin_url: String,
        name: String,
    },
}

impl TestDatabase {
    /// A new SQLite file in a fresh temporary directory.
    pub fn sqlite() -> TestDatabase {
        let dir = tempfile::Builder::new()
            .prefix("mfa-store-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let path = dir.path().join("mfa.db");
        TestDatabase {
            url: format!("sqlite://{}", path.display()),
            kind: Kind::Sqlite { path, _dir: dir },
        }
    }

    /// A new PostgreSQL database `mfa_test_<random>` on the server named by
    /// [`DATABASE_URL_VAR`], or `None` (after printing a "skipped" line to
    /// stderr, uncaptured) when the variable is not set.
    pub fn postgres() -> Option<TestDatabase> {
        let admin_url = match std::env::var(DATABASE_URL_VAR) {
            Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
            _ => {
                let test = std::thread::current()
                    .name()
                    .unwrap_or("unnamed test")
                    .to_string();
                // Straight to stderr: libtest captures print! but not this,
                // so the skip is visible in a normal `cargo test` run.
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "skipped: {DATABASE_URL_VAR} is not set ({test})"
                );
                return None;
            }
        };
        let mut suffix = [0u8; 8];
        rand::fill(&mut suffix);
        let name = format!(
            "mfa_test_{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let url = with_database(&admin_url, &name)
            .unwrap_or_else(|| panic!("{DATABASE_URL_VAR} is not a postgres:// URL"));
        let mut admin = PgConnection::establish(&admin_url)
            .unwrap_or_else(|e| panic!("cannot connect to {DATABASE_URL_VAR}: {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        Some(TestDatabase {
            url,
            kind: Kind::Postgres { admin_url, name },
        })
    }

    /// The URL to give [`DbStore::open`] (or a server's configuration).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.kind {
            Kind::Sqlite { .. } => Backend::Sqlite,
            Kind::Postgres { .. } => Backend::Postgres,
        }
    }

    /// The SQLite file, for tests that look at the bytes on disk.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Sqlite { path, .. } => Some(path),
            Kind::Postgres { .. } => None,
        }
    }

    /// Open (and migrate) a store on this database.
    pub fn open(&self, options: StoreOptions) -> Result<DbStore, Error> {
        DbStore::open(&self.url, options)
    }

    /// Connect a store to this database without migrating it or checking
    /// its key ([`DbStore::connect`]): to write as a process with another
    /// key would have.
    pub fn connect(&self, options: StoreOptions) -> Result<DbStore, Error> {
        DbStore::connect(&self.url, options)
    }

    /// PostgreSQL only: make the database refuse new connections and end
    /// the open ones (as a database that went down does), or accept them
    /// again. Panics on SQLite, whose file cannot go away so.
    pub fn refuse_connections(&self, refuse: bool) {
        let Kind::Postgres { admin_url, name } = &self.kind else {
            panic!("refuse_connections is for PostgreSQL test databases");
        };
        let mut admin = PgConnection::establish(admin_url)
            .unwrap_or_else(|e| panic!("cannot connect to {DATABASE_URL_VAR}: {e}"));
        // `name` is ours: `mfa_test_` and hex digits.
        let sql = if refuse {
            format!(
                "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false; \
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            )
        } else {
            format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")
        };
        admin
            .batch_execute(&sql)
            .unwrap_or_else(|e| panic!("cannot change connections to {name}: {e}"));
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Kind::Postgres { admin_url, name } = &self.kind {
            let dropped = PgConnection::establish(admin_url)
                .map_err(|e| e.to_string())
                .and_then(|mut admin| {
                    wait_for_disconnects(&mut admin, name);
                    admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = dropped {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "warning: cannot drop test database {name}: {e}"
                );
            }
        }
    }
}

/// Give connections still being opened by a dropped pool's background
/// threads a moment to close, so that `WITH (FORCE)` rarely has to end one
/// (libpq then prints a FATAL notice into the test output).
fn wait_for_disconnects(admin: &mut PgConnection, name: &str) {
    use diesel::RunQueryDsl;
    use diesel::sql_types::BigInt;
    let deadline = Instant::now() + Duration::from_secs(3);
    // `name` is ours: `mfa_test_` and hex digits.
    let count = format!("(SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}')");
    while Instant::now() < deadline {
        match diesel::select(diesel::dsl::sql::<BigInt>(&count)).get_result::<i64>(admin) {
            Ok(0) | Err(_) => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::with_database;

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1").as_deref(),
            Some("postgres://postgres@127.0.0.1:5432/t1")
        );
        assert_eq!(
            with_database("postgresql://u:p@h", "t1").as_deref(),
            Some("postgresql://u:p@h/t1")
        );
        assert_eq!(
            with_database("postgres:///postgres?host=/run/postgresql", "t1").as_deref(),
            Some("postgres:///t1?host=/run/postgresql")
        );
        assert_eq!(with_database("sqlite://x.db", "t1"), None);
    }
}

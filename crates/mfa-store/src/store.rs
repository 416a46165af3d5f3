//! [`DbStore`]: opening a database by URL, migrations, and the
//! [`Store`] transactions.

use std::fmt;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use mfa_core::{MfaError, MfaResult, Store, StoreError, StoreTx};

use crate::Error;
use crate::crypto::{EncryptionKey, SecretCipher};
use crate::error::rolled_back_by_database;
use crate::fair_pool::FairPool;
use crate::pg_pool::{PgConn, PgManager};
use crate::sqlite::{self, Role};
use crate::sqlite_writer::SqliteWriter;
use crate::tx::Tx;

mod authenticator_success;
mod canonical_email;
mod key_rotation;
pub use key_rotation::{
    KEY_FINGERPRINT_MIGRATION, KeyCheck, KeyRotation, KeyVerification, LostKeyReplacement,
};

/// The SQLite migrations (`migrations/sqlite` at the workspace root).
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
/// The PostgreSQL migrations (`migrations/postgres` at the workspace root).
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Key of the PostgreSQL advisory lock that serialises migrations when
/// several server processes start at once ("mfa_stor" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6d66_615f_7374_6f72;

/// Default size of the SQLite read pool.
const SQLITE_READ_POOL: u32 = 8;
/// Default size of the PostgreSQL pool.
const POSTGRES_POOL: u32 = 10;

/// How many times a PostgreSQL write transaction runs at most when the
/// database rolls it back to break a deadlock or a serialization conflict
/// (the first run and two more). The lock order of the domain avoids the
/// deadlocks known; this is for the orders nobody foresaw, which would
/// otherwise answer a request that did nothing wrong with a `503`.
const PG_WRITE_RUNS: u32 = 3;

/// The pause before running a rolled-back transaction again: a few
/// milliseconds, growing with each run and spread at random, so that the
/// two transactions that deadlocked do not meet again in step.
fn retry_pause(runs: u32) -> Duration {
    use rand::RngExt as _;
    let base = 5 * u64::from(runs);
    Duration::from_millis(base + rand::rng().random_range(0..=base * 4))
}
/// How long a caller waits for a pooled connection unless
/// [`StoreOptions::pool_timeout`] says otherwise.
pub const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest [`DbStore::ping`] waits for a connection: a readiness check
/// must answer well within a load balancer's timeout, also while requests
/// queue for a database that no longer answers.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// SQLite's read pool is plain r2d2: a query holds a connection for tens of
/// microseconds, and serving waiters in order (as for PostgreSQL) cut read
/// throughput by 15% while its slowest reads were already tens of ms.
type SqlitePool = Pool<ConnectionManager<SqliteConnection>>;
type PgPool = FairPool<PgManager>;

/// A connection of [`PgPool`].
type PooledPg = diesel::r2d2::PooledConnection<PgManager>;

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Encrypts TOTP secrets at rest. Losing it makes stored authenticators
    /// unusable (users must enroll again); changing it likewise.
    pub encryption_key: EncryptionKey,
    /// Connections in the pool: PostgreSQL's pool (default 10), or SQLite's
    /// read pool (default 8; SQLite has a single writer connection either
    /// way). At least 1.
    pub pool_size: Option<u32>,
    /// The longest a caller waits for a pooled connection (default
    /// [`DEFAULT_POOL_TIMEOUT`]); beyond it, and at once when the
    /// database cannot be reached, the operation fails with
    /// [`mfa_core::StoreError::Unavailable`]. More than zero.
    pub pool_timeout: Option<Duration>,
}

impl StoreOptions {
    /// Options with this key and default pool sizes.
    pub fn new(encryption_key: EncryptionKey) -> StoreOptions {
        StoreOptions {
            encryption_key,
            pool_size: None,
            pool_timeout: None,
        }
    }
}

/// The database product behind a [`DbStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// An SQLite file (embedded, one server process).
    Sqlite,
    /// A PostgreSQL server (any number of server processes).
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One embedded migration and whether the database has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Directory name, e.g. `2026-11-22-000001_orgs_users_memberships`.
    pub name: String,
    /// Whether it has been applied.
    pub applied: bool,
}

/// Where a URL points.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    /// A file path for SQLite.
    Sqlite(&'a str),
    /// A libpq connection URL.
    Postgres(&'a str),
}

/// Create the database file readable and writable by its owner only, if
/// it does not exist: it holds password hashes, encrypted secrets and
/// hashed tokens. SQLite would create it with the process's umask (often
/// 0644), and gives its `-wal` and `-shm` files the database file's mode.
/// A file that exists is left as it is, and any failure is left for
/// SQLite to report when it opens the path (URI file names included).
fn create_private_file(path: &str) {
    if path.starts_with("file:") {
        return;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let _ = options.open(path);
}

/// Pick the backend from the URL's scheme: `postgres://` and `postgresql://`
/// are PostgreSQL; `sqlite://PATH`, `sqlite:PATH` and a bare path are SQLite.
fn parse_url(url: &str) -> Result<Target<'_>, Error> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Target::Postgres(url));
    }
    let path = if let Some(path) = url.strip_prefix("sqlite://") {
        path
    } else if let Some(path) = url.strip_prefix("sqlite:") {
        path
    } else if let Some((scheme, _)) = url.split_once("://") {
        return Err(Error::UnsupportedUrl(format!(
            "scheme {scheme:?}; expected sqlite://PATH, a file path, or postgres://"
        )));
    } else {
        url
    };
    if path.is_empty() {
        return Err(Error::UnsupportedUrl("no SQLite file path".into()));
    }
    if path == ":memory:" || path.starts_with("file::memory:") || path.contains("mode=memory") {
        return Err(Error::UnsupportedUrl(
            "in-memory SQLite is not supported: every pooled connection would see its own \
             empty database; use a file (a temporary one for tests)"
                .into(),
        ));
    }
    Ok(Target::Sqlite(path))
}

/// A PostgreSQL URL with its database (the path) replaced by `name`, the
/// query kept; `None` for a URL that is not PostgreSQL's. For tools that
/// create a database beside the one they were given (tests, load runs).
pub fn with_database(url: &str, name: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "postgres" && scheme != "postgresql" {
        return None;
    }
    let (location, query) = match rest.find('?') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = location.split('/').next().unwrap_or("");
    Some(format!("{scheme}://{authority}/{name}{query}"))
}

/// SQLite: one writer thread with its connection, and a pool of read-only
/// connections that never wait for the writer (WAL).
struct SqliteDb {
    writer: SqliteWriter,
    read_pool: SqlitePool,
    /// Declared last: stops after the pools have closed.
    _checkpointer: sqlite::Checkpointer,
}

struct PgDb {
    pool: PgPool,
    /// For a connection outside the pool (the pooler check at open). Holds
    /// the password: never printed (no `Debug`).
    url: String,
}

enum Inner {
    Sqlite(SqliteDb),
    Postgres(PgDb),
}

/// The diesel store: SQLite or PostgreSQL, chosen by URL.
///
/// Implements [`mfa_core::Store`]. Every call blocks on database IO: call
/// it from a blocking thread pool (e.g. `actix_web::web::block` or
/// `tokio::task::spawn_blocking`), never directly on an async executor.
/// Share one `DbStore` (e.g. in an `Arc`) per process: it owns the pools.
/// Do not start a transaction from inside another one's closure: on SQLite
/// a write inside a write is refused (`StoreError::Backend`, "inside
/// another"), as the writer would wait for itself; on PostgreSQL the inner
/// one takes a second connection, and waits for the outer one's row locks
/// until `lock_timeout`.
pub struct DbStore {
    inner: Inner,
    cipher: SecretCipher,
    /// Whether debug builds check the locking rule (see `lock_rule.rs`).
    lock_rule: bool,
    /// Set when the database was found to record another key than this
    /// store's (see [`DbStore::check_key_still_recorded`]).
    key_stale: std::sync::atomic::AtomicBool,
}

/// Why every operation of a store whose key is no longer the database's
/// fails.
const STALE_KEY: &str = "the database records another encryption key since this process \
                         opened it (a key rotation or replacement): restart the process with the \
                         database's key";

impl fmt::Debug for DbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbStore")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

/// Why a transaction closure stopped: the domain said no, or the database
/// failed (diesel needs `E: From<diesel::result::Error>`).
pub(crate) enum TxError {
    Domain(MfaError),
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Db(e)
    }
}

fn finish<T>(result: Result<T, TxError>) -> MfaResult<T> {
    match result {
        Ok(value) => Ok(value),
        Err(TxError::Domain(e)) => Err(e),
        Err(TxError::Db(e)) => Err(store_failure(Error::from(e))),
    }
}

fn store_failure(e: Error) -> MfaError {
    MfaError::from(StoreError::from(e))
}

impl DbStore {
    /// Refuse every operation once the database records another key: a
    /// process left with the old key by a rotation would write secrets
    /// the others cannot read, and count password failures apart.
    fn refuse_if_key_stale(&self) -> MfaResult<()> {
        if self.key_stale.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(MfaError::from(StoreError::Unavailable(STALE_KEY.into())));
        }
        Ok(())
    }
}

fn pool_size(options: &StoreOptions, default: u32) -> Result<u32, Error> {
    match options.pool_size {
        Some(0) => Err(Error::Configuration("pool_size must be at least 1".into())),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

fn pool_timeout(options: &StoreOptions) -> Result<Duration, Error> {
    match options.pool_timeout {
        Some(t) if t.is_zero() => Err(Error::Configuration(
            "pool_timeout must be more than zero".into(),
        )),
        Some(t) => Ok(t),
        None => Ok(DEFAULT_POOL_TIMEOUT),
    }
}

fn migration_error(e: impl fmt::Display) -> Error {
    Error::Migration(e.to_string())
}

/// Status of every embedded migration on `conn`.
/// The version of the newest embedded migration (the same on both
/// backends): digits only, so it can stand in SQL text.
fn newest_migration_version() -> Result<String, Error> {
    use diesel::migration::MigrationSource;
    let migrations = MigrationSource::<diesel::sqlite::Sqlite>::migrations(&SQLITE_MIGRATIONS)
        .map_err(migration_error)?;
    migrations
        .iter()
        .map(|m| m.name().version().to_string())
        .filter(|v| v.chars().all(|c| c.is_ascii_digit()))
        .max()
        .ok_or_else(|| Error::Migration("no migration is embedded".into()))
}

/// Versions applied in the database that `source` does not hold, oldest
/// first: migrations of a newer version.
fn unknown<DB, C>(conn: &mut C, source: &EmbeddedMigrations) -> Result<Vec<String>, Error>
where
    DB: diesel::backend::Backend,
    C: MigrationHarness<DB>,
    EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
{
    use diesel::migration::MigrationSource;
    let known: Vec<String> = MigrationSource::<DB>::migrations(source)
        .map_err(migration_error)?
        .iter()
        .map(|m| m.name().version().to_string())
        .collect();
    let mut unknown: Vec<String> = conn
        .applied_migrations()
        .map_err(migration_error)?
        .iter()
        .map(|v| v.to_string())
        .filter(|v| !known.contains(v))
        .collect();
    unknown.sort();
    Ok(unknown)
}

/// Refuse a database a newer version migrated ([`Error::NewerSchema`]).
fn refuse_unknown<DB, C>(conn: &mut C, source: &EmbeddedMigrations) -> Result<(), Error>
where
    DB: diesel::backend::Backend,
    C: MigrationHarness<DB>,
    EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
{
    let unknown = unknown(conn, source)?;
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(Error::NewerSchema(unknown))
    }
}

fn status<DB, C>(conn: &mut C, source: &EmbeddedMigrations) -> Result<Vec<MigrationStatus>, Error>
where
    DB: diesel::backend::Backend,
    C: MigrationHarness<DB>,
    EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
{
    use diesel::migration::MigrationSource;
    let applied = conn.applied_migrations().map_err(migration_error)?;
    let mut all: Vec<MigrationStatus> = MigrationSource::<DB>::migrations(source)
        .map_err(migration_error)?
        .iter()
        .map(|m| MigrationStatus {
            name: m.name().to_string(),
            applied: applied.contains(&m.name().version()),
        })
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// Names of the migrations with these versions, in the embedded order.
fn names_of<DB>(
    source: &EmbeddedMigrations,
    versions: &[diesel::migration::MigrationVersion<'_>],
) -> Result<Vec<String>, Error>
where
    DB: diesel::backend::Backend,
    EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
{
    use diesel::migration::MigrationSource;
    let all = MigrationSource::<DB>::migrations(source).map_err(migration_error)?;
    Ok(versions
        .iter()
        .map(|v| {
            all.iter()
                .find(|m| m.name().version() == *v)
                .map(|m| m.name().to_string())
                .unwrap_or_else(|| v.to_string())
        })
        .collect())
}

/// How long a process waits for another's migrations before it gives up.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(3600);

/// Pause between two attempts to take the migration lock.
const MIGRATION_LOCK_POLL: Duration = Duration::from_millis(200);

/// Run `f` holding the migration advisory lock, releasing it afterwards even
/// when `f` fails.
///
/// The lock is polled with `pg_try_advisory_lock`, not waited for inside
/// `pg_advisory_lock`: a session waiting inside a statement holds a
/// snapshot, and `CREATE INDEX CONCURRENTLY` in the holder's migration
/// waits until every older snapshot is gone. The two processes would wait
/// for each other, and PostgreSQL would fail one with a deadlock.
fn with_pg_migration_lock<T>(
    conn: &mut PgConnection,
    f: impl FnOnce(&mut PgConnection) -> Result<T, Error>,
) -> Result<T, Error> {
    let deadline = Instant::now() + MIGRATION_LOCK_WAIT;
    loop {
        let locked: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
            "pg_try_advisory_lock({MIGRATION_LOCK_KEY})"
        )))
        .get_result(conn)?;
        if locked {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Error::Migration(format!(
                "another process held the migration lock for over {} s",
                MIGRATION_LOCK_WAIT.as_secs()
            )));
        }
        std::thread::sleep(MIGRATION_LOCK_POLL);
    }
    let result = f(conn);
    let unlocked: Result<bool, Error> =
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
            "pg_advisory_unlock({MIGRATION_LOCK_KEY})"
        )))
        .get_result(conn)
        .map_err(Error::from);
    let value = result?;
    if !unlocked? {
        return Err(Error::Configuration(TRANSACTION_POOLING.into()));
    }
    Ok(value)
}

/// Why a connection whose statements run in different PostgreSQL sessions
/// is refused.
const TRANSACTION_POOLING: &str = "the statements of one connection ran in different PostgreSQL \
     sessions: a connection pooler in transaction or statement mode (PgBouncer's pool_mode = \
     transaction) is in front of the database. The server relies on its sessions (per-connection \
     settings such as lock_timeout, prepared statements, the migration's advisory lock): use \
     pool_mode = session, or connect to PostgreSQL directly";

impl PgDb {
    /// A pooled connection for the migration's work, once the pool is
    /// known to keep each connection in one PostgreSQL session. Behind a
    /// pooler in transaction mode the server answered 500s (another
    /// session's prepared statements), left its lock timeout unset, left
    /// the migration lock held by a pooled session, and once mistook
    /// another row for a changed encryption key (an audit, PgBouncer 1.18).
    ///
    /// The check: connection `a` reads its session's id; `b`, in a
    /// transaction, holds a session (behind such a pooler, most likely the
    /// one `a` just gave back); `a` reads its id again. A session-mode
    /// pooler or none keeps `a` in its session; a transaction-mode one
    /// moves it. Not a proof (the pooler may hand `b` another idle
    /// session), so it is tried a few times; the unlock of the migration
    /// lock, which fails in another session, checks again. `b` is a
    /// connection of its own, outside the pool, so that a pool of one is
    /// checked too.
    fn migration_connection(&self) -> Result<PooledPg, Error> {
        let mut a = self.pool.get()?;
        let mut b = PgConnection::establish(&self.url)?;
        let backend = |conn: &mut PgConnection| -> Result<i32, Error> {
            Ok(
                diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
                    "pg_backend_pid()",
                ))
                .get_result(conn)?,
            )
        };
        for _ in 0..3 {
            let before = backend(&mut a)?;
            let after = b.build_transaction().run(|b| {
                backend(b)?;
                backend(&mut a)
            })?;
            if after != before {
                return Err(Error::Configuration(TRANSACTION_POOLING.into()));
            }
        }
        Ok(a)
    }
}

impl DbStore {
    /// Open the database at `url`, apply pending migrations, and check the
    /// connection settings and the key.
    ///
    /// `postgres://…` or `postgresql://…` selects PostgreSQL (any libpq URL);
    /// `sqlite://PATH`, `sqlite:PATH` or a bare file path selects SQLite (the
    /// file is created if missing; `sqlite:///abs/path` is an absolute path).
    /// A failed PostgreSQL connection reports libpq's own message.
    ///
    /// The key must be the database's ([`DbStore::verify_encryption_key`]):
    /// another is refused before anything is written under it.
    pub fn open(url: &str, options: StoreOptions) -> Result<DbStore, Error> {
        let store = DbStore::connect(url, options)?;
        store.check_key_before_migrating()?;
        store.run_migrations()?;
        store.verify_encryption_key()?;
        Ok(store)
    }

    /// Like [`DbStore::open`] but without applying migrations nor checking
    /// the key: for a `migrate --status` command, which must look before
    /// it changes, and for callers that check the key themselves.
    pub fn connect(url: &str, options: StoreOptions) -> Result<DbStore, Error> {
        let cipher = options.encryption_key.cipher();
        let inner = match parse_url(url)? {
            Target::Sqlite(path) => Inner::Sqlite(connect_sqlite(path, &options)?),
            Target::Postgres(url) => Inner::Postgres(connect_postgres(url, &options)?),
        };
        Ok(DbStore {
            inner,
            cipher,
            lock_rule: true,
            key_stale: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// SQLite: how many batches of write transactions were committed (see
    /// the group commit of the writer); `None` on PostgreSQL. For tests.
    #[cfg(feature = "test-support")]
    pub fn committed_write_batches(&self) -> Option<u64> {
        match &self.inner {
            Inner::Sqlite(db) => Some(db.writer.commits()),
            Inner::Postgres(_) => None,
        }
    }

    /// The store without the debug builds' check of the locking rule, for
    /// tests of single `StoreTx` methods, which call them without the
    /// locks a domain transaction takes first (e.g. to show that a
    /// conditional update is atomic by itself).
    #[cfg(feature = "test-support")]
    pub fn without_lock_rule(mut self) -> DbStore {
        self.lock_rule = false;
        self
    }

    /// Which database product this is.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// Check that a connection can be had within [`PING_TIMEOUT`], that
    /// the database has this version's schema, its newest migration
    /// applied, and that it recorded no other key than this store's (for
    /// `/readyz`). Reads only: a database emptied or recreated under a
    /// running server is not ready, and is not migrated by this; a process
    /// left with the old key by a rotation is not ready
    /// ([`Error::NotTheDatabaseKey`]).
    pub fn ping(&self) -> Result<(), Error> {
        let newest = newest_migration_version()?;
        let applied =
            format!("EXISTS (SELECT 1 FROM __diesel_schema_migrations WHERE version = '{newest}')");
        let query = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&applied));
        let (has_schema, recorded) = match &self.inner {
            Inner::Sqlite(db) => {
                let mut conn = db.read_pool.get_timeout(PING_TIMEOUT)?;
                let has_schema: bool = query.get_result(&mut *conn)?;
                let recorded = match has_schema {
                    true => key_rotation::recorded_on_sqlite(&mut conn)?,
                    false => None,
                };
                (has_schema, recorded)
            }
            Inner::Postgres(db) => {
                let deadline = Instant::now() + PING_TIMEOUT;
                let mut attempts = db.pool.max_size() + 1;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let mut conn = db.pool.get_within(left)?;
                    match query.clone().get_result::<bool>(&mut **conn) {
                        Ok(has_schema) => {
                            let recorded = match has_schema {
                                true => key_rotation::recorded_on_postgres(&mut conn)?,
                                false => None,
                            };
                            break (has_schema, recorded);
                        }
                        // A connection the database ended (a restart, a
                        // failover, `pg_terminate_backend`) says nothing of
                        // the database: try another, as reads do. Else every
                        // node's probe failed at once after a restart.
                        Err(e) if conn.note(&e) && attempts > 1 => attempts -= 1,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        };
        if !has_schema {
            return Err(Error::Migration(format!(
                "the schema is not this version's: migration {newest} is not applied \
                 (`mfa-server migrate`, or a server's start, applies it)"
            )));
        }
        self.note_recorded_key(recorded)
    }

    /// Apply every pending migration; the names of those applied, oldest
    /// first. [`DbStore::open`] does this already. On PostgreSQL an advisory
    /// lock keeps concurrently starting servers from racing. A database a
    /// newer version migrated is refused, unchanged ([`Error::NewerSchema`]):
    /// this version does not know what its schema means.
    pub fn run_migrations(&self) -> Result<Vec<String>, Error> {
        match &self.inner {
            // All pending migrations in one IMMEDIATE transaction (each
            // becomes a savepoint): another process opening the same file
            // waits for the lock, then finds nothing pending.
            Inner::Sqlite(db) => db.with_writer(|conn| {
                conn.immediate_transaction(|conn| {
                    refuse_unknown(conn, &SQLITE_MIGRATIONS)?;
                    let applied = conn
                        .run_pending_migrations(SQLITE_MIGRATIONS)
                        .map_err(migration_error)?;
                    let names = names_of::<diesel::sqlite::Sqlite>(&SQLITE_MIGRATIONS, &applied)?;
                    canonical_email::canonicalize!(
                        conn,
                        &self.cipher,
                        canonical_email::SQLITE_NON_ASCII
                    )?
                    .log();
                    Ok(names)
                })
            }),
            Inner::Postgres(db) => {
                let mut conn = db.migration_connection()?;
                with_pg_migration_lock(&mut conn, |conn| {
                    refuse_unknown(conn, &POSTGRES_MIGRATIONS)?;
                    let applied = conn
                        .run_pending_migrations(POSTGRES_MIGRATIONS)
                        .map_err(migration_error)?;
                    let names = names_of::<diesel::pg::Pg>(&POSTGRES_MIGRATIONS, &applied)?;
                    conn.build_transaction()
                        .run(|conn| {
                            canonical_email::canonicalize!(
                                conn,
                                &self.cipher,
                                canonical_email::POSTGRES_NON_ASCII
                            )
                        })?
                        .log();
                    Ok(names)
                })
            }
        }
    }

    /// How many stored addresses the next migration run (`migrate`, a
    /// server's start) writes in their ASCII form: addresses stored by a
    /// version before domains were kept so, and pending changes to them
    /// (see [`mfa_core::normalize_email`]). Accounts left because another
    /// has the ASCII form are not counted.
    pub fn addresses_to_rewrite(&self) -> Result<u64, Error> {
        match &self.inner {
            Inner::Sqlite(db) => {
                let mut pooled = db.read_pool.get()?;
                let conn: &mut SqliteConnection = &mut pooled;
                canonical_email::waiting!(conn, canonical_email::SQLITE_NON_ASCII)
            }
            Inner::Postgres(db) => {
                let mut pooled = db.pool.get()?;
                let conn: &mut PgConnection = &mut pooled;
                canonical_email::waiting!(conn, canonical_email::POSTGRES_NON_ASCII)
            }
        }
    }

    /// Every embedded migration with whether it is applied, oldest first.
    pub fn migration_status(&self) -> Result<Vec<MigrationStatus>, Error> {
        match &self.inner {
            Inner::Sqlite(db) => db.with_writer(|conn| status(conn, &SQLITE_MIGRATIONS)),
            // Under the migration lock: reading the status creates diesel's
            // table of versions on a new database, which processes starting
            // at once would race to do.
            Inner::Postgres(db) => {
                let mut conn = db.migration_connection()?;
                with_pg_migration_lock(&mut conn, |conn| status(conn, &POSTGRES_MIGRATIONS))
            }
        }
    }

    /// Versions applied in the database that this build does not know (a
    /// newer version migrated it), oldest first; none normally.
    pub fn unknown_migrations(&self) -> Result<Vec<String>, Error> {
        match &self.inner {
            Inner::Sqlite(db) => db.with_writer(|conn| unknown(conn, &SQLITE_MIGRATIONS)),
            Inner::Postgres(db) => unknown(&mut **db.pool.get()?, &POSTGRES_MIGRATIONS),
        }
    }

    /// Names of the migrations not yet applied, oldest first.
    pub fn pending_migrations(&self) -> Result<Vec<String>, Error> {
        Ok(self
            .migration_status()?
            .into_iter()
            .filter(|m| !m.applied)
            .map(|m| m.name)
            .collect())
    }

    /// Names of the applied migrations, oldest first.
    pub fn applied_migrations(&self) -> Result<Vec<String>, Error> {
        Ok(self
            .migration_status()?
            .into_iter()
            .filter(|m| m.applied)
            .map(|m| m.name)
            .collect())
    }

    /// Revert every applied migration, newest first, running each
    /// `down.sql`: this drops every table and all data. For the migration
    /// redo test only, hence behind the `test-support` feature.
    #[cfg(feature = "test-support")]
    pub fn revert_all_migrations(&self) -> Result<Vec<String>, Error> {
        match &self.inner {
            Inner::Sqlite(db) => db.with_writer(|conn| {
                conn.immediate_transaction(|conn| {
                    let reverted = conn
                        .revert_all_migrations(SQLITE_MIGRATIONS)
                        .map_err(migration_error)?;
                    names_of::<diesel::sqlite::Sqlite>(&SQLITE_MIGRATIONS, &reverted)
                })
            }),
            Inner::Postgres(db) => {
                let mut conn = db.migration_connection()?;
                with_pg_migration_lock(&mut conn, |conn| {
                    let reverted = conn
                        .revert_all_migrations(POSTGRES_MIGRATIONS)
                        .map_err(migration_error)?;
                    names_of::<diesel::pg::Pg>(&POSTGRES_MIGRATIONS, &reverted)
                })
            }
        }
    }
}

/// What a PostgreSQL transaction may do.
#[derive(Clone, Copy)]
enum PgAccess {
    ReadOnly,
    ReadWrite,
}

impl PgDb {
    /// Run `body` in a transaction on a pooled connection. A connection
    /// found lost at `BEGIN` (nothing has run on it) is discarded and the
    /// transaction started again on another, at most once per connection
    /// the pool can hold; a connection lost later fails the transaction,
    /// which may or may not have committed.
    fn transaction<T>(
        &self,
        access: PgAccess,
        body: impl FnOnce(&mut PgConnection) -> Result<T, TxError>,
    ) -> MfaResult<T> {
        let mut body = Some(body);
        let mut attempts = self.pool.max_size() + 1;
        loop {
            let mut pooled = self.pool.get().map_err(store_failure)?;
            let conn: &mut PgConn = &mut pooled;
            let run = |conn: &mut PgConnection| match body.take() {
                Some(body) => body(conn),
                // diesel runs the closure once; never reached.
                None => Err(TxError::Db(diesel::result::Error::RollbackTransaction)),
            };
            let mut builder = conn.build_transaction();
            let result = match access {
                PgAccess::ReadOnly => builder.repeatable_read().read_only().run(run),
                PgAccess::ReadWrite => builder.run(run),
            };
            match result {
                Err(TxError::Db(e)) => {
                    attempts -= 1;
                    if conn.note(&e) && body.is_some() && attempts > 0 {
                        continue;
                    }
                    return finish(Err(TxError::Db(e)));
                }
                other => return finish(other),
            }
        }
    }
}

impl PgDb {
    /// Run `read`, a single statement, outside any transaction. If it
    /// fails on a connection that turns out to be lost, it runs again on
    /// another (it only reads), at most once per connection the pool holds.
    fn statement<T>(&self, read: impl Fn(&mut PgConnection) -> MfaResult<T>) -> MfaResult<T> {
        let mut attempts = self.pool.max_size() + 1;
        loop {
            let mut pooled = self.pool.get().map_err(store_failure)?;
            let conn: &mut PgConn = &mut pooled;
            let result = read(conn);
            attempts -= 1;
            if result.is_ok() || attempts == 0 {
                return result;
            }
            // The error has been mapped for the domain: ask the connection.
            match conn.batch_execute("SELECT 1") {
                Err(e) if conn.note(&e) => continue,
                _ => return result,
            }
        }
    }
}

impl SqliteDb {
    /// Run `f` on the writer connection, between write transactions.
    fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut SqliteConnection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.writer.exclusive(f)
    }
}

fn connect_sqlite(path: &str, options: &StoreOptions) -> Result<SqliteDb, Error> {
    let read_size = pool_size(options, SQLITE_READ_POOL)?;
    let timeout = pool_timeout(options)?;
    create_private_file(path);
    // One direct connection first: it reports SQLite's own error at once
    // (r2d2 would retry until its timeout), switches the file to WAL before
    // the pools open, and has its settings read back.
    // SQLite's message ("unable to open database file") names no file.
    let mut first = SqliteConnection::establish(path).map_err(|e| match Error::from(e) {
        Error::Connect(message) => {
            let parent = std::path::Path::new(path)
                .parent()
                .filter(|dir| !dir.as_os_str().is_empty() && !dir.exists());
            match parent {
                Some(dir) => Error::Connect(format!(
                    "{path}: {message} (the directory {} does not exist)",
                    dir.display()
                )),
                None => Error::Connect(format!("{path}: {message}")),
            }
        }
        other => other,
    })?;
    sqlite::configure_first(&mut first, Role::Writer)?;
    sqlite::verify(&mut first, Role::Writer)?;
    drop(first);

    let pool = |role: Role, size: u32| -> Result<SqlitePool, Error> {
        Ok(Pool::builder()
            .max_size(size)
            .min_idle(Some(1))
            .connection_timeout(timeout)
            // a local file: nothing to go stale between uses
            .test_on_check_out(false)
            .connection_customizer(Box::new(sqlite::Setup(role)))
            .build(ConnectionManager::new(path))?)
    };
    let writer = SqliteWriter::start(path)?;
    let read_pool = pool(Role::Reader, read_size)?;
    writer.exclusive(|conn| sqlite::verify(conn, Role::Writer))?;
    sqlite::verify(&mut *read_pool.get()?, Role::Reader)?;
    Ok(SqliteDb {
        writer,
        read_pool,
        _checkpointer: sqlite::Checkpointer::start(path)?,
    })
}

/// Whether libpq and a reader masking the password (mfa-server's
/// `check-config`) find the same user info in the PostgreSQL URL `url`, so
/// that no part of a password is read as a host, a port or a path. libpq takes
/// the user info up to the first `@` unless a `/` comes first, and the
/// host up to the next `/` or `?`. A raw `@`, `/`, `?` or `#` in a
/// password made them differ: the rest of the password became the host
/// or the port, which libpq's connection error printed to the log, and
/// `check-config` printed the URL unmasked.
pub fn postgres_userinfo_is_unambiguous(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    // One raw `@` in the whole URL at most: any other, in a password or a
    // query value alike, is written `%40` (a password holding `@?` made a
    // "query" start inside itself).
    if rest.matches('@').count() > 1 {
        return false;
    }
    let Some(at) = rest.find('@') else {
        return true;
    };
    let userinfo = &rest[..at];
    // The user info ends at the `@`, before any `/`, `?` or `#`, and its
    // escapes are whole: libpq prints a user info it cannot decode in its
    // error, password and all ("invalid percent-encoded token").
    !userinfo.contains(['/', '?', '#']) && escapes_are_whole(userinfo)
}

/// Whether every `%` in `text` begins an escape of two hex digits other
/// than `%00`, which libpq refuses.
fn escapes_are_whole(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || matches!(bytes.get(i + 1..i + 3), Some([h, l])
                if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() && !(*h == b'0' && *l == b'0'))
    })
}

fn connect_postgres(url: &str, options: &StoreOptions) -> Result<PgDb, Error> {
    // Refused here, not only in a server's configuration: libpq's own
    // error would print the password of such a URL to the caller's log.
    if !postgres_userinfo_is_unambiguous(url) {
        return Err(Error::UnsupportedUrl(
            "a raw `@`, `/`, `?`, `#` or `%` in the user name or password, or a second raw `@`: \
             percent-encode them (`%40`, `%2F`, `%3F`, `%23`, `%25`)"
                .into(),
        ));
    }
    let size = pool_size(options, POSTGRES_POOL)?;
    let timeout = pool_timeout(options)?;
    // A direct connection first so that a failure reports libpq's message
    // (not r2d2's timeout, nor MultiConnection's "invalid URL").
    let first = PgConnection::establish(url)?;
    drop(first);
    let pool = Pool::builder()
        .max_size(size)
        .min_idle(Some(1))
        .connection_timeout(timeout)
        // Lost connections are found by use instead (see `pg_pool`).
        .test_on_check_out(false)
        .error_handler(Box::new(crate::pg_pool::ConnectFailureLog::default()))
        .build(PgManager::new(url, timeout))?;
    Ok(PgDb {
        pool: FairPool::new(pool, timeout),
        url: url.to_string(),
    })
}

impl Store for DbStore {
    fn read<T>(&self, f: impl FnOnce(&mut dyn StoreTx) -> MfaResult<T>) -> MfaResult<T> {
        self.refuse_if_key_stale()?;
        let cipher = &self.cipher;
        let lock_rule = self.lock_rule;
        match &self.inner {
            Inner::Sqlite(db) => {
                let mut pooled = db.read_pool.get().map_err(|e| store_failure(e.into()))?;
                let conn: &mut SqliteConnection = &mut pooled;
                // Deferred: the snapshot starts at the first read and holds
                // for the transaction; WAL readers never wait for the writer.
                finish(conn.transaction(|conn| {
                    f(&mut Tx::new(conn, cipher, lock_rule)).map_err(TxError::Domain)
                }))
            }
            // One snapshot for every statement; read-only repeatable read
            // never fails with a serialisation error.
            Inner::Postgres(db) => db.transaction(PgAccess::ReadOnly, |conn| {
                f(&mut Tx::new(conn, cipher, lock_rule)).map_err(TxError::Domain)
            }),
        }
    }

    fn read_statement<T>(&self, f: impl Fn(&mut dyn StoreTx) -> MfaResult<T>) -> MfaResult<T> {
        self.refuse_if_key_stale()?;
        let cipher = &self.cipher;
        let lock_rule = self.lock_rule;
        match &self.inner {
            Inner::Sqlite(db) => {
                let mut pooled = db.read_pool.get().map_err(|e| store_failure(e.into()))?;
                f(&mut Tx::new(&mut *pooled, cipher, lock_rule))
            }
            Inner::Postgres(db) => db.statement(|conn| f(&mut Tx::new(conn, cipher, lock_rule))),
        }
    }

    fn write<T: Send>(
        &self,
        mut f: impl FnMut(&mut dyn StoreTx) -> MfaResult<T> + Send,
    ) -> MfaResult<T> {
        self.refuse_if_key_stale()?;
        let cipher = &self.cipher;
        let lock_rule = self.lock_rule;
        match &self.inner {
            // One writer: nothing to deadlock with.
            Inner::Sqlite(db) => {
                finish(db.writer.write(|conn| {
                    f(&mut Tx::new(conn, cipher, lock_rule)).map_err(TxError::Domain)
                }))
            }
            // READ COMMITTED: the conditional updates re-check their WHERE
            // on the locked row, so of racing callers one wins.
            Inner::Postgres(db) => {
                let mut runs = 0;
                loop {
                    runs += 1;
                    let result = db.transaction(PgAccess::ReadWrite, |conn| {
                        f(&mut Tx::new(conn, cipher, lock_rule)).map_err(TxError::Domain)
                    });
                    match result {
                        Err(MfaError::Store(StoreError::Unavailable(why)))
                            if runs < PG_WRITE_RUNS && rolled_back_by_database(&why) =>
                        {
                            tracing::debug!(
                                run = runs,
                                why,
                                "transaction rolled back by PostgreSQL; running it again"
                            );
                            std::thread::sleep(retry_pause(runs));
                        }
                        other => return other,
                    }
                }
            }
        }
    }

    /// PostgreSQL only (`store/authenticator_success.rs`). SQLite has no
    /// round trip to save: its transaction is the fast path already, and
    /// the read before it would be a hop to a reader thread more.
    fn apply_authenticator_success(
        &self,
        owner: mfa_core::CodeOwner<'_>,
        check: impl FnOnce(
            Option<&mfa_core::SessionMember>,
            &mfa_core::FailureState,
            &mfa_core::Authenticator,
        ) -> Option<mfa_core::AuthenticatorSuccess>,
    ) -> MfaResult<bool> {
        self.refuse_if_key_stale()?;
        match &self.inner {
            Inner::Sqlite(_) => Ok(false),
            Inner::Postgres(db) => db.apply_authenticator_success(&self.cipher, owner, check),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_types_are_thread_safe() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<DbStore>();
        assert_send_sync::<Error>();
        assert_send_sync::<StoreOptions>();
    }

    #[test]
    fn urls_select_the_backend() {
        assert_eq!(
            parse_url("postgres://u@h/db").unwrap(),
            Target::Postgres("postgres://u@h/db")
        );
        assert_eq!(
            parse_url("postgresql://h/db?sslmode=require").unwrap(),
            Target::Postgres("postgresql://h/db?sslmode=require")
        );
        assert_eq!(
            parse_url("sqlite:///var/lib/mfa.db").unwrap(),
            Target::Sqlite("/var/lib/mfa.db")
        );
        assert_eq!(
            parse_url("sqlite://data/mfa.db").unwrap(),
            Target::Sqlite("data/mfa.db")
        );
        assert_eq!(
            parse_url("sqlite:mfa.db").unwrap(),
            Target::Sqlite("mfa.db")
        );
        assert_eq!(parse_url("./mfa.db").unwrap(), Target::Sqlite("./mfa.db"));
        assert_eq!(parse_url("/tmp/x.db").unwrap(), Target::Sqlite("/tmp/x.db"));
    }

    #[test]
    fn unsupported_urls_are_refused_without_echoing_them() {
        let err = parse_url("mysql://root:hunter2@db/mfa").unwrap_err();
        assert!(matches!(err, Error::UnsupportedUrl(_)));
        assert!(!err.to_string().contains("hunter2"), "{err}");
        for url in [
            "",
            "sqlite://",
            ":memory:",
            "sqlite::memory:",
            "file::memory:?cache=shared",
        ] {
            assert!(
                matches!(parse_url(url), Err(Error::UnsupportedUrl(_))),
                "{url:?}"
            );
        }
    }
}

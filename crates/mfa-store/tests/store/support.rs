//! Helpers shared by the test modules.

use std::sync::Barrier;
use std::thread;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, SqliteConnection};
use mfa_core::ports::StoreResult;
use mfa_core::{
    FailureKind, FailureState, FailureSubject, MfaResult, NewUser, Org, Store, StoreTx, Timestamp,
    User, UserId,
};
use mfa_store::test_support::{TestDatabase, test_options};
use mfa_store::{Backend, DbStore};

/// A fixed "now" for the tests.
pub const T0: Timestamp = Timestamp(1_750_000_000);

/// Open (and migrate) a store with a fresh key. These tests call single
/// `StoreTx` methods, without the locks the domain takes first: the
/// locking rule is checked by the domain's tests (mfa-server's).
pub fn open(db: &TestDatabase) -> DbStore {
    db.open(test_options())
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.backend()))
        .without_lock_rule()
}

/// Run a write transaction that must succeed.
pub fn write<T: Send>(
    store: &DbStore,
    f: impl FnMut(&mut dyn StoreTx) -> MfaResult<T> + Send,
) -> T {
    store
        .write(f)
        .unwrap_or_else(|e| panic!("write transaction failed: {e:?}"))
}

/// Run a read transaction that must succeed.
pub fn read<T>(store: &DbStore, f: impl FnOnce(&mut dyn StoreTx) -> MfaResult<T>) -> T {
    store
        .read(f)
        .unwrap_or_else(|e| panic!("read transaction failed: {e:?}"))
}

/// Fields of a new user with this email and names.
/// One more failure of `kind` for `user`, none forgotten.
pub fn count_failure(
    tx: &mut dyn StoreTx,
    user: UserId,
    kind: FailureKind,
) -> StoreResult<FailureState> {
    tx.increment_failures(FailureSubject::User(user, kind), Timestamp(0), Timestamp(0))
}

pub fn new_user(email: &str, first: &str, last: &str) -> NewUser {
    NewUser {
        email: email.to_string(),
        first_name: first.to_string(),
        last_name: last.to_string(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".to_string(),
        is_super_admin: false,
        created_at: T0,
    }
}

/// Create a user.
pub fn add_user(tx: &mut dyn StoreTx, email: &str) -> User {
    tx.insert_user(&new_user(email, "First", "Last"))
        .unwrap_or_else(|e| panic!("insert_user {email}: {e:?}"))
}

/// Create an org.
pub fn add_org(tx: &mut dyn StoreTx, name: &str) -> Org {
    tx.insert_org(name, T0)
        .unwrap_or_else(|e| panic!("insert_org {name}: {e:?}"))
}

/// Run raw SQL on the test database, bypassing the store (to tamper with
/// rows or look at the catalog).
pub fn raw_execute(db: &TestDatabase, sql: &str) {
    match db.backend() {
        Backend::Sqlite => raw_sqlite(db).batch_execute(sql),
        Backend::Postgres => raw_postgres(db).batch_execute(sql),
    }
    .unwrap_or_else(|e| panic!("raw SQL failed: {e}: {sql}"));
}

/// Undo the applied migration `name` by hand: run its `down.sql` and
/// forget it in diesel's bookkeeping, so that the next
/// `DbStore::run_migrations` applies it again. For tests of what a
/// migration does to rows that were there before it.
pub fn undo_migration(db: &TestDatabase, name: &str) {
    let backend = match db.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let path = format!(
        "{}/../../migrations/{backend}/{name}/down.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    let down = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    raw_execute(db, &down);
    // diesel's version of a migration: the digits of its name's date part.
    let version: String = name
        .split('_')
        .next()
        .unwrap_or(name)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    raw_execute(
        db,
        &format!("DELETE FROM __diesel_schema_migrations WHERE version = '{version}'"),
    );
}

/// A direct SQLite connection to the test database.
pub fn raw_sqlite(db: &TestDatabase) -> SqliteConnection {
    let path = db.sqlite_path().expect("an SQLite test database");
    SqliteConnection::establish(&path.to_string_lossy()).expect("raw SQLite connection")
}

/// A direct PostgreSQL connection to the test database.
pub fn raw_postgres(db: &TestDatabase) -> PgConnection {
    PgConnection::establish(db.url()).expect("raw PostgreSQL connection")
}

/// A single-column text result of raw SQL.
#[derive(diesel::QueryableByName, Debug)]
pub struct TextRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub value: String,
}

/// Rows of a raw query selecting one text column named `value`.
pub fn raw_texts(db: &TestDatabase, sql: &str) -> Vec<String> {
    use diesel::RunQueryDsl;
    let rows: Vec<TextRow> = match db.backend() {
        Backend::Sqlite => diesel::sql_query(sql).load(&mut raw_sqlite(db)),
        Backend::Postgres => diesel::sql_query(sql).load(&mut raw_postgres(db)),
    }
    .unwrap_or_else(|e| panic!("raw query failed: {e}: {sql}"));
    rows.into_iter().map(|r| r.value).collect()
}

/// The application tables present (migration bookkeeping and SQLite's
/// internal tables excluded), sorted.
pub fn user_tables(db: &TestDatabase) -> Vec<String> {
    let sql = match db.backend() {
        Backend::Sqlite => {
            "SELECT name AS value FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             AND name <> '__diesel_schema_migrations' ORDER BY name"
        }
        Backend::Postgres => {
            "SELECT table_name::text AS value FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations' \
             ORDER BY table_name"
        }
    };
    raw_texts(db, sql)
}

/// Run `f` on `threads` threads released together by a barrier, spreading
/// them over `stores`; the results in thread order.
pub fn race<T: Send>(
    stores: &[&DbStore],
    threads: usize,
    f: impl Fn(&DbStore, usize) -> T + Sync,
) -> Vec<T> {
    let barrier = Barrier::new(threads);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let store = stores[i % stores.len()];
                let (barrier, f) = (&barrier, &f);
                scope.spawn(move || {
                    barrier.wait();
                    f(store, i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a racing thread panicked"))
            .collect()
    })
}

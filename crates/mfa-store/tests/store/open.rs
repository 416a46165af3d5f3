//! Opening by URL, connection errors, settings, and migrations.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use mfa_core::{AuditFilter, Membership, Timestamp};
use mfa_store::test_support::{TestDatabase, test_options};
use mfa_store::{Backend, DbStore, Error, StoreOptions};

use crate::support::*;

const MIGRATIONS: [&str; 15] = [
    "2026-11-22-000001_orgs_users_memberships",
    "2026-11-22-000002_factors",
    "2026-11-22-000003_sessions_security_audit",
    "2026-11-23-000001_user_search",
    "2026-11-23-000002_membership_search",
    "2026-11-24-000001_failure_counter_is_clear",
    "2026-11-25-000001_audit_events_at",
    "2026-11-26-000001_unknown_email_failures",
    "2026-11-27-000001_password_failures_by_address",
    "2026-11-28-000001_sessions_mfa_passed",
    "2026-11-29-000001_search_full_name",
    "2026-11-30-000001_encryption_key_fingerprint",
    "2026-12-01-000001_notice_outbox",
    "2026-12-02-000001_anonymous_audit_events",
    "2026-12-03-000001_audit_client_address",
];

const TABLES: [&str; 14] = [
    "audit_events",
    "authenticators",
    "email_changes",
    "email_codes",
    "email_factors",
    "encryption_key_fingerprint",
    "failure_counters",
    "memberships",
    "notices",
    "orgs",
    "password_failures",
    "recovery_codes",
    "sessions",
    "users",
];

/// Run all, revert all, run all again: every `down.sql` undoes its `up.sql`.
fn migrations_redo(db: TestDatabase) {
    let store = open(&db);
    assert_eq!(store.applied_migrations().expect("applied"), MIGRATIONS);
    assert!(store.pending_migrations().expect("pending").is_empty());
    assert_eq!(user_tables(&db), TABLES);
    write(&store, |tx| Ok(add_org(tx, "before")));

    let mut reverted = store.revert_all_migrations().expect("revert all");
    reverted.reverse();
    assert_eq!(reverted, MIGRATIONS, "each applied migration reverted");
    assert!(store.applied_migrations().expect("applied").is_empty());
    assert_eq!(store.pending_migrations().expect("pending"), MIGRATIONS);
    assert!(
        user_tables(&db).is_empty(),
        "down.sql left {:?}",
        user_tables(&db)
    );

    assert_eq!(store.run_migrations().expect("run again"), MIGRATIONS);
    assert!(store.run_migrations().expect("nothing to do").is_empty());
    assert_eq!(user_tables(&db), TABLES);
    let org = write(&store, |tx| Ok(add_org(tx, "after")));
    assert_eq!(read(&store, |tx| Ok(tx.all_orgs()?)), vec![org]);
}

/// `connect` looks without changing: what `migrate --status` needs.
fn connect_does_not_migrate(db: TestDatabase) {
    let store = DbStore::connect(db.url(), test_options()).expect("connect");
    let status = store.migration_status().expect("status");
    assert_eq!(
        status.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        MIGRATIONS
    );
    assert!(status.iter().all(|m| !m.applied));
    assert!(user_tables(&db).is_empty());
    assert_eq!(store.run_migrations().expect("run"), MIGRATIONS);
    assert!(
        store
            .migration_status()
            .expect("status")
            .iter()
            .all(|m| m.applied)
    );
}

/// A database a newer version migrated (a migration this build does not
/// know) is reported, and refused unchanged by `run_migrations` and so by
/// `open`, before any of its own pending migrations is applied.
fn a_newer_schema_is_refused(db: TestDatabase) {
    let store = DbStore::connect(db.url(), test_options()).expect("connect");
    assert_eq!(
        store.unknown_migrations().expect("unknown"),
        Vec::<String>::new()
    );
    assert_eq!(store.run_migrations().expect("run"), MIGRATIONS);
    raw_execute(
        &db,
        "DELETE FROM __diesel_schema_migrations WHERE version = '20261130000001'",
    );
    raw_execute(
        &db,
        "INSERT INTO __diesel_schema_migrations (version) VALUES ('20991231000001')",
    );
    assert_eq!(
        store.unknown_migrations().expect("unknown"),
        ["20991231000001"]
    );
    let refused = |e: Error| match e {
        Error::NewerSchema(versions) => assert_eq!(versions, ["20991231000001"]),
        other => panic!("{other}"),
    };
    refused(store.run_migrations().expect_err("refused"));
    match db.open(test_options()) {
        Ok(_) => panic!("a newer schema was opened"),
        Err(e) => refused(e),
    }
    assert_eq!(
        store.pending_migrations().expect("pending"),
        ["2026-11-30-000001_encryption_key_fingerprint"],
        "nothing was applied"
    );
}

/// Server processes starting together all open the database; the
/// migrations run once.
fn concurrent_opens_migrate_once(db: TestDatabase) {
    let stores: Vec<DbStore> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| db.open(test_options())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("concurrent open"))
            .collect()
    });
    for store in &stores {
        assert_eq!(store.applied_migrations().expect("applied"), MIGRATIONS);
    }
}

fn backend_and_ping(db: TestDatabase) {
    let store = open(&db);
    assert_eq!(store.backend(), db.backend());
    store.ping().expect("ping");
}

fn pool_size_zero_is_refused(db: TestDatabase) {
    let options = StoreOptions {
        pool_size: Some(0),
        ..test_options()
    };
    assert!(matches!(db.open(options), Err(Error::Configuration(_))));
    let one = StoreOptions {
        pool_size: Some(1),
        ..test_options()
    };
    let store = db.open(one).expect("a pool of one");
    write(&store, |tx| Ok(add_org(tx, "x")));
    assert_eq!(read(&store, |tx| Ok(tx.all_orgs()?)).len(), 1);
}

#[cfg(debug_assertions)]
mod lock_rule {
    use super::*;

    /// Debug builds check the locking rule on a store opened as the server
    /// opens it: a factor change without the user's lock is a panic, which
    /// fails the transaction (nothing is written); with the lock it goes
    /// through. (Release builds do not check.)
    fn the_lock_rule_is_checked(db: TestDatabase) {
        use std::panic::{AssertUnwindSafe, catch_unwind};

        use mfa_core::{FailureKind, Store};

        let store = db.open(test_options()).expect("open");
        let user = write(&store, |tx| Ok(add_user(tx, "lock@example.com")));
        let unlocked = catch_unwind(AssertUnwindSafe(|| {
            store.write(|tx| Ok(tx.delete_recovery_codes(user.id)?))
        }));
        // SQLite runs the transaction on its writer thread and reports the
        // panic as an error; PostgreSQL runs it on this thread.
        assert!(matches!(unlocked, Err(_) | Ok(Err(_))), "{unlocked:?}");
        let locked = write(&store, |tx| {
            tx.lock_failure_state(user.id, FailureKind::Code)?;
            Ok(tx.delete_recovery_codes(user.id)?)
        });
        assert_eq!(locked, 0);
        let mut renamed = user.clone();
        renamed.first_name = "Renamed".into();
        write(&store, |tx| {
            tx.lock_users(&[user.id])?;
            Ok(tx.update_user(&renamed)?)
        });
    }

    backend_tests!(the_lock_rule_is_checked);
}

/// The move to counting password failures by address keeps the counters
/// of unknown emails (keyed by address already) and forgets the users'
/// password counters, which SQL cannot rehash; code counters stay.
fn password_failures_move_to_the_address_table(db: TestDatabase) {
    let store = open(&db);
    let user = write(&store, |tx| Ok(add_user(tx, "a@example.com")));
    // Back to the schema before the migration, with a row of each kind.
    undo_migration(&db, "2026-11-27-000001_password_failures_by_address");
    let id = user.id.0;
    raw_execute(
        &db,
        &format!(
            "INSERT INTO unknown_email_failures (email_key, failures, locked_until, last_failure_at) \
             VALUES ('key-of-an-address', 3, 700, 50); \
             INSERT INTO failure_counters (user_id, kind, failures, locked_until, last_failure_at) \
             VALUES ({id}, 'password', 4, 800, 60), ({id}, 'code', 2, NULL, 60);"
        ),
    );
    assert_eq!(
        store.run_migrations().expect("migrate"),
        ["2026-11-27-000001_password_failures_by_address"]
    );
    let counters = raw_texts(
        &db,
        "SELECT email_key || ' ' || CAST(failures AS TEXT) || ' ' || CAST(locked_until AS TEXT) \
         || ' ' || CAST(last_failure_at AS TEXT) AS value FROM password_failures",
    );
    assert_eq!(counters, ["key-of-an-address 3 700 50"]);
    let kept = raw_texts(
        &db,
        "SELECT kind || ' ' || CAST(failures AS TEXT) AS value FROM failure_counters",
    );
    assert_eq!(kept, ["code 2"]);
    assert_eq!(user_tables(&db), TABLES);
}

/// Addresses stored with an internationalised domain before domains were
/// kept in ASCII are rewritten at the next migration run (every start), each
/// with its audit event, and pending changes with them; one whose ASCII form
/// another account has is left as it was.
fn stored_domains_are_rewritten_in_ascii(db: TestDatabase) {
    let store = open(&db);
    let (org, zoe, twin, ascii, mael, rene) = write(&store, |tx| {
        let org = add_org(tx, "org");
        let zoe = add_user(tx, "zoë@bücher.example");
        tx.insert_membership(&Membership::new(zoe.id, org.id))?;
        let twin = add_user(tx, "ann@bücher.example");
        let ascii = add_user(tx, "ann@xn--bcher-kva.example");
        // Its local part decomposed, as a copy from a PDF may give it.
        let mael = add_user(tx, "mae\u{308}l@example.com");
        // Names decomposed: no search, which is composed, found them.
        let mut rene = add_user(tx, "rene@example.com");
        rene.first_name = "Rene\u{301}e".into();
        rene.last_name = "Nore\u{301}n".into();
        tx.update_user(&rene)?;
        let mut cafe = add_org(tx, "plain");
        cafe.name = "Cafe\u{301}".into();
        tx.update_org(&cafe)?;
        tx.insert_membership(&Membership::new(rene.id, org.id))?;
        tx.put_email_change(
            ascii.id,
            "ann.new@BÜCHER.example",
            "token-hash",
            Timestamp(10),
            Timestamp(i64::MAX),
        )?;
        Ok((org, zoe, twin, ascii, mael, rene))
    });
    // Zoë's and Maël's addresses and the pending change; not the twin,
    // which stays.
    assert_eq!(store.addresses_to_rewrite().expect("count"), 3);
    assert!(store.run_migrations().expect("migrate").is_empty());
    assert_eq!(store.addresses_to_rewrite().expect("count"), 0);

    let (zoe_now, twin_now, by_typed, change, (events, _), (found, _)) = read(&store, |tx| {
        assert_eq!(
            tx.user_by_email(&mfa_core::normalize_email("Ma\u{eb}l@example.com")?)?
                .map(|u| u.id),
            Some(mael.id),
            "the composed address finds the account stored decomposed"
        );
        Ok((
            tx.user(zoe.id)?.unwrap().email,
            tx.user(twin.id)?.unwrap().email,
            tx.user_by_email(&mfa_core::normalize_email("Zoë@bücher.example")?)?
                .map(|u| u.id),
            tx.email_change_by_token_hash("token-hash")?
                .unwrap()
                .new_email,
            tx.audit_events(&AuditFilter::default(), 0, 100)?,
            tx.search_org_users(org.id, Some("xn--bcher"), 0, 10)?,
        ))
    });
    assert_eq!(zoe_now, "zoë@xn--bcher-kva.example");
    assert_eq!(by_typed, Some(zoe.id));
    assert_eq!(twin_now, "ann@bücher.example", "its ASCII form is taken");
    assert_eq!(change, "ann.new@xn--bcher-kva.example");
    let mut rewritten: Vec<_> = events
        .iter()
        .filter(|e| e.action == mfa_core::AuditAction::UserUpdated)
        .map(|e| (e.target_user_id, e.org_id.is_some(), e.detail.as_str()))
        .collect();
    // By user: the users' are rewritten in no particular order.
    rewritten.sort();
    assert_eq!(
        rewritten,
        [
            (
                Some(zoe.id),
                true,
                "email written in its canonical form (domain in ASCII), \
                 on upgrade: z***@bücher.example is z***@xn--bcher-kva.example"
            ),
            (
                Some(ascii.id),
                false,
                "the new address of a pending email change written in its canonical form \
                 (domain in ASCII), on upgrade: a***@bücher.example is \
                 a***@xn--bcher-kva.example"
            ),
            (
                Some(mael.id),
                false,
                "email written in its canonical form (letters composed), \
                 on upgrade: m***@example.com is m***@example.com"
            ),
            (
                Some(rene.id),
                true,
                "names written composed (Unicode NFC), on upgrade"
            ),
        ]
    );
    // The search finds the address as it is now.
    assert_eq!(found.iter().map(|u| u.id).collect::<Vec<_>>(), [zoe.id]);
    // And the names, composed, by a composed search.
    let (names, (by_name, _), org_name) = read(&store, |tx| {
        let rene = tx.user(rene.id)?.unwrap();
        Ok((
            (rene.first_name, rene.last_name),
            tx.search_org_users(org.id, Some("nor\u{e9}n"), 0, 10)?,
            tx.all_orgs()?
                .into_iter()
                .map(|o| o.name)
                .find(|n| n.starts_with("Caf")),
        ))
    });
    assert_eq!(names, ("Ren\u{e9}e".to_string(), "Nor\u{e9}n".to_string()));
    assert_eq!(by_name.len(), 1);
    assert_eq!(org_name.as_deref(), Some("Caf\u{e9}"));
    let composed_events: Vec<_> = events
        .iter()
        .filter(|e| e.detail.contains("written composed (Unicode NFC)"))
        .map(|e| (e.action, e.detail.as_str()))
        .collect();
    assert_eq!(
        composed_events,
        [
            (
                mfa_core::AuditAction::UserUpdated,
                "names written composed (Unicode NFC), on upgrade"
            ),
            (
                mfa_core::AuditAction::OrgUpdated,
                "name written composed (Unicode NFC), on upgrade"
            ),
        ]
    );
    // Nothing left to do the next time.
    assert!(store.run_migrations().expect("again").is_empty());
    let (_, after) = read(&store, |tx| {
        Ok(tx.audit_events(&AuditFilter::default(), 0, 100)?)
    });
    assert_eq!(after, events.len() as u64);
}

backend_tests!(
    migrations_redo,
    stored_domains_are_rewritten_in_ascii,
    password_failures_move_to_the_address_table,
    connect_does_not_migrate,
    a_newer_schema_is_refused,
    concurrent_opens_migrate_once,
    backend_and_ping,
    pool_size_zero_is_refused,
);

/// A new database file, and the WAL and shared-memory files SQLite makes
/// beside it, are the owner's only, whatever the umask (0644 before).
#[cfg(unix)]
#[test]
fn a_new_sqlite_file_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("private.db");
    let store = DbStore::open(&format!("sqlite://{}", path.display()), test_options())
        .expect("open")
        .without_lock_rule();
    store.run_migrations().expect("migrate");
    write(&store, |tx| Ok(add_user(tx, "ada@example.com")));
    for file in ["private.db", "private.db-wal", "private.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
}

#[test]
fn sqlite_settings_are_in_force() {
    let db = TestDatabase::sqlite();
    let _store = open(&db);
    let mode = raw_texts(&db, "SELECT journal_mode AS value FROM pragma_journal_mode");
    assert_eq!(mode, vec!["wal"], "WAL is a property of the file");
}

/// A WAL that a write storm grew is emptied once the writes pause: the
/// server does not keep the storm's disk space for as long as it runs.
#[test]
fn sqlite_wal_shrinks_after_a_storm() {
    /// The size above which the store empties a WAL at a pause.
    const LIMIT: u64 = 16 * 1024 * 1024;
    let db = TestDatabase::sqlite();
    let store = open(&db);
    let wal = PathBuf::from(format!(
        "{}-wal",
        db.sqlite_path().expect("sqlite").display()
    ));
    let wal_size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);

    // An open read transaction keeps every frame after its snapshot in
    // the WAL: writes can only append, as under a storm.
    let (release, released) = mpsc::channel::<()>();
    let (reading, read_started) = mpsc::channel::<()>();
    let store = &store;
    std::thread::scope(|scope| {
        scope.spawn(move || {
            read(store, |tx| {
                tx.all_orgs()?;
                reading.send(()).expect("the test waits");
                let _ = released.recv();
                Ok(())
            })
        });
        read_started.recv().expect("the reader started");
        let mut written = 0;
        while wal_size() <= LIMIT + LIMIT / 2 {
            assert!(written < 20_000, "the WAL never grew: {} bytes", wal_size());
            write(store, |tx| {
                Ok(add_user(tx, &format!("storm{written}@example.com")))
            });
            written += 1;
        }
        drop(release);
    });

    // Then nothing is written: once the checkpointer has seen no write
    // for over half a second, the file is emptied, and what was written
    // is kept.
    let grown = wal_size();
    for _ in 0..1000 {
        if wal_size() <= LIMIT {
            let written = read(store, |tx| Ok(tx.count_users()?));
            assert!(written > 1_000, "{written} users");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "the WAL stayed at {} bytes (it grew to {grown})",
        wal_size()
    );
}

#[test]
fn sqlite_url_forms() {
    let db = TestDatabase::sqlite();
    let path = db.sqlite_path().expect("sqlite").display().to_string();
    for url in [
        format!("sqlite://{path}"),
        format!("sqlite:{path}"),
        path.clone(),
    ] {
        let store = DbStore::open(&url, test_options()).expect(&url);
        assert_eq!(store.backend(), Backend::Sqlite);
    }
}

#[test]
fn sqlite_open_failure_reports_sqlite_error() {
    let err = DbStore::open("sqlite:///nonexistent-dir/mfa/x.db", test_options())
        .expect_err("no such directory");
    match err {
        Error::Connect(text) => assert!(
            text.contains("unable to open")
                && text.contains("(the directory /nonexistent-dir/mfa does not exist)"),
            "{text}"
        ),
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[test]
fn unsupported_urls_are_refused() {
    for url in [
        "mysql://root:hunter2@localhost/mfa",
        ":memory:",
        "sqlite::memory:",
    ] {
        match DbStore::open(url, test_options()) {
            Err(Error::UnsupportedUrl(text)) => assert!(!text.contains("hunter2"), "{text}"),
            other => panic!("{url}: expected UnsupportedUrl, got {other:?}"),
        }
    }
}

#[test]
fn a_postgres_url_libpq_would_print_the_password_of_is_refused_before_connecting() {
    // libpq took the rest of such a password for the host, port or query
    // and printed it in its error ("could not translate host name
    // \"Secret@127.0.0.1\"", "invalid percent-encoded token").
    for url in [
        "postgres://mfa:Hunter2@Secret@127.0.0.1:1/mfa",
        "postgres://mfa:p@?ss-Secret@127.0.0.1:1/mfa",
        "postgres://mfa:Hun/Secret@127.0.0.1:1/mfa",
        "postgres://mfa:100%Secret@127.0.0.1:1/mfa",
    ] {
        match DbStore::open(url, test_options()) {
            Err(Error::UnsupportedUrl(text)) => {
                assert!(!text.contains("Secret"), "no password: {text}");
            }
            other => panic!("{url}: expected a refusal, got {:?}", other.err()),
        }
    }
    assert!(mfa_store::postgres_userinfo_is_unambiguous(
        "postgres://mfa:p%40ss%2F%25@127.0.0.1/mfa"
    ));
}

#[test]
fn postgres_connection_failure_reports_libpq_error() {
    // Port 1: nothing listens there; no server needed for this test.
    let err = DbStore::open("postgres://mfa:hunter2@127.0.0.1:1/mfa", test_options())
        .expect_err("nothing listens on port 1");
    match err {
        Error::Connect(text) => {
            assert!(text.contains("Connection refused"), "libpq's text: {text}");
            assert!(!text.contains("hunter2"), "no password: {text}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[test]
fn postgres_unknown_database_reports_postgres_error() {
    let Some(db) = TestDatabase::postgres() else {
        return;
    };
    let url = db.url().replace("/mfa_test_", "/mfa_missing_");
    match DbStore::open(&url, test_options()) {
        Err(Error::Connect(text)) => assert!(text.contains("does not exist"), "{text}"),
        other => panic!("expected a connect error, got {other:?}"),
    }
}

/// The two migration folders define the same tables and columns with
/// compatible types and nullability, so one `schema.rs` serves both.
#[test]
fn schema_is_the_same_on_both_backends() {
    let Some(pg) = TestDatabase::postgres() else {
        return;
    };
    let sqlite = TestDatabase::sqlite();
    let _pg_store = open(&pg);
    let _sqlite_store = open(&sqlite);

    let pg_columns = raw_texts(
        &pg,
        "SELECT table_name || '.' || column_name || ' ' || \
         CASE data_type WHEN 'bigint' THEN 'BigInt' WHEN 'integer' THEN 'Integer' \
           WHEN 'text' THEN 'Text' WHEN 'boolean' THEN 'Bool' WHEN 'bytea' THEN 'Binary' \
           ELSE data_type END || \
         CASE is_nullable WHEN 'YES' THEN ' NULL' ELSE ' NOT NULL' END AS value \
         FROM information_schema.columns WHERE table_schema = 'public' \
         AND table_name <> '__diesel_schema_migrations' \
         ORDER BY table_name, column_name",
    );
    let sqlite_columns = raw_texts(
        &sqlite,
        "SELECT m.name || '.' || c.name || ' ' || \
         CASE upper(c.type) WHEN 'BIGINT' THEN 'BigInt' \
           WHEN 'INTEGER' THEN CASE WHEN c.pk = 1 AND m.name IN \
             ('orgs', 'users', 'email_codes', 'recovery_codes', 'sessions', 'email_changes', \
              'audit_events', 'notices') THEN 'BigInt' ELSE 'Integer' END \
           WHEN 'TEXT' THEN 'Text' WHEN 'BOOLEAN' THEN 'Bool' WHEN 'BLOB' THEN 'Binary' \
           ELSE c.type END || \
         CASE WHEN c.\"notnull\" = 1 OR c.pk > 0 THEN ' NOT NULL' ELSE ' NULL' END AS value \
         FROM sqlite_master m, pragma_table_info(m.name) c \
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite%' \
         AND m.name <> '__diesel_schema_migrations' \
         ORDER BY m.name, c.name",
    );
    assert!(!pg_columns.is_empty());
    assert_eq!(sqlite_columns, pg_columns);
}

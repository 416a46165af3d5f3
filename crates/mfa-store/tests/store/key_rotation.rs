//! The encryption key and the database: the key recorded and checked at
//! every open; rotation in one transaction, with fresh nonces, safe to run
//! again, all or nothing.

use mfa_core::{FailureKind, FailureSubject, Store as _, Timestamp, UserId};
use mfa_store::test_support::TestDatabase;
use mfa_store::{
    DbStore, EncryptionKey, Error, KeyRotation, KeyVerification, LostKeyReplacement, StoreOptions,
};
use mfa_totp::{Secret, TotpParams};

use crate::support::*;

/// The notice a replacement of the key queues to each user it concerns.
const NOTICE: &str =
    r#"{"kind":"factor_reset","methods":["AUTHENTICATOR"],"by_admin":"the operator"}"#;

fn open_with(db: &TestDatabase, key: &EncryptionKey) -> DbStore {
    db.open(StoreOptions::new(key.clone()))
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.backend()))
}

/// A user with an authenticator: verified (last used step 7), or pending.
fn enroll(store: &DbStore, email: &str, secret: &Secret, verified: bool) -> UserId {
    write(store, |tx| {
        let user = add_user(tx, email);
        tx.put_pending_authenticator(
            user.id,
            secret,
            &TotpParams::default(),
            T0,
            Timestamp(T0.0 + 600),
        )?;
        if verified {
            tx.verify_authenticator(user.id, 7, T0)?;
        }
        Ok(user.id)
    })
}

fn hex_fn(db: &TestDatabase) -> &'static str {
    match db.backend() {
        mfa_store::Backend::Sqlite => "hex(secret_ciphertext)",
        mfa_store::Backend::Postgres => "encode(secret_ciphertext, 'hex')",
    }
}

fn stored(db: &TestDatabase) -> Vec<String> {
    raw_texts(
        db,
        &format!(
            "SELECT lower({}) AS value FROM authenticators ORDER BY user_id",
            hex_fn(db)
        ),
    )
}

fn rotation_reencrypts_every_secret(db: TestDatabase) {
    let old_key = EncryptionKey::generate();
    let new_key = EncryptionKey::generate();
    let store = open_with(&db, &old_key);
    let secrets: Vec<Secret> = (0..3).map(|_| Secret::generate()).collect();
    let users = [
        enroll(&store, "a@example.com", &secrets[0], true),
        enroll(&store, "b@example.com", &secrets[1], false),
        enroll(&store, "c@example.com", &secrets[2], true),
    ];
    let before_rows = read(&store, |tx| {
        users
            .iter()
            .map(|&u| Ok(tx.authenticator(u)?))
            .collect::<mfa_core::MfaResult<Vec<_>>>()
    });
    let before = stored(&db);
    assert_eq!(before.len(), 3);
    let password = FailureSubject::Email("a@example.com");
    let codes = FailureSubject::User(users[1], FailureKind::Code);
    write(&store, |tx| {
        for subject in [password, codes, FailureSubject::Email("nobody@example.com")] {
            tx.increment_failures(subject, T0, Timestamp(0))?;
        }
        Ok(())
    });

    let report = store.rotate_encryption_key(&new_key).expect("rotation");
    assert_eq!(
        report,
        KeyRotation {
            reencrypted: 3,
            already_new: 0,
            password_failures_forgotten: 2,
        }
    );
    // Password failures are forgotten, of known and unknown addresses;
    // code failures stay.
    let codes_after = read(&store, |tx| {
        Ok(tx.failure_state(users[1], FailureKind::Code)?)
    });
    assert_eq!(codes_after.failures, 1);
    assert!(raw_texts(&db, "SELECT email_key AS value FROM password_failures").is_empty());
    let after = stored(&db);
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(b, a, "every ciphertext changed");
        assert_eq!(a.len(), b.len());
    }

    // The old key opens nothing any more; the new one opens everything,
    // with every other column as it was.
    let check = store.check_encryption_key().expect("check");
    assert_eq!((check.total, check.readable), (3, 0));
    assert_eq!(check.unreadable_users, users.map(|u| u.0).to_vec());
    let rotated = open_with(&db, &new_key);
    let check = rotated.check_encryption_key().expect("check");
    assert!(check.all_readable(), "{check:?}");
    assert_eq!(check.total, 3);
    let after_rows = read(&rotated, |tx| {
        users
            .iter()
            .map(|&u| Ok(tx.authenticator(u)?))
            .collect::<mfa_core::MfaResult<Vec<_>>>()
    });
    assert_eq!(after_rows, before_rows);

    // Again, from a store that still has the old key: nothing to do.
    let again = store.rotate_encryption_key(&new_key).expect("second run");
    assert_eq!(
        again,
        KeyRotation {
            reencrypted: 0,
            already_new: 3,
            password_failures_forgotten: 0,
        }
    );
    assert_eq!(stored(&db), after, "a second run rewrites nothing");

    // A secret written with the old key after the rotation (a server that
    // was not restarted yet) is picked up by running the rotation again.
    let late = Secret::generate();
    let late_user = enroll(&store, "late@example.com", &late, true);
    assert_eq!(
        rotated
            .check_encryption_key()
            .expect("check")
            .unreadable_users,
        vec![late_user.0]
    );
    let third = store.rotate_encryption_key(&new_key).expect("third run");
    assert_eq!(
        third,
        KeyRotation {
            reencrypted: 1,
            already_new: 3,
            password_failures_forgotten: 0,
        }
    );
    assert!(rotated.check_encryption_key().unwrap().all_readable());
    assert_eq!(
        read(&rotated, |tx| Ok(tx.authenticator(late_user)?)).map(|a| a.secret),
        Some(late)
    );
}

fn rotation_is_all_or_nothing(db: TestDatabase) {
    let old_key = EncryptionKey::generate();
    let stranger_key = EncryptionKey::generate();
    let store = open_with(&db, &old_key);
    enroll(&store, "a@example.com", &Secret::generate(), true);
    enroll(&store, "b@example.com", &Secret::generate(), true);
    // The last row (highest user id) is under a key nobody has: the
    // rotation re-encrypts the first rows before it finds this one.
    let stranger = db
        .connect(StoreOptions::new(stranger_key))
        .expect("connect");
    let lost = enroll(&stranger, "lost@example.com", &Secret::generate(), true);
    let before = stored(&db);

    let err = store
        .rotate_encryption_key(&EncryptionKey::generate())
        .expect_err("a secret neither key opens");
    assert!(
        matches!(err, Error::KeyMismatch { user_id } if user_id == lost.0),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("nothing was changed"), "{text}");
    assert_eq!(stored(&db), before, "the transaction was rolled back");
    let check = store.check_encryption_key().unwrap();
    assert_eq!((check.total, check.readable), (3, 2));
}

fn recorded(db: &TestDatabase) -> Vec<String> {
    raw_texts(
        db,
        "SELECT fingerprint AS value FROM encryption_key_fingerprint",
    )
}

fn assert_not_the_databases(result: Result<DbStore, Error>, database: &EncryptionKey) {
    match result {
        Err(Error::NotTheDatabaseKey { database: fp, this }) => {
            assert_eq!(fp, database.fingerprint());
            assert_ne!(this, fp);
            let text = Error::NotTheDatabaseKey { database: fp, this }.to_string();
            assert!(text.contains(&database.fingerprint().to_string()), "{text}");
            assert!(!text.contains(database.fingerprint().as_str()), "{text}");
        }
        Err(other) => panic!("expected NotTheDatabaseKey, got {other:?}"),
        Ok(_) => panic!("a second key was let in"),
    }
}

fn the_first_key_is_the_databases(db: TestDatabase) {
    let first = EncryptionKey::generate();
    let store = open_with(&db, &first);
    assert_eq!(
        recorded(&db),
        vec![first.fingerprint().as_str().to_string()]
    );
    // Before any secret exists: another key is refused all the same.
    let second = EncryptionKey::generate();
    assert_not_the_databases(db.open(StoreOptions::new(second.clone())), &first);
    let connected = db.connect(StoreOptions::new(second)).expect("connect");
    assert!(
        matches!(
            connected.verify_encryption_key(),
            Err(Error::NotTheDatabaseKey { .. })
        ),
        "verify"
    );
    assert!(
        matches!(connected.ping(), Err(Error::NotTheDatabaseKey { .. })),
        "not ready with another key"
    );
    // The first key opens it again, and so does a process with it.
    drop(store);
    let again = open_with(&db, &first);
    assert_eq!(
        again.verify_encryption_key().unwrap(),
        KeyVerification::Recorded
    );
    assert_eq!(recorded(&db).len(), 1);
}

fn processes_starting_at_once_agree_on_one_key(db: TestDatabase) {
    let keys: Vec<EncryptionKey> = (0..4).map(|_| EncryptionKey::generate()).collect();
    let barrier = std::sync::Barrier::new(keys.len());
    let results: Vec<Result<DbStore, Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = keys
            .iter()
            .map(|key| {
                let (barrier, db) = (&barrier, &db);
                scope.spawn(move || {
                    barrier.wait();
                    db.open(StoreOptions::new(key.clone()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("an opening thread panicked"))
            .collect()
    });
    let opened: Vec<usize> = (0..keys.len()).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(
        opened.len(),
        1,
        "{:?}",
        results.iter().map(|r| r.as_ref().err()).collect::<Vec<_>>()
    );
    let winner = &keys[opened[0]];
    assert_eq!(
        recorded(&db),
        vec![winner.fingerprint().as_str().to_string()]
    );
    for (i, result) in results.into_iter().enumerate() {
        if i != opened[0] {
            assert_not_the_databases(result, winner);
        }
    }
}

fn a_database_from_before_keys_were_recorded(db: TestDatabase) {
    let key = EncryptionKey::generate();
    let store = open_with(&db, &key);
    enroll(&store, "a@example.com", &Secret::generate(), true);
    drop(store);
    // The schema of the previous version, with an enrollment a process
    // with another key began.
    undo_migration(&db, mfa_store::KEY_FINGERPRINT_MIGRATION);
    let stranger = EncryptionKey::generate();
    let stranger_store = db.connect(StoreOptions::new(stranger.clone())).unwrap();
    enroll(&stranger_store, "b@example.com", &Secret::generate(), false);
    drop(stranger_store);

    // A key that opens none of its secrets does not claim it, and is
    // refused before the migrations: the previous version still opens it.
    match db.open(StoreOptions::new(stranger)) {
        Err(Error::KeyOpensNoSecret { checked: 1, .. }) => {}
        other => panic!("expected KeyOpensNoSecret, got {:?}", other.err()),
    }
    let store = db.connect(StoreOptions::new(key.clone())).unwrap();
    assert_eq!(
        store.pending_migrations().unwrap(),
        [mfa_store::KEY_FINGERPRINT_MIGRATION],
        "nothing was migrated"
    );
    store.run_migrations().unwrap();
    // The key they were written with is not lost: not replaced.
    assert!(matches!(
        store.replace_lost_key(T0, NOTICE),
        Err(Error::KeyOpensSecrets {
            opened: 1,
            checked: 1
        })
    ));
    assert!(recorded(&db).is_empty());
    // ...the one they were written with does, and drops the enrollment
    // begun under the other key.
    match store.verify_encryption_key().unwrap() {
        KeyVerification::Claimed {
            check,
            pending_discarded,
        } => {
            assert!(check.all_readable() && check.total == 1, "{check:?}");
            assert_eq!(pending_discarded, 1, "the stranger's pending enrollment");
        }
        other => panic!("expected a claim, got {other:?}"),
    }
    assert_eq!(recorded(&db), vec![key.fingerprint().as_str().to_string()]);
    assert_eq!(stored(&db).len(), 1, "the verified one stays");
}

fn rotation_records_the_new_key(db: TestDatabase) {
    let old_key = EncryptionKey::generate();
    let new_key = EncryptionKey::generate();
    let store = open_with(&db, &old_key);
    enroll(&store, "a@example.com", &Secret::generate(), true);
    write(&store, |tx| {
        tx.increment_failures(FailureSubject::Email("a@example.com"), T0, Timestamp(0))?;
        Ok(())
    });
    store.ping().expect("ready with the database's key");

    let beside = open_with(&db, &old_key);
    store.rotate_encryption_key(&new_key).expect("rotation");
    assert_eq!(
        recorded(&db),
        vec![new_key.fingerprint().as_str().to_string()]
    );
    // A process left with the old key refuses everything once it looked
    // (every few seconds, and at each readiness check), and is not ready;
    // a new one with it is refused; the new key is let in.
    read(&beside, |tx| Ok(tx.all_orgs()?));
    assert!(!beside.check_key_still_recorded().unwrap());
    for refused in [
        beside.read(|tx| Ok(tx.all_orgs()?)).map(drop),
        beside
            .write(|tx| Ok(add_user(tx, "stale@example.com")))
            .map(drop),
    ] {
        match refused {
            Err(mfa_core::MfaError::Store(mfa_core::StoreError::Unavailable(why))) => {
                assert!(why.contains("restart the process"), "{why}")
            }
            other => panic!("a stale store answered {other:?}"),
        }
    }
    assert!(
        matches!(store.ping(), Err(Error::NotTheDatabaseKey { .. })),
        "{:?}",
        store.ping()
    );
    assert_not_the_databases(db.open(StoreOptions::new(old_key.clone())), &new_key);
    let rotated = open_with(&db, &new_key);
    rotated.ping().expect("ready with the new key");

    // Run again (the old key still configured): allowed, and the failures
    // counted under the new key meanwhile are kept.
    write(&rotated, |tx| {
        tx.increment_failures(FailureSubject::Email("a@example.com"), T0, Timestamp(0))?;
        Ok(())
    });
    let again = store.rotate_encryption_key(&new_key).expect("second run");
    assert_eq!(
        (again.already_new, again.password_failures_forgotten),
        (1, 0)
    );
    assert_eq!(
        raw_texts(&db, "SELECT email_key AS value FROM password_failures").len(),
        1
    );

    // A rotation from a key that is neither changes nothing.
    let stranger = db
        .connect(StoreOptions::new(EncryptionKey::generate()))
        .unwrap();
    let before = stored(&db);
    let err = stranger
        .rotate_encryption_key(&EncryptionKey::generate())
        .expect_err("from a key that is not the database's");
    assert!(matches!(err, Error::NotTheDatabaseKey { .. }), "{err:?}");
    assert_eq!(stored(&db), before);
    assert_eq!(
        recorded(&db),
        vec![new_key.fingerprint().as_str().to_string()]
    );
}

fn a_lost_key_is_replaced(db: TestDatabase) {
    let lost = EncryptionKey::generate();
    let store = open_with(&db, &lost);
    let member = enroll(&store, "member@example.com", &Secret::generate(), true);
    let loner = enroll(&store, "loner@example.com", &Secret::generate(), true);
    enroll(&store, "pending@example.com", &Secret::generate(), false);
    let (one, two) = write(&store, |tx| {
        let (one, two) = (add_org(tx, "one"), add_org(tx, "two"));
        for org in [&one, &two] {
            tx.insert_membership(&mfa_core::Membership::new(member, org.id))?;
        }
        tx.increment_failures(
            FailureSubject::Email("member@example.com"),
            T0,
            Timestamp(0),
        )?;
        Ok((one.id, two.id))
    });
    drop(store);

    let new_key = EncryptionKey::generate();
    let store = db.connect(StoreOptions::new(new_key.clone())).unwrap();
    let at = Timestamp(T0.0 + 60);
    let report = store.replace_lost_key(at, NOTICE).expect("replace");
    assert_eq!(
        report,
        LostKeyReplacement {
            authenticators_removed: vec![
                (member, "member@example.com".into()),
                (loner, "loner@example.com".into()),
            ],
            pending_removed: 1,
            email_codes_forgotten: 0,
            password_failures_forgotten: 1,
        }
    );
    assert!(stored(&db).is_empty());
    assert_eq!(
        recorded(&db),
        vec![new_key.fingerprint().as_str().to_string()]
    );
    assert_not_the_databases(db.open(StoreOptions::new(lost)), &new_key);
    let store = open_with(&db, &new_key);
    let (events, _) = read(&store, |tx| {
        Ok(tx.audit_events(
            &mfa_core::AuditFilter {
                action: Some(mfa_core::AuditAction::MfaReset),
                ..Default::default()
            },
            0,
            100,
        )?)
    });
    let mut seen: Vec<(Option<i64>, Option<i64>)> = events
        .iter()
        .map(|e| (e.org_id.map(|o| o.0), e.target_user_id.map(|u| u.0)))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (None, Some(loner.0)),
            (Some(one.0), Some(member.0)),
            (Some(two.0), Some(member.0)),
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.at == at && e.detail.contains("key was lost"))
    );
    // Each user whose authenticator was removed is told, in the same
    // transaction: two notices, claimed oldest first.
    let told: Vec<(String, String)> = (0..3)
        .filter_map(|_| {
            write(&store, |tx| {
                Ok(tx.claim_notice(
                    at,
                    Timestamp(at.0 + 300),
                    mfa_core::ports::NoticeOrder::Oldest,
                )?)
            })
        })
        .map(|n| (n.to, n.payload))
        .collect();
    assert_eq!(
        told,
        [
            ("member@example.com".to_string(), NOTICE.to_string()),
            ("loner@example.com".to_string(), NOTICE.to_string()),
        ]
    );
    // With the database's own key: nothing is lost, nothing changes.
    assert!(matches!(
        store.replace_lost_key(at, NOTICE),
        Err(Error::KeyNotLost)
    ));
}

fn rotation_of_an_empty_table(db: TestDatabase) {
    let store = open(&db);
    assert_eq!(
        store
            .rotate_encryption_key(&EncryptionKey::generate())
            .unwrap(),
        KeyRotation::default()
    );
    let check = store.check_encryption_key().unwrap();
    assert!(check.all_readable() && check.total == 0);
}

backend_tests!(
    the_first_key_is_the_databases,
    processes_starting_at_once_agree_on_one_key,
    a_database_from_before_keys_were_recorded,
    rotation_records_the_new_key,
    a_lost_key_is_replaced,
    rotation_reencrypts_every_secret,
    rotation_is_all_or_nothing,
    rotation_of_an_empty_table,
);

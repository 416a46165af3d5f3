//! Rotation of the encryption key: one transaction, fresh nonces, safe to
//! run again, all or nothing.

use mfa_core::{FailureKind, FailureSubject, Timestamp, UserId};
use mfa_store::test_support::TestDatabase;
use mfa_store::{DbStore, EncryptionKey, Error, KeyRotation, StoreOptions};
use mfa_totp::{Secret, TotpParams};

use crate::support::*;

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
    let stranger = open_with(&db, &stranger_key);
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
    rotation_reencrypts_every_secret,
    rotation_is_all_or_nothing,
    rotation_of_an_empty_table,
);

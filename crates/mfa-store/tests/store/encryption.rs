//! TOTP secrets are encrypted at rest and bound to their owner.

use mfa_core::{MfaError, Store, StoreError, Timestamp, UserId};
use mfa_store::EncryptionKey;
use mfa_store::test_support::TestDatabase;
use mfa_store::{DbStore, StoreOptions};
use mfa_totp::{Secret, TotpParams};

use crate::support::*;

fn enroll(store: &DbStore, email: &str, secret: &Secret) -> UserId {
    write(store, |tx| {
        let user = add_user(tx, email);
        tx.put_pending_authenticator(
            user.id,
            secret,
            &TotpParams::default(),
            T0,
            Timestamp(T0.0 + 600),
        )?;
        tx.verify_authenticator(user.id, 1, T0)?;
        Ok(user.id)
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn assert_secret_absent(path: &std::path::Path, secret: &Secret) {
    let base32 = secret.to_base32();
    let forms: [(&str, Vec<u8>); 3] = [
        ("raw bytes", secret.as_bytes().to_vec()),
        ("base32", base32.clone().into_bytes()),
        ("lower-case base32", base32.to_lowercase().into_bytes()),
    ];
    let mut scanned = 0;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        scanned += bytes.len();
        for (what, needle) in &forms {
            assert!(
                !contains(&bytes, needle),
                "the secret's {what} is in {}",
                file.display()
            );
        }
    }
    assert!(scanned > 0, "nothing scanned");
}

#[test]
fn secret_is_not_on_disk() {
    let db = TestDatabase::sqlite();
    let path = db.sqlite_path().expect("sqlite").to_path_buf();
    let store = open(&db);
    // A recognisable secret as well as a random one.
    let known = Secret::from_bytes(b"KNOWN-SECRET-0123456".to_vec());
    let random = Secret::generate();
    let alice = enroll(&store, "alice@example.com", &known);
    let bob = enroll(&store, "bob@example.com", &random);
    // the same secret for another user: a fresh nonce, another ciphertext
    let carol = enroll(&store, "carol@example.com", &known);
    assert_eq!(
        read(&store, |tx| Ok(tx.authenticator(alice)?)).map(|a| a.secret),
        Some(known.clone())
    );
    assert_eq!(
        read(&store, |tx| Ok(tx.authenticator(bob)?)).map(|a| a.secret),
        Some(random.clone())
    );

    let blobs = raw_texts(
        &db,
        "SELECT hex(secret_ciphertext) AS value FROM authenticators ORDER BY user_id",
    );
    assert_eq!(blobs.len(), 3);
    for blob in &blobs {
        assert_eq!(blob.len() / 2, 12 + 20 + 16, "nonce || ciphertext || tag");
    }
    assert_ne!(blobs[0], blobs[2], "alice's and carol's ciphertexts differ");
    let _ = carol;

    // With the WAL still holding the latest pages...
    assert!(std::path::PathBuf::from(format!("{}-wal", path.display())).exists());
    assert_secret_absent(&path, &known);
    assert_secret_absent(&path, &random);
    // ...and after the last connection closed and checkpointed into the file.
    drop(store);
    assert_secret_absent(&path, &known);
    assert_secret_absent(&path, &random);
}

fn ciphertext_is_bound_to_its_user(db: TestDatabase) {
    let store = open(&db);
    let secret = Secret::generate();
    let victim = enroll(&store, "victim@example.com", &secret);
    let attacker = enroll(&store, "attacker@example.com", &Secret::generate());
    // Copy the victim's ciphertext into the attacker's row.
    raw_execute(
        &db,
        &format!(
            "UPDATE authenticators SET secret_ciphertext = \
             (SELECT secret_ciphertext FROM authenticators WHERE user_id = {}) \
             WHERE user_id = {}",
            victim.0, attacker.0
        ),
    );
    let err = store
        .read(|tx| Ok(tx.authenticator(attacker)?))
        .expect_err("a moved ciphertext must not decrypt");
    match &err {
        MfaError::Store(StoreError::Backend(text)) => {
            assert!(text.contains("decrypt"), "{text}");
            assert!(!text.contains(&secret.to_base32()), "{text}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert_eq!(
        read(&store, |tx| Ok(tx.authenticator(victim)?)).map(|a| a.secret),
        Some(secret)
    );
}

fn wrong_key_does_not_decrypt(db: TestDatabase) {
    let secret = Secret::generate();
    let user = {
        let store = open(&db);
        enroll(&store, "a@example.com", &secret)
    };
    let other = StoreOptions::new(EncryptionKey::generate());
    let refused = db
        .open(other.clone())
        .expect_err("the database's key is another");
    assert!(
        matches!(refused, mfa_store::Error::NotTheDatabaseKey { .. }),
        "{refused:?}"
    );
    let other_key = db.connect(other).expect("connect with another key");
    let err = other_key
        .read(|tx| Ok(tx.authenticator(user)?))
        .expect_err("another key must not decrypt");
    let text = format!("{err} {err:?}");
    assert!(text.contains("decrypt"), "{text}");
    assert!(!text.contains(&secret.to_base32()), "{text}");
    // everything else still works with the other key
    assert!(read(&other_key, |tx| Ok(tx.user(user)?)).is_some());
}

fn options_and_store_debug_redact_the_key(db: TestDatabase) {
    let key = EncryptionKey::generate();
    let encoded = key.to_base64();
    let options = StoreOptions::new(key);
    let shown = format!("{options:?}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(!shown.contains(&encoded), "{shown}");
    let store = db.open(options).expect("open");
    let shown = format!("{store:?}");
    assert!(!shown.contains(&encoded), "{shown}");
    assert!(shown.contains(&format!("{:?}", db.backend())), "{shown}");
}

backend_tests!(
    ciphertext_is_bound_to_its_user,
    wrong_key_does_not_decrypt,
    options_and_store_debug_redact_the_key,
);

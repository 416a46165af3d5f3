//! Rotation of the encryption key: every stored authenticator secret
//! decrypted with the key in use and encrypted again with a new one, and
//! every password failure count forgotten, in one transaction; and a check
//! of which stored secrets the key in use opens.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::{DbStore, Inner};
use crate::Error;
use crate::crypto::{EncryptionKey, SecretCipher};
use crate::schema::{authenticators, password_failures};

/// Rows read per query while rotating or checking (all in one transaction).
const BATCH: i64 = 500;

/// What [`DbStore::rotate_encryption_key`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyRotation {
    /// Secrets decrypted with the old key and encrypted with the new one.
    pub reencrypted: u64,
    /// Secrets that were already under the new key (a rotation run again,
    /// or a secret written by a server that already had the new key) and
    /// were left as they are.
    pub already_new: u64,
    /// Password failure counters deleted. They are keyed by a hash of
    /// the address under the old key, which no login finds again.
    pub password_failures_forgotten: u64,
}

/// What [`DbStore::check_encryption_key`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyCheck {
    /// Stored authenticator secrets (pending and verified).
    pub total: u64,
    /// Those the store's key decrypts.
    pub readable: u64,
    /// Users whose secret it does not decrypt (at most 20 of them).
    pub unreadable_users: Vec<i64>,
}

impl KeyCheck {
    /// Whether the key opens every stored secret.
    pub fn all_readable(&self) -> bool {
        self.readable == self.total
    }
}

/// One batch of `(user_id, secret_ciphertext)` after `after`, by user id.
macro_rules! batch_after {
    ($conn:expr, $after:expr) => {
        authenticators::table
            .filter(authenticators::user_id.gt($after))
            .order(authenticators::user_id)
            .select((authenticators::user_id, authenticators::secret_ciphertext))
            .limit(BATCH)
            .load::<(i64, Vec<u8>)>($conn)
    };
}

/// The body of a rotation on an open transaction of either backend.
macro_rules! rotate_rows {
    ($conn:expr, $old:expr, $new:expr) => {{
        let mut report = KeyRotation::default();
        let mut after = i64::MIN;
        loop {
            let rows = batch_after!(&mut *$conn, after)?;
            let Some(&(last, _)) = rows.last() else {
                break;
            };
            after = last;
            for (user_id, stored) in rows {
                let user = mfa_core::UserId(user_id);
                match $old.decrypt(user, &stored) {
                    Ok(secret) => {
                        let fresh = $new.encrypt(user, &secret)?;
                        diesel::update(authenticators::table.find(user_id))
                            .set(authenticators::secret_ciphertext.eq(&fresh))
                            .execute(&mut *$conn)?;
                        report.reencrypted += 1;
                    }
                    Err(_) if $new.decrypt(user, &stored).is_ok() => report.already_new += 1,
                    Err(_) => return Err(Error::KeyMismatch { user_id }),
                }
            }
        }
        Ok::<_, Error>(report)
    }};
}

/// Delete every password failure count.
macro_rules! forget_password_failures {
    ($conn:expr) => {{ diesel::delete(password_failures::table).execute(&mut *$conn)? as u64 }};
}

macro_rules! check_rows {
    ($conn:expr, $cipher:expr, $at_most:expr, $verified_only:expr) => {{
        let mut check = KeyCheck::default();
        let mut after = i64::MIN;
        while check.total < $at_most {
            let rows = authenticators::table
                .filter(authenticators::user_id.gt(after))
                // `verified >= true`: the verified ones; `>= false`: all.
                .filter(authenticators::verified.ge($verified_only))
                .order(authenticators::user_id)
                .select((authenticators::user_id, authenticators::secret_ciphertext))
                .limit(BATCH)
                .load::<(i64, Vec<u8>)>(&mut *$conn)?;
            let Some(&(last, _)) = rows.last() else {
                break;
            };
            after = last;
            for (user_id, stored) in rows {
                if check.total == $at_most {
                    break;
                }
                check.total += 1;
                if $cipher.decrypt(mfa_core::UserId(user_id), &stored).is_ok() {
                    check.readable += 1;
                } else if check.unreadable_users.len() < 20 {
                    check.unreadable_users.push(user_id);
                }
            }
        }
        Ok::<_, Error>(check)
    }};
}

fn rotate_sqlite(
    conn: &mut SqliteConnection,
    old: &SecretCipher,
    new: &SecretCipher,
) -> Result<KeyRotation, Error> {
    let mut report = rotate_rows!(conn, old, new)?;
    report.password_failures_forgotten = forget_password_failures!(conn);
    Ok(report)
}

fn rotate_postgres(
    conn: &mut PgConnection,
    old: &SecretCipher,
    new: &SecretCipher,
) -> Result<KeyRotation, Error> {
    // Writers of other processes wait until the rotation commits (reads go
    // on): no secret can be written, under either key, between the read of
    // a batch and the commit.
    conn.batch_execute("LOCK TABLE authenticators IN EXCLUSIVE MODE")?;
    let mut report = rotate_rows!(conn, old, new)?;
    report.password_failures_forgotten = forget_password_failures!(conn);
    Ok(report)
}

impl DbStore {
    /// Re-encrypt every stored authenticator secret (pending and verified)
    /// with `new_key`, in one transaction: each is decrypted with this
    /// store's key and encrypted with the new one under a fresh nonce.
    /// Every password failure count is forgotten in the same transaction
    /// ([`KeyRotation::password_failures_forgotten`]).
    /// Secrets already under the new key are left as they are, so running
    /// the rotation again is harmless. A secret that neither key decrypts
    /// fails the whole rotation ([`Error::KeyMismatch`]) and nothing
    /// changes.
    ///
    /// While it runs, other writers of the table wait (SQLite's single
    /// writer; a table lock on PostgreSQL). Afterwards this store still
    /// holds the old key: open a new one with the new key. Servers that
    /// still run with the old key cannot read the rotated secrets: stop them
    /// first, or restart them with the new key at once.
    pub fn rotate_encryption_key(&self, new_key: &EncryptionKey) -> Result<KeyRotation, Error> {
        let new = new_key.cipher();
        let old = &self.cipher;
        match &self.inner {
            Inner::Sqlite(db) => db.with_writer(|conn| {
                conn.immediate_transaction(|conn| rotate_sqlite(conn, old, &new))
            }),
            Inner::Postgres(db) => {
                let mut conn = db.pool.get()?;
                conn.build_transaction()
                    .run(|conn| rotate_postgres(conn, old, &new))
            }
        }
    }

    /// Try this store's key on every stored authenticator secret, in one
    /// read transaction: whether the configuration's key is the one the
    /// data was written with (after a key rotation, for instance).
    pub fn check_encryption_key(&self) -> Result<KeyCheck, Error> {
        self.check_key_on(u64::MAX, false)
    }

    /// [`DbStore::check_encryption_key`] on the first `at_most` secrets
    /// of verified authenticators (by user id) only: enough to tell a key
    /// that opens none of them, cheaply enough for every start. A pending
    /// enrollment's secret protects nothing yet, and is not counted.
    pub fn check_encryption_key_on(&self, at_most: u64) -> Result<KeyCheck, Error> {
        self.check_key_on(at_most, true)
    }

    fn check_key_on(&self, at_most: u64, verified_only: bool) -> Result<KeyCheck, Error> {
        let cipher = &self.cipher;
        match &self.inner {
            Inner::Sqlite(db) => {
                let mut conn = db.read_pool.get()?;
                conn.transaction(|conn| check_rows!(conn, cipher, at_most, verified_only))
            }
            Inner::Postgres(db) => {
                let mut conn = db.pool.get()?;
                conn.build_transaction()
                    .repeatable_read()
                    .read_only()
                    .run(|conn| check_rows!(conn, cipher, at_most, verified_only))
            }
        }
    }
}

//! The encryption key and the database: the key's fingerprint recorded
//! in the database and checked at every open; rotation (every stored
//! authenticator secret decrypted with the key in use and encrypted again
//! with a new one, every password failure count forgotten, and the new
//! key's fingerprint recorded, in one transaction); and a check of which
//! stored secrets the key in use opens.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use mfa_core::Timestamp;

use super::{DbStore, Inner};
use crate::Error;
use crate::crypto::{EncryptionKey, KeyFingerprint, SecretCipher};
use crate::schema::{
    authenticators, email_codes, encryption_key_fingerprint, memberships, password_failures, users,
};
use crate::tx::Tx;

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

/// Stored secrets tried when a database that recorded no key yet is
/// opened: enough to tell a key that opens none of them, cheaply.
const CLAIM_CHECK_SAMPLE: u64 = 64;

/// What [`DbStore::verify_encryption_key`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerification {
    /// The database recorded this key.
    Recorded,
    /// The database recorded no key: it does now, this one, which opened
    /// at least one of the stored secrets tried (or there were none).
    Claimed {
        /// What the key opened of the secrets of verified authenticators.
        check: KeyCheck,
        /// Pending enrollments it does not open, removed (they protect
        /// nothing; their users start again): begun under another key.
        pending_discarded: u64,
    },
}

/// The migration that made the table of the recorded key: until it is
/// applied, no key can be recorded (nor read back).
pub const KEY_FINGERPRINT_MIGRATION: &str = "2026-11-30-000001_encryption_key_fingerprint";
/// The migration that made the table of the authenticators.
const AUTHENTICATORS_MIGRATION: &str = "2026-11-22-000002_factors";

/// The fingerprint the database recorded, if any.
macro_rules! recorded_fingerprint {
    ($conn:expr) => {
        encryption_key_fingerprint::table
            .select(encryption_key_fingerprint::fingerprint)
            .first::<String>(&mut *$conn)
            .optional()
            .map(|hex| hex.map(KeyFingerprint::from_stored))
    };
}

/// What [`DbStore::replace_lost_key`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LostKeyReplacement {
    /// The users whose verified authenticator was removed, with their
    /// emails, by user id: they enroll again (and may be told so).
    pub authenticators_removed: Vec<(mfa_core::UserId, String)>,
    /// Pending enrollments removed (their users start again).
    pub pending_removed: u64,
    /// Email codes forgotten (kept under a digest made with the key).
    pub email_codes_forgotten: u64,
    /// Password failure counters forgotten (keyed under the key).
    pub password_failures_forgotten: u64,
}

/// What the audit trail says of a removal by [`DbStore::replace_lost_key`].
const LOST_KEY_DETAIL: &str =
    "authenticator removed: the encryption key was lost, by the operator (replace-lost-key)";

/// The body of [`DbStore::replace_lost_key`] on an open transaction.
macro_rules! replace_lost_key {
    ($conn:expr, $cipher:expr, $at:expr, $notice_payload:expr) => {{
        let mut report = LostKeyReplacement::default();
        let removed: Vec<(i64, String)> = authenticators::table
            .inner_join(users::table)
            .filter(authenticators::verified.eq(true))
            .order(authenticators::user_id)
            .select((authenticators::user_id, users::email))
            .load(&mut *$conn)?;
        let all = diesel::delete(authenticators::table).execute(&mut *$conn)? as u64;
        report.pending_removed = all - removed.len() as u64;
        report.email_codes_forgotten = email_codes::table
            .filter(email_codes::consumed_at.is_null())
            .filter(email_codes::expires_at.gt($at.0))
            .count()
            .get_result::<i64>(&mut *$conn)? as u64;
        diesel::delete(email_codes::table).execute(&mut *$conn)?;
        report.password_failures_forgotten = forget_password_failures!($conn);
        let ids: Vec<i64> = removed.iter().map(|(id, _)| *id).collect();
        let mut orgs_of: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
        for chunk in ids.chunks(1000) {
            for (user, org) in memberships::table
                .filter(memberships::user_id.eq_any(chunk))
                .select((memberships::user_id, memberships::org_id))
                .load::<(i64, i64)>(&mut *$conn)?
            {
                orgs_of.entry(user).or_default().push(org);
            }
        }
        // As the operator's reset: one event in each org of the user (an
        // org's admins see it), or one without an org.
        let events: Vec<mfa_core::NewAuditEvent> = ids
            .iter()
            .flat_map(|user| {
                let orgs: Vec<Option<i64>> = match orgs_of.get(user) {
                    Some(orgs) => orgs.iter().copied().map(Some).collect(),
                    None => vec![None],
                };
                orgs.into_iter().map(|org| mfa_core::NewAuditEvent {
                    at: $at,
                    org_id: org.map(mfa_core::OrgId),
                    actor_user_id: None,
                    target_user_id: Some(mfa_core::UserId(*user)),
                    action: mfa_core::AuditAction::MfaReset,
                    detail: LOST_KEY_DETAIL.to_string(),
                    client: None,
                })
            })
            .collect();
        // Each user is told, as by any reset: written with the change, sent
        // by whichever process delivers notices first.
        let notices: Vec<mfa_core::ports::NewNotice<'_>> = removed
            .iter()
            .map(|(_, email)| mfa_core::ports::NewNotice {
                to: email,
                payload: $notice_payload,
                queued_at: $at,
            })
            .collect();
        {
            use mfa_core::ports::StoreTx as _;
            let mut tx = Tx::new(&mut *$conn, $cipher, false);
            tx.insert_audits(&events)
                .map_err(|e| Error::Corrupt(format!("writing the audit events: {e}")))?;
            tx.queue_notices(&notices)
                .map_err(|e| Error::Corrupt(format!("writing the notices: {e}")))?;
        }
        record_fingerprint!($conn, $cipher.fingerprint)?;
        report.authenticators_removed = removed
            .into_iter()
            .map(|(id, email)| (mfa_core::UserId(id), email))
            .collect();
        Ok::<_, Error>(report)
    }};
}

/// The fingerprint an SQLite database recorded, if any.
pub(super) fn recorded_on_sqlite(
    conn: &mut SqliteConnection,
) -> Result<Option<KeyFingerprint>, Error> {
    Ok(recorded_fingerprint!(conn)?)
}

/// The fingerprint a PostgreSQL database recorded, if any.
pub(super) fn recorded_on_postgres(
    conn: &mut PgConnection,
) -> Result<Option<KeyFingerprint>, Error> {
    Ok(recorded_fingerprint!(conn)?)
}

/// Record `$fingerprint` unless one is recorded already (another process
/// may have claimed the database meanwhile: the caller reads it again).
macro_rules! claim_fingerprint {
    ($conn:expr, $fingerprint:expr) => {
        diesel::insert_into(encryption_key_fingerprint::table)
            .values((
                encryption_key_fingerprint::id.eq(1),
                encryption_key_fingerprint::fingerprint.eq($fingerprint.as_str()),
            ))
            .on_conflict_do_nothing()
            .execute(&mut *$conn)
    };
}

/// Record `$fingerprint`, replacing the one recorded.
macro_rules! record_fingerprint {
    ($conn:expr, $fingerprint:expr) => {
        diesel::insert_into(encryption_key_fingerprint::table)
            .values((
                encryption_key_fingerprint::id.eq(1),
                encryption_key_fingerprint::fingerprint.eq($fingerprint.as_str()),
            ))
            .on_conflict(encryption_key_fingerprint::id)
            .do_update()
            .set(encryption_key_fingerprint::fingerprint.eq($fingerprint.as_str()))
            .execute(&mut *$conn)
    };
}

/// The body of [`DbStore::verify_encryption_key`] on an open transaction.
macro_rules! verify_key {
    ($conn:expr, $cipher:expr) => {{
        let this = &$cipher.fingerprint;
        match recorded_fingerprint!($conn)? {
            Some(recorded) if recorded == *this => Ok(KeyVerification::Recorded),
            Some(database) => Err(Error::NotTheDatabaseKey {
                database,
                this: this.clone(),
            }),
            None => {
                let check = check_rows!($conn, $cipher, CLAIM_CHECK_SAMPLE, true)?;
                if check.total > 0 && check.readable == 0 {
                    return Err(Error::KeyOpensNoSecret {
                        this: this.clone(),
                        checked: check.total,
                    });
                }
                claim_fingerprint!($conn, this)?;
                match recorded_fingerprint!($conn)? {
                    Some(recorded) if recorded == *this => {
                        let pending: Vec<(i64, Vec<u8>)> = authenticators::table
                            .filter(authenticators::verified.eq(false))
                            .select((authenticators::user_id, authenticators::secret_ciphertext))
                            .load(&mut *$conn)?;
                        let unreadable: Vec<i64> = pending
                            .into_iter()
                            .filter(|(user, stored)| {
                                $cipher.decrypt(mfa_core::UserId(*user), stored).is_err()
                            })
                            .map(|(user, _)| user)
                            .collect();
                        let mut pending_discarded = 0;
                        for chunk in unreadable.chunks(1000) {
                            pending_discarded += diesel::delete(
                                authenticators::table
                                    .filter(authenticators::user_id.eq_any(chunk))
                                    .filter(authenticators::verified.eq(false)),
                            )
                            .execute(&mut *$conn)?
                                as u64;
                        }
                        Ok(KeyVerification::Claimed {
                            check,
                            pending_discarded,
                        })
                    }
                    Some(database) => Err(Error::NotTheDatabaseKey {
                        database,
                        this: this.clone(),
                    }),
                    None => Err(Error::Corrupt(
                        "the key's fingerprint was not recorded".into(),
                    )),
                }
            }
        }
    }};
}

/// The rotation's own check of the recorded key: the old key's, the new
/// one's (a rotation run again), or none (a database from before keys
/// were recorded) may be rotated; another is refused.
fn rotation_may_run(
    recorded: Option<KeyFingerprint>,
    old: &SecretCipher,
    new: &SecretCipher,
) -> Result<bool, Error> {
    match recorded {
        Some(recorded) if recorded == new.fingerprint => Ok(true),
        Some(recorded) if recorded != old.fingerprint => Err(Error::NotTheDatabaseKey {
            database: recorded,
            this: old.fingerprint.clone(),
        }),
        _ => Ok(false),
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
    let again = rotation_may_run(recorded_fingerprint!(conn)?, old, new)?;
    let mut report = rotate_rows!(conn, old, new)?;
    if !again {
        report.password_failures_forgotten = forget_password_failures!(conn);
        record_fingerprint!(conn, new.fingerprint)?;
    }
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
    // And no process records a key meanwhile.
    conn.batch_execute(
        "LOCK TABLE authenticators IN EXCLUSIVE MODE; \
         LOCK TABLE encryption_key_fingerprint IN EXCLUSIVE MODE",
    )?;
    let again = rotation_may_run(recorded_fingerprint!(conn)?, old, new)?;
    let mut report = rotate_rows!(conn, old, new)?;
    if !again {
        report.password_failures_forgotten = forget_password_failures!(conn);
        record_fingerprint!(conn, new.fingerprint)?;
    }
    Ok(report)
}

impl DbStore {
    /// Check that this store's key is the database's, before anything is
    /// written under it; [`DbStore::open`] does. The database records the
    /// fingerprint of its key ([`EncryptionKey::fingerprint`]): another is
    /// refused ([`Error::NotTheDatabaseKey`]). A database that recorded
    /// none (new, or written before keys were recorded) records this one,
    /// unless it holds secrets of verified authenticators and the key opens
    /// none of the first 64 ([`Error::KeyOpensNoSecret`]); processes
    /// opening it at once agree on one key, the first to record it.
    ///
    /// So processes with different keys cannot share a database: each
    /// would find the others' secrets undecryptable, and count an
    /// address's password failures on a counter of its own.
    pub fn verify_encryption_key(&self) -> Result<KeyVerification, Error> {
        let cipher = &self.cipher;
        match &self.inner {
            Inner::Sqlite(db) => {
                // A read first: every open but the first needs no turn of
                // the single writer.
                let recorded = recorded_on_sqlite(&mut *db.read_pool.get()?)?;
                if recorded.as_ref() == Some(&cipher.fingerprint) {
                    return Ok(KeyVerification::Recorded);
                }
                db.with_writer(|conn| conn.immediate_transaction(|conn| verify_key!(conn, cipher)))
            }
            Inner::Postgres(db) => {
                let mut conn = db.pool.get()?;
                conn.build_transaction()
                    .run(|conn| verify_key!(conn, cipher))
            }
        }
    }

    /// The key the database recorded is lost: make this store's key the
    /// database's, and remove what the lost one protected, in one
    /// transaction. Every stored authenticator (its secret cannot be
    /// decrypted any more: the users enroll again), every email code and
    /// every password failure count (kept under digests made with the
    /// key) are deleted; each removed verified authenticator is audited
    /// `mfa_reset` in each org of its user, and `notice` (a
    /// [`mfa_core::MailKind`]'s [`mfa_core::MailKind::notice_payload`]) is
    /// queued to the user; the new key is recorded. Email
    /// factors, recovery codes, passwords and sessions do not depend on the
    /// key and stay. On PostgreSQL, writers of those tables wait meanwhile,
    /// and processes that still have the old key are not ready afterwards
    /// ([`DbStore::ping`]).
    ///
    /// Refused when the database records this key already, or when it opens
    /// a verified authenticator's secret (a pending enrollment protects
    /// nothing, and does not count): nothing is lost
    /// ([`Error::KeyNotLost`], [`Error::KeyOpensSecrets`]). For a key that
    /// is not lost, [`DbStore::rotate_encryption_key`] keeps every secret.
    pub fn replace_lost_key(
        &self,
        at: Timestamp,
        notice: &str,
    ) -> Result<LostKeyReplacement, Error> {
        let cipher = &self.cipher;
        let refuse_same = |recorded: Option<KeyFingerprint>| match recorded {
            Some(recorded) if recorded == cipher.fingerprint => Err(Error::KeyNotLost),
            _ => Ok(()),
        };
        let refuse_opening = |check: KeyCheck| match check.readable {
            0 => Ok(()),
            opened => Err(Error::KeyOpensSecrets {
                opened,
                checked: check.total,
            }),
        };
        match &self.inner {
            Inner::Sqlite(db) => db.with_writer(|conn| {
                conn.immediate_transaction(|conn| {
                    refuse_same(recorded_fingerprint!(conn)?)?;
                    refuse_opening(check_rows!(conn, cipher, CLAIM_CHECK_SAMPLE, true)?)?;
                    replace_lost_key!(conn, cipher, at, notice)
                })
            }),
            Inner::Postgres(db) => {
                let mut conn = db.pool.get()?;
                conn.build_transaction().run(|conn| {
                    conn.batch_execute(
                        "LOCK TABLE authenticators, email_codes, password_failures, \
                         encryption_key_fingerprint IN EXCLUSIVE MODE",
                    )?;
                    refuse_same(recorded_fingerprint!(conn)?)?;
                    refuse_opening(check_rows!(conn, cipher, CLAIM_CHECK_SAMPLE, true)?)?;
                    replace_lost_key!(conn, cipher, at, notice)
                })
            }
        }
    }

    /// Refuse a key that is not the database's before migrating it, so
    /// that a refused start leaves a database the previous version still
    /// opens: the key recorded if the schema has its table, else the
    /// secrets of the first 64 verified authenticators. Records nothing;
    /// [`DbStore::verify_encryption_key`] after the migrations does.
    pub fn check_key_before_migrating(&self) -> Result<(), Error> {
        let status = self.migration_status()?;
        let applied = |name: &str| status.iter().any(|m| m.applied && m.name == name);
        if applied(KEY_FINGERPRINT_MIGRATION) {
            if let Some(database) = self.recorded_key_fingerprint()?
                && database != self.cipher.fingerprint
            {
                return Err(Error::NotTheDatabaseKey {
                    database,
                    this: self.cipher.fingerprint.clone(),
                });
            }
            return Ok(());
        }
        if applied(AUTHENTICATORS_MIGRATION) {
            let check = self.check_encryption_key_on(CLAIM_CHECK_SAMPLE)?;
            if check.total > 0 && check.readable == 0 {
                return Err(Error::KeyOpensNoSecret {
                    this: self.cipher.fingerprint.clone(),
                    checked: check.total,
                });
            }
        }
        Ok(())
    }

    /// Read which key the database records now, and whether it is still
    /// this store's. From a `false` on, every operation of this store (as
    /// [`mfa_core::Store`]) fails as unavailable, until a check finds its
    /// key recorded again: after a rotation or a replacement of the key, a
    /// process that still has the old one must not write secrets the
    /// others cannot read, nor count password failures apart.
    /// [`DbStore::ping`] checks it too.
    pub fn check_key_still_recorded(&self) -> Result<bool, Error> {
        let recorded = match &self.inner {
            Inner::Sqlite(db) => recorded_on_sqlite(&mut *db.read_pool.get()?)?,
            Inner::Postgres(db) => recorded_on_postgres(&mut **db.pool.get()?)?,
        };
        Ok(self.note_recorded_key(recorded).is_ok())
    }

    /// Mark this store stale, or current again, by the key the database
    /// records; the refusal when stale.
    pub(super) fn note_recorded_key(&self, recorded: Option<KeyFingerprint>) -> Result<(), Error> {
        let stale = recorded
            .as_ref()
            .is_some_and(|database| *database != self.cipher.fingerprint);
        self.key_stale
            .store(stale, std::sync::atomic::Ordering::Relaxed);
        match recorded {
            Some(database) if stale => Err(Error::NotTheDatabaseKey {
                database,
                this: self.cipher.fingerprint.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The fingerprint of this store's key.
    pub fn fingerprint(&self) -> &KeyFingerprint {
        &self.cipher.fingerprint
    }

    /// The fingerprint of the key the database recorded, if any: for a
    /// report that must not record one. Reads only.
    pub fn recorded_key_fingerprint(&self) -> Result<Option<KeyFingerprint>, Error> {
        match &self.inner {
            Inner::Sqlite(db) => recorded_on_sqlite(&mut *db.read_pool.get()?),
            Inner::Postgres(db) => recorded_on_postgres(&mut **db.pool.get()?),
        }
    }

    /// Re-encrypt every stored authenticator secret (pending and verified)
    /// with `new_key`, in one transaction: each is decrypted with this
    /// store's key and encrypted with the new one under a fresh nonce.
    /// Every password failure count is forgotten in the same transaction
    /// ([`KeyRotation::password_failures_forgotten`]), and the new key's
    /// fingerprint recorded (see [`DbStore::verify_encryption_key`]).
    /// Secrets already under the new key are left as they are, so running
    /// the rotation again is harmless (with the new key recorded already,
    /// password failures are kept: they are counted under it). A secret
    /// that neither key decrypts fails the whole rotation
    /// ([`Error::KeyMismatch`]), and so does a database that recorded
    /// neither key ([`Error::NotTheDatabaseKey`]); nothing changes.
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

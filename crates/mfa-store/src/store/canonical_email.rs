//! Addresses stored before their canonical form was what it is now.
//!
//! [`mfa_core::normalize_email`] writes a domain in ASCII after IDNA's
//! mapping, and the local part composed (NFC), so that one mailbox is one
//! account. Addresses stored before (`zoë@bücher.example`, or `zoe` with
//! a combining diaeresis) would no longer be found by the address their
//! users type, which is now `zoë@xn--bcher-kva.example`. Each migration run
//! (every start) rewrites them, with the new address of every pending email
//! change, in the migration's transaction: idempotent, and cheap once done
//! (only rows with a character outside printable ASCII are read, and only
//! those that need a rewrite are locked). Names stored decomposed are
//! composed by the same pass: no search, which is composed, found them.

use mfa_core::ports::{Clock, StoreTx, SystemClock};
use mfa_core::{AuditAction, NewAuditEvent, OrgId, UserId, composed, mask_email, normalize_email};

use crate::Error;

/// SQLite: a character outside printable ASCII (`GLOB` compares code points).
pub(super) const SQLITE_NON_ASCII: &str = "GLOB '*[^ -~]*'";
/// PostgreSQL: the same as a regular expression.
pub(super) const POSTGRES_NON_ASCII: &str = "~ '[^ -~]'";

/// What [`canonicalize!`] did.
#[derive(Debug, Default)]
pub(super) struct Canonicalized {
    /// Users whose address was rewritten.
    pub rewritten: Vec<UserId>,
    /// Users whose address was left: another account has its canonical
    /// form, or it is no longer a valid address. They cannot log in by
    /// address until an operator deletes or renames one of the two.
    pub left: Vec<(UserId, String)>,
    /// Pending email changes whose new address was rewritten.
    pub pending_changes: usize,
    /// Users whose first or last name was written composed (NFC), and
    /// orgs whose name was.
    pub names_composed: usize,
}

impl Canonicalized {
    /// Say what was done, for the operator: once, at the first start of
    /// this version on a database with such addresses.
    pub(super) fn log(&self) {
        if !self.rewritten.is_empty() || self.pending_changes > 0 {
            tracing::info!(
                users = self.rewritten.len(),
                pending_changes = self.pending_changes,
                "email addresses written in their canonical form (domain in ASCII, letters composed)"
            );
        }
        if self.names_composed > 0 {
            tracing::info!(
                users_and_orgs = self.names_composed,
                "names written composed (Unicode NFC), as they are searched"
            );
        }
        for (user, why) in &self.left {
            tracing::warn!(
                user = user.0,
                "email address left as stored: {why}; this user cannot log in by address"
            );
        }
    }
}

/// The rows that may hold an address or a name stored before: users (id,
/// email, first and last name, by id) and pending email changes (id,
/// user, new address) with a character outside printable ASCII, on
/// `$conn` (a `&mut` connection) whose columns are tested with
/// `$non_ascii` (one of the constants above). Only read: what needs a
/// rewrite is picked out before anything is locked.
macro_rules! candidates {
    ($conn:expr, $non_ascii:expr) => {
        (|| {
            use diesel::sql_types::Bool;
            use $crate::schema::{email_changes, users};
            // Names too: stored decomposed, no search (always composed)
            // would find them.
            let users: Vec<(i64, String, String, String)> = users::table
                .filter(diesel::dsl::sql::<Bool>(&format!(
                    "(email {0} OR first_name {0} OR last_name {0})",
                    $non_ascii
                )))
                .order(users::id)
                .select((users::id, users::email, users::first_name, users::last_name))
                .load(&mut *$conn)?;
            let pending: Vec<(i64, i64, String)> = email_changes::table
                .filter(email_changes::consumed_at.is_null())
                .filter(diesel::dsl::sql::<Bool>(&format!(
                    "new_email {}",
                    $non_ascii
                )))
                .order(email_changes::id)
                .select((
                    email_changes::id,
                    email_changes::user_id,
                    email_changes::new_email,
                ))
                .load(&mut *$conn)?;
            Ok::<_, $crate::Error>((users, pending))
        })()
    };
}
pub(super) use candidates;

/// `email` as this version stores it, when that differs; `None` when it
/// is already so, or no longer parses (a pending change to such an
/// address fails at its confirmation, as one taken meanwhile does).
pub(super) fn canonical_if_changed(email: &str) -> Option<String> {
    normalize_email(email)
        .ok()
        .filter(|canonical| canonical != email)
}

/// Whether a user row read by [`candidates!`] needs a rewrite: its
/// address, or a name not composed. Most non-ASCII rows ("Zoë Müller")
/// need none, and are not locked.
pub(super) fn needs_rewrite((_, email, first, last): &(i64, String, String, String)) -> bool {
    canonical_if_changed(email).is_some() || composed(first) != *first || composed(last) != *last
}

/// Rewrite the addresses and names on an open write transaction of
/// `$conn` (see [`candidates!`]). Rows are locked as every admin's write
/// locks them, orgs before users, users by id, a user before their
/// pending email change, so that a start beside running servers waits for
/// their writes rather than deadlocking with them.
macro_rules! canonicalize {
    ($conn:expr, $cipher:expr, $non_ascii:expr) => {
        (|| {
            use $crate::schema::{email_changes, orgs};
            use $crate::store::canonical_email::{
                candidates, canonical_if_changed, compose_org_names, detail, needs_rewrite, rewrite,
            };
            let (users, pending) = candidates!($conn, $non_ascii)?;
            let orgs: Vec<i64> = orgs::table
                .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
                    "name {}",
                    $non_ascii
                )))
                .order(orgs::id)
                .select((orgs::id, orgs::name))
                .load::<(i64, String)>(&mut *$conn)?
                .into_iter()
                .filter(|(_, name)| mfa_core::composed(name) != *name)
                .map(|(id, _)| id)
                .collect();
            let users: Vec<i64> = users
                .iter()
                .filter(|row| needs_rewrite(row))
                .map(|(id, ..)| *id)
                .collect();
            let mut tx = $crate::tx::Tx::new(&mut *$conn, $cipher, false);
            let names_of_orgs = compose_org_names(&mut tx, orgs)?;
            let mut done = rewrite(&mut tx, users)?;
            done.names_composed += names_of_orgs;
            drop(tx);
            // Rewritten here, audited as the users' rewrites are.
            let mut rewritten = Vec::new();
            for (id, user, new_email) in pending {
                if let Some(canonical) = canonical_if_changed(&new_email) {
                    diesel::update(email_changes::table.find(id))
                        .set(email_changes::new_email.eq(&canonical))
                        .execute(&mut *$conn)?;
                    let what = "the new address of a pending email change";
                    rewritten.push((mfa_core::UserId(user), detail(what, &new_email, &canonical)));
                }
            }
            let mut tx = $crate::tx::Tx::new(&mut *$conn, $cipher, false);
            done.pending_changes = rewritten.len();
            $crate::store::canonical_email::audit_rewrites(&mut tx, rewritten)?;
            Ok::<_, $crate::Error>(done)
        })()
    };
}
pub(super) use canonicalize;

/// Rewrite the addresses of `users` that are not canonical and compose
/// their names, and audit it: in every org of the user (or once without
/// an org).
pub(super) fn rewrite(tx: &mut dyn StoreTx, users: Vec<i64>) -> Result<Canonicalized, Error> {
    let corrupt = |e| port_failure("rewriting addresses", e);
    let mut done = Canonicalized::default();
    for id in users.into_iter().map(UserId) {
        let Some(mut user) = tx.user_for_update(id).map_err(corrupt)? else {
            continue;
        };
        let mut details = Vec::new();
        match normalize_email(&user.email) {
            Ok(canonical) if canonical == user.email => {}
            Ok(canonical) => {
                if tx.user_by_email(&canonical).map_err(corrupt)?.is_some() {
                    let why = format!("another account has {}", mask_email(&canonical));
                    done.left.push((id, why));
                } else {
                    details.push(detail("email", &user.email, &canonical));
                    user.email = canonical;
                    done.rewritten.push(id);
                }
            }
            Err(_) => done.left.push((id, "it is not a valid address".into())),
        }
        let names = (composed(&user.first_name), composed(&user.last_name));
        if names != (user.first_name.clone(), user.last_name.clone()) {
            (user.first_name, user.last_name) = names;
            details.push("names written composed (Unicode NFC), on upgrade".into());
            done.names_composed += 1;
        }
        if details.is_empty() {
            continue;
        }
        tx.update_user(&user).map_err(corrupt)?;
        audit_rewrite(tx, id, &details.join("; "))?;
    }
    Ok(done)
}

/// Audit the pending email changes rewritten (user, detail), as
/// [`rewrite`] audits a user's.
pub(super) fn audit_rewrites(
    tx: &mut dyn StoreTx,
    rewritten: Vec<(UserId, String)>,
) -> Result<(), Error> {
    for (user, detail) in rewritten {
        audit_rewrite(tx, user, &detail)?;
    }
    Ok(())
}

/// A port call's failure during the rewrite: a database gone or busy stays
/// a retryable unavailability (a start that meets it fails, and the next
/// runs the rewrite again); anything else is data the rewrite cannot take.
fn port_failure(doing: &str, e: mfa_core::StoreError) -> Error {
    match e {
        mfa_core::StoreError::Unavailable(why) => Error::Unavailable(why),
        other => Error::Corrupt(format!("{doing}: {other}")),
    }
}

/// Write the names of `orgs` composed (NFC) where they are not, each
/// audited `org_updated` in its org; how many were.
pub(super) fn compose_org_names(tx: &mut dyn StoreTx, orgs: Vec<i64>) -> Result<usize, Error> {
    let corrupt = |e| port_failure("composing org names", e);
    let mut composed_names = 0;
    for id in orgs.into_iter().map(OrgId) {
        let Some(mut org) = tx.org_for_update(id).map_err(corrupt)? else {
            continue;
        };
        let name = composed(&org.name);
        if name == org.name {
            continue;
        }
        org.name = name;
        tx.update_org(&org).map_err(corrupt)?;
        tx.insert_audit(&NewAuditEvent {
            at: SystemClock.now(),
            org_id: Some(id),
            actor_user_id: None,
            target_user_id: None,
            action: AuditAction::OrgUpdated,
            detail: "name written composed (Unicode NFC), on upgrade".into(),
            client: None,
        })
        .map_err(corrupt)?;
        composed_names += 1;
    }
    Ok(composed_names)
}

/// What the audit trail says of an address rewritten, masked: what of it
/// changed (the masked forms of a composition look alike).
pub(super) fn detail(what: &str, before: &str, after: &str) -> String {
    let parts = |email: &str| {
        email
            .rsplit_once('@')
            .map(|(l, d)| (l.to_lowercase(), d.to_string()))
    };
    let (old, new) = (parts(before), parts(after));
    let changed =
        |part: fn(&(String, String)) -> &String| old.as_ref().map(part) != new.as_ref().map(part);
    let how = match (changed(|p| &p.1), changed(|p| &p.0)) {
        (true, true) => "domain in ASCII, letters composed",
        (true, false) => "domain in ASCII",
        (false, true) => "letters composed",
        (false, false) => "lower-cased",
    };
    format!(
        "{what} written in its canonical form ({how}), on upgrade: {} is {}",
        mask_email(before),
        mask_email(after)
    )
}

/// One event in every org of `user` (its admins see it), or one without
/// an org.
fn audit_rewrite(tx: &mut dyn StoreTx, user: UserId, detail: &str) -> Result<(), Error> {
    let corrupt = |e| port_failure("auditing a rewrite", e);
    // The store's open has no clock port: an upgrade's rewrite is stamped
    // with the system's time, when it runs.
    let at = SystemClock.now();
    let orgs: Vec<_> = tx
        .memberships_of_user(user)
        .map_err(corrupt)?
        .into_iter()
        .map(|m| Some(m.org_id))
        .collect();
    let events: Vec<NewAuditEvent> = if orgs.is_empty() { vec![None] } else { orgs }
        .into_iter()
        .map(|org_id| NewAuditEvent {
            at,
            org_id,
            actor_user_id: None,
            target_user_id: Some(user),
            action: AuditAction::UserUpdated,
            detail: detail.to_string(),
            client: None,
        })
        .collect();
    tx.insert_audits(&events).map_err(corrupt)
}

/// How many stored addresses [`canonicalize!`] would rewrite on `$conn`
/// (see [`candidates!`]): users' addresses whose ASCII form no other
/// account has, and the new addresses of pending email changes.
macro_rules! waiting {
    ($conn:expr, $non_ascii:expr) => {
        (|| {
            use $crate::schema::users;
            use $crate::store::canonical_email::{candidates, canonical_if_changed};
            let (users, pending) = candidates!($conn, $non_ascii)?;
            let mut waiting = 0u64;
            for canonical in users
                .iter()
                .filter_map(|(_, e, ..)| canonical_if_changed(e))
            {
                let taken: i64 = users::table
                    .filter(users::email.eq(&canonical))
                    .count()
                    .get_result(&mut *$conn)?;
                waiting += u64::from(taken == 0);
            }
            let changes = pending
                .iter()
                .filter(|(_, _, e)| canonical_if_changed(e).is_some());
            waiting += changes.count() as u64;
            Ok::<u64, $crate::Error>(waiting)
        })()
    };
}
pub(super) use waiting;

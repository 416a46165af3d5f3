//! The ports: what the domain needs from the outside world. Adapters in other
//! crates implement them (mfa-store for [`Store`], mfa-email for [`Mailer`]);
//! this crate ships simple implementations for tests and embedding.

use std::sync::atomic::{AtomicI64, Ordering};

use mfa_totp::{Secret, TotpParams};

use crate::error::{MailError, MfaResult, StoreError};
use crate::model::*;

/// Result of a storage call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Transactional storage. Every domain operation runs in one transaction:
/// what the closure does is committed when it returns `Ok`, rolled back
/// when it returns `Err`. Audit events are written through the same
/// transaction as the change they record.
///
/// Implementations must make `write` transactions serialisable with respect
/// to the conditional updates of [`StoreTx`] (SQLite: `BEGIN IMMEDIATE`;
/// PostgreSQL: the row locks the conditional updates take).
pub trait Store: Send + Sync + 'static {
    /// Run `f` in a read-only transaction (a consistent snapshot).
    fn read<T>(&self, f: impl FnOnce(&mut dyn StoreTx) -> MfaResult<T>) -> MfaResult<T>;
    /// Run `f`, which reads with a single statement, without the
    /// transaction around it where the backend needs none (one statement
    /// sees one snapshot by itself): two round trips fewer on PostgreSQL
    /// for the token lookup of every request. `f` may run again, on another
    /// connection, if the first turned out to be lost.
    fn read_statement<T>(&self, f: impl Fn(&mut dyn StoreTx) -> MfaResult<T>) -> MfaResult<T> {
        self.read(f)
    }
    /// Run `f` in a read-write transaction. `f` may run on another thread
    /// (SQLite's writer thread) while the caller waits for it.
    ///
    /// `f` may run more than once: a store whose database breaks a
    /// deadlock or a serialization conflict by rolling one transaction
    /// back whole (PostgreSQL) runs `f` again in a new transaction, a few
    /// times, rather than fail a request that did nothing wrong. So `f`
    /// must do nothing outside the transaction that a second run would
    /// not simply repeat or overwrite.
    fn write<T: Send>(
        &self,
        f: impl FnMut(&mut dyn StoreTx) -> MfaResult<T> + Send,
    ) -> MfaResult<T>;
    /// The fast path of an authenticator code check, for a store whose
    /// `BEGIN` and `COMMIT` are round trips of their own (PostgreSQL): no
    /// transaction, two statements.
    ///
    /// 1. Read the user's code-failure state and authenticator in one
    ///    statement, without a lock; for [`CodeOwner::Token`], the
    ///    token's session with its user and membership in the same
    ///    statement (no session: stop). Unless there are no failures and
    ///    no lockout, and the authenticator is verified, stop.
    /// 2. Call `check` on them (with the session for a token): the domain
    ///    checks the session and the code and returns what a success
    ///    writes, or `None`.
    /// 3. Apply the success in one statement that locks the user, the
    ///    authenticator and the session (the user first, as every
    ///    transaction of the locking rule does) and writes only if what
    ///    `check` saw still holds: the same authenticator (its secret),
    ///    the same last used step, still no failure and no lockout, the
    ///    session (the owner's, the user's) still live. It records the
    ///    success's step as used, rotates the session as its `rotation`
    ///    says and inserts its `audit` event, all or nothing.
    ///
    /// Whether the success was applied. When it was not (the store offers
    /// no fast path, `check` declined, or the state changed), nothing was
    /// written and the caller runs the check under the user's lock, which
    /// decides every refusal. The default offers no fast path: it calls
    /// nothing and returns `false`.
    fn apply_authenticator_success(
        &self,
        owner: CodeOwner<'_>,
        check: impl FnOnce(
            Option<&SessionMember>,
            &FailureState,
            &Authenticator,
        ) -> Option<AuthenticatorSuccess>,
    ) -> MfaResult<bool> {
        let _ = (owner, check);
        Ok(false)
    }
}

/// The operations available inside a transaction. Methods named `consume_*`,
/// `accept_*` and `verify_*` are conditional updates that return whether
/// they changed a row: of two racing callers exactly one sees `true`.
///
/// The locking rule: a transaction that changes a user's factors
/// (`put_pending_authenticator`, `verify_authenticator`,
/// `accept_totp_step`, `delete_authenticator`, `set_email_factor_verified`,
/// `delete_email_factor`, `replace_recovery_codes`, `delete_recovery_codes`
/// and the `delete_*_of` methods) or writes a user back whole
/// (`update_user`) first takes the user's lock in the same transaction
/// (`lock_users`, `user_for_update`, `lock_failure_state`,
/// `lock_failure_state_and_authenticator`); one that writes an org or a
/// membership back reads it with `org_for_update` or
/// `membership_for_update`. A row the transaction created is its own. So
/// it decides on what the transactions before it committed, on a store
/// whose writers run side by side. mfa-store's debug builds panic at a
/// change that breaks the rule. The one write of factors outside a
/// transaction, [`Store::apply_authenticator_success`], keeps the rule in
/// one statement: it locks the user first and writes only what was
/// decided on rows that have not changed since.
pub trait StoreTx {
    // ---- orgs
    /// Create an org, not enforced, no grace period.
    fn insert_org(&mut self, name: &str, now: Timestamp) -> StoreResult<Org>;
    /// Load an org.
    fn org(&mut self, id: OrgId) -> StoreResult<Option<Org>>;
    /// [`StoreTx::org`], held until the transaction ends, for a
    /// transaction that writes it back whole ([`StoreTx::update_org`]): a
    /// change another transaction committed meanwhile is read first, never
    /// overwritten with what was read before it. The default only reads: a
    /// store whose write transactions are serial needs no lock.
    fn org_for_update(&mut self, id: OrgId) -> StoreResult<Option<Org>> {
        self.org(id)
    }
    /// [`StoreTx::org`], kept from being deleted until the transaction
    /// ends, for a transaction that goes on to insert a row referencing it
    /// (a session): a deletion committed after the read would fail that
    /// insert. Other writers of the org are not held up. The default only
    /// reads: a store whose write transactions are serial needs no lock.
    fn org_for_reference(&mut self, id: OrgId) -> StoreResult<Option<Org>> {
        self.org(id)
    }
    /// Every org, by id.
    fn all_orgs(&mut self) -> StoreResult<Vec<Org>>;
    /// Write name, enforcement, enforcement time and grace period of `org`.
    /// `NotFound` if it does not exist.
    fn update_org(&mut self, org: &Org) -> StoreResult<()>;
    /// Delete an org and its memberships; whether it existed.
    fn delete_org(&mut self, id: OrgId) -> StoreResult<bool>;

    // ---- users
    /// Create a user; `UniqueViolation` for a taken email.
    fn insert_user(&mut self, user: &NewUser) -> StoreResult<User>;
    /// Load a user.
    fn user(&mut self, id: UserId) -> StoreResult<Option<User>>;
    /// [`StoreTx::user`] under the user's lock ([`StoreTx::lock_users`]),
    /// for a transaction that decides on the row or writes it back whole:
    /// the row as the last transaction before this one committed it. The
    /// default locks, then reads; a store may do both in one statement.
    fn user_for_update(&mut self, id: UserId) -> StoreResult<Option<User>> {
        self.lock_users(&[id])?;
        self.user(id)
    }
    /// Load a user by normalised email.
    fn user_by_email(&mut self, email: &str) -> StoreResult<Option<User>>;
    /// The user with this normalised email and their memberships by org
    /// id, as [`StoreTx::user_by_email`] and [`StoreTx::memberships_of_user`]
    /// read them: what a login reads first. The default calls the two; a
    /// store over a network reads both in one statement, which also gives
    /// a known email and an unknown one the same round trips.
    fn user_with_memberships_by_email(
        &mut self,
        email: &str,
    ) -> StoreResult<Option<(User, Vec<Membership>)>> {
        let Some(user) = self.user_by_email(email)? else {
            return Ok(None);
        };
        let memberships = self.memberships_of_user(user.id)?;
        Ok(Some((user, memberships)))
    }
    /// Load the users with these ids (missing ones left out), by id.
    fn users_by_ids(&mut self, ids: &[UserId]) -> StoreResult<Vec<User>>;
    /// Write every field of `user` but id and created_at. `UniqueViolation`
    /// for a taken email, `NotFound` if it does not exist.
    fn update_user(&mut self, user: &User) -> StoreResult<()>;
    /// Set `last_login_at` alone.
    fn set_last_login(&mut self, id: UserId, at: Timestamp) -> StoreResult<()>;
    /// Set the password hash to `new` if it is still `old`; whether it was
    /// set. A password hashed again with newer parameters at login must
    /// not undo a password changed meanwhile.
    fn replace_password_hash(&mut self, id: UserId, old: &str, new: &str) -> StoreResult<bool>;
    /// Delete a user with everything that belongs to them; whether it existed.
    fn delete_user(&mut self, id: UserId) -> StoreResult<bool>;
    /// Number of users in the deployment.
    fn count_users(&mut self) -> StoreResult<u64>;
    /// Members of `org` (active or not) whose first name, last name, email
    /// or full name ("first last") contains `search` case-insensitively
    /// (all when `None`), by id, with the total count of matches.
    fn search_org_users(
        &mut self,
        org: OrgId,
        search: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<User>, u64)>;

    // ---- memberships
    /// Create a membership; `UniqueViolation` if the user is already a member.
    fn insert_membership(&mut self, m: &Membership) -> StoreResult<()>;
    /// Load a membership.
    fn membership(&mut self, user: UserId, org: OrgId) -> StoreResult<Option<Membership>>;
    /// [`StoreTx::membership`], held until the transaction ends like
    /// [`StoreTx::org_for_update`], for [`StoreTx::update_membership`].
    fn membership_for_update(
        &mut self,
        user: UserId,
        org: OrgId,
    ) -> StoreResult<Option<Membership>> {
        self.membership(user, org)
    }
    /// Every membership of a user, by org id.
    fn memberships_of_user(&mut self, user: UserId) -> StoreResult<Vec<Membership>>;
    /// Write every flag of `m`; `NotFound` if it does not exist.
    fn update_membership(&mut self, m: &Membership) -> StoreResult<()>;
    /// Delete a membership; whether it existed.
    fn delete_membership(&mut self, user: UserId, org: OrgId) -> StoreResult<bool>;
    /// Active admins of an org, by id.
    fn org_admins(&mut self, org: OrgId) -> StoreResult<Vec<User>>;
    /// Counts of an org's members for the licence report.
    fn membership_counts(&mut self, org: OrgId) -> StoreResult<MembershipCounts>;

    // ---- authenticator
    /// The user's authenticator, pending or verified.
    fn authenticator(&mut self, user: UserId) -> StoreResult<Option<Authenticator>>;
    /// The state of the user's authenticator without its secret (nothing
    /// to decrypt): what status pages and the login decision need.
    fn authenticator_state(&mut self, user: UserId) -> StoreResult<Option<AuthenticatorState>>;
    /// Store a pending authenticator, replacing a pending one. Must not
    /// replace a verified one: returns `false` (and changes nothing) if the
    /// user has a verified authenticator.
    fn put_pending_authenticator(
        &mut self,
        user: UserId,
        secret: &Secret,
        params: &TotpParams,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<bool>;
    /// Turn the pending authenticator into a verified one, recording `step`
    /// as used: `UPDATE … WHERE user = ? AND pending`. Whether it changed.
    fn verify_authenticator(
        &mut self,
        user: UserId,
        step: u64,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Record `step` as used if it is above the last used one:
    /// `UPDATE … SET last_step = ? WHERE user = ? AND verified AND
    /// (last_step IS NULL OR last_step < ?)`. Whether it changed.
    fn accept_totp_step(&mut self, user: UserId, step: u64) -> StoreResult<bool>;
    /// Remove the authenticator; whether there was one.
    fn delete_authenticator(&mut self, user: UserId) -> StoreResult<bool>;

    // ---- email factor and codes
    /// When the user's email factor was verified, if it is.
    fn email_factor_verified_at(&mut self, user: UserId) -> StoreResult<Option<Timestamp>>;
    /// Mark the email factor verified (idempotent).
    fn set_email_factor_verified(&mut self, user: UserId, at: Timestamp) -> StoreResult<()>;
    /// Remove the email factor; whether there was one.
    fn delete_email_factor(&mut self, user: UserId) -> StoreResult<bool>;
    /// The user's newest email code (live or not).
    fn latest_email_code(&mut self, user: UserId) -> StoreResult<Option<EmailCode>>;
    /// What is stored of an email code's salted hash, and compared: a store
    /// that holds a key keys it (an HMAC under a key of its own), so that
    /// reading the database is not enough to find a live six-digit code by
    /// trying all of them. A store without a key returns it unchanged.
    fn email_code_digest(&self, code_hash: &str) -> String;
    /// Store a new code, deleting every earlier code of the user (a new code
    /// voids the previous).
    fn replace_email_code(&mut self, code: &NewEmailCode) -> StoreResult<EmailCode>;
    /// `UPDATE … SET consumed_at = ? WHERE id = ? AND consumed_at IS NULL`.
    fn consume_email_code(&mut self, id: i64, now: Timestamp) -> StoreResult<bool>;
    /// Delete one code (used when its mail could not be sent).
    fn delete_email_code(&mut self, id: i64) -> StoreResult<()>;
    /// Void every email code of the user: none can be used any more, and
    /// the newest still says when it was sent, so that the wait between
    /// two sends outlasts a reset (an admin's resets in a loop had mailed
    /// a user four codes in a second). A voided code reads as consumed,
    /// with an empty `code_hash` ([`crate::EmailCode::is_voided`]).
    fn void_email_codes(&mut self, user: UserId) -> StoreResult<()>;

    // ---- recovery codes
    /// The user's recovery codes, used or not, by id.
    fn recovery_codes(&mut self, user: UserId) -> StoreResult<Vec<RecoveryCode>>;
    /// Replace the user's set with codes of these argon2 hashes.
    fn replace_recovery_codes(
        &mut self,
        user: UserId,
        hashes: &[String],
        now: Timestamp,
    ) -> StoreResult<()>;
    /// How many of the user's recovery codes are unused.
    fn unused_recovery_codes(&mut self, user: UserId) -> StoreResult<u64>;
    /// [`StoreTx::authenticator_state`], [`StoreTx::email_factor_verified_at`]
    /// and [`StoreTx::unused_recovery_codes`] at once. The default calls
    /// the three; a store that reads them in one statement lets a caller
    /// that needs nothing else use [`Store::read_statement`] (no
    /// transaction around it).
    fn factor_states(&mut self, user: UserId) -> StoreResult<FactorStates> {
        Ok(FactorStates {
            authenticator: self.authenticator_state(user)?,
            email_verified_at: self.email_factor_verified_at(user)?,
            recovery_codes_left: self.unused_recovery_codes(user)?,
        })
    }
    /// [`StoreTx::factor_states`] of each of `users` (a user not found
    /// reads as no factors), in their order. The default asks for each;
    /// a store that reaches its database over a network reads them in a
    /// few statements (a reset of 1,000 users took 1,000 round trips).
    fn factor_states_of(&mut self, users: &[UserId]) -> StoreResult<Vec<FactorStates>> {
        users.iter().map(|&user| self.factor_states(user)).collect()
    }
    /// `UPDATE … SET used_at = ? WHERE id = ? AND used_at IS NULL`.
    fn consume_recovery_code(&mut self, id: i64, now: Timestamp) -> StoreResult<bool>;
    /// Delete the user's recovery codes; how many there were.
    fn delete_recovery_codes(&mut self, user: UserId) -> StoreResult<u64>;

    // ---- sessions
    /// Create a session.
    fn insert_session(&mut self, s: &NewSession) -> StoreResult<Session>;
    /// Load a session by token hash (revoked and expired ones too).
    fn session_by_token_hash(&mut self, token_hash: &str) -> StoreResult<Option<Session>>;
    /// A session by token hash with what resolving a bearer token needs of
    /// its user and its membership in the session's org, in one query
    /// (every authenticated request does this).
    fn session_member(&mut self, token_hash: &str) -> StoreResult<Option<SessionMember>>;
    /// [`StoreTx::session_member`] by the session's id: what an admin's
    /// write reads again in its own transaction, so that rights taken away
    /// (a demotion, a logout, a deleted user) since the caller was
    /// resolved are not used.
    fn session_member_by_id(&mut self, id: SessionId) -> StoreResult<Option<SessionMember>>;
    /// [`StoreTx::session_member`] and the [`StoreTx::factor_states`] of
    /// the session's user at once, for a read of the caller's own factors
    /// that resolves its token in the same trip. The default calls the
    /// two; PostgreSQL reads both in one statement (one snapshot, one
    /// round trip). The factor states are read whether or not the session
    /// is live: the caller decides that, and discards them if not.
    fn session_member_and_factor_states(
        &mut self,
        token_hash: &str,
    ) -> StoreResult<Option<(SessionMember, FactorStates)>> {
        session_member_then_factor_states(self, token_hash)
    }
    /// Give a live session a new token, level and end, in place:
    /// `UPDATE … WHERE id = ? AND revoked_at IS NULL AND expires_at > now`.
    /// The old token stops resolving at once, as on revocation. A rotation
    /// completes MFA, so the session is marked [`Session::mfa_passed`].
    /// Whether the session was live.
    fn rotate_session(&mut self, id: SessionId, rotation: &SessionRotation) -> StoreResult<bool>;
    /// Mark a session [`Session::mfa_passed`] without a new token: a full
    /// session that enrolled the user's first factor.
    fn note_session_mfa_passed(&mut self, id: SessionId) -> StoreResult<()>;
    /// Set `last_seen_at`.
    fn touch_session(&mut self, id: SessionId, now: Timestamp) -> StoreResult<()>;
    /// Revoke one session if live; whether it was.
    fn revoke_session(&mut self, id: SessionId, now: Timestamp) -> StoreResult<bool>;
    /// Revoke every live session of a user, optionally only those of one org,
    /// optionally sparing one; how many.
    fn revoke_user_sessions(
        &mut self,
        user: UserId,
        only_org: Option<OrgId>,
        except: Option<SessionId>,
        now: Timestamp,
    ) -> StoreResult<u64>;
    /// Delete up to `purge.limit` sessions that [`SessionPurge::covers`],
    /// oldest first; how many. Sessions whose rows another transaction
    /// holds are skipped, not waited for: they are deleted by a later
    /// purge. A deleted session's token resolves to nothing, as an ended
    /// one's did.
    fn delete_ended_sessions(&mut self, purge: &SessionPurge) -> StoreResult<u64>;

    // ---- failure counters
    /// Current failure state of one kind.
    fn failure_state(&mut self, user: UserId, kind: FailureKind) -> StoreResult<FailureState>;
    /// Current password failure state of logins with `email`
    /// (normalised; [`FailureSubject::Email`]).
    fn password_failure_state(&mut self, email: &str) -> StoreResult<FailureState>;
    /// Read the failure state and hold it against concurrent writers of the
    /// same counter until the transaction ends, so that a check made inside
    /// the transaction and the count it leads to are one step for racing
    /// attempts (SQLite: write transactions are serial already; PostgreSQL:
    /// a row lock, creating the row if needed).
    fn lock_failure_state(&mut self, user: UserId, kind: FailureKind) -> StoreResult<FailureState>;
    /// [`StoreTx::lock_failure_state`], then the user's authenticator as
    /// read after the lock: what an authenticator code check reads. The
    /// default calls the two methods; a store over a network overrides it
    /// to read both in one round trip.
    fn lock_failure_state_and_authenticator(
        &mut self,
        user: UserId,
        kind: FailureKind,
    ) -> StoreResult<(FailureState, Option<Authenticator>)> {
        let state = self.lock_failure_state(user, kind)?;
        Ok((state, self.authenticator(user)?))
    }
    /// Add one failure of `subject` at `now` atomically (`failures =
    /// failures + 1`, creating the counter if needed) and return the state
    /// after it, in one statement. A counter whose last failure came
    /// before `forget_before` starts again at one: earlier failures are
    /// forgotten after a quiet spell ([`crate::LockoutPolicy::forget_after_secs`]).
    fn increment_failures(
        &mut self,
        subject: FailureSubject<'_>,
        now: Timestamp,
        forget_before: Timestamp,
    ) -> StoreResult<FailureState>;
    /// Set the lockout end.
    fn set_locked_until(
        &mut self,
        subject: FailureSubject<'_>,
        until: Option<Timestamp>,
    ) -> StoreResult<()>;
    /// Delete up to `limit` password counters of addresses
    /// ([`FailureSubject::Email`]) whose last failure came before
    /// `before`, oldest first; how many. Counters another transaction
    /// holds are skipped, not waited for.
    fn delete_forgotten_password_failures(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> StoreResult<u64>;
    /// Back to zero failures, no lockout.
    fn reset_failures(&mut self, subject: FailureSubject<'_>) -> StoreResult<()>;

    // ---- email change
    /// Store a pending email change, replacing an earlier pending one.
    fn put_email_change(
        &mut self,
        user: UserId,
        new_email: &str,
        token_hash: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<EmailChange>;
    /// The user's pending (unconsumed) email change.
    fn pending_email_change(&mut self, user: UserId) -> StoreResult<Option<EmailChange>>;
    /// An email change by token hash.
    fn email_change_by_token_hash(&mut self, token_hash: &str) -> StoreResult<Option<EmailChange>>;
    /// `UPDATE … SET consumed_at = ? WHERE id = ? AND consumed_at IS NULL`.
    fn consume_email_change(&mut self, id: i64, now: Timestamp) -> StoreResult<bool>;
    /// Delete the user's pending change under this token hash (one whose
    /// link could not be mailed); whether there was one.
    fn withdraw_email_change(&mut self, user: UserId, token_hash: &str) -> StoreResult<bool>;
    /// Delete up to `limit` email changes confirmed before `before`,
    /// oldest first; how many. Pending ones stay.
    fn delete_confirmed_email_changes(&mut self, before: Timestamp, limit: u32)
    -> StoreResult<u64>;

    // ---- audit
    /// Append an event.
    fn insert_audit(&mut self, e: &NewAuditEvent) -> StoreResult<()>;
    /// Events matching `filter`, newest first, with the total count.
    fn audit_events(
        &mut self,
        filter: &AuditFilter,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<AuditEvent>, u64)>;
    /// Delete up to `limit` events recorded before `before`, oldest
    /// first; how many. Events another transaction holds (another
    /// process's purge) are skipped, not waited for.
    fn delete_audit_events_before(&mut self, before: Timestamp, limit: u32) -> StoreResult<u64>;
    /// Delete up to `limit` of the events of password attempts at
    /// addresses no user has ([`AuditAction::LoginFailed`],
    /// [`AuditAction::LockedOut`] and [`AuditAction::RefusedWhileLockedOut`]
    /// with no org, actor or target) recorded before `before`, oldest first; how many. Skips
    /// those another transaction holds.
    fn delete_anonymous_audit_events_before(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> StoreResult<u64>;

    // ---- many users at once
    // An admin's reset of up to a thousand ids in one transaction. Each
    // default runs the one-user method per user; a store over a network
    // overrides them with one statement per table (a round trip per
    // statement: 8,000 of them for 1,000 ids took PostgreSQL about a
    // second). `users` are sorted and distinct.

    /// Lock these users' rows until the transaction ends, in id order, so
    /// that transactions changing overlapping sets of users queue instead
    /// of deadlocking on rows taken in different orders. Taken before any
    /// of their other rows, as the code checks do (see
    /// [`StoreTx::lock_failure_state`]). The default does nothing: a store
    /// whose write transactions are serial needs no lock.
    fn lock_users(&mut self, users: &[UserId]) -> StoreResult<()> {
        let _ = users;
        Ok(())
    }
    /// The memberships of these users in `org`, by user id; users who are
    /// not members have none.
    fn memberships_in_org(&mut self, users: &[UserId], org: OrgId) -> StoreResult<Vec<Membership>> {
        let mut found = Vec::with_capacity(users.len());
        for &user in users {
            found.extend(self.membership(user, org)?);
        }
        Ok(found)
    }
    /// Every membership of these users, by user id (as
    /// [`StoreTx::memberships_of_user`] for each).
    fn memberships_of_users(&mut self, users: &[UserId]) -> StoreResult<Vec<Membership>> {
        let mut found = Vec::with_capacity(users.len());
        for &user in users {
            found.extend(self.memberships_of_user(user)?);
        }
        Ok(found)
    }
    /// [`StoreTx::delete_authenticator`] for each user.
    fn delete_authenticators_of(&mut self, users: &[UserId]) -> StoreResult<()> {
        for &user in users {
            self.delete_authenticator(user)?;
        }
        Ok(())
    }
    /// [`StoreTx::delete_email_factor`] and [`StoreTx::void_email_codes`]
    /// for each user.
    fn delete_email_factors_of(&mut self, users: &[UserId]) -> StoreResult<()> {
        for &user in users {
            self.delete_email_factor(user)?;
            self.void_email_codes(user)?;
        }
        Ok(())
    }
    /// [`StoreTx::delete_recovery_codes`] for each user.
    fn delete_recovery_codes_of(&mut self, users: &[UserId]) -> StoreResult<()> {
        for &user in users {
            self.delete_recovery_codes(user)?;
        }
        Ok(())
    }
    /// [`StoreTx::reset_failures`] for each user.
    fn reset_failures_of(&mut self, users: &[UserId], kind: FailureKind) -> StoreResult<()> {
        for &user in users {
            self.reset_failures(FailureSubject::User(user, kind))?;
        }
        Ok(())
    }
    /// Revoke every live session of each user, in every org; how many.
    fn revoke_sessions_of(&mut self, users: &[UserId], now: Timestamp) -> StoreResult<u64> {
        let mut revoked = 0;
        for &user in users {
            revoked += self.revoke_user_sessions(user, None, None, now)?;
        }
        Ok(revoked)
    }
    /// [`StoreTx::insert_audit`] for each event, in order.
    fn insert_audits(&mut self, events: &[NewAuditEvent]) -> StoreResult<()> {
        for event in events {
            self.insert_audit(event)?;
        }
        Ok(())
    }

    // ---- notices waiting to be mailed
    // Written in the transaction of the change they report, so that a
    // change is never committed without its notice, nor a notice sent of
    // a change rolled back; sent afterwards by whichever process claims
    // them ([`crate::MfaService::deliver_notices`]).

    /// Queue notices, due at once.
    fn queue_notices(&mut self, notices: &[NewNotice<'_>]) -> StoreResult<()>;
    /// Claim the oldest or the newest notice due at `now` (due time at or
    /// before it), by id: its attempts go up by one and it is not due
    /// again before `lease_until`, so that no other process sends it
    /// meanwhile, and one that the claiming process never sends (it
    /// stopped) is sent by another after that. Notices another
    /// transaction holds are skipped, not waited for.
    fn claim_notice(
        &mut self,
        now: Timestamp,
        lease_until: Timestamp,
        order: NoticeOrder,
    ) -> StoreResult<Option<QueuedNotice>>;
    /// Move the lease of a notice claimed until `held_until` to `until`,
    /// if no other claim took it since (which would have set another
    /// time); whether it did. A process renews it while a send of the
    /// notice is under way.
    fn extend_notice_lease(
        &mut self,
        id: i64,
        held_until: Timestamp,
        until: Timestamp,
    ) -> StoreResult<bool>;
    /// Make a notice due again at `at` (its send failed, to be tried again).
    fn retry_notice_at(&mut self, id: i64, at: Timestamp) -> StoreResult<()>;
    /// Delete a notice (sent, or given up); whether it was there.
    fn delete_notice(&mut self, id: i64) -> StoreResult<bool>;
    /// Notices waiting, claimed or not.
    fn count_notices(&mut self) -> StoreResult<u64>;
}

/// Which due notice [`StoreTx::claim_notice`] claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeOrder {
    /// The one queued first: a delivery that works through the queue.
    Oldest,
    /// The one queued last: a request sending the notices it queued.
    Newest,
}

/// A notice to queue ([`StoreTx::queue_notices`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewNotice<'a> {
    /// The recipient's address.
    pub to: &'a str,
    /// The [`MailKind`] as JSON (never one that carries a code).
    pub payload: &'a str,
    /// When the change it reports was made.
    pub queued_at: Timestamp,
}

/// A notice claimed from the store's queue ([`StoreTx::claim_notice`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedNotice {
    /// The queue's id.
    pub id: i64,
    /// The recipient's address.
    pub to: String,
    /// The [`MailKind`] as JSON.
    pub payload: String,
    /// When it was queued.
    pub queued_at: Timestamp,
    /// Claims so far, this one included.
    pub attempts: u32,
}

/// A message the domain wants delivered. The mail adapter renders it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    /// Recipient address.
    pub to: String,
    /// What to say.
    pub kind: MailKind,
}

/// The messages the domain sends. `Debug` leaves out codes and tokens.
///
/// Notices are kept in the store until they are sent, as JSON of this
/// type (`{"kind": "factor_reset", …}`): a field added later needs a
/// `#[serde(default)]`, so that notices queued by an older version still
/// read. The messages that carry a code or a token are never stored.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MailKind {
    /// A code that proves the address during email enrollment.
    EnrollmentCode {
        /// The code (never logged).
        code: String,
        /// Lifetime in seconds.
        valid_for_secs: u64,
    },
    /// A second-factor code for login.
    LoginCode {
        /// The code (never logged).
        code: String,
        /// Lifetime in seconds.
        valid_for_secs: u64,
    },
    /// A factor was enrolled on the account.
    FactorEnrolled {
        /// Which.
        method: MfaMethod,
    },
    /// Factors were removed from the account.
    FactorReset {
        /// Which.
        methods: Vec<MfaMethod>,
        /// Who did it: `None` when the user did it themselves.
        by_admin: Option<String>,
    },
    /// A used authenticator code was presented again and refused.
    ReplayRefused,
    /// Wrong codes in a row, on a session opened with the user's password,
    /// began a lockout of the user's code checks: whoever it was knows the
    /// password.
    CodesLockedOut,
    /// A recovery code was used.
    RecoveryCodeUsed {
        /// Unused codes left.
        remaining: u64,
    },
    /// Confirm a new address (sent to the new address).
    EmailChangeConfirm {
        /// Single-use confirmation token (never logged).
        token: String,
        /// Lifetime in seconds.
        valid_for_secs: u64,
    },
    /// The address is about to change (sent to the old address).
    EmailChangeNotice {
        /// The new address, masked.
        new_email_masked: String,
        /// Who asked: `None` when the user did it themselves.
        by_admin: Option<String>,
    },
    /// The address changed: a change was confirmed (sent to the old
    /// address, which no longer signs in).
    EmailChanged {
        /// The new address, masked.
        new_email_masked: String,
        /// Whether the change removed the user's email factor (it was
        /// verified at the old address).
        email_factor_removed: bool,
    },
    /// A sign-in setting of the account changed without a factor removed:
    /// the password, an opt-out of MFA, the recovery codes.
    SignInChanged {
        /// What changed.
        change: SignInChange,
        /// Who did it: `None` when the user did it themselves.
        by_admin: Option<String>,
    },
}

/// What a [`MailKind::SignInChanged`] notice tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignInChange {
    /// A new password was set.
    PasswordSet,
    /// An org stopped asking the user for a second factor.
    MfaOptOut,
    /// The user withdrew their own opt-in to MFA: orgs that do not
    /// enforce it stop asking them for a second factor.
    PersonalMfaOptOut,
    /// A new set of recovery codes replaced the old one.
    RecoveryCodesReplaced,
}

impl MailKind {
    /// This message as a notice is stored ([`NewNotice::payload`]): `None`
    /// for a message that carries a code or a token, which is never
    /// written to the store.
    pub fn notice_payload(&self) -> Option<String> {
        match self {
            MailKind::EnrollmentCode { .. }
            | MailKind::LoginCode { .. }
            | MailKind::EmailChangeConfirm { .. } => None,
            MailKind::FactorEnrolled { .. }
            | MailKind::FactorReset { .. }
            | MailKind::ReplayRefused
            | MailKind::CodesLockedOut
            | MailKind::RecoveryCodeUsed { .. }
            | MailKind::EmailChangeNotice { .. }
            | MailKind::EmailChanged { .. }
            | MailKind::SignInChanged { .. } => serde_json::to_string(self).ok(),
        }
    }
}

impl std::fmt::Debug for MailKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::redact::Redact as _;
        match self {
            MailKind::EnrollmentCode {
                code,
                valid_for_secs,
            } => f
                .debug_struct("EnrollmentCode")
                .field("code", &code.redacted())
                .field("valid_for_secs", valid_for_secs)
                .finish(),
            MailKind::LoginCode {
                code,
                valid_for_secs,
            } => f
                .debug_struct("LoginCode")
                .field("code", &code.redacted())
                .field("valid_for_secs", valid_for_secs)
                .finish(),
            MailKind::FactorEnrolled { method } => f
                .debug_struct("FactorEnrolled")
                .field("method", method)
                .finish(),
            MailKind::FactorReset { methods, by_admin } => f
                .debug_struct("FactorReset")
                .field("methods", methods)
                .field("by_admin", by_admin)
                .finish(),
            MailKind::ReplayRefused => f.write_str("ReplayRefused"),
            MailKind::CodesLockedOut => f.write_str("CodesLockedOut"),
            MailKind::RecoveryCodeUsed { remaining } => f
                .debug_struct("RecoveryCodeUsed")
                .field("remaining", remaining)
                .finish(),
            MailKind::EmailChangeConfirm {
                token,
                valid_for_secs,
            } => f
                .debug_struct("EmailChangeConfirm")
                .field("token", &token.redacted())
                .field("valid_for_secs", valid_for_secs)
                .finish(),
            MailKind::EmailChangeNotice {
                new_email_masked,
                by_admin,
            } => f
                .debug_struct("EmailChangeNotice")
                .field("new_email_masked", new_email_masked)
                .field("by_admin", by_admin)
                .finish(),
            MailKind::EmailChanged {
                new_email_masked,
                email_factor_removed,
            } => f
                .debug_struct("EmailChanged")
                .field("new_email_masked", new_email_masked)
                .field("email_factor_removed", email_factor_removed)
                .finish(),
            MailKind::SignInChanged { change, by_admin } => f
                .debug_struct("SignInChanged")
                .field("change", change)
                .field("by_admin", by_admin)
                .finish(),
        }
    }
}

/// Delivers mail. Called from blocking context: implementations may block.
pub trait Mailer: Send + Sync {
    /// Deliver one message, or say why not.
    fn send(&self, mail: &Mail) -> Result<(), MailError>;
    /// Deliver a notice: a message that reports a change already made
    /// (a factor added or removed, a replay refused, a recovery code used,
    /// an email change), taken from the store's queue of notices
    /// ([`crate::MfaService::deliver_notices`]), which tries a transient
    /// failure again later and counts a notice whose delivery is unknown
    /// ([`MailError::delivery_unknown`]) as sent. So a mailer says
    /// "unknown" only where the mail server may have taken the message
    /// (no answer to its end), never for a server that did not answer
    /// before it (the greeting); and a mailer that gives up waiting for a
    /// slow mail server in [`Mailer::send`] (a request waits for it)
    /// should wait for the answer here. The default is [`Mailer::send`].
    fn send_notice(&self, mail: &Mail) -> Result<(), MailError> {
        self.send(mail)
    }
    /// Whether this mailer can address a message to `email` (normalised).
    /// Checked when an address is stored (a new user, an email change), so
    /// that no account gets an address its codes can never be mailed to.
    /// No default: a wrapper that forgot to forward it would take any.
    fn accepts_address(&self, email: &str) -> bool;
}

/// Tells the time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// Supplies cryptographically secure random bytes.
pub trait Randomness: Send + Sync {
    /// Fill `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]);
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
    }
}

/// A clock that stands still until told to move: for tests and simulations.
#[derive(Debug, Default)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    /// A clock showing `at`.
    pub fn new(at: Timestamp) -> FixedClock {
        FixedClock(AtomicI64::new(at.0))
    }

    /// Move to `at`.
    pub fn set(&self, at: Timestamp) {
        self.0.store(at.0, Ordering::SeqCst);
    }

    /// Move forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// The operating system's CSPRNG.
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRandomness;

impl Randomness for OsRandomness {
    fn fill(&self, dest: &mut [u8]) {
        rand::fill(dest);
    }
}

/// A mailer that keeps what it is given, for tests and embedding without
/// mail. Optionally fails every send, for good or for now.
#[derive(Debug, Default)]
pub struct MemoryMailer {
    sent: std::sync::Mutex<Vec<Mail>>,
    failing: std::sync::atomic::AtomicBool,
    failing_for_now: std::sync::atomic::AtomicBool,
}

impl MemoryMailer {
    /// Everything sent so far.
    pub fn sent(&self) -> Vec<Mail> {
        self.sent.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Make every later send fail (or succeed again), as a mail server
    /// that refuses the message for good does.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Make every later send fail (or succeed again) as a mail server
    /// that cannot be reached does: a failure that may pass.
    pub fn set_failing_for_now(&self, failing: bool) {
        self.failing_for_now.store(failing, Ordering::SeqCst);
    }
}

impl Mailer for MemoryMailer {
    fn send(&self, mail: &Mail) -> Result<(), MailError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(MailError {
                transient: false,
                delivery_unknown: false,
                message: "memory mailer set to fail".into(),
            });
        }
        if self.failing_for_now.load(Ordering::SeqCst) {
            return Err(MailError {
                transient: true,
                delivery_unknown: false,
                message: "memory mailer set to fail for now".into(),
            });
        }
        if let Ok(mut v) = self.sent.lock() {
            v.push(mail.clone());
        }
        Ok(())
    }

    /// Any address: the memory mailer addresses nothing.
    fn accepts_address(&self, _email: &str) -> bool {
        true
    }
}

/// [`StoreTx::session_member_and_factor_states`] as two reads, for a store
/// that has no round trip to save.
pub fn session_member_then_factor_states<T: StoreTx + ?Sized>(
    tx: &mut T,
    token_hash: &str,
) -> StoreResult<Option<(SessionMember, FactorStates)>> {
    let Some(found) = tx.session_member(token_hash)? else {
        return Ok(None);
    };
    let states = tx.factor_states(found.session.user_id)?;
    Ok(Some((found, states)))
}

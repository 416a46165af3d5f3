//! An in-memory [`Store`] for tests and for embedding without a database.
//!
//! A write transaction works on a copy of the whole state and swaps it in on
//! success, so a failed operation leaves nothing behind; one mutex makes
//! transactions serial, so conditional updates race exactly as they would
//! in a database. Everything is lost when the store is dropped.
//!
//! Every transaction, reads included, copies the whole state: fine for
//! tests and for a few hundred users, slow beyond a few thousand (an audit
//! measured 50 logins in 1.2 s at 5,000 users). Embed `mfa-store`'s SQLite
//! for more. A panic inside a transaction leaves the store as it was
//! before that transaction, and usable.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use mfa_totp::{Secret, TotpParams};

use crate::error::{MfaResult, StoreError};
use crate::model::*;
use crate::ports::{NewNotice, NoticeOrder, QueuedNotice, Store, StoreResult, StoreTx};

#[derive(Clone, Debug, Default)]
struct State {
    next_id: i64,
    orgs: BTreeMap<OrgId, Org>,
    users: BTreeMap<UserId, User>,
    memberships: BTreeMap<(UserId, OrgId), Membership>,
    authenticators: BTreeMap<UserId, Authenticator>,
    email_factors: BTreeMap<UserId, Timestamp>,
    email_codes: BTreeMap<i64, EmailCode>,
    recovery_codes: BTreeMap<i64, RecoveryCode>,
    sessions: BTreeMap<SessionId, Session>,
    failures: BTreeMap<(UserId, FailureKind), Counter>,
    password_failures: BTreeMap<String, Counter>,
    email_changes: BTreeMap<i64, EmailChange>,
    audit: BTreeMap<AuditEventId, AuditEvent>,
    /// Notices by id, with when each is due.
    notices: BTreeMap<i64, (QueuedNotice, Timestamp)>,
}

/// A failure counter and when its last failure came.
#[derive(Clone, Copy, Debug, Default)]
struct Counter {
    state: FailureState,
    last_failure_at: Timestamp,
}

impl Counter {
    /// One more failure at `now`, after forgetting the ones before
    /// `forget_before`.
    fn add_failure(&mut self, now: Timestamp, forget_before: Timestamp) -> FailureState {
        let before = if self.last_failure_at < forget_before {
            0
        } else {
            self.state.failures
        };
        self.state.failures = before.saturating_add(1);
        self.last_failure_at = now;
        self.state
    }
}

impl State {
    fn counter(&mut self, subject: FailureSubject<'_>) -> &mut Counter {
        match subject {
            FailureSubject::User(user, kind) => self.failures.entry((user, kind)).or_default(),
            FailureSubject::Email(email) => {
                self.password_failures.entry(email.to_string()).or_default()
            }
        }
    }

    fn next(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }
}

/// The in-memory store.
#[derive(Debug, Default)]
pub struct InMemoryStore {
    state: Mutex<State>,
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> InMemoryStore {
        InMemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A transaction that panicked worked on a copy that was never
        // swapped in, so the state behind a poisoned mutex is whole: the
        // store stays usable, as a database does after a failed transaction.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Store for InMemoryStore {
    fn read<T>(&self, f: impl FnOnce(&mut dyn StoreTx) -> MfaResult<T>) -> MfaResult<T> {
        let guard = self.lock();
        let mut copy = guard.clone();
        drop(guard);
        f(&mut MemTx(&mut copy))
    }

    fn write<T: Send>(
        &self,
        mut f: impl FnMut(&mut dyn StoreTx) -> MfaResult<T> + Send,
    ) -> MfaResult<T> {
        let mut guard = self.lock();
        let mut copy = guard.clone();
        let out = f(&mut MemTx(&mut copy))?;
        *guard = copy;
        Ok(out)
    }

    /// The read and the conditional write of a database's fast path, each
    /// under the mutex and `check` between them, so that the domain's side
    /// of it runs in every test on this store.
    fn apply_authenticator_success(
        &self,
        owner: CodeOwner<'_>,
        check: impl FnOnce(
            Option<&SessionMember>,
            &FailureState,
            &Authenticator,
        ) -> Option<AuthenticatorSuccess>,
    ) -> MfaResult<bool> {
        let (user, session, member) = match owner {
            CodeOwner::Session { user, session } => (user, session, None),
            CodeOwner::Token(token_hash) => {
                let mut state = self.lock();
                let Some(member) = MemTx(&mut state).session_member(token_hash)? else {
                    return Ok(false);
                };
                (member.session.user_id, member.session.id, Some(member))
            }
        };
        let read = |state: &State| {
            let failures = state
                .failures
                .get(&(user, FailureKind::Code))
                .map(|c| c.state)
                .unwrap_or_default();
            (failures, state.authenticators.get(&user).cloned())
        };
        let (failures, authenticator) = read(&self.lock());
        let Some(authenticator) = authenticator.filter(Authenticator::is_verified) else {
            return Ok(false);
        };
        if failures != FailureState::default() {
            return Ok(false);
        }
        let Some(success) = check(member.as_ref(), &failures, &authenticator) else {
            return Ok(false);
        };
        let mut guard = self.lock();
        let now = success.rotation.now;
        let session_live = guard
            .sessions
            .get(&session)
            .is_some_and(|s| s.user_id == user && s.revoked_at.is_none() && s.expires_at > now);
        if read(&guard) != (failures, Some(authenticator)) || !session_live {
            return Ok(false);
        }
        // All or nothing, as a transaction: on a copy.
        let mut copy = guard.clone();
        let mut tx = MemTx(&mut copy);
        let applied = tx.accept_totp_step(user, success.step)?
            && tx.rotate_session(session, &success.rotation)?;
        if applied {
            tx.insert_audit(&success.audit)?;
            *guard = copy;
        }
        Ok(applied)
    }
}

struct MemTx<'a>(&'a mut State);

impl MemTx<'_> {
    /// Delete up to `limit` audit events `which` picks, oldest id first;
    /// how many.
    fn delete_audit_events_where(
        &mut self,
        limit: u32,
        which: impl Fn(&AuditEvent) -> bool,
    ) -> u64 {
        let picked: Vec<AuditEventId> = self
            .0
            .audit
            .values()
            .filter(|e| which(e))
            .map(|e| e.id)
            .take(limit as usize)
            .collect();
        for id in &picked {
            self.0.audit.remove(id);
        }
        picked.len() as u64
    }

    /// The user and membership of `session`, as the SQL store's join reads
    /// them (`None` once the user is deleted).
    fn member_of_session(&mut self, session: Session) -> StoreResult<Option<SessionMember>> {
        let Some(user) = self.0.users.get(&session.user_id) else {
            return Ok(None);
        };
        let is_super_admin = user.is_super_admin;
        let membership = self.membership(session.user_id, session.org_id)?;
        Ok(Some(SessionMember {
            session,
            is_super_admin,
            membership,
        }))
    }
}

impl StoreTx for MemTx<'_> {
    fn insert_org(&mut self, name: &str, now: Timestamp) -> StoreResult<Org> {
        let id = OrgId(self.0.next());
        let org = Org {
            id,
            name: name.to_string(),
            is_mfa_enforced: false,
            mfa_enforced_at: None,
            mfa_grace_period_hours: 0,
            created_at: now,
        };
        self.0.orgs.insert(id, org.clone());
        Ok(org)
    }

    fn org(&mut self, id: OrgId) -> StoreResult<Option<Org>> {
        Ok(self.0.orgs.get(&id).cloned())
    }

    fn all_orgs(&mut self) -> StoreResult<Vec<Org>> {
        Ok(self.0.orgs.values().cloned().collect())
    }

    fn update_org(&mut self, org: &Org) -> StoreResult<()> {
        let slot = self.0.orgs.get_mut(&org.id).ok_or(StoreError::NotFound)?;
        *slot = org.clone();
        Ok(())
    }

    fn delete_org(&mut self, id: OrgId) -> StoreResult<bool> {
        let existed = self.0.orgs.remove(&id).is_some();
        self.0.memberships.retain(|(_, o), _| *o != id);
        self.0.sessions.retain(|_, s| s.org_id != id);
        Ok(existed)
    }

    fn insert_user(&mut self, new: &NewUser) -> StoreResult<User> {
        if self.0.users.values().any(|u| u.email == new.email) {
            return Err(StoreError::UniqueViolation("email is taken".into()));
        }
        let id = UserId(self.0.next());
        let user = User {
            id,
            email: new.email.clone(),
            first_name: new.first_name.clone(),
            last_name: new.last_name.clone(),
            password_hash: new.password_hash.clone(),
            is_super_admin: new.is_super_admin,
            mfa_opt_in: false,
            last_login_at: None,
            created_at: new.created_at,
        };
        self.0.users.insert(id, user.clone());
        Ok(user)
    }

    fn user(&mut self, id: UserId) -> StoreResult<Option<User>> {
        Ok(self.0.users.get(&id).cloned())
    }

    fn user_by_email(&mut self, email: &str) -> StoreResult<Option<User>> {
        Ok(self.0.users.values().find(|u| u.email == email).cloned())
    }

    fn users_by_ids(&mut self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        Ok(self
            .0
            .users
            .values()
            .filter(|u| ids.contains(&u.id))
            .cloned()
            .collect())
    }

    fn update_user(&mut self, user: &User) -> StoreResult<()> {
        if self
            .0
            .users
            .values()
            .any(|u| u.id != user.id && u.email == user.email)
        {
            return Err(StoreError::UniqueViolation("email is taken".into()));
        }
        let slot = self.0.users.get_mut(&user.id).ok_or(StoreError::NotFound)?;
        *slot = user.clone();
        Ok(())
    }

    fn set_last_login(&mut self, id: UserId, at: Timestamp) -> StoreResult<()> {
        let u = self.0.users.get_mut(&id).ok_or(StoreError::NotFound)?;
        u.last_login_at = Some(at);
        Ok(())
    }

    fn replace_password_hash(&mut self, id: UserId, old: &str, new: &str) -> StoreResult<bool> {
        match self.0.users.get_mut(&id) {
            Some(u) if u.password_hash == old => {
                u.password_hash = new.to_string();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn delete_user(&mut self, id: UserId) -> StoreResult<bool> {
        let s = &mut *self.0;
        let existed = s.users.remove(&id).is_some();
        s.memberships.retain(|(u, _), _| *u != id);
        s.authenticators.remove(&id);
        s.email_factors.remove(&id);
        s.email_codes.retain(|_, c| c.user_id != id);
        s.recovery_codes.retain(|_, c| c.user_id != id);
        s.sessions.retain(|_, x| x.user_id != id);
        s.failures.retain(|(u, _), _| *u != id);
        s.email_changes.retain(|_, c| c.user_id != id);
        Ok(existed)
    }

    fn count_users(&mut self) -> StoreResult<u64> {
        Ok(self.0.users.len() as u64)
    }

    fn search_org_users(
        &mut self,
        org: OrgId,
        search: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<User>, u64)> {
        let needle = search.map(str::to_lowercase);
        let matches: Vec<User> = self
            .0
            .users
            .values()
            .filter(|u| self.0.memberships.contains_key(&(u.id, org)))
            .filter(|u| match &needle {
                None => true,
                Some(n) => [
                    &u.first_name,
                    &u.last_name,
                    &u.email,
                    &format!("{} {}", u.first_name, u.last_name),
                ]
                .iter()
                .any(|f| f.to_lowercase().contains(n.as_str())),
            })
            .cloned()
            .collect();
        let total = matches.len() as u64;
        let page = matches
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        Ok((page, total))
    }

    fn insert_membership(&mut self, m: &Membership) -> StoreResult<()> {
        let key = (m.user_id, m.org_id);
        if self.0.memberships.contains_key(&key) {
            return Err(StoreError::UniqueViolation(
                "the user is already a member of the org".into(),
            ));
        }
        if !self.0.users.contains_key(&m.user_id) || !self.0.orgs.contains_key(&m.org_id) {
            return Err(StoreError::NotFound);
        }
        self.0.memberships.insert(key, m.clone());
        Ok(())
    }

    fn membership(&mut self, user: UserId, org: OrgId) -> StoreResult<Option<Membership>> {
        Ok(self.0.memberships.get(&(user, org)).cloned())
    }

    fn memberships_of_user(&mut self, user: UserId) -> StoreResult<Vec<Membership>> {
        Ok(self
            .0
            .memberships
            .values()
            .filter(|m| m.user_id == user)
            .cloned()
            .collect())
    }

    fn update_membership(&mut self, m: &Membership) -> StoreResult<()> {
        let slot = self
            .0
            .memberships
            .get_mut(&(m.user_id, m.org_id))
            .ok_or(StoreError::NotFound)?;
        *slot = m.clone();
        Ok(())
    }

    fn delete_membership(&mut self, user: UserId, org: OrgId) -> StoreResult<bool> {
        Ok(self.0.memberships.remove(&(user, org)).is_some())
    }

    fn org_admins(&mut self, org: OrgId) -> StoreResult<Vec<User>> {
        Ok(self
            .0
            .memberships
            .values()
            .filter(|m| m.org_id == org && m.is_active_admin())
            .filter_map(|m| self.0.users.get(&m.user_id).cloned())
            .collect())
    }

    fn membership_counts(&mut self, org: OrgId) -> StoreResult<MembershipCounts> {
        let mut c = MembershipCounts::default();
        for m in self.0.memberships.values() {
            if m.org_id == org && !m.exclude_from_membership_count {
                c.licensed += 1;
                if m.is_active {
                    c.enabled += 1;
                } else {
                    c.inactive += 1;
                }
            }
        }
        Ok(c)
    }

    fn authenticator(&mut self, user: UserId) -> StoreResult<Option<Authenticator>> {
        Ok(self.0.authenticators.get(&user).cloned())
    }

    fn authenticator_state(&mut self, user: UserId) -> StoreResult<Option<AuthenticatorState>> {
        Ok(self.0.authenticators.get(&user).map(|a| a.state))
    }

    fn put_pending_authenticator(
        &mut self,
        user: UserId,
        secret: &Secret,
        params: &TotpParams,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<bool> {
        if self
            .0
            .authenticators
            .get(&user)
            .is_some_and(Authenticator::is_verified)
        {
            return Ok(false);
        }
        self.0.authenticators.insert(
            user,
            Authenticator {
                user_id: user,
                secret: secret.clone(),
                params: *params,
                state: AuthenticatorState::Pending { expires_at },
                last_used_step: None,
                created_at,
            },
        );
        Ok(true)
    }

    fn verify_authenticator(
        &mut self,
        user: UserId,
        step: u64,
        now: Timestamp,
    ) -> StoreResult<bool> {
        match self.0.authenticators.get_mut(&user) {
            Some(a) if !a.is_verified() => {
                a.state = AuthenticatorState::Verified { verified_at: now };
                a.last_used_step = Some(step);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn accept_totp_step(&mut self, user: UserId, step: u64) -> StoreResult<bool> {
        match self.0.authenticators.get_mut(&user) {
            Some(a) if a.is_verified() && a.last_used_step.is_none_or(|last| last < step) => {
                a.last_used_step = Some(step);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn delete_authenticator(&mut self, user: UserId) -> StoreResult<bool> {
        Ok(self.0.authenticators.remove(&user).is_some())
    }

    fn email_factor_verified_at(&mut self, user: UserId) -> StoreResult<Option<Timestamp>> {
        Ok(self.0.email_factors.get(&user).copied())
    }

    fn set_email_factor_verified(&mut self, user: UserId, at: Timestamp) -> StoreResult<()> {
        self.0.email_factors.entry(user).or_insert(at);
        Ok(())
    }

    fn delete_email_factor(&mut self, user: UserId) -> StoreResult<bool> {
        Ok(self.0.email_factors.remove(&user).is_some())
    }

    fn latest_email_code(&mut self, user: UserId) -> StoreResult<Option<EmailCode>> {
        Ok(self
            .0
            .email_codes
            .values()
            .filter(|c| c.user_id == user)
            .max_by_key(|c| c.id)
            .cloned())
    }

    /// Unchanged: the memory store holds no key (nor anything at rest).
    fn email_code_digest(&self, code_hash: &str) -> String {
        code_hash.to_string()
    }

    fn replace_email_code(&mut self, code: &NewEmailCode) -> StoreResult<EmailCode> {
        self.0.email_codes.retain(|_, c| c.user_id != code.user_id);
        let id = self.0.next();
        let stored = EmailCode {
            id,
            user_id: code.user_id,
            purpose: code.purpose,
            code_hash: code.code_hash.clone(),
            salt: code.salt.clone(),
            sent_at: code.sent_at,
            expires_at: code.expires_at,
            consumed_at: None,
        };
        self.0.email_codes.insert(id, stored.clone());
        Ok(stored)
    }

    fn consume_email_code(&mut self, id: i64, now: Timestamp) -> StoreResult<bool> {
        match self.0.email_codes.get_mut(&id) {
            Some(c) if c.consumed_at.is_none() => {
                c.consumed_at = Some(now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn delete_email_code(&mut self, id: i64) -> StoreResult<()> {
        self.0.email_codes.remove(&id);
        Ok(())
    }

    fn void_email_codes(&mut self, user: UserId) -> StoreResult<()> {
        for code in self.0.email_codes.values_mut() {
            if code.user_id == user && !code.is_voided() {
                code.consumed_at = code.consumed_at.or(Some(code.sent_at));
                code.code_hash.clear();
            }
        }
        Ok(())
    }

    fn recovery_codes(&mut self, user: UserId) -> StoreResult<Vec<RecoveryCode>> {
        Ok(self
            .0
            .recovery_codes
            .values()
            .filter(|c| c.user_id == user)
            .cloned()
            .collect())
    }

    fn replace_recovery_codes(
        &mut self,
        user: UserId,
        hashes: &[String],
        now: Timestamp,
    ) -> StoreResult<()> {
        self.0.recovery_codes.retain(|_, c| c.user_id != user);
        for hash in hashes {
            let id = self.0.next();
            self.0.recovery_codes.insert(
                id,
                RecoveryCode {
                    id,
                    user_id: user,
                    code_hash: hash.clone(),
                    created_at: now,
                    used_at: None,
                },
            );
        }
        Ok(())
    }

    fn unused_recovery_codes(&mut self, user: UserId) -> StoreResult<u64> {
        Ok(self
            .0
            .recovery_codes
            .values()
            .filter(|c| c.user_id == user && c.used_at.is_none())
            .count() as u64)
    }

    fn consume_recovery_code(&mut self, id: i64, now: Timestamp) -> StoreResult<bool> {
        match self.0.recovery_codes.get_mut(&id) {
            Some(c) if c.used_at.is_none() => {
                c.used_at = Some(now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn delete_recovery_codes(&mut self, user: UserId) -> StoreResult<u64> {
        let before = self.0.recovery_codes.len();
        self.0.recovery_codes.retain(|_, c| c.user_id != user);
        Ok((before - self.0.recovery_codes.len()) as u64)
    }

    fn insert_session(&mut self, s: &NewSession) -> StoreResult<Session> {
        let id = SessionId(self.0.next());
        let session = Session {
            id,
            token_hash: s.token_hash.clone(),
            user_id: s.user_id,
            org_id: s.org_id,
            level: s.level,
            created_at: s.created_at,
            expires_at: s.expires_at,
            last_seen_at: s.created_at,
            revoked_at: None,
            mfa_passed: false,
        };
        self.0.sessions.insert(id, session.clone());
        Ok(session)
    }

    fn session_by_token_hash(&mut self, token_hash: &str) -> StoreResult<Option<Session>> {
        Ok(self
            .0
            .sessions
            .values()
            .find(|s| s.token_hash == token_hash)
            .cloned())
    }

    fn session_member(&mut self, token_hash: &str) -> StoreResult<Option<SessionMember>> {
        let Some(session) = self.session_by_token_hash(token_hash)? else {
            return Ok(None);
        };
        self.member_of_session(session)
    }

    fn session_member_by_id(&mut self, id: SessionId) -> StoreResult<Option<SessionMember>> {
        match self.0.sessions.get(&id).cloned() {
            Some(session) => self.member_of_session(session),
            None => Ok(None),
        }
    }

    fn rotate_session(&mut self, id: SessionId, rotation: &SessionRotation) -> StoreResult<bool> {
        match self.0.sessions.get_mut(&id) {
            Some(s)
                if s.revoked_at.is_none()
                    && rotation.now < s.expires_at
                    && s.token_hash == rotation.presented_token_hash =>
            {
                s.token_hash.clone_from(&rotation.token_hash);
                s.level = rotation.level;
                s.expires_at = rotation.expires_at;
                s.last_seen_at = rotation.now;
                s.mfa_passed = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn note_session_mfa_passed(&mut self, id: SessionId) -> StoreResult<()> {
        if let Some(s) = self.0.sessions.get_mut(&id) {
            s.mfa_passed = true;
        }
        Ok(())
    }

    fn touch_session(&mut self, id: SessionId, now: Timestamp) -> StoreResult<()> {
        if let Some(s) = self.0.sessions.get_mut(&id) {
            s.last_seen_at = now;
        }
        Ok(())
    }

    fn revoke_session(&mut self, id: SessionId, now: Timestamp) -> StoreResult<bool> {
        match self.0.sessions.get_mut(&id) {
            Some(s) if s.revoked_at.is_none() => {
                s.revoked_at = Some(now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn revoke_user_sessions(
        &mut self,
        user: UserId,
        only_org: Option<OrgId>,
        except: Option<SessionId>,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let mut n = 0;
        for s in self.0.sessions.values_mut() {
            let hit = s.user_id == user
                && s.revoked_at.is_none()
                && only_org.is_none_or(|o| o == s.org_id)
                && except != Some(s.id);
            if hit {
                s.revoked_at = Some(now);
                n += 1;
            }
        }
        Ok(n)
    }

    fn delete_ended_sessions(&mut self, purge: &SessionPurge) -> StoreResult<u64> {
        let ended: Vec<SessionId> = self
            .0
            .sessions
            .values()
            .filter(|s| purge.covers(s))
            .map(|s| s.id)
            .take(purge.limit as usize)
            .collect();
        for id in &ended {
            self.0.sessions.remove(id);
        }
        Ok(ended.len() as u64)
    }

    fn failure_state(&mut self, user: UserId, kind: FailureKind) -> StoreResult<FailureState> {
        Ok(self
            .0
            .failures
            .get(&(user, kind))
            .map(|c| c.state)
            .unwrap_or_default())
    }

    fn password_failure_state(&mut self, email: &str) -> StoreResult<FailureState> {
        Ok(self
            .0
            .password_failures
            .get(email)
            .map(|c| c.state)
            .unwrap_or_default())
    }

    fn lock_failure_state(&mut self, user: UserId, kind: FailureKind) -> StoreResult<FailureState> {
        // The store's mutex already serialises transactions.
        self.failure_state(user, kind)
    }

    fn increment_failures(
        &mut self,
        subject: FailureSubject<'_>,
        now: Timestamp,
        forget_before: Timestamp,
    ) -> StoreResult<FailureState> {
        Ok(self.0.counter(subject).add_failure(now, forget_before))
    }

    fn set_locked_until(
        &mut self,
        subject: FailureSubject<'_>,
        until: Option<Timestamp>,
    ) -> StoreResult<()> {
        self.0.counter(subject).state.locked_until = until;
        Ok(())
    }

    fn delete_forgotten_password_failures(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> StoreResult<u64> {
        let forgotten: Vec<String> = self
            .0
            .password_failures
            .iter()
            .filter(|(_, c)| c.last_failure_at < before)
            .map(|(email, _)| email.clone())
            .take(limit as usize)
            .collect();
        for email in &forgotten {
            self.0.password_failures.remove(email);
        }
        Ok(forgotten.len() as u64)
    }

    fn reset_failures(&mut self, subject: FailureSubject<'_>) -> StoreResult<()> {
        match subject {
            FailureSubject::User(user, kind) => self.0.failures.remove(&(user, kind)),
            FailureSubject::Email(email) => self.0.password_failures.remove(email),
        };
        Ok(())
    }

    fn put_email_change(
        &mut self,
        user: UserId,
        new_email: &str,
        token_hash: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<EmailChange> {
        self.0
            .email_changes
            .retain(|_, c| c.user_id != user || c.consumed_at.is_some());
        let id = self.0.next();
        let change = EmailChange {
            id,
            user_id: user,
            new_email: new_email.to_string(),
            token_hash: token_hash.to_string(),
            created_at: now,
            expires_at,
            consumed_at: None,
        };
        self.0.email_changes.insert(id, change.clone());
        Ok(change)
    }

    fn pending_email_change(&mut self, user: UserId) -> StoreResult<Option<EmailChange>> {
        Ok(self
            .0
            .email_changes
            .values()
            .find(|c| c.user_id == user && c.consumed_at.is_none())
            .cloned())
    }

    fn email_change_by_token_hash(&mut self, token_hash: &str) -> StoreResult<Option<EmailChange>> {
        Ok(self
            .0
            .email_changes
            .values()
            .find(|c| c.token_hash == token_hash)
            .cloned())
    }

    fn consume_email_change(&mut self, id: i64, now: Timestamp) -> StoreResult<bool> {
        match self.0.email_changes.get_mut(&id) {
            Some(c) if c.consumed_at.is_none() => {
                c.consumed_at = Some(now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn withdraw_email_change(&mut self, user: UserId, token_hash: &str) -> StoreResult<bool> {
        let before = self.0.email_changes.len();
        self.0.email_changes.retain(|_, c| {
            !(c.user_id == user && c.token_hash == token_hash && c.consumed_at.is_none())
        });
        Ok(self.0.email_changes.len() < before)
    }

    fn delete_confirmed_email_changes(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> StoreResult<u64> {
        let confirmed: Vec<i64> = self
            .0
            .email_changes
            .values()
            .filter(|c| c.consumed_at.is_some_and(|at| at < before))
            .map(|c| c.id)
            .take(limit as usize)
            .collect();
        for id in &confirmed {
            self.0.email_changes.remove(id);
        }
        Ok(confirmed.len() as u64)
    }

    fn insert_audit(&mut self, e: &NewAuditEvent) -> StoreResult<()> {
        let id = AuditEventId(self.0.next());
        self.0.audit.insert(
            id,
            AuditEvent {
                id,
                at: e.at,
                org_id: e.org_id,
                actor_user_id: e.actor_user_id,
                target_user_id: e.target_user_id,
                client: e.client,
                action: e.action,
                detail: e.detail.clone(),
            },
        );
        Ok(())
    }

    fn audit_events(
        &mut self,
        filter: &AuditFilter,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<AuditEvent>, u64)> {
        let matches: Vec<AuditEvent> = self
            .0
            .audit
            .values()
            .rev()
            .filter(|e| filter.org_id.is_none_or(|o| e.org_id == Some(o)))
            .filter(|e| {
                filter
                    .user_id
                    .is_none_or(|u| e.actor_user_id == Some(u) || e.target_user_id == Some(u))
            })
            .filter(|e| filter.action.is_none_or(|a| e.action == a))
            .filter(|e| filter.from.is_none_or(|from| e.at >= from))
            .filter(|e| filter.to.is_none_or(|to| e.at < to))
            .filter(|e| filter.client.is_none_or(|c| e.client == Some(c)))
            .filter(|e| filter.before_id.is_none_or(|id| e.id < id))
            .cloned()
            .collect();
        let total = matches.len() as u64;
        let page = matches
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .collect();
        Ok((page, total))
    }

    fn delete_audit_events_before(&mut self, before: Timestamp, limit: u32) -> StoreResult<u64> {
        Ok(self.delete_audit_events_where(limit, |e| e.at < before))
    }

    fn delete_anonymous_audit_events_before(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> StoreResult<u64> {
        Ok(self.delete_audit_events_where(limit, |e| {
            e.at < before && e.is_anonymous_password_attempt()
        }))
    }

    fn queue_notices(&mut self, notices: &[NewNotice<'_>]) -> StoreResult<()> {
        for notice in notices {
            let id = self.0.next();
            let queued = QueuedNotice {
                id,
                to: notice.to.to_string(),
                payload: notice.payload.to_string(),
                queued_at: notice.queued_at,
                attempts: 0,
            };
            self.0.notices.insert(id, (queued, notice.queued_at));
        }
        Ok(())
    }

    fn claim_notice(
        &mut self,
        now: Timestamp,
        lease_until: Timestamp,
        order: NoticeOrder,
    ) -> StoreResult<Option<QueuedNotice>> {
        let mut due = self
            .0
            .notices
            .values_mut()
            .filter(|(_, due_at)| *due_at <= now);
        let found = match order {
            NoticeOrder::Oldest => due.next(),
            NoticeOrder::Newest => due.next_back(),
        };
        Ok(found.map(|(notice, due_at)| {
            notice.attempts += 1;
            *due_at = lease_until;
            notice.clone()
        }))
    }

    fn extend_notice_lease(
        &mut self,
        id: i64,
        held_until: Timestamp,
        until: Timestamp,
    ) -> StoreResult<bool> {
        match self.0.notices.get_mut(&id) {
            Some((_, due_at)) if *due_at == held_until => {
                *due_at = until;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn retry_notice_at(&mut self, id: i64, at: Timestamp) -> StoreResult<()> {
        if let Some((_, due_at)) = self.0.notices.get_mut(&id) {
            *due_at = at;
        }
        Ok(())
    }

    fn delete_notice(&mut self, id: i64) -> StoreResult<bool> {
        Ok(self.0.notices.remove(&id).is_some())
    }

    fn count_notices(&mut self) -> StoreResult<u64> {
        Ok(self.0.notices.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_000);

    /// An audit found every later transaction failing with "in-memory
    /// store poisoned" after one panicked.
    #[test]
    fn a_panicking_transaction_changes_nothing_and_poisons_nothing() {
        let store = InMemoryStore::new();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = store.write(|tx| {
                tx.insert_org("half-made", T0)?;
                panic!("an embedder's closure panics");
                #[allow(unreachable_code)]
                Ok(())
            });
        }));
        assert!(panicked.is_err());
        let orgs = store.read(|tx| Ok(tx.all_orgs()?)).expect("usable");
        assert!(orgs.is_empty(), "nothing of it stayed: {orgs:?}");
        store
            .write(|tx| Ok(tx.insert_org("next", T0)?))
            .expect("writes work");
    }

    /// A member with a verified authenticator (step 10 used) and a
    /// partial session, and the success [`Store::apply_authenticator_success`]
    /// would write for step 12.
    fn fixture(store: &InMemoryStore) -> (UserId, SessionId, AuthenticatorSuccess) {
        let (user, org, session) = store
            .write(|tx| {
                let org = tx.insert_org("org", T0)?.id;
                let user = tx
                    .insert_user(&NewUser {
                        email: "a@example.com".into(),
                        first_name: "A".into(),
                        last_name: "B".into(),
                        password_hash: "x".into(),
                        is_super_admin: false,
                        created_at: T0,
                    })?
                    .id;
                let secret = Secret::generate();
                tx.put_pending_authenticator(user, &secret, &TotpParams::default(), T0, T0)?;
                tx.verify_authenticator(user, 10, T0)?;
                let session = tx.insert_session(&NewSession {
                    token_hash: "old".into(),
                    user_id: user,
                    org_id: org,
                    level: AssuranceLevel::Partial,
                    created_at: T0,
                    expires_at: Timestamp(T0.0 + 600),
                })?;
                Ok((user, org, session.id))
            })
            .expect("fixture");
        let success = AuthenticatorSuccess {
            step: 12,
            rotation: SessionRotation {
                presented_token_hash: "old".into(),
                token_hash: "new".into(),
                level: AssuranceLevel::Full,
                expires_at: Timestamp(T0.0 + 900),
                now: T0,
            },
            audit: NewAuditEvent {
                at: T0,
                org_id: Some(org),
                actor_user_id: Some(user),
                target_user_id: Some(user),
                action: AuditAction::MfaVerifySucceeded,
                detail: "method: authenticator".into(),
                client: None,
            },
        };
        (user, session, success)
    }

    fn observe(store: &InMemoryStore, user: UserId) -> (Option<u64>, bool, u64) {
        store
            .read(|tx| {
                let step = tx.authenticator(user)?.and_then(|a| a.last_used_step);
                let rotated = tx.session_by_token_hash("new")?.is_some();
                let events = tx.audit_events(&AuditFilter::default(), 0, 10)?.1;
                Ok((step, rotated, events))
            })
            .expect("observe")
    }

    #[test]
    fn the_fast_path_writes_a_success_whole() {
        for by_token in [false, true] {
            let store = InMemoryStore::new();
            let (user, session, success) = fixture(&store);
            let owner = if by_token {
                CodeOwner::Token("old")
            } else {
                CodeOwner::Session { user, session }
            };
            let applied =
                store.apply_authenticator_success(owner, |member, failures, authenticator| {
                    assert_eq!(member.map(|m| m.session.id), by_token.then_some(session));
                    assert_eq!(*failures, FailureState::default());
                    assert_eq!(authenticator.last_used_step, Some(10));
                    Some(success)
                });
            assert_eq!(applied, Ok(true));
            assert_eq!(observe(&store, user), (Some(12), true, 1));
        }
        let store = InMemoryStore::new();
        let _ = fixture(&store);
        let unknown = store.apply_authenticator_success(CodeOwner::Token("unknown"), |_, _, _| {
            panic!("check called without a session")
        });
        assert_eq!(unknown, Ok(false));
    }

    #[test]
    fn the_fast_path_gives_way_to_a_change_after_its_read() {
        type Change = fn(&mut dyn StoreTx, UserId);
        let changes: [Change; 3] = [
            |tx, user| assert_eq!(tx.accept_totp_step(user, 11), Ok(true)),
            |tx, user| {
                let subject = FailureSubject::User(user, FailureKind::Code);
                assert!(
                    tx.increment_failures(subject, Timestamp(0), Timestamp(0))
                        .is_ok()
                );
            },
            |tx, user| assert_eq!(tx.revoke_user_sessions(user, None, None, T0), Ok(1)),
        ];
        for change in changes {
            let store = InMemoryStore::new();
            let (user, session, success) = fixture(&store);
            let applied = store.apply_authenticator_success(
                CodeOwner::Session { user, session },
                |_, _, _| {
                    store
                        .write(|tx| {
                            change(tx, user);
                            Ok(())
                        })
                        .expect("change");
                    Some(success)
                },
            );
            assert_eq!(applied, Ok(false));
            let (_, rotated, events) = observe(&store, user);
            assert!(!rotated && events == 0);
        }
    }
}

//! Login, session resolution, the MFA challenge and verification, logout.

use super::*;
use crate::crypto::{
    constant_time_eq, hash_email_code, hash_token, new_numeric_code, new_salt, new_token,
    normalize_recovery_code,
};
use crate::policy::{LoginDecision, MfaRequirement, decide_login};
use crate::text::{mask_email, normalize_email};
use mfa_totp::VerifyError;

/// The answer to a successful password login. `Debug` leaves out the
/// token.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginResult {
    /// Bearer token (shown once, stored only as a hash).
    pub token: String,
    /// End of the session.
    pub expires_at: Timestamp,
    /// The session's user.
    pub user_id: UserId,
    /// The session's org.
    pub org_id: OrgId,
    /// What the session still owes.
    pub decision: LoginDecision,
}

crate::redact::debug_without_secrets!(LoginResult {
    expires_at, user_id, org_id, decision
} secret { token });

/// A login whose account is read and whose address is not locked out
/// ([`MfaService::login_begin`]); its password is checked next
/// ([`MfaService::login_check`]).
#[derive(Clone, Debug)]
pub struct LoginStart {
    /// When the login began: the time its steps count and audit at.
    now: Timestamp,
    /// Who is logging in (no one signed in yet) and from where.
    by: Actor,
    /// `None` when the email is no address at all: nothing was read, and
    /// the login fails uncounted.
    addressed: Option<AddressedLogin>,
}

/// What [`MfaService::login_begin`] read for an address.
#[derive(Clone, Debug)]
struct AddressedLogin {
    /// The email, normalised.
    email: String,
    /// The user and their memberships; `None` for an unknown email.
    found: Option<(User, Vec<Membership>)>,
    /// The org asked for.
    org: Option<OrgId>,
    /// Where the attempt is audited.
    audit_org: Option<OrgId>,
}

/// A login whose password was checked ([`MfaService::login_check`]); the
/// outcome is written next ([`MfaService::login_finish`]). `Debug` leaves
/// out the new hash.
#[derive(Clone)]
pub struct LoginChecked {
    begun: LoginStart,
    right: bool,
    /// The password hashed with the configured parameters, when the
    /// stored hash was made with others.
    rehashed: Option<String>,
}

crate::redact::debug_without_secrets!(LoginChecked { begun, right } secret { rehashed });

/// A recovery code about to be checked ([`MfaService::recovery_code_begin`]).
/// `Debug` leaves out the code given.
#[derive(Clone)]
pub struct RecoveryCheck {
    now: Timestamp,
    user: UserId,
    /// The code given, normalised; `None` when it cannot be a code.
    candidate: Option<String>,
    /// The user's unused codes.
    codes: Vec<RecoveryCode>,
}

crate::redact::debug_without_secrets!(RecoveryCheck { now, user, codes } secret { candidate });

/// A recovery code checked ([`MfaService::check_recovery_code`]): which of
/// its user's codes it matched, if any.
#[derive(Clone, Debug)]
pub struct RecoveryChecked {
    now: Timestamp,
    user: UserId,
    matched: Option<i64>,
}

/// A new full session issued after MFA. `Debug` leaves out the token.
#[derive(Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Bearer token.
    pub token: String,
    /// End of the session.
    pub expires_at: Timestamp,
}

crate::redact::debug_without_secrets!(NewToken { expires_at } secret { token });

/// What [`MfaService::verify_mfa_of_token_noting_replay`] did.
#[derive(Debug)]
pub struct TokenVerification {
    /// The new full token, or the refusal.
    pub result: MfaResult<NewToken>,
    /// A replayed authenticator code was refused: it answers
    /// [`MfaError::InvalidCode`] as any wrong code does, and an adapter
    /// that counts replays apart (a server's metrics) learns it here.
    pub replayed: bool,
    /// The token's user, once the token resolved (for a server's log line).
    pub user: Option<UserId>,
}

/// Where an emailed code went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeSent {
    /// The masked address.
    pub sent_to: String,
    /// End of the code's validity.
    pub expires_at: Timestamp,
}

/// A user is told of a refused replay at most once in this many seconds;
/// each one is audited. A burst (racing requests, a client that retries)
/// is one notice: an audit got five in one second.
pub const REPLAY_NOTICE_INTERVAL_SECS: i64 = 60;

/// Whether `user` was told of a replay refused less than
/// [`REPLAY_NOTICE_INTERVAL_SECS`] before `now`, the refusal just audited
/// in `tx` aside. Under the user's failure-counter lock, which every code
/// check takes first, so two replays at once are told apart.
fn replay_told_lately(tx: &mut dyn StoreTx, user: UserId, now: Timestamp) -> MfaResult<bool> {
    happened_lately(
        tx,
        user,
        AuditAction::ReplayRefused,
        REPLAY_NOTICE_INTERVAL_SECS,
        now,
    )
}

/// Whether `user` has an event of `action` less than `interval` seconds
/// before `now` besides the newest (the one just audited in `tx`).
fn happened_lately(
    tx: &mut dyn StoreTx,
    user: UserId,
    action: AuditAction,
    interval: i64,
    now: Timestamp,
) -> MfaResult<bool> {
    let filter = AuditFilter {
        user_id: Some(user),
        action: Some(action),
        ..AuditFilter::default()
    };
    let (newest, _) = tx.audit_events(&filter, 0, 2)?;
    Ok(newest
        .get(1)
        .is_some_and(|before| before.at.0 > now.0 - interval))
}

/// The shortest time between two [`MailKind::CodesLockedOut`] notices to
/// one user: a guesser who goes on meets a lockout again every time one
/// ends (30 s, doubling to 15 min), and one mail says what there is to say.
pub const LOCKOUT_NOTICE_INTERVAL_SECS: i64 = 3600;

/// Whether `user`'s code checks began a lockout less than
/// [`LOCKOUT_NOTICE_INTERVAL_SECS`] before `now`, the one just audited in
/// `tx` aside (password lockouts of the user's address count too: they
/// are rarer, and a mail either way is enough). Under the user's
/// failure-counter lock, as [`replay_told_lately`].
fn lockout_told_lately(tx: &mut dyn StoreTx, user: UserId, now: Timestamp) -> MfaResult<bool> {
    happened_lately(
        tx,
        user,
        AuditAction::LockedOut,
        LOCKOUT_NOTICE_INTERVAL_SECS,
        now,
    )
}

impl<S: Store> MfaService<S> {
    /// [`fail_attempt`] for a wrong code of a factor the user has, on a
    /// session opened with the user's password. When it begins a lockout
    /// the user is told (once an hour at most): whoever gave the codes
    /// knows the password. (A guesser at the second step was locked out
    /// in silence.)
    fn fail_factor_attempt(
        &self,
        tx: &mut dyn StoreTx,
        attempt: &Attempt<'_>,
        org: Option<OrgId>,
        now: Timestamp,
        action: AuditAction,
        detail: &str,
    ) -> MfaResult<MfaError> {
        let refusal = fail_attempt(tx, attempt, org, now, action, detail, MfaError::InvalidCode)?;
        if let (MfaError::TooManyAttempts { .. }, Some(user)) = (&refusal, attempt.user)
            && !lockout_told_lately(tx, user, now)?
        {
            self.notify_owner(tx, user, MailKind::CodesLockedOut)?;
        }
        Ok(refusal)
    }

    /// Check a password and open a session whose level follows the login
    /// decision. `org` picks the membership; without it the active
    /// membership with the lowest org id is used.
    ///
    /// The three steps it takes in turn ([`MfaService::login_begin`],
    /// [`MfaService::login_check`], [`MfaService::login_finish`]) are
    /// public for a server that runs argon2 on threads of its own: only
    /// the middle one hashes, and only the other two touch the store.
    /// A server gives [`MfaService::login_begin`] the client's address for
    /// the audit trail; this records none.
    pub fn login(&self, email: &str, password: &str, org: Option<OrgId>) -> MfaResult<LoginResult> {
        let begun = self.login_begin(email, org, None)?;
        let checked = self.login_check(begun, password)?;
        self.login_finish(checked)
    }

    /// The first step of [`MfaService::login`]: the account `email` names,
    /// read; `TooManyAttempts` while the address is locked out, so that no
    /// password is hashed for it then. It writes nothing but the audit of
    /// such a refusal: the attempt is counted by
    /// [`MfaService::login_finish`], in the transaction that decides it.
    pub fn login_begin(
        &self,
        email: &str,
        org: Option<OrgId>,
        client: Option<IpAddr>,
    ) -> MfaResult<LoginStart> {
        let now = self.now();
        let by = Actor::anonymous(client);
        let Ok(email) = normalize_email(email) else {
            return Ok(LoginStart {
                now,
                by,
                addressed: None,
            });
        };
        let (found, failures) = self.store.read_statement(|tx| {
            Ok((
                tx.user_with_memberships_by_email(&email)?,
                tx.password_failure_state(&email)?,
            ))
        })?;
        // The org whose audit trail shows this attempt: the one asked for,
        // else the one the login would open.
        let audit_org = found.as_ref().and_then(|(_, memberships)| {
            org.filter(|o| memberships.iter().any(|m| m.org_id == *o))
                .or_else(|| memberships.iter().find(|m| m.is_active).map(|m| m.org_id))
        });
        let trace = AttemptTrace {
            user: found.as_ref().map(|(user, _)| user.id),
            by,
            org: audit_org,
            what: "password",
            address: Some(&email),
        };
        self.refuse_while_locked_audited(&trace, &self.config.password_lockout, &failures, now)?;
        Ok(LoginStart {
            now,
            by,
            addressed: Some(AddressedLogin {
                email,
                found,
                org,
                audit_org,
            }),
        })
    }

    /// The second step of [`MfaService::login`]: the password checked
    /// with argon2id (a decoy hash for an unknown email or a text that is
    /// no address, which takes as long), and a hash made with other than
    /// the configured parameters made again. It reads and writes nothing:
    /// its only work is hashing.
    pub fn login_check(&self, begun: LoginStart, password: &str) -> MfaResult<LoginChecked> {
        let account = begun
            .addressed
            .as_ref()
            .and_then(|addressed| addressed.found.as_ref())
            .map(|(user, _)| user);
        let right = match account {
            Some(user) => self.hasher.verify(password, &user.password_hash),
            None => {
                self.hasher.verify_decoy(password);
                false
            }
        };
        // A hash made with other parameters than the configured ones is
        // replaced while the password is at hand (one more argon2 run for
        // this login), so that a parameter change reaches every account
        // that logs in.
        let rehashed = match account {
            Some(user) if right && !self.hasher.is_current(&user.password_hash) => {
                Some(self.hasher.hash(password, self.rng.as_ref())?)
            }
            _ => None,
        };
        Ok(LoginChecked {
            begun,
            right,
            rehashed,
        })
    }

    /// The last step of [`MfaService::login`], in one transaction: the
    /// attempt counted toward the address's lockout (`TooManyAttempts`,
    /// uncounted, when a lockout began since the check started: racing
    /// guesses are decided one after another here, each seeing the ones
    /// before it, so no more of them are answered than the lockout allows);
    /// a wrong password audited and refused (`InvalidCredentials`, or
    /// `TooManyAttempts` when it starts a lockout); a right one clears the
    /// count and opens the session the login decision allows.
    pub fn login_finish(&self, checked: LoginChecked) -> MfaResult<LoginResult> {
        let LoginChecked {
            begun: LoginStart { now, by, addressed },
            right,
            rehashed,
        } = checked;
        let Some(AddressedLogin {
            email,
            found,
            org,
            audit_org,
        }) = addressed
        else {
            return Err(MfaError::InvalidCredentials);
        };
        let subject = FailureSubject::Email(&email);
        let account = found.as_ref().map(|(user, _)| user.id);
        let trace = AttemptTrace {
            user: account,
            by,
            org: audit_org,
            what: "password",
            address: Some(&email),
        };
        let policy = &self.config.password_lockout;
        let user = match found {
            Some((user, _)) if right => user,
            found => {
                // An unknown email is answered as a wrong password of a
                // known user is: counted toward a lockout of its own, in
                // the same statements.
                let detail = match found {
                    Some(_) => "wrong password",
                    None => "unknown email",
                };
                return self.write_then_refusal_audited(&trace, now, |tx| {
                    let attempt =
                        reserve_attempt(tx, policy, subject, now)?.for_account(account, by);
                    Ok(Err(fail_password(tx, &attempt, audit_org, now, detail)?))
                });
            }
        };
        let token = new_token(self.rng.as_ref());
        let config = &self.config;
        self.write_then_refusal_audited(&trace, now, |tx| {
            let attempt = reserve_attempt(tx, policy, subject, now)?.for_account(account, by);
            // The password was checked against the hash read before
            // argon2. Under the user's lock, a password change either
            // committed before this point (seen here: the password given
            // is no longer the user's) or waits until this session exists
            // (and ends it). Without the lock, a change committing in
            // between left a session opened with the old password.
            let user = match tx.user_for_update(user.id)? {
                Some(current) if current.password_hash == user.password_hash => current,
                current => {
                    let detail = match current {
                        Some(_) => "the password changed during the login",
                        None => "the user was deleted during the login",
                    };
                    return Ok(Err(fail_password(tx, &attempt, audit_org, now, detail)?));
                }
            };
            // The password was right: the count starts again, whether or
            // not a session can be opened.
            clear_attempt(tx, &attempt)?;
            if let Some(new_hash) = &rehashed {
                // Not if the password was changed since it was checked.
                tx.replace_password_hash(user.id, &user.password_hash, new_hash)?;
            }
            let memberships = tx.memberships_of_user(user.id)?;
            let chosen = match org {
                Some(org) => memberships.iter().find(|m| m.org_id == org),
                None => memberships.iter().find(|m| m.is_active),
            };
            // Locked until the session is in, as the user is: a
            // deactivation or removal of this membership either committed
            // before (seen here) or waits for this session (and ends it).
            // Without the lock, one committing in between ended the
            // sessions it saw, not this one, which came back to life when
            // the membership did.
            let locked = match chosen {
                Some(m) => tx.membership_for_update(user.id, m.org_id)?,
                None => None,
            };
            // A right password that opens no session is in the trail, as
            // Keycloak's LOGIN_ERROR "user_disabled" is: an admin sees a
            // disabled member trying to sign in.
            let refuse = |tx: &mut dyn StoreTx, org: Option<OrgId>, refusal: MfaError| {
                let detail = format!("right password, no session: {refusal}");
                let by = Actor {
                    user: Some(user.id),
                    ..by
                };
                audit(
                    tx,
                    now,
                    org,
                    by,
                    Some(user.id),
                    AuditAction::LoginFailed,
                    detail,
                )?;
                Ok(Err(refusal))
            };
            let Some(membership) = locked.as_ref() else {
                let why = match (org, memberships.len()) {
                    (Some(_), _) => "this account is not a member of that org",
                    (None, 0) => "this account belongs to no org",
                    (None, _) => "this account's access is disabled in each of its orgs",
                };
                // In an org of the user's, where one of its admins sees it.
                let org = audit_org.or_else(|| memberships.first().map(|m| m.org_id));
                return refuse(tx, org, MfaError::SignInRefused(why));
            };
            // Kept until the session referencing it is in: an org deleted
            // meanwhile is no org to log in to (403, as once the deletion
            // is seen), not a failed insert.
            let Some(org) = tx.org_for_reference(membership.org_id)? else {
                return Ok(Err(MfaError::SignInRefused("that org no longer exists")));
            };
            let factors = load_factors(tx, user.id)?;
            let decision = match decide_login(&org, membership, &user, &factors, now) {
                Ok(decision) => decision,
                Err(refusal) => return refuse(tx, Some(org.id), refusal),
            };
            let (level, ttl) = match decision.requirement {
                MfaRequirement::None => (AssuranceLevel::Full, config.session_ttl_secs),
                // A partial session never outlives a full one: an operator
                // who shortens sessions shortens what a password alone opens.
                _ => (
                    AssuranceLevel::Partial,
                    config.partial_session_ttl_secs.min(config.session_ttl_secs),
                ),
            };
            // A session the grace period let in without MFA ends with the
            // grace period: otherwise a login just before it ended would
            // work on without a factor for a whole session's life.
            let expires_at = match decision.setup_due_at {
                Some(due) => now.plus_secs(ttl).min(due),
                None => now.plus_secs(ttl),
            };
            tx.insert_session(&NewSession {
                token_hash: hash_token(&token),
                user_id: user.id,
                org_id: org.id,
                level,
                created_at: now,
                expires_at,
            })?;
            tx.set_last_login(user.id, now)?;
            audit(
                tx,
                now,
                Some(org.id),
                Actor {
                    user: Some(user.id),
                    ..by
                },
                Some(user.id),
                AuditAction::LoginSucceeded,
                format!("mfa: {}", decision.requirement.as_str()),
            )?;
            Ok(Ok(LoginResult {
                token: token.clone(),
                expires_at,
                user_id: user.id,
                org_id: org.id,
                decision,
            }))
        })
    }

    /// Resolve a bearer token to its caller. Missing, unknown, revoked,
    /// expired and idle sessions, deleted users and inactive memberships
    /// are all `Unauthorized`.
    pub fn authenticate(&self, token: &str) -> MfaResult<Caller> {
        let now = self.now();
        let token_hash = bearer_token_hash(token)?;
        let found = self
            .store
            .read_statement(|tx| Ok(tx.session_member(&token_hash)?))?;
        self.caller_of(found.ok_or(MfaError::Unauthorized)?, now)
    }

    /// The caller of a session found by its token, or `Unauthorized` if
    /// the session is not live or the membership is not active. Nothing
    /// is written.
    pub(super) fn live_caller(&self, found: &SessionMember, now: Timestamp) -> MfaResult<Caller> {
        let SessionMember {
            session,
            is_super_admin,
            membership,
        } = found;
        let live = session.revoked_at.is_none()
            && now < session.expires_at
            && (session.level == AssuranceLevel::Partial
                || session.last_seen_at.secs_until(now) < self.config.session_idle_secs);
        if !live {
            return Err(MfaError::Unauthorized);
        }
        let membership = membership
            .as_ref()
            .filter(|m| m.is_active)
            .ok_or(MfaError::Unauthorized)?;
        Ok(Caller {
            session_id: session.id,
            token_hash: session.token_hash.clone(),
            user_id: session.user_id,
            org_id: session.org_id,
            level: session.level,
            is_super_admin: *is_super_admin,
            is_org_admin: membership.is_active_admin(),
            mfa_passed: session.mfa_passed,
            client: None,
        })
    }

    /// [`MfaService::live_caller`], and the session noted as seen (at most
    /// once per `last_seen_granularity_secs`).
    pub(crate) fn caller_of(&self, found: SessionMember, now: Timestamp) -> MfaResult<Caller> {
        let caller = self.live_caller(&found, now)?;
        let last_seen = found.session.last_seen_at;
        if last_seen.secs_until(now) >= self.config.last_seen_granularity_secs {
            self.write(|tx| {
                tx.touch_session(caller.session_id, now)?;
                Ok(())
            })?;
        }
        Ok(caller)
    }

    /// Count a password guess for the (normalised) `email` under the
    /// address, committed before argon2 runs, so that racing checks
    /// cannot all run before a lockout (`TooManyAttempts` while it is
    /// locked out, audited in `audit_org`). `user` is the account that has
    /// the address, if one does.
    pub(crate) fn reserve_password_attempt<'a>(
        &self,
        email: &'a str,
        user: Option<UserId>,
        by: Actor,
        audit_org: Option<OrgId>,
        now: Timestamp,
    ) -> MfaResult<Attempt<'a>> {
        let trace = AttemptTrace {
            user,
            by,
            org: audit_org,
            what: "password",
            address: Some(email),
        };
        let subject = FailureSubject::Email(email);
        let attempt = self.write_then_refusal_audited(&trace, now, |tx| {
            reserve_attempt(tx, &self.config.password_lockout, subject, now).map(Ok)
        })?;
        Ok(attempt.for_account(user, by))
    }

    /// Record a wrong password given outside a login (counted before by
    /// [`Self::reserve_password_attempt`]) as a login's is: audited as
    /// `login_failed` in `audit_org` with `detail`, and refused
    /// (`InvalidCredentials`, or `TooManyAttempts` when it starts a
    /// lockout). A right one's attempt the caller clears.
    pub(crate) fn refuse_wrong_password<T: Send>(
        &self,
        attempt: &Attempt<'_>,
        audit_org: Option<OrgId>,
        now: Timestamp,
        detail: &str,
    ) -> MfaResult<T> {
        self.write_then(|tx| Ok(Err(fail_password(tx, attempt, audit_org, now, detail)?)))
    }

    /// End the caller's session.
    pub fn logout(&self, caller: &Caller) -> MfaResult<()> {
        let now = self.now();
        self.write(|tx| {
            tx.revoke_session(caller.session_id, now)?;
            audit_own(tx, caller, now, AuditAction::Logout, "")
        })
    }

    /// End the sessions of `user`, as Keycloak's "sign out" of a user does:
    /// for a laptop left logged in or a session that should not be, where
    /// the user's factors are still theirs (a lost phone is a reset).
    ///
    /// The user themselves ends every session but the caller's; an admin
    /// of the current org ends all of an active member's sessions, in
    /// every org (as a reset does), and is held to the rules of a reset:
    /// a superadmin's sessions are a superadmin's to end, and an admin
    /// with a factor must have verified it in this session. Audited
    /// `sessions_ended` in each org of the user, with how many ended; how
    /// many is the answer.
    pub fn end_sessions(&self, caller: &crate::authz::FullCaller, user: UserId) -> MfaResult<u64> {
        let now = self.now();
        let own = caller.user_id == user;
        if !own {
            crate::authz::require_current_org_admin(caller)?;
        }
        self.write(|tx| {
            let except = if own {
                // Held as an admin's sign-out holds it: a login finishing
                // meanwhile either committed its session before (ended
                // here) or waits for this one.
                lock_user(tx, user)?;
                Some(caller.session_id)
            } else {
                // The org's lock before the user's, as every admin's write.
                self.require_admin_step_up(tx, caller)?;
                lock_user(tx, user)?;
                let membership = tx.membership(user, caller.org_id)?;
                crate::authz::require_member_of_current_org(
                    membership.as_ref().filter(|m| m.is_active),
                )?;
                let target = load_user(tx, user)?;
                crate::authz::require_may_manage(caller, target.is_super_admin)?;
                None
            };
            let ended = tx.revoke_user_sessions(user, None, except, now)?;
            if own && ended == 0 {
                // Nothing happened: no event (an admin's call is one, as
                // what they meant to do).
                return Ok(0);
            }
            let (other, by) = if own {
                ("other ", "the user")
            } else {
                ("", "an admin")
            };
            let detail = match ended {
                0 => format!("no {other}session was open; by {by}"),
                n => format!("{} ended by {by}", sessions_in_words(n, other)),
            };
            let event = caller_event(caller, now, user, AuditAction::SessionsEnded, detail);
            audit_sign_in_change(tx, event)?;
            Ok(ended)
        })
    }

    /// Email a login code to a user with a verified email factor (partial ok).
    pub fn send_login_code(&self, caller: &Caller) -> MfaResult<CodeSent> {
        let user = self.store.read(|tx| {
            if tx.email_factor_verified_at(caller.user_id)?.is_none() {
                return Err(MfaError::NotEnrolled("no verified email factor"));
            }
            load_user(tx, caller.user_id)
        })?;
        self.send_email_code(caller, &user, EmailCodePurpose::Login)
    }

    /// Store a fresh code (voiding the previous), then mail it; if the mail
    /// cannot be sent the code is deleted again, so no code stays valid that
    /// the user never received.
    pub(crate) fn send_email_code(
        &self,
        caller: &Caller,
        user: &User,
        purpose: EmailCodePurpose,
    ) -> MfaResult<CodeSent> {
        let now = self.now();
        let config = &self.config;
        let code = new_numeric_code(self.rng.as_ref(), config.email_code_digits);
        let salt = new_salt(self.rng.as_ref());
        let expires_at = now.plus_secs(config.email_code_ttl_secs);
        let stored = self.write(|tx| {
            // Under the user's lock, so that racing sends read each other's
            // code: without it, on PostgreSQL, each saw none and mailed one.
            lock_user(tx, user.id)?;
            check_code_lockout(tx, &config.code_lockout, user.id, now)?;
            if let Some(last) = tx.latest_email_code(user.id)? {
                throttle_mail(last.sent_at, now, config.email_resend_interval_secs)?;
            }
            let stored = tx.replace_email_code(&NewEmailCode {
                user_id: user.id,
                purpose,
                code_hash: tx.email_code_digest(&hash_email_code(&salt, &code)),
                salt: salt.clone(),
                sent_at: now,
                expires_at,
            })?;
            let action = match purpose {
                EmailCodePurpose::Enroll => AuditAction::EmailEnrollmentStarted,
                EmailCodePurpose::Login => AuditAction::EmailCodeSent,
            };
            audit(
                tx,
                now,
                Some(caller.org_id),
                Actor::caller(caller),
                Some(user.id),
                action,
                "",
            )?;
            Ok(stored)
        })?;
        let valid_for_secs = config.email_code_ttl_secs;
        let kind = match purpose {
            EmailCodePurpose::Enroll => MailKind::EnrollmentCode {
                code,
                valid_for_secs,
            },
            EmailCodePurpose::Login => MailKind::LoginCode {
                code,
                valid_for_secs,
            },
        };
        if let Err(e) = self.deliver(&user.email, kind) {
            // A message that may still arrive keeps its code working; one
            // that was not taken is withdrawn, and the trail says so next
            // to the event of its sending.
            if !matches!(e, MfaError::MailUnconfirmed { .. }) {
                self.write(|tx| {
                    tx.delete_email_code(stored.id)?;
                    audit(
                        tx,
                        now,
                        Some(caller.org_id),
                        Actor::caller(caller),
                        Some(user.id),
                        AuditAction::EmailCodeWithdrawn,
                        "the mail server did not take the message",
                    )
                })?;
            }
            return Err(e);
        }
        Ok(CodeSent {
            sent_to: mask_email(&user.email),
            expires_at,
        })
    }

    /// Check an emailed code of `purpose` and consume it. Returns the
    /// refusal to report (after counting it) or the attempt, for the caller
    /// to clear once the rest of its transaction succeeded. The caller
    /// holds the user's lock ([`lock_user`]).
    ///
    /// `NotEnrolled`, uncounted, when no code of this purpose was sent
    /// (none at all, or the last was for the other purpose: the
    /// enrollment's for a login; or its mail failed, or it was purged): as
    /// for an authenticator not enrolled, an attempt that could never be
    /// checked is no attempt, locked out or not. (Counted, a client that
    /// verified before asking for a code locked its user out.) A code
    /// used stays a counted wrong code, as a replayed authenticator code
    /// does.
    pub(crate) fn check_email_code(
        &self,
        tx: &mut dyn StoreTx,
        caller: &Caller,
        purpose: EmailCodePurpose,
        candidate: &str,
        now: Timestamp,
    ) -> MfaResult<MfaResult<Attempt<'static>>> {
        let latest = tx
            .latest_email_code(caller.user_id)?
            .filter(|c| c.purpose == purpose);
        let voided = latest.as_ref().is_some_and(EmailCode::is_voided);
        let Some(latest) = latest.filter(|c| !c.is_voided()) else {
            return Err(MfaError::NotEnrolled(match (purpose, voided) {
                (_, true) => {
                    "the email code is no longer valid (an MFA reset or an email change voided \
                     it): ask for a new one"
                }
                (EmailCodePurpose::Enroll, false) => "no email code was sent: ask for one first",
                (EmailCodePurpose::Login, false) => "no login code was sent: ask for one first",
            }));
        };
        let attempt = self.lock_code_attempt(tx, caller, now)?;
        let org = Some(caller.org_id);
        let fail = |tx: &mut dyn StoreTx, detail: &str, refusal: MfaError| {
            let action = AuditAction::MfaVerifyFailed;
            match purpose {
                // A login's code: the session was opened with the password.
                EmailCodePurpose::Login => {
                    self.fail_factor_attempt(tx, &attempt, org, now, action, detail)
                }
                EmailCodePurpose::Enroll => {
                    fail_attempt(tx, &attempt, org, now, action, detail, refusal)
                }
            }
            .map(Err)
        };
        if !mfa_totp::is_well_formed_code(candidate, self.config.email_code_digits) {
            return fail(tx, "email code malformed", MfaError::InvalidCode);
        }
        let live = Some(latest).filter(|c| c.consumed_at.is_none());
        let Some(code) = live else {
            return fail(tx, "no live email code", MfaError::InvalidCode);
        };
        let digest = tx.email_code_digest(&hash_email_code(&code.salt, candidate));
        if !constant_time_eq(&digest, &code.code_hash) {
            return fail(tx, "wrong email code", MfaError::InvalidCode);
        }
        if now >= code.expires_at {
            // The right code, too late: not a guess, so not counted;
            // recorded all the same.
            audit_own(
                tx,
                caller,
                now,
                AuditAction::MfaVerifyFailed,
                "email code expired",
            )?;
            return Ok(Err(MfaError::CodeExpired));
        }
        if !tx.consume_email_code(code.id, now)? {
            return fail(tx, "email code already used", MfaError::InvalidCode);
        }
        Ok(Ok(attempt))
    }

    /// Check a TOTP code against the user's verified authenticator and
    /// record its step as used. Replays are refused, audited and mailed.
    fn check_authenticator_code(
        &self,
        tx: &mut dyn StoreTx,
        caller: &Caller,
        candidate: &str,
        now: Timestamp,
        replayed: &mut bool,
    ) -> MfaResult<MfaResult<Attempt<'static>>> {
        let (state, authenticator) =
            tx.lock_failure_state_and_authenticator(caller.user_id, FailureKind::Code)?;
        // Enrollment first, as for email and recovery codes: an attempt
        // that could never be checked is no attempt, locked out or not.
        let authenticator = authenticator
            .filter(|a| a.is_verified())
            .ok_or(MfaError::NotEnrolled("no verified authenticator"))?;
        let attempt = locked_attempt(
            &self.config.code_lockout,
            FailureKind::Code,
            caller.user_id,
            Actor::caller(caller),
            &state,
            now,
        )?;
        let (detail, action) = match self.match_totp(&authenticator, candidate, now) {
            Ok(step) if tx.accept_totp_step(caller.user_id, step)? => return Ok(Ok(attempt)),
            // Another request accepted this step between our read and write.
            Ok(_) | Err(VerifyError::Replayed { .. }) => {
                *replayed = true;
                ("authenticator code replayed", AuditAction::ReplayRefused)
            }
            Err(VerifyError::Malformed) => {
                ("authenticator code malformed", AuditAction::MfaVerifyFailed)
            }
            Err(VerifyError::Mismatch) => {
                ("wrong authenticator code", AuditAction::MfaVerifyFailed)
            }
        };
        let refusal =
            self.fail_factor_attempt(tx, &attempt, Some(caller.org_id), now, action, detail)?;
        Ok(Err(refusal))
    }

    /// The step `candidate` matches on a verified authenticator, judged
    /// alike by the locked path and the fast path of a code check.
    fn match_totp(
        &self,
        authenticator: &Authenticator,
        candidate: &str,
        now: Timestamp,
    ) -> Result<u64, VerifyError> {
        mfa_totp::verify_totp(
            &authenticator.secret,
            candidate,
            now.unix_secs(),
            &authenticator.params,
            self.config.totp_window,
            authenticator.last_used_step,
        )
    }

    /// Verify a second factor on the caller's session. On success the
    /// session is replaced by a new full one (the old token is revoked at
    /// once) and the code-failure counter is reset.
    pub fn verify_mfa(
        &self,
        caller: &Caller,
        method: MfaMethod,
        code: &str,
    ) -> MfaResult<NewToken> {
        let now = self.now();
        let owner = CodeOwner::Session {
            user: caller.user_id,
            session: caller.session_id,
        };
        if method == MfaMethod::Authenticator
            && let Some((token, _)) =
                self.apply_authenticator_success(owner, Some(caller), caller.client, code, now)?
        {
            return Ok(token);
        }
        self.verify_mfa_locked(caller, method, code, now).0
    }

    /// [`MfaService::authenticate`] and [`MfaService::verify_mfa`] for the
    /// session of a bearer token. A right authenticator code takes the
    /// store's fast path with the token's session found in the same read;
    /// everything else resolves the token first, exactly as
    /// `authenticate` does (a token that is no good is `Unauthorized`
    /// before any code is looked at), and takes the locked path.
    /// The trail records no client address; a server gives one to
    /// [`MfaService::verify_mfa_of_token_noting_replay`].
    pub fn verify_mfa_of_token(
        &self,
        token: &str,
        method: MfaMethod,
        code: &str,
    ) -> MfaResult<NewToken> {
        self.verify_mfa_of_token_noting_replay(token, method, code, None)
            .result
    }

    /// [`MfaService::verify_mfa_of_token`], with what an adapter reports
    /// beside its answer ([`TokenVerification`]); `client` is the address
    /// the request came from, for the audit trail.
    pub fn verify_mfa_of_token_noting_replay(
        &self,
        token: &str,
        method: MfaMethod,
        code: &str,
        client: Option<IpAddr>,
    ) -> TokenVerification {
        let now = self.now();
        let refused = |refusal| TokenVerification {
            result: Err(refusal),
            replayed: false,
            user: None,
        };
        let token_hash = match bearer_token_hash(token) {
            Ok(hash) => hash,
            Err(refusal) => return refused(refusal),
        };
        if method == MfaMethod::Authenticator {
            let owner = CodeOwner::Token(&token_hash);
            match self.apply_authenticator_success(owner, None, client, code, now) {
                Ok(Some((token, user))) => {
                    return TokenVerification {
                        result: Ok(token),
                        replayed: false,
                        user: Some(user),
                    };
                }
                Ok(None) => {}
                Err(failure) => return refused(failure),
            }
        }
        match self.authenticate(token) {
            Ok(caller) => {
                let caller = caller.from_client(client);
                let (result, replayed) = self.verify_mfa_locked(&caller, method, code, now);
                TokenVerification {
                    result,
                    replayed,
                    user: Some(caller.user_id),
                }
            }
            Err(refusal) => refused(refusal),
        }
    }

    /// [`MfaService::verify_mfa`] under the user's lock, in one write
    /// transaction: decides every refusal. Also whether a replayed
    /// authenticator code was refused.
    fn verify_mfa_locked(
        &self,
        caller: &Caller,
        method: MfaMethod,
        code: &str,
        now: Timestamp,
    ) -> (MfaResult<NewToken>, bool) {
        // argon2 runs outside the transaction: it takes milliseconds and
        // SQLite has one writer.
        let recovery_match = match method {
            MfaMethod::Recovery => {
                let matched = self.recovery_code_begin(caller, code).and_then(|check| {
                    self.recovery_match_of(caller, self.check_recovery_code(check))
                });
                match matched {
                    Ok(matched) => Some(matched),
                    Err(refusal) => return (Err(refusal), false),
                }
            }
            _ => None,
        };
        self.verify_mfa_checked(caller, method, code, recovery_match, now)
    }

    /// The last step of [`MfaService::verify_mfa`] with a recovery code
    /// ([`MfaService::recovery_code_begin`],
    /// [`MfaService::check_recovery_code`]): the code used and the session
    /// made full under a new token, or the failure counted.
    pub fn verify_recovery_code(
        &self,
        caller: &Caller,
        checked: RecoveryChecked,
    ) -> MfaResult<NewToken> {
        let now = checked.now;
        let recovery_match = self.recovery_match_of(caller, checked)?;
        self.verify_mfa_checked(caller, MfaMethod::Recovery, "", Some(recovery_match), now)
            .0
    }

    /// [`MfaService::verify_mfa_locked`]'s transaction, a recovery code
    /// already matched (`recovery_match`, for [`MfaMethod::Recovery`]).
    fn verify_mfa_checked(
        &self,
        caller: &Caller,
        method: MfaMethod,
        code: &str,
        recovery_match: Option<Option<i64>>,
        now: Timestamp,
    ) -> (MfaResult<NewToken>, bool) {
        let mut replayed = false;
        let trace = AttemptTrace {
            user: Some(caller.user_id),
            by: Actor::caller(caller),
            org: Some(caller.org_id),
            what: match method {
                MfaMethod::Authenticator => "authenticator code",
                MfaMethod::Email => "email code",
                MfaMethod::Recovery => "recovery code",
            },
            address: None,
        };
        let result = self.write_then_refusal_audited(&trace, now, |tx| {
            let checked = match method {
                MfaMethod::Authenticator => {
                    self.check_authenticator_code(tx, caller, code, now, &mut replayed)?
                }
                MfaMethod::Email => {
                    lock_user(tx, caller.user_id)?;
                    if tx.email_factor_verified_at(caller.user_id)?.is_none() {
                        return Err(MfaError::NotEnrolled("no verified email factor"));
                    }
                    self.check_email_code(tx, caller, EmailCodePurpose::Login, code, now)?
                }
                MfaMethod::Recovery => match recovery_match {
                    Some(matched) => self.consume_recovery_match(tx, caller, matched, now)?,
                    None => return Err(MfaError::InvalidCode),
                },
            };
            let attempt = match checked {
                Ok(attempt) => attempt,
                Err(refusal) => {
                    if replayed && !replay_told_lately(tx, caller.user_id, now)? {
                        self.notify_owner(tx, caller.user_id, MailKind::ReplayRefused)?;
                    }
                    return Ok(Err(refusal));
                }
            };
            clear_attempt(tx, &attempt)?;
            audit_own(
                tx,
                caller,
                now,
                AuditAction::MfaVerifySucceeded,
                format!("method: {}", method.as_str()),
            )?;
            if method == MfaMethod::Recovery {
                let remaining = tx.unused_recovery_codes(caller.user_id)?;
                self.notify_owner(tx, caller.user_id, MailKind::RecoveryCodeUsed { remaining })?;
            }
            Ok(Ok(self.upgrade_session(tx, caller, now)?))
        });
        (result, replayed)
    }

    /// The store's fast path for the common case of a verify: a right
    /// authenticator code from a user with no failures
    /// ([`Store::apply_authenticator_success`]). It writes what the locked
    /// path writes for that case: the step spent, the session made full
    /// under a new token, the success audited; no failure to clear, no
    /// mail. `None` when it applied nothing: the locked path then checks
    /// the code again and decides.
    fn apply_authenticator_success(
        &self,
        owner: CodeOwner<'_>,
        caller: Option<&Caller>,
        client: Option<IpAddr>,
        code: &str,
        now: Timestamp,
    ) -> MfaResult<Option<(NewToken, UserId)>> {
        // The token is made only for a code that matched.
        let mut issued = None;
        let applied =
            self.store
                .apply_authenticator_success(owner, |member, failures, authenticator| {
                    // A token's session is checked as `authenticate` checks
                    // it (its last-seen time is set by the rotation).
                    let resolved;
                    let caller = match (caller, member) {
                        (Some(caller), _) => caller,
                        (None, Some(member)) => {
                            resolved = self.live_caller(member, now).ok()?.from_client(client);
                            &resolved
                        }
                        (None, None) => return None,
                    };
                    let clear = failures.failures == 0
                        && self
                            .config
                            .code_lockout
                            .retry_after(failures, now)
                            .is_none();
                    if !clear || !authenticator.is_verified() {
                        return None;
                    }
                    let step = self.match_totp(authenticator, code, now).ok()?;
                    let (token, rotation) = self.full_session(now, &caller.token_hash);
                    issued = Some((
                        NewToken {
                            token,
                            expires_at: rotation.expires_at,
                        },
                        caller.user_id,
                    ));
                    Some(AuthenticatorSuccess {
                        step,
                        rotation,
                        audit: own_event(
                            caller,
                            now,
                            AuditAction::MfaVerifySucceeded,
                            format!("method: {}", MfaMethod::Authenticator.as_str()),
                        ),
                    })
                })?;
        Ok(if applied { issued } else { None })
    }

    /// Make the caller's session full under a new token: the old token
    /// stops working at once (a token is never promoted, so one captured
    /// before MFA is worth nothing after it). `Unauthorized` if the session
    /// ended meanwhile (a logout, or an admin reset revoking it).
    pub(crate) fn upgrade_session(
        &self,
        tx: &mut dyn StoreTx,
        caller: &Caller,
        now: Timestamp,
    ) -> MfaResult<NewToken> {
        let (token, rotation) = self.full_session(now, &caller.token_hash);
        if !tx.rotate_session(caller.session_id, &rotation)? {
            return Err(MfaError::Unauthorized);
        }
        Ok(NewToken {
            token,
            expires_at: rotation.expires_at,
        })
    }

    /// A new token, and the rotation that makes a session full under it,
    /// if it still has the token whose hash is `presented`.
    fn full_session(&self, now: Timestamp, presented: &str) -> (String, SessionRotation) {
        let token = new_token(self.rng.as_ref());
        let rotation = SessionRotation {
            presented_token_hash: presented.to_string(),
            token_hash: hash_token(&token),
            level: AssuranceLevel::Full,
            expires_at: now.plus_secs(self.config.session_ttl_secs),
            now,
        };
        (token, rotation)
    }

    /// The first step of a check of a recovery code `candidate` given by
    /// `caller`: the caller's unused codes read (`TooManyAttempts` while
    /// the caller is locked out, so that nothing is hashed then). It
    /// writes nothing but the audit of such a refusal: the attempt is
    /// counted by the last step, in the transaction that decides it.
    /// [`MfaService::check_recovery_code`] is next; then the step that
    /// uses it ([`MfaService::verify_recovery_code`],
    /// [`MfaService::self_reset_finish`]). `NotEnrolled` when the user has
    /// no verified factor for a code to stand in for.
    pub fn recovery_code_begin(
        &self,
        caller: &Caller,
        candidate: &str,
    ) -> MfaResult<RecoveryCheck> {
        let now = self.now();
        let trace = AttemptTrace {
            user: Some(caller.user_id),
            by: Actor::caller(caller),
            org: Some(caller.org_id),
            what: "recovery code",
            address: None,
        };
        let (failures, codes) = self.store.read(|tx| {
            require_verified_factor(tx, caller.user_id)?;
            Ok((
                tx.failure_state(caller.user_id, FailureKind::Code)?,
                tx.recovery_codes(caller.user_id)?,
            ))
        })?;
        self.refuse_while_locked_audited(&trace, &self.config.code_lockout, &failures, now)?;
        Ok(RecoveryCheck {
            now,
            user: caller.user_id,
            candidate: normalize_recovery_code(candidate),
            codes: codes.into_iter().filter(|c| c.used_at.is_none()).collect(),
        })
    }

    /// The second step of a check of a recovery code: which of the
    /// caller's unused codes it is (argon2id, at most once per code). It
    /// reads and writes nothing: its only work is hashing.
    pub fn check_recovery_code(&self, check: RecoveryCheck) -> RecoveryChecked {
        let RecoveryCheck {
            now,
            user,
            candidate,
            codes,
        } = check;
        let matched = candidate.and_then(|normalized| {
            codes
                .iter()
                .find(|c| self.hasher.verify(&normalized, &c.code_hash))
                .map(|c| c.id)
        });
        RecoveryChecked { now, user, matched }
    }

    /// The match of a recovery code checked for `caller` (begun and
    /// checked here): the id of the code it matched, if any. Refused as a
    /// wrong code when it was checked for another user.
    pub(crate) fn recovery_match_of(
        &self,
        caller: &Caller,
        checked: RecoveryChecked,
    ) -> MfaResult<Option<i64>> {
        if checked.user != caller.user_id {
            return Err(MfaError::InvalidCode);
        }
        Ok(checked.matched)
    }

    /// Count the attempt with the recovery code [`Self::check_recovery_code`]
    /// matched (`TooManyAttempts`, uncounted, when a lockout began since
    /// the check started: racing attempts are decided one after another
    /// here, under the user's failure state), then consume the code, or
    /// report the failure. On success the caller resets the failure count.
    pub(crate) fn consume_recovery_match(
        &self,
        tx: &mut dyn StoreTx,
        caller: &Caller,
        matched: Option<i64>,
        now: Timestamp,
    ) -> MfaResult<MfaResult<Attempt<'static>>> {
        let attempt = &self.lock_code_attempt(tx, caller, now)?;
        // Checked again in this transaction: a factor removed since the
        // match leaves the codes nothing to stand in for.
        require_verified_factor(tx, caller.user_id)?;
        let consumed = match matched {
            Some(id) => tx.consume_recovery_code(id, now)?,
            None => false,
        };
        if !consumed {
            let refusal = self.fail_factor_attempt(
                tx,
                attempt,
                Some(caller.org_id),
                now,
                AuditAction::MfaVerifyFailed,
                "wrong or used recovery code",
            )?;
            return Ok(Err(refusal));
        }
        audit_own(tx, caller, now, AuditAction::RecoveryCodeUsed, "")?;
        Ok(Ok(*attempt))
    }
}

/// Recovery codes stand in for a verified factor: with none left (a self
/// reset or an admin's authenticator reset keeps the codes), a code must
/// not pass MFA, or it would spare the user the enrollment that
/// `setup_required` asks for.
fn require_verified_factor(tx: &mut dyn StoreTx, user: UserId) -> MfaResult<()> {
    if load_factors(tx, user)?.has_verified_factor() {
        Ok(())
    } else {
        Err(MfaError::NotEnrolled(
            "no verified authenticator or email factor for a recovery code to stand in for",
        ))
    }
}

/// Count and audit a wrong password (`login_failed`, with `detail`): the
/// refusal to answer, `InvalidCredentials` or the lockout it starts.
fn fail_password(
    tx: &mut dyn StoreTx,
    attempt: &Attempt<'_>,
    audit_org: Option<OrgId>,
    now: Timestamp,
    detail: &str,
) -> MfaResult<MfaError> {
    fail_attempt(
        tx,
        attempt,
        audit_org,
        now,
        AuditAction::LoginFailed,
        detail,
        MfaError::InvalidCredentials,
    )
}

//! The operations of the product as one service over the ports.
//!
//! Every operation is synchronous and may block (storage, argon2, mail):
//! the server calls it from its blocking thread pool. Each state change runs
//! in one store transaction together with its audit event. Where a refusal
//! must still leave a trace (a failed code counts toward the lockout and is
//! audited), the transaction commits the bookkeeping and the operation then
//! returns the error.

mod enroll;
mod notices;
mod operator;
mod orgs;
mod purge;
mod session;
mod users;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use mfa_totp::TotpParams;

use crate::authz::Caller;
use crate::crypto::{PasswordHasher, PasswordParams};
use crate::error::{MfaError, MfaResult};
use crate::model::*;
use crate::policy::{CLOCK_SKEW_TOLERANCE_SECS, FactorSummary, LockoutPolicy};
use crate::ports::{Clock, Mail, MailKind, Mailer, Randomness, SignInChange, Store, StoreTx};

pub use enroll::{HashedRecoveryCodes, MfaStatus, NewRecoveryCodes, PendingAuthenticator};
pub use notices::{
    NOTICE_FIRST_RETRY_SECS, NOTICE_LEASE_SECS, NOTICE_MAX_ATTEMPTS, NOTICE_MAX_RETRY_SECS,
    NOTICES_SENT_INLINE, NoticeOrder, NoticeOutcome, NoticeRun, NoticeWaker, retry_delay,
};
pub use operator::{OPERATOR, OperatorConsole, OperatorNewUser, OperatorReset};
pub use orgs::OrgPatch;
pub use purge::{
    CONFIRMED_EMAIL_CHANGE_RETENTION_SECS, ENDED_SESSION_RETENTION_SECS, PURGE_BATCH, Purged,
};
pub use session::{
    CodeSent, LOCKOUT_NOTICE_INTERVAL_SECS, LoginChecked, LoginResult, LoginStart, NewToken,
    REPLAY_NOTICE_INTERVAL_SECS, RecoveryCheck, RecoveryChecked, TokenVerification,
};
pub use users::{
    NewUserChecked, NewUserHashed, NewUserRequest, OrgMember, PendingEmail, UserPatch, UserRef,
    UserUpdate, UserUpdateChecked, UserWithFactors,
};

/// The deployment's environment. Outside production the issuer shown in
/// authenticator apps carries the environment name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Environment {
    /// The real thing.
    Production,
    /// A sandbox or test deployment.
    Sandbox,
}

impl Environment {
    /// `production` or `sandbox`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Sandbox => "sandbox",
        }
    }
}

/// Tunables of the service. `Default` gives the values of the API contract.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Issuer shown in authenticator apps.
    pub issuer: String,
    /// Production or sandbox.
    pub environment: Environment,
    /// TOTP algorithm, digits and period for new authenticators.
    pub totp: TotpParams,
    /// Steps accepted either side of the current one.
    pub totp_window: u64,
    /// Lifetime of a full session in seconds.
    pub session_ttl_secs: u64,
    /// A full session idle this long ends.
    pub session_idle_secs: u64,
    /// Lifetime of a partial session in seconds.
    pub partial_session_ttl_secs: u64,
    /// `last_seen_at` is written at most this often, so reads do not write.
    pub last_seen_granularity_secs: u64,
    /// Lifetime of a pending authenticator secret.
    pub pending_secret_ttl_secs: u64,
    /// Lifetime of an email code.
    pub email_code_ttl_secs: u64,
    /// Digits of an email code.
    pub email_code_digits: u32,
    /// At most one email code per user per this many seconds.
    pub email_resend_interval_secs: u64,
    /// Lifetime of an email-change confirmation token.
    pub email_change_ttl_secs: u64,
    /// Lockout after consecutive code failures.
    pub code_lockout: LockoutPolicy,
    /// Lockout after consecutive password failures.
    pub password_lockout: LockoutPolicy,
    /// argon2id cost for passwords and recovery codes.
    pub password_params: PasswordParams,
    /// The zxcvbn score (0 to 4) a new password must reach
    /// ([`crate::crypto::check_password_strength`]); 0 checks only the
    /// length.
    pub password_min_strength: u8,
    /// Most ids one reset may name.
    pub max_reset_ids: usize,
    /// Audit events older than this many seconds are deleted by
    /// [`MfaService::purge`]; `None` keeps them for good.
    pub audit_retention_secs: Option<u64>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            issuer: "MFA Server".into(),
            environment: Environment::Production,
            totp: TotpParams::default(),
            totp_window: mfa_totp::DEFAULT_WINDOW,
            session_ttl_secs: 12 * 3600,
            session_idle_secs: 30 * 60,
            partial_session_ttl_secs: 10 * 60,
            last_seen_granularity_secs: 60,
            pending_secret_ttl_secs: 10 * 60,
            email_code_ttl_secs: 10 * 60,
            email_code_digits: 6,
            email_resend_interval_secs: 30,
            email_change_ttl_secs: 24 * 3600,
            code_lockout: LockoutPolicy::default(),
            password_lockout: LockoutPolicy::default(),
            password_params: PasswordParams::default(),
            password_min_strength: crate::crypto::DEFAULT_PASSWORD_MIN_STRENGTH,
            max_reset_ids: 10_000,
            audit_retention_secs: None,
        }
    }
}

impl ServiceConfig {
    /// Refuse values no deployment can work with: TOTP digits other than
    /// 6 or 8 or a period of 0 (apps refuse such otpauth URIs, and
    /// `mfa_totp::OtpauthUri::parse` does too), an issuer too long for a
    /// QR code ([`mfa_totp::MAX_ISSUER_BYTES`]), email codes of fewer than
    /// 6 or more than 10 digits, a verify window over 10 steps, lifetimes
    /// of zero, and no ids per reset. The argon2 parameters are checked by
    /// [`PasswordHasher::new`]; how weak they may be is the caller's
    /// choice (tests choose weak ones; the server refuses them from its
    /// operator).
    pub fn check(&self) -> MfaResult<()> {
        let refuse = |what: &str| {
            Err(MfaError::InvalidRequest(format!(
                "service configuration: {what}"
            )))
        };
        if let Err(e) = TotpParams::new(self.totp.algorithm, self.totp.digits, self.totp.period) {
            return refuse(&e.to_string());
        }
        let shown_issuer =
            mfa_totp::issuer_for_environment(&self.issuer, self.environment.as_str());
        if shown_issuer.len() > mfa_totp::MAX_ISSUER_BYTES {
            return refuse(&format!(
                "the issuer shown in apps must be at most {} bytes in UTF-8, or its QR code \
                 would not hold every address",
                mfa_totp::MAX_ISSUER_BYTES
            ));
        }
        if shown_issuer.contains(':') {
            return refuse("the issuer must not contain `:`, which ends it in an otpauth label");
        }
        if !(6..=10).contains(&self.email_code_digits) {
            return refuse("email_code_digits must be between 6 and 10");
        }
        if self.totp_window > mfa_totp::MAX_WINDOW {
            return refuse("totp_window must be at most 10 steps");
        }
        let lifetimes = [
            ("session_ttl_secs", self.session_ttl_secs),
            ("session_idle_secs", self.session_idle_secs),
            ("partial_session_ttl_secs", self.partial_session_ttl_secs),
            ("pending_secret_ttl_secs", self.pending_secret_ttl_secs),
            ("email_code_ttl_secs", self.email_code_ttl_secs),
            ("email_change_ttl_secs", self.email_change_ttl_secs),
        ];
        if let Some((name, _)) = lifetimes.iter().find(|(_, secs)| *secs == 0) {
            return refuse(&format!("{name} must be more than 0"));
        }
        if self.max_reset_ids == 0 {
            return refuse("max_reset_ids must be at least 1");
        }
        if self.password_min_strength > 4 {
            return refuse("password_min_strength must be between 0 and 4");
        }
        Ok(())
    }
}

/// The MFA administration service: every operation of the product.
pub struct MfaService<S: Store> {
    store: S,
    mailer: Arc<dyn Mailer>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn Randomness>,
    config: ServiceConfig,
    hasher: PasswordHasher,
    /// Wakes the sender of queued notices; `None`: each request sends the
    /// notices it queued itself, after its commit.
    notice_waker: Option<NoticeWaker>,
    /// Transactions that queued notices, ever (see [`MfaService::write`]).
    notices_queued: AtomicU64,
    /// Refusals of the password step audited lately, by address.
    password_refusals: RefusalAudits,
}

impl<S: Store> MfaService<S> {
    /// Compose the service from its ports, once [`ServiceConfig::check`]
    /// accepts the configuration.
    pub fn new(
        store: S,
        mailer: Arc<dyn Mailer>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn Randomness>,
        config: ServiceConfig,
    ) -> MfaResult<Self> {
        config.check()?;
        let hasher = PasswordHasher::new(config.password_params, rng.as_ref())?;
        Ok(MfaService {
            store,
            mailer,
            clock,
            rng,
            config,
            hasher,
            notice_waker: None,
            notices_queued: AtomicU64::new(0),
            password_refusals: RefusalAudits::default(),
        })
    }

    /// The store, for adapters that need it directly (health checks).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Run one password check against no user, for the time it takes
    /// (the server measures its password threads with it at start).
    pub fn decoy_password_check(&self) {
        self.hasher.verify_decoy("decoy password check");
    }

    /// Give argon2's kept working memory back to the operating system (see
    /// [`PasswordHasher::release_memory`]); returns the bytes released.
    /// Servers call it when password checks have paused.
    pub fn release_password_memory(&self) -> usize {
        self.hasher.release_memory()
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Now, by the service's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Check a new password: its length, and how guessable it is with
    /// `context` (the user's email and names) counted as guessable words.
    pub(crate) fn check_new_password(&self, password: &str, context: &[&str]) -> MfaResult<()> {
        crate::crypto::check_password_rules(password)?;
        self.check_password_strength(password, context)
    }

    /// How guessable a new password is
    /// ([`crate::crypto::check_password_strength`] under the configured
    /// score). Tens of milliseconds of CPU for some passwords: a server
    /// runs it where it runs argon2, in the step that hashes.
    pub(crate) fn check_password_strength(
        &self,
        password: &str,
        context: &[&str],
    ) -> MfaResult<()> {
        crate::crypto::check_password_strength(password, context, self.config.password_min_strength)
    }

    /// `raw` normalised, as an address to store for a user: one the mailer
    /// can send to (`InvalidRequest` otherwise, as for a malformed one).
    pub(crate) fn new_address(&self, raw: &str) -> MfaResult<String> {
        let email = crate::text::normalize_email(raw)?;
        if !self.mailer.accepts_address(&email) {
            return Err(MfaError::InvalidRequest(
                "email is not an address mail can be sent to".into(),
            ));
        }
        Ok(email)
    }

    /// The issuer shown in authenticator apps, with the environment suffix
    /// outside production.
    pub fn display_issuer(&self) -> String {
        mfa_totp::issuer_for_environment(&self.config.issuer, self.config.environment.as_str())
    }

    /// Run a write transaction whose closure may ask to commit and still
    /// fail: `Ok(Err(e))` commits the bookkeeping, then returns `e`.
    fn write_then<T: Send>(
        &self,
        f: impl FnMut(&mut dyn StoreTx) -> MfaResult<MfaResult<T>> + Send,
    ) -> MfaResult<T> {
        self.write(f)?
    }

    /// [`Self::write_then`] for a transaction that checks a secret of
    /// `attempt.user`. A standing lockout refuses such a check by rolling
    /// the transaction back (a refused attempt must not count), so its
    /// audit event is written afterwards, in a transaction of its own:
    /// the contract wants an event for every locked-out verification, and
    /// the refusal changed nothing else. Inside these transactions only a
    /// standing lockout rolls back with `TooManyAttempts`; a failure that
    /// starts a lockout commits (`Ok(Err(..))`) and is audited with it.
    fn write_then_refusal_audited<T: Send>(
        &self,
        attempt: &AttemptTrace<'_>,
        now: Timestamp,
        f: impl FnMut(&mut dyn StoreTx) -> MfaResult<MfaResult<T>> + Send,
    ) -> MfaResult<T> {
        match self.write(f) {
            Ok(result) => result,
            Err(refusal) => Err(self.audit_locked_out_refusal(attempt, now, refusal)?),
        }
    }

    /// `refusal`, audited as `refused_while_locked_out` when it is a
    /// lockout's (the refused attempt's own transaction rolled back).
    fn audit_locked_out_refusal(
        &self,
        attempt: &AttemptTrace<'_>,
        now: Timestamp,
        refusal: MfaError,
    ) -> MfaResult<MfaError> {
        if let MfaError::TooManyAttempts { retry_after_secs } = refusal {
            let left_out = match attempt.address {
                Some(address) => match self
                    .password_refusals
                    .admit(address, attempt.by.client, now)
                {
                    Some(left_out) => left_out,
                    None => return Ok(refusal),
                },
                None => 0,
            };
            let mut detail = format!(
                "{} refused unchecked: locked out for {retry_after_secs} s more",
                attempt.what
            );
            if left_out > 0 {
                detail.push_str(&format!(
                    "; {left_out} more refused since the last such event (a minute records the first from each of {REFUSAL_AUDIT_CLIENTS} clients at most)"
                ));
            }
            let user = attempt.user;
            self.write(|tx| {
                audit(
                    tx,
                    now,
                    attempt.org,
                    attempt.by,
                    user,
                    AuditAction::RefusedWhileLockedOut,
                    detail.clone(),
                )
            })?;
        }
        Ok(refusal)
    }

    /// `TooManyAttempts`, audited, while `state` (read outside any write)
    /// holds a lockout; nothing is written otherwise.
    fn refuse_while_locked_audited(
        &self,
        attempt: &AttemptTrace<'_>,
        policy: &LockoutPolicy,
        state: &FailureState,
        now: Timestamp,
    ) -> MfaResult<()> {
        match refuse_while_locked(policy, state, now) {
            Ok(()) => Ok(()),
            Err(refusal) => Err(self.audit_locked_out_refusal(attempt, now, refusal)?),
        }
    }

    /// [`lock_attempt`] for `user`'s codes, under the configured policy.
    pub(crate) fn lock_code_attempt(
        &self,
        tx: &mut dyn StoreTx,
        caller: &Caller,
        now: Timestamp,
    ) -> MfaResult<Attempt<'static>> {
        lock_attempt(
            tx,
            &self.config.code_lockout,
            FailureKind::Code,
            caller.user_id,
            Actor::caller(caller),
            now,
        )
    }

    /// Deliver a message the caller cannot do without (a code).
    fn deliver(&self, to: &str, kind: MailKind) -> MfaResult<()> {
        self.mailer
            .send(&Mail {
                to: to.to_string(),
                kind,
            })
            .map_err(|e| {
                if e.delivery_unknown {
                    MfaError::MailUnconfirmed {
                        detail: e.message,
                        retry_after_secs: self.config.email_resend_interval_secs.max(1),
                    }
                } else if e.transient {
                    MfaError::MailUnavailable(e.message)
                } else {
                    MfaError::MailRefused(e.message)
                }
            })
    }
}

/// One mail of a kind per `interval_secs` per user: `MailThrottled`
/// (with the seconds to wait) until `interval_secs` after `last_sent`.
/// A `last_sent` more than [`CLOCK_SKEW_TOLERANCE_SECS`] still to come can
/// only be from a clock stepped back since: the wait is not stretched by
/// the step (a user whose only factor is email could not sign in for as
/// long), the mail goes. Within it (another process's clock a little
/// ahead), the wait holds.
pub(crate) fn throttle_mail(
    last_sent: Timestamp,
    now: Timestamp,
    interval_secs: u64,
) -> MfaResult<()> {
    let next_allowed = last_sent.plus_secs(interval_secs);
    let stepped_back = last_sent > now.plus_secs(CLOCK_SKEW_TOLERANCE_SECS);
    if !stepped_back && now < next_allowed {
        return Err(MfaError::MailThrottled {
            retry_after_secs: now.secs_until(next_allowed).max(1),
        });
    }
    Ok(())
}

/// `n` sessions in words, `kind` before the noun ("2 other sessions"),
/// for an audit detail.
pub(crate) fn sessions_in_words(n: u64, kind: &str) -> String {
    match n {
        1 => format!("1 {kind}session"),
        n => format!("{n} {kind}sessions"),
    }
}

/// An audit event: `by` did `action` to `target` in `org_id`.
pub(crate) fn event(
    at: Timestamp,
    org_id: Option<OrgId>,
    by: Actor,
    target: Option<UserId>,
    action: AuditAction,
    detail: impl Into<String>,
) -> NewAuditEvent {
    NewAuditEvent {
        at,
        org_id,
        actor_user_id: by.user,
        target_user_id: target,
        action,
        detail: detail.into(),
        client: by.client,
    }
}

/// The audit event of something the caller did to `target`, in their
/// current org.
pub(crate) fn caller_event(
    caller: &Caller,
    now: Timestamp,
    target: UserId,
    action: AuditAction,
    detail: impl Into<String>,
) -> NewAuditEvent {
    let org = Some(caller.org_id);
    event(
        now,
        org,
        Actor::caller(caller),
        Some(target),
        action,
        detail,
    )
}

/// Write one audit event inside the current transaction.
pub(crate) fn audit(
    tx: &mut dyn StoreTx,
    at: Timestamp,
    org_id: Option<OrgId>,
    by: Actor,
    target: Option<UserId>,
    action: AuditAction,
    detail: impl Into<String>,
) -> MfaResult<()> {
    tx.insert_audit(&event(at, org_id, by, target, action, detail))?;
    Ok(())
}

/// `event`, a change of how its target user signs in (a factor enrolled or
/// removed, new recovery codes, the account's password or names), as
/// written: in the org where it was made, and in each other org of
/// `memberships` (the user's), since a user's factors serve all their
/// orgs and each org's admins rely on them (an audit saw an org unable to
/// see that another org's admin had reset one of its admins). There an
/// admin of another org is not named, nor is the address they acted from.
pub(crate) fn sign_in_change_events(
    event: NewAuditEvent,
    memberships: &[Membership],
) -> Vec<NewAuditEvent> {
    let by_user_self = event.actor_user_id == event.target_user_id;
    let elsewhere = match event.detail.as_str() {
        "" => "in another org".to_string(),
        detail => format!("{detail}, in another org"),
    };
    let mut events: Vec<NewAuditEvent> = memberships
        .iter()
        .filter(|m| Some(m.user_id) == event.target_user_id && Some(m.org_id) != event.org_id)
        .map(|m| NewAuditEvent {
            org_id: Some(m.org_id),
            actor_user_id: event.actor_user_id.filter(|_| by_user_self),
            client: event.client.filter(|_| by_user_self),
            detail: elsewhere.clone(),
            ..event.clone()
        })
        .collect();
    events.insert(0, event);
    events
}

/// Write [`sign_in_change_events`] of `event`, with its target's
/// memberships read in `tx`.
pub(crate) fn audit_sign_in_change(tx: &mut dyn StoreTx, event: NewAuditEvent) -> MfaResult<()> {
    let memberships = match event.target_user_id {
        Some(user) => tx.memberships_of_user(user)?,
        None => Vec::new(),
    };
    tx.insert_audits(&sign_in_change_events(event, &memberships))?;
    Ok(())
}

/// [`audit_sign_in_change`] of what the caller did to their own factors.
pub(crate) fn audit_own_sign_in_change(
    tx: &mut dyn StoreTx,
    caller: &Caller,
    now: Timestamp,
    action: AuditAction,
    detail: impl Into<String>,
) -> MfaResult<()> {
    audit_sign_in_change(tx, own_event(caller, now, action, detail))
}

/// Write an audit event of something the caller did to themselves, in
/// their current org.
pub(crate) fn audit_own(
    tx: &mut dyn StoreTx,
    caller: &Caller,
    now: Timestamp,
    action: AuditAction,
    detail: impl Into<String>,
) -> MfaResult<()> {
    tx.insert_audit(&own_event(caller, now, action, detail))?;
    Ok(())
}

/// The audit event of something the caller did to themselves, in their
/// current org.
pub(crate) fn own_event(
    caller: &Caller,
    now: Timestamp,
    action: AuditAction,
    detail: impl Into<String>,
) -> NewAuditEvent {
    caller_event(caller, now, caller.user_id, action, detail)
}

/// The verified factors of a user.
pub(crate) fn load_factors(tx: &mut dyn StoreTx, user: UserId) -> MfaResult<FactorSummary> {
    Ok(load_factor_states(tx, user)?.0)
}

/// The verified factors of a user, and the state of their authenticator
/// (pending or verified), without decrypting its secret.
pub(crate) fn load_factor_states(
    tx: &mut dyn StoreTx,
    user: UserId,
) -> MfaResult<(FactorSummary, Option<AuthenticatorState>)> {
    Ok(summarize_factor_states(tx.factor_states(user)?))
}

/// The verified factors of `states`, and the authenticator's state.
pub(crate) fn summarize_factor_states(
    states: FactorStates,
) -> (FactorSummary, Option<AuthenticatorState>) {
    let summary = FactorSummary {
        authenticator: matches!(
            states.authenticator,
            Some(AuthenticatorState::Verified { .. })
        ),
        email: states.email_verified_at.is_some(),
        recovery_codes_left: states.recovery_codes_left,
    };
    (summary, states.authenticator)
}

/// The SHA-256 under which a bearer token's session is stored; a token
/// that no session can have is `Unauthorized` at once.
pub(crate) fn bearer_token_hash(token: &str) -> MfaResult<String> {
    if token.is_empty() || token.len() > 256 {
        return Err(MfaError::Unauthorized);
    }
    Ok(crate::crypto::hash_token(token))
}

/// Load a user who must exist (the caller's own record).
pub(crate) fn load_user(tx: &mut dyn StoreTx, id: UserId) -> MfaResult<User> {
    tx.user(id)?.ok_or(MfaError::NotFound("user"))
}

/// [`load_user`] under the user's lock ([`StoreTx::user_for_update`], the
/// lock [`lock_user`] takes), for a transaction that writes the row back
/// whole: a change another transaction committed meanwhile is read first,
/// never overwritten with what was read before it.
pub(crate) fn load_user_for_update(tx: &mut dyn StoreTx, id: UserId) -> MfaResult<User> {
    tx.user_for_update(id)?.ok_or(MfaError::NotFound("user"))
}

/// Refuse when the user is locked out for code failures.
pub(crate) fn check_code_lockout(
    tx: &mut dyn StoreTx,
    policy: &LockoutPolicy,
    user: UserId,
    now: Timestamp,
) -> MfaResult<()> {
    let state = tx.failure_state(user, FailureKind::Code)?;
    refuse_while_locked(policy, &state, now)
}

/// Whose secret a check is about, where its refusal is audited, and what
/// was presented (for the audit detail: `"authenticator code"`).
pub(crate) struct AttemptTrace<'a> {
    /// `None` for an email no user has.
    pub(crate) user: Option<UserId>,
    /// Who presented it, and from where.
    pub(crate) by: Actor,
    pub(crate) org: Option<OrgId>,
    pub(crate) what: &'a str,
    /// The address of a password attempt, whose refusals while locked out
    /// are audited at most once a minute ([`RefusalAudits`]); `None` for
    /// a code, whose every refusal is an event (the contract's rule).
    pub(crate) address: Option<&'a str>,
}

/// How often at most a refusal of one address's password step is audited
/// while it is locked out, by one server process.
pub const PASSWORD_REFUSAL_AUDIT_INTERVAL_SECS: u64 = 60;

/// The addresses [`RefusalAudits`] remembers at most.
const REFUSAL_AUDIT_ADDRESSES: usize = 10_000;

/// How many clients' refusals of one address a minute records at most.
const REFUSAL_AUDIT_CLIENTS: usize = 3;

/// A client as [`RefusalAudits`] tells clients apart: an IPv6 address by
/// its /64, which one machine may hold whole (an IPv4-mapped one as the
/// IPv4 address it is).
fn client_network(client: Option<IpAddr>) -> Option<IpAddr> {
    client.map(|ip| match ip.to_canonical() {
        v4 @ IpAddr::V4(_) => v4,
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
    })
}

/// The refusals of one address audited in the current minute.
struct RefusalWindow {
    /// When the minute began: its first refusal audited.
    since: Timestamp,
    /// The clients ([`client_network`]) whose first refusal in it was.
    clients: Vec<Option<IpAddr>>,
    /// Refusals left out since the last one audited.
    left_out: u64,
}

/// The refusals of the password step audited lately, by address, and
/// those left out since. A locked-out password step refuses without
/// hashing, in a few milliseconds, and needs no credential: anyone who
/// knows (or invents) an address could write hundreds of audit rows a
/// second by sending its password step again and again. A minute records
/// the first refusal from each of [`REFUSAL_AUDIT_CLIENTS`] clients at
/// most, counting those left out: the trail says the address was tried
/// while locked, from where, how often, and the owner's own attempt during
/// someone else's lockout shows beside it, while a client with many
/// addresses (an IPv6 /64 counts as one) writes no more rows for them.
#[derive(Default)]
struct RefusalAudits(std::sync::Mutex<HashMap<String, RefusalWindow>>);

impl RefusalAudits {
    /// Whether a refusal of `address` from `client` at `now` is audited:
    /// `Some(refusals left out since the last one audited)`, or `None` to
    /// leave it out (and count it).
    fn admit(&self, address: &str, client: Option<IpAddr>, now: Timestamp) -> Option<u64> {
        let client = client_network(client);
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(window) = seen.get_mut(address)
            && window.since.secs_until(now) < PASSWORD_REFUSAL_AUDIT_INTERVAL_SECS
            && window.since <= now
        {
            if window.clients.contains(&client) || window.clients.len() >= REFUSAL_AUDIT_CLIENTS {
                window.left_out += 1;
                return None;
            }
            window.clients.push(client);
            return Some(std::mem::take(&mut window.left_out));
        }
        if seen.len() >= REFUSAL_AUDIT_ADDRESSES && !seen.contains_key(address) {
            // Past the bound, forget the minutes that are over (and the
            // counts they hold back); if every one is still running, this
            // address's refusal is left out uncounted: the rows stay
            // bounded (cleared, the table let a client write a row per
            // request across 10,000 locked addresses).
            let cut = now.minus_secs(PASSWORD_REFUSAL_AUDIT_INTERVAL_SECS);
            seen.retain(|_, window| window.since > cut);
            if seen.len() >= REFUSAL_AUDIT_ADDRESSES {
                return None;
            }
        }
        let window = RefusalWindow {
            since: now,
            clients: vec![client],
            left_out: 0,
        };
        let left_out = seen
            .insert(address.to_string(), window)
            .map_or(0, |old| old.left_out);
        Some(left_out)
    }
}

/// Who did what an audit event records, and from where: its actor and
/// client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Actor {
    /// The signed-in user who did it. `None` for the bootstrap, the
    /// operator's commands, and a login's password step: no one is signed
    /// in yet, and whoever typed the password is not known to be the
    /// account's owner (the account is the target).
    pub(crate) user: Option<UserId>,
    /// The address the request came from ([`Caller::client`]).
    pub(crate) client: Option<IpAddr>,
}

impl Actor {
    /// No user and no request: the bootstrap, the operator's commands.
    pub(crate) const NO_ONE: Actor = Actor {
        user: None,
        client: None,
    };

    /// The signed-in caller, from their request's address.
    pub(crate) fn caller(caller: &Caller) -> Actor {
        Actor {
            user: Some(caller.user_id),
            client: caller.client,
        }
    }

    /// Someone not signed in, from `client`.
    pub(crate) fn anonymous(client: Option<IpAddr>) -> Actor {
        Actor { user: None, client }
    }
}

/// An attempt at a secret (a code or a password), from
/// [`reserve_attempt`] or [`lock_attempt`]. Its outcome is recorded with
/// [`fail_attempt`] or [`clear_attempt`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Attempt<'a> {
    subject: FailureSubject<'a>,
    /// Whose attempt the audit names: the subject's user, or the account
    /// of a password's address (`None` for an address no user has).
    user: Option<UserId>,
    by: Actor,
    policy: LockoutPolicy,
    /// Failures counted before this attempt.
    failures_before: u32,
    /// Already counted (by [`reserve_attempt`]), with the lockout its
    /// failure would start already in force.
    reserved: Option<Option<u64>>,
}

impl Attempt<'_> {
    /// This attempt, its audit naming `user` (the account of a
    /// password's address; `None` for an address no user has) as target,
    /// and `by` as who made it.
    pub(crate) fn for_account(self, user: Option<UserId>, by: Actor) -> Self {
        Attempt { user, by, ..self }
    }
}

/// A password attempt counted in one step and decided in a later one,
/// with argon2 between them, maybe on another thread: an [`Attempt`] at
/// an address, owning the address.
#[derive(Clone, Debug)]
pub(crate) struct ReservedPasswordAttempt {
    email: String,
    user: Option<UserId>,
    by: Actor,
    policy: LockoutPolicy,
    failures_before: u32,
    reserved: Option<Option<u64>>,
}

impl ReservedPasswordAttempt {
    /// `attempt`, counted for the (normalised) address `email`.
    pub(crate) fn new(email: &str, attempt: Attempt<'_>) -> Self {
        ReservedPasswordAttempt {
            email: email.to_owned(),
            user: attempt.user,
            by: attempt.by,
            policy: attempt.policy,
            failures_before: attempt.failures_before,
            reserved: attempt.reserved,
        }
    }

    /// The attempt, to record its outcome.
    pub(crate) fn attempt(&self) -> Attempt<'_> {
        Attempt {
            subject: FailureSubject::Email(&self.email),
            user: self.user,
            by: self.by,
            policy: self.policy,
            failures_before: self.failures_before,
            reserved: self.reserved,
        }
    }
}

/// Count an attempt of `kind` by `user` *before* checking it, and refuse
/// it with `TooManyAttempts` while the user is locked out. For secrets
/// checked outside the transaction (argon2): the reservation must be
/// committed before the check. The count is incremented first and the lock
/// read in the same statement, on the same row: concurrent attempts, on
/// any server process, queue on that row and each sees the ones before it,
/// so racing requests are never all checked before the lockout takes
/// effect (the flaw of Keycloak's CVE-2024-4629). An attempt that reaches
/// the threshold sets the lockout at once; if it succeeds,
/// [`clear_attempt`] lifts it again.
///
/// A refusal must roll the transaction back (return the error), so that a
/// refused attempt does not count.
pub(crate) fn reserve_attempt<'a>(
    tx: &mut dyn StoreTx,
    policy: &LockoutPolicy,
    subject: FailureSubject<'a>,
    now: Timestamp,
) -> MfaResult<Attempt<'a>> {
    let state = tx.increment_failures(subject, now, policy.forget_before(now))?;
    // The lockout is judged by the failures that set it, this attempt
    // aside: counted in, a lockout read after a clock stepped back was
    // held against the next, longer delay.
    let set_by = FailureState {
        failures: state.failures.saturating_sub(1),
        locked_until: state.locked_until,
    };
    refuse_while_locked(policy, &set_by, now)?;
    let delay = policy.delay_after(state.failures);
    if let Some(delay) = delay {
        tx.set_locked_until(subject, Some(now.plus_secs(delay)))?;
    }
    Ok(Attempt {
        subject,
        user: subject.user(),
        by: Actor::default(),
        policy: *policy,
        failures_before: state.failures.saturating_sub(1),
        reserved: Some(delay),
    })
}

/// Hold `user` until the transaction ends, before reading any of their
/// factors. Every transaction that changes a user's factors or checks one
/// of their codes takes this lock first (the authenticator check through
/// [`StoreTx::lock_failure_state_and_authenticator`]), and so does a
/// login when it reads the password hash again
/// ([`StoreTx::user_for_update`]), so two of them never interleave: each
/// reads what the other committed. Without it, on a store whose writers
/// run side by side, a confirmation could read one pending secret and mark
/// a newer one
/// verified, or a code check could read an authenticator that a reset then
/// deletes and report the code as replayed.
pub(crate) fn lock_user(tx: &mut dyn StoreTx, user: UserId) -> MfaResult<()> {
    tx.lock_users(&[user])?;
    Ok(())
}

/// Start an attempt of `kind` by `user` whose check runs inside this
/// transaction, refusing it with `TooManyAttempts` while the user is
/// locked out. The failure state stays locked until the transaction ends
/// ([`StoreTx::lock_failure_state`]), so racing attempts are checked one
/// after another and each sees the failures before it; a failure is
/// counted by [`fail_attempt`] in the same transaction. A success with no
/// failures before it writes nothing to the counter.
pub(crate) fn lock_attempt(
    tx: &mut dyn StoreTx,
    policy: &LockoutPolicy,
    kind: FailureKind,
    user: UserId,
    by: Actor,
    now: Timestamp,
) -> MfaResult<Attempt<'static>> {
    let state = tx.lock_failure_state(user, kind)?;
    locked_attempt(policy, kind, user, by, &state, now)
}

/// The attempt [`lock_attempt`] starts, from a failure state already read
/// under the lock (by [`StoreTx::lock_failure_state_and_authenticator`]).
pub(crate) fn locked_attempt(
    policy: &LockoutPolicy,
    kind: FailureKind,
    user: UserId,
    by: Actor,
    state: &FailureState,
    now: Timestamp,
) -> MfaResult<Attempt<'static>> {
    refuse_while_locked(policy, state, now)?;
    Ok(Attempt {
        subject: FailureSubject::User(user, kind),
        user: Some(user),
        by,
        policy: *policy,
        failures_before: state.failures,
        reserved: None,
    })
}

/// `TooManyAttempts` while `state` holds a lockout.
fn refuse_while_locked(
    policy: &LockoutPolicy,
    state: &FailureState,
    now: Timestamp,
) -> MfaResult<()> {
    match policy.retry_after(state, now) {
        Some(retry_after_secs) => Err(MfaError::TooManyAttempts { retry_after_secs }),
        None => Ok(()),
    }
}

/// Count (unless reserved) and audit an attempt that failed, and return the
/// error the caller should see: `refusal` normally, `TooManyAttempts` when
/// this failure started a lockout.
pub(crate) fn fail_attempt(
    tx: &mut dyn StoreTx,
    attempt: &Attempt<'_>,
    org: Option<OrgId>,
    now: Timestamp,
    action: AuditAction,
    detail: &str,
    refusal: MfaError,
) -> MfaResult<MfaError> {
    let (failures, delay) = match attempt.reserved {
        Some(delay) => (attempt.failures_before.saturating_add(1), delay),
        None => {
            let failures = tx
                .increment_failures(attempt.subject, now, attempt.policy.forget_before(now))?
                .failures;
            let delay = attempt.policy.delay_after(failures);
            if let Some(delay) = delay {
                tx.set_locked_until(attempt.subject, Some(now.plus_secs(delay)))?;
            }
            (failures, delay)
        }
    };
    let (user, by) = (attempt.user, attempt.by);
    audit(tx, now, org, by, user, action, detail)?;
    match delay {
        Some(delay) => {
            audit(
                tx,
                now,
                org,
                by,
                user,
                AuditAction::LockedOut,
                format!(
                    "{failures} failures of kind {}; locked for {delay} s",
                    attempt.subject.kind().as_str()
                ),
            )?;
            Ok(MfaError::TooManyAttempts {
                retry_after_secs: delay,
            })
        }
        None => Ok(refusal),
    }
}

/// Record that an attempt succeeded: the failure count starts again. Skips
/// the write when there is nothing to reset (the common case).
pub(crate) fn clear_attempt(tx: &mut dyn StoreTx, attempt: &Attempt<'_>) -> MfaResult<()> {
    if attempt.reserved.is_some() || attempt.failures_before > 0 {
        tx.reset_failures(attempt.subject)?;
    }
    Ok(())
}

/// Validate a page request (size 1..=200, page at most
/// [`PageRequest::MAX_PAGE`]).
pub fn page_request(page: u32, size: u32) -> MfaResult<PageRequest> {
    if page > PageRequest::MAX_PAGE {
        return Err(MfaError::InvalidRequest(format!(
            "page must be at most {}",
            PageRequest::MAX_PAGE
        )));
    }
    if size == 0 || size > PageRequest::MAX_SIZE {
        return Err(MfaError::InvalidRequest(format!(
            "size must be between 1 and {}",
            PageRequest::MAX_SIZE
        )));
    }
    Ok(PageRequest { page, size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::InMemoryStore;

    const USER: UserId = UserId(7);
    const NOW: Timestamp = Timestamp(1_000);

    /// Another org sees a change of its member's sign-in made elsewhere,
    /// without the admin who made it: neither their id nor their address.
    /// The member's own change is theirs in every org.
    #[test]
    fn another_org_sees_the_change_but_not_the_admin() {
        let memberships = [
            Membership::new(USER, OrgId(1)),
            Membership::new(USER, OrgId(2)),
        ];
        let client: Option<IpAddr> = Some("203.0.113.5".parse().expect("an address"));
        let event = |actor: UserId| NewAuditEvent {
            at: NOW,
            org_id: Some(OrgId(1)),
            actor_user_id: Some(actor),
            target_user_id: Some(USER),
            action: AuditAction::MfaReset,
            detail: "all factors removed by an admin".into(),
            client,
        };
        let by_admin = sign_in_change_events(event(UserId(99)), &memberships);
        let seen: Vec<_> = by_admin
            .iter()
            .map(|e| (e.org_id, e.actor_user_id, e.client))
            .collect();
        assert_eq!(
            seen,
            [
                (Some(OrgId(1)), Some(UserId(99)), client),
                (Some(OrgId(2)), None, None),
            ]
        );
        assert_eq!(
            by_admin[1].detail,
            "all factors removed by an admin, in another org"
        );
        let by_user = sign_in_change_events(event(USER), &memberships);
        assert_eq!(
            (by_user[1].actor_user_id, by_user[1].client),
            (Some(USER), client)
        );
    }

    const SUBJECT: FailureSubject<'static> = FailureSubject::User(USER, FailureKind::Code);

    fn reserve(store: &InMemoryStore, now: Timestamp) -> MfaResult<Attempt<'static>> {
        store.write(|tx| reserve_attempt(tx, &LockoutPolicy::default(), SUBJECT, now))
    }

    fn failures(store: &InMemoryStore) -> u32 {
        store
            .read(|tx| Ok(tx.failure_state(USER, FailureKind::Code)?.failures))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn clients_are_told_apart_by_ipv4_address_and_ipv6_network() {
        let network = |ip: &str| client_network(Some(ip.parse().expect("an address")));
        let same = |a: &str, b: &str| network(a) == network(b);
        assert!(same("2001:db8:1:2::1", "2001:db8:1:2:ffff::9"));
        assert!(!same("2001:db8:1:2::1", "2001:db8:1:3::1"));
        assert!(same("::ffff:198.51.100.7", "198.51.100.7"));
        assert!(!same("::ffff:198.51.100.7", "::ffff:198.51.100.8"));
        assert!(!same("198.51.100.7", "198.51.100.8"));
        assert_eq!(client_network(None), None);
    }

    #[test]
    fn refusals_are_audited_a_few_a_minute_per_address_within_a_bound() {
        let audits = RefusalAudits::default();
        assert_eq!(audits.admit("a@example.com", None, NOW), Some(0));
        assert_eq!(audits.admit("a@example.com", None, NOW.plus_secs(1)), None);
        assert_eq!(
            audits.admit("b@example.com", None, NOW.plus_secs(1)),
            Some(0)
        );
        assert_eq!(audits.admit("a@example.com", None, NOW.plus_secs(59)), None);
        assert_eq!(
            audits.admit("a@example.com", None, NOW.plus_secs(60)),
            Some(2)
        );
        // A clock stepped back does not silence an address.
        assert_eq!(audits.admit("a@example.com", None, NOW), Some(0));
        // Full: what holds nothing back any more is forgotten first.
        let audits = RefusalAudits::default();
        for i in 0..REFUSAL_AUDIT_ADDRESSES {
            assert_eq!(
                audits.admit(&format!("{i}@example.com"), None, NOW),
                Some(0)
            );
        }
        // Every minute still running: a new address is left out, and those
        // remembered keep their bound.
        let soon = NOW.plus_secs(30);
        assert_eq!(audits.admit("new@example.com", None, soon), None);
        assert_eq!(audits.admit("0@example.com", None, soon), None);
        let later = NOW.plus_secs(PASSWORD_REFUSAL_AUDIT_INTERVAL_SECS + 1);
        assert_eq!(audits.admit("new@example.com", None, later), Some(0));
        assert_eq!(audits.0.lock().map(|m| m.len()).unwrap_or(0), 1);
    }

    #[test]
    fn a_mail_waits_its_interval_but_never_longer() {
        assert_eq!(
            throttle_mail(NOW, NOW.plus_secs(1), 30),
            Err(MfaError::MailThrottled {
                retry_after_secs: 29
            })
        );
        assert_eq!(throttle_mail(NOW, NOW.plus_secs(30), 30), Ok(()));
        // Sent "later" than now: another process's clock a little ahead
        // keeps the wait; a clock stepped back since lets the mail go.
        assert_eq!(
            throttle_mail(NOW, NOW.minus_secs(3), 30),
            Err(MfaError::MailThrottled {
                retry_after_secs: 33
            })
        );
        assert_eq!(throttle_mail(NOW, NOW.minus_secs(61), 30), Ok(()));
    }

    #[test]
    fn the_fifth_attempt_locks_before_it_is_checked() {
        let store = InMemoryStore::new();
        for n in 1..=4 {
            let a = reserve(&store, NOW).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((a.failures_before + 1, a.reserved), (n, Some(None)));
        }
        // The fifth is still checked, but the lockout is already in force
        // for any attempt racing with it.
        let fifth = reserve(&store, NOW).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fifth.reserved, Some(Some(30)));
        assert_eq!(
            reserve(&store, NOW).map(|_| ()),
            Err(MfaError::TooManyAttempts {
                retry_after_secs: 30
            })
        );
        // A refused attempt is rolled back: it does not count.
        assert_eq!(failures(&store), 5);
        // After the lockout, the next attempt doubles it.
        let sixth = reserve(&store, NOW.plus_secs(30)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((sixth.failures_before, sixth.reserved), (5, Some(Some(60))));
    }

    /// An audit built a service with 0 TOTP digits (every confirmation
    /// failed) and one whose otpauth URIs mfa-totp itself refuses.
    #[test]
    fn unworkable_configurations_are_refused() {
        assert_eq!(ServiceConfig::default().check(), Ok(()));
        let broken: [fn(&mut ServiceConfig); 8] = [
            |c| c.issuer = "Acme: Zurich".into(),
            |c| c.totp.digits = 0,
            |c| c.totp.digits = 7,
            |c| c.totp.period = 0,
            |c| c.email_code_digits = 0,
            |c| c.totp_window = 1_000,
            |c| c.session_idle_secs = 0,
            |c| c.max_reset_ids = 0,
        ];
        for breaking in broken {
            let mut config = ServiceConfig::default();
            breaking(&mut config);
            let refused = MfaService::new(
                InMemoryStore::new(),
                Arc::new(crate::ports::MemoryMailer::default()),
                Arc::new(crate::ports::FixedClock::new(NOW)),
                Arc::new(crate::ports::OsRandomness),
                config.clone(),
            );
            assert!(
                matches!(refused, Err(MfaError::InvalidRequest(_))),
                "{config:?}"
            );
        }
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_day() {
        let store = InMemoryStore::new();
        let day = LockoutPolicy::default().forget_after_secs;
        assert_eq!(day, 86_400);
        for _ in 0..4 {
            reserve(&store, NOW).unwrap_or_else(|e| panic!("{e}"));
        }
        // A second short of a day: the fifth failure in a row locks.
        let later = NOW.plus_secs(day - 1);
        let fifth = reserve(&store, later).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fifth.reserved, Some(Some(30)));
        // A day is not enough; over a day after the last one, they are
        // forgotten, and so is the doubling.
        let a_day_on = later.plus_secs(day);
        let sixth = reserve(&store, a_day_on).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((sixth.failures_before, sixth.reserved), (5, Some(Some(60))));
        let next_day = a_day_on.plus_secs(day + 1);
        let first = reserve(&store, next_day).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((first.failures_before, first.reserved), (0, Some(None)));
        assert_eq!(failures(&store), 1);
    }

    /// An attempt checked inside its transaction, failing or not.
    fn locked_attempt(store: &InMemoryStore, now: Timestamp, fails: bool) -> MfaResult<MfaError> {
        store.write(|tx| {
            let attempt = lock_attempt(
                tx,
                &LockoutPolicy::default(),
                FailureKind::Code,
                USER,
                Actor::default(),
                now,
            )?;
            if fails {
                fail_attempt(
                    tx,
                    &attempt,
                    None,
                    now,
                    AuditAction::MfaVerifyFailed,
                    "wrong",
                    MfaError::InvalidCode,
                )
            } else {
                clear_attempt(tx, &attempt)?;
                Ok(MfaError::InvalidCode)
            }
        })
    }

    #[test]
    fn attempts_checked_inside_the_transaction_count_only_failures() {
        let store = InMemoryStore::new();
        for _ in 0..4 {
            assert_eq!(locked_attempt(&store, NOW, true), Ok(MfaError::InvalidCode));
        }
        // The fifth failure starts the lockout and reports it.
        assert_eq!(
            locked_attempt(&store, NOW, true),
            Ok(MfaError::TooManyAttempts {
                retry_after_secs: 30
            })
        );
        assert_eq!(failures(&store), 5);
        // Locked: refused unchecked, and not counted.
        assert_eq!(
            locked_attempt(&store, NOW.plus_secs(10), false),
            Err(MfaError::TooManyAttempts {
                retry_after_secs: 20
            })
        );
        assert_eq!(failures(&store), 5);
        // After the lockout a success clears the count.
        assert_eq!(
            locked_attempt(&store, NOW.plus_secs(30), false),
            Ok(MfaError::InvalidCode)
        );
        assert_eq!(failures(&store), 0);
        // A success with nothing to clear writes nothing.
        store
            .write(|tx| {
                let attempt = lock_attempt(
                    tx,
                    &LockoutPolicy::default(),
                    FailureKind::Code,
                    USER,
                    Actor::default(),
                    NOW,
                )?;
                assert_eq!((attempt.failures_before, attempt.reserved), (0, None));
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_success_lifts_the_lock_of_its_own_attempt() {
        let store = InMemoryStore::new();
        for _ in 0..5 {
            reserve(&store, NOW).unwrap_or_else(|e| panic!("{e}"));
        }
        store
            .write(|tx| Ok(tx.reset_failures(SUBJECT)?))
            .unwrap_or_else(|e| panic!("{e}"));
        let a = reserve(&store, NOW).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.failures_before, a.reserved), (0, Some(None)));
    }
}

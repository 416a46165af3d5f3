//! The operations of the product as one service over the ports.
//!
//! Every operation is synchronous and may block (storage, argon2, mail):
//! the server calls it from its blocking thread pool. Each state change runs
//! in one store transaction together with its audit event. Where a refusal
//! must still leave a trace (a failed code counts toward the lockout and is
//! audited), the transaction commits the bookkeeping and the operation then
//! returns the error.

mod enroll;
mod orgs;
mod session;
mod users;

use std::sync::Arc;

use mfa_totp::TotpParams;

use crate::authz::Caller;
use crate::crypto::{PasswordHasher, PasswordParams};
use crate::error::{MfaError, MfaResult};
use crate::model::*;
use crate::policy::{FactorSummary, LockoutPolicy};
use crate::ports::{Clock, Mail, MailKind, Mailer, Randomness, Store, StoreTx};

pub use enroll::{MfaStatus, PendingAuthenticator};
pub use orgs::OrgPatch;
pub use session::{CodeSent, LoginResult, NewToken};
pub use users::{NewUserRequest, UserPatch, UserRef, UserWithFactors};

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
    /// Most ids one reset may name.
    pub max_reset_ids: usize,
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
            max_reset_ids: 10_000,
        }
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
}

impl<S: Store> MfaService<S> {
    /// Compose the service from its ports.
    pub fn new(
        store: S,
        mailer: Arc<dyn Mailer>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn Randomness>,
        config: ServiceConfig,
    ) -> MfaResult<Self> {
        let hasher = PasswordHasher::new(config.password_params, rng.as_ref())?;
        Ok(MfaService {
            store,
            mailer,
            clock,
            rng,
            config,
            hasher,
        })
    }

    /// The store, for adapters that need it directly (health checks).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Now, by the service's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The issuer shown in authenticator apps, with the environment suffix
    /// outside production.
    pub fn display_issuer(&self) -> String {
        mfa_totp::issuer_for_environment(&self.config.issuer, self.config.environment.as_str())
    }

    /// Run a write transaction whose closure may ask to commit and still
    /// fail: `Ok(Err(e))` commits the bookkeeping, then returns `e`.
    fn write_then<T>(
        &self,
        f: impl FnOnce(&mut dyn StoreTx) -> MfaResult<MfaResult<T>>,
    ) -> MfaResult<T> {
        self.store.write(f)?
    }

    /// Deliver a notice; failures do not undo what the notice reports (the
    /// mail adapter logs them).
    fn notify(&self, to: &str, kind: MailKind) {
        let _ = self.mailer.send(&Mail {
            to: to.to_string(),
            kind,
        });
    }

    /// Deliver a message the caller cannot do without (a code).
    fn deliver(&self, to: &str, kind: MailKind) -> MfaResult<()> {
        self.mailer
            .send(&Mail {
                to: to.to_string(),
                kind,
            })
            .map_err(|e| MfaError::MailUnavailable(e.message))
    }
}

/// Write one audit event inside the current transaction.
pub(crate) fn audit(
    tx: &mut dyn StoreTx,
    at: Timestamp,
    org_id: Option<OrgId>,
    actor: Option<UserId>,
    target: Option<UserId>,
    action: AuditAction,
    detail: impl Into<String>,
) -> MfaResult<()> {
    tx.insert_audit(&NewAuditEvent {
        at,
        org_id,
        actor_user_id: actor,
        target_user_id: target,
        action,
        detail: detail.into(),
    })?;
    Ok(())
}

/// The verified factors of a user.
pub(crate) fn load_factors(tx: &mut dyn StoreTx, user: UserId) -> MfaResult<FactorSummary> {
    let authenticator = tx.authenticator(user)?.is_some_and(|a| a.is_verified());
    let email = tx.email_factor_verified_at(user)?.is_some();
    let recovery_codes_left = tx
        .recovery_codes(user)?
        .iter()
        .filter(|c| c.used_at.is_none())
        .count() as u64;
    Ok(FactorSummary {
        authenticator,
        email,
        recovery_codes_left,
    })
}

/// Load a user who must exist (the caller's own record).
pub(crate) fn load_user(tx: &mut dyn StoreTx, id: UserId) -> MfaResult<User> {
    tx.user(id)?.ok_or(MfaError::NotFound("user"))
}

/// Refuse when the user is locked out for code failures.
pub(crate) fn check_code_lockout(
    tx: &mut dyn StoreTx,
    policy: &LockoutPolicy,
    user: UserId,
    now: Timestamp,
) -> MfaResult<()> {
    let state = tx.failure_state(user, FailureKind::Code)?;
    match policy.retry_after(&state, now) {
        Some(retry_after_secs) => Err(MfaError::TooManyAttempts { retry_after_secs }),
        None => Ok(()),
    }
}

/// Count one failure of `kind`, lock out when the policy says so, audit it,
/// and return the error the caller should see: `refusal` normally,
/// `TooManyAttempts` when this failure started a lockout.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_failure(
    tx: &mut dyn StoreTx,
    policy: &LockoutPolicy,
    kind: FailureKind,
    caller: Option<&Caller>,
    user: UserId,
    now: Timestamp,
    action: AuditAction,
    detail: &str,
    refusal: MfaError,
) -> MfaResult<MfaError> {
    let failures = tx.increment_failures(user, kind)?;
    let org = caller.map(|c| c.org_id);
    audit(tx, now, org, Some(user), Some(user), action, detail)?;
    match policy.delay_after(failures) {
        Some(delay) => {
            tx.set_locked_until(user, kind, Some(now.plus_secs(delay)))?;
            audit(
                tx,
                now,
                org,
                Some(user),
                Some(user),
                AuditAction::LockedOut,
                format!(
                    "{} failures of kind {}; locked for {delay} s",
                    failures,
                    kind.as_str()
                ),
            )?;
            Ok(MfaError::TooManyAttempts {
                retry_after_secs: delay,
            })
        }
        None => Ok(refusal),
    }
}

/// Validate a page request (size 1..=200).
pub fn page_request(page: u32, size: u32) -> MfaResult<PageRequest> {
    if size == 0 || size > PageRequest::MAX_SIZE {
        return Err(MfaError::InvalidRequest(format!(
            "size must be between 1 and {}",
            PageRequest::MAX_SIZE
        )));
    }
    Ok(PageRequest { page, size })
}

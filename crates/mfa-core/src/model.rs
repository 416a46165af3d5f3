//! Domain types: plain data, no IO. Wire and database types live in the
//! adapters and convert from these explicitly; the one serde derive here,
//! [`MfaMethod`]'s, serves a stored notice's payload (see
//! [`crate::MailKind`]).

use std::fmt;
use std::net::IpAddr;

use mfa_totp::{Secret, TotpParams};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// Identifier of a user.
    UserId
);
id_type!(
    /// Identifier of an org.
    OrgId
);
id_type!(
    /// Identifier of a session (not its token).
    SessionId
);
id_type!(
    /// Identifier of an audit event.
    AuditEventId
);

/// Seconds since the Unix epoch, UTC. The whole domain works in whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// This instant plus `secs` seconds (saturating).
    pub fn plus_secs(self, secs: u64) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)),
        )
    }

    /// This instant minus `secs` seconds (saturating).
    pub fn minus_secs(self, secs: u64) -> Timestamp {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(secs).unwrap_or(i64::MAX)),
        )
    }

    /// Whole seconds from `self` until `later`, zero if `later` is not later.
    pub fn secs_until(self, later: Timestamp) -> u64 {
        u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0)
    }

    /// The Unix time as unsigned seconds, as TOTP wants it (0 before 1970).
    pub fn unix_secs(self) -> u64 {
        u64::try_from(self.0).unwrap_or(0)
    }
}

/// An organisation whose admins decide on MFA for its members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Org {
    /// Identifier.
    pub id: OrgId,
    /// Display name.
    pub name: String,
    /// Whether every member (not opted out) owes MFA at login.
    pub is_mfa_enforced: bool,
    /// When enforcement was last switched on; the grace period counts from here.
    pub mfa_enforced_at: Option<Timestamp>,
    /// Hours after enforcement during which members without a factor may still
    /// log in without MFA. Zero means no grace.
    pub mfa_grace_period_hours: u32,
    /// Creation time.
    pub created_at: Timestamp,
}

/// A person who can log in. Factors belong to the user, not to a membership.
/// `Debug` leaves out the password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Identifier.
    pub id: UserId,
    /// Login and mail address, normalised to lower case.
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// argon2id PHC string. Never leaves the service boundary.
    pub password_hash: String,
    /// Deployment-wide administrator.
    pub is_super_admin: bool,
    /// The user asked for MFA even where no org enforces it.
    pub mfa_opt_in: bool,
    /// Last successful password login.
    pub last_login_at: Option<Timestamp>,
    /// Creation time.
    pub created_at: Timestamp,
}

crate::redact::debug_without_secrets!(User {
    id, email, first_name, last_name, is_super_admin, mfa_opt_in, last_login_at, created_at
} secret { password_hash });

/// Fields of a user to be created. `Debug` leaves out the password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Normalised email.
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Deployment-wide administrator.
    pub is_super_admin: bool,
    /// Creation time.
    pub created_at: Timestamp,
}

crate::redact::debug_without_secrets!(NewUser {
    email, first_name, last_name, is_super_admin, created_at
} secret { password_hash });

/// A user's place in an org, with the seed's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// The member.
    pub user_id: UserId,
    /// The org.
    pub org_id: OrgId,
    /// An inactive membership cannot log in.
    pub is_active: bool,
    /// Admin of this org.
    pub is_admin: bool,
    /// Access to all data of the org (carried for the seed API; no MFA meaning).
    pub all_access: bool,
    /// This member is exempt from the org's MFA enforcement.
    pub mfa_opt_out: bool,
    /// Not counted as a licensed user.
    pub exclude_from_membership_count: bool,
    /// Carried for the seed API; no MFA meaning.
    pub has_advanced_permissions: bool,
}

impl Membership {
    /// A fresh, active, non-admin membership with every flag off.
    pub fn new(user_id: UserId, org_id: OrgId) -> Membership {
        Membership {
            user_id,
            org_id,
            is_active: true,
            is_admin: false,
            all_access: false,
            mfa_opt_out: false,
            exclude_from_membership_count: false,
            has_advanced_permissions: false,
        }
    }

    /// Whether this membership grants admin rights now.
    pub fn is_active_admin(&self) -> bool {
        self.is_active && self.is_admin
    }
}

/// A partial update of a membership: only the fields present change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipPatch {
    /// New `is_active`.
    pub is_active: Option<bool>,
    /// New `is_admin`.
    pub is_admin: Option<bool>,
    /// New `all_access`.
    pub all_access: Option<bool>,
    /// New `mfa_opt_out`.
    pub mfa_opt_out: Option<bool>,
    /// New `exclude_from_membership_count`.
    pub exclude_from_membership_count: Option<bool>,
    /// New `has_advanced_permissions`.
    pub has_advanced_permissions: Option<bool>,
}

impl MembershipPatch {
    /// Whether applying the patch may take admin rights away: it turns
    /// `is_active` or `is_admin` off.
    pub fn may_end_admin_rights(&self) -> bool {
        self.is_active == Some(false) || self.is_admin == Some(false)
    }

    /// Apply the present fields to `m`.
    pub fn apply_to(&self, m: &mut Membership) {
        let set = |field: &mut bool, value: Option<bool>| {
            if let Some(v) = value {
                *field = v;
            }
        };
        set(&mut m.is_active, self.is_active);
        set(&mut m.is_admin, self.is_admin);
        set(&mut m.all_access, self.all_access);
        set(&mut m.mfa_opt_out, self.mfa_opt_out);
        set(
            &mut m.exclude_from_membership_count,
            self.exclude_from_membership_count,
        );
        set(
            &mut m.has_advanced_permissions,
            self.has_advanced_permissions,
        );
    }
}

/// Counts of an org's members, as the seed's
/// `retrieveNotExcludeFromMembershipUserCounts` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MembershipCounts {
    /// Members not excluded from the membership count.
    pub licensed: u64,
    /// Of those, the active ones.
    pub enabled: u64,
    /// Of those, the inactive ones.
    pub inactive: u64,
}

/// A second factor method.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MfaMethod {
    /// TOTP authenticator app.
    Authenticator,
    /// One-time code sent by email.
    Email,
    /// Single-use recovery code.
    Recovery,
}

impl MfaMethod {
    /// The wire name: `AUTHENTICATOR`, `EMAIL`, `RECOVERY`.
    pub fn as_str(self) -> &'static str {
        match self {
            MfaMethod::Authenticator => "AUTHENTICATOR",
            MfaMethod::Email => "EMAIL",
            MfaMethod::Recovery => "RECOVERY",
        }
    }

    /// Parse the wire name (exact, upper case).
    pub fn parse(s: &str) -> Option<MfaMethod> {
        match s {
            "AUTHENTICATOR" => Some(MfaMethod::Authenticator),
            "EMAIL" => Some(MfaMethod::Email),
            "RECOVERY" => Some(MfaMethod::Recovery),
            _ => None,
        }
    }
}

/// Whether an authenticator is still being enrolled or in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthenticatorState {
    /// Generated but not yet confirmed with a code; unusable after `expires_at`.
    Pending {
        /// End of the enrollment window.
        expires_at: Timestamp,
    },
    /// Confirmed with a code: a factor of the user.
    Verified {
        /// When it was confirmed.
        verified_at: Timestamp,
    },
}

/// The state of each of a user's factors, without any secret or hash:
/// what [`crate::StoreTx::factor_states`] reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FactorStates {
    /// The authenticator, pending or verified, if there is one.
    pub authenticator: Option<AuthenticatorState>,
    /// When the email factor was verified, if it is.
    pub email_verified_at: Option<Timestamp>,
    /// Unused recovery codes.
    pub recovery_codes_left: u64,
}

/// A user's TOTP authenticator (at most one per user).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticator {
    /// Owner.
    pub user_id: UserId,
    /// Shared secret. Adapters must encrypt it at rest.
    pub secret: Secret,
    /// Algorithm, digits, period.
    pub params: TotpParams,
    /// Pending or verified.
    pub state: AuthenticatorState,
    /// Highest TOTP step ever accepted: no step at or below it is accepted again.
    pub last_used_step: Option<u64>,
    /// When the secret was generated.
    pub created_at: Timestamp,
}

impl Authenticator {
    /// Whether this authenticator is a verified factor.
    pub fn is_verified(&self) -> bool {
        matches!(self.state, AuthenticatorState::Verified { .. })
    }
}

/// What an emailed one-time code is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmailCodePurpose {
    /// Proves the address during email enrollment.
    Enroll,
    /// Second factor at login.
    Login,
}

impl EmailCodePurpose {
    /// Stable name for storage.
    pub fn as_str(self) -> &'static str {
        match self {
            EmailCodePurpose::Enroll => "enroll",
            EmailCodePurpose::Login => "login",
        }
    }

    /// Inverse of [`EmailCodePurpose::as_str`].
    pub fn parse(s: &str) -> Option<EmailCodePurpose> {
        match s {
            "enroll" => Some(EmailCodePurpose::Enroll),
            "login" => Some(EmailCodePurpose::Login),
            _ => None,
        }
    }
}

/// An emailed one-time code, stored only as a salted hash. A user has at most
/// one live code: a new one replaces (voids) the previous. `Debug` leaves
/// out the hash and the salt: with an unkeyed hash (the in-memory store's)
/// they give the code away to a million tries.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailCode {
    /// Identifier assigned by the store; consumption targets exactly this code.
    pub id: i64,
    /// Owner.
    pub user_id: UserId,
    /// Enrollment or login.
    pub purpose: EmailCodePurpose,
    /// The store's digest of the salted hash
    /// ([`crate::ports::StoreTx::email_code_digest`]: keyed by a store
    /// that holds a key).
    pub code_hash: String,
    /// Random hex salt.
    pub salt: String,
    /// When it was sent (drives the resend throttle).
    pub sent_at: Timestamp,
    /// End of validity.
    pub expires_at: Timestamp,
    /// Set once, by a conditional update, when the code is used.
    pub consumed_at: Option<Timestamp>,
}

impl EmailCode {
    /// Voided by the removal of its factor
    /// ([`crate::ports::StoreTx::void_email_codes`]): kept only for when it
    /// was sent, it is no code the user could have been asked for.
    pub fn is_voided(&self) -> bool {
        self.code_hash.is_empty()
    }
}

crate::redact::debug_without_secrets!(EmailCode {
    id, user_id, purpose, sent_at, expires_at, consumed_at
} secret { code_hash, salt });

/// Fields of an email code to be stored. `Debug` leaves out the hash and
/// the salt.
#[derive(Clone, PartialEq, Eq)]
pub struct NewEmailCode {
    /// Owner.
    pub user_id: UserId,
    /// Enrollment or login.
    pub purpose: EmailCodePurpose,
    /// Hex SHA-256 over salt and code (the store keeps its digest of it).
    pub code_hash: String,
    /// Random hex salt.
    pub salt: String,
    /// Send time.
    pub sent_at: Timestamp,
    /// End of validity.
    pub expires_at: Timestamp,
}

crate::redact::debug_without_secrets!(NewEmailCode {
    user_id, purpose, sent_at, expires_at
} secret { code_hash, salt });

/// One recovery code of a user's set, stored as an argon2id hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryCode {
    /// Identifier assigned by the store.
    pub id: i64,
    /// Owner.
    pub user_id: UserId,
    /// argon2id PHC string of the code.
    pub code_hash: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Set once, by a conditional update, when the code is used.
    pub used_at: Option<Timestamp>,
}

/// How far a session has authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssuranceLevel {
    /// Password checked, MFA still owed: only "partial ok" endpoints.
    Partial,
    /// Fully authenticated.
    Full,
}

impl AssuranceLevel {
    /// Stable name for storage.
    pub fn as_str(self) -> &'static str {
        match self {
            AssuranceLevel::Partial => "partial",
            AssuranceLevel::Full => "full",
        }
    }

    /// Inverse of [`AssuranceLevel::as_str`].
    pub fn parse(s: &str) -> Option<AssuranceLevel> {
        match s {
            "partial" => Some(AssuranceLevel::Partial),
            "full" => Some(AssuranceLevel::Full),
            _ => None,
        }
    }
}

/// A login session. The bearer token itself is never stored, only its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Identifier.
    pub id: SessionId,
    /// Hex SHA-256 of the bearer token.
    pub token_hash: String,
    /// Who.
    pub user_id: UserId,
    /// The current org of this session.
    pub org_id: OrgId,
    /// Partial or full.
    pub level: AssuranceLevel,
    /// Creation time.
    pub created_at: Timestamp,
    /// Absolute end.
    pub expires_at: Timestamp,
    /// Last use (updated at a coarse granularity so reads do not write).
    pub last_seen_at: Timestamp,
    /// Set when logged out or revoked.
    pub revoked_at: Option<Timestamp>,
    /// Whether a factor of the user was verified in this session: MFA
    /// completed on it (its token rotated), or it enrolled the user's
    /// first factor. A full session opened where no MFA was owed has not.
    pub mfa_passed: bool,
}

/// A session with what resolving its token needs of its user and
/// membership (see [`crate::ports::StoreTx::session_member`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionMember {
    /// The session.
    pub session: Session,
    /// Whether its user is a superadmin.
    pub is_super_admin: bool,
    /// The user's membership in the session's org, if any.
    pub membership: Option<Membership>,
}

/// Which sessions a purge deletes (see
/// [`crate::ports::StoreTx::delete_ended_sessions`]): those that ended
/// before `ended_before`, by revocation, by their absolute end or, for a
/// full session, by being idle: the three rules by which
/// `MfaService::authenticate` refuses a token, so a purge deletes only
/// sessions whose tokens were refused already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPurge {
    /// Revoked, or past `expires_at`, before this instant.
    pub ended_before: Timestamp,
    /// Full sessions last seen before this instant: idle for longer than
    /// the idle timeout before `ended_before`.
    pub full_seen_before: Timestamp,
    /// At most this many sessions in one call.
    pub limit: u32,
}

impl SessionPurge {
    /// Whether `session` is one this purge deletes.
    pub fn covers(&self, session: &Session) -> bool {
        session.revoked_at.is_some_and(|at| at < self.ended_before)
            || session.expires_at < self.ended_before
            || (session.level == AssuranceLevel::Full
                && session.last_seen_at < self.full_seen_before)
    }
}

/// New token, level and end for a live session (see
/// [`crate::ports::StoreTx::rotate_session`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRotation {
    /// Hex SHA-256 of the token the caller presented: the session is
    /// rotated only while it still has that token, so of two verifications
    /// racing on one token one rotates and the other is refused (both
    /// answered `200` and the first token was dead on arrival).
    pub presented_token_hash: String,
    /// Hex SHA-256 of the new bearer token.
    pub token_hash: String,
    /// The new level.
    pub level: AssuranceLevel,
    /// The new absolute end.
    pub expires_at: Timestamp,
    /// Now: the session must still be live at this time; it counts as seen.
    pub now: Timestamp,
}

/// Whose authenticator code [`crate::ports::Store::apply_authenticator_success`]
/// checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeOwner<'a> {
    /// A caller whose session is resolved already.
    Session {
        /// The caller.
        user: UserId,
        /// The caller's session.
        session: SessionId,
    },
    /// The session of a bearer token (the SHA-256 of it), found in the
    /// same read as the user's failure state and authenticator: the check
    /// gets it with its user and membership and decides whether it is
    /// live.
    Token(&'a str),
}

/// What an accepted authenticator code writes: the step it spent, the
/// caller's session made full under a new token, and the audit event (see
/// [`crate::ports::Store::apply_authenticator_success`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatorSuccess {
    /// The TOTP step the code matched.
    pub step: u64,
    /// What the session becomes.
    pub rotation: SessionRotation,
    /// The event that records the success.
    pub audit: NewAuditEvent,
}

/// Fields of a session to be created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSession {
    /// Hex SHA-256 of the bearer token.
    pub token_hash: String,
    /// Who.
    pub user_id: UserId,
    /// Current org.
    pub org_id: OrgId,
    /// Partial or full.
    pub level: AssuranceLevel,
    /// Creation time (also the first `last_seen_at`).
    pub created_at: Timestamp,
    /// Absolute end.
    pub expires_at: Timestamp,
}

/// Which failures a counter counts: code failures and password failures are
/// kept apart so that guessing codes cannot lock the owner out of the
/// password step for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// Wrong one-time code, email code or recovery code.
    Code,
    /// Wrong password.
    Password,
}

impl FailureKind {
    /// Stable name for storage.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Code => "code",
            FailureKind::Password => "password",
        }
    }
}

/// Whose failures a counter holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureSubject<'a> {
    /// A user's failures of one kind: their codes. (Password failures
    /// are counted by [`FailureSubject::Email`].)
    User(UserId, FailureKind),
    /// Password failures of logins with this email (normalised), whether
    /// a user has it or not. A lockout follows the address, not the
    /// account: a known email and an unknown one are counted and locked
    /// out alike, and an account that is made, renamed or deleted leaves
    /// the count where it is, so a login racing that change can neither
    /// lose its failure nor tell the change by its answer.
    Email(&'a str),
}

impl FailureSubject<'_> {
    /// The kind of failures counted.
    pub fn kind(&self) -> FailureKind {
        match self {
            FailureSubject::User(_, kind) => *kind,
            FailureSubject::Email(_) => FailureKind::Password,
        }
    }

    /// The user, if the subject is one.
    pub fn user(&self) -> Option<UserId> {
        match self {
            FailureSubject::User(user, _) => Some(*user),
            FailureSubject::Email(_) => None,
        }
    }
}

/// Consecutive failures of one kind for one user, and the lockout they caused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureState {
    /// Consecutive failures since the last success.
    pub failures: u32,
    /// Attempts are refused until then.
    pub locked_until: Option<Timestamp>,
}

/// A pending change of a user's email address, confirmed by a single-use
/// token. `Debug` leaves out the token's hash.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailChange {
    /// Identifier assigned by the store.
    pub id: i64,
    /// Whose address changes.
    pub user_id: UserId,
    /// The address that takes effect on confirmation (normalised).
    pub new_email: String,
    /// Hex SHA-256 of the confirmation token.
    pub token_hash: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// End of validity.
    pub expires_at: Timestamp,
    /// Set once, by a conditional update, on confirmation.
    pub consumed_at: Option<Timestamp>,
}

crate::redact::debug_without_secrets!(EmailChange {
    id, user_id, new_email, created_at, expires_at, consumed_at
} secret { token_hash });

/// What an audit event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// An org was created.
    OrgCreated,
    /// An org's name or grace period changed.
    OrgUpdated,
    /// An org was deleted.
    OrgDeleted,
    /// MFA enforcement switched on for an org.
    MfaEnforced,
    /// MFA enforcement switched off for an org.
    MfaUnenforced,
    /// A membership was created.
    MembershipCreated,
    /// A membership's flags changed (other than MFA opt-out).
    MembershipUpdated,
    /// A membership was removed.
    MembershipDeleted,
    /// A member was opted out of org MFA.
    MfaOptOut,
    /// A member's opt-out was withdrawn.
    MfaOptOutRemoved,
    /// A user opted in to MFA personally.
    PersonalMfaOptIn,
    /// A user withdrew their personal opt-in.
    PersonalMfaOptOut,
    /// Every factor of a user was removed by an admin.
    MfaReset,
    /// A user's authenticator was removed (by an admin or themselves).
    AuthenticatorReset,
    /// A pending authenticator secret was generated.
    AuthenticatorEnrollmentStarted,
    /// An authenticator was verified and became a factor.
    AuthenticatorEnrolled,
    /// An email enrollment code was sent.
    EmailEnrollmentStarted,
    /// The email factor was verified.
    EmailEnrolled,
    /// A login email code was sent.
    EmailCodeSent,
    /// A code stored for a mail the mail server did not take: deleted again,
    /// unsent (the event of its sending stays before it).
    EmailCodeWithdrawn,
    /// A second factor verified at login.
    MfaVerifySucceeded,
    /// A one-time code or recovery code did not verify.
    MfaVerifyFailed,
    /// An already used authenticator step was presented again.
    ReplayRefused,
    /// Too many failures: the user is locked out for a while.
    LockedOut,
    /// A password or code was presented while the user was locked out:
    /// refused without being checked or counted. Every refused code is an
    /// event; of a password step's refusals, a minute records the first
    /// from each of three clients at most per address and server process,
    /// and the next event counts those left out.
    RefusedWhileLockedOut,
    /// A new set of recovery codes was generated.
    RecoveryCodesGenerated,
    /// A recovery code was used.
    RecoveryCodeUsed,
    /// A password login succeeded.
    LoginSucceeded,
    /// A password login failed for a known user.
    LoginFailed,
    /// A session was ended by its owner.
    Logout,
    /// A user's sessions were ended (by an admin), or their other sessions
    /// (by the user), factors untouched.
    SessionsEnded,
    /// A user was created.
    UserCreated,
    /// A user's profile or password changed.
    UserUpdated,
    /// A user was deleted.
    UserDeleted,
    /// An email change was requested.
    EmailChangeRequested,
    /// An email change was confirmed.
    EmailChanged,
    /// A confirmation link of an email change was refused: expired, or
    /// the new address was taken meanwhile.
    EmailChangeRefused,
    /// A superadmin joined an org as admin.
    SuperAdminJoinedOrg,
}

impl AuditAction {
    /// Every action, for filters and documentation.
    pub const ALL: [AuditAction; 38] = [
        AuditAction::OrgCreated,
        AuditAction::OrgUpdated,
        AuditAction::OrgDeleted,
        AuditAction::MfaEnforced,
        AuditAction::MfaUnenforced,
        AuditAction::MembershipCreated,
        AuditAction::MembershipUpdated,
        AuditAction::MembershipDeleted,
        AuditAction::MfaOptOut,
        AuditAction::MfaOptOutRemoved,
        AuditAction::PersonalMfaOptIn,
        AuditAction::PersonalMfaOptOut,
        AuditAction::MfaReset,
        AuditAction::AuthenticatorReset,
        AuditAction::AuthenticatorEnrollmentStarted,
        AuditAction::AuthenticatorEnrolled,
        AuditAction::EmailEnrollmentStarted,
        AuditAction::EmailEnrolled,
        AuditAction::EmailCodeSent,
        AuditAction::EmailCodeWithdrawn,
        AuditAction::MfaVerifySucceeded,
        AuditAction::MfaVerifyFailed,
        AuditAction::ReplayRefused,
        AuditAction::LockedOut,
        AuditAction::RefusedWhileLockedOut,
        AuditAction::RecoveryCodesGenerated,
        AuditAction::RecoveryCodeUsed,
        AuditAction::LoginSucceeded,
        AuditAction::LoginFailed,
        AuditAction::Logout,
        AuditAction::SessionsEnded,
        AuditAction::UserCreated,
        AuditAction::UserUpdated,
        AuditAction::UserDeleted,
        AuditAction::EmailChangeRequested,
        AuditAction::EmailChanged,
        AuditAction::EmailChangeRefused,
        AuditAction::SuperAdminJoinedOrg,
    ];

    /// Stable snake_case name, used in storage and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::OrgCreated => "org_created",
            AuditAction::OrgUpdated => "org_updated",
            AuditAction::OrgDeleted => "org_deleted",
            AuditAction::MfaEnforced => "mfa_enforced",
            AuditAction::MfaUnenforced => "mfa_unenforced",
            AuditAction::MembershipCreated => "membership_created",
            AuditAction::MembershipUpdated => "membership_updated",
            AuditAction::MembershipDeleted => "membership_deleted",
            AuditAction::MfaOptOut => "mfa_opt_out",
            AuditAction::MfaOptOutRemoved => "mfa_opt_out_removed",
            AuditAction::PersonalMfaOptIn => "personal_mfa_opt_in",
            AuditAction::PersonalMfaOptOut => "personal_mfa_opt_out",
            AuditAction::MfaReset => "mfa_reset",
            AuditAction::AuthenticatorReset => "authenticator_reset",
            AuditAction::AuthenticatorEnrollmentStarted => "authenticator_enrollment_started",
            AuditAction::AuthenticatorEnrolled => "authenticator_enrolled",
            AuditAction::EmailEnrollmentStarted => "email_enrollment_started",
            AuditAction::EmailEnrolled => "email_enrolled",
            AuditAction::EmailCodeSent => "email_code_sent",
            AuditAction::EmailCodeWithdrawn => "email_code_withdrawn",
            AuditAction::MfaVerifySucceeded => "mfa_verify_succeeded",
            AuditAction::MfaVerifyFailed => "mfa_verify_failed",
            AuditAction::ReplayRefused => "replay_refused",
            AuditAction::LockedOut => "locked_out",
            AuditAction::RefusedWhileLockedOut => "refused_while_locked_out",
            AuditAction::RecoveryCodesGenerated => "recovery_codes_generated",
            AuditAction::RecoveryCodeUsed => "recovery_code_used",
            AuditAction::LoginSucceeded => "login_succeeded",
            AuditAction::LoginFailed => "login_failed",
            AuditAction::Logout => "logout",
            AuditAction::SessionsEnded => "sessions_ended",
            AuditAction::UserCreated => "user_created",
            AuditAction::UserUpdated => "user_updated",
            AuditAction::UserDeleted => "user_deleted",
            AuditAction::EmailChangeRequested => "email_change_requested",
            AuditAction::EmailChanged => "email_changed",
            AuditAction::EmailChangeRefused => "email_change_refused",
            AuditAction::SuperAdminJoinedOrg => "super_admin_joined_org",
        }
    }

    /// Inverse of [`AuditAction::as_str`].
    pub fn parse(s: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// A recorded, MFA-relevant change or failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Identifier assigned by the store (increasing).
    pub id: AuditEventId,
    /// When.
    pub at: Timestamp,
    /// The org it concerns, if any.
    pub org_id: Option<OrgId>,
    /// Who did it (absent for anonymous failures).
    pub actor_user_id: Option<UserId>,
    /// Whom it concerns.
    pub target_user_id: Option<UserId>,
    /// What.
    pub action: AuditAction,
    /// Free text without secrets, codes or full email addresses.
    pub detail: String,
    /// The address the request came from, as the server judged it (behind
    /// a balancer, the client its trusted proxies named); `None` for the
    /// operator's command line, background work, and events written
    /// before addresses were recorded.
    pub client: Option<IpAddr>,
}

impl AuditEvent {
    /// Whether this records a password attempt at an address no user has:
    /// no org, no actor, no target. Anyone can make these, no admin sees
    /// them, and a purge deletes them when the address's failures are
    /// forgotten ([`crate::ports::StoreTx::delete_anonymous_audit_events_before`]).
    pub fn is_anonymous_password_attempt(&self) -> bool {
        self.org_id.is_none()
            && self.actor_user_id.is_none()
            && self.target_user_id.is_none()
            && matches!(
                self.action,
                AuditAction::LoginFailed
                    | AuditAction::LockedOut
                    | AuditAction::RefusedWhileLockedOut
            )
    }
}

/// An audit event to be written in the same transaction as its change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEvent {
    /// When.
    pub at: Timestamp,
    /// The org it concerns, if any.
    pub org_id: Option<OrgId>,
    /// Who did it.
    pub actor_user_id: Option<UserId>,
    /// Whom it concerns.
    pub target_user_id: Option<UserId>,
    /// What.
    pub action: AuditAction,
    /// Free text without secrets.
    pub detail: String,
    /// The address the request came from ([`AuditEvent::client`]).
    pub client: Option<IpAddr>,
}

/// Filter of an audit query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only events of this org.
    pub org_id: Option<OrgId>,
    /// Only events whose actor or target is this user.
    pub user_id: Option<UserId>,
    /// Only this action.
    pub action: Option<AuditAction>,
    /// Only events at or after this time.
    pub from: Option<Timestamp>,
    /// Only events before this time.
    pub to: Option<Timestamp>,
    /// Only events of requests from this address.
    pub client: Option<IpAddr>,
    /// Only events older than this one (a smaller id): a cursor that pages
    /// back through the trail without repeating events written meanwhile,
    /// as offsets would (newer events push older ones down a page).
    pub before_id: Option<AuditEventId>,
}

/// A page request: 0-based page number and page size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// 0-based page number.
    pub page: u32,
    /// Items per page, 1..=200.
    pub size: u32,
}

impl PageRequest {
    /// Largest accepted page size.
    pub const MAX_SIZE: u32 = 200;
    /// Largest accepted page number: what a signed 32-bit integer holds
    /// (OpenAPI's `int32`, which clients generated from the document use).
    pub const MAX_PAGE: u32 = i32::MAX as u32;

    /// Rows to skip.
    pub fn offset(&self) -> u64 {
        u64::from(self.page) * u64::from(self.size)
    }
}

/// One page of results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Items across all pages.
    pub total: u64,
    /// The page number asked for.
    pub page: u32,
    /// The page size asked for.
    pub size: u32,
}

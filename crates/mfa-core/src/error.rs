//! The domain's one error type. Adapters translate it: the server maps each
//! variant to an HTTP status and error code in exactly one place.

use thiserror::Error;

/// A failure of a storage adapter, as the domain sees it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The row to change does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken (e.g. a duplicate email); the text names
    /// the rule, never the value.
    #[error("already exists: {0}")]
    UniqueViolation(String),
    /// The database failed.
    #[error("storage failure: {0}")]
    Backend(String),
    /// The database could not be reached, or no connection came free in
    /// time: trying again later may succeed. Nothing was committed, unless
    /// the connection was lost while the commit was under way.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// Why a mail could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("mail delivery failed: {message}")]
pub struct MailError {
    /// Whether trying again later might succeed (e.g. SMTP 4xx, a timeout).
    pub transient: bool,
    /// Whether the message may have been delivered all the same: the
    /// mail server took it but did not confirm in time (SMTP allows it
    /// minutes after the end of the message, for content checks). An
    /// email code it carries is then kept valid, so that it works if the
    /// message arrives.
    pub delivery_unknown: bool,
    /// What went wrong, without the message content.
    pub message: String,
}

/// Everything a domain operation can refuse or fail with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MfaError {
    /// The input breaks a rule; the text says which.
    #[error("{0}")]
    InvalidRequest(String),
    /// A one-time code, recovery code or pending secret did not verify.
    #[error("the code is not valid")]
    InvalidCode,
    /// The pending authenticator secret or email code has expired.
    #[error("the code or pending secret has expired")]
    CodeExpired,
    /// No valid session.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// Wrong email or password (the same for an unknown email).
    #[error("email or password is wrong")]
    InvalidCredentials,
    /// A session in which no second factor was verified was used where one
    /// in which it was is needed: a partial session, or, to change the
    /// factors of a user who has one or to administer, a full session
    /// opened where no MFA was owed.
    #[error("a second factor must be verified in this session first")]
    MfaRequired,
    /// Authenticated but not allowed.
    #[error("not allowed")]
    Forbidden,
    /// A right password that opens no session, and why (an access
    /// disabled by an admin, no membership of the org asked for): told to
    /// the one who knows the password, and to no one else.
    #[error("{0}")]
    SignInRefused(&'static str),
    /// Nothing of that kind is visible to the caller.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The factor is already verified (the message says which): an
    /// authenticator is reset first.
    #[error("{0}")]
    AlreadyEnrolled(&'static str),
    /// The action needs an enrolled factor that is absent.
    #[error("{0}")]
    NotEnrolled(&'static str),
    /// A uniqueness rule was broken, e.g. a duplicate email or membership.
    #[error("{0}")]
    Conflict(String),
    /// Locked out or throttled; try again after this many seconds.
    #[error("too many attempts; retry in {retry_after_secs} s")]
    TooManyAttempts {
        /// Seconds until the next attempt may succeed.
        retry_after_secs: u64,
    },
    /// A message of this kind went to the user a moment ago: one per
    /// interval (not a lockout; nothing failed).
    #[error("a message was sent a moment ago; another can be sent in {retry_after_secs} s")]
    MailThrottled {
        /// Seconds until another may be sent.
        retry_after_secs: u64,
    },
    /// The mail server did not take the message; nothing was left valid.
    #[error("the mail server is unavailable")]
    MailUnavailable(String),
    /// The mail server (or the mail configuration) refused the message
    /// for good (an SMTP 5xx reply, an address it cannot take, TLS that
    /// fails): trying again will not help. Nothing was left valid.
    #[error("the mail server refused the message")]
    MailRefused(String),
    /// The mail server did not confirm the message with an email code in
    /// time: it may arrive all the same, and the code was kept valid.
    #[error("the mail server did not confirm the message")]
    MailUnconfirmed {
        /// What the mail adapter said (for the log).
        detail: String,
        /// Seconds until another message may be asked for (the code kept
        /// holds the per-user mail interval until then).
        retry_after_secs: u64,
    },
    /// The storage adapter failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for MfaError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UniqueViolation(what) => MfaError::Conflict(what),
            StoreError::NotFound => MfaError::NotFound("record"),
            other => MfaError::Store(other),
        }
    }
}

/// Shorthand for domain results.
pub type MfaResult<T> = Result<T, MfaError>;

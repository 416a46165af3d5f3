//! Error types shared by the crate.

/// Errors from building secrets, parameters, `otpauth://` URIs and QR codes.
///
/// Messages never contain secret material, so they are safe to log or to
/// return to an API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    /// The shared secret is empty or is not valid RFC 4648 base32.
    #[error("invalid secret: expected a non-empty RFC 4648 base32 string")]
    InvalidSecret,
    /// The `otpauth://` URI could not be understood; the payload says why.
    #[error("invalid otpauth URI: {0}")]
    InvalidUri(String),
    /// The algorithm, digit count or period is not supported.
    #[error("invalid TOTP parameters: {0}")]
    InvalidParams(String),
    /// The data could not be rendered as a QR code (for example, too long).
    #[error("QR code generation failed: {0}")]
    Qr(String),
}

/// Why a one-time code was refused by [`verify_totp`](crate::verify_totp) or
/// [`verify_hotp`](crate::verify_hotp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The candidate is not exactly the expected number of ASCII digits.
    #[error("code is not the expected number of ASCII digits")]
    Malformed,
    /// The candidate matches no time step (or HOTP counter) inside the
    /// allowed window.
    #[error("code does not match")]
    Mismatch,
    /// The candidate only matches a time step that was already used
    /// (TOTP only: HOTP never checks a counter before the expected one).
    #[error("code for time step {step} was already used")]
    Replayed {
        /// The (already used) time step the candidate matched.
        step: u64,
    },
}

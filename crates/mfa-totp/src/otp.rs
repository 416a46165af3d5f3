//! HOTP (RFC 4226) and TOTP (RFC 6238) code generation and verification.

use std::fmt;
use std::str::FromStr;

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::{Secret, TotpError, VerifyError};

/// How many steps either side of the current one [`verify_totp`] accepts by
/// default: one step absorbs ordinary clock skew and typing delay.
pub const DEFAULT_WINDOW: u64 = 1;

/// The longest period [`TotpParams::new`] takes: an hour. Apps use 30 s
/// or 60 s; a period of `u64::MAX` (an imported URI's) made the code
/// never change.
pub const MAX_PERIOD_SECS: u64 = 3600;

/// The widest window [`verify_totp`] checks: 10 steps either side (five
/// minutes at 30 s). A wider one is checked as this one: a window of a
/// million steps took 30 s a check and accepted any code (two million
/// candidates for a six-digit code), and `u64::MAX` never ended.
pub const MAX_WINDOW: u64 = 10;

/// The farthest [`verify_hotp`] looks ahead of the counter it expects: a
/// user who pressed their token's button this many times without logging
/// in must be resynchronised some other way. A wider look-ahead is checked
/// as this one; each counter in it is one more code an attacker may guess.
pub const MAX_LOOK_AHEAD: u64 = 100;

/// The HMAC hash function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// HMAC-SHA-1, the only algorithm every authenticator app supports.
    #[default]
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl Algorithm {
    /// The name used in `otpauth://` URIs: `SHA1`, `SHA256` or `SHA512`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = TotpError;

    /// Parses `SHA1`, `SHA256` or `SHA512`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512]
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                TotpError::InvalidParams("algorithm must be SHA1, SHA256 or SHA512".to_owned())
            })
    }
}

/// Code generation parameters.
///
/// The fields are public for convenience; use [`TotpParams::new`] to get the
/// validation. Out-of-range values set directly never panic: a period of 0
/// acts as 1 and digit counts above 10 are zero-padded (to 255 digits at
/// most: a code longer than that is never produced, so it never matches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TotpParams {
    /// HMAC hash function.
    pub algorithm: Algorithm,
    /// Number of decimal digits in a code (6 or 8).
    pub digits: u32,
    /// Length of a time step in seconds.
    pub period: u64,
}

impl Default for TotpParams {
    /// SHA1, 6 digits, 30 seconds: what authenticator apps assume when an
    /// `otpauth://` URI says nothing.
    fn default() -> Self {
        TotpParams {
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
        }
    }
}

impl TotpParams {
    /// Validated parameters: `digits` must be 6 or 8 (the values authenticator
    /// apps support) and `period` at least 1 second.
    pub fn new(algorithm: Algorithm, digits: u32, period: u64) -> Result<Self, TotpError> {
        if digits != 6 && digits != 8 {
            return Err(TotpError::InvalidParams("digits must be 6 or 8".to_owned()));
        }
        if period == 0 {
            return Err(TotpError::InvalidParams(
                "period must be at least 1 second".to_owned(),
            ));
        }
        if period > MAX_PERIOD_SECS {
            return Err(TotpError::InvalidParams(format!(
                "period must be at most {MAX_PERIOD_SECS} seconds"
            )));
        }
        Ok(TotpParams {
            algorithm,
            digits,
            period,
        })
    }
}

/// Dynamic truncation yields a 31-bit number, so beyond 10 digits only
/// leading zeros are added; capping also keeps `10^digits` from overflowing
/// inside `totp-lite`.
const MAX_SIGNIFICANT_DIGITS: u32 = 10;

/// The longest code produced: `format!`'s padding width is bounded (a
/// width above 65,535 panics), and no real configuration comes near.
const MAX_PADDED_DIGITS: u32 = 255;

/// The RFC 4226 HOTP code for `counter`, zero-padded to `params.digits`.
/// `params.period` is ignored.
pub fn hotp(secret: &Secret, counter: u64, params: &TotpParams) -> String {
    let digits = params.digits.min(MAX_SIGNIFICANT_DIGITS);
    let key = secret.as_bytes();
    // With a step of one second, totp-lite's "time" is the HOTP counter itself.
    let code = match params.algorithm {
        Algorithm::Sha1 => totp_lite::totp_custom::<totp_lite::Sha1>(1, digits, key, counter),
        Algorithm::Sha256 => totp_lite::totp_custom::<totp_lite::Sha256>(1, digits, key, counter),
        Algorithm::Sha512 => totp_lite::totp_custom::<totp_lite::Sha512>(1, digits, key, counter),
    };
    let width = usize::try_from(params.digits.min(MAX_PADDED_DIGITS)).unwrap_or(0);
    format!("{code:0>width$}")
}

/// The RFC 6238 time step containing `unix_time`. A `period` of 0 is treated
/// as 1 rather than dividing by zero.
pub fn time_step(unix_time: u64, period: u64) -> u64 {
    unix_time / period.max(1)
}

/// The RFC 6238 TOTP code at `unix_time` (seconds since the Unix epoch).
pub fn totp(secret: &Secret, unix_time: u64, params: &TotpParams) -> String {
    totp_at_step(secret, time_step(unix_time, params.period), params)
}

/// The TOTP code for an explicit time step (see [`time_step`]).
pub fn totp_at_step(secret: &Secret, step: u64, params: &TotpParams) -> String {
    hotp(secret, step, params)
}

/// Whether `candidate` is exactly `digits` ASCII digits (`0`-`9`).
///
/// Anything else (spaces, signs, full-width or other non-ASCII digits, wrong
/// length, empty input) is refused, so callers never normalise codes in ways
/// that could make two different inputs compare equal.
pub fn is_well_formed_code(candidate: &str, digits: u32) -> bool {
    !candidate.is_empty()
        && usize::try_from(digits).is_ok_and(|d| d == candidate.len())
        && candidate.bytes().all(|b| b.is_ascii_digit())
}

/// Verifies `candidate` against the time steps `current - window ..= current + window`
/// and returns the matched step.
///
/// The caller should store the returned step and pass it back as
/// `last_used_step` next time: a code matching only steps at or before it is
/// refused as [`VerifyError::Replayed`], which makes every code single-use.
///
/// Every step in the window is computed and compared in constant time, so
/// timing reveals neither whether nor where the code matched. If the code
/// happens to match several steps, the latest unused one is returned, so that
/// the same string cannot be accepted twice within one window.
///
/// The window is at most [`MAX_WINDOW`] (a wider one is checked as that);
/// keep it small (see [`DEFAULT_WINDOW`]).
pub fn verify_totp(
    secret: &Secret,
    candidate: &str,
    unix_time: u64,
    params: &TotpParams,
    window: u64,
    last_used_step: Option<u64>,
) -> Result<u64, VerifyError> {
    if !is_well_formed_code(candidate, params.digits) {
        return Err(VerifyError::Malformed);
    }
    let current = time_step(unix_time, params.period);
    let window = window.min(MAX_WINDOW);
    let first = current.saturating_sub(window);
    let last = current.saturating_add(window);

    let mut fresh_found = Choice::from(0);
    let mut fresh_step = 0u64;
    let mut used_found = Choice::from(0);
    let mut used_step = 0u64;
    for step in first..=last {
        let expected = totp_at_step(secret, step, params);
        let matches = expected.as_bytes().ct_eq(candidate.as_bytes());
        // Step numbers are public; only whether the code matched is secret.
        let is_fresh = Choice::from(u8::from(last_used_step.is_none_or(|used| step > used)));
        let fresh_match = matches & is_fresh;
        let used_match = matches & !is_fresh;
        fresh_step.conditional_assign(&step, fresh_match);
        fresh_found |= fresh_match;
        used_step.conditional_assign(&step, used_match);
        used_found |= used_match;
    }

    if bool::from(fresh_found) {
        Ok(fresh_step)
    } else if bool::from(used_found) {
        Err(VerifyError::Replayed { step: used_step })
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Verifies an RFC 4226 HOTP `candidate` against the counters
/// `next_counter ..= next_counter + look_ahead` and returns the counter it
/// matched.
///
/// The caller stores `matched + 1` as the next expected counter, which makes
/// every code single use: counters before `next_counter` are never checked,
/// so an old code is a [`VerifyError::Mismatch`]. The look-ahead is RFC 4226's
/// resynchronisation window (section 7.4) for buttons pressed without a
/// login; keep it small (a few counters), and it is at most
/// [`MAX_LOOK_AHEAD`].
///
/// As with [`verify_totp`], every counter in the window is computed and
/// compared in constant time; if the code matches several counters, the
/// lowest is returned, so that the counter moves no further than needed.
pub fn verify_hotp(
    secret: &Secret,
    candidate: &str,
    params: &TotpParams,
    next_counter: u64,
    look_ahead: u64,
) -> Result<u64, VerifyError> {
    if !is_well_formed_code(candidate, params.digits) {
        return Err(VerifyError::Malformed);
    }
    let last = next_counter.saturating_add(look_ahead.min(MAX_LOOK_AHEAD));
    let mut found = Choice::from(0);
    let mut matched = 0u64;
    for counter in next_counter..=last {
        let expected = hotp(secret, counter, params);
        let first_match = expected.as_bytes().ct_eq(candidate.as_bytes()) & !found;
        matched.conditional_assign(&counter, first_match);
        found |= first_match;
    }
    if bool::from(found) {
        Ok(matched)
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_window_is_checked_as_the_widest() {
        let secret = Secret::from_bytes(b"12345678901234567890".to_vec());
        let params = TotpParams::default();
        let now = 1_800_000_000;
        let far = totp(&secret, now + 11 * 30, &params);
        let near = totp(&secret, now + 10 * 30, &params);
        assert_eq!(
            verify_totp(&secret, &far, now, &params, u64::MAX, None),
            Err(VerifyError::Mismatch)
        );
        assert!(verify_totp(&secret, &near, now, &params, u64::MAX, None).is_ok());
    }

    #[test]
    fn oversized_digits_are_padded_not_panicking() {
        let secret = Secret::from_bytes(b"12345678901234567890".to_vec());
        let params = TotpParams {
            digits: 25,
            ..TotpParams::default()
        };
        let code = hotp(&secret, 0, &params);
        assert_eq!(code.len(), 25);
        assert!(code.ends_with("1284755224"));
        // `format!` panics beyond a width of 65,535; an audit reached it.
        for digits in [65_536, u32::MAX] {
            let params = TotpParams {
                digits,
                ..TotpParams::default()
            };
            assert_eq!(hotp(&secret, 0, &params).len(), 255);
        }
        let params = TotpParams {
            digits: 65_536,
            ..TotpParams::default()
        };
        let candidate = "1".repeat(65_536);
        assert_eq!(
            verify_totp(&secret, &candidate, 59, &params, 1, None),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn zero_period_does_not_panic() {
        assert_eq!(time_step(59, 0), 59);
        let params = TotpParams {
            period: 0,
            ..TotpParams::default()
        };
        let secret = Secret::from_bytes(b"12345678901234567890".to_vec());
        assert_eq!(totp(&secret, 1, &params), "287082");
    }

    #[test]
    fn window_at_time_zero_does_not_underflow() {
        let secret = Secret::from_bytes(b"12345678901234567890".to_vec());
        let params = TotpParams::default();
        assert_eq!(verify_totp(&secret, "755224", 0, &params, 5, None), Ok(0));
    }

    #[test]
    fn empty_secret_still_produces_codes() {
        let code = hotp(&Secret::from_bytes(Vec::new()), 0, &TotpParams::default());
        assert_eq!(code.len(), 6);
    }
}

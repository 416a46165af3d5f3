//! Shared secrets and their base32 text form.

use std::fmt;

use data_encoding::{BASE32_NOPAD, Encoding};
use subtle::ConstantTimeEq;

use crate::TotpError;

/// The bytes of an HOTP/TOTP shared secret.
///
/// `Debug` never shows the bytes and equality is constant time, so a secret
/// can sit inside logged or compared structures without leaking.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Length of generated secrets in bytes: 160 bits, as RFC 4226 recommends.
    pub const DEFAULT_LEN: usize = 20;

    /// Generates a fresh [`Secret::DEFAULT_LEN`]-byte secret from a CSPRNG
    /// seeded by the operating system.
    pub fn generate() -> Secret {
        let mut bytes = vec![0u8; Self::DEFAULT_LEN];
        rand::fill(&mut bytes[..]);
        Secret(bytes)
    }

    /// Wraps raw secret bytes, whatever their length: RFC 4226 asks for at
    /// least 128 bits (160 recommended), but secrets imported from older
    /// systems are often 80. Check the length of bytes from outside before
    /// wrapping them; an empty secret yields codes anyone can compute.
    pub fn from_bytes(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The raw secret bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// RFC 4648 base32, upper case, without `=` padding: the form
    /// authenticator apps expect in `otpauth://` URIs and manual entry.
    pub fn to_base32(&self) -> String {
        BASE32_NOPAD.encode(&self.0)
    }

    /// Parses base32 as people and other systems actually write it.
    ///
    /// Lower case, ASCII whitespace, hyphens (used to group characters for
    /// readability) and trailing `=` padding are accepted. Unused trailing
    /// bits need not be zero, because some generators emit random characters
    /// rather than encoding random bytes. Empty input is rejected.
    pub fn from_base32(s: &str) -> Result<Secret, TotpError> {
        let normalized: String = s
            .trim_end_matches(|c: char| c == '=' || c.is_ascii_whitespace())
            .chars()
            .filter(|c| !c.is_ascii_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if normalized.is_empty() {
            return Err(TotpError::InvalidSecret);
        }
        let bytes = lenient_base32()?
            .decode(normalized.as_bytes())
            .map_err(|_| TotpError::InvalidSecret)?;
        if bytes.is_empty() {
            return Err(TotpError::InvalidSecret);
        }
        Ok(Secret(bytes))
    }
}

/// `BASE32_NOPAD` without the trailing-bits check (see [`Secret::from_base32`]).
fn lenient_base32() -> Result<Encoding, TotpError> {
    let mut spec = BASE32_NOPAD.specification();
    spec.check_trailing_bits = false;
    spec.encoding().map_err(|_| TotpError::InvalidSecret)
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let secret = Secret::from_bytes(b"hunter2".to_vec());
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{secret:#?}"), "Secret(<redacted>)");
    }

    #[test]
    fn equality() {
        let a = Secret::from_bytes(vec![1, 2, 3]);
        assert_eq!(a, a.clone());
        assert_ne!(a, Secret::from_bytes(vec![1, 2, 4]));
        assert_ne!(a, Secret::from_bytes(vec![1, 2]));
    }

    #[test]
    fn non_zero_trailing_bits_accepted() {
        // 'B' as the last of 2 chars leaves non-zero unused bits.
        assert!(Secret::from_base32("AB").is_ok());
    }

    #[test]
    fn padding_only_is_rejected() {
        assert_eq!(Secret::from_base32("===="), Err(TotpError::InvalidSecret));
        assert_eq!(Secret::from_base32(" - "), Err(TotpError::InvalidSecret));
    }

    #[test]
    fn interior_padding_is_rejected() {
        assert_eq!(
            Secret::from_base32("MZXW6===MZXW6"),
            Err(TotpError::InvalidSecret)
        );
    }
}

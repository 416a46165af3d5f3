//! Encryption at rest of TOTP secrets: AES-256-GCM, a fresh random 96-bit
//! nonce per write, stored as `nonce || ciphertext+tag`, with the owner's user
//! id in the associated data so that a ciphertext copied to another user's row
//! does not decrypt. And the keyed hash under which the password failures
//! of an address are stored, so that the database does not list the
//! addresses people tried.

use std::fmt;
use std::str::FromStr;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, Mac};
use mfa_core::UserId;
use mfa_totp::Secret;
use sha2::Sha256;

use crate::Error;

/// Length of an [`EncryptionKey`] in bytes.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Binds a ciphertext to its purpose and format version as well as its owner.
const AAD_PREFIX: &[u8] = b"mfa-store/authenticator-secret/v1/user:";
/// What the key of the addresses' hashes is derived for: a key of its own,
/// not the encryption key itself. (Named when only unknown emails were
/// hashed; it stays, so that stored counters keep their keys.)
const EMAIL_KEY_PURPOSE: &[u8] = b"mfa-store/unknown-email-key/v1";
/// The purpose of the key derived for email codes' digests.
const CODE_KEY_PURPOSE: &[u8] = b"mfa-store/email-code-key/v1";
/// What the key's fingerprint is the HMAC of.
const FINGERPRINT_PURPOSE: &[u8] = b"mfa-store/key-fingerprint/v1";
/// Hex digits of a fingerprint shown to people: enough to tell keys apart.
const FINGERPRINT_SHOWN: usize = 16;

/// The 32-byte AES-256-GCM key that encrypts TOTP secrets at rest.
///
/// `Debug` never shows the key. The server reads it from configuration
/// (`MFA_ENCRYPTION_KEY`, base64 of 32 bytes): see
/// [`EncryptionKey::from_base64`] and [`generate_key`].
#[derive(Clone)]
pub struct EncryptionKey([u8; KEY_LEN]);

impl EncryptionKey {
    /// A key of these bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> EncryptionKey {
        EncryptionKey(bytes)
    }

    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> EncryptionKey {
        EncryptionKey(generate_key())
    }

    /// Parse base64 (standard alphabet, padding optional, surrounding white
    /// space ignored) of exactly 32 bytes. The error never repeats the input.
    pub fn from_base64(text: &str) -> Result<EncryptionKey, Error> {
        parse_key_base64(text).map(EncryptionKey)
    }

    /// The key as standard padded base64, for writing a new key into
    /// configuration. Treat the result as the secret it is.
    pub fn to_base64(&self) -> String {
        format_key_base64(&self.0)
    }

    /// The key's fingerprint: equal for equal keys, and telling nothing
    /// about the key (an HMAC under it), so it can be printed, compared
    /// between servers, and kept in the database.
    pub fn fingerprint(&self) -> KeyFingerprint {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"))
            .chain_update(FINGERPRINT_PURPOSE)
            .finalize()
            .into_bytes();
        KeyFingerprint(mac.iter().fold(String::with_capacity(64), |mut hex, byte| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{byte:02x}");
            hex
        }))
    }

    pub(crate) fn cipher(&self) -> SecretCipher {
        let hmac = |key: &[u8]| {
            <Hmac<Sha256> as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"))
        };
        let derive = |purpose: &[u8]| hmac(&self.0).chain_update(purpose).finalize().into_bytes();
        SecretCipher {
            fingerprint: self.fingerprint(),
            aead: Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.0)),
            email_keys: hmac(&derive(EMAIL_KEY_PURPOSE)),
            code_keys: hmac(&derive(CODE_KEY_PURPOSE)),
        }
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

impl FromStr for EncryptionKey {
    type Err = Error;

    /// Same as [`EncryptionKey::from_base64`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EncryptionKey::from_base64(s)
    }
}

/// The fingerprint of an [`EncryptionKey`] ([`EncryptionKey::fingerprint`]):
/// 64 hex digits, of which `Display` shows the first 16.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFingerprint(String);

impl KeyFingerprint {
    /// All 64 hex digits, as the database keeps them.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_stored(hex: String) -> KeyFingerprint {
        KeyFingerprint(hex)
    }
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get(..FINGERPRINT_SHOWN).unwrap_or(&self.0))
    }
}

/// 32 fresh random bytes from the operating system's CSPRNG: a new
/// encryption key.
pub fn generate_key() -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    rand::fill(&mut key);
    key
}

/// Parse base64 of a 32-byte key (standard alphabet, padding optional,
/// surrounding white space ignored). The error never repeats the input.
pub fn parse_key_base64(text: &str) -> Result<[u8; KEY_LEN], Error> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = LENIENT
        .decode(text.trim())
        .map_err(|_| Error::InvalidKey("not valid base64"))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| Error::InvalidKey("expected base64 of exactly 32 bytes"))
}

/// A 32-byte key as standard padded base64 (44 characters).
pub fn format_key_base64(key: &[u8; KEY_LEN]) -> String {
    STANDARD.encode(key)
}

/// Encrypts and decrypts authenticator secrets with one key, and hashes
/// email addresses and email codes with keys derived from it.
pub(crate) struct SecretCipher {
    pub(crate) fingerprint: KeyFingerprint,
    aead: Aes256Gcm,
    email_keys: Hmac<Sha256>,
    code_keys: Hmac<Sha256>,
}

impl fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretCipher(<redacted>)")
    }
}

fn associated_data(user: UserId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + 8);
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(&user.0.to_be_bytes());
    aad
}

impl SecretCipher {
    /// The key under which the failures of `email` (normalised), an email
    /// no user has, are stored: base64 of its HMAC-SHA256 under the
    /// derived key, the same on every process with the same key.
    pub(crate) fn email_key(&self, email: &str) -> String {
        let mac = self.email_keys.clone().chain_update(email.as_bytes());
        STANDARD_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// What is stored of an email code's salted hash: base64 of its
    /// HMAC-SHA256 under the derived code key.
    pub(crate) fn code_digest(&self, code_hash: &str) -> String {
        let mac = self.code_keys.clone().chain_update(code_hash.as_bytes());
        STANDARD_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// `nonce || ciphertext+tag` of `secret`, bound to `user`.
    pub(crate) fn encrypt(&self, user: UserId, secret: &Secret) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let aad = associated_data(user);
        let ciphertext = self
            .aead
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Encrypt)?;
        let mut stored = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        stored.extend_from_slice(&nonce);
        stored.extend_from_slice(&ciphertext);
        Ok(stored)
    }

    /// The secret stored as `stored` for `user`.
    pub(crate) fn decrypt(&self, user: UserId, stored: &[u8]) -> Result<Secret, Error> {
        if stored.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::Decrypt);
        }
        let (nonce, ciphertext) = stored.split_at(NONCE_LEN);
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| Error::Decrypt)?;
        let aad = associated_data(user);
        let plaintext = self
            .aead
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Decrypt)?;
        Ok(Secret::from_bytes(plaintext))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::from_bytes(b"12345678901234567890".to_vec())
    }

    #[test]
    fn round_trip_and_fresh_nonce() {
        let cipher = EncryptionKey::generate().cipher();
        let a = cipher.encrypt(UserId(7), &secret()).unwrap();
        let b = cipher.encrypt(UserId(7), &secret()).unwrap();
        assert_ne!(a, b, "each write has a fresh nonce");
        assert_eq!(a.len(), NONCE_LEN + 20 + TAG_LEN);
        assert_eq!(cipher.decrypt(UserId(7), &a).unwrap(), secret());
    }

    #[test]
    fn emails_are_keyed_by_a_hash_under_the_key() {
        let key = EncryptionKey::generate();
        let stored = key.cipher().email_key("nobody@example.com");
        assert_eq!(stored.len(), 43, "base64 of 32 bytes");
        assert!(!stored.contains("nobody"));
        assert_eq!(key.cipher().email_key("nobody@example.com"), stored);
        assert_ne!(key.cipher().email_key("nobody2@example.com"), stored);
        assert_ne!(
            EncryptionKey::generate()
                .cipher()
                .email_key("nobody@example.com"),
            stored
        );
    }

    #[test]
    fn email_code_digests_are_keyed() {
        let key = EncryptionKey::generate();
        let hash = "d2a84f4b8b650937ec8f73cd8be2c74add5a911ba64df27458ed8229da804a26";
        let stored = key.cipher().code_digest(hash);
        assert_ne!(stored, hash);
        assert_eq!(
            key.cipher().code_digest(hash),
            stored,
            "the same on every process"
        );
        assert_ne!(EncryptionKey::generate().cipher().code_digest(hash), stored);
        // Not the address key under another name.
        assert_ne!(key.cipher().email_key(hash), stored);
    }

    #[test]
    fn bound_to_user_and_key() {
        let key = EncryptionKey::generate();
        let stored = key.cipher().encrypt(UserId(1), &secret()).unwrap();
        assert!(matches!(
            key.cipher().decrypt(UserId(2), &stored),
            Err(Error::Decrypt)
        ));
        assert!(matches!(
            EncryptionKey::generate()
                .cipher()
                .decrypt(UserId(1), &stored),
            Err(Error::Decrypt)
        ));
        let mut flipped = stored.clone();
        flipped[NONCE_LEN] ^= 1;
        assert!(matches!(
            key.cipher().decrypt(UserId(1), &flipped),
            Err(Error::Decrypt)
        ));
        assert!(matches!(
            key.cipher().decrypt(UserId(1), &stored[..10]),
            Err(Error::Decrypt)
        ));
    }

    #[test]
    fn base64_keys() {
        let key = generate_key();
        let text = format_key_base64(&key);
        assert_eq!(text.len(), 44);
        assert_eq!(parse_key_base64(&text).unwrap(), key);
        assert_eq!(parse_key_base64(&format!(" {text}\n")).unwrap(), key);
        assert_eq!(parse_key_base64(text.trim_end_matches('=')).unwrap(), key);
        let short = STANDARD.encode([0u8; 16]);
        let err = parse_key_base64(&short).unwrap_err().to_string();
        assert!(err.contains("32 bytes"), "{err}");
        assert!(!err.contains(&short));
        let err = EncryptionKey::from_base64("not base64!")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("not base64!"), "{err}");
        let parsed: EncryptionKey = text.parse().unwrap();
        assert_eq!(parsed.to_base64(), text);
    }

    #[test]
    fn debug_is_redacted() {
        let key = EncryptionKey::from_bytes([0x41; KEY_LEN]);
        assert_eq!(format!("{key:?}"), "EncryptionKey(<redacted>)");
        assert_eq!(format!("{:?}", key.cipher()), "SecretCipher(<redacted>)");
    }
}

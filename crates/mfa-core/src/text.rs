//! Normalisation and masking of user-supplied text.

use crate::error::MfaError;

/// Longest accepted email address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// Trim and lower-case an email address and check its shape: one `@`, a
/// non-empty local part and domain, no white space or control characters.
pub fn normalize_email(raw: &str) -> Result<String, MfaError> {
    let email = raw.trim().to_lowercase();
    let bad = || MfaError::InvalidRequest("email is not a valid address".into());
    if email.is_empty() || email.len() > MAX_EMAIL_LEN {
        return Err(bad());
    }
    if email
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == ',')
    {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') || domain.starts_with('.') {
        return Err(bad());
    }
    Ok(email)
}

/// Mask an email address for responses and logs: `alice@example.com` →
/// `a***@example.com`. Something without `@` is masked whole.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_local_part() {
        assert_eq!(mask_email("alice@example.com"), "a***@example.com");
        assert_eq!(mask_email("Ünïcode@example.com"), "Ü***@example.com");
        assert_eq!(mask_email("nonsense"), "***");
    }

    #[test]
    fn normalizes_and_rejects() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").as_deref(),
            Ok("alice@example.com")
        );
        for bad in ["", "a", "@x", "a@", "a b@x", "a@b@c", "a@.x", "<a@x>"] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
    }
}

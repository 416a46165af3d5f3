//! Normalisation and masking of user-supplied text.

use crate::error::MfaError;

/// Longest accepted email address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// Whether `c` has no place in a name or an address a person reads: a
/// control character, or an invisible one that changes how the text
/// around it shows (bidirectional embeddings, overrides and isolates, as
/// in `U+202E`; zero-width spaces and joiners that are not letters' own,
/// the byte-order mark). With them one name can be made to look like
/// another in the console, the audit trail and exports. The zero-width
/// (non-)joiners `U+200C` and `U+200D` are kept: scripts such as Persian
/// and Devanagari, and emoji sequences, need them.
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

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
        .any(|c| c.is_whitespace() || is_unprintable(c) || c == '<' || c == '>' || c == ',')
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
        for bad in [
            "",
            "a",
            "@x",
            "a@",
            "a b@x",
            "a@b@c",
            "a@.x",
            "<a@x>",
            "\u{202E}a@x",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn unprintable_characters() {
        for c in [
            '\0', '\n', '\u{7F}', '\u{200B}', '\u{202E}', '\u{2066}', '\u{FEFF}',
        ] {
            assert!(is_unprintable(c), "{c:?}");
        }
        for c in ['a', 'é', ' ', '\u{200C}', '\u{200D}', '\u{5D0}'] {
            assert!(!is_unprintable(c), "{c:?}");
        }
    }
}

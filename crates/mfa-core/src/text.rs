//! Normalisation and masking of user-supplied text.

use icu_normalizer::ComposingNormalizerBorrowed;

use crate::error::MfaError;

/// `text` in Unicode's composed form (NFC), as names and addresses are
/// stored and searched: `e` followed by a combining diaeresis (what some
/// keyboards, macOS file names and copies from PDFs give) is `ë`, so that
/// the two spellings of one name are one name, and one address one
/// account.
pub fn composed(text: &str) -> String {
    ComposingNormalizerBorrowed::new_nfc()
        .normalize(text)
        .into_owned()
}

/// Longest accepted email address (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// Whether `c` has no place in a name or an address a person reads: a
/// control character, or an invisible one that changes how the text
/// around it shows or shows as nothing: the bidirectional controls (marks,
/// embeddings, overrides and isolates, as `U+202E`), zero-width and other
/// invisible format characters, line and paragraph separators, the
/// Hangul and braille blanks, and tag characters. With them one name can
/// be made to look like another, or like none, in the console, the audit
/// trail and exports. The zero-width (non-)joiners `U+200C` and `U+200D`
/// and the variation selectors are kept: scripts such as Persian and
/// Devanagari, and emoji, need them.
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// Trim and lower-case an email address and check its shape: one `@`, a
/// non-empty local part and domain, no white space or control characters.
///
/// The domain is written as mail is sent to it: in ASCII, after IDNA's
/// mapping (UTS #46), refusing what the URL standard refuses in a host. So one mailbox is one address: `ｅxample.com` (a
/// full-width `ｅ`) is `example.com`, and `bücher.example` and
/// `xn--bcher-kva.example` are both `xn--bcher-kva.example`. A domain
/// that only looks like another (`exаmple.com`, with a Cyrillic `а`)
/// shows as what it is, `xn--exmple-4nf.com`. The local part is kept as
/// written, lower-cased and [`composed`] (`zoe\u{308}` is `zoë`, as mail
/// servers that take UTF-8 addresses compare them): its owner's mail
/// server decides what it means.
pub fn normalize_email(raw: &str) -> Result<String, MfaError> {
    let email = composed(&raw.trim().to_lowercase());
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
    // An address literal (`[127.0.0.1]`) is no domain: kept, for the
    // service to refuse as an address no code can be mailed to.
    if domain.starts_with('[') {
        return Ok(email);
    }
    // The URL standard's deny list, as the mailer's domain parsing applies it.
    let domain = idna::domain_to_ascii_cow(domain.as_bytes(), idna::AsciiDenyList::URL)
        .map_err(|_| bad())?;
    let email = format!("{local}@{domain}");
    if domain.is_empty() || domain.starts_with('.') || email.len() > MAX_EMAIL_LEN {
        return Err(bad());
    }
    Ok(email)
}

/// Mask an email address for responses and logs: `alice@example.com` →
/// `a***@example.com`. Something without `@` is masked whole. Control
/// characters are escaped (`\r\n` in an address that was refused for
/// them would otherwise start a line of its own in a log).
pub fn mask_email(email: &str) -> String {
    let shown = |c: char| -> String {
        if c.is_control() {
            c.escape_default().to_string()
        } else {
            c.to_string()
        }
    };
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).map(shown).collect();
            let domain: String = domain.chars().map(shown).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_string(),
    }
}

/// `email` masked as [`mask_email`] does, but told apart from `other`:
/// where the two would read the same (`bob@example.com` and
/// `bob.new@example.com` are both `b***@example.com`), the last character
/// before the `@` is shown too (`b***w@example.com`). For the notice of an
/// email change to the old address, which must say where the account went.
pub fn mask_email_apart(email: &str, other: &str) -> String {
    let masked = mask_email(email);
    if masked != mask_email(other) {
        return masked;
    }
    match email.split_once('@') {
        Some((local, _)) if local.chars().count() > 1 => {
            let last = local.chars().last().filter(|c| !c.is_control());
            match (last, masked.split_once("***@")) {
                (Some(last), Some((first, domain))) => format!("{first}***{last}@{domain}"),
                _ => masked,
            }
        }
        _ => masked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_two_addresses_apart() {
        assert_eq!(
            mask_email_apart("bob.new@example.com", "bob@example.com"),
            "b***w@example.com"
        );
        assert_eq!(
            mask_email_apart("carol@example.org", "bob@example.com"),
            "c***@example.org"
        );
        assert_eq!(
            mask_email_apart("b@example.com", "bob@example.com"),
            "b***@example.com"
        );
    }

    #[test]
    fn masks_local_part() {
        assert_eq!(mask_email("alice@example.com"), "a***@example.com");
        assert_eq!(mask_email("Ünïcode@example.com"), "Ü***@example.com");
        assert_eq!(mask_email("nonsense"), "***");
        assert_eq!(
            mask_email("alice@example.com\r\nBcc: evil@example.com"),
            "a***@example.com\\r\\nBcc: evil@example.com"
        );
        assert_eq!(mask_email("zoë@bücher.example"), "z***@bücher.example");
    }

    #[test]
    fn local_parts_and_names_are_composed() {
        // Decomposed (NFD) and composed (NFC) spellings are one address.
        for typed in [
            "Zoe\u{308}@example.com",
            "Zo\u{eb}@example.com",
            "ZO\u{cb}@example.com",
        ] {
            assert_eq!(
                normalize_email(typed).as_deref(),
                Ok("zo\u{eb}@example.com"),
                "{typed:?}"
            );
        }
        assert_eq!(composed("Rene\u{301}e"), "Ren\u{e9}e");
        // Compatibility forms are not folded: ｚ (full width) stays.
        assert_eq!(composed("\u{ff5a}"), "\u{ff5a}");
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
            "a@xn--zz",
            "a@exa%mple.com",
            "a@\u{3002}example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_domain_is_written_as_mail_goes_to_it() {
        for (given, stored) in [
            ("admina@\u{FF45}xample.com", "admina@example.com"),
            ("Zoë@BÜCHER.example", "zoë@xn--bcher-kva.example"),
            ("zoë@bu\u{0308}cher.example", "zoë@xn--bcher-kva.example"),
            ("zoë@xn--bcher-kva.example", "zoë@xn--bcher-kva.example"),
            ("admina@ex\u{0430}mple.com", "admina@xn--exmple-4nf.com"),
            ("a@example.com", "a@example.com"),
        ] {
            assert_eq!(normalize_email(given).as_deref(), Ok(stored), "{given:?}");
        }
    }

    #[test]
    fn unprintable_characters() {
        for c in [
            '\0',
            '\n',
            '\u{7F}',
            '\u{AD}',
            '\u{200B}',
            '\u{200E}',
            '\u{2028}',
            '\u{202E}',
            '\u{2066}',
            '\u{206A}',
            '\u{3164}',
            '\u{FEFF}',
            '\u{E0041}',
        ] {
            assert!(is_unprintable(c), "{c:?}");
        }
        for c in [
            'a',
            'é',
            ' ',
            '\u{200C}',
            '\u{200D}',
            '\u{FE0F}',
            '\u{5D0}',
            '\u{1F600}',
        ] {
            assert!(!is_unprintable(c), "{c:?}");
        }
    }
}

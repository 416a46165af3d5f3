//! `otpauth://` key URIs, as read by authenticator apps.
//!
//! Format: <https://github.com/google/google-authenticator/wiki/Key-Uri-Format>.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::{Algorithm, Secret, TotpError, TotpParams};

/// Everything except RFC 3986 "unreserved" characters is percent-encoded, in
/// both the label and the query. This encodes `@` as `%40` and `:` as `%3A`,
/// so the only literal `:` in a label is the issuer separator.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const SCHEME: &str = "otpauth://";

/// The longest issuer, in UTF-8 bytes, for which [`OtpauthUri::to_uri`]
/// always fits in a QR code ([`crate::qr_svg`], [`crate::qr_png`]): the
/// issuer appears twice, and every byte may take three when
/// percent-encoded. With an account of at most [`MAX_ACCOUNT_BYTES`], a
/// 64-byte secret and the longest parameters, the URI takes at most
/// 2,135 of the 2,331 bytes a QR code holds at its level of error
/// correction.
pub const MAX_ISSUER_BYTES: usize = 200;

/// The longest account name, in UTF-8 bytes, that [`MAX_ISSUER_BYTES`]
/// counts with: the longest email address (RFC 5321).
pub const MAX_ACCOUNT_BYTES: usize = 254;

/// The contents of an `otpauth://totp/...` URI.
///
/// `Debug` redacts the secret (see [`Secret`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtpauthUri {
    /// Service name shown by the authenticator app; may be empty.
    pub issuer: String,
    /// Account name, typically the user's email address.
    pub account: String,
    /// Shared secret.
    pub secret: Secret,
    /// Code parameters.
    pub params: TotpParams,
}

impl OtpauthUri {
    /// Renders the URI, e.g.
    /// `otpauth://totp/Acme:alice%40example.com?secret=JBSW...&issuer=Acme&algorithm=SHA1&digits=6&period=30`.
    ///
    /// The issuer appears both as label prefix and as `issuer` parameter,
    /// because older apps read only one or the other. All parameters are
    /// always written so that no app has to guess a default. An empty issuer
    /// is left out entirely.
    pub fn to_uri(&self) -> String {
        let account = utf8_percent_encode(&self.account, COMPONENT);
        let secret = self.secret.to_base32();
        let TotpParams {
            algorithm,
            digits,
            period,
        } = self.params;
        if self.issuer.is_empty() {
            format!(
                "{SCHEME}totp/{account}?secret={secret}&algorithm={algorithm}&digits={digits}&period={period}"
            )
        } else {
            let issuer = utf8_percent_encode(&self.issuer, COMPONENT);
            format!(
                "{SCHEME}totp/{issuer}:{account}?secret={secret}&issuer={issuer}&algorithm={algorithm}&digits={digits}&period={period}"
            )
        }
    }

    /// Parses a `totp` key URI; the inverse of [`OtpauthUri::to_uri`].
    ///
    /// Missing `algorithm`, `digits` and `period` take their defaults. The
    /// issuer may come from the label prefix, the `issuer` parameter or both,
    /// but when both are present they must agree. Leading spaces before the
    /// account name are dropped, as the format allows them after the colon.
    /// Unknown parameters (such as `image`) are ignored; repeated known ones
    /// are rejected as ambiguous. Error messages never echo the secret.
    pub fn parse(uri: &str) -> Result<OtpauthUri, TotpError> {
        let rest = uri
            .get(..SCHEME.len())
            .filter(|scheme| scheme.eq_ignore_ascii_case(SCHEME))
            .and_then(|_| uri.get(SCHEME.len()..))
            .ok_or_else(|| invalid("scheme must be otpauth://"))?;
        let (otp_type, rest) = rest
            .split_once('/')
            .ok_or_else(|| invalid("missing type and label"))?;
        if !otp_type.eq_ignore_ascii_case("totp") {
            return Err(invalid("unsupported type (only totp is supported)"));
        }
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (label, query) = rest.split_once('?').unwrap_or((rest, ""));

        let query = Query::parse(query)?;

        let (label_issuer, raw_account) = match label.split_once(':') {
            Some((issuer, account)) => (Some(decode(issuer)?), account),
            None => (None, label),
        };
        let mut account = decode(raw_account)?;
        let issuer = match (label_issuer, query.issuer) {
            (Some(from_label), Some(from_query)) if from_label != from_query => {
                return Err(invalid("issuer in label and issuer parameter differ"));
            }
            (Some(issuer), _) => issuer,
            (None, Some(issuer)) => {
                // The separator may itself be percent-encoded; only trust it
                // when it agrees with the issuer parameter.
                if let Some(stripped) = account
                    .strip_prefix(issuer.as_str())
                    .and_then(|a| a.strip_prefix(':'))
                {
                    account = stripped.to_owned();
                }
                issuer
            }
            (None, None) => String::new(),
        };
        let account = account.trim_start_matches(' ').to_owned();
        if account.is_empty() {
            return Err(invalid("missing account name"));
        }

        let secret = Secret::from_base32(
            query
                .secret
                .as_deref()
                .ok_or_else(|| invalid("missing secret parameter"))?,
        )?;
        let defaults = TotpParams::default();
        let algorithm = match query.algorithm {
            Some(a) => a.parse::<Algorithm>()?,
            None => defaults.algorithm,
        };
        let digits = match query.digits {
            Some(d) => d
                .parse()
                .map_err(|_| TotpError::InvalidParams("digits must be 6 or 8".to_owned()))?,
            None => defaults.digits,
        };
        let period = match query.period {
            Some(p) => p.parse().map_err(|_| {
                TotpError::InvalidParams("period must be a positive integer".to_owned())
            })?,
            None => defaults.period,
        };
        Ok(OtpauthUri {
            issuer,
            account,
            secret,
            params: TotpParams::new(algorithm, digits, period)?,
        })
    }
}

/// The query parameters this crate understands.
#[derive(Default)]
struct Query {
    secret: Option<String>,
    issuer: Option<String>,
    algorithm: Option<String>,
    digits: Option<String>,
    period: Option<String>,
}

impl Query {
    fn parse(query: &str) -> Result<Query, TotpError> {
        let mut parsed = Query::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.to_ascii_lowercase().as_str() {
                "secret" => &mut parsed.secret,
                "issuer" => &mut parsed.issuer,
                "algorithm" => &mut parsed.algorithm,
                "digits" => &mut parsed.digits,
                "period" => &mut parsed.period,
                _ => continue,
            };
            if slot.is_some() {
                return Err(TotpError::InvalidUri(format!(
                    "parameter {} appears more than once",
                    key.to_ascii_lowercase()
                )));
            }
            *slot = Some(value.into_owned());
        }
        Ok(parsed)
    }
}

fn decode(component: &str) -> Result<String, TotpError> {
    // `%ZZ` is no escape: percent-encoding would keep it as three
    // characters, a label other apps read otherwise (or refuse).
    let escapes_valid = component.split('%').skip(1).all(|after| {
        after
            .as_bytes()
            .get(..2)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_valid {
        return Err(invalid("a % in the URI is not followed by two hex digits"));
    }
    percent_decode_str(component)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| invalid("label is not valid UTF-8"))
}

fn invalid(reason: &str) -> TotpError {
    TotpError::InvalidUri(reason.to_owned())
}

/// The issuer to show in authenticator apps for a deployment environment.
///
/// Outside production the environment name is appended, so an account
/// enrolled against a sandbox never overwrites (or is mistaken for) the
/// production entry in the user's app: `("Acme", "production")` gives
/// `"Acme"`, `("Acme", "sandbox")` gives `"Acme (sandbox)"`. The comparison
/// with `production` ignores ASCII case and surrounding whitespace, and an
/// empty environment counts as production.
pub fn issuer_for_environment(issuer: &str, environment: &str) -> String {
    let environment = environment.trim();
    if environment.is_empty() || environment.eq_ignore_ascii_case("production") {
        issuer.to_owned()
    } else {
        format!("{issuer} ({environment})")
    }
}

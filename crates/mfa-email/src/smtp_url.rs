//! The SMTP URL: `smtp://user:pass@host:port` (STARTTLS required),
//! `smtps://…` (implicit TLS), `smtp://host:port?tls=none` (plain, loopback
//! only).
//!
//! lettre has its own URL parser, but its `smtp://` without `tls=` means
//! plain SMTP on port 25; here `smtp://` means STARTTLS required, and plain
//! text is refused unless the host is this machine. Hence this module.

use std::fmt;
use std::net::IpAddr;

use percent_encoding::percent_decode_str;
use url::Url;

use crate::Error;

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Security {
    /// Plain connection upgraded with STARTTLS; fails if the server does not
    /// offer it.
    StartTls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption at all: loopback only.
    None,
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Security::StartTls => "STARTTLS",
            Security::Tls => "TLS",
            Security::None => "no TLS",
        })
    }
}

/// What an SMTP URL says.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SmtpSettings {
    /// Host name or IP address, without brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) security: Security,
    /// User name and password, percent-decoded.
    pub(crate) credentials: Option<(String, String)>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// Default port of SMTP submission with STARTTLS.
const SUBMISSION_PORT: u16 = 587;
/// Default port of SMTP submission over TLS.
const SUBMISSIONS_PORT: u16 = 465;
/// Default port of plain SMTP.
const SMTP_PORT: u16 = 25;

/// Parse an SMTP URL. Error messages never repeat the URL: it may hold a
/// password.
pub(crate) fn parse(raw: &str) -> Result<SmtpSettings, Error> {
    let bad = |why: &str| Error::SmtpUrl(why.to_string());
    let url = Url::parse(raw.trim()).map_err(|e| {
        Error::SmtpUrl(format!(
            "{e} (expected smtp://host:port or smtps://host:port)"
        ))
    })?;

    let mut tls = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "tls" if tls.is_none() => tls = Some(value.into_owned()),
            "tls" => return Err(bad("`tls` is given twice")),
            other => {
                return Err(Error::SmtpUrl(format!(
                    "unknown parameter `{other}` (the only parameter is `tls=none`)"
                )));
            }
        }
    }
    let security = match (url.scheme(), tls.as_deref()) {
        ("smtp", None | Some("required" | "starttls")) => Security::StartTls,
        ("smtp", Some("none")) => Security::None,
        ("smtps", None | Some("wrapper" | "tls")) => Security::Tls,
        ("smtp" | "smtps", Some(other)) => {
            return Err(Error::SmtpUrl(format!(
                "`tls={other}` is not supported with {}:// (smtp:// always requires STARTTLS; \
                 `tls=none` is for loopback testing only)",
                url.scheme()
            )));
        }
        (other, _) => {
            return Err(Error::SmtpUrl(format!(
                "unsupported scheme `{other}` (expected smtp:// or smtps://)"
            )));
        }
    };

    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']'),
        _ => return Err(bad("no host")),
    };
    let host = percent_decode_str(host)
        .decode_utf8()
        .map_err(|_| bad("the host is not valid UTF-8"))?
        .into_owned();
    if !matches!(url.path(), "" | "/") {
        return Err(bad("a path is not allowed"));
    }
    if url.fragment().is_some() {
        return Err(bad("a fragment is not allowed"));
    }

    let port = url.port().unwrap_or(match security {
        Security::StartTls => SUBMISSION_PORT,
        Security::Tls => SUBMISSIONS_PORT,
        Security::None => SMTP_PORT,
    });

    if security == Security::None && !is_loopback(&host) {
        return Err(Error::PlainSmtpNotLoopback { host });
    }

    let decode = |s: &str, what: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| {
                Error::SmtpUrl(format!(
                    "the {what} is not valid UTF-8 once percent-decoded"
                ))
            })
    };
    let credentials = match (url.username(), url.password()) {
        ("", None) => None,
        ("", Some(_)) => return Err(bad("a password is given without a user name")),
        (_, None) => {
            return Err(bad(
                "a user name is given without a password (write smtp://user:password@host)",
            ));
        }
        (user, Some(pass)) => Some((decode(user, "user name")?, decode(pass, "password")?)),
    };

    Ok(SmtpSettings {
        host,
        port,
        security,
        credentials,
    })
}

/// 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) and `localhost`.
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> SmtpSettings {
        parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn schemes_ports_and_security() {
        let s = ok("smtp://mail.example.com");
        assert_eq!(
            (s.host.as_str(), s.port, s.security),
            ("mail.example.com", 587, Security::StartTls)
        );
        let s = ok("smtps://mail.example.com");
        assert_eq!((s.port, s.security), (465, Security::Tls));
        let s = ok("smtp://127.0.0.1?tls=none");
        assert_eq!((s.port, s.security), (25, Security::None));
        let s = ok("smtp://[::1]:2525?tls=none");
        assert_eq!((s.host.as_str(), s.port), ("::1", 2525));
        let s = ok("smtp://LocalHost.:2525/?tls=none");
        assert_eq!(s.security, Security::None);
        assert_eq!(ok("smtp://h:25?tls=required").security, Security::StartTls);
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let s = ok("smtp://us%40er:p%3Ass%2Fw@mail.example.com:2587");
        assert_eq!(
            s.credentials,
            Some(("us@er".to_string(), "p:ss/w".to_string()))
        );
        assert_eq!(s.port, 2587);
        assert!(!format!("{s:?}").contains("p:ss"));
    }

    #[test]
    fn refusals_say_why_and_never_repeat_the_password() {
        for (url, why) in [
            ("smtp://example.com:25?tls=none", "loopback"),
            ("smtp://10.0.0.1?tls=none", "loopback"),
            ("smtp://127.0.0.1.example.com?tls=none", "loopback"),
            ("smtp://u:secretpw@h?tls=opportunistic", "tls=opportunistic"),
            ("smtps://u:secretpw@h?tls=none", "tls=none"),
            ("http://u:secretpw@h", "unsupported scheme"),
            ("smtp://u:secretpw@h?foo=1", "unknown parameter"),
            ("smtp://u@h", "without a password"),
            ("smtp://:secretpw@h", "without a user name"),
            ("smtp://u:secretpw@h/x", "path"),
            ("not a url", "expected smtp://"),
        ] {
            let err = parse(url).expect_err(url).to_string();
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains("secretpw"), "{url}: {err}");
        }
    }

    #[test]
    fn loopback_rule() {
        for h in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
            "localhost",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["128.0.0.1", "::2", "localhost.example.com", "0.0.0.0", ""] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}

//! Subjects and bodies of the messages: built-in templates, operator
//! overrides from a directory, and rendering.
//!
//! A template is parsed once, when the mailer is built, into literal text and
//! placeholders, so that a typo in an override (`{{cde}}`) is a start-up error
//! rather than a broken mail at the worst moment. Rendering is one pass: a
//! substituted value is never scanned for placeholders again.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use mfa_core::{MailKind, MfaMethod, SignInChange};

use crate::Error;

/// The messages, one per [`MailKind`] variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TemplateKind {
    EnrollmentCode,
    LoginCode,
    FactorEnrolled,
    FactorReset,
    ReplayRefused,
    CodesLockedOut,
    RecoveryCodeUsed,
    EmailChangeConfirm,
    EmailChangeNotice,
    EmailChanged,
    SignInChanged,
}

impl TemplateKind {
    pub(crate) const ALL: [TemplateKind; 11] = [
        TemplateKind::EnrollmentCode,
        TemplateKind::LoginCode,
        TemplateKind::FactorEnrolled,
        TemplateKind::FactorReset,
        TemplateKind::ReplayRefused,
        TemplateKind::CodesLockedOut,
        TemplateKind::RecoveryCodeUsed,
        TemplateKind::EmailChangeConfirm,
        TemplateKind::EmailChangeNotice,
        TemplateKind::EmailChanged,
        TemplateKind::SignInChanged,
    ];

    pub(crate) fn of(kind: &MailKind) -> TemplateKind {
        match kind {
            MailKind::EnrollmentCode { .. } => TemplateKind::EnrollmentCode,
            MailKind::LoginCode { .. } => TemplateKind::LoginCode,
            MailKind::FactorEnrolled { .. } => TemplateKind::FactorEnrolled,
            MailKind::FactorReset { .. } => TemplateKind::FactorReset,
            MailKind::ReplayRefused => TemplateKind::ReplayRefused,
            MailKind::CodesLockedOut => TemplateKind::CodesLockedOut,
            MailKind::RecoveryCodeUsed { .. } => TemplateKind::RecoveryCodeUsed,
            MailKind::EmailChangeConfirm { .. } => TemplateKind::EmailChangeConfirm,
            MailKind::EmailChangeNotice { .. } => TemplateKind::EmailChangeNotice,
            MailKind::EmailChanged { .. } => TemplateKind::EmailChanged,
            MailKind::SignInChanged { .. } => TemplateKind::SignInChanged,
        }
    }

    /// The snake_case name used for override files and in logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TemplateKind::EnrollmentCode => "enrollment_code",
            TemplateKind::LoginCode => "login_code",
            TemplateKind::FactorEnrolled => "factor_enrolled",
            TemplateKind::FactorReset => "factor_reset",
            TemplateKind::ReplayRefused => "replay_refused",
            TemplateKind::CodesLockedOut => "codes_locked_out",
            TemplateKind::RecoveryCodeUsed => "recovery_code_used",
            TemplateKind::EmailChangeConfirm => "email_change_confirm",
            TemplateKind::EmailChangeNotice => "email_change_notice",
            TemplateKind::EmailChanged => "email_changed",
            TemplateKind::SignInChanged => "sign_in_changed",
        }
    }

    fn from_name(name: &str) -> Option<TemplateKind> {
        TemplateKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The placeholders a template of this kind may use.
    fn allowed(self) -> &'static [Var] {
        use Var::*;
        match self {
            TemplateKind::EnrollmentCode | TemplateKind::LoginCode => {
                &[Issuer, Code, Minutes, ValidFor]
            }
            TemplateKind::FactorEnrolled => &[Issuer, Method],
            TemplateKind::FactorReset => &[Issuer, Method, By],
            TemplateKind::ReplayRefused | TemplateKind::CodesLockedOut => &[Issuer],
            TemplateKind::RecoveryCodeUsed => &[Issuer, Remaining],
            TemplateKind::EmailChangeConfirm => &[Issuer, Token, Link, Minutes, ValidFor],
            TemplateKind::EmailChangeNotice => &[Issuer, NewEmail, By],
            TemplateKind::EmailChanged => &[Issuer, NewEmail, Method],
            TemplateKind::SignInChanged => &[Issuer, Change, By],
        }
    }

    /// The placeholder the text and HTML bodies must contain: a code mail
    /// without its code is useless.
    fn required_in_body(self) -> Option<Var> {
        match self {
            TemplateKind::EnrollmentCode | TemplateKind::LoginCode => Some(Var::Code),
            TemplateKind::EmailChangeConfirm => Some(Var::Token),
            _ => None,
        }
    }
}

/// A placeholder, written `{{name}}` in a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Var {
    Issuer,
    Code,
    Minutes,
    ValidFor,
    Method,
    By,
    Remaining,
    Token,
    Link,
    NewEmail,
    Change,
}

impl Var {
    const ALL: [Var; 11] = [
        Var::Issuer,
        Var::Code,
        Var::Minutes,
        Var::ValidFor,
        Var::Method,
        Var::By,
        Var::Remaining,
        Var::Token,
        Var::Link,
        Var::NewEmail,
        Var::Change,
    ];

    fn name(self) -> &'static str {
        match self {
            Var::Issuer => "issuer",
            Var::Code => "code",
            Var::Minutes => "minutes",
            Var::ValidFor => "valid_for",
            Var::Method => "method",
            Var::By => "by",
            Var::Remaining => "remaining",
            Var::Token => "token",
            Var::Link => "link",
            Var::NewEmail => "new_email",
            Var::Change => "change",
        }
    }
}

/// Which of the three files of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Subject,
    Text,
    Html,
}

impl Part {
    const ALL: [Part; 3] = [Part::Subject, Part::Text, Part::Html];

    fn suffix(self) -> &'static str {
        match self {
            Part::Subject => ".subject.txt",
            Part::Text => ".txt",
            Part::Html => ".html",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(Var),
}

/// One parsed template file.
#[derive(Clone, Debug)]
struct Parsed(Vec<Piece>);

impl Parsed {
    /// Split `src` into literals and placeholders. `{{` without a closing
    /// `}}` is literal text; `{{ name }}` with an unknown or, for this kind,
    /// unavailable name is an error.
    fn parse(kind: TemplateKind, src: &str) -> Result<Parsed, String> {
        let mut pieces = Vec::new();
        let mut rest = src;
        while let Some(open) = rest.find("{{") {
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                break;
            };
            let name = after[..close].trim();
            let var = Var::ALL
                .into_iter()
                .find(|v| v.name() == name)
                .ok_or_else(|| format!("unknown placeholder {{{{{name}}}}}"))?;
            if !kind.allowed().contains(&var) {
                return Err(format!(
                    "placeholder {{{{{name}}}}} is not available in {} mails (available: {})",
                    kind.name(),
                    kind.allowed()
                        .iter()
                        .map(|v| format!("{{{{{}}}}}", v.name()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if open > 0 {
                pieces.push(Piece::Lit(rest[..open].to_string()));
            }
            pieces.push(Piece::Var(var));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Lit(rest.to_string()));
        }
        Ok(Parsed(pieces))
    }

    fn uses(&self, var: Var) -> bool {
        self.0.contains(&Piece::Var(var))
    }

    fn render(&self, values: &Values, escape: bool) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var(v) => {
                    let value = values.get(*v);
                    if escape {
                        html_escape_into(value, &mut out);
                    } else {
                        out.push_str(value);
                    }
                }
            }
        }
        out
    }
}

/// Subject, text and HTML of one kind.
#[derive(Clone, Debug)]
struct Template {
    subject: Parsed,
    text: Parsed,
    html: Parsed,
}

/// A message's subject and bodies, as [`crate::EmailMailer::render`] makes
/// them: for an embedder whose own mail service sends them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// One line.
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML body (every value in it escaped).
    pub html: String,
}

/// Every template, built-in or overridden.
#[derive(Clone, Debug)]
pub(crate) struct Templates {
    by_kind: HashMap<TemplateKind, Template>,
    /// The built-in email-change confirmation with its link, used when a
    /// link can be made and the operator did not override that kind.
    change_with_link: Option<Template>,
    /// The override files that were used, for the start-up log.
    overrides: Vec<PathBuf>,
}

impl Templates {
    /// The built-in templates, overridden by the files found in `dir`.
    pub(crate) fn load(dir: Option<&Path>) -> Result<Templates, Error> {
        let mut by_kind = HashMap::new();
        let mut overrides = Vec::new();
        if let Some(dir) = dir {
            check_dir(dir)?;
        }
        for kind in TemplateKind::ALL {
            let mut parts = Vec::with_capacity(3);
            for part in Part::ALL {
                let (source, origin) = match dir {
                    Some(dir) => {
                        let path = dir.join(format!("{}{}", kind.name(), part.suffix()));
                        match read_override(&path)? {
                            Some(src) => {
                                overrides.push(path.clone());
                                (src, Some(path))
                            }
                            None => (builtin(kind, part), None),
                        }
                    }
                    None => (builtin(kind, part), None),
                };
                let source = match part {
                    // One line, whatever the editor left at the end.
                    Part::Subject => source.trim().to_string(),
                    Part::Text | Part::Html => source,
                };
                let template_error = |reason: String| Error::Template {
                    path: origin.clone().unwrap_or_else(|| {
                        format!("built-in {}{}", kind.name(), part.suffix()).into()
                    }),
                    reason,
                };
                if part == Part::Subject && source.contains(['\r', '\n']) {
                    return Err(template_error("a subject is one line".into()));
                }
                let parsed = Parsed::parse(kind, &source).map_err(template_error)?;
                if part == Part::Subject
                    && (parsed.uses(Var::Code) || parsed.uses(Var::Token))
                    && let Some(path) = &origin
                {
                    // Allowed, as some deployments want it, but said: a
                    // subject shows on locked screens and in relays' logs.
                    tracing::warn!(
                        file = %path.display(),
                        "a mail subject holds a one-time code or token: it shows in lock-screen \
                         previews and mail servers' logs"
                    );
                }
                if part != Part::Subject
                    && let Some(var) = kind.required_in_body()
                    && !parsed.uses(var)
                {
                    return Err(template_error(format!(
                        "must contain {{{{{}}}}}",
                        var.name()
                    )));
                }
                parts.push(parsed);
            }
            let html = parts.pop();
            let text = parts.pop();
            let subject = parts.pop();
            if let (Some(subject), Some(text), Some(html)) = (subject, text, html) {
                by_kind.insert(
                    kind,
                    Template {
                        subject,
                        text,
                        html,
                    },
                );
            }
        }
        if let Some(dir) = dir {
            warn_about_unknown_files(dir);
        }
        // The variant that leads with the link, part by part: a part the
        // operator overrides is theirs in both variants, the others stay
        // the built-in ones. (Overriding the subject alone dropped the
        // link from the body.)
        let kind = TemplateKind::EmailChangeConfirm;
        let overridden = |part: Part| {
            let name = format!("{}{}", kind.name(), part.suffix());
            overrides
                .iter()
                .any(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == name))
        };
        let change_with_link = match by_kind.get(&kind) {
            Some(without_link) if !Part::ALL.into_iter().all(overridden) => {
                let (subject, text, html) = BUILTIN_CHANGE_WITH_LINK;
                let html = format!("{HTML_HEAD}{html}{HTML_FOOT}");
                let part = |part: Part, source: &str, own: &Parsed| {
                    if overridden(part) {
                        return Ok(own.clone());
                    }
                    Parsed::parse(kind, source).map_err(|reason| Error::Template {
                        path: format!("built-in {} with a link", kind.name()).into(),
                        reason,
                    })
                };
                Some(Template {
                    subject: part(Part::Subject, subject, &without_link.subject)?,
                    text: part(Part::Text, text, &without_link.text)?,
                    html: part(Part::Html, &html, &without_link.html)?,
                })
            }
            _ => None,
        };
        Ok(Templates {
            by_kind,
            change_with_link,
            overrides,
        })
    }

    /// The override files in use.
    pub(crate) fn overrides(&self) -> &[PathBuf] {
        &self.overrides
    }

    /// Subject and bodies of `kind` from `issuer`; an email change's
    /// confirmation links to `confirm_link_prefix` followed by its token,
    /// when there is one.
    pub(crate) fn render(
        &self,
        issuer: &str,
        kind: &MailKind,
        confirm_link_prefix: Option<&str>,
    ) -> Rendered {
        let values = Values::new(issuer, kind, confirm_link_prefix);
        let with_link = self
            .change_with_link
            .as_ref()
            .filter(|_| !values.link.is_empty());
        let Some(t) = with_link.or_else(|| self.by_kind.get(&TemplateKind::of(kind))) else {
            // Unreachable: `load` fills every kind or fails.
            return Rendered {
                subject: issuer.to_string(),
                text: String::new(),
                html: String::new(),
            };
        };
        let subject = t
            .subject
            .render(&values, false)
            .split(['\r', '\n'])
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Rendered {
            subject,
            text: t.text.render(&values, false),
            html: t.html.render(&values, true),
        }
    }
}

fn check_dir(dir: &Path) -> Result<(), Error> {
    let unreadable = |source: io::Error| Error::TemplatesDir {
        path: dir.to_path_buf(),
        source,
    };
    let meta = fs::metadata(dir).map_err(unreadable)?;
    if !meta.is_dir() {
        return Err(unreadable(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    fs::read_dir(dir).map_err(unreadable)?;
    Ok(())
}

/// The file's text, `None` if it does not exist.
/// The largest template file read: far above any real mail, and far
/// below what a file named by mistake (a log, `/dev/zero`) would cost.
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

fn read_override(path: &Path) -> Result<Option<String>, Error> {
    let refused = |reason: String| Error::Template {
        path: path.to_path_buf(),
        reason,
    };
    // Checked before reading: a FIFO would block the start for good, and
    // a device or a huge file fill the memory.
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            return Err(refused("not a regular file".into()));
        }
        Ok(meta) if meta.len() > MAX_TEMPLATE_BYTES => {
            return Err(refused(format!(
                "{} bytes, more than the {MAX_TEMPLATE_BYTES} a template may have",
                meta.len()
            )));
        }
        _ => {}
    }
    match fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Error::Template {
                path: path.to_path_buf(),
                reason: "not valid UTF-8".into(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::TemplateFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A file that looks like a template but is named after no kind is most
/// likely a typo: say so at start-up.
fn warn_about_unknown_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stem = Part::ALL
            .into_iter()
            .find_map(|p| name.strip_suffix(p.suffix()));
        if let Some(stem) = stem
            && TemplateKind::from_name(stem).is_none()
        {
            tracing::warn!(
                file = %entry.path().display(),
                "mail template file is named after no message kind and is ignored"
            );
        }
    }
}

/// The values of the placeholders for one mail.
struct Values {
    issuer: String,
    code: String,
    minutes: String,
    valid_for: String,
    method: String,
    by: String,
    remaining: String,
    token: String,
    link: String,
    new_email: String,
    change: String,
}

impl Values {
    fn new(issuer: &str, kind: &MailKind, confirm_link_prefix: Option<&str>) -> Values {
        let mut v = Values {
            issuer: issuer.to_string(),
            code: String::new(),
            minutes: String::new(),
            valid_for: String::new(),
            method: String::new(),
            by: String::new(),
            remaining: String::new(),
            token: String::new(),
            link: String::new(),
            new_email: String::new(),
            change: String::new(),
        };
        match kind {
            MailKind::EnrollmentCode {
                code,
                valid_for_secs,
            }
            | MailKind::LoginCode {
                code,
                valid_for_secs,
            } => {
                v.code = code.clone();
                v.minutes = minutes(*valid_for_secs);
                v.valid_for = valid_for(*valid_for_secs);
            }
            MailKind::FactorEnrolled { method } => v.method = method_name(*method).to_string(),
            MailKind::FactorReset { methods, by_admin } => {
                v.method = if methods.is_empty() {
                    "every sign-in method".to_string()
                } else {
                    methods
                        .iter()
                        .map(|m| method_name(*m))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                v.by = by(by_admin);
            }
            MailKind::ReplayRefused | MailKind::CodesLockedOut => {}
            MailKind::RecoveryCodeUsed { remaining } => v.remaining = remaining.to_string(),
            MailKind::EmailChangeConfirm {
                token,
                valid_for_secs,
            } => {
                v.token = token.clone();
                if let Some(prefix) = confirm_link_prefix {
                    v.link = format!("{prefix}{token}");
                }
                v.minutes = minutes(*valid_for_secs);
                v.valid_for = valid_for(*valid_for_secs);
            }
            MailKind::EmailChangeNotice {
                new_email_masked,
                by_admin,
            } => {
                v.new_email = new_email_masked.clone();
                v.by = by(by_admin);
            }
            MailKind::EmailChanged {
                new_email_masked,
                email_factor_removed,
            } => {
                v.new_email = new_email_masked.clone();
                // What the change took with it, if anything.
                v.method = if *email_factor_removed {
                    method_name(MfaMethod::Email).to_string()
                } else {
                    "none".to_string()
                };
            }
            MailKind::SignInChanged { change, by_admin } => {
                v.change = match change {
                    SignInChange::PasswordSet => "a new password was set",
                    SignInChange::MfaOptOut => {
                        "you were opted out of multi-factor authentication in your \
                         organisation: signing in to it will not ask you for a second step, \
                         even where it requires one of its members"
                    }
                    SignInChange::PersonalMfaOptOut => {
                        "you turned off the multi-factor authentication you had asked for: \
                         organisations that do not require it will ask only for your password"
                    }
                    SignInChange::RecoveryCodesReplaced => {
                        "a new set of recovery codes was made; the codes of the old set no \
                         longer work"
                    }
                }
                .to_string();
                v.by = by(by_admin);
            }
        }
        v
    }

    fn get(&self, var: Var) -> &str {
        match var {
            Var::Issuer => &self.issuer,
            Var::Code => &self.code,
            Var::Minutes => &self.minutes,
            Var::ValidFor => &self.valid_for,
            Var::Method => &self.method,
            Var::By => &self.by,
            Var::Remaining => &self.remaining,
            Var::Token => &self.token,
            Var::Link => &self.link,
            Var::NewEmail => &self.new_email,
            Var::Change => &self.change,
        }
    }
}

/// Who made a change, as the notices say it.
fn by(by_admin: &Option<String>) -> String {
    match by_admin {
        Some(admin) => format!("an administrator ({admin})"),
        None => "you".to_string(),
    }
}

/// A lifetime in whole minutes, rounded up, at least 1.
fn minutes(secs: u64) -> String {
    secs.div_ceil(60).max(1).to_string()
}

/// A lifetime in words, rounded up to the minute: `10 minutes`, `1 hour`,
/// `24 hours`, `1 hour and 30 minutes`.
fn valid_for(secs: u64) -> String {
    let minutes = secs.div_ceil(60).max(1);
    let (hours, minutes) = (minutes / 60, minutes % 60);
    let unit = |n: u64, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    };
    match (hours, minutes) {
        (0, m) => unit(m, "minute"),
        (h, 0) => unit(h, "hour"),
        (h, m) => format!("{} and {}", unit(h, "hour"), unit(m, "minute")),
    }
}

fn method_name(m: MfaMethod) -> &'static str {
    match m {
        MfaMethod::Authenticator => "authenticator app",
        MfaMethod::Email => "email codes",
        MfaMethod::Recovery => "recovery codes",
    }
}

/// Escape the five characters that matter in HTML text and attributes.
fn html_escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

// ---- built-in templates

fn builtin(kind: TemplateKind, part: Part) -> String {
    let (subject, text, html) = builtin_parts(kind);
    match part {
        Part::Subject => subject.to_string(),
        Part::Text => text.to_string(),
        Part::Html => format!("{HTML_HEAD}{html}{HTML_FOOT}"),
    }
}

const HTML_HEAD: &str = "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width\">\n<title>{{issuer}}</title>\n</head>\n\
<body style=\"font-family: sans-serif; font-size: 15px; line-height: 1.5; color: #222;\">\n\
<div style=\"max-width: 560px; margin: 0 auto; padding: 16px;\">\n";

const HTML_FOOT: &str = "<p style=\"color: #777; font-size: 12px;\">This message was sent \
automatically by {{issuer}}. Replies are not read.</p>\n</div>\n</body>\n</html>\n";

/// A code or token, large and easy to copy.
macro_rules! big {
    ($v:literal) => {
        concat!(
            "<p style=\"font-family: monospace; font-size: 28px; font-weight: bold; ",
            // A 43-character email-change token breaks across lines on a
            // phone instead of running out of the message.
            "letter-spacing: 4px; margin: 24px 0; word-break: break-all;\">",
            $v,
            "</p>\n"
        )
    };
}

/// The built-in email-change confirmation when the server knows its
/// address (`MFA_PUBLIC_URL`): a link that opens the account page with the
/// token filled in.
const BUILTIN_CHANGE_WITH_LINK: (&str, &str, &str) = (
    "{{issuer}}: confirm your new email address",
    "Someone asked to use this address for an account at {{issuer}}. To
confirm, open this link within {{valid_for}} and press \"Confirm email
address\"; you need not be signed in:

    {{link}}

Or enter this token under \"Confirm a new email address\" on the account
page:

    {{token}}

Until it is confirmed, the account keeps its old address.

If you did not ask for this, ignore this message: nothing will change.
",
    concat!(
        "<p>Someone asked to use this address for an account at {{issuer}}. To confirm, ",
        "open this link within <strong>{{valid_for}}</strong> and press ",
        "&ldquo;Confirm email address&rdquo;; you need not be signed in:</p>\n",
        "<p><a href=\"{{link}}\" style=\"word-break: break-all;\">{{link}}</a></p>\n",
        "<p>Or enter this token under &ldquo;Confirm a new email address&rdquo; on the ",
        "account page:</p>\n",
        big!("{{token}}"),
        "<p>Until it is confirmed, the account keeps its old address.</p>\n",
        "<p>If you did not ask for this, ignore this message: nothing will change.</p>\n"
    ),
);

fn builtin_parts(kind: TemplateKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        TemplateKind::EnrollmentCode => (
            "{{issuer}}: your email verification code",
            "Your {{issuer}} verification code is:

    {{code}}

Enter it to use this email address for sign-in codes. It is valid for
{{valid_for}} and can be used once. Do not share it with anyone.

If you did not ask for this code, ignore this message and tell your
administrator: someone else may be signed in to your account.
",
            concat!(
                "<p>Your {{issuer}} verification code is:</p>\n",
                big!("{{code}}"),
                "<p>Enter it to use this email address for sign-in codes. It is valid for ",
                "<strong>{{valid_for}}</strong> and can be used once. ",
                "Do not share it with anyone.</p>\n",
                "<p>If you did not ask for this code, ignore this message and tell your ",
                "administrator: someone else may be signed in to your account.</p>\n"
            ),
        ),
        TemplateKind::LoginCode => (
            "{{issuer}}: your sign-in code",
            "Your {{issuer}} sign-in code is:

    {{code}}

It is valid for {{valid_for}} and can be used once. Do not share it
with anyone.

If you did not try to sign in, someone else knows your password: change it
now and tell your administrator.
",
            concat!(
                "<p>Your {{issuer}} sign-in code is:</p>\n",
                big!("{{code}}"),
                "<p>It is valid for <strong>{{valid_for}}</strong> and can be used once. ",
                "Do not share it with anyone.</p>\n",
                "<p>If you did not try to sign in, someone else knows your password: ",
                "change it now and tell your administrator.</p>\n"
            ),
        ),
        TemplateKind::FactorEnrolled => (
            "{{issuer}}: a sign-in method was added to your account",
            "A sign-in method was added to your {{issuer}} account: {{method}}.

If you did this, there is nothing to do. If you did not, contact your
administrator at once: someone else may have access to your account.
",
            concat!(
                "<p>A sign-in method was added to your {{issuer}} account: ",
                "<strong>{{method}}</strong>.</p>\n",
                "<p>If you did this, there is nothing to do. If you did not, contact your ",
                "administrator at once: someone else may have access to your account.</p>\n"
            ),
        ),
        TemplateKind::FactorReset => (
            "{{issuer}}: your sign-in methods changed",
            "Removed from how you sign in to your {{issuer}} account, by {{by}}:
{{method}}.

You may be asked to set up a sign-in method again when you next sign in.
If you did not expect this, contact your administrator at once.
",
            concat!(
                "<p>Removed from how you sign in to your {{issuer}} account, by {{by}}: ",
                "<strong>{{method}}</strong>.</p>\n",
                "<p>You may be asked to set up a sign-in method again when you next sign in. ",
                "If you did not expect this, contact your administrator at once.</p>\n"
            ),
        ),
        TemplateKind::ReplayRefused => (
            "{{issuer}}: a reused authenticator code was refused",
            "Someone tried to sign in to your {{issuer}} account with an authenticator
code that had already been used. The attempt was refused.

If you just entered the same code twice, there is nothing to do. If not,
someone else knows your password: change it now and tell your administrator.
",
            concat!(
                "<p>Someone tried to sign in to your {{issuer}} account with an authenticator ",
                "code that had already been used. The attempt was refused.</p>\n",
                "<p>If you just entered the same code twice, there is nothing to do. If not, ",
                "someone else knows your password: change it now and tell your ",
                "administrator.</p>\n"
            ),
        ),
        TemplateKind::CodesLockedOut => (
            "{{issuer}}: someone who knows your password could not pass the second step",
            "Someone signed in to your {{issuer}} account with your password, then gave
wrong codes for the second step several times in a row. The checks of your
codes are paused for a while; your authenticator app, email codes and
recovery codes are unchanged.

If that was you, wait a moment and try again. If not, someone else knows
your password: change it now and tell your administrator.
",
            concat!(
                "<p>Someone signed in to your {{issuer}} account with your password, then gave ",
                "wrong codes for the second step several times in a row. The checks of your ",
                "codes are paused for a while; your authenticator app, email codes and ",
                "recovery codes are unchanged.</p>\n",
                "<p>If that was you, wait a moment and try again. If not, someone else knows ",
                "your password: <strong>change it now</strong> and tell your ",
                "administrator.</p>\n"
            ),
        ),
        TemplateKind::RecoveryCodeUsed => (
            "{{issuer}}: a recovery code was used",
            "A recovery code was used on your {{issuer}} account (to sign in, or to
remove a sign-in method). Unused recovery codes left: {{remaining}}.

If you did not do this, contact your administrator at once. When few codes
are left, generate a new set from your account page.
",
            concat!(
                "<p>A recovery code was used on your {{issuer}} account (to sign in, or to ",
                "remove a sign-in method). ",
                "Unused recovery codes left: <strong>{{remaining}}</strong>.</p>\n",
                "<p>If you did not do this, contact your administrator at once. When few ",
                "codes are left, generate a new set from your account page.</p>\n"
            ),
        ),
        TemplateKind::EmailChangeConfirm => (
            "{{issuer}}: confirm your new email address",
            "Someone asked to use this address for an account at {{issuer}}. To
confirm, enter this token within {{valid_for}} on the account page
(/account) of the server you sign in to, under \"Confirm a new email
address\"; you need not be signed in:

    {{token}}

Until it is confirmed, the account keeps its old address.

If you did not ask for this, ignore this message: nothing will change.
",
            concat!(
                "<p>Someone asked to use this address for an account at {{issuer}}. To confirm, ",
                "enter this token within <strong>{{valid_for}}</strong> on the account ",
                "page (<code>/account</code>) of the server you sign in to, under ",
                "&ldquo;Confirm a new email address&rdquo;; you need not be signed in:</p>\n",
                big!("{{token}}"),
                "<p>Until it is confirmed, the account keeps its old address.</p>\n",
                "<p>If you did not ask for this, ignore this message: nothing will change.</p>\n"
            ),
        ),
        TemplateKind::EmailChangeNotice => (
            "{{issuer}}: your email address is about to change",
            "A change of the email address of your {{issuer}} account to {{new_email}}
was asked for by {{by}}. It takes effect only once it is confirmed from the
new address.

If you did not expect this, contact your administrator at once: someone
else may have access to your account.
",
            concat!(
                "<p>A change of the email address of your {{issuer}} account to ",
                "<strong>{{new_email}}</strong> was asked for by {{by}}. It takes effect ",
                "only once it is confirmed from the new address.</p>\n",
                "<p>If you did not expect this, contact your administrator at once: someone ",
                "else may have access to your account.</p>\n"
            ),
        ),
        TemplateKind::EmailChanged => (
            "{{issuer}}: your email address was changed",
            "The email address of your {{issuer}} account is now {{new_email}}: the change
was confirmed from that address. This address no longer signs in, and every
session of the account was ended. Sign-in methods removed with it:
{{method}}.

If you did not ask for this, contact your administrator at once: someone
else may have taken over your account.
",
            concat!(
                "<p>The email address of your {{issuer}} account is now ",
                "<strong>{{new_email}}</strong>: the change was confirmed from that address. ",
                "This address no longer signs in, and every session of the account was ended. ",
                "Sign-in methods removed with it: {{method}}.</p>\n",
                "<p>If you did not ask for this, contact your administrator at once: someone else ",
                "may have taken over your account.</p>\n"
            ),
        ),
        TemplateKind::SignInChanged => (
            "{{issuer}}: how you sign in was changed",
            "A change was made to how you sign in to your {{issuer}} account, by {{by}}:
{{change}}.

If you expected this, there is nothing to do. If not, contact your
administrator at once: someone else may have access to your account.
",
            concat!(
                "<p>A change was made to how you sign in to your {{issuer}} account, by {{by}}: ",
                "<strong>{{change}}</strong>.</p>\n",
                "<p>If you expected this, there is nothing to do. If not, contact your ",
                "administrator at once: someone else may have access to your account.</p>\n"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_withdrawn_opt_in_says_what_it_takes_away_and_who_did_it() {
        let t = Templates::load(None).expect("built-ins parse");
        let r = t.render(
            "Acme",
            &MailKind::SignInChanged {
                change: SignInChange::PersonalMfaOptOut,
                by_admin: None,
            },
            None,
        );
        let text = r.text.replace('\n', " ");
        assert!(text.contains("by you"), "{text}");
        assert!(
            text.contains("you turned off the multi-factor authentication you had asked for"),
            "{text}"
        );
        assert!(
            r.html.contains("will ask only for your password"),
            "{}",
            r.html
        );
    }

    #[test]
    fn builtins_parse_and_render_every_kind() {
        let t = Templates::load(None).expect("built-ins parse");
        let r = t.render(
            "Acme <Ops>",
            &MailKind::LoginCode {
                code: "123456".into(),
                valid_for_secs: 600,
            },
            None,
        );
        assert_eq!(r.subject, "Acme <Ops>: your sign-in code");
        assert!(r.text.contains("\n    123456\n"));
        assert!(r.text.contains("10 minutes"));
        assert!(r.html.contains("Acme &lt;Ops&gt;"));
        assert!(!r.html.contains("<Ops>"));
        assert!(!r.html.contains("{{"));
    }

    #[test]
    fn parse_rejects_unknown_and_unavailable_placeholders() {
        let err = Parsed::parse(TemplateKind::LoginCode, "x {{cde}} y").unwrap_err();
        assert!(err.contains("unknown placeholder {{cde}}"), "{err}");
        let err = Parsed::parse(TemplateKind::ReplayRefused, "{{code}}").unwrap_err();
        assert!(err.contains("not available in replay_refused"), "{err}");
        let p = Parsed::parse(TemplateKind::LoginCode, "a {{ code }} b {{ c").unwrap();
        assert_eq!(
            p.0,
            vec![
                Piece::Lit("a ".into()),
                Piece::Var(Var::Code),
                Piece::Lit(" b {{ c".into())
            ]
        );
    }

    #[test]
    fn values_are_not_expanded_again() {
        let p = Parsed::parse(TemplateKind::LoginCode, "{{issuer}}").unwrap();
        let v = Values::new(
            "{{code}}",
            &MailKind::LoginCode {
                code: "1".into(),
                valid_for_secs: 1,
            },
            None,
        );
        assert_eq!(p.render(&v, false), "{{code}}");
    }

    #[test]
    fn minutes_round_up() {
        assert_eq!(minutes(600), "10");
        assert_eq!(minutes(601), "11");
        assert_eq!(minutes(0), "1");
    }

    #[test]
    fn lifetimes_read_as_words() {
        assert_eq!(valid_for(0), "1 minute");
        assert_eq!(valid_for(60), "1 minute");
        assert_eq!(valid_for(600), "10 minutes");
        assert_eq!(valid_for(3600), "1 hour");
        assert_eq!(valid_for(5400), "1 hour and 30 minutes");
        assert_eq!(valid_for(3660), "1 hour and 1 minute");
        assert_eq!(valid_for(86_400), "24 hours");
    }

    #[test]
    fn escapes_five_characters() {
        let mut s = String::new();
        html_escape_into(r#"<a href="x">&'</a>"#, &mut s);
        assert_eq!(s, "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }
}

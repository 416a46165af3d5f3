//! The mailer against a real SMTP server over TCP (`SmtpSink`) and against
//! the file outbox.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mfa_core::{Mail, MailError, MailKind, Mailer, MfaMethod, SignInChange};
use mfa_email::test_support::{ReceivedMail, SmtpSink, dead_port, extract_code, text_part};
use mfa_email::{EmailMailer, Error, MailConfig};

const TO: &str = "alice.liddell@example.com";
const TO_MASKED: &str = "a***@example.com";
const WAIT: Duration = Duration::from_secs(10);

fn config(smtp_url: Option<String>, outbox: &Path) -> MailConfig {
    MailConfig {
        smtp_url,
        from: "MFA Server <no-reply@localhost>".into(),
        outbox_dir: outbox.to_path_buf(),
        issuer: "Acme Corp".into(),
        templates_dir: None,
        confirm_link_prefix: None,
        smtp_ca_file: None,
    }
}

fn smtp_mailer(sink: &SmtpSink) -> EmailMailer {
    EmailMailer::new(config(Some(sink.url()), &std::env::temp_dir())).expect("mailer builds")
}

fn login_code(code: &str) -> Mail {
    Mail {
        to: TO.into(),
        kind: MailKind::LoginCode {
            code: code.into(),
            valid_for_secs: 600,
        },
    }
}

fn one(sink: &SmtpSink) -> ReceivedMail {
    let got = sink.wait_for_messages(1, WAIT);
    assert_eq!(got.len(), 1, "expected one message, got {got:?}");
    got.into_iter().next().expect("one message")
}

/// An error or log text must not hold the code or the full address.
fn assert_clean(text: &str, secret: &str) {
    assert!(!text.contains(secret), "secret leaked: {text}");
    assert!(
        !text.to_ascii_lowercase().contains(TO),
        "address leaked: {text}"
    );
}

// ---- SMTP

#[test]
fn login_code_is_delivered_over_smtp_with_text_and_html() {
    let sink = SmtpSink::start().expect("sink");
    let mailer = smtp_mailer(&sink);
    mailer.send(&login_code("493817")).expect("sent");

    let m = one(&sink);
    assert_eq!(m.from, "no-reply@localhost");
    assert_eq!(m.to, [TO]);
    assert_eq!(m.subject().as_deref(), Some("Acme Corp: your sign-in code"));
    assert!(m.header("Date").is_some());
    let id = m.header("Message-ID").expect("Message-ID");
    // Under the sender's domain, not this machine's short host name.
    assert!(
        id.starts_with('<') && id.ends_with("@localhost>") && id.len() > 20,
        "{id}"
    );
    assert_eq!(
        m.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    assert!(
        m.header("Content-Type")
            .is_some_and(|ct| ct.starts_with("multipart/alternative")),
        "{:?}",
        m.header("Content-Type")
    );

    let text = m.text().expect("text part");
    assert!(text.contains("Acme Corp"), "{text}");
    assert!(text.contains("\n    493817\n"), "{text}");
    assert!(text.contains("10 minutes"), "{text}");
    assert!(text.contains("If you did not try to sign in"), "{text}");
    let html = m.html().expect("html part");
    assert!(html.contains("Acme Corp"), "{html}");
    assert!(html.contains("493817"), "{html}");
    assert!(html.contains("10 minutes"), "{html}");
    assert!(html.contains("If you did not try to sign in"), "{html}");
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");

    assert_eq!(m.code().as_deref(), Some("493817"));
    assert_eq!(extract_code(&m.data).as_deref(), Some("493817"));
}

#[test]
fn every_kind_renders_and_is_delivered() {
    let sink = SmtpSink::start().expect("sink");
    // A non-ASCII issuer: the sink advertises no 8BITMIME, so this also
    // shows that messages are 7-bit clean.
    let mut cfg = config(Some(sink.url()), &std::env::temp_dir());
    cfg.issuer = "Société <Générale> & Co".into();
    let mailer = EmailMailer::new(cfg).expect("mailer");
    let token = "Zm9vYmFyYmF6cXV4LXRva2VuLTEyMzQ1Njc4OQ";
    let kinds = vec![
        MailKind::EnrollmentCode {
            code: "100200".into(),
            valid_for_secs: 600,
        },
        MailKind::LoginCode {
            code: "300400".into(),
            valid_for_secs: 300,
        },
        MailKind::FactorEnrolled {
            method: MfaMethod::Authenticator,
        },
        MailKind::FactorReset {
            methods: vec![MfaMethod::Authenticator, MfaMethod::Email],
            by_admin: Some("bob@example.com".into()),
        },
        MailKind::FactorReset {
            methods: vec![MfaMethod::Recovery],
            by_admin: None,
        },
        MailKind::ReplayRefused,
        MailKind::CodesLockedOut,
        MailKind::RecoveryCodeUsed { remaining: 7 },
        MailKind::EmailChangeConfirm {
            token: token.into(),
            valid_for_secs: 86_400,
        },
        MailKind::EmailChangeNotice {
            new_email_masked: "n***@example.org".into(),
            by_admin: Some("Ada Admin".into()),
        },
        MailKind::EmailChanged {
            new_email_masked: "n***@example.org".into(),
            email_factor_removed: true,
        },
        MailKind::SignInChanged {
            change: SignInChange::PasswordSet,
            by_admin: Some("Bob Admin".into()),
        },
        MailKind::SignInChanged {
            change: SignInChange::RecoveryCodesReplaced,
            by_admin: None,
        },
    ];
    for kind in &kinds {
        mailer
            .send(&Mail {
                to: TO.into(),
                kind: kind.clone(),
            })
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    }
    let got = sink.wait_for_messages(kinds.len(), WAIT);
    assert_eq!(got.len(), kinds.len());

    for (kind, m) in kinds.iter().zip(&got) {
        assert!(m.data.is_ascii(), "{kind:?}: not 7-bit clean");
        let subject = m.subject().expect("subject");
        assert!(subject.starts_with("=?utf-8?"), "{kind:?}: {subject}");
        let text = m.text().expect("text part");
        let html = m.html().expect("html part");
        assert!(text.contains("Société <Générale> & Co"), "{kind:?}: {text}");
        assert!(
            html.contains("Société &lt;Générale&gt; &amp; Co"),
            "{kind:?}: {html}"
        );
        assert!(!html.contains("<Générale>"), "{kind:?}: unescaped issuer");
        assert!(!text.contains("{{") && !html.contains("{{"), "{kind:?}");
        let expect: &[&str] = match kind {
            MailKind::EnrollmentCode { .. } => &["100200", "10 minutes", "If you did not ask"],
            MailKind::LoginCode { .. } => &["300400", "5 minutes", "If you did not try"],
            MailKind::FactorEnrolled { .. } => &["authenticator app", "If you did not"],
            MailKind::FactorReset {
                by_admin: Some(_), ..
            } => &[
                "authenticator app, email codes",
                "an administrator (bob@example.com)",
            ],
            MailKind::FactorReset { by_admin: None, .. } => &["recovery codes", "by you"],
            MailKind::ReplayRefused => &["already been used", "refused"],
            MailKind::CodesLockedOut => &["with your password", "change it now"],
            MailKind::RecoveryCodeUsed { .. } => &["recovery codes left: 7"],
            MailKind::EmailChangeConfirm { .. } => &[token, "24 hours", "If you did not ask"],
            MailKind::EmailChangeNotice { .. } => &[
                "n***@example.org",
                "asked for by an administrator (Ada Admin)",
                "If you did not expect",
            ],
            MailKind::EmailChanged { .. } => &["n***@example.org", "removed with it: email codes"],
            MailKind::SignInChanged {
                by_admin: Some(_), ..
            } => &["by an administrator (Bob Admin)", "a new password was set"],
            MailKind::SignInChanged { by_admin: None, .. } => {
                &["by you", "the old set no longer work"]
            }
        };
        for needle in expect {
            let flat = text.replace('\n', " ");
            assert!(
                flat.contains(needle),
                "{kind:?}: {needle:?} missing in {text}"
            );
        }
    }
    assert_eq!(got[0].code().as_deref(), Some("100200"));
    assert_eq!(got[1].code().as_deref(), Some("300400"));
    assert_eq!(got[8].token().as_deref(), Some(token));
}

#[test]
fn a_transient_failure_is_retried_once_then_reported_as_transient() {
    let sink = SmtpSink::start_failing().expect("sink");
    let mailer = smtp_mailer(&sink);
    let err = mailer.send(&login_code("551234")).expect_err("451 twice");
    assert!(err.transient, "{err:?}");
    assert!(err.message.contains("451"), "{}", err.message);
    assert!(err.message.contains("for now"), "{}", err.message);
    assert_clean(&err.to_string(), "551234");
    assert_eq!(
        sink.mail_from_commands(),
        2,
        "one try and exactly one retry"
    );
    assert!(sink.messages().is_empty());

    // The pool recovers once the server accepts again.
    sink.set_failing(false);
    mailer.send(&login_code("551235")).expect("sent");
    assert_eq!(one(&sink).code().as_deref(), Some("551235"));
    assert_eq!(sink.mail_from_commands(), 3);
}

#[test]
fn a_dead_server_fails_quickly_with_a_clear_message() {
    let port = dead_port();
    let mailer = EmailMailer::new(config(
        Some(format!("smtp://127.0.0.1:{port}?tls=none")),
        &std::env::temp_dir(),
    ))
    .expect("builds without connecting");
    let started = Instant::now();
    let err = mailer
        .send(&login_code("777001"))
        .expect_err("nobody listens");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.transient,
        "an unreachable server may come back: {err:?}"
    );
    assert!(
        err.message.contains("cannot talk to the SMTP server")
            && err.message.contains(&format!("127.0.0.1:{port}")),
        "{}",
        err.message
    );
    assert_clean(&err.to_string(), "777001");
}

#[test]
fn smtp_without_starttls_support_is_refused_not_downgraded() {
    // The sink offers no STARTTLS: `smtp://` requires it, so nothing is sent.
    let sink = SmtpSink::start().expect("sink");
    let url = format!("smtp://127.0.0.1:{}", sink.port());
    let mailer = EmailMailer::new(config(Some(url), &std::env::temp_dir())).expect("mailer");
    let err = mailer.send(&login_code("818283")).expect_err("no STARTTLS");
    assert!(!err.transient, "{err:?}");
    assert_clean(&err.to_string(), "818283");
    assert_eq!(sink.mail_from_commands(), 0);
    assert!(sink.messages().is_empty());
}

#[test]
fn an_invalid_recipient_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mailer = EmailMailer::new(config(None, dir.path())).expect("mailer");
    let err: MailError = mailer
        .send(&Mail {
            to: "eve <eve@example.com>".into(),
            kind: MailKind::ReplayRefused,
        })
        .expect_err("not an address");
    assert!(!err.transient);
    assert!(!err.message.contains("eve@example.com"), "{}", err.message);
    assert!(err.message.contains("e***@example.com>"), "{}", err.message);
}

// ---- configuration

#[test]
fn plain_smtp_is_accepted_only_to_loopback() {
    let tmp = std::env::temp_dir();
    let err = EmailMailer::new(config(Some("smtp://example.com:25?tls=none".into()), &tmp))
        .expect_err("plain SMTP across the network");
    assert!(matches!(err, Error::PlainSmtpNotLoopback { ref host } if host == "example.com"));
    let shown = err.to_string();
    assert!(
        shown.contains("loopback") && shown.contains("example.com"),
        "{shown}"
    );

    for url in [
        "smtp://127.0.0.1:25?tls=none",
        "smtp://localhost:2525?tls=none",
        "smtp://[::1]:2525?tls=none",
    ] {
        EmailMailer::new(config(Some(url.into()), &tmp)).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

#[test]
fn tls_urls_build_without_connecting() {
    let tmp = std::env::temp_dir();
    let m = EmailMailer::new(config(
        Some("smtps://user:s3cr%40t@smtp.example.com".into()),
        &tmp,
    ))
    .expect("smtps");
    assert_eq!(m.to_string(), "SMTP smtp.example.com:465 (TLS)");
    assert!(!format!("{m:?}").contains("s3cr"));
    let m = EmailMailer::new(config(
        Some("smtp://user:pass@smtp.example.com".into()),
        &tmp,
    ))
    .expect("smtp");
    assert_eq!(m.to_string(), "SMTP smtp.example.com:587 (STARTTLS)");
    assert_eq!(m.outbox_dir(), None);
}

#[test]
fn configuration_errors_are_clear_and_never_show_the_password() {
    let tmp = std::env::temp_dir();
    for (url, why) in [
        (
            "smtp://user:hunter2@h?tls=opportunistic",
            "tls=opportunistic",
        ),
        ("pop3://user:hunter2@h", "unsupported scheme"),
        ("smtp://user@h", "without a password"),
        ("hunter2", "expected smtp://"),
    ] {
        let err = EmailMailer::new(config(Some(url.into()), &tmp)).expect_err(url);
        let shown = err.to_string();
        assert!(matches!(err, Error::SmtpUrl(_)), "{url}: {err:?}");
        assert!(shown.contains(why), "{url}: {shown}");
        assert!(!shown.contains("hunter2"), "{url}: {shown}");
    }

    let mut cfg = config(None, &tmp);
    cfg.from = "MFA Server <not an address>".into();
    let err = EmailMailer::new(cfg).expect_err("bad sender");
    assert!(matches!(err, Error::From { .. }), "{err:?}");
    assert!(err.to_string().contains("sender address"), "{err}");

    // A name with punctuation unquoted: the refusal says to quote it.
    let mut cfg = config(None, &tmp);
    cfg.from = "Acme, Inc. <a@example.com>".into();
    let err = EmailMailer::new(cfg).expect_err("unquoted punctuation");
    assert!(
        err.to_string()
            .contains("put a name with punctuation in double quotes: \"Acme, Inc.\" <…>"),
        "{err}"
    );
    let mut cfg = config(None, &tmp);
    cfg.from = "\"Acme, Inc.\" <a@example.com>".into();
    EmailMailer::new(cfg).expect("quoted");
}

// ---- templates

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write template");
}

#[test]
fn template_overrides_change_subject_and_body() {
    let templates = tempfile::tempdir().expect("tempdir");
    write(
        templates.path(),
        "login_code.subject.txt",
        "Sign-in code for {{issuer}}\n",
    );
    write(
        templates.path(),
        "login_code.txt",
        "Hello from {{ issuer }}! Code: {{code}} (valid {{minutes}} min).\n",
    );
    write(templates.path(), "README.md", "not a template");

    let sink = SmtpSink::start().expect("sink");
    let mut cfg = config(Some(sink.url()), &std::env::temp_dir());
    cfg.templates_dir = Some(templates.path().to_path_buf());
    let mailer = EmailMailer::new(cfg).expect("mailer");

    mailer.send(&login_code("246810")).expect("sent");
    let m = one(&sink);
    assert_eq!(m.subject().as_deref(), Some("Sign-in code for Acme Corp"));
    assert_eq!(
        m.text().as_deref(),
        Some("Hello from Acme Corp! Code: 246810 (valid 10 min).\n")
    );
    assert_eq!(m.code().as_deref(), Some("246810"));
    // No html override: the built-in one.
    assert!(
        m.html()
            .is_some_and(|h| h.contains("If you did not try to sign in"))
    );

    // Other kinds keep their built-ins.
    sink.clear();
    mailer
        .send(&Mail {
            to: TO.into(),
            kind: MailKind::ReplayRefused,
        })
        .expect("sent");
    assert_eq!(
        one(&sink).subject().as_deref(),
        Some("Acme Corp: a reused authenticator code was refused")
    );
}

#[test]
fn bad_templates_are_start_up_errors() {
    let build = |dir: PathBuf| {
        let mut cfg = config(None, &std::env::temp_dir());
        cfg.templates_dir = Some(dir);
        EmailMailer::new(cfg)
    };

    let missing = tempfile::tempdir().expect("tempdir").path().join("nope");
    let err = build(missing.clone()).expect_err("missing dir");
    assert!(matches!(err, Error::TemplatesDir { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let file = tempfile::NamedTempFile::new().expect("file");
    let err = build(file.path().to_path_buf()).expect_err("not a dir");
    assert!(matches!(err, Error::TemplatesDir { .. }), "{err:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "factor_enrolled.txt", "Added {{methd}}.");
    let err = build(dir.path().to_path_buf()).expect_err("typo");
    assert!(
        matches!(err, Error::Template { ref reason, .. } if reason.contains("{{methd}}")),
        "{err:?}"
    );
    assert!(err.to_string().contains("factor_enrolled.txt"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "replay_refused.html", "<p>{{code}}</p>");
    let err = build(dir.path().to_path_buf()).expect_err("code in a notice");
    assert!(err.to_string().contains("not available"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "enrollment_code.html",
        "<p>Your code is below.</p>",
    );
    let err = build(dir.path().to_path_buf()).expect_err("no code");
    assert!(err.to_string().contains("must contain {{code}}"), "{err}");
}

// ---- outbox

#[test]
fn the_outbox_gets_one_eml_per_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = dir.path().join("data").join("outbox");
    let mailer = EmailMailer::new(config(None, &outbox)).expect("mailer");
    assert_eq!(mailer.outbox_dir(), Some(outbox.as_path()));
    assert_eq!(mailer.to_string(), format!("outbox {}", outbox.display()));

    mailer.send(&login_code("135790")).expect("first");
    mailer.send(&login_code("864200")).expect("second");

    let mut codes: Vec<String> = std::fs::read_dir(&outbox)
        .expect("outbox exists")
        .map(|e| e.expect("entry").path())
        .inspect(|p| assert_eq!(p.extension().and_then(|e| e.to_str()), Some("eml")))
        .map(|p| {
            let eml = std::fs::read_to_string(&p).expect("readable");
            assert!(eml.contains(&format!("To: {TO}")), "{eml}");
            let text = text_part(&eml).expect("text part");
            assert!(text.contains("10 minutes"), "{text}");
            extract_code(&eml).expect("code")
        })
        .collect();
    codes.sort();
    assert_eq!(codes, ["135790", "864200"]);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&outbox)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "outbox readable by others: {mode:o}");
    }
}

/// An outbox made by hand with the usual 0755 is made private, and so is
/// each message: an audit found codes in 0644 files of a 0755 outbox.
#[cfg(unix)]
#[test]
fn the_outbox_and_its_messages_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = dir.path().join("outbox");
    std::fs::create_dir(&outbox).expect("outbox");
    std::fs::set_permissions(&outbox, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mailer = EmailMailer::new(config(None, &outbox)).expect("mailer");
    mailer.send(&login_code("135790")).expect("sent");
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&outbox), 0o700);
    let files: Vec<_> = std::fs::read_dir(&outbox)
        .expect("outbox")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(mode(&files[0]), 0o600);
}

/// A message is written whole under a name no reader of `*.eml` takes,
/// then renamed; what a killed process left half-written is removed by
/// the next mailer once it is a minute old (a younger one may be another
/// process's, being written).
#[test]
fn half_written_messages_are_never_eml_and_are_cleaned_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = dir.path().join("outbox");
    std::fs::create_dir(&outbox).expect("outbox");
    let old = outbox.join(".killed.eml.partial");
    let young = outbox.join(".writing.eml.partial");
    for path in [&old, &young] {
        std::fs::write(path, "From: half").expect("partial");
    }
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .and_then(|f| f.set_modified(long_ago))
        .expect("age it");
    let mailer = EmailMailer::new(config(None, &outbox)).expect("mailer");
    mailer.send(&login_code("246801")).expect("sent");
    let mut names: Vec<String> = std::fs::read_dir(&outbox)
        .expect("outbox")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], ".writing.eml.partial");
    assert!(
        names[1].ends_with(".eml") && !names[1].starts_with('.'),
        "{names:?}"
    );
}

#[test]
fn an_outbox_that_cannot_be_created_is_a_configuration_error() {
    let file = tempfile::NamedTempFile::new().expect("file");
    let err =
        EmailMailer::new(config(None, &file.path().join("outbox"))).expect_err("under a file");
    assert!(matches!(err, Error::Outbox { .. }), "{err:?}");
}

/// An outbox that cannot be written once the mailer runs (a full disk, a
/// directory replaced or made unwritable) is a failure to try again after,
/// as a mail server that is down is: a notice waits for it to be mended,
/// and a request is not told that the address was refused. (A notice was
/// given up at its first try.) `check_connection` sees it beforehand.
#[test]
fn an_outbox_that_cannot_be_written_is_a_failure_for_now() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = dir.path().join("outbox");
    let mailer = EmailMailer::new(config(None, &outbox)).expect("mailer");
    mailer.check_connection().expect("a writable outbox");
    std::fs::remove_dir(&outbox).expect("remove the outbox");
    std::fs::write(&outbox, b"").expect("a file in its place");
    let err = mailer
        .send_notice(&Mail {
            to: "alice@example.com".into(),
            kind: MailKind::ReplayRefused,
        })
        .expect_err("no directory to write to");
    assert!(err.transient, "{err:?}");
    assert!(!err.delivery_unknown);
    assert!(
        err.message.contains("cannot write to the mail outbox"),
        "{}",
        err.message
    );
    let refused = mailer.check_connection().expect_err("not writable");
    assert!(
        refused.contains("cannot write to the mail outbox"),
        "{refused}"
    );
}

/// A relay that wants a login the mailer was not given answers `530` at
/// `MAIL`: the configuration's fault, not the message's. A notice waits
/// for it to be mended (it was given up at once), a request is told that
/// trying again will not help, and `check_connection` sees it.
#[test]
fn a_relay_that_wants_a_login_is_a_configuration_fault() {
    let sink = SmtpSink::start().expect("sink");
    sink.set_wanting_login(true);
    let mailer = smtp_mailer(&sink);
    let notice = mailer
        .send_notice(&Mail {
            to: "alice@example.com".into(),
            kind: MailKind::ReplayRefused,
        })
        .expect_err("530");
    assert!(notice.transient, "{notice:?}");
    assert!(
        notice.message.contains("asks for a login"),
        "{}",
        notice.message
    );
    let request = mailer.send(&login_code("123456")).expect_err("530");
    assert!(!request.transient, "{request:?}");
    let why = mailer.check_connection().expect_err("530");
    assert!(
        why.contains("refuses a message from no-reply@localhost"),
        "{why}"
    );
    assert!(why.contains("530"), "{why}");
    sink.set_wanting_login(false);
    mailer.check_connection().expect("accepted now");
    assert!(sink.messages().is_empty(), "nothing was sent");
}

/// A relay whose certificate a private CA signed: refused (the public
/// roots do not know it; an audit found no way to trust it), accepted
/// with that CA's file (`MFA_SMTP_CA_FILE`).
#[test]
fn a_private_ca_is_trusted_only_when_its_file_is_given() {
    let sink = SmtpSink::start_tls().expect("TLS sink");
    let mail = Mail {
        to: "alice@example.com".into(),
        kind: MailKind::LoginCode {
            code: "042917".into(),
            valid_for_secs: 600,
        },
    };
    let untrusting = smtp_mailer(&sink);
    let refused = untrusting.send(&mail).expect_err("an unknown issuer");
    assert!(!refused.transient, "{refused:?}");
    assert!(refused.message.contains("TLS"), "{}", refused.message);
    let why = untrusting
        .check_connection()
        .expect_err("an unknown issuer");
    assert!(why.contains("UnknownIssuer"), "{why}");
    assert_eq!(sink.mail_from_commands(), 0);

    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, mfa_email::test_support::TEST_CA_PEM).expect("CA file");
    let trusting = EmailMailer::new(MailConfig {
        smtp_ca_file: Some(ca.clone()),
        ..config(Some(sink.url()), dir.path())
    })
    .expect("mailer");
    trusting.check_connection().expect("a session over TLS");
    trusting.send(&mail).expect("sent over TLS");
    let got = sink.wait_for_messages(1, WAIT);
    assert_eq!(got[0].code().as_deref(), Some("042917"));
    // The notices' own dialogue trusts it too.
    trusting
        .send_notice(&Mail {
            to: "alice@example.com".into(),
            kind: MailKind::ReplayRefused,
        })
        .expect("notice sent over TLS");
    assert_eq!(sink.wait_for_messages(2, WAIT).len(), 2);
}

/// A CA file that could never be used is refused when the mailer is made:
/// missing, without a certificate, or given where no TLS would use it.
#[test]
fn a_ca_file_that_cannot_be_used_is_refused_at_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls_url = Some("smtps://mail.example.com".to_string());
    let with_file = |url: Option<String>, path: &Path| {
        EmailMailer::new(MailConfig {
            smtp_ca_file: Some(path.to_path_buf()),
            ..config(url, dir.path())
        })
        .expect_err("refused")
    };
    let missing = dir.path().join("missing.pem");
    let err = with_file(tls_url.clone(), &missing);
    assert!(matches!(err, Error::SmtpCaFile { .. }), "{err:?}");
    assert!(Error::to_string(&err).contains("missing.pem"), "{err}");

    let empty = dir.path().join("key.pem");
    std::fs::write(
        &empty,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("file");
    let err = with_file(tls_url.clone(), &empty);
    assert!(
        err.to_string().contains("holds no PEM certificate"),
        "{err}"
    );

    let garbled = dir.path().join("garbled.pem");
    std::fs::write(
        &garbled,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .expect("file");
    let err = with_file(tls_url, &garbled);
    assert!(
        err.to_string().contains("not a usable CA certificate"),
        "{err}"
    );

    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, mfa_email::test_support::TEST_CA_PEM).expect("CA file");
    let err = with_file(Some("smtp://127.0.0.1:2525?tls=none".into()), &ca);
    assert!(err.to_string().contains("without TLS"), "{err}");
    let err = with_file(None, &ca);
    assert!(err.to_string().contains("without an SMTP URL"), "{err}");
    mfa_email::check_ca_file(&ca, Some("smtps://mail.example.com")).expect("a usable CA file");
    let err = mfa_email::check_ca_file(&ca, Some("smtp://127.0.0.1:2525?tls=none"))
        .expect_err("no TLS to use it for");
    assert!(err.to_string().contains("without TLS"), "{err}");
}

/// `render` gives an embedder's own mail service the texts the mailer
/// sends, without sending anything.
#[test]
fn render_gives_the_texts_without_sending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mailer = EmailMailer::new(config(None, dir.path())).expect("mailer");
    let rendered = mailer.render(&MailKind::LoginCode {
        code: "042917".into(),
        valid_for_secs: 600,
    });
    assert_eq!(rendered.subject, "Acme Corp: your sign-in code");
    assert!(rendered.text.contains("042917"), "{}", rendered.text);
    assert!(rendered.html.contains("042917"), "{}", rendered.html);
    assert_eq!(std::fs::read_dir(dir.path()).expect("outbox").count(), 0);
}

// ---- logs

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

/// Every log line of this test binary from the first call on. A global
/// subscriber, not a scoped one: tracing caches per call site whether
/// anyone listens, and a call site first reached by another test's thread
/// would stay "nobody" for a scoped subscriber.
fn captured_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        logs
    })
}

#[test]
fn logs_and_errors_hold_neither_code_nor_address() {
    let logs = captured_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SmtpSink::start().expect("sink");
    let failing = SmtpSink::start_failing().expect("sink");

    let mut errors = Vec::new();
    let outbox = EmailMailer::new(config(None, dir.path())).expect("outbox");
    outbox.send(&login_code("902718")).expect("outbox send");

    smtp_mailer(&sink)
        .send(&login_code("902718"))
        .expect("smtp send");

    let confirm = Mail {
        to: TO.into(),
        kind: MailKind::EmailChangeConfirm {
            token: "tok-SECRET-abcdefghijklmnop".into(),
            valid_for_secs: 3600,
        },
    };
    errors.push(smtp_mailer(&failing).send(&confirm).expect_err("451"));
    errors.push(
        smtp_mailer(&failing)
            .send(&login_code("902718"))
            .expect_err("451"),
    );

    let dead = EmailMailer::new(config(
        Some(format!("smtp://127.0.0.1:{}?tls=none", dead_port())),
        dir.path(),
    ))
    .expect("dead");
    errors.push(dead.send(&login_code("902718")).expect_err("dead"));
    assert_eq!(sink.wait_for_messages(1, WAIT).len(), 1);

    let logs = logs.text();
    assert!(logs.contains("mail written to the outbox"), "{logs}");
    assert!(logs.contains(".eml"), "{logs}");
    assert!(logs.contains("mail sent"), "{logs}");
    assert!(logs.contains("retrying once"), "{logs}");
    assert!(logs.contains("mail not delivered"), "{logs}");
    assert!(logs.contains(TO_MASKED), "{logs}");
    assert_clean(&logs, "902718");
    assert!(!logs.contains("SECRET"), "{logs}");
    for e in &errors {
        assert_clean(&e.to_string(), "902718");
        assert!(!e.message.contains("SECRET"), "{}", e.message);
    }
}

/// With the server's address known, the email-change confirmation links to
/// the account page with its token in the fragment; without, it says where
/// to enter the token, and holds no link.
#[test]
fn an_email_change_confirmation_links_to_the_account_page_when_it_can() {
    let sink = SmtpSink::start().expect("sink");
    let confirm = Mail {
        to: TO.into(),
        kind: MailKind::EmailChangeConfirm {
            token: "tok-abcdefghijklmnopqrstuvwxyz".into(),
            valid_for_secs: 86_400,
        },
    };
    let mut linked = config(Some(sink.url()), &std::env::temp_dir());
    linked.confirm_link_prefix = Some("https://mfa.example.com/account#confirm-email=".into());
    EmailMailer::new(linked)
        .expect("mailer")
        .send(&confirm)
        .expect("sent");
    let m = one(&sink);
    let link = "https://mfa.example.com/account#confirm-email=tok-abcdefghijklmnopqrstuvwxyz";
    let text = m.text().expect("text");
    assert!(text.contains(link), "{text}");
    assert!(text.contains("within 24 hours"), "{text}");
    let html = m.html().expect("html");
    assert!(html.contains(&format!("<a href=\"{link}\"")), "{html}");
    assert_eq!(m.token().as_deref(), Some("tok-abcdefghijklmnopqrstuvwxyz"));

    sink.clear();
    smtp_mailer(&sink).send(&confirm).expect("sent");
    let m = one(&sink);
    let text = m.text().expect("text");
    assert!(!text.contains("#confirm-email="), "{text}");
    assert!(text.contains("(/account)"), "{text}");
}

/// Overriding a part of the confirmation (its subject, say) keeps the link
/// in the parts left built-in; overriding all three leaves the link to the
/// operator's `{{link}}`. (Overriding the subject alone dropped the link.)
#[test]
fn an_overridden_subject_keeps_the_link_in_the_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("email_change_confirm.subject.txt"),
        "{{issuer}}: bitte bestätigen\n",
    )
    .expect("override");
    let mut cfg = config(None, dir.path());
    cfg.templates_dir = Some(dir.path().to_path_buf());
    cfg.confirm_link_prefix = Some("https://mfa.example.com/account#confirm-email=".into());
    let mailer = EmailMailer::new(cfg.clone()).expect("mailer");
    let kind = MailKind::EmailChangeConfirm {
        token: "tok-abcdefghijklmnopqrstuvwxyz".into(),
        valid_for_secs: 86_400,
    };
    let rendered = mailer.render(&kind);
    assert_eq!(rendered.subject, "Acme Corp: bitte bestätigen");
    let link = "https://mfa.example.com/account#confirm-email=tok-abcdefghijklmnopqrstuvwxyz";
    assert!(rendered.text.contains(link), "{}", rendered.text);
    assert!(rendered.html.contains(link), "{}", rendered.html);

    std::fs::write(
        dir.path().join("email_change_confirm.txt"),
        "Token: {{token}}\n",
    )
    .expect("override");
    std::fs::write(
        dir.path().join("email_change_confirm.html"),
        "<p>Token: {{token}}</p>\n",
    )
    .expect("override");
    let rendered = EmailMailer::new(cfg).expect("mailer").render(&kind);
    assert_eq!(rendered.text, "Token: tok-abcdefghijklmnopqrstuvwxyz\n");
}

/// A subject that holds the code is allowed, and warned about: it shows on
/// locked screens and in mail servers' logs.
#[test]
fn a_code_in_a_subject_is_warned_about() {
    let logs = captured_logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("login_code.subject.txt");
    std::fs::write(&file, "Your code {{code}}\n").expect("override");
    let mut cfg = config(None, dir.path());
    cfg.templates_dir = Some(dir.path().to_path_buf());
    EmailMailer::new(cfg).expect("allowed");
    let logs = logs.text();
    assert!(
        logs.lines()
            .any(|l| l.contains("a mail subject holds a one-time code")
                && l.contains(&file.display().to_string())),
        "{logs}"
    );
}

/// A sender with an internationalised domain goes out in its ASCII form
/// (a server without SMTPUTF8 refused every message); a local part that is
/// not ASCII is refused when the configuration is read.
#[test]
fn an_internationalised_sender_domain_is_sent_in_ascii() {
    let sink = SmtpSink::start().expect("sink");
    let mut unicode = config(Some(sink.url()), &std::env::temp_dir());
    unicode.from = "Acme MFA <no-reply@bücher.example>".into();
    mfa_email::check_sender(&unicode.from).expect("a valid sender");
    EmailMailer::new(unicode)
        .expect("mailer")
        .send(&login_code("123123"))
        .expect("sent");
    let m = one(&sink);
    assert_eq!(m.from, "no-reply@xn--bcher-kva.example");
    let from = m.header("From").expect("From");
    assert!(from.contains("<no-reply@xn--bcher-kva.example>"), "{from}");
    let id = m.header("Message-ID").expect("Message-ID");
    assert!(
        id.ends_with("@xn--bcher-kva.example>") && id.is_ascii(),
        "{id}"
    );
    let refused = mfa_email::check_sender("Acme <zoë@example.com>").expect_err("not ASCII");
    assert!(refused.to_string().contains("ASCII"), "{refused}");
}

/// A recipient with an internationalised domain gets the message too: the
/// envelope and `To` carry the domain's ASCII form (the sink, like many
/// servers, offers no SMTPUTF8, and refused the message before).
#[test]
fn an_internationalised_recipient_domain_is_sent_in_ascii() {
    let sink = SmtpSink::start().expect("sink");
    let mut mail = login_code("123123");
    mail.to = "pat@bücher.example".into();
    smtp_mailer(&sink).send(&mail).expect("sent");
    let m = one(&sink);
    assert_eq!(m.to, ["pat@xn--bcher-kva.example"]);
    let to = m.header("To").expect("To");
    assert!(to.contains("pat@xn--bcher-kva.example"), "{to}");
}

/// An issuer with a line break is refused when the mailer is built, not
/// left to the header encoder of every message.
#[test]
fn an_issuer_with_a_control_character_is_refused() {
    for issuer in ["Acme\r\nBcc: evil@example.com", "Acme\tCorp"] {
        let mut bad = config(None, &std::env::temp_dir().join("mfa-issuer-test-outbox"));
        bad.issuer = issuer.into();
        let refused = EmailMailer::new(bad).expect_err(issuer);
        assert!(matches!(refused, mfa_email::Error::Issuer), "{refused}");
    }
}

/// The default sender, `no-reply@localhost`, is refused or junked by mail
/// servers: a mailer says so when it sends over SMTP as it (and as any
/// sender without an internet domain), not when it writes an outbox.
#[test]
fn a_sender_without_an_internet_domain_is_told() {
    let outbox = tempfile::tempdir().expect("outbox");
    let smtp = |from: &str| {
        let mut config = config(Some("smtp://127.0.0.1:2525?tls=none".into()), outbox.path());
        config.from = from.into();
        EmailMailer::new(config).expect("mailer builds")
    };
    for local in [
        "MFA Server <no-reply@localhost>",
        "mfa@mailhost",
        "mfa@box.LOCALHOST",
    ] {
        assert!(smtp(local).sender_is_local(), "{local}");
    }
    for internet in ["Acme MFA <mfa@acme.example>", "mfa@mail.example.com"] {
        assert!(!smtp(internet).sender_is_local(), "{internet}");
    }
    let outbox_mailer = EmailMailer::new(config(None, outbox.path())).expect("mailer builds");
    assert!(!outbox_mailer.sender_is_local());
}

#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod smtp_url;
mod templates;
#[cfg(feature = "test-support")]
pub mod test_support;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use lettre::{Address, Message};
use mfa_core::{Mail, MailError, MailKind, Mailer, mask_email};

use crate::smtp_url::{Security, SmtpSettings};
pub use crate::templates::Rendered;
use crate::templates::{TemplateKind, Templates};

/// How long one SMTP network operation (connect, each command) may take.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause before the one retry of a transient SMTP failure.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Everything the mailer needs to know, usually from the server's
/// configuration (`MFA_SMTP_URL`, `MFA_MAIL_FROM`, `MFA_DATA_DIR`,
/// `MFA_ISSUER`).
#[derive(Clone, PartialEq, Eq)]
pub struct MailConfig {
    /// `smtp://user:pass@host:port` (STARTTLS required, port 587 by default),
    /// `smtps://user:pass@host:port` (TLS, port 465 by default) or
    /// `smtp://host:port?tls=none` (no encryption: loopback hosts only).
    /// `None`: mail is written to [`outbox_dir`](Self::outbox_dir).
    pub smtp_url: Option<String>,
    /// Sender mailbox: `Name <user@domain>` or `user@domain`.
    pub from: String,
    /// Where `.eml` files go when there is no SMTP URL; created if missing.
    pub outbox_dir: PathBuf,
    /// Name of the service, shown in subjects and bodies.
    pub issuer: String,
    /// Directory of template overrides (see the crate documentation), or
    /// `None` for the built-in templates alone.
    pub templates_dir: Option<PathBuf>,
    /// The link that confirms an email change, but for its token, which is
    /// appended (e.g. `https://mfa.example.com/account#confirm-email=`: a
    /// fragment, which no server or proxy logs). `None`: the mail says
    /// where to enter the token instead.
    pub confirm_link_prefix: Option<String>,
    /// A PEM file of CA certificates the SMTP server's certificate may
    /// chain to, besides the public roots the mailer trusts (Mozilla's,
    /// built in): for a relay whose certificate a company's own CA signed.
    /// Read when the mailer is built. Only with an SMTP URL that uses TLS.
    pub smtp_ca_file: Option<PathBuf>,
}

/// The server's defaults: the outbox `./data/outbox`, the sender
/// `MFA Server <no-reply@localhost>`, the issuer `MFA Server`, the built-in
/// templates, no link. Set what differs and take the rest with
/// `..MailConfig::default()`, so that a field a later release adds does
/// not break the build.
impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            smtp_url: None,
            from: "MFA Server <no-reply@localhost>".into(),
            outbox_dir: PathBuf::from("data/outbox"),
            issuer: "MFA Server".into(),
            templates_dir: None,
            confirm_link_prefix: None,
            smtp_ca_file: None,
        }
    }
}

impl fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The SMTP URL may hold a password.
        f.debug_struct("MailConfig")
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "[redacted]"))
            .field("from", &self.from)
            .field("outbox_dir", &self.outbox_dir)
            .field("issuer", &self.issuer)
            .field("templates_dir", &self.templates_dir)
            .field("confirm_link_prefix", &self.confirm_link_prefix)
            .field("smtp_ca_file", &self.smtp_ca_file)
            .finish()
    }
}

/// Why a mailer could not be built from its configuration. No variant
/// carries the SMTP password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SMTP URL does not parse or says something unsupported.
    #[error("the SMTP URL is not valid: {0}")]
    SmtpUrl(String),
    /// `tls=none` was asked for a host that is not this machine.
    #[error(
        "plain SMTP (tls=none) is allowed only to a loopback host (127.0.0.0/8, ::1, localhost), \
         not to `{host}`: credentials and one-time codes would cross the network in clear text; \
         use smtp:// (STARTTLS) or smtps:// (TLS)"
    )]
    PlainSmtpNotLoopback {
        /// The host that was asked for.
        host: String,
    },
    /// The TLS client could not be set up.
    #[error("cannot set up TLS for the SMTP connection: {0}")]
    Tls(String),
    /// The CA file cannot be read, holds no certificate, or one that is
    /// not valid; or it was given without TLS to use it for.
    #[error("the SMTP CA file {}: {reason}", path.display())]
    SmtpCaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The issuer holds a control character (a line break would end a
    /// header line of every message, were it not escaped).
    #[error("the issuer must not contain control characters (line breaks, tabs, …)")]
    Issuer,
    /// The sender is not a mailbox.
    #[error(
        "the sender address `{from}` is not valid (expected `Name <user@domain>` or \
         `user@domain`): {reason}"
    )]
    From {
        /// What was given.
        from: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The outbox directory could not be created.
    #[error("cannot create the mail outbox {}: {source}", path.display())]
    Outbox {
        /// The directory.
        path: PathBuf,
        /// The operating system's answer.
        source: io::Error,
    },
    /// The templates directory is missing, not a directory or unreadable.
    #[error("cannot read the mail templates directory {}: {source}", path.display())]
    TemplatesDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's answer.
        source: io::Error,
    },
    /// A template file exists but cannot be read.
    #[error("cannot read the mail template {}: {source}", path.display())]
    TemplateFile {
        /// The file.
        path: PathBuf,
        /// The operating system's answer.
        source: io::Error,
    },
    /// A template file is not valid: unknown placeholder, missing code, …
    #[error("mail template {}: {reason}", path.display())]
    Template {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where mail goes, as configured.
enum Transport {
    /// A real SMTP server, spoken to by [`send_telling_stage`]: a session
    /// per message, so that a failure is known by the step it came at.
    Smtp(SmtpServer),
    /// `.eml` files in a directory, for local use.
    Outbox { dir: PathBuf },
}

/// An SMTP server as configured.
struct SmtpServer {
    tls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    host: String,
    port: u16,
    security: Security,
}

impl SmtpServer {
    /// Where [`send_telling_stage`] connects, and how.
    fn server(&self) -> Server<'_> {
        Server {
            host: &self.host,
            port: self.port,
            security: self.security,
            tls: self.tls.as_ref(),
            credentials: self.credentials.as_ref(),
        }
    }
}

/// The [`Mailer`] of the server: renders each [`Mail`] from templates and
/// delivers it over SMTP or into the file outbox.
///
/// Build it once and share it. Each message is sent over a session of its
/// own, so that a failure is known by the step it came at (a server that
/// never greeted took nothing; one that did not confirm the end of the
/// data may have taken the message). [`Mailer::send`] blocks (network IO):
/// call it from a blocking thread, never from an async task.
pub struct EmailMailer {
    transport: Transport,
    from: Mailbox,
    issuer: String,
    templates: Templates,
    confirm_link_prefix: Option<String>,
}

/// Load the templates of `dir` as [`EmailMailer::new`] will (every file
/// parsed, placeholders checked), without a mailer: for a configuration
/// check, and for a command whose mailer is made at its first message.
pub fn check_templates(dir: &Path) -> Result<(), Error> {
    Templates::load(Some(dir)).map(|_| ())
}

/// Read and check a CA file for `smtp_url` as [`EmailMailer::new`] will
/// (readable, one PEM certificate at least, each usable as a root; an SMTP
/// URL that uses TLS to use it for), without a mailer.
pub fn check_ca_file(path: &Path, smtp_url: Option<&str>) -> Result<(), Error> {
    let ca = read_ca_file(path)?;
    let Some(url) = smtp_url else {
        return Err(ca_file_without_url(path));
    };
    refuse_ca_without_tls(&smtp_url::parse(url)?, Some(&ca))
}

fn ca_file_without_url(path: &Path) -> Error {
    Error::SmtpCaFile {
        path: path.to_path_buf(),
        reason: "given without an SMTP URL: mail goes to the outbox".into(),
    }
}

/// A CA file is for TLS: with `tls=none` it would be silently unused.
fn refuse_ca_without_tls(
    s: &SmtpSettings,
    ca: Option<&(PathBuf, Certificate)>,
) -> Result<(), Error> {
    match (s.security, ca) {
        (Security::None, Some((path, _))) => Err(Error::SmtpCaFile {
            path: path.clone(),
            reason: "given with an SMTP URL without TLS (tls=none)".into(),
        }),
        _ => Ok(()),
    }
}

/// Check a sender (`Name <user@domain>` or `user@domain`) as
/// [`EmailMailer::new`] will, without building anything: for a
/// configuration check that must refuse a bad value before anything starts.
pub fn check_sender(from: &str) -> Result<(), Error> {
    parse_sender(from).map(|_| ())
}

/// Check an SMTP URL as [`EmailMailer::new`] will (scheme, host, port,
/// TLS mode, plain text only to loopback), without connecting.
pub fn check_smtp_url(url: &str) -> Result<(), Error> {
    smtp_url::parse(url).map(|_| ())
}

/// The sender, with an internationalised domain in its ASCII form
/// (`bücher.example` is `xn--bcher-kva.example`): the envelope, the
/// `From` header and the Message-ID must be ASCII for a server without
/// SMTPUTF8, which refused every message otherwise.
fn parse_sender(from: &str) -> Result<Mailbox, Error> {
    let refused = |reason: String| Error::From {
        from: from.to_string(),
        reason,
    };
    let mailbox: Mailbox = from.trim().parse().map_err(|e| {
        // lettre's own words ("Invalid input") do not say what to change;
        // the usual cause is a name with `(`, `,` or `;`, which RFC 5322
        // wants quoted.
        let hint = match from.split_once('<') {
            // A name with a quote of its own needs escapes, not this advice.
            Some((name, rest))
                if !name.contains('"')
                    && rest.trim_end().ends_with('>')
                    && name.contains(['(', ')', ',', ';', ':', '@', '.']) =>
            {
                format!(
                    "{e}; put a name with punctuation in double quotes: \"{}\" <…>",
                    name.trim()
                )
            }
            _ => format!("{e}"),
        };
        refused(hint)
    })?;
    if !mailbox.email.user().is_ascii() {
        return Err(refused(
            "the part before the @ must be ASCII (mail servers without SMTPUTF8 refuse it)".into(),
        ));
    }
    let email = with_ascii_domain(mailbox.email).map_err(refused)?;
    Ok(Mailbox::new(mailbox.name, email))
}

/// `address` with an internationalised domain in its ASCII form: the
/// envelope must be ASCII for a server without SMTPUTF8.
fn with_ascii_domain(address: Address) -> Result<Address, String> {
    if address.domain().is_ascii() {
        return Ok(address);
    }
    let domain = match url::Host::parse(address.domain()) {
        Ok(url::Host::Domain(ascii)) => ascii,
        _ => return Err("the domain is not a valid domain name".into()),
    };
    Address::new(address.user(), domain).map_err(|e| e.to_string())
}

impl EmailMailer {
    /// Check the configuration and build the mailer. Does not connect: the
    /// first send does. In outbox mode the directory is created if missing
    /// and set to mode 0700 on Unix, and each message written 0600.
    pub fn new(config: MailConfig) -> Result<EmailMailer, Error> {
        if config.issuer.chars().any(char::is_control) {
            return Err(Error::Issuer);
        }
        let from = parse_sender(&config.from)?;
        let templates = Templates::load(config.templates_dir.as_deref())?;
        let ca = config
            .smtp_ca_file
            .as_deref()
            .map(read_ca_file)
            .transpose()?;
        let transport = match config.smtp_url.as_deref() {
            Some(url) => smtp_transport(smtp_url::parse(url)?, ca)?,
            None => match config.smtp_ca_file {
                Some(path) => return Err(ca_file_without_url(&path)),
                None => outbox_transport(&config.outbox_dir)?,
            },
        };
        let mailer = EmailMailer {
            transport,
            from,
            issuer: config.issuer,
            templates,
            confirm_link_prefix: config.confirm_link_prefix,
        };
        for path in mailer.templates.overrides() {
            tracing::info!(file = %path.display(), "mail template override loaded");
        }
        Ok(mailer)
    }

    /// Whether this mailer sends over SMTP as a sender whose domain is no
    /// domain of the internet (`localhost`, a name without a dot): as the
    /// default sender `no-reply@localhost` is.
    /// Mail servers refuse such a sender or file its mail as junk, so a
    /// deployment that has not set its own loses its codes and notices.
    pub fn sender_is_local(&self) -> bool {
        if !matches!(self.transport, Transport::Smtp(_)) {
            return false;
        }
        let domain = self.from.email.domain().to_ascii_lowercase();
        !domain.contains('.') || domain.ends_with(".localhost")
    }

    /// The sender, as configured.
    pub fn sender(&self) -> &Mailbox {
        &self.from
    }

    /// Whether mail can go where it is configured to, sending nothing: a
    /// session is opened with the SMTP server as a send opens it
    /// (connection, greeting, TLS with the certificate checked, login)
    /// and ended with `QUIT`; in outbox mode, a file is written to the
    /// directory and removed. Blocks for up to the SMTP timeout (10 s) per
    /// step. For a configuration check (`check-config --connect`): a
    /// wrong password, a certificate not trusted or a relay that is down
    /// shows here, not at the first code a user waits for.
    pub fn check_connection(&self) -> Result<(), String> {
        match &self.transport {
            Transport::Outbox { dir } => write_to_outbox(dir, b"")
                .and_then(std::fs::remove_file)
                .map_err(|e| format!("cannot write to the mail outbox {}: {e}", dir.display())),
            Transport::Smtp(smtp) => {
                let server = smtp.server();
                let why = |e: lettre::transport::smtp::Error| {
                    if timed_out(&e) {
                        "it did not answer in time".to_string()
                    } else {
                        e.to_string()
                    }
                };
                let mut conn = open_session(&server)
                    .map_err(|e| format!("no session with the SMTP server {self}: {}", why(e)))?;
                // A message offered and taken back: a server that wants a
                // login the mailer was not given, or refuses the sender,
                // says so at `MAIL`, not before.
                use lettre::transport::smtp::commands::{Mail as MailCommand, Rset};
                let offered = conn.command(MailCommand::new(Some(self.from.email.clone()), vec![]));
                let _ = conn.command(Rset);
                let _ = conn.quit();
                offered.map(drop).map_err(|e| {
                    format!(
                        "the SMTP server {self} refuses a message from {}: {}",
                        self.from.email,
                        why(e)
                    )
                })
            }
        }
    }

    /// The outbox directory, in outbox mode.
    pub fn outbox_dir(&self) -> Option<&Path> {
        match &self.transport {
            Transport::Outbox { dir, .. } => Some(dir),
            Transport::Smtp(_) => None,
        }
    }

    /// Subject, text and HTML of `kind`, as this mailer would send them
    /// (its issuer, templates and link). An embedder whose own mail
    /// service sends mail implements [`Mailer`] with it and keeps these
    /// texts, overrides included.
    pub fn render(&self, kind: &MailKind) -> Rendered {
        self.templates
            .render(&self.issuer, kind, self.confirm_link_prefix.as_deref())
    }

    /// The MIME message for `mail`.
    fn message(&self, mail: &Mail, to: Address) -> Result<Message, lettre::error::Error> {
        let Rendered {
            subject,
            text,
            html,
        } = self.render(&mail.kind);
        // Quoted-printable keeps the message 7-bit clean whatever the issuer's
        // alphabet, readable in a raw dump, and the code on its own line intact.
        let part = |content_type: ContentType, body: String| {
            SinglePart::builder()
                .header(content_type)
                .header(ContentTransferEncoding::QuotedPrintable)
                .body(body)
        };
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(subject)
            .date_now()
            // Under the sender's domain: lettre's default is this machine's
            // short host name (`<…@vm>`), which spam filters mark down.
            .message_id(Some(format!(
                "<{}@{}>",
                uuid::Uuid::new_v4().simple(),
                self.from.email.domain()
            )))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".to_string(),
            ))
            .multipart(
                MultiPart::alternative()
                    .singlepart(part(ContentType::TEXT_PLAIN, text))
                    .singlepart(part(ContentType::TEXT_HTML, html)),
            )
    }

    /// Render `mail` and deliver it, to the outbox or over a dialogue of its
    /// own ([`send_telling_stage`]); a message a request waits for (not a
    /// `notice`) is tried once more after a 4xx reply.
    fn deliver(&self, mail: &Mail, notice: bool) -> Result<(), MailError> {
        let kind = TemplateKind::of(&mail.kind).name();
        let to_masked = mask_email(&mail.to);
        // An internationalised domain in its ASCII form, as the sender's:
        // a server without SMTPUTF8 refused every message to it.
        let to = mail
            .to
            .trim()
            .parse::<Address>()
            .ok()
            .and_then(|to| with_ascii_domain(to).ok())
            .ok_or_else(|| MailError {
                transient: false,
                delivery_unknown: false,
                message: format!("the recipient address {to_masked} is not valid"),
            })?;
        let message = self.message(mail, to).map_err(|e| MailError {
            transient: false,
            delivery_unknown: false,
            message: format!("cannot build the {kind} message: {e}"),
        })?;

        match &self.transport {
            Transport::Outbox { dir } => match write_to_outbox(dir, &message.formatted()) {
                Ok(path) => {
                    tracing::info!(
                        kind,
                        to = %to_masked,
                        file = %path.display(),
                        "mail written to the outbox"
                    );
                    Ok(())
                }
                // A full disk or a directory made unwritable is mended
                // like a mail server that is down: the notice waits for
                // it, within its tries, and the request is told to try
                // again, not that the address is wrong.
                Err(e) => Err(MailError {
                    transient: true,
                    delivery_unknown: false,
                    message: format!("cannot write to the mail outbox {}: {e}", dir.display()),
                }),
            },
            Transport::Smtp(smtp) => {
                let (server, host, port) = (smtp.server(), &smtp.host, &smtp.port);
                let mut result = send_telling_stage(&server, &message);
                // A message a request waits for is tried once more after a
                // 4xx reply (the server said it took nothing); a notice's
                // next try is later.
                if !notice
                    && let Err(StagedError::Smtp(e, _)) = &result
                    && e.is_transient()
                {
                    tracing::warn!(
                        kind,
                        to = %to_masked,
                        error = %redact(&e.to_string(), mail),
                        "transient SMTP failure; retrying once"
                    );
                    std::thread::sleep(RETRY_PAUSE);
                    result = send_telling_stage(&server, &message);
                }
                match result {
                    Ok(()) => {
                        tracing::info!(kind, to = %to_masked, server = %format!("{host}:{port}"), "mail sent");
                        Ok(())
                    }
                    Err(StagedError::Refused(refusal)) => Err(MailError {
                        transient: false,
                        delivery_unknown: false,
                        message: format!("the message was not sent: {refusal} ({host}:{port})"),
                    }),
                    Err(StagedError::Smtp(e, stage)) => {
                        let mut error = smtp_error(&e, mail, host, *port);
                        // `530`: the server wants a login the mailer was
                        // not given, whatever the message.
                        let login_wanted = e.status().is_some_and(|c| c.to_string() == "530");
                        if stage == Stage::Connecting {
                            // A reply here refused the session (TLS, the
                            // login), not the message.
                            error.message = format!(
                                "before the message was offered (connection, TLS or login): {}",
                                error.message
                            );
                        } else if login_wanted {
                            error.message = format!(
                                "the mail server asks for a login, and the SMTP URL gives none: {}",
                                error.message
                            );
                        }
                        let session_refused = stage == Stage::Connecting || login_wanted;
                        Err(MailError {
                            // A failure before the message was offered
                            // is the path's or the configuration's (TLS
                            // stripped, a wrong password): a notice waits
                            // for it to be mended, within its tries.
                            transient: error.transient || (notice && session_refused),
                            // Only the end of the data's reply may come
                            // after the server took the message: a
                            // server silent before it (the greeting, say)
                            // took nothing, and the request is told so.
                            delivery_unknown: error.delivery_unknown && stage == Stage::AfterData,
                            ..error
                        })
                    }
                }
            }
        }
    }
}

impl EmailMailer {
    /// Log a failure of `result`, which delivered `mail`.
    fn logged(mail: &Mail, result: Result<(), MailError>) -> Result<(), MailError> {
        if let Err(e) = &result
            && e.delivery_unknown
        {
            tracing::warn!(
                kind = TemplateKind::of(&mail.kind).name(),
                to = %mask_email(&mail.to),
                error = %e.message,
                "mail not confirmed in time: the mail server may have taken it"
            );
        } else if let Err(e) = &result {
            tracing::warn!(
                kind = TemplateKind::of(&mail.kind).name(),
                to = %mask_email(&mail.to),
                transient = e.transient,
                error = %e.message,
                "mail not delivered"
            );
        }
        result
    }
}

impl Mailer for EmailMailer {
    fn send(&self, mail: &Mail) -> Result<(), MailError> {
        Self::logged(mail, self.deliver(mail, false))
    }

    /// [`Mailer::send`] over an SMTP dialogue that knows its step: a notice
    /// is tried again after a failure, and counted as sent when its
    /// outcome is unknown, so the outcome is unknown only for a timeout
    /// waiting for the reply to the end of the data (the server may have
    /// taken the message); a timeout at any step before is a failure.
    /// lettre's transport reports neither. (Audits saw notices to a server
    /// that stalled before the data counted as sent, and, retried at every
    /// timeout instead, notices to a server that confirms slowly sent 8
    /// times.) No retry inside the send: the notice's own is later.
    fn send_notice(&self, mail: &Mail) -> Result<(), MailError> {
        Self::logged(mail, self.deliver(mail, true))
    }

    fn accepts_address(&self, email: &str) -> bool {
        accepts_address(email)
    }
}

/// Where [`send_telling_stage`] connects, and how.
struct Server<'a> {
    host: &'a str,
    port: u16,
    security: Security,
    tls: Option<&'a TlsParameters>,
    credentials: Option<&'a Credentials>,
}

/// How far [`send_telling_stage`] got when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Connecting, the greeting, `EHLO`, TLS, the login: nothing of the
    /// message was offered; a failure here is the path's or the
    /// configuration's (TLS stripped, no login mechanism, wrong password),
    /// not the message's.
    Connecting,
    /// `MAIL`, `RCPT`, `DATA`: the message offered, not yet given.
    Offering,
    /// The message sent, its confirmation awaited: the server may have
    /// taken it.
    AfterData,
}

/// Why [`send_telling_stage`] failed.
#[derive(Debug)]
enum StagedError {
    /// lettre's error, and the stage it came at.
    Smtp(lettre::transport::smtp::Error, Stage),
    /// The message refused before it was offered, as lettre's transport
    /// refuses it: the server cannot take it.
    Refused(&'static str),
}

/// A session with the mail server, ready for `MAIL`: connected, greeted,
/// TLS as configured, logged in.
fn open_session(
    server: &Server<'_>,
) -> Result<lettre::transport::smtp::client::SmtpConnection, lettre::transport::smtp::Error> {
    use lettre::transport::smtp::authentication::Mechanism;
    use lettre::transport::smtp::client::SmtpConnection;
    use lettre::transport::smtp::extension::ClientId;

    let hello = ClientId::default();
    let wrapper = match server.security {
        Security::Tls => server.tls,
        Security::StartTls | Security::None => None,
    };
    let mut conn = SmtpConnection::connect(
        (server.host, server.port),
        Some(SMTP_TIMEOUT),
        &hello,
        wrapper,
        None,
    )?;
    if let (Security::StartTls, Some(tls)) = (server.security, server.tls) {
        conn.starttls(tls, &hello)?;
    }
    if let Some(credentials) = server.credentials {
        conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)?;
    }
    Ok(conn)
}

/// Send `message` with lettre's SMTP connection, step by step, as its
/// transport does (TLS, `EHLO`, login, the refusal of what the server
/// cannot take, `MAIL`, `RCPT`, `DATA`, the message, `QUIT`), on a
/// connection of its own; on failure, the error and the stage it came at.
fn send_telling_stage(server: &Server<'_>, message: &Message) -> Result<(), StagedError> {
    use lettre::transport::smtp::client::SmtpConnection;
    use lettre::transport::smtp::commands::{Data, Mail as MailCommand, Rcpt};
    use lettre::transport::smtp::extension::{Extension, MailBodyParameter, MailParameter};

    let mut conn = open_session(server).map_err(|e| StagedError::Smtp(e, Stage::Connecting))?;
    let envelope = message.envelope();
    let body = message.formatted();
    // What lettre's transport refuses before `MAIL`: an address or a body
    // beyond ASCII for a server without the extension that carries it
    // (RFC 6531, RFC 6152).
    let ascii_addresses = envelope.from().into_iter().chain(envelope.to()).all(|a| {
        let text: &str = a.as_ref();
        text.is_ascii()
    });
    let supports = |extension| conn.server_info().supports_feature(extension);
    let mut parameters = Vec::new();
    if !ascii_addresses {
        if !supports(Extension::SmtpUtfEight) {
            let refusal = "the envelope has an address beyond ASCII and the server does not \
                           support SMTPUTF8";
            let _ = conn.quit();
            return Err(StagedError::Refused(refusal));
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !body.is_ascii() {
        if !supports(Extension::EightBitMime) {
            let refusal = "the message is not 7-bit and the server does not support 8BITMIME";
            let _ = conn.quit();
            return Err(StagedError::Refused(refusal));
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    // After a reply refused a step, the session is ended as it should be
    // (`QUIT`); after no reply, the connection is only dropped (a `QUIT`
    // would wait as long again).
    let offering = |conn: &mut SmtpConnection, e: lettre::transport::smtp::Error| {
        if e.is_transient() || e.is_permanent() {
            let _ = conn.quit();
        }
        StagedError::Smtp(e, Stage::Offering)
    };
    let reply = conn.command(MailCommand::new(envelope.from().cloned(), parameters));
    reply.map_err(|e| offering(&mut conn, e))?;
    for to in envelope.to() {
        let reply = conn.command(Rcpt::new(to.clone(), vec![]));
        reply.map_err(|e| offering(&mut conn, e))?;
    }
    let reply = conn.command(Data);
    reply.map_err(|e| offering(&mut conn, e))?;
    let reply = conn.message(&body);
    reply.map_err(|e| {
        if e.is_transient() || e.is_permanent() {
            let _ = conn.quit();
        }
        StagedError::Smtp(e, Stage::AfterData)
    })?;
    let _ = conn.quit();
    Ok(())
}

/// What lettre parses as an address, but not a domain literal
/// (`user@[127.0.0.1]`), which lettre parses and its SMTP envelope
/// refuses. Such an address could never be mailed: refused when
/// stored, not with a 503 at every send.
pub fn accepts_address(email: &str) -> bool {
    email
        .parse::<Address>()
        .is_ok_and(|address| !address.domain().starts_with('['))
}

/// Says where mail goes, without credentials: `SMTP mail.example.com:587
/// (STARTTLS)` or `outbox ./data/outbox`. Meant for the start-up log.
impl fmt::Display for EmailMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.transport {
            Transport::Smtp(SmtpServer {
                host,
                port,
                security,
                ..
            }) => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                write!(f, "SMTP {host}:{port} ({security})")
            }
            Transport::Outbox { dir, .. } => write!(f, "outbox {}", dir.display()),
        }
    }
}

impl fmt::Debug for EmailMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailMailer")
            .field("transport", &format_args!("{self}"))
            .field("from", &self.from.to_string())
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// The certificates of a CA file, checked: a file that holds none, or one
/// rustls cannot use, is refused when the mailer is built, not at the
/// first code a user waits for.
fn read_ca_file(path: &Path) -> Result<(PathBuf, Certificate), Error> {
    let refused = |reason: String| Error::SmtpCaFile {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| refused(e.to_string()))?;
    if !pem
        .windows(CERTIFICATE_PEM_LABEL.len())
        .any(|w| w == CERTIFICATE_PEM_LABEL)
    {
        return Err(refused(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let certificate = Certificate::from_pem(&pem).map_err(|e| refused(e.to_string()))?;
    // Built once here for the check: rustls refuses a certificate it
    // cannot parse as a root only when it is added.
    TlsParameters::builder("localhost".into())
        .add_root_certificate(certificate.clone())
        .build()
        .map_err(|e| refused(format!("not a usable CA certificate: {e}")))?;
    Ok((path.to_path_buf(), certificate))
}

/// What starts a certificate in a PEM file.
const CERTIFICATE_PEM_LABEL: &[u8] = b"-----BEGIN CERTIFICATE-----";

fn smtp_transport(s: SmtpSettings, ca: Option<(PathBuf, Certificate)>) -> Result<Transport, Error> {
    refuse_ca_without_tls(&s, ca.as_ref())?;
    let tls_params = || {
        let mut builder = TlsParameters::builder(s.host.clone());
        if let Some((_, certificate)) = &ca {
            builder = builder.add_root_certificate(certificate.clone());
        }
        builder.build().map_err(|e| Error::Tls(e.to_string()))
    };
    let credentials = s
        .credentials
        .map(|(user, password)| Credentials::new(user, password));
    let tls = match s.security {
        Security::None => None,
        Security::StartTls | Security::Tls => Some(tls_params()?),
    };
    Ok(Transport::Smtp(SmtpServer {
        tls,
        credentials,
        host: s.host,
        port: s.port,
        security: s.security,
    }))
}

fn outbox_transport(dir: &Path) -> Result<Transport, Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        // The outbox holds live one-time codes.
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| Error::Outbox {
        path: dir.to_path_buf(),
        source,
    })?;
    // A directory that already existed keeps its mode otherwise: one made
    // 0755 by hand would show live codes to every local user.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| Error::Outbox {
                path: dir.to_path_buf(),
                source,
            },
        )?;
    }
    remove_stale_partial_files(dir);
    Ok(Transport::Outbox {
        dir: dir.to_path_buf(),
    })
}

/// Suffix of a message still being written to the outbox.
const PARTIAL_SUFFIX: &str = ".eml.partial";

/// Write one message to the outbox whole, readable by its owner only (it
/// holds a live code): under a name no reader of `*.eml` picks up, synced,
/// then renamed. Written in place (as lettre's file transport does), a
/// kill left an empty `.eml`, or a whole one under the umask's mode.
fn write_to_outbox(dir: &Path, message: &[u8]) -> io::Result<PathBuf> {
    use std::io::Write as _;
    let id = uuid::Uuid::new_v4().simple();
    let partial = dir.join(format!(".{id}{PARTIAL_SUFFIX}"));
    let path = dir.join(format!("{id}.eml"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let written = options.open(&partial).and_then(|mut file| {
        file.write_all(message)?;
        file.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&partial, &path)) {
        Ok(()) => Ok(path),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Remove what a killed process left half-written in the outbox, once it
/// is a minute old (another process may be writing one right now).
fn remove_stale_partial_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_string_lossy()
            .ends_with(PARTIAL_SUFFIX)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().is_ok_and(|age| age.as_secs() > 60));
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The domain's view of an SMTP failure: whether to try later, and a
/// message without the recipient's address or the secret.
fn smtp_error(e: &lettre::transport::smtp::Error, mail: &Mail, host: &str, port: u16) -> MailError {
    let timed_out = timed_out(e);
    let tls_failed = tls_failed(e);
    // 5xx replies, TLS failures and what the client refuses (a server
    // without the STARTTLS the URL requires) will not pass without a
    // change (of the address, or of the configuration); the rest may: 4xx
    // replies, timeouts, unreachable servers, and connections that ended
    // mid-reply (a server restarting).
    let transient = timed_out || !(e.is_permanent() || tls_failed || e.is_client());
    let what = if e.is_transient() {
        "the SMTP server refused the message for now"
    } else if e.is_permanent() {
        "the SMTP server refused the message"
    } else if timed_out {
        "the SMTP server did not answer in time"
    } else if tls_failed {
        "TLS with the SMTP server failed (a certificate must chain to a public root, or to \
         the CA file the mailer was given)"
    } else {
        "cannot talk to the SMTP server"
    };
    MailError {
        transient,
        // The server may have taken the message and not confirmed it yet
        // (the end of the data may take minutes, RFC 5321 4.5.3.2.6); a
        // timeout before that stage is told apart by nothing lettre
        // reports, and keeping an undelivered code valid harms nobody.
        delivery_unknown: timed_out,
        message: format!("{what} ({host}:{port}): {}", redact(&e.to_string(), mail)),
    }
}

/// Whether TLS failed: lettre's TLS errors (setting up, STARTTLS), and the
/// handshake of `smtps://`, which lettre reports as a network error
/// wrapping rustls's (a certificate not trusted, a name that does not
/// match), of kind `InvalidData`.
fn tls_failed(e: &lettre::transport::smtp::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
        {
            return true;
        }
        source = cause.source();
    }
    e.is_tls()
}

/// Whether the server did not answer within [`SMTP_TIMEOUT`]: lettre's own
/// timeout, or the socket's read or write timeout, which lettre reports as
/// a network error ("Resource temporarily unavailable" on Linux).
fn timed_out(e: &lettre::transport::smtp::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )
        {
            return true;
        }
        source = cause.source();
    }
    e.is_timeout()
}

/// `text` with the recipient's address masked and the mail's code or token
/// removed: a server's reply may quote them.
fn redact(text: &str, mail: &Mail) -> String {
    let mut out = replace_ignore_ascii_case(text, mail.to.trim(), &mask_email(&mail.to));
    let secret = match &mail.kind {
        MailKind::EnrollmentCode { code, .. } | MailKind::LoginCode { code, .. } => Some(code),
        MailKind::EmailChangeConfirm { token, .. } => Some(token),
        _ => None,
    };
    if let Some(secret) = secret {
        out = replace_ignore_ascii_case(&out, secret, "[redacted]");
    }
    out
}

fn replace_ignore_ascii_case(haystack: &str, needle: &str, with: &str) -> String {
    if needle.is_empty() {
        return haystack.to_string();
    }
    // ASCII lower-casing keeps byte offsets, so indices carry over.
    let lower = haystack.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let mut out = String::with_capacity(haystack.len());
    let mut last = 0;
    for (i, _) in lower.match_indices(&needle) {
        if i < last {
            continue;
        }
        out.push_str(&haystack[last..i]);
        out.push_str(with);
        last = i + needle.len();
    }
    out.push_str(&haystack[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_address_and_secret_case_insensitively() {
        let mail = Mail {
            to: "Alice@Example.com".into(),
            kind: MailKind::LoginCode {
                code: "123456".into(),
                valid_for_secs: 600,
            },
        };
        let got = redact("550 <alice@EXAMPLE.com> no; code 123456", &mail);
        assert_eq!(got, "550 <A***@Example.com> no; code [redacted]");
    }
}

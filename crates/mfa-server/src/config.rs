//! The server's configuration: the table of the API contract, layered as
//! built-in defaults, then an optional TOML file (`--config FILE`), then
//! `MFA_*` environment variables (the environment wins).
//!
//! The file uses the variable names in lower case without the `MFA_`
//! prefix, e.g.
//!
//! ```toml
//! bind = "0.0.0.0:8080"
//! data_dir = "/var/lib/mfa-server"
//! database_url = "postgres://mfa@db/mfa"
//! issuer = "Acme"
//! environment = "sandbox"
//! session_ttl_secs = 28800
//! ```
//!
//! Unknown keys in the file are an error, as is every malformed value: the
//! message names the variable and says what is expected. Secrets (database
//! URL, encryption key, bootstrap password, SMTP URL) sit in [`Secret`],
//! whose `Debug` prints `***`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use mfa_core::Environment;
use mfa_core::crypto::PasswordParams;
use mfa_totp::TotpParams;
use serde::Deserialize;

/// Default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default issuer shown in authenticator apps.
pub const DEFAULT_ISSUER: &str = "MFA Server";
/// Default sender of mail.
pub const DEFAULT_MAIL_FROM: &str = "MFA Server <no-reply@localhost>";
/// Default lifetime of a full session: 12 hours.
pub const DEFAULT_SESSION_TTL_SECS: u64 = 43_200;
/// Longest accepted session lifetime: 30 days.
pub const MAX_SESSION_TTL_SECS: u64 = 30 * 24 * 3600;
/// Shortest accepted session lifetime: one minute.
pub const MIN_SESSION_TTL_SECS: u64 = 60;
/// Default pause between two purges of what has ended: 10 minutes.
pub const DEFAULT_PURGE_INTERVAL_SECS: u64 = 600;
/// Longest accepted pause between two purges: a day.
pub const MAX_PURGE_INTERVAL_SECS: u64 = 24 * 3600;
/// Longest accepted audit retention: 100 years (0 keeps events for good).
pub const MAX_AUDIT_RETENTION_DAYS: u64 = 36_500;
/// Default bound of a password check's wait for a hashing thread: 10 s,
/// below the timeouts of common HTTP clients and proxies (30–60 s), so that
/// an admitted login is answered before its client gives up.
pub const DEFAULT_PASSWORD_QUEUE_MAX_WAIT_SECS: u64 = 10;
/// Shortest and longest `MFA_TOTP_PERIOD_SECS`: a step much shorter than
/// 15 s leaves no time to type a code, and 120 s is as long as
/// authenticator apps that honour the period offer.
pub const TOTP_PERIOD_SECS_RANGE: std::ops::RangeInclusive<u64> = 15..=120;
/// Largest accepted bound of that wait: 5 minutes.
pub const MAX_PASSWORD_QUEUE_MAX_WAIT_SECS: u64 = 300;
/// Largest accepted database pool.
pub const MAX_DATABASE_POOL_SIZE: u32 = 1000;
/// Default `MFA_DATABASE_TIMEOUT_SECS`: a login that waits longer for a
/// database connection is better answered `503` than left to the client's
/// own timeout.
pub const DEFAULT_DATABASE_TIMEOUT_SECS: u64 = 10;
/// Largest accepted `MFA_DATABASE_TIMEOUT_SECS`: 5 minutes.
pub const MAX_DATABASE_TIMEOUT_SECS: u64 = 300;
/// Default tracing filter.
pub const DEFAULT_LOG: &str = "info";
/// Log targets held at `info` whatever `MFA_LOG` says: at `debug`,
/// actix-web's extractors log the raw path of a request that does not
/// parse, and a path can hold an email address
/// (`/users/{username}/mfa/resetQRCodeEnroll`). The server's own request
/// line names the route pattern instead.
pub const QUIET_LOG_TARGETS: &[&str] = &["actix_web::types"];
/// Log targets left out unless `MFA_LOG` names their crate: actix-http's
/// HTTP/1 dispatcher logs an ERROR line (`stream error: request parse
/// error: …`) for every connection whose request does not parse (a raw
/// byte outside a URI's characters, a bad HTTP version, a head over
/// 128 KiB) or whose client resets it. Those are the client's faults,
/// answered 400 or 431 before any route, and any anonymous client could
/// make ERROR lines at will, setting off alerts on errors.
pub const CLIENT_FAULT_LOG_TARGETS: &[(&str, &str)] =
    &[("actix_http", "actix_http::h1::dispatcher")];

/// The tracing filter for `spec` (`MFA_LOG`), with [`QUIET_LOG_TARGETS`]
/// held at `info` and [`CLIENT_FAULT_LOG_TARGETS`] off unless `spec`
/// names their crate. An invalid `spec` is refused by [`Config::load`]
/// first.
pub fn log_filter(spec: &str) -> tracing_subscriber::EnvFilter {
    let mut filter = tracing_subscriber::EnvFilter::new(spec);
    let quiet = QUIET_LOG_TARGETS.iter().map(|t| format!("{t}=info"));
    let off = CLIENT_FAULT_LOG_TARGETS
        .iter()
        .filter(|(krate, _)| !spec.contains(krate))
        .map(|(_, target)| format!("{target}=off"));
    for directive in quiet.chain(off) {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}
/// Name of the SQLite file inside the data directory.
pub const SQLITE_FILE: &str = "mfa.sqlite3";

/// A configuration value that must never be printed: `Debug` and `Display`
/// show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where the data lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseKind {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// A configuration value that is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file cannot be read.
    #[error("cannot read the configuration file {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The operating system's answer.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML or has unknown keys.
    #[error("the configuration file {} is not valid: {message}", path.display())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// A value is malformed.
    #[error(
        "{variable}{}: {message}",
        if *from_file { format!(" (`{}` in the configuration file)", file_key(variable)) } else { String::new() }
    )]
    Invalid {
        /// The environment variable the value belongs to (`MFA_...`).
        variable: &'static str,
        /// What is expected.
        message: String,
        /// Whether the value came from the `--config` file (the variable
        /// was unset), whose key the message names too.
        from_file: bool,
    },
}

fn invalid(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable,
        message: message.into(),
        from_file: false,
    }
}

/// The `--config` file's key of a variable: `MFA_SESSION_TTL_SECS` is
/// `session_ttl_secs`.
fn file_key(variable: &str) -> String {
    variable.trim_start_matches("MFA_").to_ascii_lowercase()
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// `MFA_BIND`: listen address; port 0 picks a free port.
    pub bind: String,
    /// `MFA_DATA_DIR`: SQLite file, generated key file, mail outbox.
    pub data_dir: PathBuf,
    /// `MFA_DATABASE_URL`: `sqlite://PATH` or `postgres://...`; defaults to
    /// the SQLite file in the data directory.
    pub database_url: Secret,
    /// `MFA_DATABASE_POOL_SIZE`: connections to PostgreSQL (default 10), or
    /// SQLite's read connections (default 8; SQLite always has one writer).
    pub database_pool_size: Option<u32>,
    /// `MFA_DATABASE_TIMEOUT_SECS`: the longest a request waits for a
    /// database connection before it is answered `503 unavailable`.
    pub database_timeout_secs: u64,
    /// `MFA_ENCRYPTION_KEY`: base64 of 32 bytes; unset means the key file in
    /// the data directory (SQLite only).
    pub encryption_key: Option<Secret>,
    /// `MFA_BOOTSTRAP_ADMIN_EMAIL`.
    pub bootstrap_admin_email: Option<String>,
    /// `MFA_BOOTSTRAP_ADMIN_PASSWORD`.
    pub bootstrap_admin_password: Option<Secret>,
    /// `MFA_ISSUER`.
    pub issuer: String,
    /// `MFA_ENVIRONMENT`.
    pub environment: Environment,
    /// `MFA_SMTP_URL`: unset means the outbox in the data directory.
    pub smtp_url: Option<Secret>,
    /// `MFA_SMTP_CA_FILE`: a PEM file of CA certificates the mail server's
    /// certificate may chain to, besides the built-in public roots.
    pub smtp_ca_file: Option<PathBuf>,
    /// `MFA_MAIL_FROM`.
    pub mail_from: String,
    /// `MFA_MAIL_TEMPLATES_DIR`: the operator's templates, which replace
    /// the built-in subjects and bodies they name; unset: the built-ins.
    pub mail_templates_dir: Option<PathBuf>,
    /// `MFA_PUBLIC_URL`: where users reach the server (`https://HOST`, no
    /// trailing slash), for links in mail; unset means mails name the page
    /// instead of linking to it.
    pub public_url: Option<String>,
    /// `MFA_SESSION_TTL_SECS`.
    pub session_ttl_secs: u64,
    /// `MFA_PURGE_INTERVAL_SECS`: the pause between two purges of what
    /// has ended (sessions, confirmed email changes, forgotten password
    /// failure counts, audit events past their retention); 0 means never.
    pub purge_interval_secs: u64,
    /// `MFA_AUDIT_RETENTION_DAYS`: audit events older than this are
    /// purged; 0 keeps them for good.
    pub audit_retention_days: u64,
    /// `MFA_PASSWORD_QUEUE_MAX_WAIT_SECS`: the longest a password check
    /// (login, recovery code, new password) may wait for a hashing thread
    /// before it is refused with `429`; 0 means as long as it takes.
    pub password_queue_max_wait_secs: u64,
    /// `MFA_PASSWORD_MIN_STRENGTH`: the zxcvbn score (0 to 4) a new
    /// password must reach; 0 checks only the length.
    pub password_min_strength: u8,
    /// `MFA_TOTP_DIGITS` and `MFA_TOTP_PERIOD_SECS`: the digits and step of
    /// authenticators enrolled from now on (each keeps its own).
    pub totp: TotpParams,
    /// `MFA_PASSWORD_HASH`: argon2id parameters of new password and
    /// recovery-code hashes, `m=KIB,t=ITERATIONS,p=PARALLELISM`.
    pub password_hash: PasswordParams,
    /// `MFA_LOG`: a tracing filter such as `info` or `mfa_server=debug`.
    pub log: String,
    /// `MFA_TRUSTED_PROXIES`: the balancers whose `X-Forwarded-For` names
    /// the client in the log (none: the peer is the client).
    pub trusted_proxies: crate::request_context::TrustedProxies,
}

/// The keys of the TOML file: the variable names in lower case without the
/// `MFA_` prefix. A text key set to `""` is refused: an empty variable
/// counts as unset, but an empty key in a file is more likely a value
/// forgotten (an empty `issuer` made QR codes without an issuer, an empty
/// `log` a server that logged nothing).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default, deserialize_with = "non_blank")]
    bind: Option<String>,
    #[serde(default, deserialize_with = "non_blank")]
    data_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "non_blank")]
    database_url: Option<String>,
    database_pool_size: Option<u32>,
    database_timeout_secs: Option<u64>,
    #[serde(default, deserialize_with = "non_blank")]
    encryption_key: Option<String>,
    #[serde(default, deserialize_with = "non_blank")]
    bootstrap_admin_email: Option<String>,
    #[serde(default, deserialize_with = "non_blank")]
    bootstrap_admin_password: Option<String>,
    #[serde(default, deserialize_with = "non_blank")]
    issuer: Option<String>,
    #[serde(default, deserialize_with = "non_blank")]
    environment: Option<String>,
    #[serde(default, deserialize_with = "non_blank")]
    smtp_url: Option<String>,
    #[serde(default, deserialize_with = "non_blank")]
    smtp_ca_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "non_blank")]
    mail_from: Option<String>,
    #[serde(default, deserialize_with = "non_blank")]
    mail_templates_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "non_blank")]
    public_url: Option<String>,
    session_ttl_secs: Option<u64>,
    purge_interval_secs: Option<u64>,
    audit_retention_days: Option<u64>,
    password_queue_max_wait_secs: Option<u64>,
    password_min_strength: Option<u64>,
    totp_digits: Option<u64>,
    totp_period_secs: Option<u64>,
    #[serde(default, deserialize_with = "non_blank")]
    password_hash: Option<String>,
    #[serde(default, deserialize_with = "non_blank")]
    log: Option<String>,
    #[serde(default, deserialize_with = "non_blank")]
    trusted_proxies: Option<String>,
}

impl Config {
    /// Read the optional file and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::from_sources(file, |name| std::env::var(name).ok())
    }

    /// Every variable the configuration reads, by name.
    pub fn variables() -> std::collections::BTreeSet<String> {
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        // Nothing set: every variable is asked for, and the defaults pass.
        let _ = Config::from_sources(None, |name| {
            asked.borrow_mut().insert(name.to_string());
            None
        });
        asked.into_inner()
    }

    /// The `MFA_*` variables of the process environment that no setting
    /// reads: a misspelt name (`MFA_ENCRYPTON_KEY`) is otherwise silently
    /// a default (a generated key file, say). `MFA_TEST_*` belong to the
    /// test suite.
    pub fn unknown_variables() -> Vec<String> {
        let known = Config::variables();
        std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|name| name.starts_with("MFA_") && !name.starts_with("MFA_TEST_"))
            .filter(|name| !known.contains(name))
            .collect()
    }

    /// Build from an optional file and an environment lookup (for tests).
    /// An empty environment variable counts as unset.
    pub fn from_sources(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
        Config::from_sources_unnamed(file, &env).map_err(|e| match e {
            // The value came from the file: say which key to fix there.
            ConfigError::Invalid {
                variable, message, ..
            } if file.is_some() && !set(variable) => ConfigError::Invalid {
                variable,
                message,
                from_file: true,
            },
            other => other,
        })
    }

    fn from_sources_unnamed(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file_config = match file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let pick = |name: &str, from_file: Option<String>| env(name).or(from_file);

        let bind = pick("MFA_BIND", file_config.bind).unwrap_or_else(|| DEFAULT_BIND.into());
        check_bind(&bind)?;

        let data_dir = env("MFA_DATA_DIR")
            .map(PathBuf::from)
            .or(file_config.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));

        let database_url = match pick("MFA_DATABASE_URL", file_config.database_url) {
            Some(url) => {
                let url = url.trim().to_string();
                database_kind_of(&url)?;
                url
            }
            None => format!("sqlite://{}", data_dir.join(SQLITE_FILE).display()),
        };

        let database_pool_size = match env("MFA_DATABASE_POOL_SIZE") {
            Some(v) => Some(v.trim().parse::<u32>().map_err(|_| {
                invalid(
                    "MFA_DATABASE_POOL_SIZE",
                    "expected a whole number of connections",
                )
            })?),
            None => file_config.database_pool_size,
        };
        if database_pool_size.is_some_and(|n| !(1..=MAX_DATABASE_POOL_SIZE).contains(&n)) {
            return Err(invalid(
                "MFA_DATABASE_POOL_SIZE",
                format!("expected between 1 and {MAX_DATABASE_POOL_SIZE} connections"),
            ));
        }

        let encryption_key = pick("MFA_ENCRYPTION_KEY", file_config.encryption_key)
            .map(|k| {
                mfa_store::EncryptionKey::from_base64(&k)
                    .map_err(|e| invalid("MFA_ENCRYPTION_KEY", e.to_string()))?;
                Ok::<_, ConfigError>(Secret::new(k.trim()))
            })
            .transpose()?;

        let password_min_strength = match env("MFA_PASSWORD_MIN_STRENGTH") {
            Some(v) => v.trim().parse::<u64>().ok(),
            None => Some(
                file_config
                    .password_min_strength
                    .unwrap_or(mfa_core::crypto::DEFAULT_PASSWORD_MIN_STRENGTH.into()),
            ),
        }
        .and_then(|score| u8::try_from(score).ok())
        .filter(|score| *score <= 4)
        .ok_or_else(|| {
            invalid(
                "MFA_PASSWORD_MIN_STRENGTH",
                "expected a zxcvbn score from 0 to 4 (0: only the length is checked)",
            )
        })?;

        let bootstrap_admin_email = pick(
            "MFA_BOOTSTRAP_ADMIN_EMAIL",
            file_config.bootstrap_admin_email,
        )
        .map(|e| {
            mfa_core::normalize_email(&e).map_err(|_| {
                invalid(
                    "MFA_BOOTSTRAP_ADMIN_EMAIL",
                    "expected an email address such as admin@example.com",
                )
            })
        })
        .transpose()?;
        let bootstrap_admin_password = pick(
            "MFA_BOOTSTRAP_ADMIN_PASSWORD",
            file_config.bootstrap_admin_password,
        )
        .map(|p| {
            // Its strength is checked when it is used, on an empty
            // database: a weak one left set once users exist is ignored.
            mfa_core::crypto::check_password_rules(&p)
                .map_err(|e| invalid("MFA_BOOTSTRAP_ADMIN_PASSWORD", e.to_string()))?;
            Ok::<_, ConfigError>(Secret::new(p))
        })
        .transpose()?;

        let issuer = pick("MFA_ISSUER", file_config.issuer)
            .map(|i| i.trim().to_string())
            .unwrap_or_else(|| DEFAULT_ISSUER.into());
        // Unprintable: control characters, and invisible ones (a zero-width
        // space alone made an issuer apps would show as nothing).
        if issuer.chars().count() > 100 || issuer.chars().any(mfa_core::text::is_unprintable) {
            return Err(invalid(
                "MFA_ISSUER",
                "expected at most 100 printable characters",
            ));
        }
        // The otpauth label is `issuer:account`, and Google's key URI format
        // allows no colon in either: apps that split the label at its first
        // colon would show part of the issuer as the account.
        if issuer.contains(':') {
            return Err(invalid(
                "MFA_ISSUER",
                "expected no `:` (authenticator apps read it as the end of the issuer)",
            ));
        }

        let environment = match pick("MFA_ENVIRONMENT", file_config.environment)
            .map(|e| e.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("production") => Environment::Production,
            Some("sandbox") => Environment::Sandbox,
            Some(_) => {
                return Err(invalid(
                    "MFA_ENVIRONMENT",
                    "expected `production` or `sandbox`",
                ));
            }
        };
        // The QR code of an enrollment holds the issuer twice, each byte
        // percent-encoded: a long issuer in a script of multi-byte
        // characters made every enrollment fail.
        let shown_issuer = mfa_totp::issuer_for_environment(&issuer, environment.as_str());
        if shown_issuer.len() > mfa_totp::MAX_ISSUER_BYTES {
            return Err(invalid(
                "MFA_ISSUER",
                format!(
                    "expected at most {} bytes in UTF-8 (with the environment's suffix, \
                     `{shown_issuer}`: {} bytes), or QR codes could not hold it",
                    mfa_totp::MAX_ISSUER_BYTES,
                    shown_issuer.len()
                ),
            ));
        }

        let smtp_url = pick("MFA_SMTP_URL", file_config.smtp_url).map(Secret::new);
        if let Some(url) = &smtp_url {
            mfa_email::check_smtp_url(url.expose())
                .map_err(|e| invalid("MFA_SMTP_URL", e.to_string()))?;
        }
        let smtp_ca_file = env("MFA_SMTP_CA_FILE")
            .map(PathBuf::from)
            .or(file_config.smtp_ca_file);
        // Read and checked here, as the templates are: every command
        // refuses a file that could never be used before it changes
        // anything.
        if let Some(path) = &smtp_ca_file {
            mfa_email::check_ca_file(path, smtp_url.as_ref().map(Secret::expose))
                .map_err(|e| invalid("MFA_SMTP_CA_FILE", e.to_string()))?;
        }
        let mail_from = pick("MFA_MAIL_FROM", file_config.mail_from)
            .unwrap_or_else(|| DEFAULT_MAIL_FROM.into());
        mfa_email::check_sender(&mail_from).map_err(|e| invalid("MFA_MAIL_FROM", e.to_string()))?;
        let mail_templates_dir = env("MFA_MAIL_TEMPLATES_DIR")
            .map(PathBuf::from)
            .or(file_config.mail_templates_dir);
        // Read and checked here, so that every command refuses a bad one
        // before it changes anything: one whose mail is made at its first
        // message would otherwise make its change and lose its notice.
        if let Some(dir) = &mail_templates_dir {
            mfa_email::check_templates(dir)
                .map_err(|e| invalid("MFA_MAIL_TEMPLATES_DIR", e.to_string()))?;
        }
        let public_url = pick("MFA_PUBLIC_URL", file_config.public_url)
            .map(|u| public_url(&u))
            .transpose()?;

        let session_ttl_secs = whole_number(
            "MFA_SESSION_TTL_SECS",
            "seconds",
            "",
            env("MFA_SESSION_TTL_SECS"),
            file_config.session_ttl_secs,
            DEFAULT_SESSION_TTL_SECS,
            MIN_SESSION_TTL_SECS..=MAX_SESSION_TTL_SECS,
        )?;
        let purge_interval_secs = whole_number(
            "MFA_PURGE_INTERVAL_SECS",
            "seconds",
            "never",
            env("MFA_PURGE_INTERVAL_SECS"),
            file_config.purge_interval_secs,
            DEFAULT_PURGE_INTERVAL_SECS,
            0..=MAX_PURGE_INTERVAL_SECS,
        )?;
        let audit_retention_days = whole_number(
            "MFA_AUDIT_RETENTION_DAYS",
            "days",
            "kept for good",
            env("MFA_AUDIT_RETENTION_DAYS"),
            file_config.audit_retention_days,
            0,
            0..=MAX_AUDIT_RETENTION_DAYS,
        )?;
        let database_timeout_secs = whole_number(
            "MFA_DATABASE_TIMEOUT_SECS",
            "seconds",
            "",
            env("MFA_DATABASE_TIMEOUT_SECS"),
            file_config.database_timeout_secs,
            DEFAULT_DATABASE_TIMEOUT_SECS,
            1..=MAX_DATABASE_TIMEOUT_SECS,
        )?;
        let password_queue_max_wait_secs = whole_number(
            "MFA_PASSWORD_QUEUE_MAX_WAIT_SECS",
            "seconds",
            "no bound",
            env("MFA_PASSWORD_QUEUE_MAX_WAIT_SECS"),
            file_config.password_queue_max_wait_secs,
            DEFAULT_PASSWORD_QUEUE_MAX_WAIT_SECS,
            0..=MAX_PASSWORD_QUEUE_MAX_WAIT_SECS,
        )?;

        let totp_digits = whole_number(
            "MFA_TOTP_DIGITS",
            "digits",
            "",
            env("MFA_TOTP_DIGITS"),
            file_config.totp_digits,
            u64::from(TotpParams::default().digits),
            // TotpParams says which: "between 6 and 8" would offer 7.
            0..=u64::MAX,
        )?;
        let totp_period_secs = whole_number(
            "MFA_TOTP_PERIOD_SECS",
            "seconds",
            "",
            env("MFA_TOTP_PERIOD_SECS"),
            file_config.totp_period_secs,
            TotpParams::default().period,
            TOTP_PERIOD_SECS_RANGE,
        )?;
        let totp = TotpParams::new(
            TotpParams::default().algorithm,
            u32::try_from(totp_digits).unwrap_or(0),
            totp_period_secs,
        )
        .map_err(|_| invalid("MFA_TOTP_DIGITS", "expected 6 or 8 digits"))?;

        let password_hash = match pick("MFA_PASSWORD_HASH", file_config.password_hash) {
            Some(v) => v
                .parse::<PasswordParams>()
                .map_err(|e| invalid("MFA_PASSWORD_HASH", e))?,
            None => PasswordParams::default(),
        };

        let log = pick("MFA_LOG", file_config.log).unwrap_or_else(|| DEFAULT_LOG.into());
        tracing_subscriber::EnvFilter::try_new(&log).map_err(|e| {
            invalid(
                "MFA_LOG",
                format!("expected a tracing filter such as `info` or `mfa_server=debug`: {e}"),
            )
        })?;

        let trusted_proxies = match pick("MFA_TRUSTED_PROXIES", file_config.trusted_proxies) {
            Some(text) => crate::request_context::TrustedProxies::parse(&text).map_err(|why| {
                invalid(
                    "MFA_TRUSTED_PROXIES",
                    format!(
                        "expected IP addresses or networks (`10.0.0.5`, `10.0.0.0/8`) \
                         separated by commas: {why}"
                    ),
                )
            })?,
            None => crate::request_context::TrustedProxies::default(),
        };

        Ok(Config {
            bind,
            data_dir,
            database_url: Secret::new(database_url),
            database_pool_size,
            database_timeout_secs,
            encryption_key,
            bootstrap_admin_email,
            bootstrap_admin_password,
            issuer,
            environment,
            smtp_url,
            smtp_ca_file,
            mail_from,
            mail_templates_dir,
            public_url,
            session_ttl_secs,
            purge_interval_secs,
            audit_retention_days,
            password_queue_max_wait_secs,
            password_min_strength,
            totp,
            password_hash,
            log,
            trusted_proxies,
        })
    }

    /// The service's tunables this configuration sets; the rest are the
    /// API contract's.
    pub fn service_config(&self) -> mfa_core::ServiceConfig {
        mfa_core::ServiceConfig {
            issuer: self.issuer.clone(),
            environment: self.environment.clone(),
            session_ttl_secs: self.session_ttl_secs,
            password_params: self.password_hash,
            password_min_strength: self.password_min_strength,
            totp: self.totp,
            audit_retention_secs: (self.audit_retention_days > 0)
                .then(|| self.audit_retention_days * 24 * 3600),
            ..mfa_core::ServiceConfig::default()
        }
    }

    /// The kind of database the URL names.
    pub fn database_kind(&self) -> DatabaseKind {
        // Checked when the configuration was built.
        database_kind_of(self.database_url.expose()).unwrap_or(DatabaseKind::Sqlite)
    }

    /// The SQLite file the database URL names, if the database is SQLite.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        if self.database_kind() != DatabaseKind::Sqlite {
            return None;
        }
        let url = self.database_url.expose().trim();
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        Some(PathBuf::from(path))
    }

    /// The file holding the generated encryption key.
    pub fn key_file(&self) -> PathBuf {
        self.data_dir.join("encryption.key")
    }

    /// The directory of the mail outbox.
    pub fn outbox_dir(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }
}

/// `MFA_PUBLIC_URL` checked: an `http` or `https` URL of a host, with no
/// user, query or fragment; without its trailing slash, so that paths
/// append to it.
fn public_url(text: &str) -> Result<String, ConfigError> {
    let expected = "expected the address users reach the server at, such as \
                    `https://mfa.example.com` (http or https, a host and an optional port; no \
                    path: the pages load their files and call the API from the root; no user, \
                    query or fragment)";
    let url = url::Url::parse(text.trim()).map_err(|_| invalid("MFA_PUBLIC_URL", expected))?;
    let fits = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    if !fits {
        return Err(invalid("MFA_PUBLIC_URL", expected));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
        path: path.to_path_buf(),
        // The TOML error quotes the offending line, and serde's message the
        // value, either of which may hold a secret: keep the line's number
        // and key, and what was expected.
        message: match e.span().and_then(|span| located(&text, span.start)) {
            Some(place) => format!("{place}: {}", without_value(e.message())),
            None => without_value(e.message()),
        },
    })
}

/// A text value of the file, refused when blank.
fn non_blank<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: From<String>,
{
    let text = String::deserialize(deserializer)?;
    if text.trim().is_empty() {
        return Err(serde::de::Error::custom(
            "empty: leave the key out for its default",
        ));
    }
    Ok(Some(T::from(text)))
}

/// serde's "invalid type: string \"…\", expected u64" without the value.
fn without_value(message: &str) -> String {
    match message.split_once(", expected ") {
        Some((what, expected))
            if what.starts_with("invalid type:") || what.starts_with("invalid value:") =>
        {
            format!("invalid value, expected {expected}")
        }
        _ => message.to_string(),
    }
}

/// `line N` of a TOML `text` at byte `at`, with the key that the line
/// assigns (`line 3, session_ttl_secs`) when it has a plain one.
fn located(text: &str, at: usize) -> Option<String> {
    let before = text.get(..at)?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let key = before[line_start..]
        .split_once('=')
        .map(|(key, _)| key.trim())
        .filter(|key| {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    Some(match key {
        Some(key) => format!("line {line}, {key}"),
        None => format!("line {line}"),
    })
}

fn check_bind(bind: &str) -> Result<(), ConfigError> {
    if bind.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let shaped = bind
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    match bind.to_socket_addrs().map(|mut addrs| addrs.next()) {
        Ok(Some(_)) => Ok(()),
        // HOST:PORT, but the host name does not resolve here.
        Err(e) if shaped => Err(invalid(
            "MFA_BIND",
            format!("the host of `{bind}` does not resolve to an address: {e}"),
        )),
        _ => Err(invalid(
            "MFA_BIND",
            format!("expected HOST:PORT such as 127.0.0.1:8080, not `{bind}`"),
        )),
    }
}

fn database_kind_of(url: &str) -> Result<DatabaseKind, ConfigError> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, ""),
    };
    match scheme.as_deref() {
        // No file name: nothing, a query alone (`sqlite://?mode=rwc` made a
        // file named `?mode=rwc`), or a directory.
        Some("sqlite") if rest.is_empty() || rest.starts_with('?') || rest.ends_with('/') => {
            Err(invalid(
                "MFA_DATABASE_URL",
                "expected sqlite://PATH: the path of the database file is missing",
            ))
        }
        Some("sqlite") => Ok(DatabaseKind::Sqlite),
        Some("postgres" | "postgresql") if !mfa_store::postgres_userinfo_is_unambiguous(url) => {
            Err(invalid(
                "MFA_DATABASE_URL",
                "expected USER:PASSWORD@HOST with one raw `@`: percent-encode the characters `@`, \
             `/`, `?`, `#` and `%` in the user name or password (`@` as `%40`, `/` as `%2F`, `?` \
             as `%3F`, `#` as `%23`, `%` as `%25`), and an `@` anywhere else in the URL",
            ))
        }
        Some("postgres" | "postgresql") => Ok(DatabaseKind::Postgres),
        _ => Err(invalid(
            "MFA_DATABASE_URL",
            "expected sqlite://PATH or postgres://USER@HOST/DB",
        )),
    }
}

/// A whole number of `unit`s (`"seconds"`, `"days"`) from the environment
/// (`from_env`, which wins) or the file, else `default`; refused outside
/// `range`. Where the range starts at 0, `zero_means` says what 0 does
/// (`"never"`, `"no bound"`), for the refusal's message.
fn whole_number(
    name: &'static str,
    unit: &str,
    zero_means: &str,
    from_env: Option<String>,
    from_file: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let n = match from_env {
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| invalid(name, format!("expected a whole number of {unit}")))?,
        None => from_file.unwrap_or(default),
    };
    if range.contains(&n) {
        return Ok(n);
    }
    let (start, end) = (range.start(), range.end());
    let rule = if *start == 0 {
        format!("expected at most {end} {unit} (0: {zero_means})")
    } else {
        format!("expected between {start} and {end} {unit}")
    };
    Err(invalid(name, rule))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_sources(None, |k| vars.get(k).cloned())
    }

    #[test]
    fn totp_digits_and_period() {
        let c = from(&[]).unwrap();
        assert_eq!(c.totp, TotpParams::default());
        let c = from(&[("MFA_TOTP_DIGITS", "8"), ("MFA_TOTP_PERIOD_SECS", "60")]).unwrap();
        assert_eq!((c.totp.digits, c.totp.period), (8, 60));
        for (name, value, says) in [
            ("MFA_TOTP_DIGITS", "7", "expected 6 or 8 digits"),
            ("MFA_TOTP_DIGITS", "10", "expected 6 or 8 digits"),
            ("MFA_TOTP_DIGITS", "0", "expected 6 or 8 digits"),
            (
                "MFA_TOTP_PERIOD_SECS",
                "5",
                "expected between 15 and 120 seconds",
            ),
            (
                "MFA_TOTP_PERIOD_SECS",
                "thirty",
                "expected a whole number of seconds",
            ),
        ] {
            let error = from(&[(name, value)]).unwrap_err().to_string();
            assert!(error.contains(name) && error.contains(says), "{error}");
        }
    }

    #[test]
    fn the_public_url_is_a_base_for_links() {
        assert_eq!(from(&[]).unwrap().public_url, None);
        for (given, kept) in [
            ("https://mfa.example.com", "https://mfa.example.com"),
            ("https://mfa.example.com/", "https://mfa.example.com"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            (" https://MFA.example.com ", "https://mfa.example.com"),
        ] {
            let c = from(&[("MFA_PUBLIC_URL", given)]).unwrap();
            assert_eq!(c.public_url.as_deref(), Some(kept), "{given}");
        }
        for refused in [
            "mfa.example.com",
            "ftp://mfa.example.com",
            "https://user:pw@mfa.example.com",
            "https://mfa.example.com/?x=1",
            "https://mfa.example.com/#x",
            "https://example.com/mfa",
            "javascript:alert(1)",
        ] {
            let error = from(&[("MFA_PUBLIC_URL", refused)])
                .unwrap_err()
                .to_string();
            assert!(error.contains("MFA_PUBLIC_URL"), "{refused}: {error}");
            assert!(!error.contains("pw"), "{error}");
        }
    }

    #[test]
    fn defaults_work_without_anything() {
        let c = from(&[]).unwrap();
        assert_eq!(c.bind, DEFAULT_BIND);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.database_kind(), DatabaseKind::Sqlite);
        assert!(c.database_url.expose().ends_with("mfa.sqlite3"));
        assert_eq!(c.session_ttl_secs, 43_200);
        assert_eq!(c.purge_interval_secs, 600);
        assert_eq!(
            from(&[("MFA_PURGE_INTERVAL_SECS", "0")])
                .unwrap()
                .purge_interval_secs,
            0,
            "never"
        );
        assert_eq!(c.password_queue_max_wait_secs, 10);
        assert_eq!(c.audit_retention_days, 0, "kept for good");
        assert_eq!(c.environment, Environment::Production);
        assert!(c.encryption_key.is_none());
        assert_eq!(c.database_pool_size, None);
        assert_eq!(c.database_timeout_secs, 10);
        assert_eq!(
            from(&[("MFA_DATABASE_TIMEOUT_SECS", "2")])
                .unwrap()
                .database_timeout_secs,
            2
        );
        assert_eq!(c.password_hash, PasswordParams::default());
        assert_eq!(
            from(&[("MFA_PASSWORD_HASH", "m=19456,t=2,p=1")])
                .unwrap()
                .password_hash
                .to_string(),
            "m=19456,t=2,p=1"
        );
        assert_eq!(
            from(&[("MFA_DATABASE_POOL_SIZE", "4")])
                .unwrap()
                .database_pool_size,
            Some(4)
        );
    }

    #[test]
    fn a_bind_without_its_host_or_port_says_the_shape() {
        // (A host that does not resolve is said so apart; testing it would
        // ask a name server beyond loopback.)
        for bind in ["8080", ":8080", "localhost:http", "localhost"] {
            let error = from(&[("MFA_BIND", bind)]).unwrap_err().to_string();
            assert!(error.contains("expected HOST:PORT"), "{bind}: {error}");
        }
    }

    #[test]
    fn postgres_urls_libpq_and_the_masking_read_alike_are_taken() {
        for url in [
            "postgres://u:p@127.0.0.1:5432/db",
            "postgres://u:p%40ss%2Fword@db.internal/db",
            "postgres://127.0.0.1/db?user=a%40example.com",
            "postgres://u:%C3%A9t%C3%A9@127.0.0.1/db",
            "postgres:///db?host=/var/run/postgresql",
            "postgresql://h1:5432,h2:5432/db",
            "postgres://u@127.0.0.1/db",
        ] {
            assert!(database_kind_of(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn every_bad_value_names_its_variable() {
        for (var, value) in [
            ("MFA_BIND", "not an address"),
            ("MFA_DATABASE_URL", "mysql://x"),
            (
                "MFA_DATABASE_URL",
                "postgres://u:Hunter2@Secret@127.0.0.1/db",
            ),
            (
                "MFA_DATABASE_URL",
                "postgres://u:Hun?ter2@Secret@127.0.0.1/db",
            ),
            (
                "MFA_DATABASE_URL",
                "postgres://u:Hun/ter2@Secret@127.0.0.1/db",
            ),
            ("MFA_DATABASE_URL", "postgres://u:Hun#ter2@127.0.0.1/db"),
            ("MFA_DATABASE_URL", "postgres://u:p@?ss-secret@127.0.0.1/db"),
            ("MFA_DATABASE_URL", "postgres://u:Sx@/?#:%é-9z@127.0.0.1/db"),
            ("MFA_DATABASE_URL", "postgres://u:100%sure@127.0.0.1/db"),
            ("MFA_DATABASE_URL", "postgres://u:abc%00def@127.0.0.1/db"),
            ("MFA_DATABASE_URL", "postgres://u:p%4@127.0.0.1/db"),
            ("MFA_ENCRYPTION_KEY", "c2hvcnQ="),
            ("MFA_BOOTSTRAP_ADMIN_EMAIL", "nobody"),
            ("MFA_BOOTSTRAP_ADMIN_PASSWORD", "short"),
            ("MFA_PASSWORD_MIN_STRENGTH", "5"),
            ("MFA_PASSWORD_MIN_STRENGTH", "strong"),
            ("MFA_ENVIRONMENT", "staging"),
            ("MFA_SESSION_TTL_SECS", "twelve hours"),
            ("MFA_SESSION_TTL_SECS", "5"),
            ("MFA_PURGE_INTERVAL_SECS", "ten minutes"),
            ("MFA_PURGE_INTERVAL_SECS", "86401"),
            ("MFA_AUDIT_RETENTION_DAYS", "a year"),
            ("MFA_AUDIT_RETENTION_DAYS", "36501"),
            ("MFA_PASSWORD_QUEUE_MAX_WAIT_SECS", "-1"),
            ("MFA_PASSWORD_QUEUE_MAX_WAIT_SECS", "301"),
            ("MFA_DATABASE_POOL_SIZE", "ten"),
            ("MFA_DATABASE_POOL_SIZE", "0"),
            ("MFA_DATABASE_TIMEOUT_SECS", "0"),
            ("MFA_DATABASE_TIMEOUT_SECS", "301"),
            ("MFA_PASSWORD_HASH", "19 MiB"),
            ("MFA_PASSWORD_HASH", "m=1024,t=1,p=1"),
            ("MFA_LOG", "[[["),
        ] {
            let err = from(&[(var, value)]).unwrap_err().to_string();
            assert!(err.starts_with(var), "{var}={value}: {err}");
        }
    }

    #[test]
    fn an_issuer_must_fit_twice_in_a_qr_code() {
        // 100 characters of four bytes each: within the character limit,
        // beyond what a QR code holds twice, percent-encoded.
        let wide = "\u{1f600}".repeat(100);
        for invisible in ["\u{200b}", "Ac\u{2028}me"] {
            assert!(from(&[("MFA_ISSUER", invisible)]).is_err(), "{invisible:?}");
        }
        let err = from(&[("MFA_ISSUER", "Acme: Zurich")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("MFA_ISSUER: expected no `:`"), "{err}");
        let err = from(&[("MFA_ISSUER", wide.as_str())])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("MFA_ISSUER"), "{err}");
        assert!(err.contains("at most 200 bytes"), "{err}");
        let fits = "\u{1f600}".repeat(48);
        assert_eq!(from(&[("MFA_ISSUER", fits.as_str())]).unwrap().issuer, fits);
        // The environment's suffix counts.
        let err = from(&[
            ("MFA_ISSUER", fits.as_str()),
            ("MFA_ENVIRONMENT", "sandbox"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("202 bytes"), "{err}");
    }

    #[test]
    fn password_strength() {
        assert_eq!(from(&[]).unwrap().password_min_strength, 3);
        // A weak bootstrap password is refused when it is used (on an
        // empty database), not here: once users exist it is ignored.
        from(&[("MFA_BOOTSTRAP_ADMIN_PASSWORD", "password123")]).expect("checked at use");
        let c = from(&[("MFA_PASSWORD_MIN_STRENGTH", "0")]).unwrap();
        assert_eq!(c.service_config().password_min_strength, 0);
        for bad in ["5", "-1", "strong", "256"] {
            let err = from(&[("MFA_PASSWORD_MIN_STRENGTH", bad)])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("expected a zxcvbn score from 0 to 4"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn secrets_never_print() {
        let c = from(&[
            ("MFA_DATABASE_URL", "postgres://u:hunter2@db/x"),
            ("MFA_BOOTSTRAP_ADMIN_PASSWORD", "correct horse battery"),
            ("MFA_SMTP_URL", "smtp://u:pw-smtp@mail:587"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("horse"), "{shown}");
        assert!(!shown.contains("pw-smtp"), "{shown}");
        assert_eq!(c.database_kind(), DatabaseKind::Postgres);
    }

    #[test]
    fn environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mfa.toml");
        std::fs::write(
            &path,
            "issuer = \"From file\"\nsession_ttl_secs = 600\nenvironment = \"sandbox\"\n",
        )
        .unwrap();
        let c = Config::from_sources(Some(&path), |k| {
            (k == "MFA_ISSUER").then(|| "From env".to_string())
        })
        .unwrap();
        assert_eq!(c.issuer, "From env");
        assert_eq!(c.session_ttl_secs, 600);
        assert_eq!(c.environment, Environment::Sandbox);

        // An empty text is refused, naming the key: the server had run
        // with QR codes without an issuer, or without a log.
        for key in ["issuer", "log", "data_dir", "bind"] {
            std::fs::write(&path, format!("session_ttl_secs = 600\n{key} = \"  \"\n")).unwrap();
            let err = Config::from_sources(Some(&path), |_| None).unwrap_err();
            assert!(
                err.to_string().ends_with(&format!(
                    "line 2, {key}: empty: leave the key out for its default"
                )),
                "{err}"
            );
        }

        std::fs::write(&path, "issuer = \"x\"\nunknown_key = 1\n").unwrap();
        let err = Config::from_sources(Some(&path), |_| None).unwrap_err();
        assert!(err.to_string().contains("unknown"), "{err}");

        // A bad value from the file names the file's key too; one from the
        // environment only the variable.
        std::fs::write(&path, "session_ttl_secs = 5\n").unwrap();
        let err = Config::from_sources(Some(&path), |_| None).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "MFA_SESSION_TTL_SECS (`session_ttl_secs` in the configuration file): expected"
            ),
            "{err}"
        );
        let err = Config::from_sources(Some(&path), |k| {
            (k == "MFA_SESSION_TTL_SECS").then(|| "7".to_string())
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("MFA_SESSION_TTL_SECS: expected"),
            "{err}"
        );
    }
}

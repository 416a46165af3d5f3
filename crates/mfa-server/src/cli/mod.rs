//! The commands of the `mfa-server` binary, one module each, and what they
//! share: the configuration, the exit codes, opening the database and the
//! service as `serve` does.
//!
//! Output: results and progress in plain words on stdout; errors on stderr
//! as `mfa-server: …`. Exit codes: 0 success, 1 failure at run time
//! (database, not found, conflict), 2 bad arguments or configuration, 3
//! done, but stdout could not take the report.

pub mod admin;
pub mod check;
pub mod database;
pub mod keys;
pub mod serve;

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use mfa_core::ports::{OsRandomness, SystemClock};
use mfa_core::{Mailer, MfaError, MfaService};
use mfa_server::config::DatabaseKind;
use mfa_server::{Config, Service, app};
use mfa_store::{DbStore, EncryptionKey, StoreOptions};

/// Why a command failed, and so its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments or configuration: exit code 2.
    Usage(String),
    /// A failure at run time: exit code 1.
    Runtime(String),
    /// The command ran, but its report could not be written to stdout:
    /// exit code 3, so that a script does not retry a change that was
    /// made (an `admin` command's).
    Output(String),
}

/// What a command returns.
pub type CliResult = Result<(), Failure>;

/// `println!` for the commands, inside a function that returns a
/// `Result<_, Failure>`: a stdout that cannot be written (a pipe closed by
/// `| head`, a full disk) fails the command with exit code 1 and a
/// message, instead of a panic and its backtrace.
macro_rules! out {
    () => {
        $crate::cli::write_out(format_args!("\n"))?
    };
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*)))?
    };
}
pub(crate) use out;

/// One piece of a command's output on stdout, flushed.
pub fn write_out(text: std::fmt::Arguments<'_>) -> CliResult {
    use std::io::Write as _;
    let mut stdout = io::stdout().lock();
    stdout
        .write_fmt(text)
        .and_then(|()| stdout.flush())
        .map_err(|e| {
            Failure::Output(format!(
                "cannot write to stdout: {e} (the command ran to its end: a change it makes \
                 was made)"
            ))
        })
}

impl Failure {
    /// What went wrong.
    pub fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Runtime(m) | Failure::Output(m) => m,
        }
    }

    /// Print the message on stderr and give the exit code.
    pub fn report(self) -> ExitCode {
        let (message, code) = match self {
            Failure::Usage(m) => (m, 2),
            Failure::Runtime(m) => (m, 1),
            Failure::Output(m) => (m, 3),
        };
        // Not `eprintln!`, which panics (exit 101) when stderr is a closed
        // pipe too: the exit code must still say what happened.
        let _ = writeln!(io::stderr(), "mfa-server: {message}");
        ExitCode::from(code)
    }
}

impl From<mfa_store::Error> for Failure {
    fn from(e: mfa_store::Error) -> Self {
        match e {
            // The configured key cannot do what was asked: as a wrong
            // value, not a failure that may pass.
            mfa_store::Error::NotTheDatabaseKey { .. }
            | mfa_store::Error::KeyOpensNoSecret { .. }
            | mfa_store::Error::KeyNotLost
            | mfa_store::Error::KeyOpensSecrets { .. }
            | mfa_store::Error::KeyMismatch { .. } => Failure::Usage(e.to_string()),
            other => Failure::Runtime(format!("database: {other}")),
        }
    }
}

impl From<app::StartError> for Failure {
    fn from(e: app::StartError) -> Self {
        match e {
            // A configuration that cannot work, like a malformed value.
            app::StartError::KeyRequired
            | app::StartError::KeyFileMissing { .. }
            | app::StartError::WrongKey { .. }
            | app::StartError::Bootstrap(_)
            | app::StartError::InvalidKey { .. }
            | app::StartError::Mail(
                mfa_email::Error::Template { .. }
                | mfa_email::Error::TemplateFile { .. }
                | mfa_email::Error::TemplatesDir { .. },
            ) => Failure::Usage(e.to_string()),
            other => Failure::Runtime(other.to_string()),
        }
    }
}

/// A domain refusal: a value that breaks a rule is a usage error, the rest
/// (not found, conflicts, the database) happens at run time.
pub fn domain(e: MfaError) -> Failure {
    match e {
        MfaError::InvalidRequest(m) => Failure::Usage(m),
        other => Failure::Runtime(other.to_string()),
    }
}

/// The configuration from the optional file and the environment.
pub fn load_config(file: Option<&Path>) -> Result<Config, Failure> {
    Config::load(file).map_err(|e| Failure::Usage(format!("configuration error: {e}")))
}

/// Logs to stderr with the configured filter, written by the thread that
/// logs; colours only on a terminal. For the commands that run one
/// operation (`serve` has [`mfa_server::logging`]).
pub fn init_tracing(config: &Config) {
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(mfa_server::config::log_filter(&config.log))
        .with_ansi(io::stderr().is_terminal())
        .with_writer(io::stderr)
        .init();
}

/// Warnings alone to stderr, for the `admin` commands, whose reports go to
/// stdout: a notice their change could not mail (it stays queued for a
/// server to send) is said, not only counted. (An audit saw a command wait
/// on a mail server that hung and exit 0 saying nothing.)
pub fn init_warnings_log() {
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_ansi(io::stderr().is_terminal())
        .with_writer(io::stderr)
        .init();
}

/// The SQLite file the configuration names, if the database is SQLite.
pub fn sqlite_path(config: &Config) -> Option<PathBuf> {
    config.sqlite_file()
}

/// Warn on stderr when the `--config` file, which may hold secrets (the
/// key, passwords), is readable by other users, as the key file's check
/// does.
pub fn warn_if_config_readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "mfa-server: warning: the configuration file {} is readable by other users: \
                 chmod 600 it if it holds a secret (the key, a password)",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Where the encryption key in use comes from.
#[derive(Debug)]
pub enum KeySource {
    /// `MFA_ENCRYPTION_KEY` (or `encryption_key` in the file).
    Configured,
    /// The key file in the data directory.
    File(PathBuf),
}

/// The configured key, without generating one: `None` when the key file of
/// an SQLite deployment does not exist yet.
pub fn existing_key(config: &Config) -> Result<Option<(EncryptionKey, KeySource)>, Failure> {
    if let Some(key) = &config.encryption_key {
        let key = EncryptionKey::from_base64(key.expose())
            .map_err(|e| Failure::Usage(format!("MFA_ENCRYPTION_KEY: {e}")))?;
        return Ok(Some((key, KeySource::Configured)));
    }
    if config.database_kind() == DatabaseKind::Postgres {
        return Err(Failure::Usage(
            "MFA_ENCRYPTION_KEY is required with PostgreSQL (make one with `mfa-server gen-key`)"
                .into(),
        ));
    }
    let path = config.key_file();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            // A wrong value, as a malformed MFA_ENCRYPTION_KEY is.
            let key = EncryptionKey::from_base64(&text).map_err(|e| {
                Failure::Usage(format!(
                    "{} does not hold a valid encryption key: {e}",
                    app::key_file_origin(&path, &text)
                ))
            })?;
            Ok(Some((key, KeySource::File(path))))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure::Runtime(format!(
            "cannot read the key file {}: {e}",
            path.display()
        ))),
    }
}

/// The database, whose schema must be this version's: an operator's
/// command never migrates it (that is `mfa-server migrate`, or a server's
/// start, done on purpose), and a database a newer version migrated is
/// refused.
pub fn open_migrated(config: &Config, key: EncryptionKey) -> Result<DbStore, Failure> {
    require_database(config)?;
    let store = DbStore::connect(config.database_url.expose(), StoreOptions::new(key))?;
    let unknown = store.unknown_migrations()?;
    if !unknown.is_empty() {
        return Err(mfa_store::Error::NewerSchema(unknown).into());
    }
    let pending = store.pending_migrations()?;
    if !pending.is_empty() {
        return Err(Failure::Runtime(format!(
            "the database has {} of {} migrations pending: `mfa-server migrate` applies them \
             (a server does at its start); this command does not change the schema",
            pending.len(),
            store.migration_status()?.len()
        )));
    }
    // As a pending migration: a command would not find these users by the
    // address it is given.
    let waiting = store.addresses_to_rewrite()?;
    if waiting > 0 {
        return Err(Failure::Runtime(format!(
            "{} This command does not rewrite them.",
            addresses_waiting(waiting)
        )));
    }
    Ok(store)
}

/// What `migrate --status`, `check-config --connect` and the refused
/// commands say of addresses a previous version stored.
pub fn addresses_waiting(count: u64) -> String {
    format!(
        "{count} stored email addresses (or new addresses of pending changes) wait to be \
         written in their canonical form (domain in ASCII, letters composed), as this version \
         keeps them: `mfa-server migrate` \
         does it (a server does at its start too)."
    )
}

/// An operator's command acts on a deployment that exists. Run from
/// another directory (the default `MFA_DATA_DIR` is `./data`), it made an
/// empty SQLite database and a key there, then said its migrations were
/// pending, which `migrate` would have "fixed" with a second deployment.
///
/// An empty file (made by hand, or by a restore that failed) is refused
/// alike, before a key file or diesel's table of migrations is made beside
/// it: a command that refuses leaves the directory as it found it.
fn require_database(config: &Config) -> CliResult {
    let Some(path) = sqlite_path(config) else {
        return Ok(());
    };
    match std::fs::metadata(&path) {
        Err(_) => Err(Failure::Usage(format!(
            "there is no database at {}: is this the right directory, and MFA_DATA_DIR (or \
             MFA_DATABASE_URL) the deployment's? Nothing was created; a server's first start \
             makes a new database",
            path.display()
        ))),
        Ok(file) if file.len() == 0 => Err(Failure::Runtime(format!(
            "the database at {} is empty, every migration pending: `mfa-server migrate` \
             applies them (a server does at its start); nothing was changed",
            path.display()
        ))),
        Ok(_) => Ok(()),
    }
}

/// The service exactly as `serve` composes it (key, migrated database,
/// mailer), with the system clock, but no bootstrap and no HTTP server.
/// The data directory is made only where SQLite keeps its key file there,
/// and the mail outbox only when a message is written to it: an operator's
/// command on PostgreSQL runs from any directory, a read-only one too.
pub fn open_service(config: &Config) -> Result<Service, Failure> {
    require_database(config)?;
    if config.database_kind() == DatabaseKind::Sqlite {
        app::create_private_dir(&config.data_dir).map_err(|e| {
            Failure::Runtime(format!(
                "cannot create the data directory {}: {e}",
                config.data_dir.display()
            ))
        })?;
    }
    let (key, source) = app::encryption_key(config)?;
    let store = open_migrated(config, key)?;
    app::verify_key(&store, &source)?;
    service_over(store, config)
}

/// The service over an open `store`, with the configured mailer.
pub fn service_over(store: DbStore, config: &Config) -> Result<Service, Failure> {
    let mailer: Arc<dyn Mailer> = if config.smtp_url.is_some() {
        Arc::new(app::email_mailer(config).map_err(|e| Failure::Usage(format!("mail: {e}")))?)
    } else {
        Arc::new(OutboxOnFirstMessage {
            config: config.clone(),
            mailer: std::sync::OnceLock::new(),
        })
    };
    MfaService::new(
        store,
        mailer,
        Arc::new(SystemClock),
        Arc::new(OsRandomness),
        config.service_config(),
    )
    .map_err(domain)
}

/// The outbox mailer, made (with its directory) at the first message.
struct OutboxOnFirstMessage {
    config: Config,
    mailer: std::sync::OnceLock<Result<mfa_email::EmailMailer, String>>,
}

impl Mailer for OutboxOnFirstMessage {
    fn send(&self, mail: &mfa_core::Mail) -> Result<(), mfa_core::MailError> {
        let mailer = self
            .mailer
            .get_or_init(|| app::email_mailer(&self.config).map_err(|e| e.to_string()));
        match mailer {
            Ok(mailer) => mailer.send(mail),
            Err(message) => Err(mfa_core::MailError {
                transient: false,
                delivery_unknown: false,
                message: message.clone(),
            }),
        }
    }

    fn accepts_address(&self, email: &str) -> bool {
        mfa_email::accepts_address(email)
    }
}

/// Read one line from stdin, without its line ending.
pub fn read_stdin_line(what: &str) -> Result<String, Failure> {
    let mut line = String::new();
    io::stdin()
        .read_line(&mut line)
        .map_err(|e| Failure::Runtime(format!("cannot read {what} from stdin: {e}")))?;
    let line = line.trim_end_matches(['\n', '\r']).to_string();
    if line.is_empty() {
        return Err(Failure::Usage(format!("no {what} on stdin")));
    }
    Ok(line)
}

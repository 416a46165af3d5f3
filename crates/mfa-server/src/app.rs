//! Composition: the store, the mailer and the service from a
//! configuration, and the actix server around them.
//!
//! [`Application::build`] does the blocking start-up work (data directory,
//! encryption key, database and migrations, mailer, bootstrap) on the
//! blocking pool, binds the listener (port 0 picks a free port: read it
//! back with [`Application::addr`]) and prepares the server;
//! [`Application::run`] serves until the server is stopped, and meanwhile
//! purges what has ended (sessions, confirmed email changes, audit events
//! past `MFA_AUDIT_RETENTION_DAYS`) every `MFA_PURGE_INTERVAL_SECS`. actix
//! listens for SIGTERM and SIGINT and shuts down gracefully (in-flight
//! requests get up to 10 s).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{ErrorHandlers, from_fn};
use actix_web::{App, HttpServer, web};
use mfa_core::ports::OsRandomness;
use mfa_core::service::Purged;
use mfa_core::{Clock, Environment, Mailer, MfaError, MfaService};
use mfa_email::{EmailMailer, MailConfig};
use mfa_store::{DbStore, EncryptionKey, KeyVerification, StoreOptions};
use utoipa::OpenApi as _;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::bootstrap::{self, Bootstrapped};
use crate::config::{Config, DatabaseKind};
use crate::mail_dispatch::MailDispatch;
use crate::metrics::Metrics;
use crate::middleware::{self, RouteTable};
use crate::notice_sender::NoticeSender;
use crate::password_pool::PasswordPool;
use crate::request_context::{RequestIds, TrustedProxies};
use crate::{extract, openapi, routes};

/// The service as the server runs it.
pub type Service = MfaService<DbStore>;

/// How long in-flight requests may take to finish at shutdown.
const SHUTDOWN_TIMEOUT_SECS: u64 = 10;

/// Threads of each worker's blocking pool (database work and mail; argon2
/// has its own [`PasswordPool`]). actix's default, 512 / cores per worker,
/// lets every request of a burst run at once, and on SQLite (8 read
/// connections, one writer) they then mostly wait for a connection: the
/// hand-offs cost more CPU than the queries (an authenticated read took
/// ~25% more server CPU than with 16, see docs/PERFORMANCE.md). 16 keeps
/// room for mail sends that wait on a slow SMTP server.
const BLOCKING_THREADS_PER_WORKER: usize = 16;

/// Why the server could not start. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory cannot be created.
    #[error("cannot create the data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's answer.
        source: io::Error,
    },
    /// PostgreSQL without `MFA_ENCRYPTION_KEY`.
    #[error(
        "MFA_ENCRYPTION_KEY is required with PostgreSQL: every server process must share one key, \
         so it is not generated into a local file; set it to the base64 of 32 random bytes \
         (make one with `mfa-server gen-key`)"
    )]
    KeyRequired,
    /// The generated key file cannot be read or written.
    #[error("the encryption key file {}: {source}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The operating system's answer.
        source: io::Error,
    },
    /// The key file is missing, but the database was written with a key
    /// (it recorded one, or holds secrets): a new key would not be it.
    #[error(
        "the encryption key file {} is missing, but the database was written with a key ({}): \
         restore the key file from the backup taken with the database (or set \
         MFA_ENCRYPTION_KEY to that key). No new key was made: the database would refuse it. \
         If the key is lost, `mfa-server replace-lost-key` makes a new one the database's and \
         removes the stored authenticators (their users enroll again)",
        path.display(),
        match recorded {
            Some(fingerprint) => format!("it records the key {fingerprint}"),
            None => "it holds authenticator secrets".to_string(),
        }
    )]
    KeyFileMissing {
        /// The file.
        path: PathBuf,
        /// The fingerprint of the key the database records, if it does.
        recorded: Option<mfa_store::KeyFingerprint>,
    },
    /// The key is not the one the database was written with.
    #[error(
        "{origin}: {error}. Every authenticator code would fail. Use the key the database was \
         written with (after a `rotate-key`, the new one on every server; if it is lost, \
         `mfa-server replace-lost-key`); `mfa-server check-config --connect` checks every \
         stored secret"
    )]
    WrongKey {
        /// Where the key came from.
        origin: String,
        /// What the database said.
        error: mfa_store::Error,
    },
    /// The key file or `MFA_ENCRYPTION_KEY` does not hold a valid key.
    #[error("{origin} does not hold a valid encryption key: {error}")]
    InvalidKey {
        /// Where the key came from.
        origin: String,
        /// What is wrong with it (never the key).
        error: mfa_store::Error,
    },
    /// The database cannot be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] mfa_store::Error),
    /// The mailer cannot be built from the configuration.
    #[error("mail: {0}")]
    Mail(#[from] mfa_email::Error),
    /// The service refused its configuration, or the bootstrap failed.
    #[error("service: {0}")]
    Service(MfaError),
    /// The first start refused the configured superadmin (a password too
    /// easy to guess, an address mail cannot reach): a configuration
    /// error, as a malformed value is.
    #[error(
        "bootstrap: {0} (MFA_BOOTSTRAP_ADMIN_EMAIL, MFA_BOOTSTRAP_ADMIN_PASSWORD; used only on \
         an empty database)"
    )]
    Bootstrap(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        /// The address.
        bind: String,
        /// The operating system's answer.
        source: io::Error,
    },
    /// A thread of the server could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
    /// The start-up task on the blocking pool failed.
    #[error("the start-up task failed")]
    Task,
}

/// A configured server, bound and ready to run.
pub struct Application {
    server: Server,
    /// Watched for its key ([`watch_key`]).
    service: Arc<Service>,
    /// The service and the pause between two purges of what has ended.
    purge: Option<(Arc<Service>, Duration)>,
    addr: SocketAddr,
    bootstrapped: Option<Bootstrapped>,
    mail: String,
    /// Counts the mail, notices included.
    dispatch: Arc<MailDispatch>,
    /// The notices due are tried before `run` returns.
    notices: NoticeSender,
    database: &'static str,
    /// Held while the server runs ([`claim_sqlite_file`]).
    _sqlite_claim: Option<std::fs::File>,
}

/// How long an idle client connection is kept open. Longer than the idle
/// timeouts of common load balancers (60 s): a backend that closes an
/// idle connection first races the balancer's next request on it, which
/// the balancer answers `502` (actix-web's default was 5 s; a test client
/// saw such resets when its requests paused for seconds).
pub const KEEP_ALIVE: Duration = Duration::from_secs(75);

/// How often a server reads which key the database records: within this
/// time of a rotation (or `replace-lost-key`), a server that still has the
/// old key answers every request `503` (and `/readyz` at once).
pub const KEY_WATCH: Duration = Duration::from_secs(5);

/// How long a graceful stop waits for the notices due to be tried.
pub const NOTICE_DRAIN: Duration = Duration::from_secs(10);

/// How long a graceful stop then waits for the notice under way, which is
/// not given up half sent: a step's timeout and lettre's `QUIT` after it.
pub const NOTICE_SEND_FINISH: Duration =
    Duration::from_secs(2 * mfa_email::SMTP_TIMEOUT.as_secs() + 2);

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.addr)
            .field("mail", &self.mail)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Prepare everything and bind the listener. `clock` is the service's
    /// clock: the system clock in production, a fixed one in tests.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> Result<Application, StartError> {
        let bind = config.bind.clone();
        let purge_every = config.purge_interval_secs;
        let trusted_proxies = config.trusted_proxies.clone();
        let password_queue_max_wait = (config.password_queue_max_wait_secs > 0)
            .then(|| Duration::from_secs(config.password_queue_max_wait_secs));
        // The address first: a port in use must stop the start before the
        // bootstrap creates a superadmin whose generated password is shown
        // only in the banner of a start that succeeds.
        let listener = TcpListener::bind(&bind).map_err(|source| StartError::Bind {
            bind: bind.clone(),
            source,
        })?;
        let prepared = web::block(move || prepare(&config, clock))
            .await
            .map_err(|_| StartError::Task)??;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { bind, source })?;
        let purge =
            (purge_every > 0).then(|| (prepared.service.clone(), Duration::from_secs(purge_every)));
        let service = prepared.service.clone();
        let server = serve(
            prepared.service,
            prepared.dispatch.clone(),
            listener,
            password_queue_max_wait,
            trusted_proxies,
        )
        .map_err(|source| StartError::Bind {
            bind: addr.to_string(),
            source,
        })?;
        prepared
            .notices
            .start(service.clone(), prepared.dispatch.clone())
            .map_err(StartError::Thread)?;
        tracing::info!(url = %format!("http://{addr}"), "listening");
        Ok(Application {
            server,
            service,
            purge,
            addr,
            bootstrapped: prepared.bootstrapped,
            mail: prepared.mail,
            dispatch: prepared.dispatch,
            notices: prepared.notices,
            database: prepared.database,
            _sqlite_claim: prepared.sqlite_claim,
        })
    }

    /// The bound address (the real port when the configuration said 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the bootstrap created, if the database was empty.
    pub fn bootstrapped(&self) -> Option<&Bootstrapped> {
        self.bootstrapped.as_ref()
    }

    /// Where mail goes, without credentials.
    pub fn mail(&self) -> &str {
        &self.mail
    }

    /// The mail between the service and the transport, and its counts.
    pub fn mail_dispatch(&self) -> Arc<MailDispatch> {
        self.dispatch.clone()
    }

    /// The thread that sends the notices queued in the database.
    pub fn notice_sender(&self) -> NoticeSender {
        self.notices.clone()
    }

    /// `sqlite` or `postgres`.
    pub fn database(&self) -> &'static str {
        self.database
    }

    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serve until stopped (by a signal or the handle).
    pub async fn run(self) -> io::Result<()> {
        let watch = actix_web::rt::spawn(watch_key(self.service.clone()));
        let purge = self
            .purge
            .map(|(service, every)| actix_web::rt::spawn(purge_ended(service, every)));
        let served = self.server.await;
        watch.abort();
        if let Some(purge) = purge {
            purge.abort();
        }
        // Notices left unsent stay in the database, for the next process
        // that delivers: none is lost, only later.
        let notices = self.notices;
        let service = self.service;
        let waiting = actix_web::rt::task::spawn_blocking(move || {
            notices.flush(NOTICE_DRAIN);
            notices.stop();
            // The notice under way, if any, finishes (one SMTP step's
            // timeout, and lettre's QUIT after it) and is deleted.
            notices.wait_stopped(NOTICE_SEND_FINISH);
            service.notices_waiting()
        })
        .await;
        if let Ok(Ok(waiting)) = waiting
            && waiting > 0
        {
            tracing::warn!(
                waiting,
                "stopping with notices not sent: they stay in the database, for the next server \
                 (one being sent now is left to another after 5 minutes)"
            );
        }
        served
    }
}

/// Read every [`KEY_WATCH`] which key the database records
/// ([`DbStore::check_key_still_recorded`]), and say so when this server's
/// key stops (or starts again) being it.
async fn watch_key(service: Arc<Service>) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + KEY_WATCH, KEY_WATCH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut current = true;
    loop {
        ticks.tick().await;
        let service = service.clone();
        // A database that does not answer is `/readyz`'s business.
        let Ok(Ok(now_current)) =
            web::block(move || service.store().check_key_still_recorded()).await
        else {
            continue;
        };
        if now_current != current {
            if now_current {
                tracing::info!("the database records this server's encryption key again");
            } else {
                tracing::error!(
                    "the database records another encryption key (a key rotation or \
                     replace-lost-key since this server started): every request is answered \
                     503 until the server is restarted with the database's key"
                );
            }
            current = now_current;
        }
    }
}

/// Purge what has ended ([`MfaService::purge`]) every `every` (the first
/// time one interval after the start), on the blocking pool. A failed
/// purge is logged and tried again at the next interval; several processes
/// purging at once is fine.
async fn purge_ended(service: Arc<Service>, every: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    // After a long purge, the next one an interval later, not at once.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let service = service.clone();
        match web::block(move || service.purge()).await {
            Ok(Ok(purged)) if purged == Purged::default() => {}
            Ok(Ok(Purged {
                sessions,
                email_changes,
                password_failures,
                audit_events,
                anonymous_audit_events,
            })) => tracing::info!(
                sessions,
                email_changes,
                password_failures,
                audit_events,
                anonymous_audit_events,
                "purged"
            ),
            Ok(Err(error)) => tracing::warn!(%error, "purging failed"),
            Err(_) => tracing::warn!("purging failed: the task panicked"),
        }
    }
}

struct Prepared {
    service: Arc<Service>,
    bootstrapped: Option<Bootstrapped>,
    mail: String,
    dispatch: Arc<MailDispatch>,
    notices: NoticeSender,
    database: &'static str,
    sqlite_claim: Option<std::fs::File>,
}

/// The blocking part of the start-up.
fn prepare(config: &Config, clock: Arc<dyn Clock>) -> Result<Prepared, StartError> {
    // Only SQLite (its key file) and the mail outbox keep files there: a
    // PostgreSQL server with SMTP runs on a read-only file system.
    if config.database_kind() == DatabaseKind::Sqlite || config.smtp_url.is_none() {
        create_private_dir(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    }
    let (key, source) = encryption_key(config)?;
    let options = StoreOptions {
        pool_size: config.database_pool_size,
        pool_timeout: Some(Duration::from_secs(config.database_timeout_secs)),
        ..StoreOptions::new(key)
    };
    // A key file made just now for a database that cannot be opened is
    // taken back: it keeps nothing, and the next start makes its own.
    let forget_made_key = |error: mfa_store::Error| {
        if let KeySource::Generated(path) = &source {
            let _ = std::fs::remove_file(path);
        }
        StartError::from(error)
    };
    let store = DbStore::connect(config.database_url.expose(), options).map_err(forget_made_key)?;
    // Before the migrations: a refused start leaves a database the
    // previous version still opens.
    store
        .check_key_before_migrating()
        .map_err(|error| key_refusal(error, &source))?;
    let applied = store.run_migrations().map_err(forget_made_key)?;
    // The schema changed: from now on the previous version refuses this
    // database, and only a backup taken before takes it back.
    for migration in &applied {
        tracing::info!(migration = %migration, "migration applied");
    }
    if !applied.is_empty() {
        // Every migration applied: a new database, nothing to go back to.
        let created = applied.len() == store.migration_status()?.len();
        if created {
            tracing::info!(applied = applied.len(), "the database schema was created");
        } else {
            tracing::info!(
                applied = applied.len(),
                "the database schema was upgraded: versions before this one refuse it now \
                 (a backup taken before the start takes it back)"
            );
        }
    }
    verify_key(&store, &source)?;
    // A backup copied back in keeps the mode it was made with (0644 under
    // the usual umask); the file holds password hashes and the secrets.
    let sqlite_claim = config.sqlite_file().and_then(|file| {
        warn_if_readable_by_others(&file, "database file");
        claim_sqlite_file(&file)
    });
    let database = store.backend().as_str();
    let key = store.fingerprint().to_string();
    let mailer = email_mailer(config)?;
    if config.smtp_url.is_none() && config.environment == Environment::Production {
        tracing::warn!(outbox = %config.outbox_dir().display(), "{OUTBOX_IN_PRODUCTION}");
    } else if mailer.sender_is_local() {
        tracing::warn!(sender = %mailer.sender().email, "{LOCAL_SENDER}");
    }
    let mail = mailer.to_string();
    let dispatch = Arc::new(MailDispatch::new(Arc::new(mailer)));
    let mailer: Arc<dyn Mailer> = dispatch.clone();
    let notices = NoticeSender::new();
    let service = MfaService::new(
        store,
        mailer,
        clock,
        Arc::new(OsRandomness),
        config.service_config(),
    )
    .map_err(StartError::Service)?
    .with_notice_waker(notices.waker());
    let bootstrapped = bootstrap::run(&service, config).map_err(|e| match e {
        // With a generated password, a refusal is the announcement's (stdout
        // failed), a failure at run time.
        MfaError::InvalidRequest(why) if config.bootstrap_admin_password.is_some() => {
            StartError::Bootstrap(why)
        }
        other => StartError::Service(other),
    })?;
    tracing::info!(database, key, mail = %mail, "ready");
    Ok(Prepared {
        service: Arc::new(service),
        bootstrapped,
        mail,
        dispatch,
        notices,
        database,
        sqlite_claim,
    })
}

/// A lock on `FILE.server-lock` beside a SQLite database, held while the
/// server runs; another server process holding it is warned about. A
/// second process on one file is not refused (SQLite serialises their
/// writes, and an audit found them correct), but only PostgreSQL is
/// tested with several, and nothing told the operator who started a
/// second by mistake. The lock goes with its process, however that ends.
fn claim_sqlite_file(file: &Path) -> Option<std::fs::File> {
    let path = PathBuf::from(format!("{}.server-lock", file.display()));
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let claim = match options.open(&path) {
        Ok(claim) => claim,
        Err(e) => {
            tracing::debug!(file = %path.display(), error = %e, "cannot open the SQLite lock file");
            return None;
        }
    };
    match claim.try_lock() {
        Ok(()) => Some(claim),
        Err(std::fs::TryLockError::WouldBlock) => {
            tracing::warn!(
                file = %file.display(),
                "another server process serves this SQLite database: SQLite serialises their \
                 writes, but several servers on one database are tested on PostgreSQL only \
                 (see MFA_DATABASE_URL in docs/operations.md)"
            );
            None
        }
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::debug!(file = %path.display(), error = %e, "cannot lock the SQLite lock file");
            None
        }
    }
}

/// Logged at start when production mail goes to the outbox directory.
pub const OUTBOX_IN_PRODUCTION: &str = "MFA_SMTP_URL is unset: mail is written to the outbox \
     directory, not sent, so users receive no codes and no notices, and its files hold live email \
     codes and email-change tokens in plain text until they are deleted: set MFA_SMTP_URL (or \
     MFA_ENVIRONMENT=sandbox for a trial)";

/// What the server at its start and `check-config` say of a sender that
/// mail servers refuse ([`EmailMailer::sender_is_local`]).
pub const LOCAL_SENDER: &str = "the sender of mail (MFA_MAIL_FROM) is not an address of an internet \
     domain, and mail servers refuse or junk mail from it: set MFA_MAIL_FROM to an address of your \
     own domain";

/// The mailer the configuration describes.
pub fn email_mailer(config: &Config) -> Result<EmailMailer, mfa_email::Error> {
    EmailMailer::new(MailConfig {
        smtp_url: config.smtp_url.as_ref().map(|s| s.expose().to_string()),
        from: config.mail_from.clone(),
        outbox_dir: config.outbox_dir(),
        issuer: mfa_totp::issuer_for_environment(&config.issuer, config.environment.as_str()),
        templates_dir: config.mail_templates_dir.clone(),
        smtp_ca_file: config.smtp_ca_file.clone(),
        // The account page opens its confirmation with the token filled in
        // from the fragment (which no server or proxy logs).
        confirm_link_prefix: config
            .public_url
            .as_ref()
            .map(|base| format!("{base}/account#confirm-email=")),
    })
}

/// Create a directory (and its parents) readable by the owner only.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Where the encryption key in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `MFA_ENCRYPTION_KEY` (or the configuration file's `encryption_key`).
    Variable,
    /// The key file, as it was.
    File(PathBuf),
    /// The key file, written just now: there was none.
    Generated(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Variable => f.write_str("MFA_ENCRYPTION_KEY"),
            KeySource::File(path) | KeySource::Generated(path) => {
                write!(f, "the key file {}", path.display())
            }
        }
    }
}

/// Refuse a key that is not the one the database was written with
/// ([`DbStore::verify_encryption_key`]), before anything is written under
/// it: another server's (servers on one database with different keys), the
/// old one on a server missed by a rotation, or a key file generated just
/// now beside a database restored without its key file (removed again).
/// Every authenticator code would fail with `500`, a secret enrolled
/// meanwhile would be written under the wrong key, and each key would
/// count an address's password failures apart.
pub fn verify_key(store: &DbStore, source: &KeySource) -> Result<(), StartError> {
    let (check, pending_discarded) = match store.verify_encryption_key() {
        Ok(KeyVerification::Recorded) => return Ok(()),
        Ok(KeyVerification::Claimed {
            check,
            pending_discarded,
        }) => (check, pending_discarded),
        Err(error) => return Err(key_refusal(error, source)),
    };
    if let KeySource::Generated(path) = source {
        tracing::info!(file = %path.display(), "generated a new encryption key");
    }
    tracing::info!(
        fingerprint = %store.fingerprint(),
        "the database records the encryption key in use: a process with another key is refused"
    );
    if pending_discarded > 0 {
        tracing::warn!(
            pending_discarded,
            "removed enrollments begun under another key (their users start again)"
        );
    }
    if !check.all_readable() {
        tracing::warn!(
            readable = check.readable,
            checked = check.total,
            users = ?check.unreadable_users,
            "the encryption key does not open every stored authenticator secret checked: \
             `mfa-server check-config --connect` lists them"
        );
    }
    Ok(())
}

/// What a start says of a key the database refused: a key file generated
/// just now is removed again.
fn key_refusal(error: mfa_store::Error, source: &KeySource) -> StartError {
    let recorded = match &error {
        mfa_store::Error::NotTheDatabaseKey { database, .. } => Some(database.clone()),
        mfa_store::Error::KeyOpensNoSecret { .. } => None,
        _ => return error.into(),
    };
    match source {
        KeySource::Generated(path) => {
            // Ours, written a moment ago: nothing was encrypted with it.
            let _ = std::fs::remove_file(path);
            StartError::KeyFileMissing {
                path: path.clone(),
                recorded,
            }
        }
        _ => StartError::WrongKey {
            origin: source.to_string(),
            error,
        },
    }
}

/// The key from `MFA_ENCRYPTION_KEY`, or (SQLite only) from the key file in
/// the data directory, generated there once with mode 0600.
pub fn encryption_key(config: &Config) -> Result<(EncryptionKey, KeySource), StartError> {
    if let Some(key) = &config.encryption_key {
        return EncryptionKey::from_base64(key.expose())
            .map(|key| (key, KeySource::Variable))
            .map_err(|error| StartError::InvalidKey {
                origin: "MFA_ENCRYPTION_KEY".into(),
                error,
            });
    }
    if config.database_kind() == DatabaseKind::Postgres {
        return Err(StartError::KeyRequired);
    }
    let path = config.key_file();
    let file_error = |source| StartError::KeyFile {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            warn_if_readable_by_others(&path, "encryption key file");
            EncryptionKey::from_base64(&text)
                .map(|key| (key, KeySource::File(path.clone())))
                .map_err(|error| StartError::InvalidKey {
                    origin: key_file_origin(&path, &text),
                    error,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = EncryptionKey::generate();
            write_private_file(&path, &format!("{}\n", key.to_base64())).map_err(file_error)?;
            // Logged once kept (`verify_key`).
            Ok((key, KeySource::Generated(path)))
        }
        Err(e) => Err(file_error(e)),
    }
}

/// How a key file that holds no key is named in the refusal: an empty one
/// was left by a version that wrote it in place and was killed meanwhile.
pub fn key_file_origin(path: &Path, text: &str) -> String {
    if text.trim().is_empty() {
        format!(
            "{} (it is empty: a version before this one was stopped while making it, or the \
             file was truncated; restore it from a backup, or, only on a first start (no \
             authenticator stored yet), delete it and start again)",
            path.display()
        )
    } else {
        path.display().to_string()
    }
}

/// Write a new file readable by the owner only; never overwrite one. The
/// file appears whole or not at all: it is written and synced under a
/// temporary name beside it, then linked to its name (which fails if the
/// name exists). Written in place, a kill between creating and writing
/// left an empty key file that stopped every later start.
pub fn write_private_file(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // A name no other writer has (a process id is not: two containers on
    // one volume may both be process 1).
    let unique = mfa_core::crypto::new_token(&mfa_core::ports::OsRandomness);
    let temporary = dir.join(format!(".{name}.{unique}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    let linked = file
        .write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::hard_link(&temporary, path));
    // Only the file this call made.
    let _ = std::fs::remove_file(&temporary);
    linked?;
    // The new name should survive a crash of the machine too; the file is
    // there either way, so a failure here is no failure of the write.
    #[cfg(unix)]
    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    Ok(())
}

fn warn_if_readable_by_others(path: &Path, what: &str) {
    if readable_by_others(path) {
        tracing::warn!(
            file = %path.display(),
            "the {what} is readable by other users: chmod 600 it"
        );
    }
}

/// Whether the file at `path` exists and its mode lets users other than
/// its owner in (never on other systems than Unix).
pub fn readable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o077 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// The actix server over a bound listener.
fn serve(
    service: Arc<Service>,
    dispatch: Arc<MailDispatch>,
    listener: TcpListener,
    password_queue_max_wait: Option<Duration>,
    trusted_proxies: TrustedProxies,
) -> io::Result<Server> {
    let service = web::Data::from(service);
    let idle_service = service.clone();
    let passwords = PasswordPool::per_core(password_queue_max_wait, move || {
        let bytes = idle_service.release_password_memory();
        if bytes > 0 {
            tracing::debug!(bytes, "password checks paused: argon2 memory released");
        }
    })?;
    let calibrating = service.clone();
    passwords.calibrate(move || calibrating.decoy_password_check());
    let mut metrics = Metrics::new();
    metrics.observe_password_pool(passwords.load());
    metrics.observe_mail(dispatch);
    let metrics = web::Data::new(metrics);
    let passwords = web::Data::new(passwords);
    let trusted_proxies = web::Data::new(trusted_proxies);
    let request_ids = web::Data::new(RequestIds::default());
    let server = HttpServer::new(move || {
        let (app, api) = App::new()
            .into_utoipa_app()
            .openapi(openapi::ApiDoc::openapi())
            .app_data(service.clone())
            .app_data(metrics.clone())
            .app_data(passwords.clone())
            .app_data(trusted_proxies.clone())
            .app_data(request_ids.clone())
            .app_data(extract::json_config())
            .app_data(extract::query_config())
            .app_data(extract::path_config())
            .app_data(extract::payload_config())
            .configure(routes::configure)
            .split_for_parts();
        let api = openapi::complete(api);
        let route_table = web::Data::new(RouteTable::from_openapi(&api));
        app.app_data(route_table)
            .service(
                SwaggerUi::new("/swagger-ui/{_:.*}")
                    .url(openapi::OPENAPI_PATH, api)
                    // Swagger UI's default sends the document's address to
                    // validator.swagger.io from any host but localhost.
                    .config(utoipa_swagger_ui::Config::default().validator_url("none")),
            )
            .default_service(web::to(middleware::fallback))
            .wrap(from_fn(crate::auth::resolve_first))
            .wrap(from_fn(middleware::vet_url))
            .wrap(ErrorHandlers::new().default_handler(middleware::json_error_page))
            .wrap(from_fn(middleware::swagger_ui_policy))
            .wrap(middleware::default_headers())
            .wrap(from_fn(middleware::head_as_get))
            .wrap(from_fn(middleware::observe))
    })
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .keep_alive(KEEP_ALIVE)
    .worker_max_blocking_threads(BLOCKING_THREADS_PER_WORKER)
    .listen(listener)?
    .run();
    Ok(server)
}

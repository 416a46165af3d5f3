//! `mfa-server`: the server and its operator commands. This file parses
//! the command line; `cli/` holds one module per command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser, Subcommand};

mod cli;

const CONFIGURATION: &str = "\
Configuration (environment variables; a TOML file given with --config may set
the same keys in lower case without the MFA_ prefix, e.g. `data_dir`; the
environment wins). Every command reads the same configuration:

  MFA_BIND                      listen address [127.0.0.1:8080]; port 0 picks a free port
  MFA_DATA_DIR                  SQLite file, generated key file, mail outbox [./data]
  MFA_DATABASE_URL              sqlite://PATH or postgres://... [SQLite file in MFA_DATA_DIR]
  MFA_DATABASE_POOL_SIZE        connections per process, 1 to 1000: to PostgreSQL [10],
                                or SQLite's readers [8]
  MFA_DATABASE_TIMEOUT_SECS     longest a request waits for a database connection before
                                it is answered 503, 1 to 300 [10]
  MFA_ENCRYPTION_KEY            base64 of 32 bytes [generated once into MFA_DATA_DIR];
                                required with PostgreSQL (make one with `mfa-server gen-key`)
  MFA_BOOTSTRAP_ADMIN_EMAIL     first superadmin, created on an empty database [admin@example.com]
  MFA_BOOTSTRAP_ADMIN_PASSWORD  its password [generated, printed once]
  MFA_ISSUER                    issuer shown in authenticator apps [MFA Server]
  MFA_ENVIRONMENT               production or sandbox [production]
  MFA_SMTP_URL                  smtp://user:pass@host:port (STARTTLS), smtps://... (TLS),
                                smtp://127.0.0.1:port?tls=none (loopback only)
                                [unset: mail goes to MFA_DATA_DIR/outbox as .eml files]
  MFA_SMTP_CA_FILE              PEM file of the CA that signed the mail server's certificate,
                                trusted besides the public roots [unset: public roots only]
  MFA_MAIL_FROM                 sender of mail [MFA Server <no-reply@localhost>]
  MFA_MAIL_TEMPLATES_DIR        your subjects and bodies of mail (see mfa-email's README),
                                checked at start [unset: the built-in ones]
  MFA_PUBLIC_URL                where users reach the server, https://HOST, for links in
                                mail [unset: mails say where to enter a token]
  MFA_SESSION_TTL_SECS          lifetime of a full session [43200]
  MFA_PURGE_INTERVAL_SECS       how often sessions that ended over an hour ago, confirmed
                                email changes, forgotten password failure counts and
                                audit events past their retention are deleted [600];
                                0: never
  MFA_AUDIT_RETENTION_DAYS      audit events older than this many days are deleted [0]:
                                0 keeps them for good
  MFA_PASSWORD_QUEUE_MAX_WAIT_SECS
                                longest a login or other password check waits for a
                                hashing thread before it is refused with 429 [10]; 0: no bound
  MFA_PASSWORD_MIN_STRENGTH     how hard to guess a new password must be, as a zxcvbn
                                score from 0 to 4 [3]: 3 refuses common passwords and
                                ones built from the user's name or email; 0: length only
  MFA_TOTP_DIGITS               digits of authenticator codes, 6 or 8 [6]
  MFA_TOTP_PERIOD_SECS          seconds per authenticator code, 15 to 120 [30]; both
                                apply to authenticators enrolled from then on
  MFA_PASSWORD_HASH             argon2id parameters of new hashes [m=7168,t=5,p=1];
                                older hashes are replaced at their user's next login
  MFA_LOG                       tracing filter [info]

Exit codes: 0 success, 1 failure at run time, 2 bad arguments or configuration, 3 the
command did its work but could not write its report to stdout (do not run it again).";

/// The MFA administration server: the HTTP API, its OpenAPI document and
/// Swagger UI, and Prometheus metrics; and the commands to operate it.
#[derive(Debug, Parser)]
#[command(version, about, after_long_help = CONFIGURATION, propagate_version = true)]
struct Cli {
    /// A TOML configuration file (see --help); environment variables win.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (the default when no command is given).
    ///
    /// Creates the data directory, applies pending migrations, creates the
    /// bootstrap superadmin on an empty database (its generated password is
    /// printed once), and serves until SIGTERM or Ctrl-C.
    Serve,

    /// Apply pending database migrations.
    ///
    /// The server applies them itself when it starts (on PostgreSQL under an
    /// advisory lock, so servers starting together do not race); this
    /// command does it ahead of time, e.g. in an upgrade before the new
    /// servers start. Needs no encryption key.
    Migrate {
        /// List every migration and whether it is applied; change nothing.
        #[arg(long)]
        status: bool,
    },

    /// Print the effective configuration, secrets masked, and check it.
    ///
    /// Shows each variable's value after the file and the environment are
    /// applied. Passwords in URLs, the bootstrap password and the encryption
    /// key are never printed; the key is shown by a fingerprint (an HMAC
    /// under the key, telling nothing about it) so that servers can be
    /// compared with each other and with the database's.
    CheckConfig {
        /// Also connect to the database: show the migrations, and check that
        /// the encryption key opens every stored authenticator secret; and,
        /// with MFA_SMTP_URL, open a session with the mail server (TLS and
        /// login), offer a message from MFA_MAIL_FROM and take it back, and
        /// end it, sending nothing.
        #[arg(long)]
        connect: bool,
    },

    /// Print a fresh encryption key: base64 of 32 random bytes.
    ///
    /// For MFA_ENCRYPTION_KEY, or for `rotate-key --new-key-file`. Only the
    /// key goes to stdout: `export MFA_ENCRYPTION_KEY=$(mfa-server gen-key)`.
    GenKey {
        /// Write the key to this new file (mode 0600) instead of stdout; an
        /// existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },

    /// Re-encrypt every stored authenticator secret with a new key, in one
    /// transaction.
    ///
    /// The old key is the configured one (MFA_ENCRYPTION_KEY or the key file
    /// in MFA_DATA_DIR). Each secret is decrypted with it and encrypted with
    /// the new key under a fresh nonce; a secret already under the new key is
    /// left as it is, so the command may be run again. If a secret opens
    /// with neither key, nothing changes. The database records the new key
    /// in the same transaction. Stop the servers first (those still running
    /// with the old key are not ready, `/readyz` 503, until restarted with
    /// the new one), then put the new key into every server's configuration.
    #[command(group(
        ArgGroup::new("new_key")
            .required(true)
            .args(["new_key_file", "new_key_stdin"])
    ))]
    RotateKey {
        /// Read the new key (base64 of 32 bytes) from this file.
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
        /// Read the new key from the first line of stdin.
        #[arg(long)]
        new_key_stdin: bool,
    },

    /// Make the configured key the database's when the key it records is
    /// lost: every stored authenticator is removed (those users enroll
    /// again, and are told by mail), with the email codes in flight and the
    /// password failure counts, in one transaction.
    ///
    /// The new key is MFA_ENCRYPTION_KEY, or (SQLite) the key file in
    /// MFA_DATA_DIR, generated if missing. Without --yes, only says what
    /// would be removed. Email factors, recovery codes, passwords and
    /// sessions do not depend on the key and stay. When the key is not lost,
    /// restore it instead (the key file from the backup taken with the
    /// database): nothing is removed then.
    ReplaceLostKey {
        /// Do it (without it, the command only says what it would remove).
        #[arg(long)]
        yes: bool,
    },

    /// Operator actions on the database, without a session: the break-glass
    /// path (e.g. when the last admin of an org has lost their phone).
    ///
    /// Each command acts directly on the configured database, like its HTTP
    /// twin: one transaction with the same audit events, whose actor is the
    /// operator (no user id; the detail ends with "by the operator").
    Admin {
        #[command(subcommand)]
        action: AdminCommand,
    },
}

/// `--org`: a positive org id.
fn org_id(value: &str) -> Result<i64, String> {
    match value.trim().parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err("expected an org id, a positive whole number (see `admin list-orgs`)".into()),
    }
}

/// `--email`: an email address, normalised.
fn email(value: &str) -> Result<String, String> {
    mfa_core::normalize_email(value)
        .map_err(|_| "expected an email address such as alice@example.com".to_string())
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// List every org: id, MFA enforcement, name.
    ListOrgs,

    /// Create an org (like `POST /user/org`).
    CreateOrg {
        /// Its name (1 to 200 printable characters).
        #[arg(long)]
        name: String,
    },

    /// Create a user (like `POST /user/users`).
    ///
    /// The password is asked for twice on the terminal without echo, or read
    /// from the first line of stdin with --password-stdin. It is never a
    /// command-line argument: that would land in the shell history and the
    /// process list.
    CreateUser {
        /// The user's email (their login).
        #[arg(long, value_parser = email)]
        email: String,
        /// Given name.
        #[arg(long)]
        first_name: Option<String>,
        /// Family name.
        #[arg(long)]
        last_name: Option<String>,
        /// Make the user a member of this org (its id; see `admin list-orgs`).
        #[arg(long, value_name = "ORG_ID", value_parser = org_id)]
        org: Option<i64>,
        /// Make the user an admin of the org given with --org.
        #[arg(long, requires = "org")]
        admin: bool,
        /// Make the user a superadmin of the whole deployment. A login is
        /// to an org, so give --org too (or `admin add-member` later): a
        /// superadmin of no org cannot log in.
        #[arg(long)]
        superadmin: bool,
        /// Read the password from the first line of stdin (for scripts).
        #[arg(long)]
        password_stdin: bool,
    },

    /// Make an existing user an active member of an org (like
    /// `POST /user/org/{orgId}/email/user/{email}`).
    ///
    /// An existing membership is activated; with --admin it is made an
    /// admin membership. This is how an org without a usable admin gets one.
    AddMember {
        /// The org's id.
        #[arg(long, value_name = "ORG_ID", value_parser = org_id)]
        org: i64,
        /// The user's email.
        #[arg(long, value_parser = email)]
        email: String,
        /// Make the member an admin of the org.
        #[arg(long)]
        admin: bool,
    },

    /// Enforce MFA on an org (like `PUT /user/org/mfa`), or with --off stop
    /// enforcing it.
    ///
    /// Takes effect at each member's next login: members without a factor
    /// set one up then.
    EnforceMfa {
        /// The org's id.
        #[arg(long, value_name = "ORG_ID", value_parser = org_id)]
        org: i64,
        /// Stop enforcing MFA on the org instead.
        #[arg(long)]
        off: bool,
    },

    /// Remove every MFA factor of a user and end their sessions (like
    /// `PUT /user/users/mfa/reset`).
    ///
    /// Authenticator, email factor and recovery codes are removed; where MFA
    /// applies, the next login answers setup_required and the user enrolls
    /// again. The break-glass path for an admin who lost their phone.
    ResetMfa {
        /// The user's email.
        #[arg(long, value_parser = email)]
        email: String,
    },

    /// Opt a member out of an org's MFA enforcement (like
    /// `PUT /user/users/{id}/membership` with `{"mfaOptOut": true}`), or
    /// with --off withdraw the opt-out.
    ///
    /// Takes effect at the member's next login into that org.
    OptOut {
        /// The member's email.
        #[arg(long, value_parser = email)]
        email: String,
        /// The org's id.
        #[arg(long, value_name = "ORG_ID", value_parser = org_id)]
        org: i64,
        /// Withdraw the opt-out: MFA applies to the member again.
        #[arg(long)]
        off: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help, version, or bad arguments: clap's text, and its exit code
        // (0, or 2) only if the text could be written.
        Err(e) => {
            let code = u8::try_from(e.exit_code()).unwrap_or(2);
            return match e.print() {
                Ok(()) => ExitCode::from(code),
                Err(write) if code == 0 => {
                    cli::Failure::Output(format!("cannot write to stdout: {write}")).report()
                }
                Err(_) => ExitCode::from(code),
            };
        }
    };
    let config = match cli::load_config(cli.config.as_deref()) {
        Ok(config) => config,
        Err(failure) => return failure.report(),
    };
    if let Some(path) = cli.config.as_deref() {
        cli::warn_if_config_readable(path);
    }
    for name in mfa_server::Config::unknown_variables() {
        eprintln!(
            "mfa-server: warning: {name} is set, but no setting reads it (misspelt? \
             `mfa-server check-config` shows every setting)"
        );
    }
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => cli::serve::run(config),
        Command::Migrate { status } => cli::database::migrate(&config, status),
        Command::CheckConfig { connect } => cli::check::run(&config, connect),
        Command::GenKey { out } => cli::keys::gen_key(out.as_deref()),
        Command::RotateKey {
            new_key_file,
            new_key_stdin,
        } => cli::keys::rotate_key(&config, new_key_file.as_deref(), new_key_stdin),
        Command::ReplaceLostKey { yes } => cli::keys::replace_lost_key(&config, yes),
        Command::Admin { action } => admin(&config, action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

fn admin(config: &mfa_server::Config, action: AdminCommand) -> cli::CliResult {
    use cli::admin;
    // The password first: a usage error must not wait for the database.
    let password = match &action {
        AdminCommand::CreateUser {
            email,
            password_stdin,
            ..
        } => Some(admin::read_password(email, *password_stdin)?),
        _ => None,
    };
    cli::init_warnings_log();
    let service = cli::open_service(config)?;
    match action {
        AdminCommand::ListOrgs => admin::list_orgs(&service),
        AdminCommand::CreateOrg { name } => admin::create_org(&service, &name),
        AdminCommand::CreateUser {
            email,
            first_name,
            last_name,
            org,
            admin,
            superadmin,
            password_stdin: _,
        } => admin::create_user(
            &service,
            admin::NewUser {
                email,
                first_name: first_name.unwrap_or_default(),
                last_name: last_name.unwrap_or_default(),
                org,
                admin,
                superadmin,
                password: password.unwrap_or_default(),
            },
        ),
        AdminCommand::AddMember { org, email, admin } => {
            admin::add_member(&service, org, &email, admin)
        }
        AdminCommand::EnforceMfa { org, off } => admin::enforce_mfa(&service, org, !off),
        AdminCommand::ResetMfa { email } => admin::reset_mfa(&service, &email),
        AdminCommand::OptOut { email, org, off } => admin::opt_out(&service, org, &email, !off),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

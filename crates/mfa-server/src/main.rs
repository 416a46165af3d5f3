//! `mfa-server`: parse the configuration, start tracing, run the server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use mfa_core::ports::SystemClock;
use mfa_server::openapi::{OPENAPI_PATH, SWAGGER_UI_PATH};
use mfa_server::{Application, Config};

const CONFIGURATION: &str = "\
Configuration (environment variables; a TOML file given with --config may set
the same keys in lower case without the MFA_ prefix, e.g. `data_dir`; the
environment wins):

  MFA_BIND                      listen address [127.0.0.1:8080]; port 0 picks a free port
  MFA_DATA_DIR                  SQLite file, generated key file, mail outbox [./data]
  MFA_DATABASE_URL              sqlite://PATH or postgres://... [SQLite file in MFA_DATA_DIR]
  MFA_ENCRYPTION_KEY            base64 of 32 bytes [generated once into MFA_DATA_DIR];
                                required with PostgreSQL
  MFA_BOOTSTRAP_ADMIN_EMAIL     first superadmin, created on an empty database [admin@example.com]
  MFA_BOOTSTRAP_ADMIN_PASSWORD  its password [generated, printed once]
  MFA_ISSUER                    issuer shown in authenticator apps [MFA Server]
  MFA_ENVIRONMENT               production or sandbox [production]
  MFA_SMTP_URL                  smtp://user:pass@host:port (STARTTLS), smtps://... (TLS),
                                smtp://127.0.0.1:port?tls=none (loopback only)
                                [unset: mail goes to MFA_DATA_DIR/outbox as .eml files]
  MFA_MAIL_FROM                 sender of mail [MFA Server <no-reply@localhost>]
  MFA_SESSION_TTL_SECS          lifetime of a full session [43200]
  MFA_LOG                       tracing filter [info]";

/// The MFA administration server: the HTTP API, its OpenAPI document and
/// Swagger UI, and Prometheus metrics.
#[derive(Parser)]
#[command(version, about, after_long_help = CONFIGURATION)]
struct Cli {
    /// A TOML configuration file (see --help); environment variables win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("mfa-server: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log))
        .with_writer(std::io::stderr)
        .init();

    let result = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config, Arc::new(SystemClock))
            .await
            .map_err(|e| e.to_string())?;
        print_banner(&app);
        app.run().await.map_err(|e| format!("server: {e}"))
    });
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("mfa-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What an operator needs on the first start. The generated password goes
/// to stdout once and never to the log.
fn print_banner(app: &Application) {
    let url = app.url();
    println!("MFA server listening on {url}");
    println!("  database: {}, mail: {}", app.database(), app.mail());
    println!("  Swagger UI:       {url}{SWAGGER_UI_PATH}");
    println!("  OpenAPI document: {url}{OPENAPI_PATH}");
    if let Some(b) = app.bootstrapped() {
        println!();
        println!(
            "Created the superadmin {} and the org \"{}\".",
            b.email, b.org_name
        );
        match &b.generated_password {
            Some(password) => println!(
                "Password (shown only this once; store it now and change it after logging in): {}",
                password.expose()
            ),
            None => println!("Password: as set by MFA_BOOTSTRAP_ADMIN_PASSWORD."),
        }
    }
}

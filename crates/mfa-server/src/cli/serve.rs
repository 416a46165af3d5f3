//! `mfa-server serve` (the default): start the log, build the application,
//! print the banner, serve until stopped.

use std::io::Write as _;
use std::sync::Arc;

use mfa_core::ports::SystemClock;
use mfa_server::openapi::{OPENAPI_PATH, SWAGGER_UI_PATH};
use mfa_server::{Application, Config};

use super::{CliResult, Failure};

/// Run the server until SIGTERM or Ctrl-C. The log is written out before
/// this returns, so a failure's message on stderr comes after it.
pub fn run(config: Config) -> CliResult {
    let _log = mfa_server::logging::init_server_log(&config.log);
    let result = actix_web::rt::System::new().block_on(async move {
        // A configuration that cannot work (the key) exits 2, as the
        // other commands do; the rest 1.
        let app = Application::build(config, Arc::new(SystemClock))
            .await
            .map_err(Failure::from)?;
        print_banner(&app);
        app.run()
            .await
            .map_err(|e| Failure::Runtime(format!("server: {e}")))
    });
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            Ok(())
        }
        Err(failure) => {
            tracing::error!(error = %failure.message(), "cannot start");
            Err(failure)
        }
    }
}

/// What an operator needs on the first start. A generated password went
/// to stdout already, as the bootstrap committed (see `bootstrap::run`),
/// and never to the log. A stdout that cannot take the banner is logged,
/// not fatal: the server runs without anyone reading its stdout.
fn print_banner(app: &Application) {
    let url = app.url();
    let mut banner = format!(
        "MFA server listening on {url}\n  database: {}, mail: {}\n  Swagger UI:       \
         {url}{SWAGGER_UI_PATH}\n  OpenAPI document: {url}{OPENAPI_PATH}\n",
        app.database(),
        app.mail()
    );
    if let Some(b) = app.bootstrapped()
        && b.generated_password.is_none()
    {
        banner.push_str(&format!(
            "\nCreated the superadmin {} and the org \"{}\".\nPassword: as set by \
             MFA_BOOTSTRAP_ADMIN_PASSWORD.\n",
            b.email, b.org_name
        ));
    }
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_all(banner.as_bytes()).and_then(|()| out.flush()) {
        tracing::warn!(%error, "cannot write the banner to stdout");
    }
}

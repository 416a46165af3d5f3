//! `mfa-server serve` (the default): start the log, build the application,
//! print the banner, serve until stopped.

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
        let app = Application::build(config, Arc::new(SystemClock))
            .await
            .map_err(|e| e.to_string())?;
        print_banner(&app);
        app.run().await.map_err(|e| format!("server: {e}"))
    });
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            Err(Failure::Runtime(e))
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

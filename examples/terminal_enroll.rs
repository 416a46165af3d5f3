//! Enroll an authenticator app from a terminal: the QR code is drawn with
//! text, the code the app shows is read from stdin and verified.
//!
//! ```sh
//! cargo run -p mfa-examples --bin terminal-enroll
//! ```
//!
//! Scan the QR code with Google Authenticator, Microsoft Authenticator,
//! 1Password, Aegis… (or type the secret), then type the 6-digit code. The
//! real clock is used, so the code must be the current one. The lines
//! `Secret: …` and `otpauth URI: …` are printed for scripts too (this
//! example's test reads the secret and answers with the current code).

use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;
use std::sync::Arc;

use mfa_core::ports::{MemoryMailer, OsRandomness, SystemClock};
use mfa_core::{InMemoryStore, MfaError, MfaService, ServiceConfig};

const EMAIL: &str = "you@example.com";
const PASSWORD: &str = "correct horse battery staple";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("terminal-enroll: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let fail = |e: MfaError| e.to_string();
    let mfa = MfaService::new(
        InMemoryStore::new(),
        Arc::new(MemoryMailer::default()),
        Arc::new(SystemClock),
        Arc::new(OsRandomness),
        ServiceConfig {
            issuer: "MFA example".into(),
            ..ServiceConfig::default()
        },
    )
    .map_err(fail)?;
    mfa.bootstrap(EMAIL, PASSWORD, "Example org")
        .map_err(fail)?;
    let login = mfa.login(EMAIL, PASSWORD, None).map_err(fail)?;
    let caller = mfa.authenticate(&login.token).map_err(fail)?;

    let pending = mfa.start_authenticator_enrollment(&caller).map_err(fail)?;
    let qr = mfa_totp::qr_terminal(&pending.otpauth_uri).map_err(|e| e.to_string())?;
    println!("Scan this with your authenticator app:\n\n{qr}\n");
    println!("Secret: {}", pending.secret.to_base32());
    println!("otpauth URI: {}", pending.otpauth_uri);

    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        print!("Code from the app: ");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        let Some(line) = lines.next() else {
            return Err("no code entered".into());
        };
        let code = line.map_err(|e| e.to_string())?;
        match mfa.confirm_authenticator_enrollment(&caller, code.trim()) {
            Ok(_) => {
                println!("Verified: the authenticator is enrolled for {EMAIL}.");
                return Ok(());
            }
            Err(MfaError::InvalidCode) => println!("That code did not verify; try again."),
            Err(e) => return Err(e.to_string()),
        }
    }
}

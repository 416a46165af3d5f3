//! The first start on an empty database: a superadmin and a first org.

use std::io::{self, Write as _};

use mfa_core::ports::OsRandomness;
use mfa_core::{MfaError, MfaResult, crypto::new_token};

use crate::app::Service;
use crate::config::{Config, Secret};

/// Email of the bootstrap superadmin when `MFA_BOOTSTRAP_ADMIN_EMAIL` is
/// unset.
pub const DEFAULT_ADMIN_EMAIL: &str = "admin@example.com";
/// Name of the first org.
pub const FIRST_ORG_NAME: &str = "Default org";

/// What the bootstrap created.
#[derive(Clone, Debug)]
pub struct Bootstrapped {
    /// The superadmin's email.
    pub email: String,
    /// The first org's name.
    pub org_name: String,
    /// The password, when it was generated (to be shown once, on stdout,
    /// never logged). `None` when the configuration set it.
    pub generated_password: Option<Secret>,
}

/// When the database has no user: create the superadmin (the configured
/// email and password, or `admin@example.com` and a random password) and
/// a first org with them as its admin. Does nothing otherwise.
pub fn run(service: &Service, config: &Config) -> MfaResult<Option<Bootstrapped>> {
    let email = config
        .bootstrap_admin_email
        .clone()
        .unwrap_or_else(|| DEFAULT_ADMIN_EMAIL.into());
    let (password, generated) = match &config.bootstrap_admin_password {
        Some(p) => (p.clone(), false),
        // 256 random bits, base64url: 43 characters.
        None => (Secret::new(new_token(&OsRandomness)), true),
    };
    // A generated password is shown before the superadmin is committed:
    // if it cannot be (stdout closed, a full disk), nothing is created,
    // instead of a superadmin whose password nobody saw.
    let announce = |user: &mfa_core::User, org: &mfa_core::Org| {
        if !generated {
            return Ok(());
        }
        show_generated_password(&user.email, &org.name, password.expose()).map_err(|e| {
            MfaError::InvalidRequest(format!(
                "the generated password of the superadmin could not be shown on stdout ({e}), \
                 so no user was created: start again with stdout writable, or set \
                 MFA_BOOTSTRAP_ADMIN_PASSWORD"
            ))
        })
    };
    let created =
        service.bootstrap_announced(&email, password.expose(), FIRST_ORG_NAME, announce)?;
    if created.is_none() && config.bootstrap_admin_password.is_some() {
        tracing::info!(
            "MFA_BOOTSTRAP_ADMIN_PASSWORD is set, but the database has users already: it is \
             used only by the first start, and changes nobody's password now"
        );
    }
    Ok(created.map(|(user, org)| {
        tracing::info!(
            email = %mfa_core::mask_email(&user.email),
            org_id = org.id.0,
            "bootstrap: created the superadmin and the first org"
        );
        Bootstrapped {
            email: user.email,
            org_name: org.name,
            generated_password: generated.then_some(password),
        }
    }))
}

/// Whether what is written to stdout is lost: stdout is `/dev/null`, or
/// was closed (`>&-`: Rust's runtime opens `/dev/null` in its place at
/// start, so the two cannot be told apart), or is missing.
pub fn stdout_discards() -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd as _;
        use std::os::unix::fs::MetadataExt as _;
        let Ok(fd) = io::stdout().as_fd().try_clone_to_owned() else {
            return true;
        };
        let (Ok(stdout), Ok(null)) = (
            std::fs::File::from(fd).metadata(),
            std::fs::metadata("/dev/null"),
        ) else {
            return false;
        };
        stdout.dev() == null.dev() && stdout.ino() == null.ino()
    }
    #[cfg(not(unix))]
    false
}

/// The lines that introduce a generated bootstrap password, and the
/// password, on stdout. A stdout that discards it is an error here (Rust's
/// own stdout writes to a closed one without a word).
fn show_generated_password(email: &str, org_name: &str, password: &str) -> io::Result<()> {
    if stdout_discards() {
        return Err(io::Error::other(
            "stdout is closed or /dev/null, where nobody would read it",
        ));
    }
    // One write: a reader that takes the first line and closes the pipe
    // must not see "Created" for a superadmin the failure then undoes.
    let text = format!(
        "Created the superadmin {email} and the org \"{org_name}\".\nPassword (shown only this \
         once; store it now and change it after logging in): {password}\n\n"
    );
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

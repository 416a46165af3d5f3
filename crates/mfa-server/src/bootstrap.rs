//! The first start on an empty database: a superadmin and a first org.

use mfa_core::ports::OsRandomness;
use mfa_core::{MfaResult, crypto::new_token};

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
    let created = service.bootstrap(&email, password.expose(), FIRST_ORG_NAME)?;
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

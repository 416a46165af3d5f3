//! Embedding `mfa-core` with its in-memory store: an admin enforces MFA, a
//! user enrolls an authenticator at the next login, passes the challenge
//! at the login after, adds email codes and recovery codes and signs in
//! with each, the admin resets the user's MFA, and the housekeeping a
//! service runs now and then (`purge`).
//!
//! ```sh
//! cargo run -p mfa-examples --bin embed-memory
//! ```
//!
//! The clock is a `FixedClock` so that the run is the same every time; a
//! real service passes `SystemClock`. Swap `InMemoryStore` for
//! `mfa_store::DbStore` to persist (see `embed_sqlite_actix.rs`).

use std::sync::Arc;

use mfa_core::ports::{FixedClock, MemoryMailer, OsRandomness};
use mfa_core::service::NewUserRequest;
use mfa_core::{
    InMemoryStore, MailKind, MfaMethod, MfaRequirement, MfaResult, MfaService, ServiceConfig,
    Timestamp,
};

const PASSWORD: &str = "correct horse battery staple";

fn main() -> MfaResult<()> {
    let clock = Arc::new(FixedClock::new(Timestamp(1_800_000_000)));
    let mailer = Arc::new(MemoryMailer::default());
    let mfa = MfaService::new(
        InMemoryStore::new(),
        mailer.clone(),
        clock.clone(),
        Arc::new(OsRandomness),
        ServiceConfig {
            issuer: "Acme".into(),
            ..ServiceConfig::default()
        },
    )?;

    // An admin and their org, then a user in it.
    mfa.bootstrap("admin@example.com", PASSWORD, "Acme")?;
    let admin_login = mfa.login("admin@example.com", PASSWORD, None)?;
    let admin = mfa.authenticate(&admin_login.token)?.into_full()?;
    let alice = mfa.create_user(
        &admin,
        &NewUserRequest {
            email: "alice@example.com".into(),
            first_name: "Alice".into(),
            last_name: "Example".into(),
            password: PASSWORD.into(),
            is_admin: false,
        },
    )?;
    println!("created user {} ({})", alice.user.id, alice.user.email);

    // 1. Enforce MFA on the org: it applies from each member's next login.
    mfa.set_mfa_enforced(&admin, true, false)?;
    println!("MFA enforced on org {}", admin.org_id);

    // 2. Alice's next login owes setup: her partial session enrolls an
    //    authenticator (the app would scan `pending.otpauth_uri`).
    let login = mfa.login("alice@example.com", PASSWORD, None)?;
    assert_eq!(login.decision.requirement, MfaRequirement::SetupRequired);
    let partial = mfa.authenticate(&login.token)?;
    let pending = mfa.start_authenticator_enrollment(&partial)?;
    println!("enrollment started: {}", pending.otpauth_uri);
    let code = mfa_totp::totp(&pending.secret, mfa.now().unix_secs(), &mfa.config().totp);
    let full = mfa
        .confirm_authenticator_enrollment(&partial, &code)?
        .expect("a partial session gets a new full token");
    assert!(
        mfa.authenticate(&login.token).is_err(),
        "the partial token is revoked"
    );
    println!(
        "authenticator enrolled; full session until Unix time {}",
        full.expires_at.unix_secs()
    );

    // 3. Thirty seconds later Alice logs in again and is challenged.
    clock.advance(30);
    let login = mfa.login("alice@example.com", PASSWORD, None)?;
    assert_eq!(
        login.decision.requirement,
        MfaRequirement::ChallengeRequired
    );
    let partial = mfa.authenticate(&login.token)?;
    let code = mfa_totp::totp(&pending.secret, mfa.now().unix_secs(), &mfa.config().totp);
    let token = mfa.verify_mfa(&partial, MfaMethod::Authenticator, &code)?;
    mfa.authenticate(&token.token)?.into_full()?;
    println!("challenge passed");
    // The same code twice is refused: each step is accepted once.
    let login = mfa.login("alice@example.com", PASSWORD, None)?;
    let partial = mfa.authenticate(&login.token)?;
    assert!(
        mfa.verify_mfa(&partial, MfaMethod::Authenticator, &code)
            .is_err()
    );
    println!("replayed code refused");

    // 4. Alice adds email codes as a second factor (a real mailer sends
    //    the code; the memory mailer keeps it for us to read), and makes
    //    recovery codes, shown once, for the day she has neither.
    let alice_full = mfa.authenticate(&token.token)?.into_full()?;
    let sent = mfa.start_email_enrollment(&alice_full)?;
    mfa.confirm_email_enrollment(&alice_full, &last_code(&mailer))?;
    let recovery = mfa.generate_recovery_codes(&alice_full)?;
    println!(
        "email codes enrolled ({}); {} recovery codes shown once",
        sent.sent_to,
        recovery.len()
    );

    // 5. Her next login passes with an email code (one send per 30 s per
    //    user), the one after with a recovery code, which is then used up.
    clock.advance(30);
    let login = mfa.login("alice@example.com", PASSWORD, None)?;
    let partial = mfa.authenticate(&login.token)?;
    mfa.send_login_code(&partial)?;
    mfa.verify_mfa(&partial, MfaMethod::Email, &last_code(&mailer))?;
    println!("signed in with an email code");
    let login = mfa.login("alice@example.com", PASSWORD, None)?;
    let partial = mfa.authenticate(&login.token)?;
    mfa.verify_mfa(&partial, MfaMethod::Recovery, &recovery[0])?;
    println!("signed in with a recovery code");

    // 6. Alice lost her phone: the admin resets her MFA; her sessions end
    //    and her next login owes setup again.
    mfa.reset_mfa(&admin, &[alice.user.id])?;
    assert!(mfa.authenticate(&token.token).is_err());
    let login = mfa.login("alice@example.com", PASSWORD, None)?;
    assert_eq!(login.decision.requirement, MfaRequirement::SetupRequired);
    println!(
        "MFA reset; next login: {}",
        login.decision.requirement.as_str()
    );
    println!(
        "{} mails sent (codes, and notices of each change)",
        mailer.sent().len()
    );

    // Housekeeping, from a timer in a real service: ended sessions, old
    // email changes and forgotten failure counters are deleted.
    clock.advance(2 * 3600);
    let purged = mfa.purge()?;
    println!("purge: {} ended sessions deleted", purged.sessions);
    Ok(())
}

/// The code of the newest code mail.
fn last_code(mailer: &MemoryMailer) -> String {
    mailer
        .sent()
        .into_iter()
        .rev()
        .find_map(|mail| match mail.kind {
            MailKind::EnrollmentCode { code, .. } | MailKind::LoginCode { code, .. } => Some(code),
            _ => None,
        })
        .expect("a code mail")
}

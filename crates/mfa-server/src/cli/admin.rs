//! `mfa-server admin …`: the operator's actions on the database, through
//! [`mfa_core::OperatorConsole`]. Each is one transaction with the audit
//! events of its HTTP twin.

use std::io::{IsTerminal as _, Write as _};

use mfa_core::service::{OperatorConsole, OperatorNewUser};
use mfa_core::{MfaError, Org, OrgId};
use mfa_server::Service;

use super::{CliResult, Failure, domain, out, read_stdin_line};

/// `admin create-user`'s arguments, with the password already read.
#[derive(Debug)]
pub struct NewUser {
    /// Email.
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Org to join.
    pub org: Option<i64>,
    /// Admin of that org.
    pub admin: bool,
    /// Superadmin.
    pub superadmin: bool,
    /// The password.
    pub password: String,
}

/// The new user's password: the first line of stdin with `from_stdin`,
/// else asked twice on the terminal without echo.
pub fn read_password(email: &str, from_stdin: bool) -> Result<String, Failure> {
    let password = if from_stdin {
        read_stdin_line("password")?
    } else if std::io::stdin().is_terminal() {
        let first = prompt_hidden(&format!("Password for {email}: "))?;
        mfa_core::crypto::check_password_rules(&first).map_err(domain)?;
        let again = prompt_hidden("The same password again: ")?;
        if first != again {
            return Err(Failure::Usage("the two passwords differ".into()));
        }
        first
    } else {
        return Err(Failure::Usage(
            "stdin is not a terminal: give the password on stdin with --password-stdin \
             (it is never a command-line argument)"
                .into(),
        ));
    };
    mfa_core::crypto::check_password_rules(&password).map_err(domain)?;
    Ok(password)
}

/// Terminal echo off while it lives, on again when dropped, and when
/// Ctrl-C (or SIGTERM, SIGHUP) ends the process at the prompt: the
/// default action of those signals would leave the shell's terminal
/// silent.
#[cfg(unix)]
struct EchoOff {
    saved: rustix::termios::Termios,
}

/// The terminal settings to put back if a signal ends the process while
/// echo is off.
#[cfg(unix)]
static ECHO_TO_RESTORE: std::sync::Mutex<Option<rustix::termios::Termios>> =
    std::sync::Mutex::new(None);

#[cfg(unix)]
impl EchoOff {
    fn new() -> Option<EchoOff> {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        static WATCHING: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if !*WATCHING.get_or_init(watch_ending_signals) {
            return None;
        }
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut silent = saved.clone();
        silent.local_modes.remove(LocalModes::ECHO);
        *ECHO_TO_RESTORE.lock().unwrap_or_else(|p| p.into_inner()) = Some(saved.clone());
        tcsetattr(&stdin, OptionalActions::Flush, &silent).ok()?;
        Some(EchoOff { saved })
    }
}

#[cfg(unix)]
impl Drop for EchoOff {
    fn drop(&mut self) {
        let mut pending = ECHO_TO_RESTORE.lock().unwrap_or_else(|p| p.into_inner());
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
        *pending = None;
    }
}

/// From now on, SIGINT, SIGTERM and SIGHUP end the process from a thread
/// that first gives the terminal its echo back (if a prompt took it), with
/// the shell's exit code for the signal (128 + its number). Whether the
/// signals could be taken.
#[cfg(unix)]
fn watch_ending_signals() -> bool {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return false;
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let pending = ECHO_TO_RESTORE.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(saved) = pending.as_ref() {
                    let _ = rustix::termios::tcsetattr(
                        std::io::stdin(),
                        rustix::termios::OptionalActions::Now,
                        saved,
                    );
                    eprintln!();
                }
                std::process::exit(128 + signal);
            }
        })
        .is_ok()
}

/// Without a terminal interface to turn echo off, there is no prompt.
#[cfg(not(unix))]
struct EchoOff;

#[cfg(not(unix))]
impl EchoOff {
    fn new() -> Option<EchoOff> {
        None
    }
}

fn prompt_hidden(prompt: &str) -> Result<String, Failure> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let Some(echo_off) = EchoOff::new() else {
        return Err(Failure::Usage(
            "cannot turn off the terminal's echo: use --password-stdin".into(),
        ));
    };
    let line = read_stdin_line("password");
    drop(echo_off);
    eprintln!();
    line
}

fn console(service: &Service) -> OperatorConsole<'_, mfa_store::DbStore> {
    OperatorConsole::new(service)
}

/// `org 3 "Acme"`, or `org 3` if it cannot be read.
fn org_label(service: &Service, id: OrgId) -> String {
    let name = console(service)
        .orgs()
        .ok()
        .and_then(|orgs| orgs.into_iter().find(|o| o.id == id))
        .map(|o| o.name);
    match name {
        Some(name) => format!("org {id} \"{name}\""),
        None => format!("org {id}"),
    }
}

/// Name what was not found after the argument that named it.
fn not_found(e: MfaError, org: Option<i64>, email: Option<&str>) -> Failure {
    match (&e, org, email) {
        (MfaError::NotFound("org"), Some(org), _) => Failure::Runtime(format!(
            "there is no org with id {org} (see `mfa-server admin list-orgs`)"
        )),
        (MfaError::NotFound("user"), _, Some(email)) => {
            Failure::Runtime(format!("there is no user with the email {email}"))
        }
        (MfaError::NotFound("membership"), Some(org), Some(email)) => {
            Failure::Runtime(format!("{email} is not a member of org {org}"))
        }
        _ => domain(e),
    }
}

/// `admin list-orgs`.
pub fn list_orgs(service: &Service) -> CliResult {
    let orgs: Vec<Org> = console(service).orgs().map_err(domain)?;
    if orgs.is_empty() {
        out!("There is no org yet (`mfa-server admin create-org --name NAME` makes one).");
        return Ok(());
    }
    out!("{:>6}  {:<12}  name", "id", "MFA");
    for org in orgs {
        let mfa = if org.is_mfa_enforced {
            "enforced"
        } else {
            "not enforced"
        };
        out!("{:>6}  {:<12}  {}", org.id, mfa, org.name);
    }
    Ok(())
}

/// `admin create-org`.
pub fn create_org(service: &Service, name: &str) -> CliResult {
    let org = console(service).create_org(name).map_err(domain)?;
    out!("Created org {} \"{}\".", org.id, org.name);
    Ok(())
}

/// `admin create-user`.
pub fn create_user(service: &Service, new: NewUser) -> CliResult {
    let user = console(service)
        .create_user(&OperatorNewUser {
            email: new.email.clone(),
            first_name: new.first_name,
            last_name: new.last_name,
            password: new.password,
            is_super_admin: new.superadmin,
            org: new.org.map(OrgId),
            is_org_admin: new.admin,
        })
        .map_err(|e| not_found(e, new.org, None))?;
    let mut roles = Vec::new();
    if new.superadmin {
        roles.push("a superadmin".to_string());
    }
    if let Some(org) = new.org {
        let role = if new.admin { "an admin" } else { "a member" };
        roles.push(format!("{role} of {}", org_label(service, OrgId(org))));
    }
    if new.org.is_none() {
        let who = if new.superadmin {
            "a superadmin, but a member of no org yet"
        } else {
            "a member of no org yet"
        };
        out!(
            "Created user {} {} ({who}: a login is to an org, so they cannot log in until \
             `admin add-member --org ORG_ID --email {}` makes them a member of one).",
            user.id,
            user.email,
            user.email
        );
    } else {
        out!(
            "Created user {} {}, {}.",
            user.id,
            user.email,
            roles.join(" and ")
        );
    }
    Ok(())
}

/// `admin add-member`.
pub fn add_member(service: &Service, org: i64, email: &str, admin: bool) -> CliResult {
    let (m, created) = console(service)
        .add_member(OrgId(org), email, admin)
        .map_err(|e| not_found(e, Some(org), Some(email)))?;
    let role = if m.is_admin { "admin" } else { "member" };
    let label = org_label(service, OrgId(org));
    if created {
        out!("{email} is now an active {role} of {label}.");
    } else {
        out!("{email} was a member of {label} already; they are now an active {role} of it.");
    }
    Ok(())
}

/// `admin enforce-mfa`.
pub fn enforce_mfa(service: &Service, org: i64, enforced: bool) -> CliResult {
    let changed = console(service)
        .set_mfa_enforced(OrgId(org), enforced)
        .map_err(|e| not_found(e, Some(org), None))?;
    let label = org_label(service, OrgId(org));
    match (changed, enforced) {
        (true, true) => out!(
            "MFA is now enforced on {label}: members without a factor set one up at their next login."
        ),
        (true, false) => {
            out!("MFA is no longer enforced on {label} (from each member's next login).")
        }
        (false, true) => out!("MFA was already enforced on {label}; nothing changed."),
        (false, false) => out!("MFA was not enforced on {label}; nothing changed."),
    }
    Ok(())
}

/// `admin reset-mfa`.
pub fn reset_mfa(service: &Service, email: &str) -> CliResult {
    let reset = console(service)
        .reset_mfa(email)
        .map_err(|e| not_found(e, None, Some(email)))?;
    let mut removed = Vec::new();
    if reset.had.authenticator {
        removed.push("the authenticator".to_string());
    }
    if reset.had.email {
        removed.push("the email factor".to_string());
    }
    if reset.had.recovery_codes_left > 0 {
        removed.push(format!(
            "{} unused recovery codes",
            reset.had.recovery_codes_left
        ));
    }
    let removed = if removed.is_empty() {
        "they had no verified factor".to_string()
    } else {
        format!("removed {}", removed.join(", "))
    };
    let sessions = match reset.sessions_ended {
        1 => "1 session".to_string(),
        n => format!("{n} sessions"),
    };
    out!(
        "Reset the MFA of {}: {removed}; ended {sessions}.",
        reset.user.email
    );
    out!("Where MFA applies, their next login asks them to set up a factor again.");
    Ok(())
}

/// `admin opt-out`.
pub fn opt_out(service: &Service, org: i64, email: &str, opt_out: bool) -> CliResult {
    let changed = console(service)
        .set_mfa_opt_out(OrgId(org), email, opt_out)
        .map_err(|e| not_found(e, Some(org), Some(email)))?;
    let label = org_label(service, OrgId(org));
    match (changed, opt_out) {
        (true, true) => {
            out!("{email} is now opted out of MFA in {label} (from their next login).")
        }
        (true, false) => {
            out!("{email} is no longer opted out of MFA in {label} (from their next login).")
        }
        (false, true) => {
            out!("{email} was already opted out of MFA in {label}; nothing changed.")
        }
        (false, false) => out!("{email} was not opted out of MFA in {label}; nothing changed."),
    }
    Ok(())
}

//! `mfa-server gen-key` and `mfa-server rotate-key`.

use std::path::Path;

use mfa_core::ports::{Clock as _, SystemClock};
use mfa_core::service::{NoticeOrder, NoticeOutcome};
use mfa_core::{MailKind, MfaMethod};
use mfa_server::app::write_private_file;
use mfa_server::{Config, app};
use mfa_store::EncryptionKey;

use super::{CliResult, Failure, KeySource, existing_key, init_tracing, out, read_stdin_line};

/// Print a fresh key, or write it to a new file readable by the owner only.
pub fn gen_key(out: Option<&Path>) -> CliResult {
    let key = EncryptionKey::generate();
    match out {
        None => {
            let lost = "no key was stored anywhere: run it again with stdout writable, or with \
                        --out FILE";
            if mfa_server::bootstrap::stdout_discards() {
                return Err(Failure::Usage(format!(
                    "stdout is closed or /dev/null, so the key would be lost; {lost}"
                )));
            }
            crate::cli::write_out(format_args!("{}\n", key.to_base64()))
                .map_err(|_| Failure::Runtime(format!("cannot write the key to stdout; {lost}")))
        }
        Some(path) => {
            write_private_file(path, &format!("{}\n", key.to_base64())).map_err(|e| {
                Failure::Runtime(if e.kind() == std::io::ErrorKind::AlreadyExists {
                    format!("{} exists already; it was not overwritten", path.display())
                } else {
                    format!("cannot write {}: {e}", path.display())
                })
            })?;
            out!(
                "Wrote a new encryption key to {} (mode 0600; fingerprint {}).",
                path.display(),
                key.fingerprint()
            );
            Ok(())
        }
    }
}

/// Re-encrypt every stored secret from the configured key to the new one.
pub fn rotate_key(config: &Config, new_key_file: Option<&Path>, new_key_stdin: bool) -> CliResult {
    // Run from the wrong directory it said "no key to rotate from" (exit
    // 1), where the other commands name the missing database (exit 2).
    super::require_database(config)?;
    let new_key = match (new_key_file, new_key_stdin) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::Usage(format!(
                    "cannot read the new key from {}: {e}",
                    path.display()
                ))
            })?;
            EncryptionKey::from_base64(&text)
                .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?
        }
        (None, _) => EncryptionKey::from_base64(&read_stdin_line("new key")?)
            .map_err(|e| Failure::Usage(format!("the new key on stdin: {e}")))?,
    };
    let Some((old_key, source)) = existing_key(config)? else {
        return Err(Failure::Runtime(format!(
            "there is no key to rotate from: MFA_ENCRYPTION_KEY is unset and {} does not exist",
            config.key_file().display()
        )));
    };
    if old_key.fingerprint() == new_key.fingerprint() {
        return Err(Failure::Usage(
            "the new key is the key in use: give another one (`mfa-server gen-key`)".into(),
        ));
    }
    init_tracing(config);
    // The database first: one it refuses (pending migrations, a newer
    // version's) is refused before anything says a rotation began.
    let (old_fingerprint, new_fingerprint) = (old_key.fingerprint(), new_key.fingerprint());
    let store = super::open_migrated(config, old_key)?;
    match store.recorded_key_fingerprint()? {
        Some(recorded) if recorded == new_fingerprint => out!(
            "The database records the new key already (a rotation ran): this run re-encrypts \
             only secrets still under the old key, and forgets nothing."
        ),
        Some(recorded) if recorded != old_fingerprint => {
            return Err(Failure::Usage(format!(
                "the configured key ({old_fingerprint}) is not the database's ({recorded}), nor \
                 is the new one: rotate from the key the database records (after a rotation, \
                 the key it was rotated to); nothing was changed"
            )));
        }
        _ => {}
    }
    out!(
        "Re-encrypting the stored authenticator secrets: key {old_fingerprint} -> key \
         {new_fingerprint} ..."
    );
    let report = store.rotate_encryption_key(&new_key).map_err(|e| match e {
        mfa_store::Error::KeyMismatch { .. } => Failure::Usage(format!(
            "{e}. A secret written under yet another key (an older one, or a server that \
             missed a rotation): run the rotation with that key configured, or reset that \
             user's MFA (`mfa-server admin reset-mfa`) and run it again"
        )),
        other => other.into(),
    })?;
    out!(
        "Done, in one transaction: {} secrets re-encrypted with the new key, {} were under it already; \
         {} password failure counters forgotten.",
        report.reencrypted,
        report.already_new,
        report.password_failures_forgotten
    );
    match source {
        KeySource::File(path) => out!(
            "Next: replace {} with the new key (keep it mode 0600), restart the server, and \
             check with `mfa-server check-config --connect`.",
            path.display()
        ),
        KeySource::Configured => out!(
            "Next: set MFA_ENCRYPTION_KEY to the new key on every server, restart them, and \
             check with `mfa-server check-config --connect`."
        ),
    }
    Ok(())
}

/// Send the `queued` notices a replacement of the key wrote, newest first,
/// saying how far it got: at the first that fails, the rest are left in
/// the database to the servers (each waits on a mail server that does
/// not answer, so thousands would hold the command for hours).
fn tell_of_the_removal(service: mfa_server::Service, queued: usize) -> CliResult {
    out!("Mailing the {queued} users a notice ...");
    let mut sent = 0;
    let mut stopped = None;
    while sent < queued {
        match service.deliver_next_notice(NoticeOrder::Newest) {
            Ok(Some(NoticeOutcome::Sent)) => sent += 1,
            Ok(Some(NoticeOutcome::Retried)) => {
                stopped = Some("a send failed (the log says why)");
                break;
            }
            Ok(Some(NoticeOutcome::GivenUp)) => {
                stopped = Some("the mail server refused a notice for good (the log says why)");
                break;
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "notices not sent");
                stopped = Some("the database refused (the log says why)");
                break;
            }
        }
        if sent % 100 == 0 {
            out!("  {sent} of {queued} mailed");
        }
    }
    match stopped {
        None => out!("Mailed all {sent} of them."),
        Some(why) => out!(
            "Mailed {sent} of them; {why}. The other {} stay queued in the database: the \
             servers send them once they run with this key, and try a failed one again.",
            queued - sent
        ),
    }
    Ok(())
}

/// Make the configured key the database's when the one it records is lost
/// ([`mfa_store::DbStore::replace_lost_key`]), and tell the users whose
/// authenticator was removed.
pub fn replace_lost_key(config: &Config, yes: bool) -> CliResult {
    let (key, generate_into) = match existing_key(config)? {
        Some((key, _)) => (key, None),
        None => (EncryptionKey::generate(), Some(config.key_file())),
    };
    init_tracing(config);
    let store = super::open_migrated(config, key.clone())?;
    let recorded = store.recorded_key_fingerprint()?;
    if recorded.as_ref() == Some(&key.fingerprint()) {
        return Err(mfa_store::Error::KeyNotLost.into());
    }
    // As the store decides: the verified authenticators count (a pending
    // enrollment protects nothing).
    let verified = store.check_encryption_key_on(u64::MAX)?;
    if verified.readable > 0 {
        return Err(mfa_store::Error::KeyOpensSecrets {
            opened: verified.readable,
            checked: verified.total,
        }
        .into());
    }
    let check = store.check_encryption_key()?;
    if !yes {
        out!(
            "{}; {}.\n\
             Replacing the lost key removes the {} stored authenticators (their users enroll \
             again and are told by mail), the email codes in flight and the password failure \
             counts, in one transaction. Email factors, recovery codes, passwords and sessions \
             stay.\n\
             Nothing was changed: run again with --yes to do it.",
            match recorded {
                Some(fingerprint) => format!("The database records the key {fingerprint}"),
                None => "The database records no key yet".to_string(),
            },
            match &generate_into {
                // Made by the run with --yes: its fingerprint is said then.
                Some(path) => format!("a new key is made into {} with --yes", path.display()),
                None => format!("the new key is {}", key.fingerprint()),
            },
            check.total,
        );
        return Err(Failure::Usage(
            "replace-lost-key changes nothing without --yes".into(),
        ));
    }
    // The key first: a key recorded in the database but kept nowhere would
    // be lost at once.
    if let Some(path) = &generate_into {
        app::create_private_dir(&config.data_dir).map_err(|e| {
            Failure::Runtime(format!(
                "cannot create the data directory {}: {e}",
                config.data_dir.display()
            ))
        })?;
        write_private_file(path, &format!("{}\n", key.to_base64()))
            .map_err(|e| Failure::Runtime(format!("cannot write {}: {e}", path.display())))?;
    }
    let notice = MailKind::FactorReset {
        methods: vec![MfaMethod::Authenticator],
        by_admin: Some(format!("the {}", mfa_core::service::OPERATOR)),
    }
    .notice_payload()
    .ok_or_else(|| Failure::Runtime("the notice of a reset cannot be stored".into()))?;
    let report = match store.replace_lost_key(SystemClock.now(), &notice) {
        Ok(report) => report,
        Err(e) => {
            if let Some(path) = &generate_into {
                // Nothing was recorded under it.
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
    };
    let users: Vec<&str> = report
        .authenticators_removed
        .iter()
        .map(|(_, email)| email.as_str())
        .collect();
    out!(
        "Done, in one transaction: the database records the key {}{}; {} authenticators removed \
         ({}), {} pending enrollments, {} email codes and {} password failure counters \
         forgotten.",
        key.fingerprint(),
        match &generate_into {
            Some(path) => format!(" (written to {})", path.display()),
            None => String::new(),
        },
        users.len(),
        // The first twenty: the audit trail has them all.
        match users.len() {
            0 => "none".to_string(),
            1..=20 => users.join(", "),
            n => format!("{}, and {} more", users[..20].join(", "), n - 20),
        },
        report.pending_removed,
        report.email_codes_forgotten,
        report.password_failures_forgotten
    );
    let queued = report.authenticators_removed.len();
    if queued > 0 {
        tell_of_the_removal(super::service_over(store, config)?, queued)?;
    }
    out!(
        "Next: start the servers with this key (every server the same one); users whose \
         authenticator was removed enroll again at their next login where MFA applies."
    );
    Ok(())
}

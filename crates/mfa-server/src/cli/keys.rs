//! `mfa-server gen-key` and `mfa-server rotate-key`.

use std::io::Write as _;
use std::path::Path;

use mfa_server::Config;
use mfa_store::EncryptionKey;

use super::{CliResult, Failure, KeySource, existing_key, init_tracing, out, read_stdin_line};

/// A short, safe-to-print fingerprint of a key: the first 16 hex digits of
/// the SHA-256 of its standard base64. Equal on every server that has the
/// same key.
pub fn fingerprint(key: &EncryptionKey) -> String {
    mfa_core::crypto::hash_token(&key.to_base64())
        .chars()
        .take(16)
        .collect()
}

/// Print a fresh key, or write it to a new file readable by the owner only.
pub fn gen_key(out: Option<&Path>) -> CliResult {
    let key = EncryptionKey::generate();
    match out {
        None => {
            out!("{}", key.to_base64());
            Ok(())
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
                fingerprint(&key)
            );
            Ok(())
        }
    }
}

/// Write a new file readable by the owner only; never overwrite one.
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Re-encrypt every stored secret from the configured key to the new one.
pub fn rotate_key(config: &Config, new_key_file: Option<&Path>, new_key_stdin: bool) -> CliResult {
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
    if fingerprint(&old_key) == fingerprint(&new_key) {
        return Err(Failure::Usage(
            "the new key is the key in use: give another one (`mfa-server gen-key`)".into(),
        ));
    }
    init_tracing(config);
    // The database first: one it refuses (pending migrations, a newer
    // version's) is refused before anything says a rotation began.
    let (old_fingerprint, new_fingerprint) = (fingerprint(&old_key), fingerprint(&new_key));
    let store = super::open_migrated(config, old_key)?;
    out!(
        "Re-encrypting the stored authenticator secrets: key {old_fingerprint} -> key \
         {new_fingerprint} ..."
    );
    let report = store.rotate_encryption_key(&new_key)?;
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

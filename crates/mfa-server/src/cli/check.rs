//! `mfa-server check-config [--connect]`: the effective configuration with
//! its secrets masked, and optionally a look at the database and the mail
//! server.

use mfa_server::Config;
use mfa_server::bootstrap::DEFAULT_ADMIN_EMAIL;
use mfa_server::config::DatabaseKind;
use mfa_store::{DbStore, StoreOptions};

use super::{CliResult, Failure, KeySource, existing_key, out, sqlite_path};

/// A URL with its password (in the user info, or any parameter whose name
/// holds `password`, such as libpq's `sslpassword`) replaced by `***`.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    // libpq decodes the names too: `ssl%70assword` is one.
                    Some((k, _))
                        if percent_encoding::percent_decode_str(k)
                            .decode_utf8_lossy()
                            .to_ascii_lowercase()
                            .contains("password") =>
                    {
                        format!("{k}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Print the configuration; with `connect`, check the database too.
pub fn run(config: &Config, connect: bool) -> CliResult {
    let key = existing_key(config);
    let key_line = match &key {
        Ok(Some((key, KeySource::Configured))) => {
            format!("*** (set; fingerprint {})", key.fingerprint())
        }
        Ok(Some((key, KeySource::File(path)))) => format!(
            "(unset: the key file {}; fingerprint {})",
            path.display(),
            key.fingerprint()
        ),
        Ok(None) => format!(
            "(unset: generated into {} at the first start)",
            config.key_file().display()
        ),
        Err(Failure::Usage(_)) => "(unset: REQUIRED with PostgreSQL)".to_string(),
        Err(Failure::Runtime(e) | Failure::Output(e)) => format!("(unset: {e})"),
    };
    let rows: Vec<(&str, String)> = vec![
        ("MFA_BIND", config.bind.clone()),
        ("MFA_DATA_DIR", config.data_dir.display().to_string()),
        (
            "MFA_DATABASE_URL",
            format!(
                "{} ({})",
                mask_url(config.database_url.expose()),
                match config.database_kind() {
                    DatabaseKind::Sqlite => "SQLite",
                    DatabaseKind::Postgres => "PostgreSQL",
                }
            ),
        ),
        ("MFA_ENCRYPTION_KEY", key_line),
        (
            "MFA_BOOTSTRAP_ADMIN_EMAIL",
            config
                .bootstrap_admin_email
                .clone()
                .unwrap_or_else(|| format!("(unset: {DEFAULT_ADMIN_EMAIL})")),
        ),
        (
            "MFA_BOOTSTRAP_ADMIN_PASSWORD",
            match &config.bootstrap_admin_password {
                // Judged when used, on an empty database: said here, not
                // refused, as it is ignored once users exist.
                Some(password) => match mfa_core::crypto::check_password_strength(
                    password.expose(),
                    &[config.bootstrap_admin_email.as_deref().unwrap_or_default()],
                    config.password_min_strength,
                ) {
                    Ok(()) => "*** (set)".to_string(),
                    Err(why) => format!(
                        "*** (set; a first start on an empty database refuses it: {why}; \
                         once users exist it is ignored)"
                    ),
                },
                None => "(unset: generated and printed once, on an empty database)".to_string(),
            },
        ),
        (
            "MFA_DATABASE_POOL_SIZE",
            match config.database_pool_size {
                Some(n) => n.to_string(),
                None => "(unset: PostgreSQL 10, SQLite 8 readers)".to_string(),
            },
        ),
        (
            "MFA_DATABASE_TIMEOUT_SECS",
            config.database_timeout_secs.to_string(),
        ),
        ("MFA_ISSUER", config.issuer.clone()),
        ("MFA_ENVIRONMENT", config.environment.as_str().to_string()),
        (
            "MFA_SMTP_URL",
            match &config.smtp_url {
                Some(url) => mask_url(url.expose()),
                None => format!(
                    "(unset: mail goes to {} as .eml files)",
                    config.outbox_dir().display()
                ),
            },
        ),
        (
            "MFA_SMTP_CA_FILE",
            config
                .smtp_ca_file
                .as_ref()
                .map_or("(unset: the public roots only)".into(), |f| {
                    f.display().to_string()
                }),
        ),
        ("MFA_MAIL_FROM", config.mail_from.clone()),
        (
            "MFA_MAIL_TEMPLATES_DIR",
            config
                .mail_templates_dir
                .as_ref()
                .map_or("(unset: the built-in templates)".into(), |d| {
                    d.display().to_string()
                }),
        ),
        (
            "MFA_PUBLIC_URL",
            config.public_url.clone().unwrap_or_else(|| {
                "(unset: mails say where to enter a token instead of linking to it)".into()
            }),
        ),
        ("MFA_TOTP_DIGITS", config.totp.digits.to_string()),
        ("MFA_TOTP_PERIOD_SECS", config.totp.period.to_string()),
        ("MFA_SESSION_TTL_SECS", config.session_ttl_secs.to_string()),
        (
            "MFA_PURGE_INTERVAL_SECS",
            config.purge_interval_secs.to_string(),
        ),
        (
            "MFA_AUDIT_RETENTION_DAYS",
            match config.audit_retention_days {
                0 => "0 (kept for good)".to_string(),
                days => days.to_string(),
            },
        ),
        (
            "MFA_PASSWORD_QUEUE_MAX_WAIT_SECS",
            config.password_queue_max_wait_secs.to_string(),
        ),
        (
            "MFA_PASSWORD_MIN_STRENGTH",
            match config.password_min_strength {
                0 => "0 (only the length is checked)".to_string(),
                score => score.to_string(),
            },
        ),
        ("MFA_PASSWORD_HASH", config.password_hash.to_string()),
        ("MFA_LOG", config.log.clone()),
        (
            "MFA_TRUSTED_PROXIES",
            if config.trusted_proxies.is_empty() {
                "(unset: none, the peer is the client)".to_string()
            } else {
                let networks: Vec<String> = config
                    .trusted_proxies
                    .networks()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                networks.join(", ")
            },
        ),
    ];
    out!("Effective configuration (environment, over the --config file, over the defaults):");
    for (name, value) in rows {
        out!("  {name:<32} {value}");
    }
    let key = key?;
    let mut smtp = None;
    if let Some(url) = &config.smtp_url {
        // Parsing only: nothing connects before the first mail, or
        // `--connect`.
        let mailer = mfa_email::EmailMailer::new(mfa_email::MailConfig {
            smtp_url: Some(url.expose().to_string()),
            from: config.mail_from.clone(),
            outbox_dir: config.outbox_dir(),
            issuer: config.issuer.clone(),
            templates_dir: config.mail_templates_dir.clone(),
            confirm_link_prefix: None,
            smtp_ca_file: config.smtp_ca_file.clone(),
        })
        .map_err(|e| Failure::Usage(format!("mail: {e}")))?;
        out!("Mail goes to {mailer}.");
        if mailer.sender_is_local() {
            out!(
                "Warning: {} ({}).",
                mfa_server::app::LOCAL_SENDER,
                mailer.sender().email
            );
        }
        smtp = Some(mailer);
    } else if config.environment == mfa_core::Environment::Production {
        out!("Warning: {}.", mfa_server::app::OUTBOX_IN_PRODUCTION);
    }
    // Judged as the first start judges it, which would refuse it (after
    // making the database and key): a check before it should say so.
    if let Some(password) = &config.bootstrap_admin_password {
        let email = config
            .bootstrap_admin_email
            .as_deref()
            .unwrap_or(DEFAULT_ADMIN_EMAIL);
        if let Err(why) = mfa_core::crypto::check_password_strength(
            password.expose(),
            &[email, mfa_server::bootstrap::FIRST_ORG_NAME],
            config.password_min_strength,
        ) {
            out!(
                "Warning: MFA_BOOTSTRAP_ADMIN_PASSWORD: {why} A first start (on a database \
                 with no user) refuses it; once users exist it is not used."
            );
        }
    }
    // The server warns at its start; a check before it should too.
    let sqlite = sqlite_path(config);
    let beside = |suffix: &str| {
        sqlite.as_ref().map(|p| {
            let mut name = p.as_os_str().to_owned();
            name.push(suffix);
            std::path::PathBuf::from(name)
        })
    };
    let files = [
        (Some(config.key_file()), "encryption key file"),
        (beside("-wal"), "database's write-ahead log"),
        (beside("-shm"), "database's shared-memory file"),
        (sqlite.clone(), "database file"),
    ];
    for (path, what) in files {
        if let Some(path) = path.filter(|p| mfa_server::app::readable_by_others(p)) {
            out!(
                "Warning: the {what} {} is readable by other users: chmod 600 it.",
                path.display()
            );
        }
    }
    out!("The configuration is valid.");
    if connect {
        check_database(config, key.map(|(key, _)| key))?;
        if let Some(mailer) = smtp {
            mailer.check_connection().map_err(|e| {
                Failure::Runtime(format!(
                    "mail: {e} (codes and notices cannot be sent until this is mended)"
                ))
            })?;
            out!(
                "Mail: {mailer} opened a session (TLS and login as configured) and would take a \
                 message from {}; nothing was sent.",
                mailer.sender().email
            );
        }
    }
    Ok(())
}

fn check_database(config: &Config, key: Option<mfa_store::EncryptionKey>) -> CliResult {
    if let Some(path) = sqlite_path(config)
        && !path.exists()
    {
        out!(
            "Database: there is no SQLite file at {} yet (the first start creates it).",
            path.display()
        );
        return Ok(());
    }
    let have_key = key.is_some();
    let key = key.unwrap_or_else(mfa_store::EncryptionKey::generate);
    let store = DbStore::connect(config.database_url.expose(), StoreOptions::new(key))?;
    let unknown = store.unknown_migrations()?;
    if !unknown.is_empty() {
        return Err(mfa_store::Error::NewerSchema(unknown).into());
    }
    let status = store.migration_status()?;
    let pending = status.iter().filter(|m| !m.applied).count();
    out!(
        "Database: {} reachable; {} of {} migrations applied{}.",
        store.backend(),
        status.len() - pending,
        status.len(),
        if pending > 0 {
            " (the server applies the others at its start, or `mfa-server migrate`)"
        } else {
            ""
        }
    );
    if pending == 0 {
        let waiting = store.addresses_to_rewrite()?;
        if waiting > 0 {
            out!("Database: {}", super::addresses_waiting(waiting));
        }
    }
    // The table the key's fingerprint is kept in exists once the migration
    // that made it is applied.
    let recorded = if status
        .iter()
        .any(|m| m.applied && m.name == mfa_store::KEY_FINGERPRINT_MIGRATION)
    {
        store.recorded_key_fingerprint()?
    } else {
        None
    };
    if !have_key {
        // A key file missing beside a database that holds secrets is a
        // restore without its key, not a first start.
        if let Some(recorded) = recorded {
            return Err(Failure::Usage(format!(
                "there is no encryption key (no MFA_ENCRYPTION_KEY, no key file at {}), but the \
                 database was written with one (fingerprint {recorded}): restore the key file \
                 from the backup taken with the database, or set MFA_ENCRYPTION_KEY to that key \
                 (the server refuses to start without it)",
                config.key_file().display()
            )));
        }
        let stored = store.check_encryption_key_on(1)?.total;
        if stored > 0 {
            return Err(Failure::Usage(format!(
                "there is no encryption key (no MFA_ENCRYPTION_KEY, no key file at {}), but the \
                 database holds authenticator secrets written with one: restore the key file \
                 from the backup taken with the database, or set MFA_ENCRYPTION_KEY to that key \
                 (the server refuses to start without it)",
                config.key_file().display()
            )));
        }
        out!("Encryption key: none yet, so nothing to check.");
        return Ok(());
    }
    if status.iter().all(|m| !m.applied) {
        out!("Encryption key: the database is empty, so nothing to check.");
        return Ok(());
    }
    match recorded {
        Some(database) if database != *store.fingerprint() => {
            return Err(Failure::Usage(format!(
                "{}. Servers and commands refuse to start with this key: use the database's \
                 (after a rotation, the new one), or if it is lost, `mfa-server \
                 replace-lost-key`",
                mfa_store::Error::NotTheDatabaseKey {
                    database,
                    this: store.fingerprint().clone(),
                }
            )));
        }
        Some(database) => out!("Encryption key: the database's (fingerprint {database})."),
        None => out!(
            "Encryption key: not recorded in the database yet (the server's next start records \
             it, if the key opens the stored secrets)."
        ),
    }
    let check = store.check_encryption_key()?;
    if check.total == 0 {
        out!("Encryption key: no authenticator secret is stored yet.");
        Ok(())
    } else if check.all_readable() {
        out!(
            "Encryption key: opens all {} stored authenticator secrets.",
            check.total
        );
        Ok(())
    } else if check.readable == 0 {
        Err(Failure::Usage(format!(
            "the encryption key opens none of the {} stored authenticator secrets: it is not \
             the key they were written with. Use that key (after a rotation, the new one), or \
             if it is lost, `mfa-server replace-lost-key`",
            check.total
        )))
    } else {
        let users: Vec<String> = check
            .unreadable_users
            .iter()
            .map(|u| u.to_string())
            .collect();
        Err(Failure::Runtime(format!(
            "the encryption key opens only {} of {} stored authenticator secrets (not those of \
             the users with ids {}): it is not the key they were written with. After a \
             rotation every server needs the new key; a secret written by a server that still \
             had the old one is re-encrypted by running `mfa-server rotate-key` again",
            check.readable,
            check.total,
            users.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::mask_url;

    #[test]
    fn passwords_in_urls_are_masked() {
        for (url, masked) in [
            (
                "postgres://mfa:hunter2@db:5432/mfa",
                "postgres://mfa:***@db:5432/mfa",
            ),
            (
                "postgres://mfa@db/mfa?password=hunter2&sslmode=disable",
                "postgres://mfa@db/mfa?password=***&sslmode=disable",
            ),
            (
                "smtp://user:p%40ss@mail.example.com:587",
                "smtp://user:***@mail.example.com:587",
            ),
            ("smtps://mail.example.com", "smtps://mail.example.com"),
            ("sqlite://./data/mfa.sqlite3", "sqlite://./data/mfa.sqlite3"),
            ("postgres://a:b@c@h/db", "postgres://a:***@h/db"),
            (
                "postgres://u@h/db?sslpassword=X&Password=Y",
                "postgres://u@h/db?sslpassword=***&Password=***",
            ),
            (
                "postgres://u@h/db?ssl%70assword=X&sslmode=disable",
                "postgres://u@h/db?ssl%70assword=***&sslmode=disable",
            ),
        ] {
            assert_eq!(mask_url(url), masked);
        }
    }
}

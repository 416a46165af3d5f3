//! `mfa-server migrate [--status]`.

use mfa_server::{Config, app};
use mfa_store::{DbStore, EncryptionKey, StoreOptions};

use super::{CliResult, Failure, init_tracing, out, sqlite_path};

/// Open the database without migrating it. Migrations never touch the
/// encrypted secrets, so a throw-away key will do: none is needed.
fn connect(config: &Config) -> Result<DbStore, Failure> {
    Ok(DbStore::connect(
        config.database_url.expose(),
        StoreOptions::new(EncryptionKey::generate()),
    )?)
}

/// Apply the pending migrations, or with `status` list them all.
pub fn migrate(config: &Config, status: bool) -> CliResult {
    init_tracing(config);
    if status {
        return print_status(config);
    }
    if sqlite_path(config).is_some() {
        app::create_private_dir(&config.data_dir).map_err(|e| {
            Failure::Runtime(format!(
                "cannot create the data directory {}: {e}",
                config.data_dir.display()
            ))
        })?;
    }
    let store = connect(config)?;
    let applied = store.run_migrations()?;
    if applied.is_empty() {
        out!(
            "The {} database is up to date: no migration was pending.",
            store.backend()
        );
    } else {
        out!(
            "Applied {} migrations to the {} database:",
            applied.len(),
            store.backend()
        );
        for name in applied {
            out!("  {name}");
        }
    }
    Ok(())
}

fn print_status(config: &Config) -> CliResult {
    if let Some(path) = sqlite_path(config)
        && !path.exists()
    {
        out!(
            "There is no SQLite database at {} yet: every migration is pending. \
             `mfa-server migrate` (or the server's first start) creates it.",
            path.display()
        );
        return Ok(());
    }
    let store = connect(config)?;
    let all = store.migration_status()?;
    let pending = all.iter().filter(|m| !m.applied).count();
    out!(
        "The {} database has {} of {} migrations applied.",
        store.backend(),
        all.len() - pending,
        all.len()
    );
    for m in &all {
        let state = if m.applied { "applied" } else { "pending" };
        out!("  {state:<8} {}", m.name);
    }
    let unknown = store.unknown_migrations()?;
    if !unknown.is_empty() {
        for version in &unknown {
            out!("  unknown  {version} (applied by a newer version)");
        }
        return Err(mfa_store::Error::NewerSchema(unknown).into());
    }
    if pending > 0 {
        out!(
            "{pending} pending: `mfa-server migrate` applies them (the server does at its start too)."
        );
    } else {
        let waiting = store.addresses_to_rewrite()?;
        if waiting > 0 {
            out!("{}", super::addresses_waiting(waiting));
        }
    }
    Ok(())
}

//! The operator commands of the binary: each one's success and its errors
//! for bad arguments (exit code 2) and failures at run time (exit code 1),
//! the break-glass path end to end against a running server, and a key
//! rotation the server survives.

use std::io::Write as _;
use std::path::Path;
use std::process::{Output, Stdio};

use mfa_core::{AuditAction, AuditFilter, Store as _};
use mfa_store::test_support::TestDatabase;
use mfa_store::{DbStore, EncryptionKey, StoreOptions};
use mfa_totp::Secret;
use serde_json::json;

use crate::helpers::PASSWORD;
use crate::multinode::{Node, command, fresh_code};

/// Run a command to its end with this stdin.
fn run(dir: &Path, env: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
    let mut child = command(dir, env, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait")
}

/// How many migrations the binary embeds (the folders at the top of the
/// repository).
fn migrations() -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/sqlite");
    std::fs::read_dir(dir).expect("migrations").count()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Assert the exit code; the output for the message.
#[track_caller]
fn expect_code(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
    format!("{}{}", stdout(out), stderr(out))
}

/// An SQLite deployment in a temporary directory: the default
/// configuration, run from that directory (data in `./data`).
struct Deployment {
    dir: tempfile::TempDir,
}

impl Deployment {
    fn new() -> Deployment {
        Deployment {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn env(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("MFA_BOOTSTRAP_ADMIN_EMAIL", "root@example.com"),
            ("MFA_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD),
            ("MFA_LOG", "warn"),
        ]
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, "")
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        run(self.path(), &self.env(), args, stdin)
    }

    /// `run` that must succeed; its stdout.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        expect_code(&out, 0);
        stdout(&out)
    }

    /// `serve`, which must exit by itself (within 60 s: killed then).
    fn serve_until_it_exits(&self) -> Output {
        let mut env = self.env();
        env.push(("MFA_BIND", "127.0.0.1:0"));
        let mut child = command(self.path(), &env, &["serve"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the binary");
        for _ in 0..600 {
            if child.try_wait().expect("the process").is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.kill();
        child.wait_with_output().expect("wait")
    }

    fn start(&self) -> Node {
        Node::spawn("server", self.path(), &self.env()).ready()
    }

    /// The store, opened as the server does (the key file).
    fn store(&self) -> DbStore {
        let key = std::fs::read_to_string(self.path().join("data/encryption.key")).unwrap();
        let url = format!(
            "sqlite://{}",
            self.path().join("data/mfa.sqlite3").display()
        );
        DbStore::open(
            &url,
            StoreOptions::new(EncryptionKey::from_base64(&key).unwrap()),
        )
        .unwrap()
    }
}

#[test]
fn every_command_has_help_and_bad_arguments_exit_2() {
    let d = Deployment::new();
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["check-config", "--help"],
        vec!["gen-key", "--help"],
        vec!["rotate-key", "--help"],
        vec!["replace-lost-key", "--help"],
        vec!["admin", "--help"],
        vec!["admin", "list-orgs", "--help"],
        vec!["admin", "create-org", "--help"],
        vec!["admin", "create-user", "--help"],
        vec!["admin", "add-member", "--help"],
        vec!["admin", "enforce-mfa", "--help"],
        vec!["admin", "reset-mfa", "--help"],
        vec!["admin", "opt-out", "--help"],
    ] {
        let out = d.run(&args);
        let text = expect_code(&out, 0);
        assert!(text.contains("Usage: mfa-server"), "{args:?}: {text}");
    }
    for (args, needle) in [
        (vec!["frobnicate"], "unrecognized subcommand"),
        (vec!["migrate", "--stauts"], "--stauts"),
        (vec!["check-config", "--conect"], "--conect"),
        (vec!["gen-key", "extra"], "unexpected argument"),
        (vec!["rotate-key"], "--new-key-file"),
        (
            vec!["rotate-key", "--new-key-file", "k", "--new-key-stdin"],
            "cannot be used with",
        ),
        (vec!["admin"], "Usage: mfa-server admin"),
        (vec!["admin", "create-org"], "--name"),
        (vec!["admin", "create-user"], "--email"),
        (
            vec!["admin", "create-user", "--email", "not-an-address"],
            "expected an email address",
        ),
        (
            vec![
                "admin",
                "create-user",
                "--email",
                "a@example.com",
                "--admin",
            ],
            "--org",
        ),
        (
            vec![
                "admin",
                "create-user",
                "--email",
                "a@example.com",
                "--password",
                "x",
            ],
            "unexpected argument '--password'",
        ),
        (vec!["admin", "add-member", "--org", "1"], "--email"),
        (
            vec![
                "admin",
                "add-member",
                "--org",
                "one",
                "--email",
                "a@example.com",
            ],
            "expected an org id",
        ),
        (vec!["admin", "enforce-mfa"], "--org"),
        (
            vec!["admin", "enforce-mfa", "--org", "0"],
            "expected an org id",
        ),
        (vec!["admin", "enforce-mfa", "--org", "-3"], "--org"),
        (vec!["admin", "reset-mfa"], "--email"),
        (
            vec!["admin", "reset-mfa", "--email", "@"],
            "expected an email address",
        ),
        (
            vec!["admin", "opt-out", "--email", "a@example.com"],
            "--org",
        ),
        (vec!["admin", "opt-out", "--org", "1"], "--email"),
    ] {
        let out = d.run(&args);
        let text = expect_code(&out, 2);
        assert!(text.contains(needle), "{args:?}: {text}");
    }
    // Nothing was created by a refused command.
    assert!(!d.path().join("data").exists());

    // A bad configuration is a usage error for every command.
    let out = run(
        d.path(),
        &[("MFA_SESSION_TTL_SECS", "soon")],
        &["admin", "list-orgs"],
        "",
    );
    let text = expect_code(&out, 2);
    assert!(text.contains("MFA_SESSION_TTL_SECS"), "{text}");
}

/// A stdout that cannot be written fails a command with a message and exit
/// code 1, not a panic; and the first start shows the generated password
/// before the superadmin is committed, so a password nobody saw is never
/// the only way in.
#[test]
fn an_unwritable_stdout_is_a_failure_not_a_panic() {
    let d = Deployment::new();
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full");
    let Ok(_) = full() else {
        eprintln!("skipped: no /dev/full");
        return;
    };
    let run_to_full = |env: &[(&str, &str)], args: &[&str]| {
        command(d.path(), env, args)
            .stdout(full().unwrap())
            .stderr(Stdio::piped())
            .output()
            .expect("run")
    };
    for args in [&["migrate", "--status"][..], &["--help"], &["--version"]] {
        let out = run_to_full(&d.env(), args);
        let text = expect_code(&out, 3);
        assert!(text.contains("cannot write to stdout"), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
    // A key nobody saw was made, not a change: 1, saying it is lost.
    let text = expect_code(&run_to_full(&d.env(), &["gen-key"]), 1);
    assert!(text.contains("no key was stored anywhere"), "{text}");

    let env = [("MFA_BIND", "127.0.0.1:0"), ("MFA_LOG", "warn")];
    let out = run_to_full(&env, &["serve"]);
    let text = expect_code(&out, 1);
    assert!(
        text.contains("could not be shown on stdout") && text.contains("no user was created"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    // Nothing was created: the next start bootstraps, and shows it.
    let out = run(d.path(), &env, &["admin", "list-orgs"], "");
    assert!(
        expect_code(&out, 0).contains("There is no org yet"),
        "{}",
        stdout(&out)
    );
    // A change made whose report could not be written: exit 3, not 1,
    // which a script would retry (making the org twice).
    let out = run_to_full(&env, &["admin", "create-org", "--name", "Made"]);
    assert!(expect_code(&out, 3).contains("was made"));
    let out = run(d.path(), &env, &["admin", "list-orgs"], "");
    assert!(expect_code(&out, 0).contains("Made"), "{}", stdout(&out));
}

/// A stdout that goes nowhere (`>/dev/null`, or closed with `>&-`, which
/// Rust's runtime turns into `/dev/null`) takes no generated secret: the
/// first start creates nothing, `gen-key` refuses. A report lost with
/// stderr on the same closed pipe still exits 3, not a panic's 101.
#[cfg(unix)]
#[test]
fn a_stdout_that_goes_nowhere_takes_no_secret() {
    let d = Deployment::new();
    let to_null = |env: &[(&str, &str)], args: &[&str]| {
        command(d.path(), env, args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run")
    };
    let text = expect_code(&to_null(&d.env(), &["gen-key"]), 2);
    assert!(text.contains("the key would be lost"), "{text}");

    let env = [("MFA_BIND", "127.0.0.1:0"), ("MFA_LOG", "warn")];
    let text = expect_code(&to_null(&env, &["serve"]), 1);
    assert!(text.contains("no user was created"), "{text}");
    let out = run(d.path(), &env, &["admin", "list-orgs"], "");
    assert!(expect_code(&out, 0).contains("There is no org yet"));

    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = command(d.path(), &env, &["admin", "create-org", "--name", "Piped"])
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .status()
        .expect("run");
    assert_eq!(out.code(), Some(3));
    let out = run(d.path(), &env, &["admin", "list-orgs"], "");
    assert!(expect_code(&out, 0).contains("Piped"));
}

/// A configuration file other users can read is named in a warning (it
/// may hold the key or passwords).
#[cfg(unix)]
#[test]
fn a_readable_configuration_file_is_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let d = Deployment::new();
    let file = d.path().join("mfa.toml");
    std::fs::write(&file, "issuer = \"Acme\"\n").unwrap();
    let path = file.display().to_string();
    for (mode, warned) in [(0o644, true), (0o600, false)] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let text = expect_code(&d.run(&["--config", &path, "check-config"]), 0);
        assert_eq!(
            text.contains("is readable by other users"),
            warned,
            "mode {mode:o}: {text}"
        );
    }
    // The key and database files, as the server's start warns of them.
    d.ok(&["migrate"]);
    d.ok(&["gen-key", "--out", "data/encryption.key"]);
    for name in ["encryption.key", "mfa.sqlite3"] {
        let file = d.path().join("data").join(name);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let text = d.ok(&["check-config"]);
    for what in ["encryption key file", "database file"] {
        assert!(
            text.contains(&format!("Warning: the {what} ")),
            "{what}: {text}"
        );
    }
}

/// A lost key: nothing starts with a new one (the database records its
/// key), until the operator replaces it on purpose, which removes the
/// stored authenticators, audits and mails it.
#[tokio::test]
async fn a_lost_key_is_replaced_on_purpose() {
    let d = Deployment::new();
    let server = d.start();
    let (root, _, _) = server.login("root@example.com").await;
    let (_, v) = server.enroll(&root).await;
    v.expect(204, None);
    drop(server);
    d.ok(&["admin", "enforce-mfa", "--org", "1"]);
    let key_file = d.path().join("data/encryption.key");
    std::fs::remove_file(&key_file).unwrap();
    let outbox = || {
        std::fs::read_dir(d.path().join("data/outbox"))
            .unwrap()
            .count()
    };
    let mails_before = outbox();

    let text = expect_code(&d.run(&["admin", "list-orgs"]), 2);
    assert!(text.contains("encryption.key is missing"), "{text}");
    assert!(text.contains("replace-lost-key"), "{text}");
    assert!(!key_file.exists(), "no key was made");

    // Without --yes: what it would do, and nothing done.
    let text = expect_code(&d.run(&["replace-lost-key"]), 2);
    assert!(
        text.contains("removes the 1 stored authenticators"),
        "{text}"
    );
    assert!(text.contains("run again with --yes"), "{text}");
    assert!(!key_file.exists(), "nothing was written");
    expect_code(&d.run(&["admin", "list-orgs"]), 2);

    let out = d.ok(&["replace-lost-key", "--yes"]);
    assert!(
        out.contains("1 authenticators removed (root@example.com)"),
        "{out}"
    );
    assert!(out.contains("Mailed all 1 of them."), "{out}");
    assert!(key_file.exists(), "the new key was written");
    let text = expect_code(&d.run(&["replace-lost-key", "--yes"]), 2);
    assert!(text.contains("it is not lost"), "{text}");
    assert_eq!(outbox(), mails_before + 1, "root was told");
    assert!(
        d.ok(&["check-config", "--connect"])
            .contains("no authenticator secret is stored yet")
    );

    // MFA still applies: root enrolls again, and finds why in the audit.
    let server = d.start();
    let (partial, mfa, _) = server.login("root@example.com").await;
    assert_eq!(mfa, "setup_required");
    let (_, v) = server.enroll(&partial).await;
    let full = v.ok()["token"].as_str().unwrap().to_string();
    let audit = server
        .call("GET", "/user/audit?action=mfa_reset", Some(&full), None)
        .await;
    let items = audit.ok()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(
        items[0]["detail"]
            .as_str()
            .unwrap()
            .contains("the encryption key was lost"),
        "{items:?}"
    );
}

/// The notices of a lost key's replacement are written with it: a mail
/// server that is down when the command runs loses none of them, they
/// wait in the database for the servers. (They were sent by the command
/// alone, and one that failed was only listed on stdout.)
#[tokio::test]
async fn a_lost_keys_notices_wait_for_the_mail_server() {
    use mfa_core::Store as _;
    let d = Deployment::new();
    let server = d.start();
    let (root, _, _) = server.login("root@example.com").await;
    server.enroll(&root).await.1.expect(204, None);
    drop(server);
    std::fs::remove_file(d.path().join("data/encryption.key")).unwrap();
    // A port nothing listens on: the mail server is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "smtp://127.0.0.1:{}?tls=none",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let mut env = d.env();
    env.push(("MFA_SMTP_URL", &url));
    let out = run(d.path(), &env, &["replace-lost-key", "--yes"], "");
    let text = expect_code(&out, 0);
    assert!(
        text.contains("Mailed 0 of them; a send failed")
            && text.contains("The other 1 stay queued in the database"),
        "{text}"
    );
    // The newest notice waiting (the enrollment's may wait too: the node
    // was stopped at once).
    let newest = d
        .store()
        .write(|tx| {
            let far = mfa_core::Timestamp(i64::MAX / 2);
            Ok(tx.claim_notice(far, far, mfa_core::ports::NoticeOrder::Newest)?)
        })
        .expect("the notices")
        .expect("one is waiting");
    assert_eq!(newest.to, "root@example.com");
    assert!(newest.payload.contains("factor_reset"), "{newest:?}");
}

/// A misspelt variable is named, not silently a default.
#[test]
fn an_unknown_variable_is_warned_about() {
    let d = Deployment::new();
    let mut env = d.env();
    env.push(("MFA_ENCRYPTON_KEY", "typo"));
    let out = run(d.path(), &env, &["check-config"], "");
    let text = expect_code(&out, 0);
    assert!(
        text.contains("warning: MFA_ENCRYPTON_KEY is set, but no setting reads it"),
        "{text}"
    );
    assert!(!text.contains("MFA_ENCRYPTION_KEY is set"), "{text}");
}

#[test]
fn gen_key_prints_a_fresh_key_or_writes_a_private_file() {
    let d = Deployment::new();
    let first = d.ok(&["gen-key"]);
    let second = d.ok(&["gen-key"]);
    assert_ne!(first, second);
    for key in [&first, &second] {
        assert_eq!(key.trim().len(), 44, "{key}");
        EncryptionKey::from_base64(key).expect("a valid key");
    }

    let out = d.ok(&["gen-key", "--out", "new.key"]);
    assert!(out.contains("mode 0600"), "{out}");
    let file = d.path().join("new.key");
    let written = std::fs::read_to_string(&file).unwrap();
    EncryptionKey::from_base64(&written).expect("a valid key");
    assert!(
        !out.contains(written.trim()),
        "the key is not printed: {out}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = d.run(&["gen-key", "--out", "new.key"]);
    let text = expect_code(&again, 1);
    assert!(text.contains("exists already"), "{text}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
}

#[test]
fn migrate_applies_and_reports_status() {
    let d = Deployment::new();
    let out = d.ok(&["migrate", "--status"]);
    assert!(out.contains("no SQLite database"), "{out}");
    assert!(
        !d.path().join("data/mfa.sqlite3").exists(),
        "--status changes nothing"
    );

    let out = d.ok(&["migrate"]);
    let n = migrations();
    assert!(
        out.contains(&format!("Applied {n} migrations to the sqlite database")),
        "{out}"
    );
    assert!(out.contains("_orgs_users_memberships"), "{out}");
    assert!(d.ok(&["migrate"]).contains("up to date"));
    let out = d.ok(&["migrate", "--status"]);
    assert!(
        out.contains(&format!("{n} of {n} migrations applied")),
        "{out}"
    );
    assert_eq!(out.matches("  applied  ").count(), n, "{out}");
    assert!(
        !d.path().join("data/encryption.key").exists(),
        "no key needed"
    );

    // An unreachable database is a failure at run time, and its password
    // is not repeated.
    let out = run(
        d.path(),
        &[("MFA_DATABASE_URL", "postgres://mfa:hunter2@127.0.0.1:1/mfa")],
        &["migrate", "--status"],
        "",
    );
    let text = expect_code(&out, 1);
    assert!(text.contains("database"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

/// A database a newer version migrated: this version says so and changes
/// nothing, from every command and the server's start. Before (an audit),
/// the migration it did not know went unreported and the server served.
#[test]
fn a_database_migrated_by_a_newer_version_is_refused() {
    use diesel::prelude::*;
    let d = Deployment::new();
    d.ok(&["migrate"]);
    let url = d.path().join("data/mfa.sqlite3");
    let mut conn = SqliteConnection::establish(url.to_str().unwrap()).unwrap();
    diesel::sql_query("INSERT INTO __diesel_schema_migrations (version) VALUES ('20991231000001')")
        .execute(&mut conn)
        .unwrap();
    drop(conn);

    let newer =
        "the database was migrated by a newer version (20991231000001, unknown to this one)";
    let out = d.run(&["migrate", "--status"]);
    let text = expect_code(&out, 1);
    assert!(
        text.contains("  unknown  20991231000001 (applied by a newer version)"),
        "{text}"
    );
    assert!(text.contains(newer), "{text}");
    let mut env = d.env();
    env.push(("MFA_BIND", "127.0.0.1:0"));
    for args in [
        &["migrate"][..],
        &["check-config", "--connect"],
        &["admin", "list-orgs"],
        &["serve"],
    ] {
        let out = run(d.path(), &env, args, "");
        assert!(expect_code(&out, 1).contains(newer), "{args:?}");
    }
}

#[test]
fn migrate_on_postgresql_needs_no_key() {
    let Some(db) = TestDatabase::postgres() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = [("MFA_DATABASE_URL", db.url()), ("MFA_LOG", "warn")];
    let out = run(dir.path(), &env, &["migrate", "--status"], "");
    let text = expect_code(&out, 0);
    let n = migrations();
    assert!(
        text.contains(&format!("0 of {n} migrations applied")),
        "{text}"
    );
    assert_eq!(text.matches("  pending  ").count(), n, "{text}");
    let out = run(dir.path(), &env, &["migrate"], "");
    assert!(
        expect_code(&out, 0).contains(&format!("Applied {n} migrations to the postgres database"))
    );
    let out = run(dir.path(), &env, &["migrate", "--status"], "");
    assert!(expect_code(&out, 0).contains(&format!("{n} of {n} migrations applied")));
    // The other commands need the shared key.
    let out = run(dir.path(), &env, &["admin", "list-orgs"], "");
    let text = expect_code(&out, 2);
    assert!(text.contains("MFA_ENCRYPTION_KEY is required"), "{text}");
    let out = run(dir.path(), &env, &["check-config"], "");
    let text = expect_code(&out, 2);
    assert!(text.contains("REQUIRED with PostgreSQL"), "{text}");
    // With it they work, and leave the directory they run in alone (a
    // read-only one in a container): no data directory, no outbox.
    let key = EncryptionKey::generate().to_base64();
    let env = [
        ("MFA_DATABASE_URL", db.url()),
        ("MFA_ENCRYPTION_KEY", key.as_str()),
        ("MFA_LOG", "warn"),
    ];
    let out = run(
        dir.path(),
        &env,
        &["admin", "create-org", "--name", "Acme"],
        "",
    );
    expect_code(&out, 0);
    let out = run(dir.path(), &env, &["admin", "list-orgs"], "");
    assert!(expect_code(&out, 0).contains("Acme"));
    assert!(
        !dir.path().join("data").exists(),
        "a data directory was made"
    );
}

#[test]
fn check_config_masks_secrets() {
    let d = Deployment::new();
    let key = EncryptionKey::generate().to_base64();
    let env = [
        ("MFA_DATABASE_URL", "postgres://mfa:hunter2@127.0.0.1:1/mfa"),
        ("MFA_ENCRYPTION_KEY", key.as_str()),
        ("MFA_BOOTSTRAP_ADMIN_PASSWORD", "correct horse battery"),
        (
            "MFA_SMTP_URL",
            "smtp://mailer:pw-smtp@127.0.0.1:2525?tls=none",
        ),
        ("MFA_ISSUER", "Acme"),
        ("MFA_SESSION_TTL_SECS", "600"),
        ("MFA_PASSWORD_HASH", "t=2, m=19456, p=1"),
    ];
    let out = run(d.path(), &env, &["check-config"], "");
    let text = expect_code(&out, 0);
    for secret in ["hunter2", key.as_str(), "horse", "pw-smtp"] {
        assert!(!text.contains(secret), "{secret} printed: {text}");
    }
    for shown in [
        "postgres://mfa:***@127.0.0.1:1/mfa (PostgreSQL)",
        "smtp://mailer:***@127.0.0.1:2525?tls=none",
        "*** (set; fingerprint ",
        "MFA_ISSUER                       Acme",
        "MFA_SESSION_TTL_SECS             600",
        "MFA_PASSWORD_HASH                m=19456,t=2,p=1",
        "The configuration is valid.",
        // Mail over SMTP from the default sender.
        "Warning: the sender of mail (MFA_MAIL_FROM) is not an address of an internet domain",
    ] {
        assert!(text.contains(shown), "{shown:?} not in {text}");
    }
    let mut own_sender = env.to_vec();
    own_sender.push(("MFA_MAIL_FROM", "Acme MFA <mfa@acme.example>"));
    let text = stdout(&run(d.path(), &own_sender, &["check-config"], ""));
    assert!(!text.contains("MFA_MAIL_FROM) is not"), "{text}");
    assert!(!text.contains("MFA_SMTP_URL is unset"), "{text}");
    // Production mail to the outbox: users get none, and its files hold
    // live codes. A sandbox may.
    let outbox: Vec<_> = env
        .iter()
        .copied()
        .filter(|(k, _)| *k != "MFA_SMTP_URL")
        .collect();
    let text = stdout(&run(d.path(), &outbox, &["check-config"], ""));
    assert!(
        text.contains("Warning: MFA_SMTP_URL is unset: mail is written to the outbox directory"),
        "{text}"
    );
    let mut sandbox = outbox.clone();
    sandbox.push(("MFA_ENVIRONMENT", "sandbox"));
    let text = stdout(&run(d.path(), &sandbox, &["check-config"], ""));
    assert!(!text.contains("MFA_SMTP_URL is unset"), "{text}");
    assert!(!text.contains("MFA_BOOTSTRAP_ADMIN_PASSWORD:"), "{text}");
    // A bootstrap password a first start would refuse is said before it.
    let mut weak = sandbox.clone();
    weak.retain(|(k, _)| *k != "MFA_BOOTSTRAP_ADMIN_PASSWORD");
    weak.push(("MFA_BOOTSTRAP_ADMIN_PASSWORD", "password1234"));
    let text = stdout(&run(d.path(), &weak, &["check-config"], ""));
    assert!(
        text.contains("Warning: MFA_BOOTSTRAP_ADMIN_PASSWORD: password is too easy to guess")
            && !text.contains("password1234"),
        "{text}"
    );
    // Every variable is listed.
    for var in crate::multinode::VARS {
        assert!(text.contains(var), "{var} not in {text}");
    }
    // The fingerprint is the same wherever the key is.
    let fingerprint = |text: &str| {
        text.split("fingerprint ")
            .nth(1)
            .map(|rest| rest.chars().take(16).collect::<String>())
            .unwrap()
    };
    let again = run(d.path(), &env, &["check-config"], "");
    assert_eq!(fingerprint(&stdout(&again)), fingerprint(&text));

    // --connect reports an unreachable database as a failure.
    let out = run(d.path(), &env, &["check-config", "--connect"], "");
    let text = expect_code(&out, 1);
    assert!(!text.contains("hunter2"), "{text}");

    // A bad value names its variable, exit code 2.
    let out = run(
        d.path(),
        &[("MFA_ENVIRONMENT", "staging")],
        &["check-config"],
        "",
    );
    let text = expect_code(&out, 2);
    assert!(text.contains("MFA_ENVIRONMENT"), "{text}");

    // The default SQLite deployment before and after its first start.
    let out = d.ok(&["check-config", "--connect"]);
    assert!(
        out.contains("generated into ./data/encryption.key"),
        "{out}"
    );
    assert!(out.contains("no SQLite file"), "{out}");
    drop(d.start());
    let out = d.ok(&["check-config", "--connect"]);
    assert!(
        out.contains("the key file ./data/encryption.key; fingerprint"),
        "{out}"
    );
    let n = migrations();
    assert!(
        out.contains(&format!("{n} of {n} migrations applied")),
        "{out}"
    );
    assert!(
        out.contains("no authenticator secret is stored yet"),
        "{out}"
    );
}

/// An address stored by a version before domains were kept in ASCII:
/// `migrate --status` counts it, the `admin` commands wait for the rewrite
/// (they would not find its user by the address they are given), and
/// `migrate` does it.
#[test]
fn addresses_stored_before_wait_for_migrate() {
    let d = Deployment::new();
    d.ok(&["migrate"]);
    let url = format!("sqlite://{}", d.path().join("data/mfa.sqlite3").display());
    let store = DbStore::connect(&url, StoreOptions::new(EncryptionKey::generate()))
        .expect("open the file");
    store
        .write(|tx| {
            tx.insert_user(&mfa_core::NewUser {
                email: "zoë@bücher.example".into(),
                first_name: "Zoë".into(),
                last_name: "Old".into(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                is_super_admin: false,
                created_at: mfa_core::Timestamp(1),
            })?;
            Ok(())
        })
        .expect("a user as the previous version stored it");
    drop(store);
    let status = d.ok(&["migrate", "--status"]);
    assert!(
        status.contains("1 stored email addresses (or new addresses of pending changes) wait"),
        "{status}"
    );
    let out = d.run(&["admin", "list-orgs"]);
    assert!(expect_code(&out, 1).contains("This command does not rewrite them."));
    d.ok(&["migrate"]);
    assert!(
        !d.ok(&["migrate", "--status"])
            .contains("wait to be written")
    );
    d.ok(&["admin", "list-orgs"]);
}

/// `MFA_MAIL_TEMPLATES_DIR` replaces the built-in mails it names, and a
/// template that does not parse stops the start as a bad value does.
#[test]
fn mail_templates_of_the_operator() {
    let d = Deployment::new();
    d.ok(&["migrate"]);
    let templates = d.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(
        templates.join("sign_in_changed.subject.txt"),
        "{{issuer}}: Anmeldung geändert",
    )
    .unwrap();
    let dir = templates.display().to_string();
    let env = [
        ("MFA_MAIL_TEMPLATES_DIR", dir.as_str()),
        ("MFA_LOG", "warn"),
    ];
    d.ok(&["admin", "create-org", "--name", "Org"]);
    let out = run(
        d.path(),
        &env,
        &[
            "admin",
            "create-user",
            "--email",
            "kim@example.com",
            "--org",
            "1",
            "--password-stdin",
        ],
        PASSWORD,
    );
    expect_code(&out, 0);
    let out = run(
        d.path(),
        &env,
        &[
            "admin",
            "opt-out",
            "--org",
            "1",
            "--email",
            "kim@example.com",
        ],
        "",
    );
    expect_code(&out, 0);
    let mail = std::fs::read_dir(d.path().join("data/outbox"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .next()
        .expect("the opt-out's notice");
    // "geändert", encoded.
    assert!(
        mail.contains("Subject: MFA Server: Anmeldung =?utf-8?"),
        "{mail}"
    );

    std::fs::write(templates.join("login_code.txt"), "no code here {{nope}}").unwrap();
    let out = command(
        d.path(),
        &[
            ("MFA_MAIL_TEMPLATES_DIR", dir.as_str()),
            ("MFA_BIND", "127.0.0.1:0"),
        ],
        &["serve"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .output()
    .expect("run");
    let text = expect_code(&out, 2);
    assert!(
        text.contains("MFA_MAIL_TEMPLATES_DIR: mail template")
            && text.contains("login_code.txt: unknown placeholder {{nope}}"),
        "{text}"
    );
    // Every command refuses it before changing anything (a command whose
    // mail is made at its first message made its change and lost the
    // notice), check-config first.
    for args in [
        &["check-config"][..],
        &[
            "admin",
            "opt-out",
            "--org",
            "1",
            "--email",
            "kim@example.com",
            "--off",
        ],
    ] {
        let out = run(d.path(), &env, args, "");
        let text = expect_code(&out, 2);
        assert!(text.contains("MFA_MAIL_TEMPLATES_DIR"), "{args:?}: {text}");
    }
    // What is no template: too large, or no regular file (a FIFO would
    // block the start for good, /dev/zero fill the memory).
    std::fs::remove_file(templates.join("login_code.txt")).unwrap();
    std::fs::write(templates.join("login_code.html"), "x".repeat(300 * 1024)).unwrap();
    let text = expect_code(&run(d.path(), &env, &["check-config"], ""), 2);
    assert!(
        text.contains("more than the 262144 a template may have"),
        "{text}"
    );
    std::fs::remove_file(templates.join("login_code.html")).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/dev/zero", templates.join("login_code.txt")).unwrap();
        let text = expect_code(&run(d.path(), &env, &["check-config"], ""), 2);
        assert!(text.contains("not a regular file"), "{text}");
        std::fs::remove_file(templates.join("login_code.txt")).unwrap();
    }
    std::fs::write(
        templates.join("login_code.subject.txt"),
        "Code\nBcc: x@example.net",
    )
    .unwrap();
    let text = expect_code(&run(d.path(), &env, &["check-config"], ""), 2);
    assert!(text.contains("a subject is one line"), "{text}");
}

/// An empty key file (a start killed while an earlier version wrote it in
/// place) is named as such, with what to do; the key file is written
/// whole now, under a temporary name first, which is not left behind.
#[test]
fn an_empty_key_file_says_what_happened() {
    let d = Deployment::new();
    d.ok(&["migrate"]);
    d.ok(&["gen-key", "--out", "data/encryption.key"]);
    let entries: Vec<_> = std::fs::read_dir(d.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!entries.iter().any(|n| n.ends_with(".tmp")), "{entries:?}");
    std::fs::write(d.path().join("data/encryption.key"), "").unwrap();
    // A wrong value, as a malformed MFA_ENCRYPTION_KEY is: exit 2.
    let out = d.run(&["admin", "list-orgs"]);
    let text = expect_code(&out, 2);
    assert!(
        text.contains("(it is empty: a version before this one was stopped while making it"),
        "{text}"
    );
}

/// A superadmin of no org cannot log in (a login is to an org): the
/// command says so, and how to add them to one.
#[test]
fn a_superadmin_of_no_org_is_told_to_join_one() {
    let d = Deployment::new();
    d.ok(&["migrate"]);
    let out = d.run_with_stdin(
        &[
            "admin",
            "create-user",
            "--email",
            "ops@example.com",
            "--superadmin",
            "--password-stdin",
        ],
        PASSWORD,
    );
    let text = expect_code(&out, 0);
    assert!(
        text.contains("a superadmin, but a member of no org yet")
            && text.contains("admin add-member --org ORG_ID --email ops@example.com"),
        "{text}"
    );
}

#[test]
fn admin_commands_act_and_audit() {
    let d = Deployment::new();
    // They never change the schema (an audit found even `list-orgs`
    // applying every pending migration): `migrate` does, on purpose.
    // Run where there is no deployment (the wrong directory): refused, and
    // nothing made there (it made an empty database and a key before).
    for args in [
        &["admin", "list-orgs"][..],
        &["admin", "reset-mfa", "--email", "root@example.com"],
        &["replace-lost-key", "--yes"],
        &["rotate-key", "--new-key-stdin"],
    ] {
        let out = d.run(args);
        assert!(
            expect_code(&out, 2).contains("there is no database at ./data/mfa.sqlite3"),
            "{args:?}: {out:?}"
        );
        assert!(!d.path().join("data").exists(), "{args:?} made ./data");
    }
    // An empty file is a database with every migration pending, refused
    // with nothing made beside it (a key file and diesel's table were).
    std::fs::create_dir(d.path().join("data")).unwrap();
    std::fs::write(d.path().join("data/mfa.sqlite3"), "").unwrap();
    let out = d.run(&["admin", "list-orgs"]);
    assert!(
        expect_code(&out, 1).contains(
            "the database at ./data/mfa.sqlite3 is empty, every migration pending: \
             `mfa-server migrate` applies them"
        ),
        "{out:?}"
    );
    let made: Vec<_> = std::fs::read_dir(d.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(made, ["mfa.sqlite3"]);
    assert_eq!(
        std::fs::metadata(d.path().join("data/mfa.sqlite3"))
            .unwrap()
            .len(),
        0
    );
    d.ok(&["migrate"]);
    assert!(
        d.ok(&["admin", "list-orgs"])
            .contains("There is no org yet")
    );
    let out = d.ok(&["admin", "create-org", "--name", "Acme"]);
    assert_eq!(out.trim(), "Created org 1 \"Acme\".");
    let out = d.run(&["admin", "create-org", "--name", "  "]);
    assert!(expect_code(&out, 2).contains("name must have"));

    // create-user: the password from stdin only.
    let out = d.run_with_stdin(
        &[
            "admin",
            "create-user",
            "--email",
            "Ada@Example.com",
            "--first-name",
            "Ada",
            "--org",
            "1",
            "--admin",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    let text = expect_code(&out, 0);
    assert!(
        text.contains("Created user 1 ada@example.com, an admin of org 1 \"Acme\"."),
        "{text}"
    );
    let out = d.run(&["admin", "create-user", "--email", "bob@example.com"]);
    let text = expect_code(&out, 2);
    assert!(text.contains("--password-stdin"), "{text}");
    let out = d.run_with_stdin(
        &[
            "admin",
            "create-user",
            "--email",
            "bob@example.com",
            "--password-stdin",
        ],
        "short\n",
    );
    assert!(expect_code(&out, 2).contains("at least"));
    let out = d.run_with_stdin(
        &[
            "admin",
            "create-user",
            "--email",
            "bob@example.com",
            "--password-stdin",
        ],
        "",
    );
    assert!(expect_code(&out, 2).contains("no password on stdin"));
    let out = d.run_with_stdin(
        &[
            "admin",
            "create-user",
            "--email",
            "bob@example.com",
            "--org",
            "42",
            "--password-stdin",
        ],
        PASSWORD,
    );
    assert!(expect_code(&out, 1).contains("there is no org with id 42"));
    let out = d.run_with_stdin(
        &[
            "admin",
            "create-user",
            "--email",
            "bob@example.com",
            "--password-stdin",
        ],
        PASSWORD,
    );
    assert!(expect_code(&out, 0).contains("a member of no org yet"));
    let out = d.run_with_stdin(
        &[
            "admin",
            "create-user",
            "--email",
            "BOB@example.com",
            "--password-stdin",
        ],
        PASSWORD,
    );
    assert!(expect_code(&out, 1).contains("already exists"));

    // add-member, then promote.
    let out = d.ok(&[
        "admin",
        "add-member",
        "--org",
        "1",
        "--email",
        "bob@example.com",
    ]);
    assert!(out.contains("is now an active member of org 1"), "{out}");
    let out = d.ok(&[
        "admin",
        "add-member",
        "--org",
        "1",
        "--email",
        "bob@example.com",
        "--admin",
    ]);
    assert!(out.contains("now an active admin"), "{out}");
    let out = d.run(&[
        "admin",
        "add-member",
        "--org",
        "1",
        "--email",
        "eve@example.com",
    ]);
    assert!(expect_code(&out, 1).contains("no user with the email eve@example.com"));

    // enforce-mfa, on and off.
    assert!(
        d.ok(&["admin", "enforce-mfa", "--org", "1"])
            .contains("is now enforced")
    );
    assert!(
        d.ok(&["admin", "enforce-mfa", "--org", "1"])
            .contains("already enforced")
    );
    let out = d.run(&["admin", "enforce-mfa", "--org", "7"]);
    assert!(expect_code(&out, 1).contains("no org with id 7"));
    let listed = d.ok(&["admin", "list-orgs"]);
    assert!(listed.contains("enforced      Acme"), "{listed}");

    // opt-out and back.
    let out = d.ok(&[
        "admin",
        "opt-out",
        "--org",
        "1",
        "--email",
        "bob@example.com",
    ]);
    assert!(out.contains("now opted out"), "{out}");
    let out = d.ok(&[
        "admin",
        "opt-out",
        "--org",
        "1",
        "--email",
        "bob@example.com",
        "--off",
    ]);
    assert!(out.contains("no longer opted out"), "{out}");
    d.ok(&["admin", "create-org", "--name", "Other"]);
    let out = d.run(&[
        "admin",
        "opt-out",
        "--org",
        "2",
        "--email",
        "bob@example.com",
    ]);
    assert!(expect_code(&out, 1).contains("not a member of org 2"));

    // reset-mfa.
    let out = d.ok(&["admin", "reset-mfa", "--email", "bob@example.com"]);
    assert!(out.contains("Reset the MFA of bob@example.com"), "{out}");
    let out = d.run(&["admin", "reset-mfa", "--email", "eve@example.com"]);
    assert!(expect_code(&out, 1).contains("no user with the email"));
    assert!(
        d.ok(&["admin", "enforce-mfa", "--org", "1", "--off"])
            .contains("no longer enforced")
    );

    // Every change is audited as the operator's, like its HTTP twin.
    let store = d.store();
    let events = store
        .read(|tx| Ok(tx.audit_events(&AuditFilter::default(), 0, 100)?.0))
        .unwrap();
    let mut actions: Vec<AuditAction> = events.iter().map(|e| e.action).collect();
    actions.reverse();
    assert_eq!(
        actions,
        vec![
            AuditAction::OrgCreated,
            AuditAction::UserCreated,
            AuditAction::MembershipCreated,
            AuditAction::UserCreated,
            AuditAction::MembershipCreated,
            AuditAction::MembershipUpdated,
            AuditAction::MfaEnforced,
            AuditAction::MfaOptOut,
            AuditAction::MfaOptOutRemoved,
            AuditAction::OrgCreated,
            AuditAction::MfaReset,
            AuditAction::MfaUnenforced,
        ]
    );
    for e in &events {
        assert_eq!(e.actor_user_id, None, "{e:?}");
        assert!(e.detail.ends_with("by the operator"), "{e:?}");
    }
    // Bob had no factor: the reset mailed no notice (one naming methods
    // he never had was a false alarm). The one message is the opt-out's,
    // by the operator.
    let mails: Vec<String> = std::fs::read_dir(d.path().join("data/outbox"))
        .expect("the opt-out's notice made the outbox")
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let flat = mails[0].replace("=\r\n", "").replace("\r\n", " ");
    assert!(
        flat.contains("you were opted out of multi-factor") && flat.contains("the operator"),
        "{flat}"
    );
}

/// The last admin lost their phone: the operator resets their MFA from the
/// command line while the server runs, and their next login asks for
/// setup again.
#[tokio::test]
async fn break_glass_reset_then_setup_required() {
    let d = Deployment::new();
    let server = d.start();
    let (root, mfa, body) = server.login("root@example.com").await;
    assert_eq!(mfa, "none");
    let org = body["orgId"].as_i64().unwrap();
    server
        .call(
            "PUT",
            "/user/org/mfa",
            Some(&root),
            Some(json!({"isMfaEnforced": true})),
        )
        .await
        .expect(204, None);

    // The only admin enrolls an authenticator...
    let (partial, mfa, _) = server.login("root@example.com").await;
    assert_eq!(mfa, "setup_required");
    let (_, v) = server.enroll(&partial).await;
    let full = v.ok()["token"].as_str().unwrap().to_string();
    let (_, mfa, _) = server.login("root@example.com").await;
    assert_eq!(mfa, "challenge_required");

    // ...and loses the phone. The operator steps in.
    let out = d.ok(&["admin", "reset-mfa", "--email", "root@example.com"]);
    assert!(out.contains("removed the authenticator"), "{out}");
    server
        .call("GET", "/user/users/me", Some(&full), None)
        .await
        .expect(401, Some("unauthorized"));
    let (partial, mfa, _) = server.login("root@example.com").await;
    assert_eq!(mfa, "setup_required", "setup again, not a challenge");

    // They enroll a new phone and find the operator's reset in the audit.
    let (_, v) = server.enroll(&partial).await;
    let full = v.ok()["token"].as_str().unwrap().to_string();
    let audit = server
        .call("GET", "/user/audit?action=mfa_reset", Some(&full), None)
        .await;
    let items = &audit.ok()["items"];
    assert_eq!(items.as_array().map(Vec::len), Some(1), "{audit:?}");
    assert_eq!(items[0]["actorUserId"], serde_json::Value::Null);
    assert_eq!(items[0]["orgId"], org);
    assert!(
        items[0]["detail"].as_str().unwrap().contains("operator"),
        "{audit:?}"
    );
}

/// `rotate-key`: the stored secret is re-encrypted, the old key no longer
/// opens it, and the server with the new key verifies the user's codes.
#[tokio::test]
async fn rotate_key_then_the_server_still_verifies() {
    let d = Deployment::new();
    let server = d.start();
    let (root, _, _) = server.login("root@example.com").await;
    let t = server
        .call(
            "POST",
            "/user/users/mfa/generateTempSecret",
            Some(&root),
            None,
        )
        .await;
    let secret = Secret::from_base32(t.ok()["secret"].as_str().unwrap()).unwrap();
    let (code, step) = fresh_code(&secret, None);
    server
        .call(
            "POST",
            "/user/users/mfa/validateCode",
            Some(&root),
            Some(json!({"code": code})),
        )
        .await
        .expect(204, None);
    drop(server);
    // MFA applies to root from now on.
    d.ok(&["admin", "enforce-mfa", "--org", "1"]);

    let key_file = d.path().join("data/encryption.key");
    let old_key = std::fs::read_to_string(&key_file).unwrap();
    // Bad arguments first: nothing changes.
    for (args, stdin, needle) in [
        (
            vec!["rotate-key", "--new-key-file", "missing.key"],
            "",
            "missing.key",
        ),
        (
            vec!["rotate-key", "--new-key-stdin"],
            "not a key\n",
            "not valid base64",
        ),
        (
            vec!["rotate-key", "--new-key-stdin"],
            "",
            "no new key on stdin",
        ),
        (
            vec!["rotate-key", "--new-key-stdin"],
            old_key.as_str(),
            "the new key is the key in use",
        ),
    ] {
        let out = d.run_with_stdin(&args, stdin);
        let text = expect_code(&out, 2);
        assert!(text.contains(needle), "{args:?}: {text}");
    }
    assert!(
        d.ok(&["check-config", "--connect"])
            .contains("opens all 1 stored")
    );

    d.ok(&["gen-key", "--out", "new.key"]);
    let out = d.ok(&["rotate-key", "--new-key-file", "new.key"]);
    assert!(
        out.contains("1 secrets re-encrypted with the new key, 0 were under it already"),
        "{out}"
    );
    assert!(out.contains("password failure counters forgotten"), "{out}");
    assert!(out.contains("replace ./data/encryption.key"), "{out}");
    // The old key in the key file is no longer the database's.
    let out = d.run(&["check-config", "--connect"]);
    let text = expect_code(&out, 2);
    assert!(text.contains("is not the database's"), "{text}");
    // Nothing starts with it (a server missed by a rotation answered
    // every code with 500 while /readyz said 200).
    let text = expect_code(&d.run(&["admin", "list-orgs"]), 2);
    assert!(text.contains("is not the database's"), "{text}");
    let text = expect_code(&d.serve_until_it_exits(), 2);
    assert!(text.contains("is not the database's"), "{text}");

    // A database restored without its key file: no new key is made
    // (it would open nothing, and secrets enrolled meanwhile would be
    // written under it), and the check that ends a restore fails.
    std::fs::rename(&key_file, d.path().join("key.bak")).unwrap();
    let text = expect_code(&d.run(&["admin", "list-orgs"]), 2);
    assert!(text.contains("encryption.key is missing"), "{text}");
    let text = expect_code(&d.serve_until_it_exits(), 2);
    assert!(text.contains("encryption.key is missing"), "{text}");
    assert!(!key_file.exists(), "no key file was left behind");
    let text = expect_code(&d.run(&["check-config", "--connect"]), 2);
    assert!(text.contains("was written with one (fingerprint"), "{text}");
    std::fs::rename(d.path().join("key.bak"), &key_file).unwrap();

    std::fs::rename(d.path().join("new.key"), &key_file).unwrap();
    assert!(
        d.ok(&["check-config", "--connect"])
            .contains("opens all 1 stored")
    );
    let server = d.start();
    let (partial, mfa, _) = server.login("root@example.com").await;
    assert_eq!(mfa, "challenge_required");
    let (code, _) = fresh_code(&secret, Some(step));
    server
        .call(
            "POST",
            "/user/auth/mfa/verify",
            Some(&partial),
            Some(json!({"method": "AUTHENTICATOR", "code": code})),
        )
        .await
        .expect(200, None);
}

/// Ctrl-C at the password prompt ends the command and gives the terminal
/// its echo back (the shell's terminal stayed silent before), on a real
/// pseudo-terminal.
#[cfg(unix)]
#[test]
fn an_interrupted_password_prompt_gives_the_echo_back() {
    use rustix::process::{Pid, Signal, kill_process};
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    use rustix::termios::{LocalModes, tcgetattr};
    use std::io::Read as _;

    let d = Deployment::new();
    d.ok(&["migrate"]);
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("a pseudo-terminal");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .expect("open the terminal");
    let echoes = || {
        tcgetattr(&terminal)
            .expect("tcgetattr")
            .local_modes
            .contains(LocalModes::ECHO)
    };
    assert!(echoes(), "a new terminal echoes");

    let mut child = command(
        d.path(),
        &d.env(),
        &["admin", "create-user", "--email", "eve@example.com"],
    )
    .stdin(Stdio::from(terminal.try_clone().unwrap()))
    .stderr(Stdio::from(terminal.try_clone().unwrap()))
    .stdout(Stdio::piped())
    .spawn()
    .expect("start the binary");
    // What the command writes to the terminal, read on the other side.
    let (seen_tx, seen) = std::sync::mpsc::channel();
    let mut reader = std::fs::File::from(master);
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || seen_tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !text.contains("Password for eve@example.com: ") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let chunk = seen.recv_timeout(left).expect("the prompt within 30 s");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // The prompt is written before echo goes off: wait for that too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while echoes() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!echoes(), "no echo while the password is typed");

    kill_process(Pid::from_child(&child), Signal::INT).expect("SIGINT");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(echoes(), "the echo is back after Ctrl-C");
    let out = d.run(&["admin", "list-orgs"]);
    expect_code(&out, 0);
}

/// A database file in a directory that does not exist: the start names
/// the file, and leaves no key file behind for it.
#[test]
fn a_missing_database_directory_is_named() {
    let d = Deployment::new();
    let mut env = d.env();
    env.push(("MFA_DATABASE_URL", "sqlite://./no/such/dir/mfa.db"));
    env.push(("MFA_BIND", "127.0.0.1:0"));
    let out = run(d.path(), &env, &["serve"], "");
    let text = expect_code(&out, 1);
    assert!(text.contains("./no/such/dir/mfa.db"), "{text}");
    assert!(
        !d.path().join("data/encryption.key").exists(),
        "a key file was left for a database that could not be opened"
    );
}

/// An admin command whose notice the mail server refuses for now says so
/// on stderr, exits 0 (the change is made), and leaves the notice queued
/// for a server to send. (An audit saw a command exit 0 in silence.)
#[test]
fn an_admin_command_says_when_its_notice_waits() {
    let d = Deployment::new();
    let smtp = mfa_email::test_support::SmtpSink::start_failing().expect("SMTP sink");
    let url = smtp.url();
    let mut env = d.env();
    env.push(("MFA_SMTP_URL", url.as_str()));
    let run_env = |args: &[&str], stdin: &str| run(d.path(), &env, args, stdin);
    expect_code(&run_env(&["migrate"], ""), 0);
    expect_code(&run_env(&["admin", "create-org", "--name", "Acme"], ""), 0);
    let out = run_env(
        &[
            "admin",
            "create-user",
            "--email",
            "waits@example.com",
            "--org",
            "1",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    expect_code(&out, 0);
    let out = run_env(
        &[
            "admin",
            "opt-out",
            "--org",
            "1",
            "--email",
            "waits@example.com",
        ],
        "",
    );
    expect_code(&out, 0);
    assert!(stdout(&out).contains("now opted out"), "{}", stdout(&out));
    let warned = stderr(&out);
    assert!(
        warned.contains("mail not delivered") && warned.contains("w***@example.com"),
        "{warned}"
    );
    let waiting = d.store().read(|tx| Ok(tx.count_notices()?)).expect("count");
    assert_eq!(waiting, 1);
}

/// `check-config --connect` opens a session with the mail server and sends
/// nothing; a mail server that is down fails it (exit 1) with the reason.
/// (It printed "The configuration is valid" for a relay nothing listened
/// on, and for one whose certificate could never be trusted.)
#[test]
fn check_config_connects_to_the_mail_server() {
    let d = Deployment::new();
    let smtp = mfa_email::test_support::SmtpSink::start().expect("SMTP sink");
    let url = smtp.url();
    let mut env = d.env();
    env.push(("MFA_MAIL_FROM", "MFA <no-reply@mfa.example.com>"));
    env.push(("MFA_SMTP_URL", url.as_str()));
    let out = run(d.path(), &env, &["check-config", "--connect"], "");
    let text = expect_code(&out, 0);
    assert!(
        text.contains(&format!(
            "Mail: SMTP 127.0.0.1:{} (no TLS) opened a session (TLS and login as configured) \
             and would take a message from no-reply@mfa.example.com",
            smtp.port()
        )),
        "{text}"
    );
    assert_eq!(smtp.connections(), 1, "one session");
    assert!(smtp.messages().is_empty(), "nothing was sent");

    let down = format!(
        "smtp://127.0.0.1:{}?tls=none",
        mfa_email::test_support::dead_port()
    );
    let env: Vec<_> = d
        .env()
        .into_iter()
        .chain([("MFA_SMTP_URL", down.as_str())])
        .collect();
    let text = expect_code(&run(d.path(), &env, &["check-config", "--connect"], ""), 1);
    assert!(
        text.contains("mail: no session with the SMTP server SMTP 127.0.0.1:")
            && text.contains("codes and notices cannot be sent until this is mended"),
        "{text}"
    );
    // Without --connect nothing connects.
    expect_code(&run(d.path(), &env, &["check-config"], ""), 0);
}

/// The log of a server's start on `d`, up to its `ready` line (60 s at
/// most); the server is stopped then.
fn start_log(d: &Deployment) -> Vec<String> {
    use std::io::BufRead as _;
    let mut env = d.env();
    env.retain(|(name, _)| *name != "MFA_LOG");
    env.extend([("MFA_LOG", "info"), ("MFA_BIND", "127.0.0.1:0")]);
    let mut child = command(d.path(), &env, &["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let err = child.stderr.take().expect("stderr");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = Vec::new();
    while let Ok(line) =
        lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        let ready = line.contains(" ready ");
        seen.push(line);
        if ready {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.iter().any(|l| l.contains(" ready ")), "{seen:#?}");
    seen
}

/// A start that upgrades the schema says so in the log, migration by
/// migration: from then on the previous version refuses the database. A
/// start with nothing to apply says nothing of it. (An audit found no
/// trace of an upgrade in the log.)
#[test]
fn a_start_that_migrates_logs_each_migration() {
    let d = Deployment::new();
    let log = start_log(&d);
    let applied = log
        .iter()
        .filter(|l| l.contains("migration applied"))
        .count();
    assert_eq!(applied, migrations(), "{log:#?}");
    // A new database is created, not upgraded.
    assert!(
        log.iter()
            .any(|l| l.contains("the database schema was created")
                && l.contains(&format!("applied={}", migrations()))),
        "{log:#?}"
    );
    assert!(!log.iter().any(|l| l.contains("upgraded")), "{log:#?}");
    let again = start_log(&d);
    assert!(
        !again
            .iter()
            .any(|l| l.contains("migration") || l.contains("schema was")),
        "{again:#?}"
    );

    // The newest migration taken back, as a database of the version
    // before has it: the next start upgrades it, and says so.
    let newest =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/sqlite"))
            .expect("migrations")
            .map(|e| e.expect("entry").path())
            .max()
            .expect("a migration");
    let down = std::fs::read_to_string(newest.join("down.sql")).expect("down.sql");
    let version: String = newest
        .file_name()
        .expect("name")
        .to_string_lossy()
        .chars()
        .take_while(|c| *c != '_')
        .filter(char::is_ascii_digit)
        .collect();
    {
        use diesel::connection::SimpleConnection as _;
        use diesel::prelude::*;
        let file = d.path().join("data/mfa.sqlite3");
        let mut conn = SqliteConnection::establish(&file.display().to_string()).expect("SQLite");
        conn.batch_execute(&format!(
            "{down}; DELETE FROM __diesel_schema_migrations WHERE version = '{version}';"
        ))
        .expect("the newest migration taken back");
    }
    let upgraded = start_log(&d);
    assert!(
        upgraded
            .iter()
            .any(|l| l.contains("the database schema was upgraded") && l.contains("applied=1")),
        "{upgraded:#?}"
    );
}

/// `MFA_SMTP_CA_FILE` trusts the CA of a company's own relay; without it
/// that relay's certificate is refused, and `check-config --connect` says
/// so. A CA file without an SMTP URL is a configuration error.
#[test]
fn a_relay_of_a_private_ca_is_trusted_with_its_ca_file() {
    let d = Deployment::new();
    let smtp = mfa_email::test_support::SmtpSink::start_tls().expect("TLS sink");
    let url = smtp.url();
    let ca = d.path().join("relay-ca.pem");
    std::fs::write(&ca, mfa_email::test_support::TEST_CA_PEM).expect("CA file");
    let ca = ca.display().to_string();
    let mut env = d.env();
    env.push(("MFA_MAIL_FROM", "MFA <no-reply@mfa.example.com>"));
    env.push(("MFA_SMTP_URL", url.as_str()));
    let text = expect_code(&run(d.path(), &env, &["check-config", "--connect"], ""), 1);
    assert!(text.contains("UnknownIssuer"), "{text}");

    env.push(("MFA_SMTP_CA_FILE", ca.as_str()));
    let text = expect_code(&run(d.path(), &env, &["check-config", "--connect"], ""), 0);
    assert!(
        text.contains(&format!("MFA_SMTP_CA_FILE                 {ca}")),
        "{text}"
    );
    assert!(text.contains("(TLS) opened a session"), "{text}");

    let alone: Vec<_> = d
        .env()
        .into_iter()
        .chain([("MFA_SMTP_CA_FILE", ca.as_str())])
        .collect();
    let text = expect_code(&run(d.path(), &alone, &["check-config"], ""), 2);
    assert!(
        text.contains("MFA_SMTP_CA_FILE") && text.contains("without an SMTP URL"),
        "{text}"
    );
}

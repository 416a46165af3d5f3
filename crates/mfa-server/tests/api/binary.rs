//! The binary as an operator runs it: a fresh start with no configuration
//! (SQLite in ./data, a generated key, a bootstrap superadmin with a
//! password printed once), a restart on the same data, SIGTERM, and clear
//! errors for bad configuration.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_mfa-server");

/// Every variable of the configuration table, removed from the child's
/// environment so that the defaults apply.
const VARS: &[&str] = &[
    "MFA_BIND",
    "MFA_DATA_DIR",
    "MFA_DATABASE_URL",
    "MFA_DATABASE_POOL_SIZE",
    "MFA_DATABASE_TIMEOUT_SECS",
    "MFA_ENCRYPTION_KEY",
    "MFA_BOOTSTRAP_ADMIN_EMAIL",
    "MFA_BOOTSTRAP_ADMIN_PASSWORD",
    "MFA_ISSUER",
    "MFA_ENVIRONMENT",
    "MFA_SMTP_URL",
    "MFA_MAIL_FROM",
    "MFA_SESSION_TTL_SECS",
    "MFA_PURGE_INTERVAL_SECS",
    "MFA_AUDIT_RETENTION_DAYS",
    "MFA_PASSWORD_QUEUE_MAX_WAIT_SECS",
    "MFA_TOTP_DIGITS",
    "MFA_TOTP_PERIOD_SECS",
    "MFA_PASSWORD_HASH",
    "MFA_LOG",
];

fn command(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).args(args);
    for var in VARS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(dir: &Path) -> Running {
        Running::start_with(dir, &[])
    }

    fn start_with(dir: &Path, env: &[(&str, &str)]) -> Running {
        // Port 0: the binary prints the real URL.
        let mut env = env.to_vec();
        env.push(("MFA_BIND", "127.0.0.1:0"));
        let mut child = command(dir, &env, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the binary");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            stdout: rx,
            seen: Vec::new(),
        }
    }

    /// Read stdout until a line starts with `prefix`; the rest of it.
    fn wait_for(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self
                .seen
                .iter()
                .find_map(|l| l.trim_start().strip_prefix(prefix));
            if let Some(rest) = found {
                return rest.trim().to_string();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line starting with {prefix:?} in {:?}", self.seen),
            }
        }
    }

    /// SIGTERM, then the exit status and everything the process wrote
    /// (stderr: unless the test took it to read it itself). A test that
    /// fails before this kills the process on drop.
    fn terminate(mut self) -> (std::process::ExitStatus, String, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr).unwrap();
        }
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(1)) {
            self.seen.push(line);
        }
        (exit, self.seen.join("\n"), stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Send `bytes` to the server at `url` on a connection of their own; the
/// head of the answer, as text.
fn raw_request(url: &str, bytes: &[u8]) -> String {
    use std::io::Write as _;
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = [0u8; 512];
    let read = stream.read(&mut answer).unwrap();
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

#[tokio::test]
async fn fresh_start_restart_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();

    // A port in use stops the start before anything is created. Before,
    // the bootstrap had created the superadmin by then, and its generated
    // password, shown only by a start that succeeds, was lost.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = command(dir.path(), &[("MFA_BIND", &address)], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&address),
        "{out:?}"
    );
    assert!(!dir.path().join("data").exists());
    drop(taken);

    let mut first = Running::start(dir.path());
    let url = first.wait_for("MFA server listening on ");
    let swagger = first.wait_for("Swagger UI:");
    assert_eq!(swagger, format!("{url}/swagger-ui/"));
    let created = first.wait_for("Created the superadmin ");
    assert!(created.starts_with("admin@example.com"), "{created}");
    let password = first
        .wait_for("Password (shown only this once; store it now and change it after logging in): ");
    assert!(password.len() >= 32);

    let health = client.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ui = client.get(&swagger).send().await.unwrap();
    assert_eq!(ui.status(), 200);
    // No other site may frame it (nor any other answer).
    assert_eq!(ui.headers()["x-frame-options"], "DENY");
    // Nor run a script of its own on the origin of the console's token.
    assert_eq!(
        ui.headers()["content-security-policy"],
        mfa_server::middleware::SWAGGER_UI_POLICY
    );
    let login = client
        .post(format!("{url}/user/auth/login"))
        .json(&json!({"email": "admin@example.com", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    // A request line that does not parse is the HTTP layer's empty 400,
    // and not an ERROR line in the log (see `CLIENT_FAULT_LOG_TARGETS`).
    let malformed = raw_request(&url, b"GET /user/us\xc3\xa9rs HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(malformed.starts_with("HTTP/1.1 400 "), "{malformed}");

    // The data directory: SQLite, the key (0600), the outbox.
    let data = dir.path().join("data");
    let key_file = data.join("encryption.key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(data.join("mfa.sqlite3").exists());
    assert!(data.join("outbox").is_dir());

    let (exit, stdout, stderr) = first.terminate();
    assert!(exit.success(), "{exit:?}\n{stderr}");
    assert_eq!(
        stdout.matches(&password).count(),
        1,
        "the password is printed once"
    );
    assert!(!stderr.contains(&password), "the password reached the log");
    assert!(stderr.contains("listening"), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");

    // A restart on the same data: no new superadmin, the same key.
    let mut second = Running::start(dir.path());
    let url = second.wait_for("MFA server listening on ");
    let login = client
        .post(format!("{url}/user/auth/login"))
        .json(&json!({"email": "admin@example.com", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let (exit, stdout, _) = second.terminate();
    assert!(exit.success());
    assert!(!stdout.contains("Created the superadmin"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);
}

fn run_to_exit(env: &[(&str, &str)], args: &[&str]) -> (std::process::Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path(), env, args).output().unwrap();
    (out, dir)
}

/// A bootstrap password too easy to guess: `check-config` says a first
/// start will refuse it, and the first start does, as a configuration
/// error (2), with nothing created.
#[test]
fn a_weak_bootstrap_password_is_refused_at_the_first_start() {
    let env = [
        ("MFA_BOOTSTRAP_ADMIN_PASSWORD", "password123"),
        ("MFA_BIND", "127.0.0.1:0"),
    ];
    let (out, _dir) = run_to_exit(&env, &["check-config"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("a first start on an empty database refuses it"),
        "{stdout}"
    );
    assert!(!stdout.contains("password123"), "{stdout}");
    let dir = tempfile::tempdir().unwrap();
    let mut serve = command(dir.path(), &env, &["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = serve.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = serve.kill();
            panic!("the server started with a weak bootstrap password");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(2));
    let mut stderr = String::new();
    serve
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("too easy to guess"), "{stderr}");
}

#[test]
fn bad_configuration_is_refused_clearly() {
    for (env, needle) in [
        (
            vec![("MFA_SESSION_TTL_SECS", "twelve hours")],
            "MFA_SESSION_TTL_SECS: expected a whole number of seconds",
        ),
        (vec![("MFA_ENVIRONMENT", "staging")], "MFA_ENVIRONMENT"),
        (vec![("MFA_BIND", "nowhere")], "MFA_BIND"),
        (
            vec![("MFA_DATABASE_URL", "mysql://db/x")],
            "MFA_DATABASE_URL",
        ),
        (
            vec![("MFA_ENCRYPTION_KEY", "dG9vIHNob3J0")],
            "MFA_ENCRYPTION_KEY",
        ),
        // Refused with the rest, before anything is created (an audit
        // found these only when the mailer was built, after the database).
        (vec![("MFA_MAIL_FROM", "not an address")], "MFA_MAIL_FROM"),
        (vec![("MFA_SMTP_URL", "garbage")], "MFA_SMTP_URL"),
        (
            vec![("MFA_SMTP_URL", "smtp://mail.example.com:25?tls=none")],
            "MFA_SMTP_URL",
        ),
        (vec![("MFA_DATABASE_URL", "sqlite://")], "MFA_DATABASE_URL"),
        (
            vec![("MFA_DATABASE_URL", "sqlite://?mode=rwc")],
            "MFA_DATABASE_URL",
        ),
        (vec![("MFA_DATABASE_URL", "sqlite:///")], "MFA_DATABASE_URL"),
    ] {
        for args in [&[][..], &["check-config"], &["migrate", "--status"]] {
            let (out, dir) = run_to_exit(&env, args);
            assert_eq!(out.status.code(), Some(2), "{env:?} {args:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(needle), "{env:?} {args:?}: {stderr}");
            assert!(!dir.path().join("data").exists(), "{env:?} {args:?}");
        }
    }

    // PostgreSQL needs a shared key: refused before any connection.
    let (out, dir) = run_to_exit(
        &[
            ("MFA_DATABASE_URL", "postgres://mfa:hunter2@127.0.0.1:1/mfa"),
            ("MFA_BIND", "127.0.0.1:0"),
        ],
        &[],
    );
    // A configuration error: 2, as for every command.
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MFA_ENCRYPTION_KEY is required with PostgreSQL"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(!dir.path().join("data").join("encryption.key").exists());

    // A configuration file: unknown keys are refused; the environment wins.
    let file = dir.path().join("mfa.toml");
    std::fs::write(&file, "bind = \"127.0.0.1:0\"\nsesion_ttl_secs = 60\n").unwrap();
    let out = command(dir.path(), &[], &["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sesion_ttl_secs"), "{stderr}");
    // A value of the wrong type: its line and key, not the value.
    std::fs::write(
        &file,
        "bind = \"127.0.0.1:0\"\nsession_ttl_secs = \"s3cret\"\n",
    )
    .unwrap();
    let out = command(dir.path(), &[], &["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2, session_ttl_secs: invalid value, expected u64"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    std::fs::write(&file, "environment = \"staging\"\n").unwrap();
    let out = command(
        dir.path(),
        &[
            ("MFA_ENVIRONMENT", "sandbox"),
            ("MFA_SESSION_TTL_SECS", "x"),
        ],
        &["--config", file.to_str().unwrap()],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MFA_SESSION_TTL_SECS") && !stderr.contains("MFA_ENVIRONMENT"),
        "the environment's sandbox wins over the file's staging: {stderr}"
    );

    // --help documents every variable.
    let out = command(dir.path(), &[], &["--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for var in VARS {
        assert!(help.contains(var), "{var} not in --help");
    }
}

/// A log reader that stops reading (a stalled collector, a full pipe) does
/// not stop the server: requests go on being answered, the lines beyond
/// the log's queue are dropped and counted, and once the reader reads
/// again every line that was not dropped arrives.
#[tokio::test]
async fn a_stalled_log_reader_does_not_stop_the_server() {
    use mfa_server::logging::QUEUED_LINES;

    let dir = tempfile::tempdir().unwrap();
    // stderr is a pipe that nobody reads until the requests are done: it
    // is full after 64 KiB, a few hundred lines.
    let mut server = Running::start(dir.path());
    let url = server.wait_for("MFA server listening on ");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    // More requests than the queue holds, one log line each.
    let requests = QUEUED_LINES + 4_000;
    const TASKS: usize = 8;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            for _ in (task..requests).step_by(TASKS) {
                let answer = client.get(format!("{url}/healthz")).send().await;
                let status = answer.map(|a| a.status().as_u16());
                assert!(matches!(status, Ok(200)), "{status:?}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("every request answered while the log is stalled");
    }
    let dropped_at = |text: &str| -> usize {
        text.lines()
            .find_map(|l| l.strip_prefix("mfa_log_lines_dropped_total "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no dropped-lines counter in {text}"))
    };
    let metrics = |client: reqwest::Client, url: String| async move {
        let answer = client.get(format!("{url}/metrics")).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        answer.text().await.unwrap()
    };
    let dropped = dropped_at(&metrics(client.clone(), url.clone()).await);
    assert!(dropped > 0, "the pipe held {requests} lines?");
    assert!(dropped < requests, "nothing was queued: {dropped}");

    // The reader reads again: the queued lines arrive.
    let stderr = server.child.stderr.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let is_health_line = |l: &String| l.contains("request") && l.contains("/healthz");
    let mut log = Vec::new();
    let mut health_lines = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while health_lines < requests - dropped {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("the queued lines arrive");
        health_lines += usize::from(is_health_line(&line));
        log.push(line);
    }
    // Every drop so far is counted now; this scrape's own line is queued
    // after it, with the queue no longer full.
    let dropped = dropped_at(&metrics(client.clone(), url.clone()).await);
    let (exit, _, _) = server.terminate();
    assert!(exit.success(), "{exit:?}");
    log.extend(lines.iter());

    let health_lines = log.iter().filter(|l| is_health_line(l)).count();
    let metrics_lines = log
        .iter()
        .filter(|l| l.contains("request") && l.contains("/metrics"))
        .count();
    assert_eq!(
        health_lines + metrics_lines + dropped,
        requests + 2,
        "every request's line is written or counted as dropped"
    );
    assert!(metrics_lines >= 1, "the last scrape's line is written");
    assert!(log.iter().any(|l| l.contains("listening")), "{log:?}");
    assert!(log.last().is_some_and(|l| l.contains("stopped")), "{log:?}");
}

/// SIGTERM while notices go out to a mail server that confirms slowly:
/// the process finishes the notice under way before it exits, so each
/// notice is sent and deleted, or left waiting, never both. (An audit saw
/// a stop begin a send in the last second of its flush and exit; the
/// notice, left claimed, was sent again by the next server.)
#[tokio::test]
async fn sigterm_finishes_the_notice_under_way() {
    use mfa_core::Store as _;
    let dir = tempfile::tempdir().unwrap();
    let smtp = mfa_email::test_support::SmtpSink::start().unwrap();
    // Four notices of 4 s each: more than the stop's 10 s of flushing.
    smtp.set_data_reply_delay(Duration::from_secs(4));
    let url = smtp.url();
    let password = "correct horse battery staple";
    let mut server = Running::start_with(
        dir.path(),
        &[
            ("MFA_SMTP_URL", &url),
            ("MFA_BOOTSTRAP_ADMIN_PASSWORD", password),
        ],
    );
    let base = server.wait_for("MFA server listening on ");
    let client = reqwest::Client::new();
    let login = client
        .post(format!("{base}/user/auth/login"))
        .json(&json!({"email": "admin@example.com", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let body: serde_json::Value = login.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    for i in 0..4 {
        let created = client
            .post(format!("{base}/user/users"))
            .bearer_auth(&token)
            .json(
                &json!({"email": format!("stop{i}@example.com"), "firstName": "S",
                          "lastName": "T", "password": password, "isAdmin": false}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let user: serde_json::Value = created.json().await.unwrap();
        let opted = client
            .put(format!("{base}/user/users/{}/membership", user["id"]))
            .bearer_auth(&token)
            .json(&json!({"mfaOptOut": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(opted.status(), 204);
    }
    let (exit, _, _) = server.terminate();
    assert!(exit.success(), "{exit:?}");
    let data = dir.path().join("data");
    let key = std::fs::read_to_string(data.join("encryption.key")).unwrap();
    let store = mfa_store::DbStore::open(
        &format!("sqlite://{}", data.join("mfa.sqlite3").display()),
        mfa_store::StoreOptions::new(mfa_store::EncryptionKey::from_base64(key.trim()).unwrap()),
    )
    .unwrap();
    let left = store.read(|tx| Ok(tx.count_notices()?)).unwrap();
    let sent = smtp.messages().len() as u64;
    assert_eq!(sent + left, 4, "{sent} sent and {left} left: none both");
}

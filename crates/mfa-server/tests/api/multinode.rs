//! Several server processes on one PostgreSQL database, as in
//! docs/deployment.md: two real `mfa-server` processes started together on a
//! fresh database with one shared encryption key, driven alternately
//! through a whole flow. Sessions, enrollment, the replay refusal and the
//! lockout live in the database, so every step may land on either node.
//!
//! The processes use the real clock: TOTP codes are computed from the
//! system time, for a step after the last one the server accepted (the
//! ±1-step window makes the next step acceptable at once; see
//! [`fresh_code`]).
//!
//! Runs when `MFA_TEST_DATABASE_URL` is set; otherwise prints a skipped line.
//!
//! [`Node`] (a server process) is shared with the `cli` tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mfa_store::test_support::TestDatabase;
use mfa_totp::{Secret, TotpParams};
use serde_json::{Value, json};

use crate::helpers::{Answer, PASSWORD, TestServer};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mfa-server");

/// Every variable of the configuration: removed from a child's environment
/// before its own are set, so that nothing leaks in from the test's.
pub const VARS: &[&str] = &[
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
    "MFA_PASSWORD_HASH",
    "MFA_LOG",
    "MFA_TRUSTED_PROXIES",
];

/// A command of the binary run in `dir` with exactly these `MFA_*`
/// variables.
pub fn command(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
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

/// A running server process, killed on drop.
pub struct Node {
    pub name: &'static str,
    pub base: String,
    pub client: reqwest::Client,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A started process whose banner has not been read yet.
pub struct Starting {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Node {
    /// Start the binary (port 0) in `dir`; call [`Starting::ready`] next.
    pub fn spawn(name: &'static str, dir: &Path, env: &[(&str, &str)]) -> Starting {
        let mut child = command(dir, env, &["serve"])
            .env("MFA_BIND", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the binary");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Starting { name, child, lines }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request as the in-process tests send them.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            self.url(path),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        TestServer::answer(req.send().await.expect("request")).await
    }

    /// Enroll an authenticator in this session: its secret, and the
    /// answer of `validateCode` (200 with a full token for a partial
    /// session, 204 for a full one).
    pub async fn enroll(&self, token: &str) -> (Secret, Answer) {
        let t = self
            .call(
                "POST",
                "/user/users/mfa/generateTempSecret",
                Some(token),
                None,
            )
            .await;
        let secret = Secret::from_base32(t.ok()["secret"].as_str().unwrap()).unwrap();
        let (code, _) = fresh_code(&secret, None);
        let v = self
            .call(
                "POST",
                "/user/users/mfa/validateCode",
                Some(token),
                Some(json!({"code": code})),
            )
            .await;
        (secret, v)
    }

    /// Log in: the answer must be 200; `(token, mfa, body)`.
    pub async fn login(&self, email: &str) -> (String, String, Value) {
        let a = self
            .call(
                "POST",
                "/user/auth/login",
                None,
                Some(json!({"email": email, "password": PASSWORD})),
            )
            .await;
        assert_eq!(a.status, 200, "login of {email} on {}: {a:?}", self.name);
        (
            a.body["token"].as_str().unwrap().to_string(),
            a.body["mfa"].as_str().unwrap().to_string(),
            a.body,
        )
    }
}

impl Starting {
    /// Wait (at most 60 s) for "MFA server listening on URL".
    pub fn ready(mut self) -> Node {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let base = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("MFA server listening on ") {
                        break url.trim().to_string();
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let status = self.child.try_wait();
                    let _ = self.child.kill();
                    panic!(
                        "node {} did not start ({status:?}); stdout: {seen:?}",
                        self.name
                    );
                }
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        let lines = self.lines;
        std::thread::spawn(move || while lines.recv().is_ok() {});
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            // Below the server's keep-alive (5 s): a test that waits for a
            // fresh TOTP step never sends on a connection being closed.
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        Node {
            name: self.name,
            base,
            client,
            child: self.child,
        }
    }
}

/// `(name, value)` pairs as the `&str` pairs [`command`] takes.
pub fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Unix time now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A code of `secret` and its step, for a step after `last` (the last one
/// the server accepted for this user, if any). The server accepts the
/// current step and one either side, so `last + 1` is acceptable at once
/// unless it is more than one step ahead; then this waits (at most a step).
pub fn fresh_code(secret: &Secret, last: Option<u64>) -> (String, u64) {
    let params = TotpParams::default();
    loop {
        let current = unix_now() / params.period;
        let step = last.map_or(current, |l| (l + 1).max(current));
        if step <= current + 1 {
            return (mfa_totp::totp(secret, step * params.period, &params), step);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A code of `secret` that matches no step of the window around now.
fn wrong_code(secret: &Secret) -> String {
    let params = TotpParams::default();
    let now = unix_now();
    let window: Vec<String> = (0..4)
        .map(|i| mfa_totp::totp(secret, now + i * 30 - 60, &params))
        .collect();
    (0..1000)
        .map(|n| format!("{:06}", 123_457 + n * 7))
        .find(|c| !window.contains(c))
        .expect("a wrong code")
}

#[tokio::test]
async fn two_processes_on_one_database() {
    let Some(db) = TestDatabase::postgres() else {
        return;
    };
    let key = mfa_store::EncryptionKey::generate().to_base64();
    let dir = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let env = |data: &Path| -> Vec<(&'static str, String)> {
        vec![
            ("MFA_DATABASE_URL", db.url().to_string()),
            ("MFA_ENCRYPTION_KEY", key.clone()),
            ("MFA_DATA_DIR", data.display().to_string()),
            ("MFA_BOOTSTRAP_ADMIN_EMAIL", "root@example.com".into()),
            ("MFA_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD.into()),
            ("MFA_ISSUER", "Acme".into()),
            ("MFA_LOG", "warn".into()),
        ]
    };
    let (env_a, env_b) = (env(&data_a), env(&data_b));
    // Both start at once on the empty database: the migrations are
    // serialised by an advisory lock, and only one bootstraps the root.
    let starting_a = Node::spawn("A", dir.path(), &borrowed(&env_a));
    let starting_b = Node::spawn("B", dir.path(), &borrowed(&env_b));
    let (a, b) = (starting_a.ready(), starting_b.ready());

    // The admin logs in on A and enforces MFA on B with the same token.
    let (root, mfa, body) = a.login("root@example.com").await;
    assert_eq!(mfa, "none");
    let org = body["orgId"].as_i64().unwrap();
    let created = a
        .call(
            "POST",
            "/user/users",
            Some(&root),
            Some(
                json!({"email": "alice@example.com", "firstName": "Alice", "lastName": "A",
                        "password": PASSWORD}),
            ),
        )
        .await;
    created.expect(201, None);
    let alice = created.body["id"].as_i64().unwrap();
    b.call(
        "PUT",
        "/user/org/mfa",
        Some(&root),
        Some(json!({"isMfaEnforced": true})),
    )
    .await
    .expect(204, None);
    let o = a
        .call("GET", &format!("/user/org/{org}"), Some(&root), None)
        .await;
    assert_eq!(o.ok()["isMfaEnforced"], true, "A sees B's change");

    // Alice logs in on A: setup owed. The secret comes from B, the code is
    // validated on A.
    let (partial, mfa, _) = a.login("alice@example.com").await;
    assert_eq!(mfa, "setup_required");
    let t = b
        .call(
            "POST",
            "/user/users/mfa/generateTempSecret",
            Some(&partial),
            None,
        )
        .await;
    t.expect(200, None);
    let secret = Secret::from_base32(t.body["secret"].as_str().unwrap()).unwrap();
    let (code, step) = fresh_code(&secret, None);
    let v = a
        .call(
            "POST",
            "/user/users/mfa/validateCode",
            Some(&partial),
            Some(json!({"code": code})),
        )
        .await;
    v.expect(200, None);
    let full = v.body["token"].as_str().unwrap().to_string();
    b.call("GET", "/user/users/me", Some(&full), None)
        .await
        .expect(200, None);
    a.call("GET", "/user/users/me", Some(&partial), None)
        .await
        .expect(401, Some("unauthorized"));

    // Next login on B is challenged; the code is verified on A.
    let (partial, mfa, _) = b.login("alice@example.com").await;
    assert_eq!(mfa, "challenge_required");
    let (code, _) = fresh_code(&secret, Some(step));
    let v = a
        .call(
            "POST",
            "/user/auth/mfa/verify",
            Some(&partial),
            Some(json!({"method": "AUTHENTICATOR", "code": code})),
        )
        .await;
    v.expect(200, None);
    assert_eq!(v.body["mfa"], "none");
    let full = v.body["token"].as_str().unwrap().to_string();
    b.call("GET", "/user/users/me", Some(&full), None)
        .await
        .expect(200, None);

    // The same code again, on B: the step was used (on A), so it is refused.
    let (partial, _, _) = b.login("alice@example.com").await;
    let replay = b
        .call(
            "POST",
            "/user/auth/mfa/verify",
            Some(&partial),
            Some(json!({"method": "AUTHENTICATOR", "code": code})),
        )
        .await;
    replay.expect(400, Some("invalid_code"));
    let audit = a
        .call(
            "GET",
            "/user/audit?action=replay_refused",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(audit.ok()["total"], 1, "refused as a replay: {audit:?}");

    // Wrong codes, alternately on A and B, reach the lockout together.
    let wrong = wrong_code(&secret);
    let mut locked = None;
    for attempt in 0..6 {
        let node = if attempt % 2 == 0 { &a } else { &b };
        let r = node
            .call(
                "POST",
                "/user/auth/mfa/verify",
                Some(&partial),
                Some(json!({"method": "AUTHENTICATOR", "code": wrong})),
            )
            .await;
        if r.status == 429 {
            locked = Some(attempt);
            break;
        }
        r.expect(400, Some("invalid_code"));
    }
    let locked = locked.expect("no lockout after 5 failures across the nodes");
    assert!(locked <= 4, "locked at attempt {locked}");
    // The other node refuses the next attempt as locked out, not as wrong.
    let other = if locked % 2 == 0 { &b } else { &a };
    let r = other
        .call(
            "POST",
            "/user/auth/mfa/verify",
            Some(&partial),
            Some(json!({"method": "AUTHENTICATOR", "code": wrong})),
        )
        .await;
    r.expect(429, Some("too_many_attempts"));
    assert!(r.header("retry-after").is_some());

    // The admin resets Alice on A; on B her next login owes setup again,
    // and her sessions are gone on both.
    a.call(
        "PUT",
        "/user/users/mfa/reset",
        Some(&root),
        Some(json!({"ids": [alice]})),
    )
    .await
    .expect(204, None);
    b.call("GET", "/user/users/me", Some(&full), None)
        .await
        .expect(401, Some("unauthorized"));
    let (_, mfa, _) = b.login("alice@example.com").await;
    assert_eq!(mfa, "setup_required");

    drop((a, b));
    drop(db);
}

/// Servers with different keys cannot share a database, from its first
/// start on (each would count an address's password failures apart, and
/// answer the others' authenticators with 500); a rotation takes the
/// servers that still have the old key out of service.
#[tokio::test]
async fn one_database_one_encryption_key() {
    let Some(db) = TestDatabase::postgres() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = |key: &str| -> Vec<(&'static str, String)> {
        vec![
            ("MFA_DATABASE_URL", db.url().to_string()),
            ("MFA_ENCRYPTION_KEY", key.to_string()),
            (
                "MFA_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("MFA_BOOTSTRAP_ADMIN_EMAIL", "root@example.com".into()),
            ("MFA_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD.into()),
            ("MFA_LOG", "warn".into()),
        ]
    };
    let key_a = mfa_store::EncryptionKey::generate();
    let key_b = mfa_store::EncryptionKey::generate();
    let env_a = env(&key_a.to_base64());
    let env_b = env(&key_b.to_base64());
    let a = Node::spawn("A", dir.path(), &borrowed(&env_a)).ready();
    a.call("GET", "/readyz", None, None).await.expect(200, None);

    // No secret is stored yet; the database refuses the second key all the
    // same, naming both fingerprints, and so does every admin command.
    let refused = |out: std::process::Output| {
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(text.contains("is not the database's"), "{text}");
        assert!(text.contains(&key_a.fingerprint().to_string()), "{text}");
        assert!(text.contains(&key_b.fingerprint().to_string()), "{text}");
    };
    refused(
        command(dir.path(), &borrowed(&env_b), &["serve"])
            .env("MFA_BIND", "127.0.0.1:0")
            .output()
            .expect("run"),
    );
    refused(
        command(dir.path(), &borrowed(&env_b), &["admin", "list-orgs"])
            .output()
            .expect("run"),
    );
    let check = command(
        dir.path(),
        &borrowed(&env_b),
        &["check-config", "--connect"],
    )
    .output()
    .expect("run");
    assert_eq!(check.status.code(), Some(2), "{check:?}");
    let check = command(
        dir.path(),
        &borrowed(&env_a),
        &["check-config", "--connect"],
    )
    .output()
    .expect("run");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        text.contains(&format!(
            "the database's (fingerprint {})",
            key_a.fingerprint()
        )),
        "{text}"
    );

    // A rotation to B while A runs: within a few seconds A answers every
    // request 503 (it would write secrets B cannot read, and count password
    // failures apart), and is not ready; B is let in.
    let (root_a, _, _) = a.login("root@example.com").await;
    let mut rotate = command(
        dir.path(),
        &borrowed(&env_a),
        &["rotate-key", "--new-key-stdin"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("run");
    {
        use std::io::Write as _;
        let mut stdin = rotate.stdin.take().unwrap();
        writeln!(stdin, "{}", key_b.to_base64()).unwrap();
    }
    let rotated = rotate.wait_with_output().expect("rotate");
    assert!(rotated.status.success(), "{rotated:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = a
            .call(
                "POST",
                "/user/auth/login",
                None,
                Some(json!({"email": "root@example.com", "password": PASSWORD})),
            )
            .await;
        if r.status == 503 {
            r.expect(503, Some("unavailable"));
            break;
        }
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            Instant::now() < deadline,
            "A still serves 20 s after the rotation"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.call(
        "POST",
        "/user/users/mfa/generateTempSecret",
        Some(&root_a),
        None,
    )
    .await
    .expect(503, Some("unavailable"));
    a.call("GET", "/readyz", None, None)
        .await
        .expect(503, Some("unavailable"));
    let b = Node::spawn("B", dir.path(), &borrowed(&env_b)).ready();
    b.call("GET", "/readyz", None, None).await.expect(200, None);
    b.login("root@example.com").await;
    drop((a, b));
    drop(db);
}

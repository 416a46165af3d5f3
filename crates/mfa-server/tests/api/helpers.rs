//! The test server: a fresh database, data directory and SMTP sink per test,
//! a fixed clock, the real application on 127.0.0.1 port 0 in its own
//! thread and actix system, and a plain-HTTP client.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use mfa_core::Timestamp;
use mfa_core::ports::FixedClock;
use mfa_email::test_support::{ReceivedMail, SmtpSink};
use mfa_server::notice_sender::NoticeSender;
use mfa_server::{Application, Config};
use mfa_store::test_support::TestDatabase;
use mfa_totp::{OtpauthUri, Secret, TotpParams};
use reqwest::Method;
use serde_json::{Value, json};

/// Where the fixed clock starts: 2027-01-15T08:00:00Z, on a 30 s boundary.
pub const START: i64 = 1_800_000_000;
/// The bootstrap superadmin.
pub const ROOT_EMAIL: &str = "root@example.com";
/// Every test user's password.
pub const PASSWORD: &str = "correct horse battery staple";

/// Run a scenario `async fn name(server: TestServer)` once on SQLite and
/// once on PostgreSQL (when `MFA_TEST_DATABASE_URL` is set; otherwise the
/// PostgreSQL run prints a skipped line and passes).
#[macro_export]
macro_rules! on_every_backend {
    // Servers with extra configuration: `with ENV; name, ...` (ENV is
    // read inside a module of the test's name: `super::` reaches the file).
    (with $env:expr; $($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let db = mfa_store::test_support::TestDatabase::sqlite();
                super::$name($crate::helpers::TestServer::start(db, $env).await).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(db) = mfa_store::test_support::TestDatabase::postgres() {
                    super::$name($crate::helpers::TestServer::start(db, $env).await).await;
                }
            }
        }
    )*};
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::helpers::TestServer::sqlite().await).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(server) = $crate::helpers::TestServer::postgres().await {
                    super::$name(server).await;
                }
            }
        }
    )*};
}

/// An answer: status, headers and the body as JSON (`Null` when empty or
/// not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub bytes: Vec<u8>,
}

impl Answer {
    /// The `error` code of an error answer.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Assert the status and, for an error, that the body is the JSON error
    /// shape with this code.
    #[track_caller]
    pub fn expect(&self, status: u16, error: Option<&str>) -> &Self {
        assert_eq!(self.status, status, "unexpected answer: {self:?}");
        if let Some(code) = error {
            assert_eq!(self.error(), code, "unexpected error: {self:?}");
            assert!(
                self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "error without message: {self:?}"
            );
            assert!(
                self.header("content-type")
                    .is_some_and(|c| c.starts_with("application/json")),
                "error not JSON: {self:?}"
            );
        }
        self
    }

    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert!(
            (200..300).contains(&self.status),
            "expected success: {self:?}"
        );
        &self.body
    }
}

/// The `id`s of a JSON array of users, in order.
#[track_caller]
pub fn ids_of(users: &Value) -> Vec<i64> {
    users
        .as_array()
        .expect("an array of users")
        .iter()
        .map(|u| u["id"].as_i64().expect("a user id"))
        .collect()
}

/// A user's login session.
#[derive(Clone, Debug)]
pub struct Login {
    pub token: String,
    pub mfa: String,
    pub body: Value,
}

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: Arc<FixedClock>,
    pub smtp: Arc<SmtpSink>,
    pub root_org: i64,
    handle: Option<ServerHandle>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
    _db: Arc<TestDatabase>,
    /// The configuration it started with, for [`TestServer::twin`].
    env: HashMap<String, String>,
    /// The notice threads of this server and its twins: reading the mail
    /// waits for them to try the notices queued so far.
    notice_senders: Arc<Mutex<Vec<NoticeSender>>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            // The command is sent at once; the server's own thread acts on it.
            drop(handle.stop(false));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl TestServer {
    pub async fn sqlite() -> TestServer {
        TestServer::start(TestDatabase::sqlite(), &[]).await
    }

    pub async fn postgres() -> Option<TestServer> {
        let db = TestDatabase::postgres()?;
        Some(TestServer::start(db, &[]).await)
    }

    /// A server on SQLite with extra configuration.
    pub async fn sqlite_with(env: &[(&str, &str)]) -> TestServer {
        TestServer::start(TestDatabase::sqlite(), env).await
    }

    pub async fn start(db: TestDatabase, extra_env: &[(&str, &str)]) -> TestServer {
        capture_logs();
        let smtp = SmtpSink::start().expect("SMTP sink");
        let mut env: HashMap<String, String> = [
            ("MFA_DATABASE_URL", db.url().to_string()),
            ("MFA_BOOTSTRAP_ADMIN_EMAIL", ROOT_EMAIL.to_string()),
            ("MFA_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD.to_string()),
            ("MFA_ISSUER", "Acme".to_string()),
            ("MFA_SMTP_URL", smtp.url()),
            ("MFA_MAIL_FROM", "Acme MFA <mfa@example.com>".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if db.url().starts_with("postgres") {
            env.insert(
                "MFA_ENCRYPTION_KEY".into(),
                mfa_store::EncryptionKey::generate().to_base64(),
            );
        }
        for (k, v) in extra_env {
            env.insert(k.to_string(), v.to_string());
        }
        let clock = Arc::new(FixedClock::new(Timestamp(START)));
        TestServer::launch(Arc::new(db), env, clock, Arc::new(smtp)).await
    }

    /// A second server process on the same database, as a deployment with
    /// several processes behind a load balancer runs them: the same
    /// database, encryption key, clock and mail sink, its own port, data
    /// directory and connection pool.
    pub async fn twin(&self) -> TestServer {
        self.twin_on(self.clock.clone()).await
    }

    /// A [`TestServer::twin`] whose clock is `secs` behind this server's,
    /// and is moved apart from it: two hosts whose clocks differ a little.
    pub async fn twin_behind(&self, secs: u64) -> TestServer {
        use mfa_core::Clock as _;
        let clock = Arc::new(FixedClock::new(self.clock.now().minus_secs(secs)));
        self.twin_on(clock).await
    }

    async fn twin_on(&self, clock: Arc<FixedClock>) -> TestServer {
        let mut twin = self.twin_unregistered_on(clock).await;
        let own = twin.notice_senders.lock().unwrap()[0].clone();
        self.notice_senders.lock().unwrap().push(own);
        twin.notice_senders = self.notice_senders.clone();
        twin
    }

    async fn twin_unregistered_on(&self, clock: Arc<FixedClock>) -> TestServer {
        let mut env = self.env.clone();
        if !env.contains_key("MFA_ENCRYPTION_KEY") {
            // SQLite: the key the first server generated into its data dir.
            let key = std::fs::read_to_string(self.data_dir().join("encryption.key"))
                .expect("the first server's key file");
            env.insert("MFA_ENCRYPTION_KEY".into(), key.trim().to_string());
        }
        TestServer::launch(self._db.clone(), env, clock, self.smtp.clone()).await
    }

    /// The database this server runs on.
    pub fn database(&self) -> &TestDatabase {
        &self._db
    }

    /// The number `sql` (a query of one row, its column named `n`)
    /// answers on the server's database, read beside the server; `None`
    /// for a SQL `NULL`.
    pub fn query_number(&self, sql: &str) -> Option<i64> {
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct Number {
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
            n: Option<i64>,
        }
        let query = diesel::sql_query(sql);
        let answer: Number = match self._db.sqlite_path() {
            Some(path) => {
                let mut conn = SqliteConnection::establish(&path.display().to_string())
                    .expect("the SQLite file");
                query.get_result(&mut conn)
            }
            None => {
                let mut conn = PgConnection::establish(self._db.url()).expect("PostgreSQL");
                query.get_result(&mut conn)
            }
        }
        .expect(sql);
        answer.n
    }

    async fn launch(
        db: Arc<TestDatabase>,
        env: HashMap<String, String>,
        clock: Arc<FixedClock>,
        smtp: Arc<SmtpSink>,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config_env = env.clone();
        config_env.insert("MFA_BIND".into(), "127.0.0.1:0".into());
        config_env.insert("MFA_DATA_DIR".into(), dir.path().display().to_string());
        let config =
            Config::from_sources(None, |k| config_env.get(k).cloned()).expect("configuration");

        let (tx, rx) = mpsc::channel();
        let server_clock = clock.clone();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match Application::build(config, server_clock).await {
                    Ok(app) => {
                        let _ = tx.send(Ok((app.url(), app.handle(), app.notice_sender())));
                        let _ = app.run().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            })
        });
        let (base, handle, notice_sender) = rx
            .recv()
            .expect("server thread")
            .unwrap_or_else(|e| panic!("server did not start: {e}"));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        let mut server = TestServer {
            base,
            client,
            clock,
            smtp,
            root_org: 0,
            handle: Some(handle),
            thread: Some(thread),
            _dir: dir,
            _db: db,
            env,
            notice_senders: Arc::new(Mutex::new(vec![notice_sender])),
        };
        let root = server.login(ROOT_EMAIL, PASSWORD).await;
        server.root_org = root.body["orgId"].as_i64().expect("orgId");
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Send a request; `body` goes as JSON.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.client.request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            self.url(path),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::answer(req.send().await.expect("request")).await
    }

    /// Send a raw request body with a content type.
    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Answer {
        let mut req = self
            .client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                self.url(path),
            )
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        Self::answer(req.send().await.expect("request")).await
    }

    pub async fn answer(res: reqwest::Response) -> Answer {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body").to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            bytes,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call("POST", path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call("PUT", path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Answer {
        self.call("DELETE", path, Some(token), None).await
    }

    /// The details of the audit events `query` selects (`action=…&userId=…`),
    /// newest first, as `token` reads the trail.
    pub async fn audit_details(&self, token: &str, query: &str) -> Vec<String> {
        let page = self.get(&format!("/user/audit?{query}"), token).await;
        page.ok()["items"]
            .as_array()
            .expect("a page of events")
            .iter()
            .map(|e| e["detail"].as_str().expect("a detail").to_string())
            .collect()
    }

    /// Log in; the answer must be 200.
    pub async fn login(&self, email: &str, password: &str) -> Login {
        let a = self
            .call(
                "POST",
                "/user/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(a.status, 200, "login of {email} failed: {a:?}");
        Login {
            token: a.body["token"].as_str().unwrap().to_string(),
            mfa: a.body["mfa"].as_str().unwrap().to_string(),
            body: a.body,
        }
    }

    /// A full token of the bootstrap superadmin (no MFA is owed in the
    /// first org unless a test enforces it and did not opt root out).
    pub async fn root(&self) -> String {
        let l = self.login(ROOT_EMAIL, PASSWORD).await;
        assert_eq!(l.mfa, "none", "root login owes MFA: {:?}", l.body);
        l.token
    }

    /// Make `user` a member of `org` (not an admin) with `token`.
    pub async fn add_to_org(&self, token: &str, org: i64, user: i64) {
        self.post(&format!("/user/org/{org}/user/{user}"), token, json!({}))
            .await
            .expect(201, None);
    }

    /// Create a user in the current org of `token`; returns the id.
    pub async fn create_user(&self, token: &str, email: &str, is_admin: bool) -> i64 {
        let a = self
            .post(
                "/user/users",
                token,
                json!({"email": email, "firstName": "Test", "lastName": email.split('@').next().unwrap(),
                       "password": PASSWORD, "isAdmin": is_admin}),
            )
            .await;
        a.expect(201, None);
        a.body["id"].as_i64().unwrap()
    }

    /// Create an org (as superadmin `root`) and an admin of it; returns
    /// (org id, admin id, admin token logged into that org).
    pub async fn org_with_admin(
        &self,
        root: &str,
        name: &str,
        admin_email: &str,
    ) -> (i64, i64, String) {
        let org = self.post("/user/org", root, json!({"name": name})).await;
        org.expect(201, None);
        let org_id = org.body["id"].as_i64().unwrap();
        let join = self
            .call(
                "POST",
                &format!("/user/users/insert/{org_id}"),
                Some(root),
                None,
            )
            .await;
        join.expect(201, None);
        let root_in_org = self
            .login_org(crate::helpers::ROOT_EMAIL, PASSWORD, org_id)
            .await;
        let admin_id = self
            .create_user(&root_in_org.token, admin_email, true)
            .await;
        let admin = self.login_org(admin_email, PASSWORD, org_id).await;
        (org_id, admin_id, admin.token)
    }

    /// [`TestServer::org_with_admin`], then the superadmin leaves the org:
    /// its admin is its only admin.
    pub async fn org_with_sole_admin(
        &self,
        root: &str,
        name: &str,
        admin_email: &str,
    ) -> (i64, i64, String) {
        let (org, admin_id, admin) = self.org_with_admin(root, name, admin_email).await;
        let root_id = self.get("/user/users/me", root).await.ok()["id"]
            .as_i64()
            .unwrap();
        self.delete(&format!("/user/org/{org}/user/{root_id}"), root)
            .await
            .expect(204, None);
        (org, admin_id, admin)
    }

    /// Log in to a given org.
    pub async fn login_org(&self, email: &str, password: &str, org: i64) -> Login {
        let a = self
            .call(
                "POST",
                "/user/auth/login",
                None,
                Some(json!({"email": email, "password": password, "orgId": org})),
            )
            .await;
        assert_eq!(a.status, 200, "login of {email} into {org} failed: {a:?}");
        Login {
            token: a.body["token"].as_str().unwrap().to_string(),
            mfa: a.body["mfa"].as_str().unwrap().to_string(),
            body: a.body,
        }
    }

    /// Enforce MFA in the current org of `admin`.
    pub async fn enforce(&self, admin: &str, on: bool) {
        self.put("/user/org/mfa", admin, json!({"isMfaEnforced": on}))
            .await
            .expect(204, None);
    }

    // ---- clock

    pub fn now(&self) -> u64 {
        use mfa_core::Clock as _;
        self.clock.now().unix_secs()
    }

    pub fn advance(&self, secs: i64) {
        self.clock.advance(secs);
    }

    // ---- mail

    /// Every message to `email` so far, once the notices due that this
    /// server (and its twins, those still running) queued were tried.
    pub fn mails_to(&self, email: &str) -> Vec<ReceivedMail> {
        for sender in self.notice_senders.lock().unwrap().iter() {
            if sender.is_running() {
                assert!(
                    sender.flush(Duration::from_secs(30)),
                    "queued notices were not tried in 30 s"
                );
            }
        }
        self.smtp
            .messages()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t == email))
            .collect()
    }

    /// The code of the newest message to `email` that has one.
    #[track_caller]
    pub fn last_code(&self, email: &str) -> String {
        self.mails_to(email)
            .iter()
            .rev()
            .find_map(|m| m.code())
            .unwrap_or_else(|| panic!("no code mailed to {email}"))
    }

    /// The email-change token of the newest message to `email` that has one.
    #[track_caller]
    pub fn last_token(&self, email: &str) -> String {
        self.mails_to(email)
            .iter()
            .rev()
            .find_map(|m| m.token())
            .unwrap_or_else(|| panic!("no token mailed to {email}"))
    }

    /// The metrics exposition.
    pub async fn metrics(&self) -> String {
        let a = self.call("GET", "/metrics", None, None).await;
        a.expect(200, None);
        String::from_utf8(a.bytes).unwrap()
    }

    // ---- authenticator

    /// `generateTempSecret` with `token`: the answer.
    pub async fn generate_temp_secret(&self, token: &str) -> Answer {
        self.call(
            "POST",
            "/user/users/mfa/generateTempSecret",
            Some(token),
            None,
        )
        .await
    }

    /// Start enrollment with `generateTempSecret`; returns the secret.
    pub async fn start_authenticator(&self, token: &str) -> Secret {
        let a = self.generate_temp_secret(token).await;
        a.expect(200, None);
        Secret::from_base32(a.body["secret"].as_str().unwrap()).unwrap()
    }

    /// The TOTP code of `secret` now.
    pub fn totp(&self, secret: &Secret) -> String {
        mfa_totp::totp(secret, self.now(), &TotpParams::default())
    }

    /// Enroll an authenticator with a full token and return its secret.
    pub async fn enroll_authenticator(&self, token: &str) -> Secret {
        let secret = self.start_authenticator(token).await;
        let code = self.totp(&secret);
        self.post("/user/users/mfa/validateCode", token, json!({"code": code}))
            .await
            .expect(204, None);
        // The next code must come from a later step.
        self.advance(30);
        secret
    }
}

/// Parse an otpauth URI into its secret.
pub fn secret_of_uri(uri: &str) -> Secret {
    OtpauthUri::parse(uri).expect("otpauth URI").secret
}

/// Everything the application logged during this test binary's run. The
/// capture is installed once, as the global subscriber, when the first
/// server starts; server threads log into it too.
pub fn captured_logs() -> String {
    let buf = log_buffer();
    let bytes = buf.lock().map(|b| b.clone()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

type LogBuffer = Arc<std::sync::Mutex<Vec<u8>>>;

fn log_buffer() -> &'static LogBuffer {
    static BUFFER: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    BUFFER.get_or_init(|| {
        let buf: LogBuffer = Arc::default();
        let writer = buf.clone();
        // Without times: a timestamp's digits could look like a code. The
        // server side logs at every level, TRACE included, through the
        // server's own filter (the client's crates stay at info: what a
        // test client logs is not the server's log).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(mfa_server::config::log_filter(
                "info,mfa_server=trace,mfa_core=trace,mfa_store=trace,mfa_email=trace,\
                 mfa_totp=trace,actix_web=trace,actix_http=trace,actix_server=trace,\
                 actix_router=trace,lettre=trace,r2d2=trace,diesel=trace",
            ))
            .with_ansi(false)
            .without_time()
            .with_writer(move || Capture(writer.clone()))
            .try_init();
        buf
    })
}

struct Capture(LogBuffer);

impl std::io::Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install the log capture (idempotent).
pub fn capture_logs() {
    let _ = log_buffer();
}

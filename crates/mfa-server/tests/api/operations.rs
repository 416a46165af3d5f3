//! Operations: health, readiness, metrics, the OpenAPI document and Swagger
//! UI, and the start-up work in the data directory.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Answer, TestServer};
use crate::on_every_backend;

on_every_backend!(health_and_metrics, openapi_documents_every_route);

/// Every route of the contract (spec/API.md), plus the two routes of the
/// document itself. The pages' own files under `/assets/` are not API
/// routes and stay out of the document, like Swagger UI's.
pub(crate) const CONTRACT: &[(&str, &str)] = &[
    ("POST", "/user/auth/login"),
    ("POST", "/user/auth/mfa/challenge"),
    ("POST", "/user/auth/mfa/verify"),
    ("POST", "/user/auth/logout"),
    ("POST", "/user/org"),
    ("GET", "/user/org/{id}"),
    ("PUT", "/user/org/{id}"),
    ("DELETE", "/user/org/{id}"),
    ("PUT", "/user/org/mfa"),
    ("POST", "/user/org/{orgId}/email/user/{email}"),
    ("GET", "/user/org/{orgId}/user/{userId}"),
    ("POST", "/user/org/{orgId}/user/{userId}"),
    ("DELETE", "/user/org/{orgId}/user/{userId}"),
    ("POST", "/user/users"),
    ("GET", "/user/users"),
    ("GET", "/user/users/page"),
    ("GET", "/user/users/me"),
    ("GET", "/user/users/{id}"),
    ("PUT", "/user/users/{id}"),
    ("DELETE", "/user/users/{id}"),
    ("PUT", "/user/users/{id}/membership"),
    // Beyond the contract (openapi.md): sign a user out everywhere.
    ("POST", "/user/users/{id}/logout"),
    ("PUT", "/user/users/me/mfa"),
    (
        "GET",
        "/user/users/retrieveNotExcludeFromMembershipUserCounts",
    ),
    ("GET", "/user/users/email/{email}"),
    ("POST", "/user/users/email"),
    ("GET", "/user/users/admins/{orgId}"),
    ("POST", "/user/users/insert/{orgId}"),
    ("DELETE", "/user/users/deleteFromAllOrgs/{email}"),
    ("POST", "/user/users/email/confirmChange"),
    ("POST", "/user/users/email/resendChangeConfirmation"),
    ("POST", "/user/users/mfa/generateTempSecret"),
    ("POST", "/user/users/mfa/validateCode"),
    ("PUT", "/user/users/mfa/reset"),
    ("GET", "/oauth/users/mfaDetails"),
    ("PUT", "/users/mfa/associateQRCode"),
    ("PUT", "/users/mfa/verifyQRCodeEnroll"),
    ("POST", "/users/mfa/resetMyQRCodeEnroll"),
    ("PUT", "/users/{username}/mfa/resetQRCodeEnroll"),
    ("PUT", "/oauth/users/mfa/enrollEmail"),
    ("PUT", "/oauth/users/mfa/verifyEmail"),
    ("POST", "/user/users/mfa/recoveryCodes"),
    ("GET", "/user/audit"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api-docs/openapi.json"),
    ("GET", "/swagger-ui/"),
    ("GET", "/admin"),
    ("GET", "/account"),
];

async fn health_and_metrics(s: TestServer) {
    let h = s.call("GET", "/healthz", None, None).await;
    assert_eq!(h.ok(), &serde_json::json!({"status": "ok"}));
    let r = s.call("GET", "/readyz", None, None).await;
    assert_eq!(r.ok(), &serde_json::json!({"status": "ok"}));
    // A database without this version's schema (emptied, or recreated
    // under the server) is not ready: an audit saw `200` from such a one
    // while every request failed. Here its newest migration goes missing.
    execute(
        &s,
        "UPDATE __diesel_schema_migrations SET version = '0' || version \
         WHERE version = (SELECT max(version) FROM __diesel_schema_migrations)",
    );
    // (Why is in the log: the answer names no internals.)
    s.call("GET", "/readyz", None, None)
        .await
        .expect(503, Some("unavailable"));
    execute(
        &s,
        "UPDATE __diesel_schema_migrations SET version = substr(version, 2) \
         WHERE version LIKE '0%'",
    );
    s.call("GET", "/readyz", None, None).await.expect(200, None);

    // Route patterns, never raw paths (which may hold an email).
    let root = s.root().await;
    s.get("/user/users/email/secret.person@example.com", &root)
        .await
        .expect(200, None);
    s.get("/user/users/987654321", &root).await;
    s.get("/no/such/thing", &root).await;
    // Methods of the client's own invention are one series, `other`: a
    // label value the client chose would add a series per request.
    for invented in ["FOO1", "FOO2", "FOO3"] {
        s.call(invented, "/healthz", None, None)
            .await
            .expect(405, Some("method_not_allowed"));
    }
    let m = s.call("GET", "/metrics", None, None).await;
    m.expect(200, None);
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(m.bytes).unwrap();
    for needle in [
        r#"http_requests_total{method="GET",route="/user/users/email/{email}",status="200"} 1"#,
        r#"http_requests_total{method="GET",route="/user/users/{id}",status="404"} 1"#,
        r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"http_requests_total{method="other",route="/healthz",status="405"} 3"#,
        r#"http_request_duration_seconds_bucket{"#,
        r#"logins_total{outcome="success"}"#,
        // The series the example alerts read exist before their first
        // event, at 0: a series that first appears at 1 has no increase.
        r#"mfa_verifications_total{method="AUTHENTICATOR",outcome="replay"} 0"#,
        r#"mfa_verifications_total{method="EMAIL",outcome="failure"} 0"#,
        r#"mfa_lockouts_total{kind="code"} 0"#,
        r#"logins_total{outcome="locked_out"} 0"#,
        "# EOF",
    ] {
        assert!(text.contains(needle), "{needle} not in\n{text}");
    }
    assert!(!text.contains("secret.person"), "{text}");
    assert!(!text.contains("987654321"), "{text}");
    assert!(!text.contains("FOO"), "{text}");

    // The key file was generated once into the data directory, mode 0600
    // (SQLite without MFA_ENCRYPTION_KEY).
    let key = s.data_dir().join("encryption.key");
    if key.exists() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(&key).unwrap();
        assert!(mfa_store::EncryptionKey::from_base64(&text).is_ok());
    }
}

/// Replace the path parameters of a route with plausible values.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{orgId}", "1")
        .replace("{userId}", "1")
        .replace("{email}", "x@example.com")
        .replace("{username}", "x@example.com")
}

async fn openapi_documents_every_route(s: TestServer) {
    let a = s.call("GET", "/api-docs/openapi.json", None, None).await;
    let doc = a.ok().clone();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    // The document lists exactly the routes of the contract.
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            documented.insert((method.to_uppercase(), path.clone()));
            // Every operation says its session level, its security and its
            // errors.
            let session = op["x-session"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}"));
            assert!(["none", "partial", "any", "full"].contains(&session));
            assert!(op["security"].is_array(), "{method} {path}");
            assert!(op["responses"]["500"].is_object(), "{method} {path}");
            assert!(op["summary"].is_string(), "{method} {path}");
            if session != "none" {
                assert!(op["responses"]["401"].is_object(), "{method} {path}");
                assert_eq!(op["security"][0]["bearer"], Value::Array(vec![]));
            }
            if session == "full" {
                let forbidden = op["responses"]["403"]["description"].as_str().unwrap();
                assert!(forbidden.contains("mfa_required"), "{method} {path}");
            }
            // A client honours the back-off only where the document says it
            // comes: every 429, and every 503 but readiness's.
            for status in ["429", "503"] {
                let answer = &op["responses"][status];
                if answer.is_object() && path != "/readyz" {
                    let header = &answer["headers"]["Retry-After"]["schema"]["type"];
                    assert_eq!(header, "integer", "{method} {path} {status}");
                }
            }
        }
    }

    // A generated client can match on the error codes, and finds every
    // field an answer always carries required (null or not).
    let schemas = &doc["components"]["schemas"];
    let codes: Vec<&str> = schemas["ErrorBody"]["properties"]["error"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(codes, mfa_server::error::ERROR_CODES);
    for (name, schema) in schemas.as_object().unwrap() {
        if !name.ends_with("Response") && !name.starts_with("PageResponse") {
            continue;
        }
        let parts = schema["allOf"].as_array().cloned().unwrap_or_default();
        for part in parts.iter().chain([schema]) {
            let required = part["required"].as_array().cloned().unwrap_or_default();
            for property in part["properties"].as_object().into_iter().flatten() {
                let field = format!("{name}.{}", property.0);
                // Left out, not null, when there is no grace period.
                if field == "LoginResponse.setupDueAt" {
                    continue;
                }
                assert!(
                    required.contains(&Value::from(property.0.as_str())),
                    "{field} is always sent but not required"
                );
            }
        }
    }
    let ids = &doc["paths"]["/user/users"]["get"]["parameters"][0];
    assert_eq!(ids["name"], "ids");
    assert_eq!(ids["schema"]["type"], "array");
    assert_eq!(
        (&ids["style"], &ids["explode"]),
        (&"form".into(), &false.into())
    );
    let contract: BTreeSet<(String, String)> = CONTRACT
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = contract.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&contract).collect();
    assert!(
        missing.is_empty(),
        "routes of the contract not documented: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented routes not in the contract: {extra:?}"
    );

    // The routes whose handlers resolve the session themselves take no
    // query or path, which no extractor could hold back until the session
    // is checked. (Their bodies are held back: `tokens` sends a bad token
    // with a body that does not parse to every route.)
    for path in mfa_server::auth::INLINE_SESSION_PATHS {
        let item = doc["paths"][*path]
            .as_object()
            .unwrap_or_else(|| panic!("{path} is not documented"));
        for (method, op) in item {
            let parameters = op["parameters"].as_array().map_or(0, Vec::len);
            assert_eq!(parameters, 0, "{method} {path} takes parameters");
        }
    }

    // Every documented route is served: without a token, a route answers
    // anything but "no such route" (404 not_found from the router, 405).
    // Together with utoipa-actix-web (a handler is registered only through
    // its #[utoipa::path]), registered == documented == the contract.
    for (method, path) in CONTRACT {
        let a = s.call(method, &concrete(path), None, None).await;
        let no_route = a.status == 405
            || (a.status == 404 && a.body["message"] == "no route matches this path");
        assert!(!no_route, "{method} {path} is not served: {a:?}");
        assert!(a.status < 500, "{method} {path}: {a:?}");
    }

    // The security scheme, the error codes and the decisions.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let description = doc["info"]["description"].as_str().unwrap();
    // Every error code is explained in words too.
    let sections = [
        "Decisions where the contract is silent",
        "resendChangeConfirmation",
    ];
    for needle in mfa_server::error::ERROR_CODES.into_iter().chain(sections) {
        assert!(description.contains(needle), "{needle} not described");
    }

    // Swagger UI, from the binary.
    let ui = s.call("GET", "/swagger-ui/", None, None).await;
    ui.expect(200, None);
    let html = String::from_utf8(ui.bytes).unwrap();
    assert!(html.contains("swagger"), "{html}");
    let init = s
        .call("GET", "/swagger-ui/swagger-initializer.js", None, None)
        .await;
    init.expect(200, None);
    let init = String::from_utf8(init.bytes).unwrap();
    assert!(init.contains("/api-docs/openapi.json"), "{init}");
    // No request leaves for swagger.io's validator (an audit saw the
    // page send the document's address there from a host not named
    // localhost).
    assert!(init.contains(r#""validatorUrl": "none""#), "{init}");
    let bundle = s
        .call("GET", "/swagger-ui/swagger-ui-bundle.js", None, None)
        .await;
    bundle.expect(200, None);
    assert!(bundle.bytes.len() > 100_000);
}

/// A database that stopped taking connections: requests are answered
/// `503 unavailable` with `Retry-After` once `MFA_DATABASE_TIMEOUT_SECS`
/// is over (they waited 30 s for a `500` before), readiness says so, and
/// the server serves again once the database does.
#[tokio::test]
async fn an_unreachable_database_answers_503() {
    let Some(db) = mfa_store::test_support::TestDatabase::postgres() else {
        return;
    };
    let s = TestServer::start(
        db,
        &[
            ("MFA_DATABASE_TIMEOUT_SECS", "2"),
            ("MFA_PASSWORD_QUEUE_MAX_WAIT_SECS", "1"),
        ],
    )
    .await;
    let root = s.root().await;
    s.get("/oauth/users/mfaDetails", &root)
        .await
        .expect(200, None);

    s.database().refuse_connections(true);
    // Logins as the outage begins: the account is read before a password
    // thread is taken, so none holds one while it waits for the database.
    // (When the login read it on a password thread, the two threads waited
    // out the timeout and the logins queued behind them were refused with
    // `429 too_many_attempts`, as a throttle: an audit got 56 of 60.)
    let logins: Vec<_> = (0..12)
        .map(|_| {
            let client = s.client.clone();
            let url = s.url("/user/auth/login");
            let body =
                serde_json::json!({"email": crate::helpers::ROOT_EMAIL, "password": "wrong"});
            tokio::spawn(async move { client.post(url).json(&body).send().await })
        })
        .collect();
    for login in logins {
        let answer = TestServer::answer(login.await.unwrap().expect("answered")).await;
        answer.expect(503, Some("unavailable"));
    }
    let read = s.get("/oauth/users/mfaDetails", &root).await;
    read.expect(503, Some("unavailable"));
    assert_eq!(read.header("retry-after"), Some("5"));
    s.call("GET", "/readyz", None, None)
        .await
        .expect(503, Some("unavailable"));
    assert!(
        crate::helpers::captured_logs().contains("database unavailable"),
        "the cause is logged"
    );

    s.database().refuse_connections(false);
    let mut status = 0;
    for _ in 0..20 {
        status = s.get("/oauth/users/mfaDetails", &root).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(
        status, 200,
        "the server serves again once the database does"
    );
    s.call("GET", "/readyz", None, None).await.expect(200, None);
}

/// A transaction beside the server that holds `user`'s row (`FOR UPDATE`)
/// for `hold`, then ends. Returns once the lock is taken.
fn hold_user_row(s: &TestServer, user: i64, hold: Duration) -> std::thread::JoinHandle<()> {
    hold_rows(
        s,
        &format!("SELECT id FROM users WHERE id = {user} FOR UPDATE"),
        hold,
    )
}

/// An admin's write that waits for another row's lock holds its org's: a
/// demotion of that admin waits for it, and never commits while the
/// write runs. (An audit held the target's membership in psql, sent an
/// admin's opt-out, demoted the admin meanwhile, and the opt-out was
/// stored after the demotion, under rights the admin no longer had.)
#[tokio::test]
async fn an_admins_write_in_flight_keeps_its_rights_until_it_commits() {
    let Some(db) = mfa_store::test_support::TestDatabase::postgres() else {
        return;
    };
    let s = TestServer::start(db, &[]).await;
    let root = s.root().await;
    let admin = s.create_user(&root, "ada@example.com", true).await;
    let target = s.create_user(&root, "tom@example.com", false).await;
    let ada = s
        .login("ada@example.com", crate::helpers::PASSWORD)
        .await
        .token;
    let holder = hold_rows(
        &s,
        &format!("SELECT user_id FROM memberships WHERE user_id = {target} FOR UPDATE"),
        Duration::from_millis(2_000),
    );
    let opt_out = {
        let request = s
            .client
            .put(s.url(&format!("/user/users/{target}/membership?byRef=false")))
            .bearer_auth(&ada)
            .json(&serde_json::json!({"mfaOptOut": true}));
        tokio::spawn(async move { request.send().await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.put(
        &format!("/user/users/{admin}/membership?byRef=false"),
        &root,
        serde_json::json!({"isAdmin": false}),
    )
    .await
    .expect(204, None);
    holder.join().expect("the holder");
    TestServer::answer(opt_out.await.unwrap().expect("answered"))
        .await
        .expect(204, None);
    let last = |action: &str| {
        s.query_number(&format!(
            "SELECT max(id) AS n FROM audit_events WHERE action = '{action}'"
        ))
        .expect("an event")
    };
    assert!(
        last("mfa_opt_out") < last("membership_updated"),
        "the opt-out was committed before the demotion"
    );
    // Demoted, the admin's next write is refused.
    s.put(
        &format!("/user/users/{target}/membership?byRef=false"),
        &ada,
        serde_json::json!({"mfaOptOut": false}),
    )
    .await
    .expect(403, Some("forbidden"));
}

/// Hold what `select` locks, in a transaction of its own, for `hold`.
fn hold_rows(s: &TestServer, select: &str, hold: Duration) -> std::thread::JoinHandle<()> {
    use diesel::Connection as _;
    use diesel::connection::SimpleConnection as _;
    let url = s.database().url().to_string();
    let select = select.to_string();
    let (locked, taken) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let mut conn = diesel::PgConnection::establish(&url).expect("PostgreSQL");
        conn.batch_execute(&format!("BEGIN; {select};"))
            .expect("the lock");
        locked.send(()).expect("the test waits");
        std::thread::sleep(hold);
        conn.batch_execute("COMMIT").expect("the lock ends");
    });
    taken
        .recv_timeout(Duration::from_secs(10))
        .expect("the lock was taken");
    holder
}

/// A login waiting for a row lock waits on the general blocking pool, not
/// on a password thread, and at most the database timeout. (When the
/// login's writes ran on the password threads, an audit held one user's
/// row for 9 s: that user's logins took both threads, the logins of
/// everyone else queued behind them were refused with `429`, and the
/// server's other requests waited for the database's connections.)
#[tokio::test]
async fn a_held_row_lock_holds_no_password_thread() {
    let Some(db) = mfa_store::test_support::TestDatabase::postgres() else {
        return;
    };
    let s = TestServer::start(
        db,
        &[
            ("MFA_DATABASE_TIMEOUT_SECS", "3"),
            ("MFA_PASSWORD_QUEUE_MAX_WAIT_SECS", "1"),
        ],
    )
    .await;
    let root = s.root().await;
    let held_email = "held@example.com";
    let held = s.create_user(&root, held_email, false).await;
    let login_of = |email: &'static str| {
        let client = s.client.clone();
        let url = s.url("/user/auth/login");
        let body = serde_json::json!({"email": email, "password": crate::helpers::PASSWORD});
        tokio::spawn(async move { client.post(url).json(&body).send().await })
    };

    // Held for less than the timeout: the held user's logins wait for it
    // (more of them than there are password threads, fewer than the
    // password failures that start a lockout: each is counted until it
    // succeeds), everyone else's go through meanwhile, and the waiting
    // ones succeed once it ends.
    let holder = hold_user_row(&s, held, Duration::from_millis(2_500));
    let waiting: Vec<_> = (0..4).map(|_| login_of("held@example.com")).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(done) = waiting.iter().position(|login| login.is_finished()) {
        let done = waiting.into_iter().nth(done).unwrap();
        let answer = TestServer::answer(done.await.unwrap().expect("answered")).await;
        panic!("a held user's login did not wait for the lock: {answer:?}");
    }
    for _ in 0..3 {
        let beside = TestServer::answer(
            login_of(crate::helpers::ROOT_EMAIL)
                .await
                .unwrap()
                .expect("answered"),
        )
        .await;
        beside.expect(200, None);
    }
    holder.join().expect("the holder");
    for login in waiting {
        let answer = TestServer::answer(login.await.unwrap().expect("answered")).await;
        answer.expect(200, None);
    }

    // Held past the timeout: the login waiting for it answers as an
    // outage, and the server's other requests do not wait.
    let holder = hold_user_row(&s, held, Duration::from_millis(5_000));
    let waiting = login_of("held@example.com");
    s.call("GET", "/readyz", None, None).await.expect(200, None);
    s.get("/oauth/users/mfaDetails", &root)
        .await
        .expect(200, None);
    let answer = TestServer::answer(waiting.await.unwrap().expect("answered")).await;
    answer.expect(503, Some("unavailable"));
    assert_eq!(answer.header("retry-after"), Some("5"));
    holder.join().expect("the holder");
    s.login(held_email, crate::helpers::PASSWORD).await;
}

/// A PostgreSQL server whose requests wait 5 s at most for a lock and
/// whose password checks 1 s at most for a thread, root's token, and the
/// id of held@example.com; `None` without PostgreSQL.
async fn server_with_a_user_to_hold() -> Option<(TestServer, String, i64)> {
    let db = mfa_store::test_support::TestDatabase::postgres()?;
    let s = TestServer::start(
        db,
        &[
            ("MFA_DATABASE_TIMEOUT_SECS", "5"),
            ("MFA_PASSWORD_QUEUE_MAX_WAIT_SECS", "1"),
        ],
    )
    .await;
    let root = s.root().await;
    let held = s.create_user(&root, "held@example.com", false).await;
    Some((s, root, held))
}

type Sent = tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>;

/// Send four requests with `send` while `held`'s row is held for 4 s:
/// they wait for it, three logins of root go through meanwhile (with a
/// password thread held by each waiting request, they were refused
/// `429`), and their answers come once the row is let go.
///
/// The logins start 1.5 s in, when the requests' own hashes (forty for
/// four sets of recovery codes) are done on an idle machine; a login the
/// password queue still refuses is tried again while the row is held.
async fn four_while_held(s: &TestServer, held: i64, send: impl Fn(usize) -> Sent) -> Vec<Answer> {
    let holder = hold_user_row(s, held, Duration::from_millis(4_000));
    let waiting: Vec<_> = (0..4).map(send).collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "the requests did not wait for the held row"
    );
    // A login refused `429` because the requests' own hashes still fill
    // the password queue (a machine busy with other work) is tried again
    // while the row is held; with a password thread held for the lock's
    // wait, none gets in before the row is let go.
    let mut logged_in = 0;
    while logged_in < 3 {
        assert!(
            !holder.is_finished(),
            "root's logins waited for the held row ({logged_in} of 3 in)"
        );
        let body = serde_json::json!({
            "email": crate::helpers::ROOT_EMAIL,
            "password": crate::helpers::PASSWORD,
        });
        let login = s.call("POST", "/user/auth/login", None, Some(body)).await;
        match login.status {
            200 => logged_in += 1,
            429 => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => panic!("login of root: {login:?}"),
        }
    }
    holder.join().expect("the holder");
    let mut answers = Vec::new();
    for w in waiting {
        answers.push(TestServer::answer(w.await.unwrap().expect("answered")).await);
    }
    answers
}

/// New recovery codes for a user whose row is held: the ten argon2 hashes
/// run on the password threads, the wait for the lock on the blocking
/// pool, so everyone else's logins go through meanwhile. (They ran all on
/// the password threads, where four such requests held both threads for
/// the lock's duration and the logins behind them were refused `429`.)
#[tokio::test]
async fn recovery_codes_for_a_held_user_hold_no_password_thread() {
    let Some((s, _, held)) = server_with_a_user_to_hold().await else {
        return;
    };
    let token = s
        .login("held@example.com", crate::helpers::PASSWORD)
        .await
        .token;
    s.enroll_authenticator(&token).await;
    let answers = four_while_held(&s, held, |_| {
        let request = s
            .client
            .post(s.url("/user/users/mfa/recoveryCodes"))
            .bearer_auth(&token);
        tokio::spawn(async move { request.send().await })
    })
    .await;
    // The first stored is shown; the others, begun before it, are refused
    // rather than shown codes it replaced. On a machine busy with other
    // work, the server's 1 s bound on the password queue may refuse one
    // of the four unhashed (`429`) before it waits for the row at all.
    let mut shown = 0;
    for answer in answers {
        match answer.status {
            200 => {
                assert_eq!(answer.body["codes"].as_array().unwrap().len(), 10);
                shown += 1;
            }
            429 => {
                answer.expect(429, Some("too_many_attempts"));
            }
            _ => {
                answer.expect(409, Some("conflict"));
            }
        }
    }
    assert_eq!(shown, 1, "one set shown");
}

/// An admin setting the password of a user whose row is held: the hash
/// runs on the password threads, the wait for the lock on the blocking
/// pool, so everyone else's logins go through meanwhile. (The whole
/// update ran on the password threads, as new recovery codes did.)
#[tokio::test]
async fn a_password_set_for_a_held_user_holds_no_password_thread() {
    let Some((s, root, held)) = server_with_a_user_to_hold().await else {
        return;
    };
    let answers = four_while_held(&s, held, |i| {
        let body = serde_json::json!({"password": format!("a new passphrase number {i}")});
        let request = s
            .client
            .put(s.url(&format!("/user/users/{held}")))
            .bearer_auth(&root)
            .json(&body);
        tokio::spawn(async move { request.send().await })
    })
    .await;
    for answer in answers {
        answer.expect(200, None);
    }
}

/// A database file other users can read (a backup copied back in keeps
/// its mode) is warned about at the start.
#[cfg(unix)]
#[tokio::test]
async fn a_readable_database_file_is_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = TestServer::sqlite().await;
    let file = s.database().sqlite_path().expect("SQLite").to_path_buf();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _twin = s.twin().await;
    assert!(
        crate::helpers::captured_logs().contains("the database file is readable by other users"),
        "the start warns"
    );
}

/// A second server on the same SQLite file starts, and says that several
/// servers on one database are tested on PostgreSQL only.
#[tokio::test]
async fn a_second_server_on_one_sqlite_file_is_warned_about() {
    let s = TestServer::sqlite().await;
    let file = s.database().sqlite_path().expect("SQLite").to_path_buf();
    let claim = std::path::PathBuf::from(format!("{}.server-lock", file.display()));
    assert!(claim.exists(), "the first server holds {}", claim.display());
    let twin = s.twin().await;
    twin.call("GET", "/readyz", None, None)
        .await
        .expect(200, None);
    let file = file.display().to_string();
    assert!(
        crate::helpers::captured_logs().lines().any(|l| l
            .contains("another server process serves this SQLite database")
            && l.contains(&file)),
        "the second start warns"
    );
}

/// Run `sql` on the server's database, beside the server.
fn execute(s: &TestServer, sql: &str) {
    use diesel::prelude::*;
    let db = s.database();
    match db.sqlite_path() {
        Some(path) => {
            let mut conn =
                SqliteConnection::establish(&path.display().to_string()).expect("the SQLite file");
            diesel::sql_query(sql).execute(&mut conn)
        }
        None => {
            let mut conn = PgConnection::establish(db.url()).expect("PostgreSQL");
            diesel::sql_query(sql).execute(&mut conn)
        }
    }
    .expect(sql);
}

/// Admin writes that lock a user take their org's lock first, in every
/// operation: a superadmin adding a user to another org (which locks the
/// user's row) racing an org admin's reset of that user (which locked the
/// user before the org) deadlocked, and PostgreSQL failed one with a 500
/// (an audit: 5 pairs of 30). Pairs at once on two processes: every one
/// answers as asked.
#[tokio::test]
async fn admin_writes_on_one_user_across_orgs_do_not_deadlock() {
    let Some(db) = mfa_store::test_support::TestDatabase::postgres() else {
        return;
    };
    let s = TestServer::start(db, &[]).await;
    let twin = s.twin().await;
    let root = s.root().await;
    let other = s
        .post("/user/org", &root, serde_json::json!({"name": "Other"}))
        .await;
    let other = other.ok()["id"].as_i64().expect("org id");
    s.create_user(&root, "helpdesk@example.com", true).await;
    let helpdesk = twin
        .login("helpdesk@example.com", crate::helpers::PASSWORD)
        .await
        .token;
    for round in 0..20 {
        let user = s
            .create_user(&root, &format!("pair{round}@example.com"), false)
            .await;
        let add = s
            .client
            .post(s.url(&format!("/user/org/{other}/user/{user}")))
            .bearer_auth(&root)
            .json(&serde_json::json!({}));
        let reset = twin
            .client
            .put(twin.url("/user/users/mfa/reset"))
            .bearer_auth(&helpdesk)
            .json(&serde_json::json!({"ids": [user]}));
        let (added, reset) = tokio::join!(add.send(), reset.send());
        TestServer::answer(added.expect("answered"))
            .await
            .expect(201, None);
        TestServer::answer(reset.expect("answered"))
            .await
            .expect(204, None);
    }
}

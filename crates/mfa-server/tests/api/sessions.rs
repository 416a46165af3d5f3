//! Sessions and assurance: partial tokens, their limits and their end,
//! expiry and idle time, logout, lockouts and replays.

use serde_json::json;

use crate::helpers::{Answer, PASSWORD, TestServer};
use crate::on_every_backend;

on_every_backend!(
    partial_token_limits,
    session_lifetimes_and_logout,
    code_lockout_and_replay,
    password_lockout,
    signing_a_user_out_everywhere
);

/// `POST /user/users/{user}/logout` with `token`.
async fn sign_out(s: &TestServer, user: i64, token: &str) -> Answer {
    s.call(
        "POST",
        &format!("/user/users/{user}/logout"),
        Some(token),
        None,
    )
    .await
}

/// `POST /user/users/{id}/logout`: an admin ends all of a member's
/// sessions, in every org, factors untouched; a user ends their other
/// sessions; others are refused, and nothing ends for them.
async fn signing_a_user_out_everywhere(s: TestServer) {
    let root = s.root().await;
    let (org, _, admin) = s
        .org_with_admin(&root, "Signout", "sam@signout.example")
        .await;
    let kim = s.create_user(&admin, "kim@signout.example", false).await;
    s.create_user(&admin, "lee@signout.example", false).await;
    let laptop = s.login("kim@signout.example", PASSWORD).await.token;
    let phone = s.login("kim@signout.example", PASSWORD).await.token;
    let lees = s.login("lee@signout.example", PASSWORD).await.token;

    // Another member may not; a member of another org is not found.
    sign_out(&s, kim, &lees)
        .await
        .expect(403, Some("forbidden"));
    let (_, _, stranger) = s
        .org_with_admin(&root, "Elsewhere", "eve@elsewhere.example")
        .await;
    sign_out(&s, kim, &stranger)
        .await
        .expect(404, Some("not_found"));
    // A body is refused (the route takes none), and so is a bad id.
    s.post(
        &format!("/user/users/{kim}/logout"),
        &admin,
        json!({"all": true}),
    )
    .await
    .expect(400, Some("invalid_request"));
    s.call("POST", "/user/users/0/logout", Some(&admin), None)
        .await
        .expect(400, Some("invalid_request"));
    s.get("/user/users/me", &laptop).await.expect(200, None);

    // The user: every other session ends, this one goes on.
    let own = sign_out(&s, kim, &laptop).await;
    assert_eq!(own.ok()["sessionsEnded"], 1);
    s.get("/user/users/me", &phone)
        .await
        .expect(401, Some("unauthorized"));
    s.get("/user/users/me", &laptop).await.expect(200, None);
    // Again: nothing to end, and nothing in the trail for it.
    let nothing_left = sign_out(&s, kim, &laptop).await;
    assert_eq!(nothing_left.ok()["sessionsEnded"], 0);

    // An admin: all of them, factors untouched.
    s.enroll_authenticator(&laptop).await;
    let again = s.login("kim@signout.example", PASSWORD).await.token;
    let by_admin = sign_out(&s, kim, &admin).await;
    assert_eq!(by_admin.ok()["sessionsEnded"], 2);
    for token in [&laptop, &again] {
        s.get("/user/users/me", token)
            .await
            .expect(401, Some("unauthorized"));
    }
    let none = sign_out(&s, kim, &admin).await;
    assert_eq!(none.ok()["sessionsEnded"], 0);
    let user = s.get(&format!("/user/users/{kim}"), &admin).await;
    assert_eq!(user.ok()["mfa"]["methods"], json!(["AUTHENTICATOR"]));
    s.get("/user/users/me", &lees).await.expect(200, None);

    // Only a superadmin signs a superadmin out.
    let root_id = s.get("/user/users/me", &root).await.ok()["id"]
        .as_i64()
        .unwrap();
    sign_out(&s, root_id, &admin)
        .await
        .expect(403, Some("forbidden"));

    // The trail: who, whom, how many, from where.
    let query = format!("action=sessions_ended&userId={kim}");
    let details = s.audit_details(&admin, &query).await;
    assert_eq!(
        details,
        [
            "no session was open; by an admin",
            "2 sessions ended by an admin",
            "1 other session ended by the user",
        ]
    );
    let trail = s.get(&format!("/user/audit?{query}"), &admin).await;
    assert_eq!(trail.ok()["items"][0]["orgId"], org);
    assert_eq!(trail.body["items"][0]["clientAddress"], "127.0.0.1");
}

async fn partial_token_limits(s: TestServer) {
    let root = s.root().await;
    let dave = s.create_user(&root, "dave@example.com", false).await;
    s.enforce(&root, true).await;
    let login = s.login("dave@example.com", PASSWORD).await;
    assert_eq!(login.mfa, "setup_required");
    let partial = login.token;

    // Partial ok: me, mfaDetails. Full only: everything else.
    let me = s.get("/user/users/me", &partial).await;
    assert_eq!(me.ok()["email"], "dave@example.com");
    assert_eq!(me.body["memberships"][0]["orgId"], s.root_org);
    for (method, path) in [
        ("GET", format!("/user/users/{dave}")),
        ("GET", format!("/user/org/{}", s.root_org)),
        ("POST", "/user/users/mfa/recoveryCodes".to_string()),
        ("GET", "/user/audit".to_string()),
        (
            "PUT",
            "/users/dave@example.com/mfa/resetQRCodeEnroll".to_string(),
        ),
    ] {
        s.call(method, &path, Some(&partial), None)
            .await
            .expect(403, Some("mfa_required"));
    }
    s.put("/user/users/me/mfa", &partial, json!({"mfaOptIn": true}))
        .await
        .expect(403, Some("mfa_required"));
    // A challenge needs an enrolled email factor.
    s.post(
        "/user/auth/mfa/challenge",
        &partial,
        json!({"method": "EMAIL"}),
    )
    .await
    .expect(409, Some("not_enrolled"));
    // Verify needs an enrolled authenticator.
    s.post(
        "/user/auth/mfa/verify",
        &partial,
        json!({"method": "AUTHENTICATOR", "code": "123456"}),
    )
    .await
    .expect(409, Some("not_enrolled"));
    // validateCode without a pending secret.
    s.post(
        "/user/users/mfa/validateCode",
        &partial,
        json!({"code": "123456"}),
    )
    .await
    .expect(409, Some("not_enrolled"));

    // The partial session ends after 10 minutes.
    s.advance(601);
    s.get("/user/users/me", &partial)
        .await
        .expect(401, Some("unauthorized"));

    // A pending secret expires after 10 minutes (seen from a full session).
    let secret = s.start_authenticator(&root).await;
    s.advance(601);
    s.post(
        "/user/users/mfa/validateCode",
        &root,
        json!({"code": s.totp(&secret)}),
    )
    .await
    .expect(400, Some("code_expired"));

    // A partial token may log out.
    let partial = s.login("dave@example.com", PASSWORD).await.token;
    s.call("POST", "/user/auth/logout", Some(&partial), None)
        .await
        .expect(204, None);
    s.get("/user/users/me", &partial)
        .await
        .expect(401, Some("unauthorized"));
}

async fn session_lifetimes_and_logout(s: TestServer) {
    let root = s.root().await;
    s.create_user(&root, "erin@example.com", false).await;
    let erin = s.login("erin@example.com", PASSWORD).await;
    assert_eq!(erin.mfa, "none");
    assert!(erin.body.get("setupDueAt").is_none());
    let expires = erin.body["expiresAt"].as_str().unwrap();
    assert_eq!(
        expires,
        mfa_server::wire::rfc3339(mfa_core::Timestamp(s.now() as i64 + 43_200))
    );

    // Logout revokes the token at once.
    s.call("POST", "/user/auth/logout", Some(&erin.token), None)
        .await
        .expect(204, None);
    s.get("/user/users/me", &erin.token)
        .await
        .expect(401, Some("unauthorized"));
    s.call("POST", "/user/auth/logout", Some(&erin.token), None)
        .await
        .expect(401, Some("unauthorized"));

    // 30 minutes idle ends a full session; use keeps it alive.
    let t = s.login("erin@example.com", PASSWORD).await.token;
    for _ in 0..3 {
        s.advance(20 * 60);
        s.get("/user/users/me", &t).await.expect(200, None);
    }
    s.advance(31 * 60);
    s.get("/user/users/me", &t)
        .await
        .expect(401, Some("unauthorized"));

    // The absolute lifetime: 12 hours, however busy.
    let t = s.login("erin@example.com", PASSWORD).await.token;
    let end = s.now() + 43_200;
    while s.now() + 29 * 60 < end {
        s.advance(29 * 60);
        s.get("/user/users/me", &t).await.expect(200, None);
    }
    s.advance((end - s.now()) as i64);
    s.get("/user/users/me", &t)
        .await
        .expect(401, Some("unauthorized"));
}

async fn code_lockout_and_replay(s: TestServer) {
    let root = s.root().await;
    s.create_user(&root, "fay@example.com", false).await;
    let fay = s.login("fay@example.com", PASSWORD).await.token;
    let secret = s.enroll_authenticator(&fay).await;
    s.put("/user/users/me/mfa", &fay, json!({"mfaOptIn": true}))
        .await
        .expect(204, None);

    // A replayed code (a step already accepted) is refused and reported.
    let code = s.totp(&secret);
    let first = s.login("fay@example.com", PASSWORD).await;
    assert_eq!(first.mfa, "challenge_required");
    s.post(
        "/user/auth/mfa/verify",
        &first.token,
        json!({"method": "AUTHENTICATOR", "code": code}),
    )
    .await
    .expect(200, None);
    let second = s.login("fay@example.com", PASSWORD).await;
    s.post(
        "/user/auth/mfa/verify",
        &second.token,
        json!({"method": "AUTHENTICATOR", "code": code}),
    )
    .await
    .expect(400, Some("invalid_code"));
    assert!(
        s.mails_to("fay@example.com").len() >= 2,
        "replay warning not mailed"
    );

    // Malformed codes are invalid codes, and count: with the replay, the
    // fifth failure in a row starts a lockout of 30 s.
    for bad in ["12345", " 123456", "１２３４５６"] {
        s.post(
            "/user/auth/mfa/verify",
            &second.token,
            json!({"method": "AUTHENTICATOR", "code": bad}),
        )
        .await
        .expect(400, Some("invalid_code"));
    }
    let fifth = s
        .post(
            "/user/auth/mfa/verify",
            &second.token,
            json!({"method": "AUTHENTICATOR", "code": "1234567"}),
        )
        .await;
    fifth.expect(429, Some("too_many_attempts"));
    assert_eq!(fifth.header("retry-after"), Some("30"));

    // Locked out: even a right code is refused, with Retry-After.
    let locked = s
        .post(
            "/user/auth/mfa/verify",
            &second.token,
            json!({"method": "AUTHENTICATOR", "code": s.totp(&secret)}),
        )
        .await;
    locked.expect(429, Some("too_many_attempts"));
    let retry: u64 = locked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    let metrics = s.metrics().await;
    for (outcome, n) in [("replay", 1), ("failure", 3), ("locked_out", 2)] {
        let line =
            format!(r#"mfa_verifications_total{{method="AUTHENTICATOR",outcome="{outcome}"}} {n}"#);
        assert!(metrics.contains(&line), "{line} not in {metrics}");
    }

    // After the delay the right code works and the count starts again.
    s.advance(retry as i64 + 30);
    let fresh = s.login("fay@example.com", PASSWORD).await;
    s.post(
        "/user/auth/mfa/verify",
        &fresh.token,
        json!({"method": "AUTHENTICATOR", "code": s.totp(&secret)}),
    )
    .await
    .expect(200, None);

    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"mfa_lockouts_total{kind="code"} 2"#),
        "{metrics}"
    );
    let audit = s.get("/user/audit?action=locked_out", &root).await;
    assert!(audit.ok()["total"].as_u64().unwrap() >= 1);
    let audit = s.get("/user/audit?action=replay_refused", &root).await;
    assert_eq!(audit.ok()["total"], 1);
}

async fn password_lockout(s: TestServer) {
    let root = s.root().await;
    s.create_user(&root, "gus@example.com", false).await;
    let wrong = json!({"email": "gus@example.com", "password": "wrong password"});
    let unknown = json!({"email": "nobody@example.com", "password": "wrong password"});

    // Unknown email and wrong password: the same answer.
    let a = s
        .call("POST", "/user/auth/login", None, Some(unknown.clone()))
        .await;
    a.expect(401, Some("invalid_credentials"));
    let b = s
        .call("POST", "/user/auth/login", None, Some(wrong.clone()))
        .await;
    b.expect(401, Some("invalid_credentials"));
    assert_eq!(a.body, b.body);

    for _ in 0..3 {
        s.call("POST", "/user/auth/login", None, Some(wrong.clone()))
            .await
            .expect(401, Some("invalid_credentials"));
    }
    let locked = s
        .call("POST", "/user/auth/login", None, Some(wrong.clone()))
        .await;
    locked.expect(429, Some("too_many_attempts"));
    assert_eq!(locked.header("retry-after"), Some("30"));
    let right = json!({"email": "gus@example.com", "password": PASSWORD});
    s.call("POST", "/user/auth/login", None, Some(right.clone()))
        .await
        .expect(429, Some("too_many_attempts"));
    s.advance(31);
    s.call("POST", "/user/auth/login", None, Some(right))
        .await
        .expect(200, None);
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"mfa_lockouts_total{kind="password"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"logins_total{outcome="invalid_credentials"} 5"#),
        "{metrics}"
    );
}

mod ended_sessions_are_purged_by_the_server {
    use mfa_store::test_support::TestDatabase;

    use crate::helpers::TestServer;

    #[tokio::test]
    async fn sqlite() {
        super::ended_sessions_are_purged_by_the_server(TestDatabase::sqlite()).await;
    }

    #[tokio::test]
    async fn postgres() {
        if let Some(db) = TestDatabase::postgres() {
            super::ended_sessions_are_purged_by_the_server(db).await;
        }
    }

    #[tokio::test]
    async fn audit_events_sqlite() {
        super::old_audit_events_and_confirmed_email_changes_are_purged(TestDatabase::sqlite())
            .await;
    }

    #[tokio::test]
    async fn audit_events_postgres() {
        if let Some(db) = TestDatabase::postgres() {
            super::old_audit_events_and_confirmed_email_changes_are_purged(db).await;
        }
    }

    /// The rows of the sessions table.
    pub fn session_rows(s: &TestServer) -> i64 {
        rows(s, "sessions")
    }

    /// The rows of `table`.
    pub fn rows(s: &TestServer, table: &str) -> i64 {
        s.query_number(&format!("SELECT count(*) AS n FROM {table}"))
            .unwrap_or(0)
    }
}

/// The server purges ended sessions by itself, every
/// `MFA_PURGE_INTERVAL_SECS`: a logged-out, an idle and a
/// replaced session are gone once they ended more than an hour ago.
async fn ended_sessions_are_purged_by_the_server(db: mfa_store::test_support::TestDatabase) {
    use ended_sessions_are_purged_by_the_server::session_rows;
    use std::time::{Duration, Instant};

    let s = TestServer::start(db, &[("MFA_PURGE_INTERVAL_SECS", "1")]).await;
    let root = s.root().await;
    s.create_user(&root, "gone@example.com", false).await;
    let out = s.login("gone@example.com", PASSWORD).await.token;
    s.call("POST", "/user/auth/logout", Some(&out), None)
        .await
        .expect(204, None);
    s.login("gone@example.com", PASSWORD).await; // never used: goes idle
    let live = s.login("gone@example.com", PASSWORD).await.token;
    assert!(session_rows(&s) >= 4, "the root's, and three");

    // Two hours on, using only `live` (every 20 minutes, well inside the
    // idle timeout): everything but `live` ended over an hour ago.
    for _ in 0..6 {
        s.advance(20 * 60);
        s.get("/user/users/me", &live).await.expect(200, None);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while session_rows(&s) > 1 {
        assert!(Instant::now() < deadline, "no purge within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(session_rows(&s), 1);
    s.get("/user/users/me", &live).await.expect(200, None);
    for gone in [&out, &root] {
        s.get("/user/users/me", gone).await.expect(401, None);
    }
}

/// With `MFA_AUDIT_RETENTION_DAYS=1` the same purge deletes the audit
/// events older than a day, and no younger one; a confirmed email change
/// goes an hour after its confirmation.
async fn old_audit_events_and_confirmed_email_changes_are_purged(
    db: mfa_store::test_support::TestDatabase,
) {
    use ended_sessions_are_purged_by_the_server::rows;

    let s = TestServer::start(
        db,
        &[
            ("MFA_PURGE_INTERVAL_SECS", "1"),
            ("MFA_AUDIT_RETENTION_DAYS", "1"),
        ],
    )
    .await;
    // Day 0: events, and an email change confirmed at once.
    let root = s.root().await;
    let moved = s.create_user(&root, "moving@example.com", false).await;
    let opt_out = |on: bool| json!({ "mfaOptOut": on });
    s.put(
        &format!("/user/users/{moved}/membership"),
        &root,
        opt_out(true),
    )
    .await
    .expect(204, None);
    s.put(
        &format!("/user/users/{moved}"),
        &root,
        json!({"email": "moved@example.com"}),
    )
    .await
    .expect(200, None);
    let token = s.last_token("moved@example.com");
    s.call(
        "POST",
        "/user/users/email/confirmChange",
        None,
        Some(json!({ "token": token })),
    )
    .await
    .expect(204, None);
    let day_zero_events = rows(&s, "audit_events");
    assert!(day_zero_events >= 3, "{day_zero_events}");
    assert_eq!(rows(&s, "email_changes"), 1);

    // Two hours on: the confirmed change goes, the events stay.
    s.advance(2 * 3600);
    wait_until("the confirmed email change", || {
        rows(&s, "email_changes") == 0
    })
    .await;
    assert_eq!(rows(&s, "audit_events"), day_zero_events);

    // New events two hours into day 0; 23 hours on, only they are left.
    let root = s.root().await;
    s.put(
        &format!("/user/users/{moved}/membership"),
        &root,
        opt_out(false),
    )
    .await
    .expect(204, None);
    let later_events = rows(&s, "audit_events") - day_zero_events;
    assert!(later_events >= 1);
    s.advance(23 * 3600);
    wait_until("day 0's audit events", || {
        rows(&s, "audit_events") == later_events
    })
    .await;
    let root = s.root().await;
    let page = s.get("/user/audit?size=200", &root).await;
    page.expect(200, None);
    let actions: Vec<&str> = page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(!actions.contains(&"email_changed"), "{actions:?}");
}

/// Wait, 30 s at most, until `done`: a purge runs every second.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: no purge within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

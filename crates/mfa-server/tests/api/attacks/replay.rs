//! Replay: an accepted authenticator code, email code or recovery code is
//! refused the second time, also when 16 requests race with it on one
//! server, and when they race on two server processes sharing one
//! database.

use serde_json::json;

use super::{audit_count, challenged_user, partial, race, statuses, verify};
use crate::helpers::{Answer, PASSWORD, TestServer};
use crate::on_every_backend;

on_every_backend!(
    authenticator_code_is_single_use,
    email_code_is_single_use,
    recovery_code_is_single_use,
    racing_replays_on_one_server,
    racing_replays_on_two_servers,
    racing_sends_mail_one_code,
);

/// Mails to `email` whose subject contains `phrase`.
fn mails_about(s: &TestServer, email: &str, phrase: &str) -> usize {
    s.mails_to(email)
        .iter()
        .filter(|m| m.subject().is_some_and(|t| t.contains(phrase)))
        .count()
}

/// Exactly one answer is 200; every other one is a refusal of the code
/// (`400 invalid_code`) or of the attempt (`429 too_many_attempts`).
#[track_caller]
fn exactly_one_winner(answers: &[Answer]) -> usize {
    let winners: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i].status == 200)
        .collect();
    assert_eq!(winners.len(), 1, "{:?}", statuses(answers));
    for a in answers.iter().filter(|a| a.status != 200) {
        assert!(
            (a.status == 400 && a.error() == "invalid_code")
                || (a.status == 429 && a.error() == "too_many_attempts"),
            "{a:?}"
        );
    }
    winners[0]
}

async fn authenticator_code_is_single_use(s: TestServer) {
    let root = s.root().await;
    let email = "rita@example.com";
    let (id, secret, _) = challenged_user(&s, &root, email).await;

    // Accepted once on one session, refused on another.
    let code = s.totp(&secret);
    let first = partial(&s, email).await;
    let full = verify(&s, &first, "AUTHENTICATOR", &code).await;
    full.expect(200, None);
    let second = partial(&s, email).await;
    verify(&s, &second, "AUTHENTICATOR", &code)
        .await
        .expect(400, Some("invalid_code"));
    // The same session, and the code of the step before (still inside the
    // window, but older than the step accepted).
    let earlier = mfa_totp::totp(&secret, s.now() - 30, &mfa_totp::TotpParams::default());
    verify(&s, &second, "AUTHENTICATOR", &earlier)
        .await
        .expect(400, Some("invalid_code"));
    // Refused twice: audited as replays, and mailed once for both (an
    // audit got five mails in a second from racing replays); the partial
    // token is still only partial.
    assert_eq!(audit_count(&s, &root, id, "replay_refused").await, 2);
    assert_eq!(
        mails_about(&s, email, "reused authenticator code was refused"),
        1
    );
    // And counted apart from wrong codes.
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"mfa_verifications_total{method="AUTHENTICATOR",outcome="replay"} 2"#),
        "{metrics}"
    );
    s.get(&format!("/user/users/{id}"), &second)
        .await
        .expect(403, Some("mfa_required"));
    // A replay a minute after the last is mailed again.
    s.advance(mfa_core::service::REPLAY_NOTICE_INTERVAL_SECS + 1);
    let code = s.totp(&secret);
    let third = partial(&s, email).await;
    verify(&s, &third, "AUTHENTICATOR", &code)
        .await
        .expect(200, None);
    verify(&s, &second, "AUTHENTICATOR", &code)
        .await
        .expect(400, Some("invalid_code"));
    assert_eq!(audit_count(&s, &root, id, "replay_refused").await, 3);
    assert_eq!(
        mails_about(&s, email, "reused authenticator code was refused"),
        2
    );

    // The code that confirmed the enrollment cannot log in either.
    let email = "rory@example.com";
    s.create_user(&root, email, false).await;
    let rory = s.login(email, PASSWORD).await.token;
    s.put("/user/users/me/mfa", &rory, json!({"mfaOptIn": true}))
        .await
        .expect(204, None);
    let secret = s.start_authenticator(&rory).await;
    let code = s.totp(&secret);
    s.post("/user/users/mfa/validateCode", &rory, json!({"code": code}))
        .await
        .expect(204, None);
    let p = partial(&s, email).await;
    verify(&s, &p, "AUTHENTICATOR", &code)
        .await
        .expect(400, Some("invalid_code"));
    // The next step's code is fine.
    s.advance(30);
    verify(&s, &p, "AUTHENTICATOR", &s.totp(&secret))
        .await
        .expect(200, None);
}

/// A user with a verified email factor who owes MFA at every login.
async fn email_user(s: &TestServer, root: &str, email: &str) -> i64 {
    let id = s.create_user(root, email, false).await;
    let full = s.login(email, PASSWORD).await.token;
    s.call(
        "PUT",
        "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
        Some(&full),
        None,
    )
    .await
    .expect(200, None);
    let code = s.last_code(email);
    s.put(
        "/oauth/users/mfa/verifyEmail",
        &full,
        json!({"mfatype": "EMAIL", "totp": code}),
    )
    .await
    .expect(200, None);
    // The enrollment code is spent: not even a second enrollment takes it.
    let again = s
        .put(
            "/oauth/users/mfa/verifyEmail",
            &full,
            json!({"mfatype": "EMAIL", "totp": code}),
        )
        .await;
    again.expect(409, Some("already_enrolled"));
    assert_eq!(
        again.body["message"],
        "the email factor is already verified"
    );
    s.put("/user/users/me/mfa", &full, json!({"mfaOptIn": true}))
        .await
        .expect(204, None);
    // At most one code per 30 s.
    s.advance(31);
    id
}

/// Ask for a login code on a partial session and read it from the mail.
async fn email_challenge(s: &TestServer, token: &str, email: &str) -> String {
    s.post(
        "/user/auth/mfa/challenge",
        token,
        json!({"method": "EMAIL"}),
    )
    .await
    .expect(200, None);
    s.last_code(email)
}

async fn email_code_is_single_use(s: TestServer) {
    let root = s.root().await;
    let email = "emil@example.com";
    let id = email_user(&s, &root, email).await;
    let enroll_code = s.last_code(email);

    // The enrollment code does not log in: no login code was sent yet
    // (and that is not counted as a wrong code).
    let first = partial(&s, email).await;
    verify(&s, &first, "EMAIL", &enroll_code)
        .await
        .expect(409, Some("not_enrolled"));

    let code = email_challenge(&s, &first, email).await;
    verify(&s, &first, "EMAIL", &code).await.expect(200, None);
    let second = partial(&s, email).await;
    verify(&s, &second, "EMAIL", &code)
        .await
        .expect(400, Some("invalid_code"));

    // A new code voids the previous one, even unused.
    s.advance(31);
    let voided = email_challenge(&s, &second, email).await;
    s.advance(31);
    let current = email_challenge(&s, &second, email).await;
    if voided != current {
        verify(&s, &second, "EMAIL", &voided)
            .await
            .expect(400, Some("invalid_code"));
    }
    verify(&s, &second, "EMAIL", &current)
        .await
        .expect(200, None);
    assert_eq!(audit_count(&s, &root, id, "mfa_verify_succeeded").await, 2);
}

async fn recovery_code_is_single_use(s: TestServer) {
    let root = s.root().await;
    let email = "remy@example.com";
    let (id, _, full) = challenged_user(&s, &root, email).await;
    let codes = recovery_codes(&s, &full).await;

    let first = partial(&s, email).await;
    verify(&s, &first, "RECOVERY", &codes[0])
        .await
        .expect(200, None);
    // Used: audited and mailed once.
    assert_eq!(audit_count(&s, &root, id, "recovery_code_used").await, 1);
    assert_eq!(mails_about(&s, email, "a recovery code was used"), 1);
    let second = partial(&s, email).await;
    verify(&s, &second, "RECOVERY", &codes[0])
        .await
        .expect(400, Some("invalid_code"));
    // Nor does a used code reset the authenticator.
    s.post(
        "/users/mfa/resetMyQRCodeEnroll",
        &second,
        json!({"recoveryCode": codes[0]}),
    )
    .await
    .expect(400, Some("invalid_code"));

    // Regenerating voids the whole old set.
    let full = verify(&s, &second, "RECOVERY", &codes[1]).await;
    let full = full.ok()["token"].as_str().unwrap().to_string();
    let fresh = recovery_codes(&s, &full).await;
    let third = partial(&s, email).await;
    verify(&s, &third, "RECOVERY", &codes[2])
        .await
        .expect(400, Some("invalid_code"));
    verify(&s, &third, "RECOVERY", &fresh[0])
        .await
        .expect(200, None);
    assert_eq!(audit_count(&s, &root, id, "recovery_code_used").await, 3);
}

/// A new set of recovery codes.
async fn recovery_codes(s: &TestServer, full: &str) -> Vec<String> {
    let rc = s
        .call("POST", "/user/users/mfa/recoveryCodes", Some(full), None)
        .await;
    rc.expect(200, None);
    let codes: Vec<String> = rc.body["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10);
    codes
}

/// 16 partial sessions of `email`.
async fn partials(s: &TestServer, email: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for _ in 0..16 {
        tokens.push(partial(s, email).await);
    }
    tokens
}

/// 16 verifications of the same code at once on `servers`, alternating;
/// exactly one wins, and only its token is full.
async fn race_one_code(
    servers: &[&TestServer],
    user: i64,
    tokens: &[String],
    method: &str,
    code: &str,
) {
    let requests = tokens
        .iter()
        .map(|t| {
            (
                "POST",
                "/user/auth/mfa/verify".to_string(),
                Some(t.clone()),
                Some(json!({"method": method, "code": code})),
            )
        })
        .collect();
    let answers = race(servers, requests).await;
    let winner = exactly_one_winner(&answers);
    let full = answers[winner].body["token"].as_str().unwrap();
    for s in servers {
        s.get(&format!("/user/users/{user}"), full)
            .await
            .expect(200, None);
    }
    for (i, t) in tokens.iter().enumerate() {
        let a = servers[0].get(&format!("/user/users/{user}"), t).await;
        if i == winner {
            // The winning partial token is revoked by the upgrade.
            a.expect(401, Some("unauthorized"));
        } else {
            a.expect(403, Some("mfa_required"));
        }
    }
}

/// The three kinds of code raced on `servers`; `root` is the superadmin's
/// token.
async fn race_every_kind(servers: &[&TestServer], prefix: &str) {
    let s = servers[0];
    let root = s.root().await;

    // Authenticator.
    let email = format!("{prefix}.totp@example.com");
    let (id, secret, full) = challenged_user(s, &root, &email).await;
    let tokens = partials(s, &email).await;
    race_one_code(servers, id, &tokens, "AUTHENTICATOR", &s.totp(&secret)).await;
    assert_eq!(audit_count(s, &root, id, "mfa_verify_succeeded").await, 1);

    // Recovery code.
    let codes = recovery_codes(s, &full).await;
    // The losers of the race above count as failures: wait out the lockout.
    s.advance(15 * 60);
    let root = s.root().await;
    let tokens = partials(s, &email).await;
    race_one_code(servers, id, &tokens, "RECOVERY", &codes[3]).await;
    assert_eq!(audit_count(s, &root, id, "recovery_code_used").await, 1);

    // Email code.
    s.advance(15 * 60);
    let root = s.root().await;
    let email = format!("{prefix}.email@example.com");
    let id = email_user(s, &root, &email).await;
    let tokens = partials(s, &email).await;
    let code = email_challenge(s, &tokens[0], &email).await;
    race_one_code(servers, id, &tokens, "EMAIL", &code).await;
    assert_eq!(audit_count(s, &root, id, "mfa_verify_succeeded").await, 1);
}

async fn racing_replays_on_one_server(s: TestServer) {
    race_every_kind(&[&s], "one").await;
}

async fn racing_replays_on_two_servers(s: TestServer) {
    let twin = s.twin().await;
    race_every_kind(&[&s, &twin], "two").await;
}

/// 16 requests for an email code at once, on two processes: one code is
/// mailed and the others are throttled (`429`), as "at most one send per
/// 30 s per user" says; for login codes and for enrollment codes. Before
/// the fix, on PostgreSQL, 2 to 4 of them each mailed a code.
async fn racing_sends_mail_one_code(s: TestServer) {
    let twin = s.twin().await;
    let root = s.root().await;
    let check = |answers: &[Answer]| {
        let sent = answers.iter().filter(|a| a.status == 200).count();
        assert_eq!(sent, 1, "{:?}", statuses(answers));
        for a in answers.iter().filter(|a| a.status != 200) {
            a.expect(429, Some("too_many_attempts"));
            assert!(a.header("retry-after").is_some());
        }
    };
    let send_all = |tokens: &[String], method: &'static str, path: &'static str| {
        tokens
            .iter()
            .map(|t| {
                let body = (method == "POST").then(|| json!({"method": "EMAIL"}));
                (method, path.to_string(), Some(t.clone()), body)
            })
            .collect::<Vec<_>>()
    };

    // Login codes, from 16 partial sessions, in three rounds 31 s apart.
    let email = "flood.login@example.com";
    email_user(&s, &root, email).await;
    let tokens = partials(&s, email).await;
    for round in 0..3 {
        let mailed = s.mails_to(email).len();
        let requests = send_all(&tokens, "POST", "/user/auth/mfa/challenge");
        check(&race(&[&s, &twin], requests).await);
        assert_eq!(s.mails_to(email).len(), mailed + 1, "round {round}");
        s.advance(31);
    }

    // Enrollment codes, from 16 full sessions of a user with no factor.
    let email = "flood.enroll@example.com";
    s.create_user(&root, email, false).await;
    let mut tokens = Vec::new();
    for _ in 0..16 {
        tokens.push(s.login(email, PASSWORD).await.token);
    }
    let requests = send_all(&tokens, "PUT", "/oauth/users/mfa/enrollEmail?mfatype=EMAIL");
    check(&race(&[&s, &twin], requests).await);
    assert_eq!(s.mails_to(email).len(), 1);
}

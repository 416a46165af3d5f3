//! The attacks that have hit MFA servers and identity providers, each
//! made against the real server over HTTP, on SQLite and on PostgreSQL.
//! `docs/SECURITY.md` names the rule each test proves.
//!
//! | module | attack |
//! |---|---|
//! | [`replay`] | an accepted authenticator, email or recovery code used again, also by 16 racing requests on one or two server processes |
//! | [`brute_force`] | guessing codes and passwords: the lockout across sessions, logins and processes, and under concurrency |
//! | [`partial_token`] | a pre-MFA token on every route that needs a full session, enumerated from the OpenAPI document |
//! | [`cross_org`] | an admin of one org against the users, memberships and org of another |
//! | [`interleaving`] | two requests about one user interleaved inside PostgreSQL: a confirmation beside a new secret, a code check beside a reset, a login and a self-service password change beside an admin's new password, two admins changing one org or one membership, two admins demoting each other |
//! | [`overwrite`] | replacing a verified factor without a reset; a self reset with only a password |
//! | [`code_format`] | codes with spaces, extra digits or non-ASCII digits |
//! | [`secrets`] | secrets at rest in the database, and secrets in the log at every level |
//! | [`tokens`] | revoked, expired and idle tokens, and tokens outside the header |
//! | [`fuzz`] | generated requests to every route: never a 5xx or a non-JSON error |

mod brute_force;
mod code_format;
mod cross_org;
mod fuzz;
mod interleaving;
mod overwrite;
mod partial_token;
mod replay;
pub mod schema;
mod secrets;
mod tokens;

use mfa_totp::Secret;
use serde_json::{Value, json};

use crate::helpers::{Answer, PASSWORD, TestServer};

/// A user in the current org of `admin` who owes MFA at every login
/// (personal opt-in) and has a verified authenticator. Returns the user's
/// id, its secret and a full token opened before the opt-in.
pub async fn challenged_user(s: &TestServer, admin: &str, email: &str) -> (i64, Secret, String) {
    let id = s.create_user(admin, email, false).await;
    let full = s.login(email, PASSWORD).await.token;
    let secret = s.enroll_authenticator(&full).await;
    s.put("/user/users/me/mfa", &full, json!({"mfaOptIn": true}))
        .await
        .expect(204, None);
    (id, secret, full)
}

/// Log in and expect a partial token that owes a challenge.
pub async fn partial(s: &TestServer, email: &str) -> String {
    let login = s.login(email, PASSWORD).await;
    assert_eq!(login.mfa, "challenge_required", "{:?}", login.body);
    login.token
}

/// Verify a code on a partial session.
pub async fn verify(s: &TestServer, token: &str, method: &str, code: &str) -> Answer {
    s.post(
        "/user/auth/mfa/verify",
        token,
        json!({"method": method, "code": code}),
    )
    .await
}

/// Send `requests` (method, path, token, body) at once, request `i` to
/// `servers[i % servers.len()]`, and return the answers in order.
pub async fn race(
    servers: &[&TestServer],
    requests: Vec<(&str, String, Option<String>, Option<Value>)>,
) -> Vec<Answer> {
    let mut tasks = Vec::new();
    for (i, (method, path, token, body)) in requests.into_iter().enumerate() {
        let server = servers[i % servers.len()];
        let mut req = server.client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            server.url(&path),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        tasks.push(tokio::spawn(async move {
            TestServer::answer(req.send().await.expect("request")).await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    answers
}

/// The statuses of answers, for messages.
pub fn statuses(answers: &[Answer]) -> Vec<(u16, String)> {
    answers
        .iter()
        .map(|a| (a.status, a.error().to_string()))
        .collect()
}

/// The audit events of the current org of `admin` with this action about
/// `user`.
pub async fn audit_count(s: &TestServer, admin: &str, user: i64, action: &str) -> u64 {
    let a = s
        .get(
            &format!("/user/audit?userId={user}&action={action}&size=200"),
            admin,
        )
        .await;
    a.ok()["total"].as_u64().unwrap()
}

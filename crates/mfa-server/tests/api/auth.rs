//! The login decision over HTTP: org choice, inactive memberships, personal
//! opt-in, the enrollment grace period.

use serde_json::json;

use crate::helpers::{PASSWORD, TestServer};
use crate::on_every_backend;

on_every_backend!(login_decision, grace_period);

async fn login_decision(s: TestServer) {
    let root = s.root().await;
    let hal = s.create_user(&root, "hal@example.com", false).await;
    let (other_org, _, other_admin) = s.org_with_admin(&root, "Other", "olga@example.com").await;

    // Emails are case-insensitive; the default org is the lowest active one.
    let l = s.login("HAL@Example.com", PASSWORD).await;
    assert_eq!(l.body["orgId"], s.root_org);
    assert_eq!(l.body["methods"], json!([]));

    // orgId picks the membership; not a member: 403.
    let a = s
        .call(
            "POST",
            "/user/auth/login",
            None,
            Some(json!({"email": "hal@example.com", "password": PASSWORD, "orgId": other_org})),
        )
        .await;
    a.expect(403, Some("forbidden"));
    // The right password was given: its holder is told why.
    assert_eq!(
        a.body["message"],
        "this account is not a member of that org"
    );
    s.call(
        "POST",
        &format!("/user/org/{other_org}/user/{hal}"),
        Some(&other_admin),
        None,
    )
    .await
    .expect(404, Some("not_found"));
    // Add hal to the other org (root can see everyone) with MFA enforced there.
    let root_other = s
        .login_org(crate::helpers::ROOT_EMAIL, PASSWORD, other_org)
        .await
        .token;
    s.call(
        "POST",
        &format!("/user/org/{other_org}/user/{hal}"),
        Some(&root_other),
        None,
    )
    .await
    .expect(201, None);
    s.enforce(&other_admin, true).await;
    let l = s.login_org("hal@example.com", PASSWORD, other_org).await;
    assert_eq!(l.mfa, "setup_required");
    assert_eq!(l.body["orgId"], other_org);
    let l = s.login("hal@example.com", PASSWORD).await;
    assert_eq!(l.mfa, "none", "the root org does not enforce");

    // An inactive membership cannot log in, and deactivation ends sessions.
    let session = l.token;
    s.put(
        &format!("/user/users/{hal}/membership"),
        &root,
        json!({"isActive": false}),
    )
    .await
    .expect(204, None);
    s.get("/user/users/me", &session)
        .await
        .expect(401, Some("unauthorized"));
    let trail = s
        .get(
            &format!("/user/audit?userId={hal}&action=membership_updated&size=1"),
            &root,
        )
        .await;
    assert_eq!(
        trail.ok()["items"][0]["detail"],
        "isActive=false; 2 sessions in the org ended"
    );
    let a = s
        .call(
            "POST",
            "/user/auth/login",
            None,
            Some(json!({"email": "hal@example.com", "password": PASSWORD, "orgId": s.root_org})),
        )
        .await;
    a.expect(403, Some("forbidden"));
    assert_eq!(
        a.body["message"],
        "this account's access to the org is disabled: an admin of the org can enable it again"
    );
    // The org's admins see the attempt: right password, no session.
    let tried = s
        .get(
            &format!("/user/audit?userId={hal}&action=login_failed&size=1"),
            &root,
        )
        .await;
    let tried = &tried.ok()["items"][0];
    assert_eq!(
        tried["detail"],
        "right password, no session: this account's access to the org is disabled: \
         an admin of the org can enable it again"
    );
    assert_eq!(
        (&tried["actorUserId"], &tried["orgId"]),
        (&json!(hal), &json!(s.root_org))
    );
    // Without orgId the lowest active membership is taken.
    let l = s.login("hal@example.com", PASSWORD).await;
    assert_eq!(l.body["orgId"], other_org);
    // Disabled in every org: said so, whichever org it would have been.
    let other_flags = format!("/user/users/{hal}/membership");
    s.put(&other_flags, &root_other, json!({"isActive": false}))
        .await
        .expect(204, None);
    let a = s
        .call(
            "POST",
            "/user/auth/login",
            None,
            Some(json!({"email": "hal@example.com", "password": PASSWORD})),
        )
        .await;
    a.expect(403, Some("forbidden"));
    assert_eq!(
        a.body["message"],
        "this account's access is disabled in each of its orgs"
    );
    s.put(&other_flags, &root_other, json!({"isActive": true}))
        .await
        .expect(204, None);

    // Personal opt-in: MFA at the next login where nothing is enforced.
    s.put(
        &format!("/user/users/{hal}/membership"),
        &root,
        json!({"isActive": true}),
    )
    .await
    .expect(204, None);
    let full = s.login("hal@example.com", PASSWORD).await.token;
    s.put("/user/users/me/mfa", &full, json!({"mfaOptIn": true}))
        .await
        .expect(204, None);
    s.put("/user/users/me/mfa", &full, json!({"mfaOptIn": "yes"}))
        .await
        .expect(400, Some("invalid_request"));
    let u = s.get(&format!("/user/users/{hal}"), &full).await;
    assert_eq!(u.ok()["mfaOptIn"], true);
    assert!(u.body["lastLoginAt"].as_str().unwrap().ends_with('Z'));
    let l = s.login("hal@example.com", PASSWORD).await;
    assert_eq!(l.mfa, "setup_required");
    // The membership's opt-out still wins.
    s.put(
        &format!("/user/users/{hal}/membership"),
        &root,
        json!({"mfaOptOut": true}),
    )
    .await
    .expect(204, None);
    let l = s.login("hal@example.com", PASSWORD).await;
    assert_eq!(l.mfa, "none");
}

async fn grace_period(s: TestServer) {
    let root = s.root().await;
    s.create_user(&root, "ivy@example.com", false).await;
    let org = s.root_org;
    s.put(
        &format!("/user/org/{org}"),
        &root,
        json!({"mfaGracePeriodHours": 24}),
    )
    .await
    .expect(200, None);
    s.put(
        &format!("/user/org/{org}"),
        &root,
        json!({"mfaGracePeriodHours": 8761}),
    )
    .await
    .expect(400, Some("invalid_request"));
    s.put(
        &format!("/user/org/{org}"),
        &root,
        json!({"mfaGracePeriodHours": -1}),
    )
    .await
    .expect(400, Some("invalid_request"));
    s.enforce(&root, true).await;

    let l = s.login("ivy@example.com", PASSWORD).await;
    assert_eq!(l.mfa, "none");
    let due = mfa_server::wire::rfc3339(mfa_core::Timestamp(s.now() as i64 + 24 * 3600));
    assert_eq!(l.body["setupDueAt"], due);
    // A whole session's life (12 h) before the grace period ends.
    assert_eq!(
        l.body["expiresAt"],
        mfa_server::wire::rfc3339(mfa_core::Timestamp(s.now() as i64 + 12 * 3600))
    );

    // An hour before the end: the session ends with the grace period
    // (found by an audit: it lasted its 12 h without a factor).
    s.advance(23 * 3600);
    let late = s.login("ivy@example.com", PASSWORD).await;
    assert_eq!(late.mfa, "none");
    assert_eq!(late.body["setupDueAt"], due);
    assert_eq!(late.body["expiresAt"], due);
    s.get("/user/users/me", &late.token).await.expect(200, None);

    s.advance(3600);
    s.get("/user/users/me", &late.token)
        .await
        .expect(401, Some("unauthorized"));
    let l = s.login("ivy@example.com", PASSWORD).await;
    assert_eq!(l.mfa, "setup_required");
    assert!(l.body.get("setupDueAt").is_none());
}

/// A login storm beyond what the cores can hash, with
/// `MFA_PASSWORD_QUEUE_MAX_WAIT_SECS=1` and hashes of a good part of a
/// second: the logins the pool can answer within the bound succeed, the
/// others are refused with `429 too_many_attempts` and `Retry-After`,
/// instead of waiting in a queue that grows for as long as the storm
/// lasts. Every refusal is counted, and afterwards logins go through.
#[tokio::test]
async fn a_login_storm_beyond_capacity_is_refused_with_retry_after() {
    use crate::helpers::ROOT_EMAIL;

    let s = TestServer::sqlite_with(&[
        ("MFA_PASSWORD_HASH", "m=32768,t=8,p=1"),
        ("MFA_PASSWORD_QUEUE_MAX_WAIT_SECS", "1"),
    ])
    .await;
    let value = |metrics: &str, name: &str| -> usize {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    const SUCCESS: &str = r#"logins_total{outcome="success"} "#;
    let logins_before = value(&s.metrics().await, SUCCESS);
    const LOGINS: usize = 64;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..LOGINS {
        let (client, url) = (s.client.clone(), s.url("/user/auth/login"));
        tasks.spawn(async move {
            let res = client
                .post(url)
                .json(&json!({"email": ROOT_EMAIL, "password": PASSWORD}))
                .send()
                .await
                .expect("an answer to every login");
            TestServer::answer(res).await
        });
    }
    let (mut logged_in, mut refused) = (0, 0);
    while let Some(answer) = tasks.join_next().await {
        let a = answer.expect("login task");
        match a.status {
            200 => logged_in += 1,
            429 => {
                refused += 1;
                a.expect(429, Some("too_many_attempts"));
                let retry_after: u64 = a
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no Retry-After in seconds: {a:?}"));
                assert!(retry_after >= 1, "{a:?}");
                let message = a.body["message"].as_str().unwrap_or_default();
                assert!(message.contains("password checks queued"), "{a:?}");
            }
            _ => panic!("a login storm answers 200 or 429: {a:?}"),
        }
    }
    assert_eq!(logged_in + refused, LOGINS);
    assert!(logged_in >= 1, "the first logins are hashed at once");
    assert!(
        refused >= 1,
        "{LOGINS} hashes are more than a second's work"
    );

    let metrics = s.metrics().await;
    assert_eq!(value(&metrics, "mfa_password_jobs_refused_total "), refused);
    assert_eq!(value(&metrics, "mfa_password_queue_jobs "), 0);
    assert_eq!(value(&metrics, SUCCESS), logins_before + logged_in);

    // The storm is over: the queue is empty and a login is answered.
    s.login(ROOT_EMAIL, PASSWORD).await;
}

//! The audit trail says where each event came from: the client address of
//! its request (the one a trusted balancer names), filterable, with a
//! cursor that pages back without repeats.

use serde_json::{Value, json};

use crate::helpers::{Answer, PASSWORD, TestServer};
use crate::on_every_backend;

/// Behind a balancer on loopback, as deployment.md sets one up.
const BEHIND_A_BALANCER: &[(&str, &str)] = &[("MFA_TRUSTED_PROXIES", "127.0.0.0/8, ::1")];

on_every_backend!(with super::BEHIND_A_BALANCER; the_trail_says_where_each_event_came_from);
on_every_backend!(a_cursor_pages_back_without_repeats);

/// A request as the balancer forwards it for `client`.
async fn from_client(
    s: &TestServer,
    client: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut req = s
        .client
        .request(method.parse().unwrap(), s.url(path))
        .header("X-Forwarded-For", client);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    TestServer::answer(req.send().await.unwrap()).await
}

/// The events of `query` in the admin's org, newest first.
async fn events(s: &TestServer, admin: &str, query: &str) -> Vec<Value> {
    let page = s.get(&format!("/user/audit?size=200&{query}"), admin).await;
    page.ok()["items"].as_array().unwrap().clone()
}

async fn the_trail_says_where_each_event_came_from(s: TestServer) {
    let root = s.root().await;
    let (_, _, admin) = s
        .org_with_admin(&root, "Whence", "wanda@whence.example")
        .await;
    let user = s.create_user(&admin, "walt@whence.example", false).await;

    // An admin's change: the client the balancer named.
    from_client(
        &s,
        "198.51.100.20",
        "PUT",
        "/user/org/mfa",
        Some(&admin),
        Some(json!({"isMfaEnforced": true})),
    )
    .await
    .expect(204, None);
    let enforced = events(&s, &admin, "action=mfa_enforced").await;
    assert_eq!(
        enforced[0]["clientAddress"], "198.51.100.20",
        "{enforced:?}"
    );

    // A wrong password: from its client, by no one signed in, against the
    // account.
    from_client(
        &s,
        "203.0.113.66",
        "POST",
        "/user/auth/login",
        None,
        Some(json!({"email": "walt@whence.example", "password": "not the password"})),
    )
    .await
    .expect(401, Some("invalid_credentials"));
    let failed = events(&s, &admin, "action=login_failed").await;
    let [failed] = &failed[..] else {
        panic!("one failed login: {failed:?}")
    };
    assert_eq!(failed["clientAddress"], "203.0.113.66");
    assert_eq!(failed["actorUserId"], Value::Null);
    assert_eq!(failed["targetUserId"], user);

    // The login and the code of the second step, each from its client
    // (on PostgreSQL the code takes the one-statement path).
    let partial = from_client(
        &s,
        "2001:db8::7",
        "POST",
        "/user/auth/login",
        None,
        Some(json!({"email": "walt@whence.example", "password": PASSWORD})),
    )
    .await;
    let partial = partial.ok()["token"].as_str().unwrap().to_string();
    let secret = s.start_authenticator(&partial).await;
    let enrolled = from_client(
        &s,
        "2001:db8::8",
        "POST",
        "/user/users/mfa/validateCode",
        Some(&partial),
        Some(json!({"code": s.totp(&secret)})),
    )
    .await;
    enrolled.expect(200, None);
    s.advance(30);
    let second = s.login("walt@whence.example", PASSWORD).await.token;
    from_client(
        &s,
        "2001:db8::9",
        "POST",
        "/user/auth/mfa/verify",
        Some(&second),
        Some(json!({"method": "AUTHENTICATOR", "code": s.totp(&secret)})),
    )
    .await
    .expect(200, None);
    let client_of = |events: &[Value], action: &str| {
        events
            .iter()
            .find(|e| e["action"] == action)
            .map(|e| e["clientAddress"].clone())
            .unwrap_or_else(|| panic!("no {action} in {events:?}"))
    };
    let mine = events(&s, &admin, &format!("userId={user}")).await;
    assert_eq!(client_of(&mine, "mfa_verify_succeeded"), "2001:db8::9");
    assert_eq!(client_of(&mine, "authenticator_enrolled"), "2001:db8::8");
    let logins: Vec<&Value> = mine
        .iter()
        .filter(|e| e["action"] == "login_succeeded")
        .map(|e| &e["clientAddress"])
        .collect();
    // The plain login came through the balancer without a client named.
    assert_eq!(logins, [&Value::Null, &json!("2001:db8::7")]);

    // Filtered by address; an IPv4-mapped IPv6 address is its IPv4 one.
    for spelling in ["203.0.113.66", "::ffff:203.0.113.66"] {
        let from = events(&s, &admin, &format!("clientAddress={spelling}")).await;
        let actions: Vec<&Value> = from.iter().map(|e| &e["action"]).collect();
        assert_eq!(actions, [&json!("login_failed")], "{spelling}");
    }
    let from = events(&s, &admin, "clientAddress=2001:0db8:0:0::9").await;
    assert_eq!(from.len(), 1, "{from:?}");
    for bad in ["somewhere", "203.0.113.300", "10.0.0.0/8", ""] {
        s.get(&format!("/user/audit?clientAddress={bad}"), &admin)
            .await
            .expect(400, Some("invalid_request"));
    }
}

/// Paging by `beforeId` goes on where the last page ended, however many
/// events arrive meanwhile; paging by `page` repeats them.
async fn a_cursor_pages_back_without_repeats(s: TestServer) {
    let root = s.root().await;
    let (_, _, admin) = s.org_with_admin(&root, "Pages", "pia@pages.example").await;
    let user = s.create_user(&admin, "pete@pages.example", false).await;
    let reset = || async {
        s.put("/user/users/mfa/reset", &admin, json!({"ids": [user]}))
            .await
            .expect(204, None);
    };
    for _ in 0..5 {
        reset().await;
    }
    let all = events(&s, &admin, "action=mfa_reset").await;
    let ids = |events: &[Value]| -> Vec<i64> {
        events.iter().map(|e| e["id"].as_i64().unwrap()).collect()
    };
    let first = s.get("/user/audit?action=mfa_reset&size=2", &admin).await;
    let first = ids(first.ok()["items"].as_array().unwrap());
    assert_eq!(first, ids(&all)[..2]);
    // Two more events before the next page is asked for.
    reset().await;
    reset().await;
    let by_offset = s
        .get("/user/audit?action=mfa_reset&size=2&page=1", &admin)
        .await;
    assert_eq!(ids(by_offset.ok()["items"].as_array().unwrap()), first);
    let mut seen = first.clone();
    let mut cursor = *first.last().unwrap();
    for _ in 0..5 {
        let page = s
            .get(
                &format!("/user/audit?action=mfa_reset&size=2&beforeId={cursor}"),
                &admin,
            )
            .await;
        let page = ids(page.ok()["items"].as_array().unwrap());
        let Some(&last) = page.last() else { break };
        seen.extend(page);
        cursor = last;
    }
    assert_eq!(seen, ids(&all), "every event once, newest first");
    for bad in ["0", "-1", "x", "01"] {
        s.get(&format!("/user/audit?beforeId={bad}"), &admin)
            .await
            .expect(400, Some("invalid_request"));
    }
}

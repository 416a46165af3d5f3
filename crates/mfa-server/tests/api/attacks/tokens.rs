//! Tokens: logout, an admin reset, a deactivation and a password set by an
//! admin end sessions at once, on every server process; expired and idle
//! sessions are refused; a token is only taken from the `Authorization`
//! header; a bad token is refused before any input is looked at.

use serde_json::json;

use super::schema::{document, operations};
use super::{challenged_user, partial, verify};
use crate::helpers::{PASSWORD, TestServer};
use crate::on_every_backend;

on_every_backend!(
    revocation_is_immediate_everywhere,
    expiry_and_idle_time,
    token_only_in_the_header,
    a_bad_token_is_refused_before_any_input
);

/// The token is refused on both processes.
async fn refused(servers: &[&TestServer], token: &str) {
    for s in servers {
        s.get("/user/users/me", token)
            .await
            .expect(401, Some("unauthorized"));
    }
}

/// The token works on both processes.
async fn accepted(servers: &[&TestServer], token: &str) {
    for s in servers {
        s.get("/user/users/me", token).await.expect(200, None);
    }
}

async fn revocation_is_immediate_everywhere(s: TestServer) {
    let twin = s.twin().await;
    let both = [&s, &twin];
    let root = s.root().await;
    let email = "tom@example.com";
    let (id, secret, full) = challenged_user(&s, &root, email).await;

    // Logout, of a full and of a partial token, on the other process.
    accepted(&both, &full).await;
    twin.call("POST", "/user/auth/logout", Some(&full), None)
        .await
        .expect(204, None);
    refused(&both, &full).await;
    let p = partial(&s, email).await;
    twin.call("POST", "/user/auth/logout", Some(&p), None)
        .await
        .expect(204, None);
    refused(&both, &p).await;
    verify(&s, &p, "AUTHENTICATOR", &s.totp(&secret))
        .await
        .expect(401, Some("unauthorized"));

    // An admin reset ends every session of the user, full and partial.
    let p = partial(&s, email).await;
    let v = verify(&s, &p, "AUTHENTICATOR", &s.totp(&secret)).await;
    let full = v.ok()["token"].as_str().unwrap().to_string();
    let p = partial(&twin, email).await;
    accepted(&both, &full).await;
    s.put("/user/users/mfa/reset", &root, json!({"ids": [id]}))
        .await
        .expect(204, None);
    refused(&both, &full).await;
    refused(&both, &p).await;

    // From here on the user owes no MFA at login (opted out by the
    // admin), so that every login is a full session.
    s.put(
        &format!("/user/users/{id}/membership"),
        &root,
        json!({"mfaOptOut": true}),
    )
    .await
    .expect(204, None);

    // The authenticator reset by username, likewise.
    let full = s.login(email, PASSWORD).await.token;
    s.enroll_authenticator(&full).await;
    let other = s.login(email, PASSWORD).await;
    assert_eq!(other.mfa, "none");
    twin.call(
        "PUT",
        &format!("/users/{email}/mfa/resetQRCodeEnroll"),
        Some(&root),
        None,
    )
    .await
    .expect(200, None);
    refused(&both, &full).await;
    refused(&both, &other.token).await;

    // Deactivating the membership; a password set by an admin.
    let full = s.login(email, PASSWORD).await.token;
    accepted(&both, &full).await;
    s.put(
        &format!("/user/users/{id}/membership"),
        &root,
        json!({"isActive": false}),
    )
    .await
    .expect(204, None);
    refused(&both, &full).await;
    s.put(
        &format!("/user/users/{id}/membership"),
        &root,
        json!({"isActive": true}),
    )
    .await
    .expect(204, None);
    refused(&both, &full).await;
    let full = s.login(email, PASSWORD).await.token;
    let new_password = "set by the admin 123";
    twin.put(
        &format!("/user/users/{id}"),
        &root,
        json!({"password": new_password}),
    )
    .await
    .expect(200, None);
    refused(&both, &full).await;

    // A self reset ends the user's other sessions, not the current one.
    let first = s.login(email, new_password).await.token;
    let secret = s.enroll_authenticator(&first).await;
    // The second session owes no MFA; it verifies a code to change factors.
    let unverified = s.login(email, new_password).await.token;
    let second = verify(&s, &unverified, "AUTHENTICATOR", &s.totp(&secret)).await;
    let second = second.ok()["token"].as_str().unwrap().to_string();
    s.call(
        "POST",
        "/users/mfa/resetMyQRCodeEnroll",
        Some(&second),
        None,
    )
    .await
    .expect(200, None);
    refused(&both, &first).await;
    accepted(&both, &second).await;
}

async fn expiry_and_idle_time(s: TestServer) {
    let twin = s.twin().await;
    let both = [&s, &twin];
    let root = s.root().await;
    let email = "ida@example.com";
    let (_, _, _) = challenged_user(&s, &root, email).await;
    let plain = "plain@example.com";
    s.create_user(&root, plain, false).await;

    // A partial session ends after 10 minutes, used or not.
    let p = partial(&s, email).await;
    s.advance(5 * 60);
    accepted(&both, &p).await;
    s.advance(5 * 60);
    refused(&both, &p).await;

    // 30 minutes idle end a full session.
    let t = s.login(plain, PASSWORD).await.token;
    s.advance(29 * 60);
    accepted(&both, &t).await;
    s.advance(31 * 60);
    refused(&both, &t).await;

    // The absolute lifetime, 12 hours, however busy the session.
    let t = s.login(plain, PASSWORD).await.token;
    let end = s.now() + 12 * 3600;
    while s.now() + 25 * 60 < end {
        s.advance(25 * 60);
        accepted(&both, &t).await;
    }
    s.advance((end - s.now()) as i64);
    refused(&both, &t).await;
    // Logging in again works, of course.
    let t = s.login(plain, PASSWORD).await.token;
    accepted(&both, &t).await;
}

async fn token_only_in_the_header(s: TestServer) {
    let root = s.root().await;
    let a = s.login("root@example.com", PASSWORD).await.token;
    // At least 128 random bits, and never the same twice.
    assert_ne!(a, root);
    assert!(a.len() >= 22, "{a}");
    for (path, header) in [
        (format!("/user/users/me?access_token={root}"), None),
        (format!("/user/users/me?token={root}"), None),
        (
            "/user/users/me".to_string(),
            Some(("cookie", format!("token={root}"))),
        ),
        (
            "/user/users/me".to_string(),
            Some(("authorization", root.clone())),
        ),
        (
            "/user/users/me".to_string(),
            Some(("authorization", format!("Basic {root}"))),
        ),
        (
            "/user/users/me".to_string(),
            Some(("authorization", format!("Bearer {root}x"))),
        ),
        (
            "/user/users/me".to_string(),
            Some((
                "authorization",
                format!("Bearer {}", &root[..root.len() - 1]),
            )),
        ),
    ] {
        let mut req = s.client.get(s.url(&path));
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        let a = TestServer::answer(req.send().await.unwrap()).await;
        a.expect(401, Some("unauthorized"));
        assert_eq!(a.header("www-authenticate"), Some("Bearer"), "{path}");
    }
    s.get("/user/users/me", &root).await.expect(200, None);
}

/// On every route that needs a session, an unknown or revoked token gets
/// `401` whatever comes with it: a path id, a query or a body that does
/// not parse would each be a `400` with a good token. The routes come from
/// the served OpenAPI document, including those that resolve their
/// session in the handler.
async fn a_bad_token_is_refused_before_any_input(s: TestServer) {
    let doc = document(&s).await;
    let ops: Vec<_> = operations(&doc)
        .into_iter()
        .filter(|o| o.session != "none")
        .collect();
    assert!(ops.len() >= 35, "only {} routes found", ops.len());
    let revoked = s.login("root@example.com", PASSWORD).await.token;
    s.call("POST", "/user/auth/logout", Some(&revoked), None)
        .await
        .expect(204, None);
    for op in &ops {
        let mut path = op.path.clone();
        for p in op.params("path") {
            let name = p["name"].as_str().unwrap();
            path = path.replace(&format!("{{{name}}}"), "not-an-id");
        }
        let path = format!("{path}?no_such_parameter=1");
        for token in ["not-a-real-token", revoked.as_str()] {
            let a = s
                .call_raw(
                    &op.method,
                    &path,
                    Some(token),
                    Some("application/json"),
                    b"{\"unknown\": [".to_vec(),
                )
                .await;
            assert_eq!(a.status, 401, "{} {path}: {a:?}", op.method);
            a.expect(401, Some("unauthorized"));
        }
    }
}

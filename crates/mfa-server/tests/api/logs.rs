//! The log never holds a token, a secret, a code, a password or a full
//! email address, and has one line per request with the route pattern.

use serde_json::json;

use crate::helpers::{PASSWORD, TestServer, captured_logs};
use crate::on_every_backend;

on_every_backend!(no_secrets_in_the_log);

/// The log line of the request answered with `id` in `X-Request-Id`.
fn request_line(id: &str) -> String {
    let wanted = format!("request_id=\"{id}\"");
    let logs = captured_logs();
    let mut lines = logs.lines().filter(|line| line.contains(&wanted));
    let line = lines
        .next()
        .unwrap_or_else(|| panic!("no line with {wanted}"))
        .to_string();
    assert!(lines.next().is_none(), "two lines with {wanted}");
    line
}

/// Each request's line says where it came from, under which id (answered
/// in `X-Request-Id`) and, once its session or login named one, whose it
/// was: "where did last night's failed codes come from" is answered from
/// the audit event's user and time and these lines. Without trusted
/// proxies, `X-Forwarded-For` and `X-Request-Id` are anyone's words and
/// not taken.
#[tokio::test]
async fn each_request_line_says_whence_and_whose() {
    let s = TestServer::sqlite().await;
    let root = s.root().await;
    let me = s.get("/user/users/me", &root).await;
    let root_id = me.ok()["id"].as_i64().unwrap();
    let sent = s
        .client
        .get(s.url("/oauth/users/mfaDetails"))
        .bearer_auth(&root)
        .header("X-Forwarded-For", "203.0.113.9")
        .header("X-Request-Id", "forged-by-a-client")
        .send()
        .await
        .unwrap();
    let id = sent.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(id, "forged-by-a-client");
    let line = request_line(&id);
    assert!(
        line.contains("client=127.0.0.1") && line.contains(&format!("user={root_id}")),
        "{line}"
    );
    assert!(!line.contains("203.0.113.9"), "{line}");

    // A wrong code at the second step: its line names the session's user.
    let person = s.create_user(&root, "whence@example.com", false).await;
    let login = s.login("whence@example.com", PASSWORD).await;
    s.enroll_authenticator(&login.token).await;
    s.put(
        "/user/users/me/mfa",
        &login.token,
        json!({"mfaOptIn": true}),
    )
    .await
    .expect(204, None);
    let partial = s.login("whence@example.com", PASSWORD).await;
    let refused = s
        .client
        .post(s.url("/user/auth/mfa/verify"))
        .bearer_auth(&partial.token)
        .json(&json!({"method": "AUTHENTICATOR", "code": "000000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let id = refused.headers()["x-request-id"].to_str().unwrap();
    assert!(
        request_line(id).contains(&format!("user={person}")),
        "{}",
        request_line(id)
    );
    // A login's line names whose password it was.
    let logged_in = s
        .client
        .post(s.url("/user/auth/login"))
        .json(&json!({"email": "whence@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let id = logged_in.headers()["x-request-id"].to_str().unwrap();
    assert!(
        request_line(id).contains(&format!("user={person}")),
        "{}",
        request_line(id)
    );

    // Behind a trusted balancer: the client it names, and its request id.
    let behind = TestServer::sqlite_with(&[("MFA_TRUSTED_PROXIES", "127.0.0.0/8, ::1")]).await;
    let sent = behind
        .client
        .get(behind.url("/healthz"))
        .header("X-Forwarded-For", "198.51.100.1, 203.0.113.9")
        .header("X-Request-Id", "lb-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(sent.headers()["x-request-id"], "lb-7f3a");
    let line = request_line("lb-7f3a");
    assert!(line.contains("client=203.0.113.9"), "{line}");
    assert!(!line.contains("user="), "{line}");
}

async fn no_secrets_in_the_log(s: TestServer) {
    let email = "logged.person@example.com";
    let root = s.root().await;
    let id = s.create_user(&root, email, false).await;
    let full = s.login(email, PASSWORD).await.token;

    // An authenticator, an email factor, recovery codes, an email change.
    let t = s
        .call(
            "POST",
            "/user/users/mfa/generateTempSecret",
            Some(&full),
            None,
        )
        .await;
    let secret_b32 = t.body["secret"].as_str().unwrap().to_string();
    let secret = mfa_totp::Secret::from_base32(&secret_b32).unwrap();
    let totp = s.totp(&secret);
    s.post("/user/users/mfa/validateCode", &full, json!({"code": totp}))
        .await
        .expect(204, None);
    s.call(
        "PUT",
        "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
        Some(&full),
        None,
    )
    .await
    .expect(200, None);
    let email_code = s.last_code(email);
    s.put(
        "/oauth/users/mfa/verifyEmail",
        &full,
        json!({"mfatype": "EMAIL", "totp": email_code}),
    )
    .await
    .expect(200, None);
    let rc = s
        .call("POST", "/user/users/mfa/recoveryCodes", Some(&full), None)
        .await;
    let recovery: Vec<String> = rc.body["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    s.put(
        &format!("/user/users/{id}"),
        &full,
        json!({"email": "logged.new@example.com", "currentPassword": PASSWORD}),
    )
    .await
    .expect(200, None);
    let change_token = s.last_token("logged.new@example.com");

    // A challenge and a partial token.
    s.put("/user/users/me/mfa", &full, json!({"mfaOptIn": true}))
        .await
        .expect(204, None);
    s.advance(30);
    let partial = s.login(email, PASSWORD).await.token;
    let login_code = s.totp(&secret);
    let v = s
        .post(
            "/user/auth/mfa/verify",
            &partial,
            json!({"method": "AUTHENTICATOR", "code": login_code}),
        )
        .await;
    let second_full = v.body["token"].as_str().unwrap().to_string();
    // Failures and emails in paths.
    s.post(
        "/user/auth/login",
        &partial,
        json!({"email": email, "password": "a wrong password"}),
    )
    .await;
    s.get(&format!("/user/users/email/{email}"), &root).await;
    s.call(
        "PUT",
        &format!("/users/{email}/mfa/resetQRCodeEnroll"),
        Some(&root),
        None,
    )
    .await
    .expect(200, None);

    let logs = captured_logs();
    assert!(
        logs.contains(r#"route="/user/users/email/{email}""#),
        "no request line with the route pattern"
    );
    assert!(
        logs.contains("l***@example.com"),
        "emails are logged masked"
    );
    let mut secrets = vec![
        root.clone(),
        full.clone(),
        partial.clone(),
        second_full.clone(),
        secret_b32.clone(),
        totp.clone(),
        email_code.clone(),
        login_code.clone(),
        change_token.clone(),
        PASSWORD.to_string(),
        "a wrong password".to_string(),
        email.to_string(),
        "logged.new@example.com".to_string(),
    ];
    secrets.extend(recovery);
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "the log holds {secret:?}");
    }
}

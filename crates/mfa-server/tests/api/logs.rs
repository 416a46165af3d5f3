//! The log never holds a token, a secret, a code, a password or a full
//! email address, and has one line per request with the route pattern.

use serde_json::json;

use crate::helpers::{PASSWORD, TestServer, captured_logs};
use crate::on_every_backend;

on_every_backend!(no_secrets_in_the_log);

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

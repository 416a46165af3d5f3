//! Mail over real SMTP: a dead mail server leaves no code valid and no
//! email change pending, and answers 503; outside production the issuer
//! carries the environment.

use serde_json::json;

use crate::helpers::{PASSWORD, TestServer};

#[tokio::test]
async fn mail_server_down_is_503_and_leaves_no_code() {
    let s = TestServer::sqlite().await;
    let root = s.root().await;
    s.create_user(&root, "pat@example.com", false).await;
    let pat = s.login("pat@example.com", PASSWORD).await.token;

    s.smtp.set_failing(true);
    let a = s
        .call(
            "PUT",
            "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
            Some(&pat),
            None,
        )
        .await;
    a.expect(503, Some("mail_unavailable"));
    assert!(!a.body["message"].as_str().unwrap().contains("127.0.0.1"));

    // Nothing was sent, so no code may verify; the throttle did not start.
    s.smtp.set_failing(false);
    s.put(
        "/oauth/users/mfa/verifyEmail",
        &pat,
        json!({"mfatype": "EMAIL", "totp": "123456"}),
    )
    .await
    .expect(400, Some("invalid_code"));
    s.call(
        "PUT",
        "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
        Some(&pat),
        None,
    )
    .await
    .expect(200, None);
}

#[tokio::test]
async fn sandbox_issuer_is_marked() {
    let s = TestServer::sqlite_with(&[("MFA_ENVIRONMENT", "sandbox")]).await;
    let root = s.root().await;
    let t = s.generate_temp_secret(&root).await;
    t.expect(200, None);
    let uri = t.body["otpauthUri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Acme%20%28sandbox%29:root%40example.com?"),
        "{uri}"
    );
    assert!(uri.contains("&issuer=Acme%20%28sandbox%29&"), "{uri}");
}

/// An email change whose link could not be mailed is withdrawn: nothing
/// stays pending, and the next attempt is not held up by the 30 s limit.
#[tokio::test]
async fn a_change_link_that_could_not_be_sent_is_withdrawn() {
    let s = TestServer::sqlite().await;
    let root = s.root().await;
    let pat = s.create_user(&root, "pat@example.com", false).await;
    let token = s.login("pat@example.com", PASSWORD).await.token;
    let change = json!({"email": "pat@new.example", "currentPassword": PASSWORD});

    s.smtp.set_failing(true);
    s.put(&format!("/user/users/{pat}"), &token, change.clone())
        .await
        .expect(503, Some("mail_unavailable"));
    s.smtp.set_failing(false);
    s.call(
        "POST",
        "/user/users/email/resendChangeConfirmation",
        Some(&token),
        None,
    )
    .await
    .expect(404, Some("not_found"));
    s.put(&format!("/user/users/{pat}"), &token, change)
        .await
        .expect(200, None);
    let link = s.last_token("pat@new.example");
    s.call(
        "POST",
        "/user/users/email/confirmChange",
        None,
        Some(json!({"token": link})),
    )
    .await
    .expect(204, None);
    assert_eq!(
        s.get(&format!("/user/users/{pat}"), &root).await.ok()["email"],
        "pat@new.example"
    );
}

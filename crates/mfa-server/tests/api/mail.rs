//! Mail over real SMTP: a dead mail server leaves no code valid and
//! answers 503; outside production the issuer carries the environment.

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

//! Overwriting a verified factor without a reset is refused
//! (`409 already_enrolled`), and a partial session, that is a password
//! alone, neither adds a factor nor removes one (a recovery code aside).

use serde_json::json;

use super::{challenged_user, partial, verify};
use crate::helpers::{PASSWORD, TestServer};
use crate::on_every_backend;

on_every_backend!(
    verified_factor_is_not_overwritten,
    self_reset_needs_more_than_a_password
);

/// The caller's factors as `mfaDetails` shows them.
async fn details(s: &TestServer, token: &str) -> (bool, bool) {
    let d = s.get("/oauth/users/mfaDetails", token).await;
    let d = d.ok();
    (
        d["details"]["AUTHENTICATOR"]["verified"].as_bool().unwrap(),
        d["details"]["EMAIL"]["verified"].as_bool().unwrap(),
    )
}

async fn verified_factor_is_not_overwritten(s: TestServer) {
    let root = s.root().await;
    let email = "otto@example.com";
    let (_, secret, full) = challenged_user(&s, &root, email).await;

    // Full session: every way to a new authenticator secret is refused.
    s.call(
        "POST",
        "/user/users/mfa/generateTempSecret",
        Some(&full),
        None,
    )
    .await
    .expect(409, Some("already_enrolled"));
    for accept in ["application/json", "image/png"] {
        let a = s
            .client
            .put(s.url("/users/mfa/associateQRCode?mfatype=AUTHENTICATOR"))
            .bearer_auth(&full)
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        TestServer::answer(a)
            .await
            .expect(409, Some("already_enrolled"));
    }
    // Confirming with the verified secret's own code does not re-enroll.
    s.post(
        "/user/users/mfa/validateCode",
        &full,
        json!({"code": s.totp(&secret)}),
    )
    .await
    .expect(409, Some("already_enrolled"));
    s.put(
        "/users/mfa/verifyQRCodeEnroll",
        &full,
        json!({"mfatype": "AUTHENTICATOR", "totp": s.totp(&secret)}),
    )
    .await
    .expect(409, Some("already_enrolled"));
    // The old secret still logs in.
    let p = partial(&s, email).await;
    verify(&s, &p, "AUTHENTICATOR", &s.totp(&secret))
        .await
        .expect(200, None);

    // A verified email factor is not re-enrolled either.
    s.advance(30);
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
    s.advance(31);
    s.call(
        "PUT",
        "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
        Some(&full),
        None,
    )
    .await
    .expect(409, Some("already_enrolled"));

    // After a reset (full session), a new authenticator may be enrolled.
    s.call("POST", "/users/mfa/resetMyQRCodeEnroll", Some(&full), None)
        .await
        .expect(200, None);
    let new_secret = s.enroll_authenticator(&full).await;
    assert_ne!(new_secret.to_base32(), secret.to_base32());
    assert_eq!(details(&s, &full).await, (true, true));
}

async fn self_reset_needs_more_than_a_password(s: TestServer) {
    let root = s.root().await;
    let email = "petra@example.com";
    let (_, secret, full) = challenged_user(&s, &root, email).await;
    let rc = s
        .call("POST", "/user/users/mfa/recoveryCodes", Some(&full), None)
        .await;
    let recovery = rc.ok()["codes"][0].as_str().unwrap().to_string();

    // A partial token, that is only the password: no new factor (the
    // attacker's authenticator), and no reset of the owner's.
    let p = partial(&s, email).await;
    for (method, path) in [
        ("POST", "/user/users/mfa/generateTempSecret"),
        ("PUT", "/users/mfa/associateQRCode?mfatype=AUTHENTICATOR"),
        ("PUT", "/oauth/users/mfa/enrollEmail?mfatype=EMAIL"),
        ("POST", "/users/mfa/resetMyQRCodeEnroll"),
    ] {
        s.call(method, path, Some(&p), None)
            .await
            .expect(403, Some("mfa_required"));
    }
    for body in [json!({}), json!({"recoveryCode": null})] {
        s.post("/users/mfa/resetMyQRCodeEnroll", &p, body)
            .await
            .expect(403, Some("mfa_required"));
    }
    s.post(
        "/user/users/mfa/validateCode",
        &p,
        json!({"code": s.totp(&secret)}),
    )
    .await
    .expect(403, Some("mfa_required"));
    // A wrong recovery code is a failed verification.
    s.post(
        "/users/mfa/resetMyQRCodeEnroll",
        &p,
        json!({"recoveryCode": "aaaaa-bbbbb"}),
    )
    .await
    .expect(400, Some("invalid_code"));
    // No token at all.
    s.call("POST", "/users/mfa/resetMyQRCodeEnroll", None, None)
        .await
        .expect(401, Some("unauthorized"));
    assert_eq!(details(&s, &p).await, (true, false));

    // A recovery code stands in for the lost authenticator: the reset
    // goes through on the partial session and ends the other sessions.
    s.post(
        "/users/mfa/resetMyQRCodeEnroll",
        &p,
        json!({"recoveryCode": recovery}),
    )
    .await
    .expect(200, None);
    assert_eq!(details(&s, &p).await, (false, false));
    s.get("/user/users/me", &full)
        .await
        .expect(401, Some("unauthorized"));
    // Nothing left to reset: no code is spent on it. And with no factor
    // left, the remaining codes stand in for nothing: the login asks for
    // setup, and no recovery code passes MFA instead.
    let again = s.login(email, PASSWORD).await;
    assert_eq!(again.mfa, "setup_required");
    s.post(
        "/users/mfa/resetMyQRCodeEnroll",
        &again.token,
        json!({"recoveryCode": recovery}),
    )
    .await
    .expect(409, Some("not_enrolled"));
    verify(&s, &again.token, "RECOVERY", &recovery)
        .await
        .expect(409, Some("not_enrolled"));
}

//! Seed 004, walked step by step: enrollment status, the QR code (decoded
//! back to its otpauth URI), verification, self and admin reset, the email
//! factor with the code read from the mail, and a login challenge by email.

use serde_json::json;

use crate::helpers::{PASSWORD, TestServer, secret_of_uri};
use crate::on_every_backend;

on_every_backend!(
    authenticator_by_qr_code,
    email_factor_and_email_challenge,
    partial_sessions_on_seed_routes,
    the_wait_between_two_code_mails_outlasts_a_reset
);

/// "At most one send per 30 s per user" holds across an admin's reset,
/// which removes the email factor and its code: resets in a loop mailed a
/// user a code each (a random walk of the API found it).
async fn the_wait_between_two_code_mails_outlasts_a_reset(s: TestServer) {
    let root = s.root().await;
    let cleo = s.create_user(&root, "cleo@example.com", false).await;
    let enroll = |token: String| {
        let s = &s;
        async move {
            s.call(
                "PUT",
                "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
                Some(&token),
                None,
            )
            .await
        }
    };
    let login = s.login("cleo@example.com", PASSWORD).await;
    enroll(login.token).await.expect(200, None);
    let mailed = s.last_code("cleo@example.com");
    s.put("/user/users/mfa/reset", &root, json!({"ids": [cleo]}))
        .await
        .expect(204, None);
    let again = s.login("cleo@example.com", PASSWORD).await;
    let refused = enroll(again.token.clone()).await;
    refused.expect(429, Some("too_many_attempts"));
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    // The code mailed before the reset is as good as none: refused as a
    // verification before any code was sent, counting nothing.
    for _ in 0..6 {
        let voided = s
            .put(
                "/oauth/users/mfa/verifyEmail",
                &again.token,
                json!({"mfatype": "EMAIL", "totp": mailed}),
            )
            .await;
        voided.expect(409, Some("not_enrolled"));
        // Said as it is: a code was sent, and the reset voided it.
        assert_eq!(
            voided.body["message"],
            "the email code is no longer valid (an MFA reset or an email change voided it): \
             ask for a new one"
        );
    }
}

/// Decode a PNG QR code to its text.
fn decode_qr(png: &[u8]) -> String {
    let img = image::load_from_memory(png)
        .expect("a PNG image")
        .to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(img);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code expected");
    grids[0].decode().expect("a readable QR code").1
}

async fn qr_secret(s: &TestServer, token: &str) -> mfa_totp::Secret {
    let a = s
        .call(
            "PUT",
            "/users/mfa/associateQRCode?mfatype=AUTHENTICATOR",
            Some(token),
            None,
        )
        .await;
    a.expect(200, None);
    assert_eq!(a.header("content-type"), Some("image/png"));
    let uri = decode_qr(&a.bytes);
    let parsed = mfa_totp::OtpauthUri::parse(&uri).expect("otpauth URI");
    assert_eq!(parsed.issuer, "Acme");
    parsed.secret
}

async fn authenticator_by_qr_code(s: TestServer) {
    let root = s.root().await;
    s.create_user(&root, "bob@example.com", false).await;
    let bob = s.login("bob@example.com", PASSWORD).await.token;

    // Enrollment status.
    let d = s.get("/oauth/users/mfaDetails", &bob).await;
    assert_eq!(
        d.ok(),
        &json!({"availables": ["AUTHENTICATOR", "EMAIL"],
                "details": {"AUTHENTICATOR": {"verified": false}, "EMAIL": {"verified": false}}})
    );

    // mfatype must be AUTHENTICATOR.
    for q in [
        "",
        "?mfatype=EMAIL",
        "?mfatype=authenticator",
        "?mfatype=AUTHENTICATOR&x=1",
    ] {
        s.call(
            "PUT",
            &format!("/users/mfa/associateQRCode{q}"),
            Some(&bob),
            None,
        )
        .await
        .expect(400, Some("invalid_request"));
    }

    // With Accept: application/json, the generateTempSecret JSON.
    let res = s
        .client
        .put(s.url("/users/mfa/associateQRCode?mfatype=AUTHENTICATOR"))
        .bearer_auth(&bob)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let j = TestServer::answer(res).await;
    j.expect(200, None);
    let json_secret = secret_of_uri(j.body["otpauthUri"].as_str().unwrap());

    // The seed's optional body ("MFA details for a customer", of no given
    // shape) is ignored, whatever it holds (an audit found it refused).
    for (content_type, body) in [
        (
            Some("application/json"),
            br#"{"mfaDetails": {"customer": "x"}}"#.to_vec(),
        ),
        (Some("text/plain"), b"hello".to_vec()),
        (None, b"\x00\xff".to_vec()),
    ] {
        let a = s
            .call_raw(
                "PUT",
                "/users/mfa/associateQRCode?mfatype=AUTHENTICATOR",
                Some(&bob),
                content_type,
                body,
            )
            .await;
        a.expect(200, None);
        assert_eq!(a.header("content-type"), Some("image/png"));
    }
    // Under the limit of every body all the same.
    s.call_raw(
        "PUT",
        "/users/mfa/associateQRCode?mfatype=AUTHENTICATOR",
        Some(&bob),
        Some("application/json"),
        vec![b' '; 65 * 1024],
    )
    .await
    .expect(400, Some("invalid_request"));

    // The PNG: scan it, compute codes. It replaces the pending JSON secret.
    let secret = qr_secret(&s, &bob).await;
    assert_ne!(secret, json_secret);
    s.put(
        "/users/mfa/verifyQRCodeEnroll",
        &bob,
        json!({"mfatype": "AUTHENTICATOR", "totp": s.totp(&json_secret)}),
    )
    .await
    .expect(400, Some("invalid_code"));
    for bad in [
        json!({"mfatype": "EMAIL", "totp": "123456"}),
        json!({"totp": "123456"}),
        json!({"mfatype": "AUTHENTICATOR", "totp": 123456}),
    ] {
        s.put("/users/mfa/verifyQRCodeEnroll", &bob, bad)
            .await
            .expect(400, Some("invalid_request"));
    }
    let v = s
        .put(
            "/users/mfa/verifyQRCodeEnroll",
            &bob,
            json!({"mfatype": "AUTHENTICATOR", "totp": s.totp(&secret)}),
        )
        .await;
    assert_eq!(v.ok(), &json!({"status": "ok"}));
    let d = s.get("/oauth/users/mfaDetails", &bob).await;
    assert_eq!(d.ok()["details"]["AUTHENTICATOR"]["verified"], true);

    // Already enrolled: reset first.
    s.call(
        "PUT",
        "/users/mfa/associateQRCode?mfatype=AUTHENTICATOR",
        Some(&bob),
        None,
    )
    .await
    .expect(409, Some("already_enrolled"));

    // A recovery code given is checked, also where none is needed (an
    // audit found a wrong one ignored and the authenticator removed).
    s.post(
        "/users/mfa/resetMyQRCodeEnroll",
        &bob,
        json!({"recoveryCode": "zzzzz-zzzzz"}),
    )
    .await
    .expect(400, Some("invalid_code"));
    let d = s.get("/oauth/users/mfaDetails", &bob).await;
    assert_eq!(d.ok()["details"]["AUTHENTICATOR"]["verified"], true);

    // Self reset (full session, no body).
    let r = s
        .call("POST", "/users/mfa/resetMyQRCodeEnroll", Some(&bob), None)
        .await;
    assert_eq!(r.ok(), &json!({"status": "ok"}));
    let d = s.get("/oauth/users/mfaDetails", &bob).await;
    assert_eq!(d.ok()["details"]["AUTHENTICATOR"]["verified"], false);
    s.call("POST", "/users/mfa/resetMyQRCodeEnroll", Some(&bob), None)
        .await
        .expect(409, Some("not_enrolled"));

    // An enrollment not confirmed is withdrawn: no factor went, so no
    // notice and no other session ends (an audit got both).
    let other = s.login("bob@example.com", PASSWORD).await.token;
    let mails = s.mails_to("bob@example.com").len();
    qr_secret(&s, &bob).await;
    let r = s
        .call("POST", "/users/mfa/resetMyQRCodeEnroll", Some(&bob), None)
        .await;
    assert_eq!(r.ok(), &json!({"status": "ok"}));
    assert_eq!(s.mails_to("bob@example.com").len(), mails, "no notice");
    s.get("/oauth/users/mfaDetails", &other)
        .await
        .expect(200, None);
    s.call("POST", "/users/mfa/resetMyQRCodeEnroll", Some(&bob), None)
        .await
        .expect(409, Some("not_enrolled"));

    // Enroll again, then an admin resets it by username (the email).
    s.advance(30);
    let secret = qr_secret(&s, &bob).await;
    s.put(
        "/users/mfa/verifyQRCodeEnroll",
        &bob,
        json!({"mfatype": "AUTHENTICATOR", "totp": s.totp(&secret)}),
    )
    .await
    .expect(200, None);
    // A plain member may not; another org's admin does not see bob.
    let (_, _, other_admin) = s.org_with_admin(&root, "Other", "other@example.com").await;
    s.call(
        "PUT",
        "/users/bob@example.com/mfa/resetQRCodeEnroll",
        Some(&other_admin),
        None,
    )
    .await
    .expect(404, Some("not_found"));
    s.call(
        "PUT",
        "/users/bob@example.com/mfa/resetQRCodeEnroll",
        Some(&bob),
        None,
    )
    .await
    .expect(403, Some("forbidden"));
    let r = s
        .call(
            "PUT",
            "/users/bob@example.com/mfa/resetQRCodeEnroll",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(r.ok(), &json!({"status": "ok"}));
    // The admin reset ended bob's sessions.
    s.get("/oauth/users/mfaDetails", &bob)
        .await
        .expect(401, Some("unauthorized"));
    let bob = s.login("bob@example.com", PASSWORD).await.token;
    let d = s.get("/oauth/users/mfaDetails", &bob).await;
    assert_eq!(d.ok()["details"]["AUTHENTICATOR"]["verified"], false);

    // An authenticator only set up, never confirmed, is withdrawn by the
    // admin as by bob himself: his session stays and no notice goes out
    // (it ended his sessions, audited as a reset); then there is none.
    qr_secret(&s, &bob).await;
    let mails = s.mails_to("bob@example.com").len();
    let r = s
        .call(
            "PUT",
            "/users/bob@example.com/mfa/resetQRCodeEnroll",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(r.ok(), &json!({"status": "ok"}));
    s.get("/oauth/users/mfaDetails", &bob)
        .await
        .expect(200, None);
    assert_eq!(s.mails_to("bob@example.com").len(), mails, "no notice");
    let audit = s.get("/user/audit?action=authenticator_reset", &root).await;
    assert_eq!(
        audit.ok()["items"][0]["detail"],
        "pending enrollment withdrawn by an admin"
    );
    s.call(
        "PUT",
        "/users/bob@example.com/mfa/resetQRCodeEnroll",
        Some(&root),
        None,
    )
    .await
    .expect(409, Some("not_enrolled"));
    s.call(
        "PUT",
        "/users/nobody@example.com/mfa/resetQRCodeEnroll",
        Some(&root),
        None,
    )
    .await
    .expect(404, Some("not_found"));
}

async fn email_factor_and_email_challenge(s: TestServer) {
    let root = s.root().await;
    s.create_user(&root, "bob@example.com", false).await;
    let bob = s.login("bob@example.com", PASSWORD).await.token;

    s.call("PUT", "/oauth/users/mfa/enrollEmail", Some(&bob), None)
        .await
        .expect(400, Some("invalid_request"));
    s.call(
        "PUT",
        "/oauth/users/mfa/enrollEmail?mfatype=AUTHENTICATOR",
        Some(&bob),
        None,
    )
    .await
    .expect(400, Some("invalid_request"));
    let e = s
        .call(
            "PUT",
            "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(e.ok()["status"], "ok");
    assert_eq!(e.body["sentTo"], "b***@example.com");
    let first_code = s.last_code("bob@example.com");

    // A second send within 30 s is throttled.
    let again = s
        .call(
            "PUT",
            "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
            Some(&bob),
            None,
        )
        .await;
    again.expect(429, Some("too_many_attempts"));
    // Said as a mail sent a moment ago, not as a lockout.
    assert!(
        again.body["message"]
            .as_str()
            .unwrap()
            .starts_with("a message was sent a moment ago"),
        "{again:?}"
    );
    let retry: u64 = again.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");

    // After 30 s a new code voids the first.
    s.advance(30);
    s.call(
        "PUT",
        "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
        Some(&bob),
        None,
    )
    .await
    .expect(200, None);
    let code = s.last_code("bob@example.com");
    if code != first_code {
        s.put(
            "/oauth/users/mfa/verifyEmail",
            &bob,
            json!({"mfatype": "EMAIL", "totp": first_code}),
        )
        .await
        .expect(400, Some("invalid_code"));
    }
    s.put(
        "/oauth/users/mfa/verifyEmail",
        &bob,
        json!({"mfatype": "AUTHENTICATOR", "totp": code}),
    )
    .await
    .expect(400, Some("invalid_request"));
    let v = s
        .put(
            "/oauth/users/mfa/verifyEmail",
            &bob,
            json!({"mfatype": "EMAIL", "totp": code}),
        )
        .await;
    assert_eq!(v.ok(), &json!({"status": "ok"}));
    let d = s.get("/oauth/users/mfaDetails", &bob).await;
    assert_eq!(d.ok()["details"]["EMAIL"]["verified"], true);
    s.call(
        "PUT",
        "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
        Some(&bob),
        None,
    )
    .await
    .expect(409, Some("already_enrolled"));

    // Opt in personally: the next login is a challenge by email.
    s.put("/user/users/me/mfa", &bob, json!({"mfaOptIn": true}))
        .await
        .expect(204, None);
    let login = s.login("bob@example.com", PASSWORD).await;
    assert_eq!(login.mfa, "challenge_required");
    assert_eq!(login.body["methods"], json!(["EMAIL"]));
    let partial = login.token;
    s.post(
        "/user/auth/mfa/challenge",
        &partial,
        json!({"method": "AUTHENTICATOR"}),
    )
    .await
    .expect(400, Some("invalid_request"));
    s.advance(30);
    let c = s
        .post(
            "/user/auth/mfa/challenge",
            &partial,
            json!({"method": "EMAIL"}),
        )
        .await;
    assert_eq!(c.ok()["sentTo"], "b***@example.com");
    assert!(c.body["expiresAt"].as_str().unwrap().ends_with('Z'));
    let code = s.last_code("bob@example.com");
    // Full-only routes refuse the partial token.
    s.get(
        "/user/users/retrieveNotExcludeFromMembershipUserCounts",
        &partial,
    )
    .await
    .expect(403, Some("mfa_required"));
    let v = s
        .post(
            "/user/auth/mfa/verify",
            &partial,
            json!({"method": "EMAIL", "code": code}),
        )
        .await;
    assert_eq!(v.ok()["mfa"], "none");
    let full = v.body["token"].as_str().unwrap();
    s.get("/user/users/me", &partial)
        .await
        .expect(401, Some("unauthorized"));
    s.get("/user/users/me", full).await.expect(200, None);

    // The code is single use.
    let login = s.login("bob@example.com", PASSWORD).await;
    s.post(
        "/user/auth/mfa/verify",
        &login.token,
        json!({"method": "EMAIL", "code": code}),
    )
    .await
    .expect(400, Some("invalid_code"));

    // An expired code: code_expired.
    s.advance(30);
    s.post(
        "/user/auth/mfa/challenge",
        &login.token,
        json!({"method": "EMAIL"}),
    )
    .await
    .expect(200, None);
    let code = s.last_code("bob@example.com");
    s.advance(601);
    let login = s.login("bob@example.com", PASSWORD).await;
    s.post(
        "/user/auth/mfa/verify",
        &login.token,
        json!({"method": "EMAIL", "code": code}),
    )
    .await
    .expect(400, Some("code_expired"));
}

async fn partial_sessions_on_seed_routes(s: TestServer) {
    let root = s.root().await;
    s.create_user(&root, "carol@example.com", false).await;
    s.create_user(&root, "dan@example.com", false).await;
    // Recovery codes need a verified factor first.
    s.call("POST", "/user/users/mfa/recoveryCodes", Some(&root), None)
        .await
        .expect(409, Some("not_enrolled"));
    s.enforce(&root, true).await;

    // setup_required: the partial token enrolls the email factor and gets
    // a full token from verifyEmail.
    let login = s.login("dan@example.com", PASSWORD).await;
    assert_eq!(login.mfa, "setup_required");
    let partial = login.token;
    s.call(
        "PUT",
        "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
        Some(&partial),
        None,
    )
    .await
    .expect(200, None);
    let v = s
        .put(
            "/oauth/users/mfa/verifyEmail",
            &partial,
            json!({"mfatype": "EMAIL", "totp": s.last_code("dan@example.com")}),
        )
        .await;
    assert_eq!(v.ok()["mfa"], "none");
    let full = v.body["token"].as_str().unwrap();
    s.get("/oauth/users/mfaDetails", &partial)
        .await
        .expect(401, Some("unauthorized"));
    let d = s.get("/oauth/users/mfaDetails", full).await;
    assert_eq!(d.ok()["details"]["EMAIL"]["verified"], true);

    // setup_required: the partial token enrolls through the QR code and
    // gets a full token from verifyQRCodeEnroll.
    let login = s.login("carol@example.com", PASSWORD).await;
    assert_eq!(login.mfa, "setup_required");
    let partial = login.token;
    let d = s.get("/oauth/users/mfaDetails", &partial).await;
    d.expect(200, None);
    let secret = qr_secret(&s, &partial).await;
    let v = s
        .put(
            "/users/mfa/verifyQRCodeEnroll",
            &partial,
            json!({"mfatype": "AUTHENTICATOR", "totp": s.totp(&secret)}),
        )
        .await;
    assert_eq!(v.ok()["mfa"], "none");
    let full = v.body["token"].as_str().unwrap().to_string();
    s.get("/oauth/users/mfaDetails", &partial)
        .await
        .expect(401, Some("unauthorized"));

    // Recovery codes from the full session.
    let rc = s
        .call("POST", "/user/users/mfa/recoveryCodes", Some(&full), None)
        .await;
    let codes: Vec<String> = rc.ok()["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10);

    // With a verified factor, a partial token may not enroll another one
    // nor remove one with a bare password.
    s.advance(30);
    let login = s.login("carol@example.com", PASSWORD).await;
    assert_eq!(login.mfa, "challenge_required");
    assert_eq!(login.body["methods"], json!(["AUTHENTICATOR", "RECOVERY"]));
    let partial = login.token;
    s.call(
        "PUT",
        "/users/mfa/associateQRCode?mfatype=AUTHENTICATOR",
        Some(&partial),
        None,
    )
    .await
    .expect(403, Some("mfa_required"));
    s.call(
        "POST",
        "/user/users/mfa/generateTempSecret",
        Some(&partial),
        None,
    )
    .await
    .expect(403, Some("mfa_required"));
    s.call(
        "PUT",
        "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
        Some(&partial),
        None,
    )
    .await
    .expect(403, Some("mfa_required"));
    s.call(
        "POST",
        "/users/mfa/resetMyQRCodeEnroll",
        Some(&partial),
        None,
    )
    .await
    .expect(403, Some("mfa_required"));
    s.post(
        "/users/mfa/resetMyQRCodeEnroll",
        &partial,
        json!({"recoveryCode": "nope-nope"}),
    )
    .await
    .expect(400, Some("invalid_code"));

    // A lost phone: a recovery code lets the partial session remove the
    // authenticator; then it may enroll a new one (setup_required again).
    let r = s
        .post(
            "/users/mfa/resetMyQRCodeEnroll",
            &partial,
            json!({"recoveryCode": codes[0]}),
        )
        .await;
    assert_eq!(r.ok(), &json!({"status": "ok"}));
    // The self reset ended carol's other sessions.
    s.get("/user/users/me", &full)
        .await
        .expect(401, Some("unauthorized"));
    let secret = qr_secret(&s, &partial).await;
    let v = s
        .put(
            "/users/mfa/verifyQRCodeEnroll",
            &partial,
            json!({"mfatype": "AUTHENTICATOR", "totp": s.totp(&secret)}),
        )
        .await;
    assert_eq!(v.ok()["mfa"], "none");

    // A recovery code answers a login challenge, once.
    s.advance(30);
    let login = s.login("carol@example.com", PASSWORD).await;
    let v = s
        .post(
            "/user/auth/mfa/verify",
            &login.token,
            json!({"method": "RECOVERY", "code": codes[1]}),
        )
        .await;
    assert_eq!(v.ok()["mfa"], "none");
    let login = s.login("carol@example.com", PASSWORD).await;
    s.post(
        "/user/auth/mfa/verify",
        &login.token,
        json!({"method": "RECOVERY", "code": codes[1]}),
    )
    .await
    .expect(400, Some("invalid_code"));
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"mfa_verifications_total{method="RECOVERY",outcome="success"} 2"#),
        "{metrics}"
    );
}

//! Seed 000, walked step by step: enforce MFA on an org, a member sets up an
//! authenticator at the next login, an admin opts a member out (by id and
//! by reference), and resets members' MFA.

use serde_json::json;

use crate::helpers::{PASSWORD, TestServer};
use crate::on_every_backend;

on_every_backend!(
    enforce_setup_opt_out_and_reset,
    reset_is_all_or_nothing_and_admin_only
);

async fn enforce_setup_opt_out_and_reset(s: TestServer) {
    let root = s.root().await;
    let org = s.root_org;
    let alice = s.create_user(&root, "alice@example.com", false).await;

    // Enforce MFA for the current org: 204, as in the seed.
    let a = s
        .put("/user/org/mfa", &root, json!({"isMfaEnforced": true}))
        .await;
    a.expect(204, None);
    assert!(a.bytes.is_empty());
    let o = s.get(&format!("/user/org/{org}"), &root).await;
    assert_eq!(o.ok()["isMfaEnforced"], true);
    assert!(o.body["mfaEnforcedAt"].as_str().unwrap().ends_with('Z'));
    // Sessions already full stay full.
    s.get("/user/users/me", &root).await.expect(200, None);

    // The next login of a member owes setup.
    let login = s.login("alice@example.com", PASSWORD).await;
    assert_eq!(login.mfa, "setup_required");
    assert_eq!(login.body["methods"], json!(["AUTHENTICATOR", "EMAIL"]));
    assert_eq!(login.body["tokenType"], "Bearer");
    let partial = login.token;

    // generateTempSecret with the partial token.
    let t = s
        .call(
            "POST",
            "/user/users/mfa/generateTempSecret",
            Some(&partial),
            None,
        )
        .await;
    t.expect(200, None);
    let uri = t.body["otpauthUri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Acme:alice%40example.com?secret="),
        "{uri}"
    );
    assert!(uri.contains("&issuer=Acme&algorithm=SHA1&digits=6&period=30"));
    assert!(t.body["qrCodeSvg"].as_str().unwrap().contains("<svg"));
    assert_eq!(
        t.body["expiresAt"],
        mfa_server::wire::rfc3339(mfa_core::Timestamp(s.now() as i64 + 600))
    );
    let secret = mfa_totp::Secret::from_base32(t.body["secret"].as_str().unwrap()).unwrap();
    assert_eq!(crate::helpers::secret_of_uri(uri), secret);
    assert_eq!(t.header("cache-control"), Some("no-store"));

    // A wrong code, then the right one: the partial session becomes full.
    s.post(
        "/user/users/mfa/validateCode",
        &partial,
        json!({"code": "000000"}),
    )
    .await
    .expect(400, Some("invalid_code"));
    let v = s
        .post(
            "/user/users/mfa/validateCode",
            &partial,
            json!({"code": s.totp(&secret)}),
        )
        .await;
    v.expect(200, None);
    assert_eq!(v.body["mfa"], "none");
    let full = v.body["token"].as_str().unwrap().to_string();
    assert_ne!(full, partial);
    // The partial token is revoked at once; the new one is full.
    s.get("/user/users/me", &partial)
        .await
        .expect(401, Some("unauthorized"));
    let me = s.get(&format!("/user/users/{alice}"), &full).await;
    assert_eq!(
        me.ok()["mfa"],
        json!({"enrolled": true, "methods": ["AUTHENTICATOR"]})
    );
    assert!(
        s.mails_to("alice@example.com")
            .iter()
            .any(|m| m.subject().unwrap_or_default().contains("was added")),
        "no enrollment notice"
    );

    // The next login is a challenge, answered with a later code.
    s.advance(30);
    let login = s.login("alice@example.com", PASSWORD).await;
    assert_eq!(login.mfa, "challenge_required");
    assert_eq!(login.body["methods"], json!(["AUTHENTICATOR"]));
    let v = s
        .post(
            "/user/auth/mfa/verify",
            &login.token,
            json!({"method": "AUTHENTICATOR", "code": s.totp(&secret)}),
        )
        .await;
    v.expect(200, None);
    assert_eq!(v.body["mfa"], "none");

    // Opt-out by id: the next login owes nothing.
    s.put(
        &format!("/user/users/{alice}/membership"),
        &root,
        json!({"mfaOptOut": true}),
    )
    .await
    .expect(204, None);
    let login = s.login("alice@example.com", PASSWORD).await;
    assert_eq!(login.mfa, "none");
    let opted_out_session = login.token;
    let m = s.get(&format!("/user/org/{org}/user/{alice}"), &root).await;
    assert_eq!(m.ok()["mfaOptOut"], true);
    assert_eq!(m.body["isActive"], true, "only the fields present change");

    // Opt back in by reference (byRef=true: the id is the email).
    s.put(
        "/user/users/alice@example.com/membership?byRef=true",
        &root,
        json!({"mfaOptOut": false}),
    )
    .await
    .expect(204, None);
    let login = s.login("alice@example.com", PASSWORD).await;
    assert_eq!(login.mfa, "challenge_required");
    // byRef=false with an email is not an id.
    s.put(
        "/user/users/alice@example.com/membership",
        &root,
        json!({"mfaOptOut": false}),
    )
    .await
    .expect(400, Some("invalid_request"));

    // Reset: 204; the user's sessions end; the next login owes setup.
    s.put("/user/users/mfa/reset", &root, json!({"ids": [alice]}))
        .await
        .expect(204, None);
    s.get("/user/users/me", &opted_out_session)
        .await
        .expect(401, Some("unauthorized"));
    s.get("/user/users/me", &full)
        .await
        .expect(401, Some("unauthorized"));
    let login = s.login("alice@example.com", PASSWORD).await;
    assert_eq!(login.mfa, "setup_required");
    let u = s.get(&format!("/user/users/{alice}"), &root).await;
    assert_eq!(u.ok()["mfa"], json!({"enrolled": false, "methods": []}));
    assert!(
        s.mails_to("alice@example.com").iter().any(|m| m
            .subject()
            .unwrap_or_default()
            .contains("your sign-in methods changed")),
        "no reset notice"
    );

    // Everything is in the audit trail, newest first.
    let audit = s.get("/user/audit?size=200", &root).await;
    let actions: Vec<&str> = audit.ok()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "mfa_enforced",
        "authenticator_enrollment_started",
        "authenticator_enrolled",
        "mfa_verify_failed",
        "mfa_opt_out",
        "mfa_opt_out_removed",
        "mfa_reset",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing in {actions:?}"
        );
    }
    assert_eq!(actions[0], "login_succeeded");
}

async fn reset_is_all_or_nothing_and_admin_only(s: TestServer) {
    let root = s.root().await;
    let alice = s.create_user(&root, "alice@example.com", false).await;
    let alice_token = s.login("alice@example.com", PASSWORD).await.token;
    s.enroll_authenticator(&alice_token).await;
    let (_, outsider, _) = s
        .org_with_admin(&root, "Other", "outsider@example.com")
        .await;

    // One id outside the current org: 404 and nothing changes.
    s.put(
        "/user/users/mfa/reset",
        &root,
        json!({"ids": [alice, outsider]}),
    )
    .await
    .expect(404, Some("not_found"));
    let u = s.get(&format!("/user/users/{alice}"), &root).await;
    assert_eq!(u.ok()["mfa"]["enrolled"], true);
    s.get("/user/users/me", &alice_token)
        .await
        .expect(200, None);

    // A member who is not an admin may not reset.
    s.put(
        "/user/users/mfa/reset",
        &alice_token,
        json!({"ids": [alice]}),
    )
    .await
    .expect(403, Some("forbidden"));
    // An empty list, a bad id, an unknown field: invalid.
    for body in [
        json!({"ids": []}),
        json!({"ids": [0]}),
        json!({"ids": ["1"]}),
        json!({"ids": [alice], "all": true}),
        json!({}),
    ] {
        s.put("/user/users/mfa/reset", &root, body)
            .await
            .expect(400, Some("invalid_request"));
    }
}

/// `MFA_TOTP_DIGITS` and `MFA_TOTP_PERIOD_SECS` reach new authenticators:
/// their otpauth URI, and the codes they take.
#[tokio::test]
async fn configured_totp_digits_and_period() {
    use mfa_totp::{Algorithm, Secret, TotpParams};

    let s =
        TestServer::sqlite_with(&[("MFA_TOTP_DIGITS", "8"), ("MFA_TOTP_PERIOD_SECS", "60")]).await;
    let root = s.root().await;
    let a = s.generate_temp_secret(&root).await;
    a.expect(200, None);
    let uri = a.body["otpauthUri"].as_str().unwrap();
    assert!(uri.contains("&digits=8&period=60"), "{uri}");
    let secret = Secret::from_base32(a.body["secret"].as_str().unwrap()).unwrap();
    // A code of the default form is not one of this authenticator's.
    s.post(
        "/user/users/mfa/validateCode",
        &root,
        json!({"code": s.totp(&secret)}),
    )
    .await
    .expect(400, Some("invalid_code"));
    let params = TotpParams::new(Algorithm::Sha1, 8, 60).unwrap();
    let code = mfa_totp::totp(&secret, s.now(), &params);
    assert_eq!(code.len(), 8);
    s.post("/user/users/mfa/validateCode", &root, json!({"code": code}))
        .await
        .expect(204, None);
}

//! Cross-org access: an admin of org B against every route that names a
//! user, a membership or the org of org A. The answer is `404` (another
//! org's things are not found) or `403` (superadmin routes), and nothing
//! changes, proven by reading the state back as org A's admin.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{PASSWORD, ROOT_EMAIL, TestServer, ids_of};
use crate::on_every_backend;

on_every_backend!(
    admin_of_another_org,
    reset_with_one_foreign_id,
    org_admin_against_a_superadmin,
    admin_rights_count_in_the_sessions_org_only,
    a_deactivated_member_is_seen_but_not_managed,
    credentials_of_a_user_of_two_orgs,
    a_password_alone_through_a_lax_org_changes_no_factor,
    a_superadmins_password_alone_administers_nothing,
    a_shared_members_factors_change_in_the_trail_of_each_org,
);

/// What org A's admin sees of org A and of `users`.
async fn state_of_org(s: &TestServer, admin: &str, org: i64, users: &[i64]) -> Vec<Value> {
    let mut paths = vec![
        format!("/user/org/{org}"),
        "/user/users/page?size=200".to_string(),
        "/user/users/retrieveNotExcludeFromMembershipUserCounts".to_string(),
        "/user/audit?size=200".to_string(),
    ];
    for u in users {
        paths.push(format!("/user/users/{u}"));
        paths.push(format!("/user/org/{org}/user/{u}"));
    }
    let mut out = Vec::new();
    for path in paths {
        let a = s.get(&path, admin).await;
        a.expect(200, None);
        out.push(a.body);
    }
    out
}

/// A member of the current org of `admin` with a verified authenticator
/// and a full session.
async fn enrolled_member(s: &TestServer, admin: &str, email: &str, org: i64) -> (i64, String) {
    let id = s.create_user(admin, email, false).await;
    let token = s.login_org(email, PASSWORD, org).await.token;
    s.enroll_authenticator(&token).await;
    (id, token)
}

async fn admin_of_another_org(s: TestServer) {
    let root = s.root().await;
    let (org_a, admin_a_id, admin_a) = s.org_with_admin(&root, "Alpha", "ann@alpha.example").await;
    let (org_b, _, admin_b) = s.org_with_admin(&root, "Beta", "ben@beta.example").await;
    let alice_email = "alice@alpha.example";
    let (alice, alice_token) = enrolled_member(&s, &admin_a, alice_email, org_a).await;
    let (bob, _) = enrolled_member(&s, &admin_b, "bob@beta.example", org_b).await;
    let before = state_of_org(&s, &admin_a, org_a, &[alice, admin_a_id]).await;

    // (method, path, body, status)
    let attacks: Vec<(&str, String, Option<Value>, u16)> = vec![
        // MFA resets and opt-outs.
        (
            "PUT",
            "/user/users/mfa/reset".into(),
            Some(json!({"ids": [alice]})),
            404,
        ),
        (
            "PUT",
            "/user/users/mfa/reset".into(),
            Some(json!({"ids": [admin_a_id]})),
            404,
        ),
        (
            "PUT",
            format!("/users/{alice_email}/mfa/resetQRCodeEnroll"),
            None,
            404,
        ),
        (
            "PUT",
            format!("/user/users/{alice}/membership"),
            Some(json!({"mfaOptOut": true})),
            404,
        ),
        (
            "PUT",
            format!("/user/users/{alice}/membership?byRef=false"),
            Some(json!({"isActive": false, "isAdmin": true})),
            404,
        ),
        (
            "PUT",
            format!("/user/users/{alice_email}/membership?byRef=true"),
            Some(json!({"mfaOptOut": true})),
            404,
        ),
        // The user record.
        ("GET", format!("/user/users/{alice}"), None, 404),
        ("GET", format!("/user/users/{admin_a_id}"), None, 404),
        (
            "PUT",
            format!("/user/users/{alice}"),
            Some(json!({"firstName": "Mallory"})),
            404,
        ),
        (
            "PUT",
            format!("/user/users/{alice}"),
            Some(json!({"password": "mallory's new password"})),
            404,
        ),
        (
            "PUT",
            format!("/user/users/{alice}"),
            Some(json!({"email": "mallory@beta.example"})),
            404,
        ),
        (
            "POST",
            "/user/users/email/resendChangeConfirmation".into(),
            Some(json!({"userId": alice})),
            404,
        ),
        // Memberships, by id and by email, in either org.
        ("GET", format!("/user/org/{org_a}/user/{alice}"), None, 404),
        ("GET", format!("/user/org/{org_b}/user/{alice}"), None, 404),
        ("POST", format!("/user/org/{org_a}/user/{bob}"), None, 404),
        ("POST", format!("/user/org/{org_b}/user/{alice}"), None, 404),
        (
            "POST",
            format!("/user/org/{org_b}/user/{alice}"),
            Some(json!({"isAdmin": true})),
            404,
        ),
        (
            "POST",
            format!("/user/org/{org_b}/email/user/{alice_email}"),
            None,
            404,
        ),
        (
            "POST",
            format!("/user/org/{org_a}/email/user/bob@beta.example"),
            None,
            404,
        ),
        (
            "DELETE",
            format!("/user/org/{org_a}/user/{alice}"),
            None,
            404,
        ),
        // The org.
        ("GET", format!("/user/org/{org_a}"), None, 404),
        (
            "PUT",
            format!("/user/org/{org_a}"),
            Some(json!({"name": "Pwned"})),
            404,
        ),
        (
            "PUT",
            format!("/user/org/{org_a}"),
            Some(json!({"mfaGracePeriodHours": 8760})),
            404,
        ),
        ("DELETE", format!("/user/org/{org_a}"), None, 403),
        (
            "PUT",
            "/user/org/mfa?allOrgs=true".into(),
            Some(json!({"isMfaEnforced": true})),
            403,
        ),
        // Superadmin routes.
        ("GET", format!("/user/users/admins/{org_a}"), None, 403),
        ("POST", format!("/user/users/insert/{org_a}"), None, 403),
        (
            "DELETE",
            format!("/user/users/deleteFromAllOrgs/{alice_email}"),
            None,
            403,
        ),
        (
            "POST",
            "/user/users/email".into(),
            Some(json!({"email": alice_email})),
            403,
        ),
        ("DELETE", format!("/user/users/{alice}"), None, 403),
    ];
    for (method, path, body, status) in attacks {
        let a = s.call(method, &path, Some(&admin_b), body.clone()).await;
        let code = if status == 404 {
            "not_found"
        } else {
            "forbidden"
        };
        assert_eq!(
            (a.status, a.error()),
            (status, code),
            "{method} {path} {body:?}: {a:?}"
        );
    }

    // Searches and lists leave org A out.
    for path in [
        "/user/users/page?search=alpha&size=200".to_string(),
        "/user/users/page?size=200".to_string(),
    ] {
        let a = s.get(&path, &admin_b).await;
        let ids = ids_of(&a.ok()["items"]);
        assert!(
            !ids.contains(&alice) && !ids.contains(&admin_a_id),
            "{path}: {ids:?}"
        );
    }
    let listed = s
        .get(
            &format!("/user/users?ids={alice},{admin_a_id},{bob}"),
            &admin_b,
        )
        .await;
    assert_eq!(ids_of(listed.ok()), [bob]);
    let exists = s
        .get(&format!("/user/users/email/{alice_email}"), &admin_b)
        .await;
    assert_eq!(exists.ok()["exists"], false);
    let audit = s
        .get(&format!("/user/audit?userId={alice}"), &admin_b)
        .await;
    assert_eq!(audit.ok()["total"], 0);
    let audit = s.get("/user/audit?size=200", &admin_b).await;
    for e in audit.ok()["items"].as_array().unwrap() {
        assert_eq!(e["orgId"], org_b, "{e}");
        assert_ne!(e["targetUserId"], alice, "{e}");
    }

    // Nothing changed in org A: read back by its admin; Alice's session,
    // password, factor and memberships are what they were.
    assert_eq!(
        state_of_org(&s, &admin_a, org_a, &[alice, admin_a_id]).await,
        before
    );
    let me = s.get("/user/users/me", &alice_token).await;
    let orgs: Vec<i64> = me.ok()["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["orgId"].as_i64().unwrap())
        .collect();
    assert_eq!(orgs, vec![org_a]);
    assert_eq!(me.body["mfa"]["enrolled"], true);
    assert_eq!(me.body["firstName"], "Test");
    s.login_org(alice_email, PASSWORD, org_a).await;
}

async fn reset_with_one_foreign_id(s: TestServer) {
    let root = s.root().await;
    let (org_a, _, admin_a) = s.org_with_admin(&root, "Alpha", "ann@alpha.example").await;
    let (org_b, _, admin_b) = s.org_with_admin(&root, "Beta", "ben@beta.example").await;
    let (alice, _) = enrolled_member(&s, &admin_a, "alice@alpha.example", org_a).await;
    let mut own = Vec::new();
    for i in 0..5 {
        own.push(enrolled_member(&s, &admin_b, &format!("b{i}@beta.example"), org_b).await);
    }
    let before_a = state_of_org(&s, &admin_a, org_a, &[alice]).await;
    let ids: Vec<i64> = own.iter().map(|(id, _)| *id).collect();
    let before_b = state_of_org(&s, &admin_b, org_b, &ids).await;

    // The foreign id first, in the middle, last: 404, and nothing changes,
    // not even for the ids of org B itself.
    for position in [0, 3, 5] {
        let mut with_foreign = ids.clone();
        with_foreign.insert(position, alice);
        s.put(
            "/user/users/mfa/reset",
            &admin_b,
            json!({"ids": with_foreign}),
        )
        .await
        .expect(404, Some("not_found"));
    }
    assert_eq!(state_of_org(&s, &admin_a, org_a, &[alice]).await, before_a);
    assert_eq!(state_of_org(&s, &admin_b, org_b, &ids).await, before_b);
    for (id, token) in &own {
        let me = s.get("/user/users/me", token).await;
        assert_eq!(me.ok()["mfa"]["enrolled"], true, "user {id}");
    }

    // Without it, the reset goes through.
    s.put("/user/users/mfa/reset", &admin_b, json!({"ids": ids}))
        .await
        .expect(204, None);
    for (id, token) in &own {
        s.get("/user/users/me", token)
            .await
            .expect(401, Some("unauthorized"));
        let u = s.get(&format!("/user/users/{id}"), &admin_b).await;
        assert_eq!(u.ok()["mfa"]["enrolled"], false);
    }
}

/// A superadmin who joined org B is a member of B, but B's admin may not
/// set their password, reset their factors or change their membership:
/// one org's admin must not become the deployment's superadmin.
async fn org_admin_against_a_superadmin(s: TestServer) {
    let root = s.root().await;
    let root_id = s.get("/user/users/me", &root).await.ok()["id"]
        .as_i64()
        .unwrap();
    let (org_b, _, admin_b) = s.org_with_admin(&root, "Beta", "ben@beta.example").await;
    let (bob, bob_token) = enrolled_member(&s, &admin_b, "bob@beta.example", org_b).await;
    let root_secret = s.enroll_authenticator(&root).await;
    let before = state_of_org(&s, &admin_b, org_b, &[root_id, bob]).await;

    for (method, path, body) in [
        (
            "PUT",
            format!("/user/users/{root_id}"),
            Some(json!({"password": "the new superadmin password"})),
        ),
        (
            "PUT",
            format!("/user/users/{root_id}"),
            Some(json!({"email": "ben.again@beta.example"})),
        ),
        (
            "PUT",
            "/user/users/mfa/reset".to_string(),
            Some(json!({"ids": [root_id]})),
        ),
        (
            "PUT",
            "/user/users/mfa/reset".to_string(),
            Some(json!({"ids": [bob, root_id]})),
        ),
        (
            "PUT",
            format!("/users/{ROOT_EMAIL}/mfa/resetQRCodeEnroll"),
            None,
        ),
        (
            "PUT",
            format!("/user/users/{root_id}/membership"),
            Some(json!({"mfaOptOut": true})),
        ),
        (
            "PUT",
            format!("/user/users/{ROOT_EMAIL}/membership?byRef=true"),
            Some(json!({"isActive": false})),
        ),
    ] {
        let a = s.call(method, &path, Some(&admin_b), body.clone()).await;
        assert_eq!(
            (a.status, a.error()),
            (403, "forbidden"),
            "{method} {path} {body:?}: {a:?}"
        );
    }
    assert_eq!(
        state_of_org(&s, &admin_b, org_b, &[root_id, bob]).await,
        before
    );
    // The superadmin's session, password and authenticator are untouched,
    // and so is Bob.
    let me = s.get("/user/users/me", &root).await;
    assert_eq!(me.ok()["mfa"]["enrolled"], true);
    s.login(ROOT_EMAIL, PASSWORD).await;
    let _ = root_secret;
    s.get("/user/users/me", &bob_token).await.expect(200, None);
}

/// An admin of org E, which enforces MFA (and the admin has no factor),
/// is also an admin of org B, which does not, and logs in to B: a full
/// session without MFA. From it none of E's admin rights count: E's org,
/// members and memberships are refused, and E's members can be neither
/// managed nor pulled into B (where B's admin could then set their
/// password). Logged in to E, the same admin owes MFA first. (Before,
/// the B session set E's grace period to a year, which let E's members
/// in without MFA, and set an E member's password.)
async fn admin_rights_count_in_the_sessions_org_only(s: TestServer) {
    let root = s.root().await;
    let (org_e, dual, admin_e) = s.org_with_admin(&root, "Enforcing", "dual@e.example").await;
    let (org_b, _, _) = s.org_with_admin(&root, "Lenient", "ben@b.example").await;
    let eve = s.create_user(&admin_e, "eve@e.example", false).await;
    s.enforce(&admin_e, true).await;
    s.post(
        &format!("/user/org/{org_b}/user/{dual}"),
        &root,
        json!({"isAdmin": true}),
    )
    .await
    .expect(201, None);
    let in_e = s.login_org("dual@e.example", PASSWORD, org_e).await;
    assert_eq!(in_e.mfa, "setup_required");
    let in_b = s.login_org("dual@e.example", PASSWORD, org_b).await;
    assert_eq!(in_b.mfa, "none");
    let b = in_b.token.as_str();

    let grace = json!({"mfaGracePeriodHours": 8760});
    s.put(&format!("/user/org/{org_e}"), b, grace)
        .await
        .expect(403, Some("forbidden"));
    let member = format!("/user/org/{org_e}/user/{eve}");
    s.get(&member, b).await.expect(403, Some("forbidden"));
    s.delete(&member, b).await.expect(403, Some("forbidden"));
    s.post(
        &format!("/user/org/{org_e}/user/{}", eve + 1000),
        b,
        json!({}),
    )
    .await
    .expect(403, Some("forbidden"));
    s.get(&format!("/user/users/{eve}"), b)
        .await
        .expect(404, Some("not_found"));
    let takeover = json!({"password": "Takeover-Passw0rd-1"});
    s.put(&format!("/user/users/{eve}"), b, takeover)
        .await
        .expect(404, Some("not_found"));
    s.post(&format!("/user/org/{org_b}/user/{eve}"), b, json!({}))
        .await
        .expect(404, Some("not_found"));
    s.call(
        "POST",
        &format!("/user/org/{org_b}/email/user/eve@e.example"),
        Some(b),
        None,
    )
    .await
    .expect(404, Some("not_found"));
    let lookup = s.get("/user/users/email/eve@e.example", b).await;
    assert_eq!(lookup.ok()["exists"], false);
    let listed = s.get(&format!("/user/users?ids={eve}"), b).await;
    assert_eq!(listed.ok().as_array().map(Vec::len), Some(0));

    // Nothing changed: E's admin (a session of E from before the
    // enforcement, full) reads it all back.
    let org = s.get(&format!("/user/org/{org_e}"), &admin_e).await;
    assert_eq!(org.ok()["mfaGracePeriodHours"], 0);
    s.get(&member, &admin_e).await.expect(200, None);
    s.login_org("eve@e.example", PASSWORD, org_e).await;
    s.get(&format!("/user/org/{org_b}/user/{eve}"), &root)
        .await
        .expect(404, Some("not_found"));
}

/// A member deactivated in org A and still active in org B: A's admin
/// still sees them (to reactivate them), but may no longer change their
/// account (password, email, names, a pending change's confirmation):
/// that would let the org that let them go take over the account they
/// use in B. B's admin still manages them.
async fn a_deactivated_member_is_seen_but_not_managed(s: TestServer) {
    let root = s.root().await;
    let (_, _, admin_a) = s.org_with_admin(&root, "Alpha", "ann@alpha.example").await;
    let (org_b, _, admin_b) = s.org_with_admin(&root, "Beta", "ben@beta.example").await;
    let leaver = s.create_user(&admin_a, "leaver@example.com", false).await;
    s.add_to_org(&root, org_b, leaver).await;
    let user = format!("/user/users/{leaver}");
    s.put(&user, &root, json!({"email": "leaver@pending.example"}))
        .await
        .expect(200, None);
    s.advance(30);
    s.put(
        &format!("{user}/membership?byRef=false"),
        &admin_a,
        json!({"isActive": false}),
    )
    .await
    .expect(204, None);

    s.get(&user, &admin_a).await.expect(200, None);
    for change in [
        json!({"password": "Takeover-Passw0rd-1"}),
        json!({"email": "taken-over@example.com"}),
        json!({"firstName": "Renamed"}),
    ] {
        s.put(&user, &admin_a, change)
            .await
            .expect(404, Some("not_found"));
    }
    s.post(
        "/user/users/email/resendChangeConfirmation",
        &admin_a,
        json!({"userId": leaver}),
    )
    .await
    .expect(404, Some("not_found"));

    s.login_org("leaver@example.com", PASSWORD, org_b).await;
    s.put(&user, &admin_b, json!({"firstName": "Still"}))
        .await
        .expect(200, None);
    s.post(
        "/user/users/email/resendChangeConfirmation",
        &admin_b,
        json!({"userId": leaver}),
    )
    .await
    .expect(204, None);
}

/// A user of two orgs: neither org's admin may set their password or
/// email (`403`): whoever sets them logs in as the user to both orgs, and
/// one org's admin has no say over the other. A superadmin may, and the
/// user; names stay each admin's to change. (Before, the admin of an org
/// that owes no MFA could set the password of an admin of an org that
/// enforces it, one who had not enrolled yet, and log in there to enroll
/// a factor of their own.)
async fn credentials_of_a_user_of_two_orgs(s: TestServer) {
    let root = s.root().await;
    let (_, _, admin_a) = s.org_with_admin(&root, "Alpha", "ann@alpha.example").await;
    let (org_b, _, admin_b) = s.org_with_admin(&root, "Beta", "ben@beta.example").await;
    let shared = s.create_user(&admin_a, "shared@example.com", false).await;
    let user = format!("/user/users/{shared}");
    s.put(&user, &admin_a, json!({"lastName": "Alone"}))
        .await
        .expect(200, None);
    s.add_to_org(&root, org_b, shared).await;
    for admin in [&admin_a, &admin_b] {
        for change in [
            json!({"password": "Takeover-Passw0rd-1"}),
            json!({"email": "taken-over@example.com"}),
        ] {
            s.put(&user, admin, change)
                .await
                .expect(403, Some("forbidden"));
        }
        s.put(&user, admin, json!({"firstName": "Renamed"}))
            .await
            .expect(200, None);
    }
    s.login("shared@example.com", PASSWORD).await;
    s.put(&user, &root, json!({"password": "Set-By-Root-Passw0rd-1"}))
        .await
        .expect(200, None);
    s.login("shared@example.com", "Set-By-Root-Passw0rd-1")
        .await;
}

/// A member of an org that enforces MFA and of one that owes them none:
/// their password alone opens a full session in the lax org. Before the
/// fix, that session could remove the authenticator (or take new recovery
/// codes, or move the email away), and the enforcing org then asked for a
/// new factor to be set up, or accepted a recovery code: its MFA passed
/// with a password. Now every change of factors from a session that
/// verified none is `403 mfa_required` until a factor is verified on it,
/// also through the admins' resets when she is an admin there (found by a
/// second audit after the first fix). A new password, which would lock
/// her out of the enforcing org, is held to the same rule.
async fn a_password_alone_through_a_lax_org_changes_no_factor(s: TestServer) {
    let root = s.root().await;
    let (strict, _, strict_admin) = s
        .org_with_admin(&root, "Strict", "sam@strict.example")
        .await;
    let (lax, _, _) = s.org_with_admin(&root, "Lax", "lea@lax.example").await;
    s.enforce(&strict_admin, true).await;
    let email = "uma@strict.example";
    let uma = s.create_user(&strict_admin, email, false).await;
    // In the lax org she is an admin: the admins' resets, aimed at
    // herself, are changes of her own factors too.
    s.call(
        "POST",
        &format!("/user/org/{lax}/user/{uma}"),
        Some(&root),
        Some(json!({"isAdmin": true})),
    )
    .await
    .expect(201, None);
    let own = s.login_org(email, PASSWORD, lax).await;
    assert_eq!(own.mfa, "none");
    let secret = s.enroll_authenticator(&own.token).await;
    // The enrolling session verified a factor: it takes recovery codes.
    s.post("/user/users/mfa/recoveryCodes", &own.token, json!({}))
        .await
        .expect(200, None);

    // A member of both orgs with an authenticator: the admin's resets of
    // her factors are held to the admin's step-up too (an audit removed
    // such a member's factors with the admin's password alone).
    let vic_email = "vic@strict.example";
    let vic = s.create_user(&strict_admin, vic_email, false).await;
    s.call(
        "POST",
        &format!("/user/org/{lax}/user/{vic}"),
        Some(&root),
        None,
    )
    .await
    .expect(201, None);
    let vic_session = s.login_org(vic_email, PASSWORD, lax).await;
    s.enroll_authenticator(&vic_session.token).await;

    let stolen = s.login_org(email, PASSWORD, lax).await;
    assert_eq!(stolen.mfa, "none");
    let token = stolen.token.as_str();
    let attempts: Vec<(&str, String, Option<Value>)> = vec![
        ("POST", "/users/mfa/resetMyQRCodeEnroll".into(), None),
        ("POST", "/user/users/mfa/recoveryCodes".into(), None),
        ("POST", "/user/users/mfa/generateTempSecret".into(), None),
        (
            "PUT",
            "/oauth/users/mfa/enrollEmail?mfatype=EMAIL".into(),
            None,
        ),
        (
            "PUT",
            format!("/user/users/{uma}"),
            Some(json!({"email": "thief@example.com", "currentPassword": PASSWORD})),
        ),
        (
            "PUT",
            format!("/user/users/{uma}"),
            Some(json!({"password": "the thief's own password", "currentPassword": PASSWORD})),
        ),
        (
            "PUT",
            "/user/users/mfa/reset".into(),
            Some(json!({"ids": [uma]})),
        ),
        ("PUT", format!("/users/{email}/mfa/resetQRCodeEnroll"), None),
        (
            "PUT",
            "/user/users/mfa/reset".into(),
            Some(json!({"ids": [vic]})),
        ),
        (
            "PUT",
            format!("/users/{vic_email}/mfa/resetQRCodeEnroll"),
            None,
        ),
        // Nor any other change an admin makes: a factorless admin created
        // or promoted from here would reset the member's factors in its
        // place, and enforcement switched off needs no reset at all (a
        // later audit did both).
        (
            "POST",
            "/user/users".into(),
            Some(
                json!({"email": "evil@lax.example", "firstName": "E", "lastName": "V",
                        "password": PASSWORD, "isAdmin": true}),
            ),
        ),
        (
            "PUT",
            format!("/user/users/{vic}/membership"),
            Some(json!({"isAdmin": true})),
        ),
        (
            "PUT",
            "/user/org/mfa".into(),
            Some(json!({"isMfaEnforced": true})),
        ),
        (
            "PUT",
            format!("/user/org/{lax}"),
            Some(json!({"mfaGracePeriodHours": 5})),
        ),
        ("DELETE", format!("/user/org/{lax}/user/{vic}"), None),
    ];
    for (method, path, body) in &attempts {
        s.call(method, path, Some(token), body.clone())
            .await
            .expect(403, Some("mfa_required"));
    }
    assert!(s.mails_to("thief@example.com").is_empty());
    assert!(
        s.get("/user/users/page?search=evil", token).await.ok()["total"] == 0,
        "no admin was created"
    );
    let details = s.get("/oauth/users/mfaDetails", token).await;
    assert_eq!(details.ok()["details"]["AUTHENTICATOR"]["verified"], true);
    assert_eq!(
        s.login_org(email, PASSWORD, strict).await.mfa,
        "challenge_required"
    );
    assert_eq!(
        s.login_org(vic_email, PASSWORD, strict).await.mfa,
        "challenge_required",
        "the member kept her factor"
    );

    // A code verified on the session opens the way (a new token).
    let stepped_up = s
        .post(
            "/user/auth/mfa/verify",
            token,
            json!({"method": "AUTHENTICATOR", "code": s.totp(&secret)}),
        )
        .await;
    stepped_up.expect(200, None);
    let proven = stepped_up.body["token"].as_str().unwrap();
    s.get("/user/users/me", token)
        .await
        .expect(401, Some("unauthorized"));
    s.post("/user/users/mfa/recoveryCodes", proven, json!({}))
        .await
        .expect(200, None);
    s.put("/user/users/mfa/reset", proven, json!({"ids": [vic]}))
        .await
        .expect(204, None);
    assert_eq!(
        s.login_org(vic_email, PASSWORD, strict).await.mfa,
        "setup_required"
    );
    let new_password = json!({"password": "her own new password", "currentPassword": PASSWORD});
    s.call(
        "PUT",
        &format!("/user/users/{uma}"),
        Some(proven),
        Some(new_password),
    )
    .await
    .expect(200, None);

    // A superadmin alike: with a factor, the password alone through the
    // lax org does not switch enforcement off for every org.
    let root_secret = s.enroll_authenticator(&root).await;
    let root_lax = s.login_org(crate::helpers::ROOT_EMAIL, PASSWORD, lax).await;
    assert_eq!(root_lax.mfa, "none");
    s.put(
        "/user/org/mfa?allOrgs=true",
        &root_lax.token,
        json!({"isMfaEnforced": false}),
    )
    .await
    .expect(403, Some("mfa_required"));
    let strict_org = s.get(&format!("/user/org/{strict}"), &strict_admin).await;
    assert_eq!(
        strict_org.ok()["isMfaEnforced"],
        true,
        "the strict org still enforces"
    );
    // Verified on the session, the superadmin administers as before.
    let proven_root = s
        .post(
            "/user/auth/mfa/verify",
            &root_lax.token,
            json!({"method": "AUTHENTICATOR", "code": s.totp(&root_secret)}),
        )
        .await;
    proven_root.expect(200, None);
    s.put(
        &format!("/user/org/{lax}"),
        proven_root.body["token"].as_str().unwrap(),
        json!({"mfaGracePeriodHours": 5}),
    )
    .await
    .expect(200, None);
}

/// The contract's writes that a user makes for themselves, or that take
/// no session: the rest are an admin's, held to the admin's step-up.
const OWN_WRITES: &[(&str, &str)] = &[
    ("POST", "/user/auth/login"),
    ("POST", "/user/auth/mfa/challenge"),
    ("POST", "/user/auth/mfa/verify"),
    ("POST", "/user/auth/logout"),
    ("PUT", "/user/users/me/mfa"),
    ("POST", "/user/users/email/confirmChange"),
    ("POST", "/user/users/email/resendChangeConfirmation"),
    ("POST", "/user/users/mfa/generateTempSecret"),
    ("POST", "/user/users/mfa/validateCode"),
    ("PUT", "/users/mfa/associateQRCode"),
    ("PUT", "/users/mfa/verifyQRCodeEnroll"),
    ("POST", "/users/mfa/resetMyQRCodeEnroll"),
    ("PUT", "/oauth/users/mfa/enrollEmail"),
    ("PUT", "/oauth/users/mfa/verifyEmail"),
    ("POST", "/user/users/mfa/recoveryCodes"),
    // A lookup, posted so that the email stays out of the URL.
    ("POST", "/user/users/email"),
];

/// A superadmin who has a factor, signed in with the password alone where
/// no MFA is owed, administers nothing until a factor is verified on the
/// session: every admin write of the contract is `403 mfa_required`. (An
/// audit created orgs so: `POST /user/org` was the one admin write without
/// the step-up.) Every write route of the contract is either tried here or
/// listed as the user's own, so that a new admin route cannot be missed.
async fn a_superadmins_password_alone_administers_nothing(s: TestServer) {
    let root = s.root().await;
    let (org, admin, _) = s
        .org_with_admin(&root, "Target", "ada@target.example")
        .await;
    let member = s.create_user(&root, "mo@example.com", false).await;
    // A change of the member's address waiting for its confirmation, for
    // the admin's resend of its link below.
    s.put(
        &format!("/user/users/{member}"),
        &root,
        json!({"email": "mo.new@example.com"}),
    )
    .await
    .expect(200, None);
    s.advance(31);
    s.enroll_authenticator(&root).await;
    let stolen = s.login(ROOT_EMAIL, PASSWORD).await;
    assert_eq!(stolen.mfa, "none", "the default org owes no MFA");
    let token = stolen.token.as_str();

    let attempts: Vec<(&str, &str, String, Option<Value>)> = vec![
        (
            "POST",
            "/user/org",
            "/user/org".into(),
            Some(json!({"name": "Evil"})),
        ),
        (
            "PUT",
            "/user/org/{id}",
            format!("/user/org/{org}"),
            Some(json!({"name": "Renamed"})),
        ),
        ("DELETE", "/user/org/{id}", format!("/user/org/{org}"), None),
        (
            "PUT",
            "/user/org/mfa",
            "/user/org/mfa?allOrgs=true".into(),
            Some(json!({"isMfaEnforced": true})),
        ),
        (
            "POST",
            "/user/org/{orgId}/email/user/{email}",
            format!("/user/org/{org}/email/user/mo@example.com"),
            None,
        ),
        (
            "POST",
            "/user/org/{orgId}/user/{userId}",
            format!("/user/org/{org}/user/{member}"),
            None,
        ),
        (
            "DELETE",
            "/user/org/{orgId}/user/{userId}",
            format!("/user/org/{org}/user/{admin}"),
            None,
        ),
        (
            "POST",
            "/user/users",
            "/user/users".into(),
            Some(
                json!({"email": "evil@example.com", "firstName": "E", "lastName": "V",
                        "password": PASSWORD, "isAdmin": true}),
            ),
        ),
        (
            "PUT",
            "/user/users/{id}",
            format!("/user/users/{member}"),
            Some(json!({"firstName": "Renamed"})),
        ),
        (
            "DELETE",
            "/user/users/{id}",
            format!("/user/users/{member}"),
            None,
        ),
        (
            "PUT",
            "/user/users/{id}/membership",
            format!("/user/users/{member}/membership"),
            Some(json!({"mfaOptOut": true})),
        ),
        (
            "POST",
            "/user/users/{id}/logout",
            format!("/user/users/{member}/logout"),
            None,
        ),
        (
            "POST",
            "/user/users/insert/{orgId}",
            format!("/user/users/insert/{org}"),
            None,
        ),
        (
            "DELETE",
            "/user/users/deleteFromAllOrgs/{email}",
            "/user/users/deleteFromAllOrgs/mo@example.com".into(),
            None,
        ),
        (
            "PUT",
            "/user/users/mfa/reset",
            "/user/users/mfa/reset".into(),
            Some(json!({"ids": [member]})),
        ),
        (
            "PUT",
            "/users/{username}/mfa/resetQRCodeEnroll",
            "/users/mo@example.com/mfa/resetQRCodeEnroll".into(),
            None,
        ),
        // The user's own route too, an admin's when aimed at another user
        // (it went through without the step-up: a later audit).
        (
            "POST",
            "/user/users/email/resendChangeConfirmation",
            "/user/users/email/resendChangeConfirmation".into(),
            Some(json!({"userId": member})),
        ),
    ];
    let tried: BTreeSet<(&str, &str)> = attempts
        .iter()
        .map(|(m, route, _, _)| (*m, *route))
        .collect();
    let own: BTreeSet<(&str, &str)> = OWN_WRITES.iter().copied().collect();
    let writes: BTreeSet<(&str, &str)> = crate::operations::CONTRACT
        .iter()
        .copied()
        .filter(|(method, _)| *method != "GET")
        .collect();
    let classified: BTreeSet<(&str, &str)> = tried.union(&own).copied().collect();
    assert_eq!(
        classified, writes,
        "every write route is tried or the user's own"
    );

    for (method, _, path, body) in &attempts {
        s.call(method, path, Some(token), body.clone())
            .await
            .expect(403, Some("mfa_required"));
    }
    let orgs = s.get(&format!("/user/org/{org}"), &root).await;
    assert_eq!(orgs.ok()["name"], "Target", "nothing changed");
    assert_eq!(
        s.get("/user/users/page?search=evil", &root).await.ok()["total"],
        0
    );
}

/// A user's factors serve every org of theirs, so each org's trail shows
/// them change, wherever the change was made: an admin of org A saw
/// nothing when org B's admin reset a member of both, nor when the member
/// enrolled again from a session in B (an audit). Org A is not told who
/// in org B did it.
async fn a_shared_members_factors_change_in_the_trail_of_each_org(s: TestServer) {
    let root = s.root().await;
    let (org_a, _, admin_a) = s.org_with_admin(&root, "Alpha", "ann@alpha.example").await;
    let (org_b, ben, admin_b) = s.org_with_admin(&root, "Beta", "ben@beta.example").await;
    let shared = s.create_user(&admin_a, "shared@example.com", false).await;
    s.add_to_org(&root, org_b, shared).await;
    let in_b = s.login_org("shared@example.com", PASSWORD, org_b).await;
    s.enroll_authenticator(&in_b.token).await;
    s.put("/user/users/mfa/reset", &admin_b, json!({"ids": [shared]}))
        .await
        .expect(204, None);
    // A new password, set in org B, is the account's in org A too.
    let again_in_b = s.login_org("shared@example.com", PASSWORD, org_b).await;
    s.put(
        &format!("/user/users/{shared}"),
        &again_in_b.token,
        json!({"password": "Her-New-Passw0rd-9", "currentPassword": PASSWORD}),
    )
    .await
    .expect(200, None);

    let trail = |admin: &str, org: i64| {
        let admin = admin.to_string();
        let s = &s;
        async move {
            let page = s
                .get(&format!("/user/audit?userId={shared}&size=200"), &admin)
                .await;
            let items = page.ok()["items"].as_array().unwrap().clone();
            assert!(items.iter().all(|e| e["orgId"] == org), "{items:?}");
            items
                .iter()
                .filter(|e| {
                    ["authenticator_enrolled", "mfa_reset", "user_updated"]
                        .contains(&e["action"].as_str().unwrap())
                })
                .map(|e| {
                    (
                        e["action"].clone(),
                        e["actorUserId"].clone(),
                        e["detail"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    // Newest first.
    assert_eq!(
        trail(&admin_a, org_a).await,
        [
            (
                json!("user_updated"),
                json!(shared),
                json!("password, in another org")
            ),
            (
                json!("mfa_reset"),
                Value::Null,
                json!("all factors removed; sessions ended by an admin, in another org")
            ),
            (
                json!("authenticator_enrolled"),
                json!(shared),
                json!("in another org")
            ),
        ]
    );
    assert_eq!(
        trail(&admin_b, org_b).await,
        [
            (json!("user_updated"), json!(shared), json!("password")),
            (
                json!("mfa_reset"),
                json!(ben),
                json!("all factors removed; sessions ended by an admin")
            ),
            (json!("authenticator_enrolled"), json!(shared), json!("")),
        ]
    );
}

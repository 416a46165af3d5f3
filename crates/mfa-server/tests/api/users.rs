//! Users: creation, reads, updates and confirmed email changes, and the
//! superadmin's seed endpoints.

use serde_json::{Value, json};

use crate::helpers::{PASSWORD, ROOT_EMAIL, TestServer, ids_of};
use crate::on_every_backend;

on_every_backend!(
    user_routes,
    email_change,
    superadmin_routes,
    the_user_list_shows_each_membership,
    the_trail_says_what_a_creation_granted_and_a_reset_removed,
    decomposed_and_composed_spellings_are_one
);

/// A name or address typed decomposed (`e` and a combining accent, as a
/// copy from a PDF or a macOS file name gives it) is stored composed
/// (NFC): the composed spelling signs in and finds it, and a second
/// account cannot be made with the other spelling.
async fn decomposed_and_composed_spellings_are_one(s: TestServer) {
    let root = s.root().await;
    let made = s
        .post(
            "/user/users",
            &root,
            json!({"email": "Zoe\u{308}@example.com", "firstName": "Zoe\u{308}",
                   "lastName": "Nore\u{301}n", "password": PASSWORD}),
        )
        .await;
    let zoe = made.ok()["id"].as_i64().unwrap();
    assert_eq!(made.body["email"], "zo\u{eb}@example.com");
    assert_eq!(made.body["firstName"], "Zo\u{eb}");
    assert_eq!(made.body["lastName"], "Nor\u{e9}n");
    s.login("zo\u{eb}@example.com", PASSWORD).await;
    s.login("ZOE\u{308}@example.com", PASSWORD).await;
    for search in ["zo\u{eb}", "Zoe\u{308}", "nor\u{e9}n", "nore\u{301}n"] {
        let page = s
            .get(
                &format!("/user/users/page?search={}", urlencoding(search)),
                &root,
            )
            .await;
        assert_eq!(ids_of(&page.ok()["items"]), [zoe], "{search:?}");
    }
    s.post(
        "/user/users",
        &root,
        json!({"email": "zo\u{eb}@example.com", "firstName": "Z", "lastName": "Z",
               "password": PASSWORD}),
    )
    .await
    .expect(409, Some("conflict"));
}

/// `text` percent-encoded for a query.
fn urlencoding(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// The audit trail of a user made an admin at once says so, as the
/// operator's `create-user --admin` and a later promotion do, and a reset
/// of a user with no factor does not claim factors were removed (an
/// audit of the trail found both).
async fn the_trail_says_what_a_creation_granted_and_a_reset_removed(s: TestServer) {
    let root = s.root().await;
    let (_, _, admin) = s.org_with_admin(&root, "Trail", "tara@trail.example").await;
    let boss = s.create_user(&admin, "boss@trail.example", true).await;
    let plain = s.create_user(&admin, "plain@trail.example", false).await;
    let events = |user: i64, action: &'static str| {
        let (s, admin) = (&s, admin.clone());
        async move {
            s.audit_details(&admin, &format!("userId={user}&action={action}"))
                .await
        }
    };
    assert_eq!(events(boss, "membership_created").await, ["isAdmin=true"]);
    assert_eq!(events(plain, "membership_created").await, [""]);
    assert_eq!(events(boss, "user_created").await, [""]);

    s.put("/user/users/mfa/reset", &admin, json!({"ids": [plain]}))
        .await
        .expect(204, None);
    assert_eq!(
        events(plain, "mfa_reset").await,
        ["no factor was set up; sessions ended by an admin"]
    );
    let login = s.login("boss@trail.example", PASSWORD).await;
    s.enroll_authenticator(&login.token).await;
    s.put("/user/users/mfa/reset", &admin, json!({"ids": [boss]}))
        .await
        .expect(204, None);
    assert_eq!(
        events(boss, "mfa_reset").await,
        ["all factors removed; sessions ended by an admin"]
    );

    // "What happened last night": a period, from (included) to (left out).
    s.advance(600);
    s.put("/user/users/mfa/reset", &admin, json!({"ids": [plain]}))
        .await
        .expect(204, None);
    let newest = s.get("/user/audit?size=1", &admin).await;
    let at = newest.ok()["items"][0]["at"].as_str().unwrap().to_string();
    let resets = |query: String| {
        let (s, admin) = (&s, admin.clone());
        async move {
            let page = s
                .get(&format!("/user/audit?action=mfa_reset&{query}"), &admin)
                .await;
            page.ok()["total"].as_u64().unwrap()
        }
    };
    assert_eq!(resets(format!("from={at}")).await, 1);
    assert_eq!(resets(format!("to={at}")).await, 2);
    // The zone counts: the same wall time three hours east is three hours
    // earlier, before every reset; three hours west, after all of them.
    let east = at.replace('Z', "%2B03:00");
    assert_eq!(resets(format!("from={east}")).await, 3, "{east}");
    let west = at.replace('Z', "-03:00");
    assert_eq!(resets(format!("from={west}")).await, 0, "{west}");
    // Times are whole seconds: a fraction bounds between two of them.
    let half_past = at.replace('Z', ".5Z");
    assert_eq!(resets(format!("to={half_past}")).await, 3, "{half_past}");
    assert_eq!(resets(format!("from={half_past}")).await, 0, "{half_past}");
    let (early, late) = (at.replace('Z', ".2Z"), at.replace('Z', ".7Z"));
    assert_eq!(resets(format!("from={early}&to={late}")).await, 0);
    for bad in [
        "from=yesterday",
        "to=2026-11-22",
        &format!("from={at}&to={at}"),
    ] {
        s.get(&format!("/user/audit?{bad}"), &admin)
            .await
            .expect(400, Some("invalid_request"));
    }
}

/// The admins' list says of each member what their membership exempts or
/// withholds: opted out of the org's MFA, access disabled, admin. (The
/// console showed opted-out and disabled members as any member without
/// MFA, and its CSV had no column for it: an audit.)
async fn the_user_list_shows_each_membership(s: TestServer) {
    let root = s.root().await;
    let (org, _, admin) = s
        .org_with_admin(&root, "Listed", "lia@listed.example")
        .await;
    let out = s.create_user(&admin, "out@listed.example", false).await;
    let off = s.create_user(&admin, "off@listed.example", false).await;
    s.put(
        &format!("/user/users/{out}/membership"),
        &admin,
        json!({"mfaOptOut": true}),
    )
    .await
    .expect(204, None);
    s.put(
        &format!("/user/users/{off}/membership"),
        &admin,
        json!({"isActive": false}),
    )
    .await
    .expect(204, None);
    let page = s
        .get("/user/users/page?search=listed.example", &admin)
        .await;
    let states: Vec<(String, Value)> = page.ok()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let m = &u["membership"];
            assert_eq!(m["orgId"], org);
            assert_eq!(m["userId"], u["id"]);
            (
                u["email"].as_str().unwrap().to_string(),
                json!([m["isActive"], m["isAdmin"], m["mfaOptOut"]]),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("lia@listed.example".to_string(), json!([true, true, false])),
            ("out@listed.example".to_string(), json!([true, false, true])),
            (
                "off@listed.example".to_string(),
                json!([false, false, false])
            ),
        ]
    );
}

async fn user_routes(s: TestServer) {
    let root = s.root().await;
    let (_, olga, other_admin) = s.org_with_admin(&root, "Other", "olga@example.com").await;

    // Create: admins of the current org; never a hash or secret on the wire.
    let c = s
        .post(
            "/user/users",
            &root,
            json!({"email": "Kim@Example.com", "firstName": "Kim", "lastName": "Lee",
                   "password": PASSWORD, "isAdmin": true}),
        )
        .await;
    c.expect(201, None);
    let kim = c.body["id"].as_i64().unwrap();
    let mut keys: Vec<&str> = c
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "email",
            "firstName",
            "id",
            "isSuperAdmin",
            "lastLoginAt",
            "lastName",
            "mfa",
            "mfaOptIn"
        ]
    );
    assert_eq!(c.body["email"], "kim@example.com");
    assert_eq!(c.body["lastLoginAt"], json!(null));
    assert_eq!(c.body["isSuperAdmin"], false);
    s.post(
        "/user/users",
        &root,
        json!({"email": "kim@example.com", "firstName": "K", "lastName": "L", "password": PASSWORD}),
    )
    .await
    .expect(409, Some("conflict"));
    s.post(
        "/user/users",
        &root,
        json!({"email": "short@example.com", "firstName": "K", "lastName": "L", "password": "short"}),
    )
    .await
    .expect(400, Some("invalid_request"));
    s.post(
        "/user/users",
        &root,
        json!({"email": "not an email", "firstName": "K", "lastName": "L", "password": PASSWORD}),
    )
    .await
    .expect(400, Some("invalid_request"));
    // Names that hide or reorder text are refused like control characters,
    // and the message says why (it spoke of a length before).
    let hidden = s
        .post(
            "/user/users",
            &root,
            json!({"email": "rlo@example.com", "firstName": "\u{202E}evil\u{200B}", "lastName": "L", "password": PASSWORD}),
        )
        .await;
    hidden.expect(400, Some("invalid_request"));
    assert!(
        hidden.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("invisible")),
        "{hidden:?}"
    );
    // Both names are required, as the seed's form marks them (an audit
    // saved blank ones from the console).
    for (first, last) in [("", "L"), ("K", "   ")] {
        s.post(
            "/user/users",
            &root,
            json!({"email": "blank@example.com", "firstName": first, "lastName": last, "password": PASSWORD}),
        )
        .await
        .expect(400, Some("invalid_request"));
    }
    // Addresses no code could be mailed to are refused when stored, not
    // with a 503 at every send.
    for unmailable in [
        r#"a"b@example.com"#,
        "a;b@example.com",
        "user@[127.0.0.1]",
        "user@[IPv6:::1]",
    ] {
        let a = s
            .post(
                "/user/users",
                &root,
                json!({"email": unmailable, "firstName": "K", "lastName": "L", "password": PASSWORD}),
            )
            .await;
        a.expect(400, Some("invalid_request"));
        assert_eq!(
            a.body["message"],
            "email is not an address mail can be sent to"
        );
        s.put(
            &format!("/user/users/{kim}"),
            &root,
            json!({"email": unmailable}),
        )
        .await
        .expect(400, Some("invalid_request"));
    }
    let lou = s.create_user(&root, "lou@example.com", false).await;
    let lou_token = s.login("lou@example.com", PASSWORD).await.token;
    s.post(
        "/user/users",
        &lou_token,
        json!({"email": "x@example.com", "firstName": "K", "lastName": "L", "password": PASSWORD}),
    )
    .await
    .expect(403, Some("forbidden"));

    // By ids: users outside the caller's orgs are left out.
    let a = s
        .get(&format!("/user/users?ids={kim},{lou},{olga},424242"), &root)
        .await;
    assert_eq!(
        a.ok().as_array().unwrap().len(),
        3,
        "a superadmin sees the users of every org"
    );
    let kim_token = s.login("kim@example.com", PASSWORD).await.token;
    let a = s
        .get(&format!("/user/users?ids={kim},{lou},{olga}"), &kim_token)
        .await;
    assert_eq!(ids_of(a.ok()), [kim, lou]);
    s.get(&format!("/user/users?ids={kim}"), &lou_token)
        .await
        .expect(403, Some("forbidden"));

    // Me, with memberships.
    let me = s.get("/user/users/me", &kim_token).await;
    assert_eq!(me.ok()["id"], kim);
    assert_eq!(me.body["memberships"][0]["isAdmin"], true);
    assert!(me.body.get("passwordHash").is_none());

    // One user: self, admins of a shared org; another org's user is not found.
    s.get(&format!("/user/users/{lou}"), &lou_token)
        .await
        .expect(200, None);
    s.get(&format!("/user/users/{lou}"), &kim_token)
        .await
        .expect(200, None);
    s.get(&format!("/user/users/{kim}"), &lou_token)
        .await
        .expect(404, Some("not_found"));
    s.get(&format!("/user/users/{lou}"), &other_admin)
        .await
        .expect(404, Some("not_found"));
    s.get("/user/users/777777", &root)
        .await
        .expect(404, Some("not_found"));

    // Update names: self and admins; not another org's admin.
    let u = s
        .put(
            &format!("/user/users/{lou}"),
            &kim_token,
            json!({"firstName": "Louis"}),
        )
        .await;
    assert_eq!(u.ok()["firstName"], "Louis");
    assert_eq!(u.body["lastName"], "lou");
    s.put(
        &format!("/user/users/{lou}"),
        &kim_token,
        json!({"lastName": " "}),
    )
    .await
    .expect(400, Some("invalid_request"));
    // The name it has is no change, and no event.
    s.put(
        &format!("/user/users/{lou}"),
        &kim_token,
        json!({"firstName": "Louis"}),
    )
    .await
    .expect(200, None);
    assert_eq!(
        crate::attacks::audit_count(&s, &root, lou, "user_updated").await,
        1
    );
    s.put(
        &format!("/user/users/{lou}"),
        &other_admin,
        json!({"firstName": "X"}),
    )
    .await
    .expect(404, Some("not_found"));
    s.put(
        &format!("/user/users/{lou}"),
        &lou_token,
        json!({"nickname": "X"}),
    )
    .await
    .expect(400, Some("invalid_request"));

    // A self-service password change needs the current password and ends
    // the user's other sessions.
    let other_session = s.login("lou@example.com", PASSWORD).await.token;
    s.put(
        &format!("/user/users/{lou}"),
        &lou_token,
        json!({"password": "new password 1"}),
    )
    .await
    .expect(400, Some("invalid_request"));
    s.put(
        &format!("/user/users/{lou}"),
        &lou_token,
        json!({"password": "new password 1", "currentPassword": "wrong"}),
    )
    .await
    .expect(401, Some("invalid_credentials"));
    // The same password again is no change: refused, nothing mailed, no
    // session ended (it was set, and a notice of a new password sent).
    let mails = s.mails_to("lou@example.com").len();
    let same = s
        .put(
            &format!("/user/users/{lou}"),
            &lou_token,
            json!({"password": PASSWORD, "currentPassword": PASSWORD}),
        )
        .await;
    same.expect(400, Some("invalid_request"));
    assert_eq!(same.body["message"], "the new password is the current one");
    assert_eq!(s.mails_to("lou@example.com").len(), mails);
    s.get("/user/users/me", &other_session)
        .await
        .expect(200, None);
    s.put(
        &format!("/user/users/{lou}"),
        &lou_token,
        json!({"password": "new password 1", "currentPassword": PASSWORD}),
    )
    .await
    .expect(200, None);
    s.get("/user/users/me", &other_session)
        .await
        .expect(401, Some("unauthorized"));
    s.get("/user/users/me", &lou_token).await.expect(200, None);
    s.login("lou@example.com", "new password 1").await;
    // An admin setting it ends all of them.
    s.put(
        &format!("/user/users/{lou}"),
        &kim_token,
        json!({"password": PASSWORD}),
    )
    .await
    .expect(200, None);
    s.get("/user/users/me", &lou_token)
        .await
        .expect(401, Some("unauthorized"));

    // Exists by email: true only for users in the caller's orgs.
    let e = s.get("/user/users/email/lou@example.com", &kim_token).await;
    assert_eq!(e.ok(), &json!({"exists": true}));
    let e = s
        .get("/user/users/email/olga@example.com", &kim_token)
        .await;
    assert_eq!(e.ok(), &json!({"exists": false}));
    let e = s.get("/user/users/email/not-an-email", &kim_token).await;
    assert_eq!(e.ok(), &json!({"exists": false}));
    let lou_token = s.login("lou@example.com", PASSWORD).await.token;
    s.get("/user/users/email/kim@example.com", &lou_token)
        .await
        .expect(403, Some("forbidden"));

    // Delete: superadmins only, not themselves.
    s.delete(&format!("/user/users/{lou}"), &kim_token)
        .await
        .expect(403, Some("forbidden"));
    let root_id = s.get("/user/users/me", &root).await.body["id"]
        .as_i64()
        .unwrap();
    s.delete(&format!("/user/users/{root_id}"), &root)
        .await
        .expect(400, Some("invalid_request"));
    s.delete(&format!("/user/users/{lou}"), &root)
        .await
        .expect(204, None);
    s.get("/user/users/me", &lou_token)
        .await
        .expect(401, Some("unauthorized"));
    s.delete(&format!("/user/users/{lou}"), &root)
        .await
        .expect(404, Some("not_found"));
}

async fn email_change(s: TestServer) {
    let root = s.root().await;
    let mia = s.create_user(&root, "mia@example.com", false).await;
    let mia_token = s.login("mia@example.com", PASSWORD).await.token;
    // Enroll the email factor at the old address first.
    s.call(
        "PUT",
        "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
        Some(&mia_token),
        None,
    )
    .await
    .expect(200, None);
    let code = s.last_code("mia@example.com");
    s.put(
        "/oauth/users/mfa/verifyEmail",
        &mia_token,
        json!({"mfatype": "EMAIL", "totp": code}),
    )
    .await
    .expect(200, None);

    // Nothing pending yet.
    s.call(
        "POST",
        "/user/users/email/resendChangeConfirmation",
        Some(&mia_token),
        None,
    )
    .await
    .expect(404, Some("not_found"));
    let me = s.get("/user/users/me", &mia_token).await;
    assert_eq!(me.ok()["pendingEmail"], serde_json::Value::Null);

    // A self-service change needs the current password: without it, a
    // bad request (not a wrong password, counted toward the lockout).
    s.put(
        &format!("/user/users/{mia}"),
        &mia_token,
        json!({"email": "mia@new.example"}),
    )
    .await
    .expect(400, Some("invalid_request"));
    let u = s
        .put(
            &format!("/user/users/{mia}"),
            &mia_token,
            json!({"email": "mia@new.example", "currentPassword": PASSWORD}),
        )
        .await;
    assert_eq!(
        u.ok()["email"],
        "mia@example.com",
        "not in effect before confirmation"
    );
    // The answer shows the change it made pending (it showed only at the
    // next read before).
    assert_eq!(u.ok()["pendingEmail"]["newEmail"], "mia@new.example");
    let token = s.last_token("mia@new.example");
    // The pages show the pending change from these (an audit found them
    // saying "pending" only right after the change).
    for (path, who) in [
        ("/user/users/me".to_string(), &mia_token),
        (format!("/user/users/{mia}"), &root),
    ] {
        let user = s.get(&path, who).await;
        assert_eq!(user.ok()["email"], "mia@example.com", "{path}");
        assert_eq!(
            user.ok()["pendingEmail"]["newEmail"],
            "mia@new.example",
            "{path}"
        );
        assert!(user.ok()["pendingEmail"]["expiresAt"].is_string(), "{path}");
    }
    assert!(
        s.mails_to("mia@example.com")
            .iter()
            .any(|m| m.text().unwrap_or_default().contains("m***@new.example")),
        "no notice to the old address"
    );
    // Taken addresses conflict.
    s.put(
        &format!("/user/users/{mia}"),
        &root,
        json!({"email": ROOT_EMAIL}),
    )
    .await
    .expect(409, Some("conflict"));

    // One confirmation mail per 30 s per user, whoever asks and however:
    // a new change or a resend. Otherwise a caller could have the server
    // mail an address nobody has proven, as often as it liked.
    let early = s
        .call(
            "POST",
            "/user/users/email/resendChangeConfirmation",
            Some(&mia_token),
            None,
        )
        .await;
    early.expect(429, Some("too_many_attempts"));
    assert_eq!(early.header("retry-after"), Some("30"));
    s.put(
        &format!("/user/users/{mia}"),
        &root,
        json!({"email": "mia@other.example"}),
    )
    .await
    .expect(429, Some("too_many_attempts"));
    assert!(s.mails_to("mia@other.example").is_empty());
    s.advance(30);

    // Resend (no body: the caller; or an admin naming the user).
    s.call(
        "POST",
        "/user/users/email/resendChangeConfirmation",
        Some(&mia_token),
        None,
    )
    .await
    .expect(204, None);
    let resent = s.last_token("mia@new.example");
    assert_ne!(resent, token);
    s.advance(30);
    s.post(
        "/user/users/email/resendChangeConfirmation",
        &root,
        json!({"userId": mia}),
    )
    .await
    .expect(204, None);
    let latest = s.last_token("mia@new.example");
    // Every link that went out is in the trail: the request, two resends.
    let requested = s
        .get(
            &format!("/user/audit?action=email_change_requested&userId={mia}"),
            &root,
        )
        .await;
    assert_eq!(requested.ok()["total"], 3);
    assert_eq!(
        requested.ok()["items"][0]["detail"],
        "to m***@new.example, sent again"
    );
    s.post(
        "/user/users/email/resendChangeConfirmation",
        &root,
        json!({"userId": 0}),
    )
    .await
    .expect(400, Some("invalid_request"));

    // Old tokens are void; the latest confirms, once.
    let confirm = |body: serde_json::Value| {
        s.call("POST", "/user/users/email/confirmChange", None, Some(body))
    };
    confirm(json!({"token": &token}))
        .await
        .expect(400, Some("invalid_code"));
    confirm(json!({"token": &latest})).await.expect(204, None);
    confirm(json!({"token": &latest}))
        .await
        .expect(400, Some("invalid_code"));
    confirm(json!({"token": 5}))
        .await
        .expect(400, Some("invalid_request"));

    // Every session of the user ended with the change (it removed a
    // factor); the new address logs in, and the email factor must be
    // verified again.
    s.get("/oauth/users/mfaDetails", &mia_token)
        .await
        .expect(401, Some("unauthorized"));
    let mia_token = s.login("mia@new.example", PASSWORD).await.token;
    let d = s.get("/oauth/users/mfaDetails", &mia_token).await;
    assert_eq!(d.ok()["details"]["EMAIL"]["verified"], false);
    let me = s.get("/user/users/me", &mia_token).await;
    assert_eq!(
        me.ok()["pendingEmail"],
        serde_json::Value::Null,
        "confirmed"
    );

    // An expired token.
    s.put(
        &format!("/user/users/{mia}"),
        &root,
        json!({"email": "mia@third.example"}),
    )
    .await
    .expect(200, None);
    let token = s.last_token("mia@third.example");
    s.advance(24 * 3600);
    let expired = s.get(&format!("/user/users/{mia}"), &s.root().await).await;
    assert_eq!(
        expired.ok()["pendingEmail"],
        serde_json::Value::Null,
        "expired"
    );
    confirm(json!({"token": &token}))
        .await
        .expect(400, Some("code_expired"));

    // An address another account took after the request: the link is
    // used up. Both refusals are in the trail. (A day on: a new session.)
    s.advance(30);
    let root = s.root().await;
    s.put(
        &format!("/user/users/{mia}"),
        &root,
        json!({"email": "mia@fourth.example"}),
    )
    .await
    .expect(200, None);
    let token = s.last_token("mia@fourth.example");
    s.create_user(&root, "mia@fourth.example", false).await;
    confirm(json!({"token": &token}))
        .await
        .expect(409, Some("conflict"));
    confirm(json!({"token": &token}))
        .await
        .expect(400, Some("invalid_code"));
    assert_eq!(
        s.get(&format!("/user/users/{mia}"), &root).await.ok()["email"],
        "mia@new.example"
    );
    let details = s
        .audit_details(&root, &format!("action=email_change_refused&userId={mia}"))
        .await;
    assert_eq!(
        details,
        [
            "to m***@fourth.example: the address is taken",
            "to m***@third.example: the link expired"
        ]
    );
}

async fn superadmin_routes(s: TestServer) {
    let root = s.root().await;
    let (other, olga, other_admin) = s.org_with_admin(&root, "Other", "olga@example.com").await;
    let ned = s.create_user(&root, "ned@example.com", false).await;

    // Load by email, whatever the orgs.
    let u = s
        .post(
            "/user/users/email",
            &root,
            json!({"email": "OLGA@example.com"}),
        )
        .await;
    assert_eq!(u.ok()["id"], olga);
    s.post(
        "/user/users/email",
        &root,
        json!({"email": "ghost@example.com"}),
    )
    .await
    .expect(404, Some("not_found"));
    s.post(
        "/user/users/email",
        &other_admin,
        json!({"email": "olga@example.com"}),
    )
    .await
    .expect(403, Some("forbidden"));

    // The admins of an org.
    let a = s.get(&format!("/user/users/admins/{other}"), &root).await;
    let emails: Vec<&str> = a
        .ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, [ROOT_EMAIL, "olga@example.com"]);
    s.get(&format!("/user/users/admins/{other}"), &other_admin)
        .await
        .expect(403, Some("forbidden"));
    s.get("/user/users/admins/999999", &root)
        .await
        .expect(404, Some("not_found"));

    // Join an org (audited).
    let c = s.post("/user/org", &root, json!({"name": "Third"})).await;
    let third = c.body["id"].as_i64().unwrap();
    let j = s
        .call(
            "POST",
            &format!("/user/users/insert/{third}"),
            Some(&root),
            None,
        )
        .await;
    j.expect(201, None);
    assert_eq!(j.body["orgId"], third);
    assert_eq!(j.body["isAdmin"], true);
    // Again: nothing changes, and nothing more is audited.
    let again = s
        .call(
            "POST",
            &format!("/user/users/insert/{third}"),
            Some(&root),
            None,
        )
        .await;
    again.expect(201, None);
    assert_eq!(again.body, j.body);
    s.call(
        "POST",
        &format!("/user/users/insert/{third}"),
        Some(&other_admin),
        None,
    )
    .await
    .expect(403, Some("forbidden"));
    s.call("POST", "/user/users/insert/999999", Some(&root), None)
        .await
        .expect(404, Some("not_found"));
    let audit = s
        .get(
            "/user/audit?action=super_admin_joined_org",
            &s.login_org(ROOT_EMAIL, PASSWORD, third).await.token,
        )
        .await;
    assert_eq!(audit.ok()["total"], 1);

    // Remove from every org, active or not; sessions end.
    s.call(
        "POST",
        &format!("/user/org/{other}/email/user/ned@example.com"),
        Some(&root),
        None,
    )
    .await
    .expect(201, None);
    s.put(
        &format!("/user/users/{ned}/membership"),
        &root,
        json!({"isActive": false}),
    )
    .await
    .expect(204, None);
    let ned_token = s.login("ned@example.com", PASSWORD).await.token;
    s.delete(
        "/user/users/deleteFromAllOrgs/ned@example.com",
        &other_admin,
    )
    .await
    .expect(403, Some("forbidden"));
    let d = s
        .delete("/user/users/deleteFromAllOrgs/ned@example.com", &root)
        .await;
    assert_eq!(d.ok(), &json!([s.root_org, other]));
    s.get("/user/users/me", &ned_token)
        .await
        .expect(401, Some("unauthorized"));
    s.delete("/user/users/deleteFromAllOrgs/ghost@example.com", &root)
        .await
        .expect(404, Some("not_found"));
    // The user record stays: a superadmin still finds it "without org";
    // the admins' lists, "users in the caller's orgs", leave it out, also
    // for a superadmin (an audit found it listed).
    s.post(
        "/user/users/email",
        &root,
        json!({"email": "ned@example.com"}),
    )
    .await
    .expect(200, None);
    let e = s.get("/user/users/email/ned@example.com", &root).await;
    assert_eq!(e.ok(), &json!({"exists": false}));
    let listed = s.get(&format!("/user/users?ids={ned}"), &root).await;
    assert_eq!(listed.ok(), &json!([]));

    // The audit trail is the current org's, for its admins.
    let a = s.get(&format!("/user/audit?userId={ned}"), &root).await;
    assert!(a.ok()["total"].as_u64().unwrap() >= 2);
    for e in a.body["items"].as_array().unwrap() {
        assert!(e["actorUserId"] == ned || e["targetUserId"] == ned, "{e}");
        assert_eq!(e["orgId"], s.root_org);
    }
    let ned_again = s.create_user(&root, "ned2@example.com", false).await;
    let _ = ned_again;
    let t = s.login("ned2@example.com", PASSWORD).await.token;
    s.get("/user/audit", &t)
        .await
        .expect(403, Some("forbidden"));
}

/// One mailbox is one account: an address is stored with its domain as
/// mail reaches it. An admin of another org could create a second account
/// for `admina@example.com` with a full-width `ｅ`, whose codes and notices
/// went to the first account's mailbox; a look-alike domain shows as what
/// it is.
#[tokio::test]
async fn one_mailbox_is_one_account() {
    let s = TestServer::sqlite().await;
    let root = s.root().await;
    let (_, _, other_admin) = s.org_with_admin(&root, "Other", "olga@example.com").await;
    s.create_user(&root, "admina@example.com", true).await;
    let twin = json!({"email": "admina@\u{FF45}xample.com", "firstName": "A",
                      "lastName": "B", "password": PASSWORD});
    s.post("/user/users", &other_admin, twin)
        .await
        .expect(409, Some("conflict"));
    let lookalike = s
        .post(
            "/user/users",
            &other_admin,
            json!({"email": "admina@ex\u{0430}mple.com", "firstName": "A",
                   "lastName": "B", "password": PASSWORD}),
        )
        .await;
    assert_eq!(lookalike.ok()["email"], "admina@xn--exmple-4nf.com");

    // An internationalised domain: one account, reached by either form.
    let zoe = s.create_user(&root, "Zoë@Bücher.example", false).await;
    let shown = s.get(&format!("/user/users/{zoe}"), &root).await;
    assert_eq!(shown.ok()["email"], "zoë@xn--bcher-kva.example");
    for typed in ["zoë@bücher.example", "ZOË@XN--BCHER-KVA.EXAMPLE"] {
        let login = s.login(typed, PASSWORD).await;
        assert!(!login.token.is_empty(), "{typed}");
    }
    // The admins' search finds it by either form of the domain.
    for term in ["B%C3%9Ccher", "xn--bcher"] {
        let page = s
            .get(&format!("/user/users/page?search={term}"), &root)
            .await;
        assert_eq!(page.ok()["total"], 1, "{term}");
        assert_eq!(page.body["items"][0]["id"], zoe, "{term}");
    }
    s.post(
        "/user/users",
        &root,
        json!({"email": "zoë@xn--bcher-kva.example", "firstName": "Z",
               "lastName": "B", "password": PASSWORD}),
    )
    .await
    .expect(409, Some("conflict"));
}

/// A new password that is easy to guess is refused, saying why, whoever
/// sets it; with `MFA_PASSWORD_MIN_STRENGTH=0` only its length counts.
#[tokio::test]
async fn a_guessable_password_is_refused() {
    let s = TestServer::sqlite().await;
    let root = s.root().await;
    for password in [
        "password123",
        "qwertyuiop",
        "Welcome2024!",
        "zorblaxquuxcorp",
    ] {
        let a = s
            .post(
                "/user/users",
                &root,
                json!({"email": "zorblax@quuxcorp.example", "firstName": "Zorblax",
                       "lastName": "Quux", "password": password}),
            )
            .await;
        a.expect(400, Some("invalid_request"));
        let message = a.body["message"].as_str().unwrap();
        assert!(
            message.contains("too easy to guess"),
            "{password}: {message}"
        );
        assert!(!message.contains(password), "{message}");
    }
    let pat = s.create_user(&root, "pat@example.com", false).await;
    let token = s.login("pat@example.com", PASSWORD).await.token;
    s.put(
        &format!("/user/users/{pat}"),
        &token,
        json!({"password": "pat@example.com", "currentPassword": PASSWORD}),
    )
    .await
    .expect(400, Some("invalid_request"));
    s.put(
        &format!("/user/users/{pat}"),
        &root,
        json!({"password": "iloveyou1"}),
    )
    .await
    .expect(400, Some("invalid_request"));
    // Nothing was changed: the password still works.
    s.login("pat@example.com", PASSWORD).await;

    let lax = TestServer::sqlite_with(&[("MFA_PASSWORD_MIN_STRENGTH", "0")]).await;
    let root = lax.root().await;
    lax.post(
        "/user/users",
        &root,
        json!({"email": "weak@example.com", "firstName": "W", "lastName": "K",
               "password": "password123"}),
    )
    .await
    .expect(201, None);
}

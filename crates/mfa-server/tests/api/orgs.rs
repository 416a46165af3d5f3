//! Orgs and memberships: who may do what, and another org's things are
//! "not found".

use serde_json::json;

use crate::helpers::{PASSWORD, TestServer};
use crate::on_every_backend;

on_every_backend!(
    org_routes,
    membership_routes,
    enforce_all_orgs,
    an_org_keeps_an_active_admin
);

async fn org_routes(s: TestServer) {
    let root = s.root().await;
    let (other, _, other_admin) = s.org_with_admin(&root, "Other", "olga@example.com").await;
    s.create_user(&root, "max@example.com", false).await;
    let max = s.login("max@example.com", PASSWORD).await.token;

    // Create: superadmins only.
    let c = s
        .post("/user/org", &root, json!({"name": "  Third  "}))
        .await;
    c.expect(201, None);
    assert_eq!(c.body["name"], "Third");
    assert_eq!(c.body["isMfaEnforced"], false);
    assert_eq!(c.body["mfaEnforcedAt"], json!(null));
    assert_eq!(c.body["mfaGracePeriodHours"], 0);
    assert!(c.body["createdAt"].as_str().unwrap().ends_with('Z'));
    let third = c.body["id"].as_i64().unwrap();
    s.post("/user/org", &other_admin, json!({"name": "Nope"}))
        .await
        .expect(403, Some("forbidden"));
    s.post("/user/org", &root, json!({"name": ""}))
        .await
        .expect(400, Some("invalid_request"));
    s.post("/user/org", &root, json!({"name": "x".repeat(201)}))
        .await
        .expect(400, Some("invalid_request"));

    // Read: members and superadmins; another org is not found.
    s.get(&format!("/user/org/{}", s.root_org), &max)
        .await
        .expect(200, None);
    s.get(&format!("/user/org/{other}"), &max)
        .await
        .expect(404, Some("not_found"));
    s.get(&format!("/user/org/{}", s.root_org), &other_admin)
        .await
        .expect(404, Some("not_found"));
    s.get(&format!("/user/org/{third}"), &root)
        .await
        .expect(200, None);
    s.get("/user/org/999999", &root)
        .await
        .expect(404, Some("not_found"));

    // Update: admins of that org.
    let u = s
        .put(
            &format!("/user/org/{other}"),
            &other_admin,
            json!({"name": "Renamed"}),
        )
        .await;
    assert_eq!(u.ok()["name"], "Renamed");
    let u = s
        .put(&format!("/user/org/{other}"), &other_admin, json!({}))
        .await;
    assert_eq!(u.ok()["name"], "Renamed");
    // Only a change is audited: not an empty body, nor the values the org
    // has (found by an audit: each wrote an `org_updated` event).
    for unchanged in [
        json!({"name": "Renamed"}),
        json!({"mfaGracePeriodHours": 0}),
        json!({"mfaGracePeriodHours": null}),
    ] {
        s.put(&format!("/user/org/{other}"), &other_admin, unchanged)
            .await
            .expect(200, None);
    }
    let events = s.get("/user/audit?action=org_updated", &other_admin).await;
    assert_eq!(events.ok()["total"], 1, "{:?}", events.body);
    assert_eq!(events.body["items"][0]["detail"], "name");
    s.put(
        &format!("/user/org/{}", s.root_org),
        &max,
        json!({"name": "Mine"}),
    )
    .await
    .expect(403, Some("forbidden"));
    s.put(
        &format!("/user/org/{}", s.root_org),
        &other_admin,
        json!({"name": "Mine"}),
    )
    .await
    .expect(404, Some("not_found"));

    // Delete: superadmins only; not the org of the session.
    s.delete(&format!("/user/org/{third}"), &other_admin)
        .await
        .expect(403, Some("forbidden"));
    s.delete(&format!("/user/org/{}", s.root_org), &root)
        .await
        .expect(400, Some("invalid_request"));
    s.delete(&format!("/user/org/{third}"), &root)
        .await
        .expect(204, None);
    s.delete(&format!("/user/org/{third}"), &root)
        .await
        .expect(404, Some("not_found"));
}

async fn membership_routes(s: TestServer) {
    let root = s.root().await;
    let org = s.root_org;
    let (other, olga, other_admin) = s.org_with_admin(&root, "Other", "olga@example.com").await;
    let max = s.create_user(&root, "max@example.com", false).await;
    let max_token = s.login("max@example.com", PASSWORD).await.token;
    let nina = s.create_user(&root, "nina@example.com", false).await;

    // Read: admins of the org, or the member themselves.
    let m = s.get(&format!("/user/org/{org}/user/{max}"), &root).await;
    assert_eq!(
        m.ok(),
        &json!({"userId": max, "orgId": org, "isActive": true, "isAdmin": false,
                "allAccess": false, "mfaOptOut": false, "excludeFromMembershipCount": false,
                "hasAdvancedPermissions": false})
    );
    s.get(&format!("/user/org/{org}/user/{max}"), &max_token)
        .await
        .expect(200, None);
    s.get(&format!("/user/org/{org}/user/{nina}"), &max_token)
        .await
        .expect(403, Some("forbidden"));
    s.get(&format!("/user/org/{org}/user/{max}"), &other_admin)
        .await
        .expect(404, Some("not_found"));

    // Add by email: admins of the org, for users they see (the superadmin
    // sees everyone; Other's admin does not see Max of the first org).
    s.call(
        "POST",
        &format!("/user/org/{other}/email/user/max@example.com"),
        Some(&other_admin),
        None,
    )
    .await
    .expect(404, Some("not_found"));
    let a = s
        .call(
            "POST",
            &format!("/user/org/{other}/email/user/max@example.com"),
            Some(&root),
            None,
        )
        .await;
    a.expect(201, None);
    assert_eq!(a.body["orgId"], other);
    assert_eq!(a.body["userId"], max);
    s.call(
        "POST",
        &format!("/user/org/{other}/email/user/MAX@example.com"),
        Some(&other_admin),
        None,
    )
    .await
    .expect(409, Some("conflict"));
    s.call(
        "POST",
        &format!("/user/org/{other}/email/user/ghost@example.com"),
        Some(&other_admin),
        None,
    )
    .await
    .expect(404, Some("not_found"));
    s.call(
        "POST",
        &format!("/user/org/{org}/email/user/nina@example.com"),
        Some(&other_admin),
        None,
    )
    .await
    .expect(404, Some("not_found"));

    // Add by id with optional flags: admins of the org, for users they see.
    let a = s
        .post(
            &format!("/user/org/{org}/user/{olga}"),
            &root,
            json!({"allAccess": true, "mfaOptOut": true}),
        )
        .await;
    a.expect(201, None);
    assert_eq!(a.body["allAccess"], true);
    assert_eq!(a.body["isAdmin"], false);
    assert_eq!(a.body["mfaOptOut"], true);
    assert_eq!(a.body["isActive"], true);
    s.post(&format!("/user/org/{org}/user/{olga}"), &root, json!({}))
        .await
        .expect(409, Some("conflict"));
    s.post(
        &format!("/user/org/{org}/user/{olga}"),
        &root,
        json!({"isBoss": true}),
    )
    .await
    .expect(400, Some("invalid_request"));
    s.call(
        "POST",
        &format!("/user/org/{other}/user/{nina}"),
        Some(&other_admin),
        None,
    )
    .await
    .expect(404, Some("not_found"));

    // Remove: admins of the org; the member's sessions there end.
    let max_other = s.login_org("max@example.com", PASSWORD, other).await.token;
    s.delete(&format!("/user/org/{other}/user/{max}"), &max_token)
        .await
        .expect(403, Some("forbidden"));
    s.delete(&format!("/user/org/{other}/user/{max}"), &other_admin)
        .await
        .expect(204, None);
    s.get("/user/users/me", &max_other)
        .await
        .expect(401, Some("unauthorized"));
    s.get("/user/users/me", &max_token).await.expect(200, None);
    s.delete(&format!("/user/org/{other}/user/{max}"), &other_admin)
        .await
        .expect(404, Some("not_found"));

    // The seed's membership update: only the fields present change.
    s.put(
        &format!("/user/users/{nina}/membership"),
        &root,
        json!({"excludeFromMembershipCount": true, "allAccess": true}),
    )
    .await
    .expect(204, None);
    let m = s.get(&format!("/user/org/{org}/user/{nina}"), &root).await;
    assert_eq!(m.ok()["excludeFromMembershipCount"], true);
    assert_eq!(m.body["allAccess"], true);
    assert_eq!(m.body["isActive"], true);
    s.put(
        &format!("/user/users/{nina}/membership"),
        &max_token,
        json!({"mfaOptOut": true}),
    )
    .await
    .expect(403, Some("forbidden"));
    // Another org's user: not found, by id and by reference.
    s.put(
        &format!("/user/users/{nina}/membership"),
        &other_admin,
        json!({"mfaOptOut": true}),
    )
    .await
    .expect(404, Some("not_found"));
    s.put(
        "/user/users/nina@example.com/membership?byRef=true",
        &other_admin,
        json!({"mfaOptOut": true}),
    )
    .await
    .expect(404, Some("not_found"));
    s.put(
        "/user/users/nobody@example.com/membership?byRef=true",
        &root,
        json!({"mfaOptOut": true}),
    )
    .await
    .expect(404, Some("not_found"));
    // Without byRef the path is an id, spelt one way only.
    for spelling in [format!("0{nina}"), format!("+{nina}"), format!("%20{nina}")] {
        s.put(
            &format!("/user/users/{spelling}/membership"),
            &root,
            json!({"mfaOptOut": true}),
        )
        .await
        .expect(400, Some("invalid_request"));
    }

    // The licence counts of the seed.
    let c = s
        .get(
            "/user/users/retrieveNotExcludeFromMembershipUserCounts",
            &root,
        )
        .await;
    // root, max, olga count; nina is excluded.
    assert_eq!(c.ok(), &json!({"licensed": 3, "enabled": 3, "inactive": 0}));
    s.put(
        &format!("/user/users/{max}/membership"),
        &root,
        json!({"isActive": false}),
    )
    .await
    .expect(204, None);
    let c = s
        .get(
            "/user/users/retrieveNotExcludeFromMembershipUserCounts",
            &root,
        )
        .await;
    assert_eq!(c.ok(), &json!({"licensed": 3, "enabled": 2, "inactive": 1}));
    s.get(
        "/user/users/retrieveNotExcludeFromMembershipUserCounts",
        &other_admin,
    )
    .await
    .expect(200, None);
    let nina_token = s.login("nina@example.com", PASSWORD).await.token;
    s.get(
        "/user/users/retrieveNotExcludeFromMembershipUserCounts",
        &nina_token,
    )
    .await
    .expect(403, Some("forbidden"));
}

async fn enforce_all_orgs(s: TestServer) {
    let root = s.root().await;
    let (other, _, other_admin) = s.org_with_admin(&root, "Other", "olga@example.com").await;
    // An org admin may not touch every org.
    s.put(
        "/user/org/mfa?allOrgs=true",
        &other_admin,
        json!({"isMfaEnforced": true}),
    )
    .await
    .expect(403, Some("forbidden"));
    let o = s.get(&format!("/user/org/{}", s.root_org), &root).await;
    assert_eq!(o.ok()["isMfaEnforced"], false);
    // The org admin enforces their own org only.
    s.enforce(&other_admin, true).await;
    let o = s.get(&format!("/user/org/{}", s.root_org), &root).await;
    assert_eq!(o.ok()["isMfaEnforced"], false);
    s.create_user(&root, "max@example.com", false).await;
    let max = s.login("max@example.com", PASSWORD).await.token;
    s.put("/user/org/mfa", &max, json!({"isMfaEnforced": true}))
        .await
        .expect(403, Some("forbidden"));

    // The superadmin enforces every org at once, as the seed describes.
    s.put(
        "/user/org/mfa?allOrgs=true",
        &root,
        json!({"isMfaEnforced": true}),
    )
    .await
    .expect(204, None);
    for org in [s.root_org, other] {
        let o = s.get(&format!("/user/org/{org}"), &root).await;
        assert_eq!(o.ok()["isMfaEnforced"], true, "org {org}");
    }
    let l = s.login("max@example.com", PASSWORD).await;
    assert_eq!(l.mfa, "setup_required");
    // And lifts it again.
    s.put(
        "/user/org/mfa?allOrgs=true",
        &root,
        json!({"isMfaEnforced": false}),
    )
    .await
    .expect(204, None);
    let l = s.login("max@example.com", PASSWORD).await;
    assert_eq!(l.mfa, "none");
}

/// An org admin cannot demote, deactivate or remove the org's last active
/// admin, themselves included (`409 conflict`, nothing changes, nothing is
/// audited); a superadmin can.
async fn an_org_keeps_an_active_admin(s: TestServer) {
    let root = s.root().await;
    let (org, ann, ann_token) = s
        .org_with_sole_admin(&root, "Solo", "ann@solo.example")
        .await;
    let ben = s.create_user(&ann_token, "ben@solo.example", true).await;
    let membership = |user: i64| format!("/user/org/{org}/user/{user}");
    let flags = |user: i64| format!("/user/users/{user}/membership");
    let audit_total = || async {
        s.get("/user/audit?size=1", &ann_token).await.ok()["total"]
            .as_i64()
            .unwrap()
    };

    // Ben, also an admin, is deactivated: Ann is the last active admin.
    s.put(&flags(ben), &ann_token, json!({"isActive": false}))
        .await
        .expect(204, None);
    let before = s.get(&membership(ann), &ann_token).await.ok().clone();
    let audited = audit_total().await;
    for body in [
        json!({"isAdmin": false}),
        json!({"isActive": false}),
        json!({"isAdmin": false, "mfaOptOut": true}),
    ] {
        let a = s.put(&flags(ann), &ann_token, body).await;
        a.expect(409, Some("conflict"));
        assert!(
            a.body["message"]
                .as_str()
                .unwrap()
                .contains("last active admin")
        );
        s.put(
            "/user/users/ann@solo.example/membership?byRef=true",
            &ann_token,
            json!({"isActive": false}),
        )
        .await
        .expect(409, Some("conflict"));
    }
    s.delete(&membership(ann), &ann_token)
        .await
        .expect(409, Some("conflict"));
    assert_eq!(s.get(&membership(ann), &ann_token).await.ok(), &before);
    assert_eq!(audit_total().await, audited);
    // A change that keeps her an active admin goes through.
    s.put(&flags(ann), &ann_token, json!({"mfaOptOut": true}))
        .await
        .expect(204, None);

    // With Ben active again, Ann may step down; then Ben is the last one.
    s.put(&flags(ben), &ann_token, json!({"isActive": true}))
        .await
        .expect(204, None);
    s.put(&flags(ann), &ann_token, json!({"isAdmin": false}))
        .await
        .expect(204, None);
    let ben_token = s.login_org("ben@solo.example", PASSWORD, org).await.token;
    s.delete(&membership(ben), &ben_token)
        .await
        .expect(409, Some("conflict"));
    // A superadmin may leave the org without admins (and appoint one).
    s.delete(&membership(ben), &root).await.expect(204, None);
    let admins = s.get(&format!("/user/users/admins/{org}"), &root).await;
    assert_eq!(admins.ok(), &json!([]));
}

//! A partial (pre-MFA) token: the password was right, the second factor is
//! still owed. On every route that needs a full session it gets
//! `403 mfa_required` and changes nothing. The routes come from the served
//! OpenAPI document, so a new route cannot be forgotten here.

use serde_json::{Value, json};

use super::schema::{Operation, Targets, concrete_path, document, operations, valid_body};
use super::{challenged_user, partial};
use crate::helpers::{Answer, PASSWORD, ROOT_EMAIL, TestServer};
use crate::on_every_backend;

on_every_backend!(
    partial_token_on_every_full_route,
    partial_token_on_partial_routes
);

/// Send `op` with `token`: a valid body (`Some(valid)`), no body, or a
/// body that does not parse.
async fn send(s: &TestServer, op: &Operation, path: &str, token: &str, body: Body) -> Answer {
    match body {
        Body::Valid(v) => s.call(&op.method, path, Some(token), Some(v)).await,
        Body::None => s.call(&op.method, path, Some(token), None).await,
        Body::Garbage => {
            s.call_raw(
                &op.method,
                path,
                Some(token),
                Some("application/json"),
                b"{\"unknown\": [".to_vec(),
            )
            .await
        }
    }
}

#[derive(Clone, Debug)]
enum Body {
    Valid(Value),
    None,
    Garbage,
}

/// What an admin can read of the deployment: must not change.
async fn snapshot(s: &TestServer, root: &str, t: &Targets, spare_org: i64) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        format!("/user/users/{}", t.user),
        format!("/user/org/{}", t.org),
        format!("/user/org/{spare_org}"),
        format!("/user/org/{}/user/{}", t.org, t.user),
        "/user/users/me".to_string(),
        "/user/users/page?size=200".to_string(),
        "/user/users/retrieveNotExcludeFromMembershipUserCounts".to_string(),
        format!("/user/users/admins/{}", t.org),
    ] {
        let a = s.get(&path, root).await;
        a.expect(200, None);
        out.push(a.body);
    }
    out
}

async fn partial_token_on_every_full_route(s: TestServer) {
    let doc = document(&s).await;
    let ops: Vec<Operation> = operations(&doc)
        .into_iter()
        .filter(|o| o.session == "full")
        .collect();
    assert!(ops.len() >= 25, "only {} full routes found", ops.len());

    // The most powerful user there is, a superadmin, owes MFA: their
    // partial token would do the most harm if it got through.
    let root = s.root().await;
    let secret = s.enroll_authenticator(&root).await;
    s.put("/user/users/me/mfa", &root, json!({"mfaOptIn": true}))
        .await
        .expect(204, None);
    let (victim, _, victim_full) = challenged_user(&s, &root, "vic@example.com").await;
    let spare = s.post("/user/org", &root, json!({"name": "Spare"})).await;
    let spare = spare.ok()["id"].as_i64().unwrap();
    let t = Targets {
        user: victim,
        email: "vic@example.com".into(),
        org: s.root_org,
    };
    let partial_root = partial(&s, ROOT_EMAIL).await;
    let before = snapshot(&s, &root, &t, spare).await;

    for op in &ops {
        // `DELETE /user/org/{id}` of the spare org, everything else on the
        // victim and the root org.
        let t = if op.method == "DELETE" && op.path == "/user/org/{id}" {
            Targets {
                org: spare,
                ..t.clone()
            }
        } else {
            t.clone()
        };
        let path = concrete_path(op, &t);
        let mut bodies = vec![Body::None];
        if let Some(schema) = op.body_schema() {
            bodies.push(Body::Valid(valid_body(&doc, schema, &t)));
            bodies.push(Body::Garbage);
        }
        for body in bodies {
            let a = send(&s, op, &path, &partial_root, body.clone()).await;
            assert!(
                a.status == 403 && a.error() == "mfa_required",
                "{} {path} with {body:?}: {a:?}",
                op.method
            );
            a.expect(403, Some("mfa_required"));
        }
    }

    // Nothing changed, and the tokens still work.
    assert_eq!(snapshot(&s, &root, &t, spare).await, before);
    s.get(&format!("/user/users/{victim}"), &victim_full)
        .await
        .expect(200, None);
    // The partial token is still partial; the second factor makes it full.
    s.get("/user/users/me", &partial_root)
        .await
        .expect(200, None);
    let v = s
        .post(
            "/user/auth/mfa/verify",
            &partial_root,
            json!({"method": "AUTHENTICATOR", "code": s.totp(&secret)}),
        )
        .await;
    let full = v.ok()["token"].as_str().unwrap().to_string();
    s.get(&format!("/user/users/{victim}"), &full)
        .await
        .expect(200, None);
}

/// On the routes marked partial ok, a partial token gets `mfa_required`
/// only where the document says so (enrolling a second factor, a self
/// reset without a recovery code); a user who still has to set up MFA is
/// never sent round in a circle.
async fn partial_token_on_partial_routes(s: TestServer) {
    let doc = document(&s).await;
    let ops: Vec<Operation> = operations(&doc)
        .into_iter()
        .filter(|o| o.session == "partial" || o.session == "any")
        .collect();
    assert!(ops.len() >= 10, "only {} partial routes found", ops.len());
    let root = s.root().await;
    let (challenged, _, _) = challenged_user(&s, &root, "cher@example.com").await;
    let setup = s.create_user(&root, "sam@example.com", false).await;
    s.enforce(&root, true).await;

    for (email, user, expects_setup) in [
        ("cher@example.com", challenged, false),
        ("sam@example.com", setup, true),
    ] {
        let t = Targets {
            user,
            email: email.into(),
            org: s.root_org,
        };
        for op in &ops {
            // A fresh token each time: logout and verification end it.
            let login = s.login(email, PASSWORD).await;
            let expected = if expects_setup {
                "setup_required"
            } else {
                "challenge_required"
            };
            assert_eq!(login.mfa, expected);
            let path = concrete_path(op, &t);
            let body = op.body_schema().map(|b| valid_body(&doc, b, &t));
            let a = s.call(&op.method, &path, Some(&login.token), body).await;
            assert!(a.status < 500, "{} {path}: {a:?}", op.method);
            if a.error() == "mfa_required" {
                assert!(
                    !expects_setup || op.path == "/users/mfa/resetMyQRCodeEnroll",
                    "{} {path} sends a user who must set up MFA round in a circle",
                    op.method
                );
                assert!(
                    op.documents("403", "mfa_required"),
                    "{} {} answers mfa_required without documenting it",
                    op.method,
                    op.path
                );
            }
        }
    }
}

//! Secrets at rest and in the log. The database holds neither an
//! authenticator secret (base32, raw or hex), nor a token, a recovery code,
//! an email-change token or a password; no log line, at any level up to
//! TRACE, holds a token, a secret, a code, a password or a full email
//! address, also when requests with addresses in their paths fail to
//! parse.

use diesel::prelude::*;
use serde_json::json;

use super::{challenged_user, partial, verify};
use crate::helpers::{PASSWORD, TestServer, captured_logs};
use crate::on_every_backend;

on_every_backend!(secrets_at_rest, secrets_in_the_log);

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

/// Everything the database holds: the SQLite file with its journal files
/// byte for byte, or every row of every PostgreSQL table as JSON (binary
/// columns in hex).
fn database_contents(s: &TestServer) -> Vec<u8> {
    let db = s.database();
    if let Some(path) = db.sqlite_path() {
        let mut bytes = Vec::new();
        for suffix in ["", "-wal", "-shm", "-journal"] {
            if let Ok(b) = std::fs::read(format!("{}{suffix}", path.display())) {
                bytes.extend(b);
            }
        }
        assert!(bytes.len() > 10_000, "the database file was not found");
        return bytes;
    }
    let mut conn = PgConnection::establish(db.url()).expect("PostgreSQL");
    let tables: Vec<Text> = diesel::sql_query(
        "SELECT table_name::text AS value FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .load(&mut conn)
    .expect("tables");
    assert!(tables.iter().any(|t| t.value == "authenticators"));
    let mut text = String::new();
    for table in tables {
        let rows: Vec<Text> = diesel::sql_query(format!(
            "SELECT row_to_json(t)::text AS value FROM \"{}\" t",
            table.value
        ))
        .load(&mut conn)
        .expect("rows");
        for row in rows {
            text.push_str(&row.value);
            text.push('\n');
        }
    }
    text.into_bytes()
}

async fn secrets_at_rest(s: TestServer) {
    let root = s.root().await;
    let email = "vault@example.com";
    let (id, secret, full) = challenged_user(&s, &root, email).await;
    let rc = s
        .call("POST", "/user/users/mfa/recoveryCodes", Some(&full), None)
        .await;
    let recovery: Vec<String> = rc.ok()["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let p = partial(&s, email).await;
    let second_full = verify(&s, &p, "RECOVERY", &recovery[0]).await;
    let second_full = second_full.ok()["token"].as_str().unwrap().to_string();
    // A pending secret, never confirmed.
    s.create_user(&root, "pending@example.com", false).await;
    let pending_token = s.login("pending@example.com", PASSWORD).await.token;
    let pending = s.start_authenticator(&pending_token).await;
    // A new password and an email change waiting for its token.
    let new_password = "a new and secret passphrase";
    s.put(
        &format!("/user/users/{id}"),
        &full,
        json!({"password": new_password, "currentPassword": PASSWORD,
               "email": "vault.moved@example.com"}),
    )
    .await
    .expect(200, None);
    let change_token = s.last_token("vault.moved@example.com");

    let contents = database_contents(&s);
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, secret) in [("secret", &secret), ("pending secret", &pending)] {
        let b32 = secret.to_base32();
        needles.push((format!("{name} in base32"), b32.clone().into_bytes()));
        needles.push((
            format!("{name} in lower-case base32"),
            b32.to_lowercase().into_bytes(),
        ));
        needles.push((
            format!("{name} in hex"),
            hex(secret.as_bytes()).into_bytes(),
        ));
        needles.push((format!("{name}'s raw bytes"), secret.as_bytes().to_vec()));
    }
    for (name, value) in [
        ("root token", root.as_str()),
        ("full token", full.as_str()),
        ("partial token", p.as_str()),
        ("token after MFA", second_full.as_str()),
        ("email-change token", change_token.as_str()),
        ("password", PASSWORD),
        ("new password", new_password),
    ] {
        needles.push((name.to_string(), value.as_bytes().to_vec()));
    }
    for code in &recovery {
        needles.push(("recovery code".into(), code.clone().into_bytes()));
        needles.push(("recovery code".into(), code.replace('-', "").into_bytes()));
    }
    for (what, needle) in &needles {
        assert!(
            !contains(&contents, needle),
            "the database holds the {what}"
        );
    }
    // The check can see: the email address is there in clear.
    assert!(contains(&contents, email.as_bytes()));
}

async fn secrets_in_the_log(s: TestServer) {
    let root = s.root().await;
    let email = "leaky.lena@example.com";
    let (id, secret, full) = challenged_user(&s, &root, email).await;
    let mut secrets = vec![
        root.clone(),
        full.clone(),
        secret.to_base32(),
        PASSWORD.into(),
    ];

    // Email factor, recovery codes, logins with each method.
    s.advance(31);
    s.call(
        "PUT",
        "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
        Some(&full),
        None,
    )
    .await
    .expect(200, None);
    let code = s.last_code(email);
    secrets.push(code.clone());
    s.put(
        "/oauth/users/mfa/verifyEmail",
        &full,
        json!({"mfatype": "EMAIL", "totp": code}),
    )
    .await
    .expect(200, None);
    let rc = s
        .call("POST", "/user/users/mfa/recoveryCodes", Some(&full), None)
        .await;
    let recovery: Vec<String> = rc.ok()["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    secrets.extend(recovery.iter().cloned());
    let p = partial(&s, email).await;
    secrets.push(p.clone());
    let totp = s.totp(&secret);
    secrets.push(totp.clone());
    verify(&s, &p, "AUTHENTICATOR", &totp)
        .await
        .expect(200, None);
    // A replay, a wrong code and a lockout are logged without the code.
    let p = partial(&s, email).await;
    secrets.push(p.clone());
    verify(&s, &p, "AUTHENTICATOR", &totp)
        .await
        .expect(400, Some("invalid_code"));
    s.advance(31);
    s.post("/user/auth/mfa/challenge", &p, json!({"method": "EMAIL"}))
        .await
        .expect(200, None);
    let login_code = s.last_code(email);
    secrets.push(login_code.clone());
    let v = verify(&s, &p, "EMAIL", &login_code).await;
    secrets.push(v.ok()["token"].as_str().unwrap().to_string());
    let p = partial(&s, email).await;
    secrets.push(p.clone());
    let v = verify(&s, &p, "RECOVERY", &recovery[0]).await;
    let after_recovery = v.ok()["token"].as_str().unwrap().to_string();
    secrets.push(after_recovery.clone());

    // Failed logins with the email and passwords in the body.
    for password in ["wrong password one", "wrong password two"] {
        secrets.push(password.into());
        s.call(
            "POST",
            "/user/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await
        .expect(401, Some("invalid_credentials"));
    }
    // Bodies that do not parse, with secrets inside.
    for body in [
        format!(r#"{{"email": "{email}", "password": "{PASSWORD}", "extra": 1}}"#),
        format!(r#"{{"email": "{email}", "password": ["{PASSWORD}"]}}"#),
        format!(r#"{{"email": "{email}", "password": "{PASSWORD}""#),
    ] {
        s.call_raw(
            "POST",
            "/user/auth/login",
            None,
            Some("application/json"),
            body.into_bytes(),
        )
        .await
        .expect(400, Some("invalid_request"));
    }
    s.call_raw(
        "POST",
        "/user/auth/mfa/verify",
        Some(&after_recovery),
        Some("application/json"),
        format!(r#"{{"method": "AUTHENTICATOR", "code": {totp}}}"#).into_bytes(),
    )
    .await
    .expect(400, Some("invalid_request"));

    // Addresses in paths, also where the path, query or body does not
    // parse (the web framework logs the raw path of such failures).
    let other = "path.person@example.com";
    secrets.push(other.into());
    s.create_user(&root, other, false).await;
    for (method, path, body) in [
        ("GET", format!("/user/users/email/{other}"), None),
        (
            "PUT",
            format!("/user/users/{other}/membership?byRef=true"),
            Some(json!({"mfaOptOut": true})),
        ),
        (
            "PUT",
            format!("/user/users/{other}/membership?byRef=true"),
            Some(json!({"mfaOptOut": "yes"})),
        ),
        (
            "PUT",
            format!("/user/users/{other}/membership?byRef=maybe"),
            Some(json!({"mfaOptOut": true})),
        ),
        (
            "PUT",
            format!("/user/users/{other}/membership"),
            Some(json!({"mfaOptOut": true})),
        ),
        ("POST", format!("/user/org/abc/email/user/{other}"), None),
        (
            "POST",
            format!("/user/org/{}/email/user/{other}", s.root_org),
            None,
        ),
        ("PUT", format!("/users/{other}/mfa/resetQRCodeEnroll"), None),
        (
            "PUT",
            format!("/users/{other}/mfa/resetQRCodeEnroll?x=1"),
            None,
        ),
        (
            "DELETE",
            format!("/user/users/deleteFromAllOrgs/{other}"),
            None,
        ),
        ("GET", format!("/no/such/route/{other}"), None),
        ("GET", format!("/user/users/{other}"), None),
    ] {
        let a = s.call(method, &path, Some(&root), body).await;
        assert!(a.status < 500, "{method} {path}: {a:?}");
    }
    // Tokens where they do not belong: a URL, a malformed header.
    let a = s
        .call(
            "GET",
            &format!("/user/users/me?access_token={after_recovery}"),
            None,
            None,
        )
        .await;
    a.expect(401, Some("unauthorized"));
    let a = s
        .client
        .get(s.url("/user/users/me"))
        .header("authorization", format!("Token {after_recovery}"))
        .send()
        .await
        .unwrap();
    TestServer::answer(a)
        .await
        .expect(401, Some("unauthorized"));

    // An email change and a password change.
    let moved = "leaky.moved@example.com";
    let new_password = "another secret passphrase";
    secrets.push(moved.into());
    secrets.push(new_password.into());
    s.put(
        &format!("/user/users/{id}"),
        &after_recovery,
        json!({"email": moved, "password": new_password, "currentPassword": PASSWORD}),
    )
    .await
    .expect(200, None);
    let change = s.last_token(moved);
    secrets.push(change.clone());
    s.post(
        "/user/users/email/confirmChange",
        &root,
        json!({"token": change}),
    )
    .await
    .expect(204, None);
    secrets.push(email.into());

    let logs = captured_logs();
    assert!(
        logs.contains("l***@example.com"),
        "emails are logged masked"
    );
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "the log is not captured at every level"
    );
    for secret in &secrets {
        let line = logs.lines().find(|l| l.contains(secret.as_str()));
        assert!(line.is_none(), "the log holds {secret:?}: {line:?}");
    }
    // Recovery codes as typed without the dash.
    for code in &recovery {
        assert!(!logs.contains(&code.replace('-', "")));
    }
}

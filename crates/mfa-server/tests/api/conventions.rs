//! The conventions of the contract: JSON errors for everything, 400 for
//! input that does not parse, 401 for missing or bad tokens, 404 and 405
//! for routes, paging rules.

use serde_json::json;

use crate::attacks::schema::{Targets, concrete_path, document, operations, valid_body};
use crate::helpers::{Answer, PASSWORD, TestServer};
use crate::on_every_backend;

on_every_backend!(
    input_that_does_not_parse,
    unknown_query_parameters_on_every_route,
    a_body_on_a_route_that_takes_none,
    tokens_and_routes,
    paging
);

/// What a walk over every documented operation needs: the served
/// document, the superadmin's token, and the ids its paths take (a new
/// user with `email`, the superadmin's org).
async fn route_walk(s: &TestServer, email: &str) -> (serde_json::Value, String, Targets) {
    let doc = document(s).await;
    let root = s.root().await;
    let user = s.create_user(&root, email, false).await;
    let targets = Targets {
        user,
        email: email.into(),
        org: s.root_org,
    };
    (doc, root, targets)
}

/// Every documented operation refuses a query parameter it does not
/// declare (`400 invalid_request`), after its session is checked; the
/// routes come from the served document, so a new one cannot be missed.
async fn unknown_query_parameters_on_every_route(s: TestServer) {
    let (doc, root, t) = route_walk(&s, "query@example.com").await;
    let exempt = [
        "/admin",
        "/account",
        "/api-docs/openapi.json",
        "/swagger-ui/",
    ];
    let mut checked = 0;
    for op in operations(&doc) {
        let path = concrete_path(&op, &t);
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}unexpected=1");
        let body = op.body_schema().map(|schema| valid_body(&doc, schema, &t));
        let token = (op.session != "none").then_some(root.as_str());
        let a = s.call(&op.method, &path, token, body.clone()).await;
        if exempt.contains(&op.path.as_str()) {
            assert_eq!(a.status, 200, "{} {path}: {a:?}", op.method);
            continue;
        }
        assert!(
            a.status == 400 && a.error() == "invalid_request",
            "{} {path}: {a:?}",
            op.method
        );
        let message = a.body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("unexpected") || message.contains("query"),
            "{message}"
        );
        if op.session != "none" {
            // The session first: no token is 401, whatever the query.
            s.call(&op.method, &path, None, body)
                .await
                .expect(401, Some("unauthorized"));
        }
        checked += 1;
    }
    assert!(checked >= 45, "only {checked} operations checked");
    // Nothing else is refused: an empty query string is no query, on
    // routes with parameters and without.
    s.get("/user/users/me?", &root).await.expect(200, None);
    s.get("/user/users/me?&&", &root).await.expect(200, None);
    s.get("/user/audit?&", &root).await.expect(200, None);
}

/// Every documented POST, PUT and DELETE that takes no body refuses one
/// with a field (`400 invalid_request`), after its session is checked:
/// `{"userId": N}` must not be ignored while the route acts on the
/// caller. An empty body, `{}` and `null` are no body.
async fn a_body_on_a_route_that_takes_none(s: TestServer) {
    let (doc, root, t) = route_walk(&s, "nobody@example.com").await;
    let mut checked = 0;
    for op in operations(&doc) {
        if op.method == "GET" || op.body_schema().is_some() {
            continue;
        }
        let path = concrete_path(&op, &t);
        let body = Some(json!({"userId": t.user}));
        let token = (op.session != "none").then_some(root.as_str());
        let a = s.call(&op.method, &path, token, body.clone()).await;
        assert!(
            a.status == 400 && a.error() == "invalid_request",
            "{} {path}: {a:?}",
            op.method
        );
        let message = a.body["message"].as_str().unwrap_or_default();
        assert!(message.contains("takes no body"), "{message}");
        if op.session != "none" {
            s.call(&op.method, &path, None, body)
                .await
                .expect(401, Some("unauthorized"));
        }
        checked += 1;
    }
    assert!(checked >= 11, "only {checked} operations checked");
    // No body, or an empty object, is none.
    let session = s.login("nobody@example.com", PASSWORD).await.token;
    s.call(
        "POST",
        "/user/users/mfa/generateTempSecret",
        Some(&session),
        Some(json!({})),
    )
    .await
    .expect(200, None);
    // JSON `null`, which the document allows for optional bodies (an
    // audit found it refused), is none too.
    s.call(
        "POST",
        "/user/users/email/resendChangeConfirmation",
        Some(&session),
        Some(json!(null)),
    )
    .await
    .expect(404, Some("not_found"));
    s.call(
        "POST",
        "/user/auth/logout",
        Some(&session),
        Some(json!(null)),
    )
    .await
    .expect(204, None);
}

async fn input_that_does_not_parse(s: TestServer) {
    let root = s.root().await;
    let t = Some(root.as_str());

    // Malformed JSON, wrong types, unknown fields, missing fields.
    for body in [
        &b"{"[..],
        b"[]",
        b"null",
        br#"{"name": 5}"#,
        br#"{"name": "x", "extra": true}"#,
        br#"{}"#,
    ] {
        s.call_raw(
            "POST",
            "/user/org",
            t,
            Some("application/json"),
            body.to_vec(),
        )
        .await
        .expect(400, Some("invalid_request"));
    }
    // An array is no object, even one whose items line up with the
    // fields (serde would fill a struct from it in order): before, these
    // logged in and enforced MFA.
    for (method, path, body) in [
        ("POST", "/user/org", &br#"["x"]"#[..]),
        (
            "POST",
            "/user/auth/login",
            br#"["root@example.com", "correct horse battery staple"]"#,
        ),
        ("PUT", "/user/org/mfa", b"[true]"),
        ("POST", "/user/users/email/resendChangeConfirmation", b"[1]"),
    ] {
        s.call_raw(method, path, t, Some("application/json"), body.to_vec())
            .await
            .expect(400, Some("invalid_request"));
    }
    // JSON without a JSON content type; no body at all.
    s.call_raw(
        "POST",
        "/user/org",
        t,
        Some("text/plain"),
        br#"{"name":"x"}"#.to_vec(),
    )
    .await
    .expect(400, Some("invalid_request"));
    s.call_raw("POST", "/user/org", t, None, vec![])
        .await
        .expect(400, Some("invalid_request"));
    // Over 64 KiB.
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(65 * 1024));
    s.call_raw(
        "POST",
        "/user/org",
        t,
        Some("application/json"),
        big.into_bytes(),
    )
    .await
    .expect(400, Some("invalid_request"));
    // An optional body is still checked when present.
    let big = format!(r#"{{"userId": 1, "pad": "{}"}}"#, "x".repeat(65 * 1024));
    s.call_raw(
        "POST",
        "/user/users/email/resendChangeConfirmation",
        t,
        Some("application/json"),
        big.into_bytes(),
    )
    .await
    .expect(400, Some("invalid_request"));
    s.call_raw(
        "POST",
        "/users/mfa/resetMyQRCodeEnroll",
        t,
        Some("application/json"),
        br#"{"recoveryCode": 1}"#.to_vec(),
    )
    .await
    .expect(400, Some("invalid_request"));
    s.call_raw(
        "POST",
        "/users/mfa/resetMyQRCodeEnroll",
        t,
        Some("text/plain"),
        br#"{"recoveryCode": "x"}"#.to_vec(),
    )
    .await
    .expect(400, Some("invalid_request"));

    // Ids that are not positive integers, in paths, queries and bodies.
    for path in [
        "/user/users/abc",
        "/user/users/0",
        "/user/users/-3",
        "/user/users/1.5",
        "/user/users/99999999999999999999",
        "/user/org/x",
        "/user/org/1/user/0",
        "/user/users/admins/zero",
        "/user/users?ids=1,x",
        "/user/users?ids=0",
        "/user/users",
        "/user/audit?userId=0",
        // One spelling per id: a rule keyed on `/user/users/1` must not be
        // passed by another spelling of it.
        "/user/users/01",
        "/user/users/+1",
        "/user/users/%201",
        "/user/users/1%20",
        "/user/org/01",
        "/user/org/1/user/+1",
        "/user/users?ids=01",
        "/user/users?ids=%2B1",
        "/user/audit?userId=01",
        "/user/audit?userId=%2B1",
        // A digit percent-encoded is another spelling too.
        "/user/users/%31",
        "/user/org/%31",
        "/user/org/1/user/%31",
        "/user/users?ids=1,%202",
        "/user/users?ids=1,,2",
        "/user/users?ids=1,",
        "/user/users?ids=",
    ] {
        s.get(path, &root)
            .await
            .expect(400, Some("invalid_request"));
    }
    // The session comes first, for a refused path too.
    s.call("DELETE", "/user/users/%31", None, None)
        .await
        .expect(401, Some("unauthorized"));
    s.post(
        "/user/auth/login",
        &root,
        json!({"email": "a@example.com", "password": "x", "orgId": 0}),
    )
    .await
    .expect(400, Some("invalid_request"));

    // Unknown and mistyped query parameters.
    for path in [
        "/user/users/page?sizee=5",
        "/user/users/page?page=-1",
        "/user/users/page?size=ten",
        "/user/audit?action=no_such_action",
        // Not UTF-8 once decoded (was taken as U+FFFD and searched for).
        "/user/users/page?search=%ff%fe",
        "/user/users/page?search=ok&%c3=1",
        "/user/users?ids=1&ids=%80",
    ] {
        s.get(path, &root)
            .await
            .expect(400, Some("invalid_request"));
    }
    s.put(
        "/user/org/mfa?allorgs=true",
        &root,
        json!({"isMfaEnforced": true}),
    )
    .await
    .expect(400, Some("invalid_request"));
    s.put(
        "/user/org/mfa?allOrgs=yes",
        &root,
        json!({"isMfaEnforced": true}),
    )
    .await
    .expect(400, Some("invalid_request"));
    // Text PostgreSQL cannot store (NUL) or that has no place in a name.
    s.post("/user/org", &root, json!({"name": "a\u{0}b"}))
        .await
        .expect(400, Some("invalid_request"));
    s.put(
        &format!("/user/org/{}", s.root_org),
        &root,
        json!({"name": "a\u{7}b"}),
    )
    .await
    .expect(400, Some("invalid_request"));
    s.get("/user/users/page?search=a%00b", &root)
        .await
        .expect(400, Some("invalid_request"));
    // Longer than any name or email: refused, not a database error
    // (SQLite refuses LIKE patterns over 50,000 bytes).
    s.get(
        &format!("/user/users/page?search={}", "a".repeat(255)),
        &root,
    )
    .await
    .expect(400, Some("invalid_request"));
    s.get(
        &format!("/user/users/page?search={}", "_".repeat(30_000)),
        &root,
    )
    .await
    .expect(400, Some("invalid_request"));
    s.get(
        &format!("/user/users/page?search={}", "a".repeat(254)),
        &root,
    )
    .await
    .expect(200, None);
    s.post(
        "/user/users",
        &root,
        json!({"email": "nul@example.com", "firstName": "a\u{0}b", "lastName": "L",
               "password": crate::helpers::PASSWORD}),
    )
    .await
    .expect(400, Some("invalid_request"));
    s.post(
        "/user/auth/login",
        &root,
        json!({"email": "a\u{0}b@example.com", "password": "a\u{0}b"}),
    )
    .await
    .expect(401, Some("invalid_credentials"));
    s.post(
        "/user/users/email/confirmChange",
        &root,
        json!({"token": "a\u{0}b"}),
    )
    .await
    .expect(400, Some("invalid_code"));

    // Nothing was enforced by the refused requests.
    let org = s.get(&format!("/user/org/{}", s.root_org), &root).await;
    assert_eq!(org.ok()["isMfaEnforced"], false);
}

async fn tokens_and_routes(s: TestServer) {
    // Missing, malformed, unknown tokens: 401 with WWW-Authenticate.
    let me = "/user/users/me";
    let no_token = s.call("GET", me, None, None).await;
    no_token.expect(401, Some("unauthorized"));
    assert_eq!(no_token.header("www-authenticate"), Some("Bearer"));
    // `me` with these Authorization headers, in this order.
    let with_authorization = |headers: Vec<String>| {
        let mut request = s.client.get(s.url(me));
        for header in headers {
            request = request.header("authorization", header);
        }
        async move { TestServer::answer(request.send().await.unwrap()).await }
    };
    for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "token abc"] {
        with_authorization(vec![header.to_string()])
            .await
            .expect(401, Some("unauthorized"));
    }
    s.get(me, "not-a-real-token")
        .await
        .expect(401, Some("unauthorized"));
    // Never from a URL.
    let root = s.root().await;
    for q in ["access_token", "token"] {
        s.call("GET", &format!("{me}?{q}={root}"), None, None)
            .await
            .expect(401, Some("unauthorized"));
    }
    // The same token in the header works.
    s.get(me, &root).await.expect(200, None);
    // Two Authorization headers are refused, whichever comes first: a
    // proxy that read the other one would vouch for another token.
    for pair in [
        [root.as_str(), "not-a-real-token"],
        ["not-a-real-token", root.as_str()],
    ] {
        with_authorization(pair.iter().map(|t| format!("Bearer {t}")).collect())
            .await
            .expect(401, Some("unauthorized"));
    }

    // Unknown routes and methods.
    let a = s.call("GET", "/no/such/route", None, None).await;
    a.expect(404, Some("not_found"));
    let a = s.call("DELETE", "/user/auth/login", None, None).await;
    a.expect(405, Some("method_not_allowed"));
    assert_eq!(a.header("allow"), Some("POST"));
    let a = s.call("PATCH", "/user/users/5", Some(&root), None).await;
    a.expect(405, Some("method_not_allowed"));
    assert_eq!(a.header("allow"), Some("DELETE, GET, HEAD, PUT"));
    let a = s.call("POST", "/healthz", None, None).await;
    a.expect(405, Some("method_not_allowed"));
    assert_eq!(a.header("allow"), Some("GET, HEAD"));
    // A fixed path that a pattern matches too, with the pattern's method:
    // the fixed path's methods, not a bad id.
    for (method, path, allow) in [
        ("PUT", "/user/users/me", "GET, HEAD"),
        ("POST", "/user/users/me", "GET, HEAD"),
        ("PATCH", "/user/users/me", "GET, HEAD"),
        ("DELETE", "/user/users/page", "GET, HEAD"),
        ("GET", "/user/org/mfa", "PUT"),
        ("POST", "/user/org/mfa", "PUT"),
    ] {
        let a = s.call(method, path, Some(&root), None).await;
        a.expect(405, Some("method_not_allowed"));
        assert_eq!(a.header("allow"), Some(allow), "{method} {path}");
    }
    // The pages' files and Swagger UI's are read only too.
    for path in ["/assets/account.js", "/swagger-ui/swagger-ui.css"] {
        let a = s.call("POST", path, None, None).await;
        a.expect(405, Some("method_not_allowed"));
        assert_eq!(a.header("allow"), Some("GET, HEAD"), "{path}");
    }
    // HEAD is the GET without its body (a load balancer's health check),
    // through the same checks; on the wire, nothing follows the head.
    let head = |path: &str, token: Option<&str>| {
        use std::io::{Read as _, Write as _};
        let addr = s.base.trim_start_matches("http://").to_string();
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            stream,
            "HEAD {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        )
        .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        answer
    };
    for (path, token, status, length) in [
        ("/healthz", None, "200 OK", Some(r#"{"status":"ok"}"#.len())),
        ("/user/users/me", None, "401 Unauthorized", None),
        ("/user/users/me", Some(root.as_str()), "200 OK", None),
        ("/user/auth/login", None, "405 Method Not Allowed", None),
    ] {
        let answer = head(path, token);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{path}: {answer}"
        );
        assert!(
            answer.ends_with("\r\n\r\n"),
            "a body after the head: {answer}"
        );
        if let Some(length) = length {
            assert!(
                answer.contains(&format!("content-length: {length}\r\n")),
                "{answer}"
            );
        }
    }
    // Not served on purpose.
    for path in [
        "/user/users/addedToRole",
        "/user/org/uploadLogo",
        "/admin",
        "/account",
    ] {
        let a = s.call("POST", path, Some(&root), None).await;
        assert!(a.status == 404 || a.status == 405, "{path} answered {a:?}");
        assert!(a.body["error"].is_string(), "{path} answered {a:?}");
    }
}

async fn paging(s: TestServer) {
    let root = s.root().await;
    // Past what the document's int32 holds (an audit got 200 for it).
    for path in ["/user/users/page", "/user/audit"] {
        s.get(&format!("{path}?page=2147483648"), &root)
            .await
            .expect(400, Some("invalid_request"));
        s.get(&format!("{path}?page=2147483647"), &root)
            .await
            .expect(200, None);
    }
    for i in 0..5 {
        s.create_user(&root, &format!("pager{i}@example.com"), false)
            .await;
    }
    let p = s
        .get("/user/users/page?search=PAGER&page=1&size=2", &root)
        .await;
    let body = p.ok();
    assert_eq!(body["total"], 5);
    assert_eq!(body["page"], 1);
    assert_eq!(body["size"], 2);
    let emails: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["pager2@example.com", "pager3@example.com"]);
    // The full name as the list shows it ("Test pager4").
    let p = s.get("/user/users/page?search=test%20PAGER4", &root).await;
    assert_eq!(p.ok()["total"], 1);
    assert_eq!(p.ok()["items"][0]["email"], "pager4@example.com");
    // Defaults: page 0, size 20; everyone in the org (root + 5).
    let p = s.get("/user/users/page", &root).await;
    assert_eq!(p.ok()["size"], 20);
    assert_eq!(p.body["page"], 0);
    assert_eq!(p.body["total"], 6);
    for bad in ["size=0", "size=201"] {
        s.get(&format!("/user/users/page?{bad}"), &root)
            .await
            .expect(400, Some("invalid_request"));
    }
    let p = s.get("/user/users/page?size=200&page=7", &root).await;
    assert_eq!(p.ok()["items"], json!([]));
    assert_eq!(p.body["total"], 6);
}

/// A password or a code sent as a number is refused without being
/// repeated (serde's message quoted the value), and a body that does not
/// decompress is said so in a sentence, not in the framework's debug text.
/// A body that trickles in is cut off: actix-web bounds the time to the
/// headers only, and a client declaring 100 bytes and sending one a
/// second held its connection for minutes.
#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_refused() {
    use std::io::{Read as _, Write as _};
    let s = TestServer::sqlite().await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("read timeout");
        write!(
            stream,
            "POST /user/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n{{\"email\""
        )
        .expect("send");
        let mut trickle = stream.try_clone().expect("clone");
        let started = std::time::Instant::now();
        std::thread::spawn(move || {
            for _ in 0..25 {
                std::thread::sleep(std::time::Duration::from_secs(1));
                if trickle.write_all(b" ").is_err() {
                    return;
                }
            }
        });
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        (answer, started.elapsed())
    })
    .await
    .expect("the client");
    let (answer, took) = answer;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains("the request body did not arrive within 10 s"),
        "{answer}"
    );
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
}

#[tokio::test]
async fn refusals_repeat_no_value_and_no_internals() {
    let s = TestServer::sqlite().await;
    let root = s.root().await;
    for (path, token, body) in [
        (
            "/user/auth/login",
            None,
            r#"{"email": "root@example.com", "password": 87654321}"#,
        ),
        (
            "/user/auth/mfa/verify",
            Some(root.as_str()),
            r#"{"method": "EMAIL", "code": 786416}"#,
        ),
    ] {
        let a = s
            .call_raw("POST", path, token, Some("application/json"), body.into())
            .await;
        assert_eq!(a.status, 400, "{path}: {:?}", a.body);
        let message = a.body["message"].as_str().unwrap();
        assert!(message.contains("invalid type: integer"), "{message}");
        assert!(
            !message.contains("87654321") && !message.contains("786416"),
            "{message}"
        );
    }
    for encoding in ["gzip", "deflate"] {
        let a = login_encoded(&s, encoding, "this is not compressed").await;
        a.expect(400, Some("invalid_request"));
        let message = a.body["message"].as_str().unwrap();
        assert!(message.contains("does not decompress"), "{message}");
        assert!(
            !message.contains("Custom") && !message.contains("kind:"),
            "{message}"
        );
    }
    // An encoding the server does not decode is refused, not read as JSON.
    for encoding in ["br", "zstd", "bogus", "gzip, br"] {
        let body = r#"{"email": "root@example.com", "password": "x"}"#;
        let a = login_encoded(&s, encoding, body).await;
        a.expect(400, Some("invalid_request"));
        let message = a.body["message"].as_str().unwrap();
        assert!(
            message.contains("Content-Encoding"),
            "{encoding}: {message}"
        );
    }
}

/// A login whose body is `body`, sent as it is, with `Content-Encoding:
/// encoding`.
async fn login_encoded(s: &TestServer, encoding: &str, body: &'static str) -> Answer {
    let answer = s
        .client
        .post(s.url("/user/auth/login"))
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .unwrap();
    TestServer::answer(answer).await
}

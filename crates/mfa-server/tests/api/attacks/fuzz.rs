//! Bad input: requests generated with proptest from the served OpenAPI
//! document, for every route of it: path parameters, query parameters and
//! bodies from the schemas (valid values, values of the wrong type or out
//! of range, unknown fields, arbitrary JSON, bytes that are no JSON), with
//! no token, a garbage token, a partial token and a superadmin's full
//! token. No answer is a 5xx; every error answer is the JSON error body;
//! the server answers its health check at the end.
//!
//! The cases are generated from a fixed seed (64 per route and backend),
//! so a failure reproduces; the failing request is in the message.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

use super::schema::{Operation, document, operations, resolve, type_of};
use super::{challenged_user, partial};
use crate::helpers::{Answer, PASSWORD, ROOT_EMAIL, TestServer};
use crate::on_every_backend;

on_every_backend!(generated_requests_to_every_route);

/// Cases per route.
const CASES: usize = 64;

/// The values a request may name: ids and addresses of things that exist
/// (but never the fixture's own users, whom the requests must not lock
/// out), and of things that do not.
#[derive(Clone, Debug)]
struct Pools {
    ids: Vec<i64>,
    emails: Vec<String>,
}

fn id_strategy(p: &Pools) -> BoxedStrategy<i64> {
    prop_oneof![
        4 => proptest::sample::select(p.ids.clone()),
        1 => Just(0i64),
        1 => -3i64..0,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => any::<i64>(),
    ]
    .boxed()
}

fn text_strategy() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-zA-Z0-9 ._@+-]{0,24}",
        "[0-9]{0,9}",
        any::<String>().prop_map(|s| s.chars().take(40).collect()),
        Just("\u{0}".to_string()),
        Just("x".repeat(2000)),
        Just("ﬀ١٢٣٤٥٦\u{202e}".to_string()),
    ]
    .boxed()
}

fn email_strategy(p: &Pools) -> BoxedStrategy<String> {
    prop_oneof![
        3 => proptest::sample::select(p.emails.clone()),
        1 => "[a-z]{1,8}@[a-z]{1,8}\\.example",
        1 => text_strategy(),
    ]
    .boxed()
}

/// Any JSON value, nested a little.
fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text_strategy().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A value for `schema`: mostly of the right type, sometimes not.
fn value_strategy(doc: &Value, schema: &Value, name: &str, p: &Pools) -> BoxedStrategy<Value> {
    let schema = resolve(doc, schema);
    if let Some(alternatives) = schema["oneOf"].as_array() {
        let options: Vec<BoxedStrategy<Value>> = alternatives
            .iter()
            .map(|a| value_strategy(doc, a, name, p))
            .collect();
        return proptest::strategy::Union::new(options).boxed();
    }
    let typed: BoxedStrategy<Value> = if let Some(values) = schema["enum"].as_array() {
        prop_oneof![
            3 => proptest::sample::select(values.clone()),
            1 => text_strategy().prop_map(Value::from),
        ]
        .boxed()
    } else {
        match type_of(schema) {
            "object" => object_strategy(doc, schema, p),
            "array" => vec(value_strategy(doc, &schema["items"], name, p), 0..5)
                .prop_map(Value::from)
                .boxed(),
            "integer" => id_strategy(p).prop_map(Value::from).boxed(),
            "boolean" => any::<bool>().prop_map(Value::from).boxed(),
            "string" if name.to_lowercase().contains("email") => {
                email_strategy(p).prop_map(Value::from).boxed()
            }
            "string" => prop_oneof![
                3 => text_strategy().prop_map(Value::from),
                1 => Just(Value::from(PASSWORD)),
            ]
            .boxed(),
            _ => any_json(),
        }
    };
    prop_oneof![
        8 => typed,
        1 => any_json(),
        1 => Just(Value::Null),
    ]
    .boxed()
}

/// An object: each property present or not (required ones mostly
/// present), sometimes an unknown one.
fn object_strategy(doc: &Value, schema: &Value, p: &Pools) -> BoxedStrategy<Value> {
    let required: Vec<String> = schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut fields: Vec<BoxedStrategy<Option<(String, Value)>>> = Vec::new();
    if let Some(props) = schema["properties"].as_object() {
        for (key, prop) in props {
            let present = if required.contains(key) { 0.9 } else { 0.5 };
            let key = key.clone();
            let value = value_strategy(doc, prop, &key, p);
            fields.push(
                proptest::option::weighted(present, value)
                    .prop_map(move |v| v.map(|v| (key.clone(), v)))
                    .boxed(),
            );
        }
    }
    let extra = proptest::option::weighted(0.1, ("[a-zA-Z]{1,10}", any_json()));
    (fields, extra)
        .prop_map(|(fields, extra)| {
            let mut m = serde_json::Map::new();
            for (k, v) in fields.into_iter().flatten() {
                m.insert(k, v);
            }
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            Value::Object(m)
        })
        .boxed()
}

/// A body: JSON of the schema (or none), or something that is no JSON.
#[derive(Clone, Debug)]
enum Body {
    None,
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

fn body_strategy(doc: &Value, op: &Operation, p: &Pools) -> BoxedStrategy<Body> {
    let raw = prop_oneof![
        vec(any::<u8>(), 0..64).prop_map(|b| Body::Raw("application/json", b)),
        "[{}\\[\\]\":,a-z0-9 ]{0,40}".prop_map(|s| Body::Raw("application/json", s.into_bytes())),
        any_json().prop_map(|v| Body::Raw("text/plain", v.to_string().into_bytes())),
        Just(Body::Raw(
            "application/json",
            format!("{{\"x\": \"{}\"}}", "y".repeat(70 * 1024)).into_bytes()
        )),
    ];
    match op.body_schema() {
        Some(schema) => prop_oneof![
            6 => value_strategy(doc, schema, "", p).prop_map(Body::Json),
            1 => Just(Body::None),
            2 => raw,
            1 => any_json().prop_map(Body::Json),
        ]
        .boxed(),
        None => prop_oneof![
            6 => Just(Body::None),
            1 => any_json().prop_map(Body::Json),
            1 => raw,
        ]
        .boxed(),
    }
}

/// Percent-encode all but unreserved characters, so that any generated
/// text can stand in a path segment or a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A parameter's value as text.
fn param_strategy(doc: &Value, param: &Value, p: &Pools) -> BoxedStrategy<String> {
    let name = param["name"].as_str().unwrap_or_default().to_string();
    let schema = resolve(doc, &param["schema"]);
    let typed: BoxedStrategy<String> = if let Some(values) = schema["enum"].as_array() {
        proptest::sample::select(values.clone())
            .prop_map(|v| v.as_str().unwrap_or_default().to_string())
            .boxed()
    } else if name.contains("email")
        || name == "username"
        || name == "id" && type_of(schema) == "string"
    {
        prop_oneof![
            email_strategy(p),
            id_strategy(p).prop_map(|i| i.to_string())
        ]
        .boxed()
    } else if name == "ids" {
        vec(id_strategy(p), 0..4)
            .prop_map(|ids| ids.iter().map(i64::to_string).collect::<Vec<_>>().join(","))
            .boxed()
    } else {
        match type_of(schema) {
            "integer" => prop_oneof![
                id_strategy(p).prop_map(|i| i.to_string()),
                (0u32..300).prop_map(|i| i.to_string()),
            ]
            .boxed(),
            "boolean" => proptest::sample::select(vec!["true", "false"])
                .prop_map(String::from)
                .boxed(),
            _ => text_strategy(),
        }
    };
    prop_oneof![8 => typed, 2 => text_strategy()].boxed()
}

/// Which token a request carries.
#[derive(Clone, Copy, Debug)]
enum Token {
    None,
    Garbage,
    Partial,
    Full,
}

#[derive(Clone, Debug)]
struct Case {
    token: Token,
    path: String,
    body: Body,
}

fn case_strategy(doc: &Value, op: &Operation, p: &Pools) -> BoxedStrategy<Case> {
    let path_params: Vec<(String, BoxedStrategy<String>)> = op
        .params("path")
        .into_iter()
        .map(|param| {
            (
                param["name"].as_str().unwrap().to_string(),
                param_strategy(doc, param, p),
            )
        })
        .collect();
    let query_params: Vec<BoxedStrategy<Option<(String, String)>>> = op
        .params("query")
        .into_iter()
        .map(|param| {
            let name = param["name"].as_str().unwrap().to_string();
            let present = if param["required"] == true { 0.9 } else { 0.5 };
            proptest::option::weighted(present, param_strategy(doc, param, p))
                .prop_map(move |v| v.map(|v| (name.clone(), v)))
                .boxed()
        })
        .collect();
    let unknown_query = proptest::option::weighted(0.1, ("[a-z]{1,6}", text_strategy()));
    let names: Vec<String> = path_params.iter().map(|(n, _)| n.clone()).collect();
    let values: Vec<BoxedStrategy<String>> = path_params.into_iter().map(|(_, s)| s).collect();
    let pattern = op.path.clone();
    let token = prop_oneof![
        1 => Just(Token::None),
        1 => Just(Token::Garbage),
        1 => Just(Token::Partial),
        2 => Just(Token::Full),
    ];
    (
        values,
        query_params,
        unknown_query,
        body_strategy(doc, op, p),
        token,
    )
        .prop_map(move |(values, query, unknown, body, token)| {
            let mut path = pattern.clone();
            for (name, value) in names.iter().zip(values) {
                path = path.replace(&format!("{{{name}}}"), &encode(&value));
            }
            let mut pairs: Vec<String> = query
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", encode(&v)))
                .collect();
            if let Some((k, v)) = unknown {
                pairs.push(format!("{k}={}", encode(&v)));
            }
            if !pairs.is_empty() {
                path = format!("{path}?{}", pairs.join("&"));
            }
            Case { token, path, body }
        })
        .boxed()
}

async fn send(s: &TestServer, method: &str, case: &Case, partial: &str, full: &str) -> Answer {
    let mut req = s.client.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        s.url(&case.path),
    );
    match case.token {
        Token::None => {}
        Token::Garbage => req = req.bearer_auth("garbage-token-that-was-never-issued-0123456789"),
        Token::Partial => req = req.bearer_auth(partial),
        Token::Full => req = req.bearer_auth(full),
    }
    match &case.body {
        Body::None => {}
        Body::Json(v) => req = req.json(v),
        Body::Raw(content_type, bytes) => {
            req = req
                .header("content-type", *content_type)
                .body(bytes.clone());
        }
    }
    TestServer::answer(req.send().await.expect("request")).await
}

async fn generated_requests_to_every_route(s: TestServer) {
    let doc = document(&s).await;
    let ops = operations(&doc);
    assert!(ops.len() >= 45, "only {} operations", ops.len());

    // The fixture: the superadmin (opted out of MFA in its org, so that no
    // generated enforcement locks it out of a full session), a user with a
    // partial session, and a target the requests may do anything to.
    let root = s.root().await;
    let root_id = s.get("/user/users/me", &root).await.ok()["id"]
        .as_i64()
        .unwrap();
    s.put(
        &format!("/user/users/{root_id}/membership"),
        &root,
        json!({"mfaOptOut": true}),
    )
    .await
    .expect(204, None);
    let partial_email = "fuzzy.partial@example.com";
    let (partial_id, _, _) = challenged_user(&s, &root, partial_email).await;
    let target = s.create_user(&root, "fuzzy.target@example.com", true).await;
    // An org for the requests, whose id is not also a fixture user's.
    let mut other_org = s.root_org;
    while [s.root_org, root_id, partial_id].contains(&other_org) {
        let org = s.post("/user/org", &root, json!({"name": "Fuzzed"})).await;
        other_org = org.ok()["id"].as_i64().unwrap();
    }
    let pools = Pools {
        ids: vec![target, other_org, 4242],
        emails: vec![
            "fuzzy.target@example.com".into(),
            "nobody@example.com".into(),
        ],
    };

    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let mut sent = 0;
    for op in &ops {
        // Fresh tokens for each route: a generated logout or reset may
        // have ended the previous ones.
        let full = s.login(ROOT_EMAIL, PASSWORD).await;
        assert_eq!(full.mfa, "none", "the fixture's superadmin owes MFA");
        let partial = partial(&s, partial_email).await;
        let strategy = case_strategy(&doc, op, &pools);
        for _ in 0..CASES {
            let case = strategy
                .new_tree(&mut runner)
                .expect("a generated case")
                .current();
            let a = send(&s, &op.method, &case, &partial, &full.token).await;
            sent += 1;
            let what = format!("{} {:?} gave {a:?}", op.method, case);
            assert!(a.status < 500, "{what}");
            if a.status >= 400 {
                assert!(
                    a.header("content-type")
                        .is_some_and(|c| c.starts_with("application/json")),
                    "{what}"
                );
                assert!(a.body["error"].is_string(), "{what}");
                assert!(a.body["message"].is_string(), "{what}");
            }
            // The session rules hold whatever the input, on every path
            // the router takes for the route (a generated empty segment
            // can make a path no route takes).
            let routed = !(a.status == 405
                || a.status == 404 && a.body["message"] == "no route matches this path");
            let secured = op.session != "none";
            if routed && secured && matches!(case.token, Token::None | Token::Garbage) {
                assert_eq!((a.status, a.error()), (401, "unauthorized"), "{what}");
            }
            if routed && op.session == "full" && matches!(case.token, Token::Partial) {
                assert_eq!((a.status, a.error()), (403, "mfa_required"), "{what}");
            }
        }
    }
    assert_eq!(sent, ops.len() * CASES);
    s.call("GET", "/healthz", None, None)
        .await
        .expect(200, None);
    s.root().await;
}

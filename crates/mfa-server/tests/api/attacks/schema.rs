//! The operations of the served OpenAPI document, and plausible valid
//! requests for them, so that tests enumerate routes from the document
//! instead of a list that a new route could be missing from.

use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestServer};

/// One operation of the document.
#[derive(Clone, Debug)]
pub struct Operation {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path pattern, e.g. `/user/users/{id}`.
    pub path: String,
    /// `x-session`: `none`, `partial`, `any` or `full`.
    pub session: String,
    /// The operation object.
    pub op: Value,
}

impl Operation {
    /// The parameters of the operation in `place` (`path`, `query`).
    pub fn params(&self, place: &str) -> Vec<&Value> {
        self.op["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter(|p| p["in"] == place).collect())
            .unwrap_or_default()
    }

    /// The JSON schema of the request body, if any.
    pub fn body_schema(&self) -> Option<&Value> {
        let s = &self.op["requestBody"]["content"]["application/json"]["schema"];
        (!s.is_null()).then_some(s)
    }

    /// The description of the documented answer with this status.
    pub fn documents(&self, status: &str, code: &str) -> bool {
        self.op["responses"][status]["description"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("`{code}`")))
    }
}

/// The served document.
pub async fn document(s: &TestServer) -> Value {
    let a = s.call("GET", "/api-docs/openapi.json", None, None).await;
    a.ok().clone()
}

/// Every operation of the document.
pub fn operations(doc: &Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            ops.push(Operation {
                method: method.to_uppercase(),
                path: path.clone(),
                session: op["x-session"].as_str().unwrap_or("full").to_string(),
                op: op.clone(),
            });
        }
    }
    ops
}

/// Follow a `$ref` into the document's components.
pub fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// The first type of a schema that is not `null`.
pub fn type_of(schema: &Value) -> &str {
    match &schema["type"] {
        Value::String(t) => t,
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ => "",
    }
}

/// The real objects valid requests name.
#[derive(Clone, Debug)]
pub struct Targets {
    /// A user id.
    pub user: i64,
    /// That user's email address.
    pub email: String,
    /// An org id.
    pub org: i64,
}

/// A valid value for a path or query parameter called `name`.
pub fn param_value(name: &str, schema: &Value, path: &str, t: &Targets) -> String {
    if let Some(first) = schema["enum"].get(0).and_then(Value::as_str) {
        return first.to_string();
    }
    match name {
        "id" if path.starts_with("/user/org/") => t.org.to_string(),
        "id" | "userId" | "ids" => t.user.to_string(),
        "orgId" => t.org.to_string(),
        "email" | "username" => t.email.clone(),
        _ => match type_of(schema) {
            "integer" => "1".into(),
            "boolean" => "true".into(),
            _ => "x".into(),
        },
    }
}

/// A concrete request path with its required query parameters.
pub fn concrete_path(op: &Operation, t: &Targets) -> String {
    let mut path = op.path.clone();
    for p in op.params("path") {
        let name = p["name"].as_str().unwrap();
        let value = param_value(name, &p["schema"], &op.path, t);
        path = path.replace(&format!("{{{name}}}"), &value);
    }
    let query: Vec<String> = op
        .params("query")
        .into_iter()
        .filter(|p| p["required"] == true)
        .map(|p| {
            let name = p["name"].as_str().unwrap();
            format!("{name}={}", param_value(name, &p["schema"], &op.path, t))
        })
        .collect();
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    path
}

/// A valid instance of `schema`: every required property, with values
/// that name `t` where a property names a user, an org or an address.
pub fn valid_body(doc: &Value, schema: &Value, t: &Targets) -> Value {
    value_for(doc, schema, "", t)
}

fn value_for(doc: &Value, schema: &Value, name: &str, t: &Targets) -> Value {
    let schema = resolve(doc, schema);
    if let Some(alternatives) = schema["oneOf"].as_array() {
        let real = alternatives
            .iter()
            .find(|a| type_of(a) != "null")
            .unwrap_or(&Value::Null);
        return value_for(doc, real, name, t);
    }
    if let Some(first) = schema["enum"].get(0) {
        return first.clone();
    }
    match type_of(schema) {
        "object" => {
            let mut out = serde_json::Map::new();
            let required: Vec<&str> = schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(props) = schema["properties"].as_object() {
                for (key, prop) in props {
                    if required.contains(&key.as_str()) {
                        out.insert(key.clone(), value_for(doc, prop, key, t));
                    }
                }
            }
            Value::Object(out)
        }
        "array" => json!([value_for(doc, &schema["items"], name, t)]),
        "integer" => match name {
            "orgId" => json!(t.org),
            "mfaGracePeriodHours" => json!(1),
            _ => json!(t.user),
        },
        "boolean" => json!(true),
        "string" => match name {
            "email" => json!(t.email),
            "password" | "currentPassword" => json!(PASSWORD),
            "code" | "totp" => json!("123456"),
            _ => json!("Valid Name"),
        },
        _ => json!({}),
    }
}

//! How requests are parsed: limits and error answers of the JSON, query and
//! path extractors, and a JSON body that may be absent.
//!
//! Malformed JSON, wrong types, unknown fields (every request type has
//! `deny_unknown_fields`), a body over 64 KiB, a JSON body without
//! `Content-Type: application/json`, unknown query parameters, a query
//! string that is not UTF-8 once percent-decoded, and path ids
//! that are not positive integers all answer `400 invalid_request`. So does
//! a body that is JSON but not an object: serde's derived `Deserialize`
//! would otherwise take an array for a struct, field by field in order
//! (`["a@example.com", "password"]` logged in).

use std::future::Future;
use std::pin::Pin;

use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
use actix_web::web::{self, Bytes};
use actix_web::{FromRequest, HttpRequest, dev::Payload};
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::error::ApiError;

/// Largest accepted request body in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The JSON body extractor's limit and error answer.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|e, _| {
            let message = match &e {
                JsonPayloadError::OverflowKnownLength { .. }
                | JsonPayloadError::Overflow { .. } => {
                    format!("the request body is larger than {MAX_BODY_BYTES} bytes")
                }
                JsonPayloadError::ContentType => {
                    "the request body must be JSON with Content-Type: application/json".into()
                }
                JsonPayloadError::Deserialize(inner) => {
                    format!("the request body is not valid: {}", without_value(inner))
                }
                JsonPayloadError::Payload(PayloadError::EncodingCorrupted)
                | JsonPayloadError::Payload(PayloadError::Incomplete(Some(_))) => {
                    "the request body cannot be read: it does not decompress as its \
                     Content-Encoding says, or it ended early"
                        .into()
                }
                _ => "the request body cannot be read".into(),
            };
            ApiError::InvalidRequest(message).into()
        })
}

/// `400 invalid_request` for a body whose `Content-Encoding` the server
/// does not decode: the body was read as it came, so `br` or `zstd` was
/// taken for JSON (and garbage answered as malformed JSON). Accepted:
/// none, `identity`, `gzip`, `deflate`.
fn refuse_unknown_encoding(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(encoding) = req.headers().get(actix_web::http::header::CONTENT_ENCODING) else {
        return Ok(());
    };
    let known = encoding.to_str().is_ok_and(|e| {
        let e = e.trim();
        ["identity", "gzip", "deflate"]
            .iter()
            .any(|known| e.eq_ignore_ascii_case(known))
    });
    if known {
        return Ok(());
    }
    Err(ApiError::InvalidRequest(
        "the request body's Content-Encoding is not one the server reads: send the body as it \
         is, or with gzip or deflate"
            .into(),
    ))
}

/// serde_json's error without the value it refused: "invalid type:
/// integer, expected a string at line 1 column 40", not "integer
/// `87654321`": a password or a code sent as a number came back in the
/// answer, where a client or a proxy that logs answers kept it.
fn without_value(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let Some((what, rest)) = message.split_once(", expected ") else {
        return message;
    };
    let Some((refusal, kind)) = what
        .strip_prefix("invalid type: ")
        .map(|kind| ("invalid type", kind))
        .or_else(|| {
            what.strip_prefix("invalid value: ")
                .map(|kind| ("invalid value", kind))
        })
    else {
        return message;
    };
    // "integer `5`", "string \"abc\"", "floating point `1.5`", "map".
    let kind = kind.split(['`', '"']).next().unwrap_or(kind).trim_end();
    format!("{refusal}: {kind}, expected {rest}")
}

/// The query string extractor's error answer.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|e, _| {
        let QueryPayloadError::Deserialize(inner) = &e else {
            return ApiError::InvalidRequest("the query string is not valid".into()).into();
        };
        ApiError::InvalidRequest(format!("the query string is not valid: {inner}")).into()
    })
}

/// A query string: `T` as `web::Query` parses it, under
/// [`query_config`]'s error answer, after a check that every name and
/// value decodes to UTF-8. `web::Query` replaces what does not with
/// U+FFFD, so `search=%ff` searched for a character nobody typed. Use it
/// for every query instead of `web::Query`.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T> Query<T> {
    /// The parsed query.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Query<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let utf8 = req.query_string().split(['&', '=']).all(|part| {
            percent_encoding::percent_decode_str(&part.replace('+', " "))
                .decode_utf8()
                .is_ok()
        });
        if !utf8 {
            let refusal = ApiError::InvalidRequest(
                "the query string is not valid: it is not UTF-8 once decoded".into(),
            );
            return std::future::ready(Err(refusal.into()));
        }
        let parsed = web::Query::<T>::from_request(req, payload).into_inner();
        std::future::ready(parsed.map(|q| Query(q.into_inner())))
    }
}

/// The path extractor's error answer: `405` for a path a route without
/// parameters serves with other methods (`PUT /user/users/me` is no
/// `PUT /user/users/{id}` with a bad id), else `400`.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|e, req| {
        if let Some(allow) = req
            .app_data::<web::Data<crate::middleware::RouteTable>>()
            .and_then(|routes| routes.literal_methods_of(req.path()))
        {
            return ApiError::MethodNotAllowed { allow }.into();
        }
        let PathError::Deserialize(inner) = &e else {
            return ApiError::InvalidRequest("the path is not valid".into()).into();
        };
        ApiError::InvalidRequest(format!("the path is not valid: {inner}")).into()
    })
}

/// The longest a request body may take to arrive, from its first read.
/// actix-web bounds the time to a request's headers, not to its body: a
/// client sending a declared 60,000 bytes one a second held its
/// connection for as long as it liked (an audit stopped at four minutes).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `read`, a body extractor's future, or `400 invalid_request` when the
/// body has not arrived within [`BODY_READ_TIMEOUT`]; the connection is
/// closed with the answer, since the rest of its body was never read.
async fn in_time<F: Future>(read: F) -> Result<F::Output, ApiError> {
    tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .map_err(|_| {
            ApiError::InvalidRequest(format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ))
        })
}

/// The raw body extractor's limit (used by [`OptionalJson`]).
pub fn payload_config() -> web::PayloadConfig {
    web::PayloadConfig::new(MAX_BODY_BYTES)
}

/// A required JSON body: `T` from a JSON object, under
/// [`json_config`]'s limit and error answer. Use it for every request body
/// instead of `web::Json`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    /// The body.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if let Err(refusal) = refuse_unknown_encoding(req) {
            return Box::pin(async move { Err(refusal.into()) });
        }
        let object = web::Json::<JsonObject<T>>::from_request(req, payload);
        Box::pin(async move { Ok(Json(in_time(object).await??.into_inner().0)) })
    }
}

/// `T` deserialized from a JSON object only; an array (or any other JSON
/// value) is "invalid type: sequence, expected a JSON object".
struct JsonObject<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(std::marker::PhantomData))
            .map(JsonObject)
    }
}

/// A JSON body that may be absent: an empty body is `None`, and so is JSON
/// `null` (the OpenAPI document gives such bodies as `T` or `null`);
/// anything else must parse as `T` under the same rules as a required body.
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = Bytes::from_request(req, payload);
        let encoding = refuse_unknown_encoding(req);
        let content_type_ok = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        Box::pin(async move {
            let bytes = in_time(bytes).await?.map_err(|_| {
                ApiError::InvalidRequest(format!(
                    "the request body is larger than {MAX_BODY_BYTES} bytes or cannot be read"
                ))
            })?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalJson(None));
            }
            encoding?;
            if !content_type_ok {
                return Err(ApiError::InvalidRequest(
                    "the request body must be JSON with Content-Type: application/json".into(),
                ));
            }
            if bytes.trim_ascii() == b"null" {
                return Ok(OptionalJson(None));
            }
            serde_json::from_slice::<JsonObject<T>>(&bytes)
                .map(|v| OptionalJson(Some(v.0)))
                .map_err(|e| {
                    ApiError::InvalidRequest(format!(
                        "the request body is not valid: {}",
                        without_value(&e)
                    ))
                })
        })
    }
}

/// A body its route ignores, whatever it holds (the seed allows one of no
/// given shape), under the same limit as every other body: read and
/// dropped, or `400 invalid_request` beyond [`MAX_BODY_BYTES`].
#[derive(Debug)]
pub struct IgnoredBody;

impl FromRequest for IgnoredBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = Bytes::from_request(req, payload);
        let encoding = refuse_unknown_encoding(req);
        Box::pin(async move {
            let bytes = in_time(bytes).await?.map_err(|_| {
                ApiError::InvalidRequest(format!(
                    "the request body is larger than {MAX_BODY_BYTES} bytes or cannot be read"
                ))
            })?;
            // As for every body: an empty one has no encoding to refuse.
            if !bytes.is_empty() {
                encoding?;
            }
            Ok(IgnoredBody)
        })
    }
}

/// The body of a route that takes none: empty, or a JSON object without
/// fields (`{}`, which some clients send with every POST and PUT).
/// Anything else is `400 invalid_request`, as an unknown field of any
/// other body is: `{"userId": 5}` would otherwise be ignored, and the
/// route act on the caller while its client meant user 5.
#[derive(Debug)]
pub struct NoBody;

/// No field at all.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

impl FromRequest for NoBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = OptionalJson::<NoFields>::from_request(req, payload);
        Box::pin(async move {
            body.await.map(|_| NoBody).map_err(|e| match e {
                ApiError::InvalidRequest(reason) => {
                    ApiError::InvalidRequest(format!("this route takes no body: {reason}"))
                }
                other => other,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_for(body: &str) -> String {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Login {
            password: String,
            tries: u8,
        }
        without_value(&serde_json::from_str::<Login>(body).unwrap_err())
    }

    #[test]
    fn a_refused_value_is_not_repeated() {
        let m = message_for(r#"{"password": 87654321, "tries": 1}"#);
        assert!(
            m.starts_with("invalid type: integer, expected a string at line 1"),
            "{m}"
        );
        let m = message_for(r#"{"password": "x", "tries": 7654321}"#);
        assert!(m.starts_with("invalid value: integer, expected u8"), "{m}");
        let m = message_for(r#"{"password": "x", "tries": "secret"}"#);
        assert!(m.starts_with("invalid type: string, expected u8"), "{m}");
        assert!(!m.contains("secret"), "{m}");
        let m = message_for(r#"{"password": ["a"], "tries": 1}"#);
        assert!(m.starts_with("invalid type: sequence, expected"), "{m}");
    }

    #[test]
    fn other_errors_are_kept() {
        let m = message_for(r#"{"password": "x"}"#);
        assert!(m.starts_with("missing field `tries`"), "{m}");
    }
}

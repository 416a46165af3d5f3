//! What wraps every request: the request log and metrics, JSON for every
//! error page, and the answer for unknown routes.
//!
//! There is no panic-catching layer: handlers do no work that can panic
//! (no `unwrap`, no indexing), and everything that could (storage,
//! argon2, mail, QR codes) runs in `web::block`, whose panics come back as
//! a blocking error and answer `500 internal_error` (see [`crate::error`]).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ResourceDef, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, Next};
use actix_web::{Error, HttpRequest, HttpResponse, web};

use crate::error::{ApiError, body_for_status};
use crate::metrics::Metrics;

/// One log line and the metrics of each request: method, route pattern
/// (never the raw path, which may hold an email address), status, latency.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let start = Instant::now();
    let method = req.method().clone();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let res = next.call(req).await?;
    let elapsed = start.elapsed();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let status = res.status().as_u16();
    if let Some(metrics) = metrics {
        metrics.observe_request(&method, &route, status, elapsed.as_secs_f64());
    }
    let latency_ms = format!("{:.3}", elapsed.as_secs_f64() * 1000.0);
    let method = method.as_str();
    if status >= 500 {
        tracing::warn!(method, route, status, %latency_ms, "request");
    } else {
        tracing::info!(method, route, status, %latency_ms, "request");
    }
    Ok(res)
}

/// Replace an error answer that is not JSON (from actix itself or a
/// library) with the JSON error body for its status. The headers that
/// matter to clients (`Allow`, `Retry-After`, `WWW-Authenticate`) stay.
pub fn json_error_page<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (req, old) = res.into_parts();
    let mut replacement = HttpResponse::build(status);
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = old.headers().get(&name) {
            replacement.insert_header((name, v.clone()));
        }
    }
    let response = replacement.json(body_for_status(status));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_into_right_body(),
    ))
}

/// The documented routes, for telling `404` from `405`.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<(ResourceDef, Vec<&'static str>)>,
}

impl RouteTable {
    /// The paths and methods of an OpenAPI document.
    pub fn from_openapi(api: &utoipa::openapi::OpenApi) -> RouteTable {
        let routes = api
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("DELETE", item.delete.is_some()),
                    ("PATCH", item.patch.is_some()),
                ]
                .into_iter()
                .filter_map(|(m, present)| present.then_some(m))
                .collect();
                (ResourceDef::new(path.as_str()), methods)
            })
            .collect();
        RouteTable { routes }
    }

    /// The methods served on `path`, if any route has that path.
    fn methods_of(&self, path: &str) -> Option<String> {
        let mut methods: Vec<&str> = self
            .routes
            .iter()
            .filter(|(def, _)| def.is_match(path))
            .flat_map(|(_, m)| m.iter().copied())
            .collect();
        methods.sort_unstable();
        methods.dedup();
        (!methods.is_empty()).then(|| methods.join(", "))
    }
}

/// The answer when no route takes the request: `405` with `Allow` when the
/// path exists with other methods, else `404`.
pub async fn fallback(
    req: HttpRequest,
    routes: web::Data<RouteTable>,
) -> Result<HttpResponse, ApiError> {
    Err(match routes.methods_of(req.path()) {
        Some(allow) => ApiError::MethodNotAllowed { allow },
        None => ApiError::NoRoute,
    })
}

/// The `Cache-Control` and `X-Content-Type-Options` of every answer.
pub fn default_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .add((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
}

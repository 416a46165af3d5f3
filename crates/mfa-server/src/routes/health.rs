//! Liveness, readiness and metrics.

use std::time::Duration;

use actix_web::{HttpResponse, get, web};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::app::Service;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::Metrics;
use crate::wire::StatusResponse;

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(healthz).service(readyz).service(metrics);
}

/// Liveness
///
/// `200` while the process serves requests.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "Alive.", body = StatusResponse)),
    extensions(("x-session" = json!("none"))),
)]
#[get("/healthz")]
pub async fn healthz() -> web::Json<StatusResponse> {
    web::Json(StatusResponse::OK)
}

/// Readiness
///
/// `200` when the database answers, has this version's schema, and records
/// this server's encryption key (checked on each call), else `503`, within
/// about 3 s even while other requests wait for a database that does not
/// answer.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "Ready.", body = StatusResponse),
        (status = 503, description = "`unavailable`: the database does not answer within 2 s, or its schema is not this version's (emptied or recreated: migrations not applied), or it records another encryption key (a key rotation since this server started: restart it with the new key).", body = ErrorBody),
    ),
    extensions(("x-session" = json!("none"))),
)]
#[get("/readyz")]
pub async fn readyz(service: web::Data<Service>) -> Result<web::Json<StatusResponse>, ApiError> {
    let service = service.into_inner();
    // The ping waits at most PING_TIMEOUT for a connection; this bounds
    // the wait for a blocking thread too, which requests stuck on a dead
    // database may all hold.
    let bound = mfa_store::PING_TIMEOUT + Duration::from_secs(1);
    let pinged = tokio::time::timeout(bound, web::block(move || service.store().ping()))
        .await
        .map_err(|_| {
            ApiError::Unavailable(format!("database: no answer within {} s", bound.as_secs()))
        })?;
    pinged?.map_err(|e| ApiError::Unavailable(format!("database: {e}")))?;
    Ok(web::Json(StatusResponse::OK))
}

/// Prometheus metrics
///
/// The OpenMetrics text exposition: `http_requests_total` and
/// `http_request_duration_seconds` by method, route pattern and status;
/// `mfa_verifications_total` by method and outcome (`success`, `failure`,
/// `replay`, `locked_out`); `mfa_lockouts_total` by kind (`code`,
/// `password`); `logins_total` by outcome. Open to anyone who can reach the
/// bind address: bind to a private interface or filter it at the proxy.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "Metrics.", content_type = "application/openmetrics-text", body = String)),
    extensions(("x-session" = json!("none"))),
)]
#[get("/metrics")]
pub async fn metrics(metrics: web::Data<Metrics>) -> Result<HttpResponse, ApiError> {
    let text = metrics
        .encode()
        .map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}

//! The one place where errors become HTTP answers.
//!
//! Layers: the domain refuses with [`MfaError`]; this module maps each
//! variant to a status and a snake_case code, and adds what the server
//! itself refuses (unparsable input, unknown routes, a failed blocking
//! task). Every answer is `{"error": code, "message": sentence}`. A 5xx
//! carries a generic message; its cause goes to the log, which never sees a
//! secret either (the store and the mailer keep secrets out of their error
//! texts).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use mfa_core::{MfaError, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

/// `Retry-After` of an answer that found the database unavailable: long
/// enough for a restart or a failover, short enough for a login to go on.
const DATABASE_RETRY_AFTER_SECS: &str = "5";

/// `Retry-After` of `503 mail_unavailable`: a mail server refusing for now,
/// down, or every mail slot held by one that does not answer.
const MAIL_RETRY_AFTER_SECS: &str = "10";

/// Every `error` code an answer may carry; the OpenAPI document lists them
/// as the enum of [`ErrorBody::error`], so that a generated client can
/// match on them.
pub const ERROR_CODES: [&str; 16] = [
    "invalid_request",
    "invalid_code",
    "code_expired",
    "unauthorized",
    "invalid_credentials",
    "mfa_required",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "already_enrolled",
    "not_enrolled",
    "conflict",
    "too_many_attempts",
    "mail_unavailable",
    "internal_error",
    "unavailable",
];

fn error_code_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(ERROR_CODES))
        .description(Some(
            "What went wrong, for programs; each operation's answers say which codes it gives.",
        ))
        .build()
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "invalid_request", "message": "size must be between 1 and 200"}))]
pub struct ErrorBody {
    /// One of [`ERROR_CODES`].
    #[schema(schema_with = error_code_schema)]
    pub error: &'static str,
    /// A sentence for people; never a secret, a stack trace or SQL.
    pub message: String,
}

/// An error answer of the API.
#[derive(Debug)]
pub enum ApiError {
    /// A refusal or failure of the domain.
    Domain(MfaError),
    /// The request does not parse: body, query or path.
    InvalidRequest(String),
    /// No route has this path.
    NoRoute,
    /// A route has this path, but not this method.
    MethodNotAllowed {
        /// The methods the path has, for the `Allow` header.
        allow: String,
    },
    /// A bug: a panic, a blocking pool that went away, a QR code that could
    /// not be drawn. The text goes to the log only.
    Internal(String),
    /// A dependency is down (readiness probe). The text goes to the log only.
    Unavailable(String),
    /// More password checks are queued than the server can answer within
    /// its bound (`MFA_PASSWORD_QUEUE_MAX_WAIT_SECS`): this one was not
    /// run. A throttle, so `429 too_many_attempts` with `Retry-After`.
    Busy {
        /// Seconds until the queue ahead is expected to be worked off.
        retry_after_secs: u64,
    },
}

impl From<MfaError> for ApiError {
    fn from(e: MfaError) -> Self {
        ApiError::Domain(e)
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(_: actix_web::error::BlockingError) -> Self {
        ApiError::Internal("the blocking task failed (panic or shutdown)".into())
    }
}

impl ApiError {
    /// Status, code and public message.
    fn parts(&self) -> (StatusCode, &'static str, String) {
        use MfaError as E;
        let status = |s: StatusCode, code: &'static str, msg: String| (s, code, msg);
        match self {
            ApiError::Domain(e) => match e {
                E::InvalidRequest(m) => {
                    status(StatusCode::BAD_REQUEST, "invalid_request", m.clone())
                }
                E::InvalidCode => status(StatusCode::BAD_REQUEST, "invalid_code", e.to_string()),
                E::CodeExpired => status(StatusCode::BAD_REQUEST, "code_expired", e.to_string()),
                E::Unauthorized => status(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()),
                E::InvalidCredentials => status(
                    StatusCode::UNAUTHORIZED,
                    "invalid_credentials",
                    e.to_string(),
                ),
                // The route is the server's: the domain's text names none
                // (an embedder's API has other routes).
                E::MfaRequired => status(
                    StatusCode::FORBIDDEN,
                    "mfa_required",
                    format!("{e} (POST /user/auth/mfa/verify)"),
                ),
                E::Forbidden => status(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "you are not allowed to do this".into(),
                ),
                E::SignInRefused(why) => status(StatusCode::FORBIDDEN, "forbidden", (*why).into()),
                E::NotFound(_) => status(StatusCode::NOT_FOUND, "not_found", e.to_string()),
                E::AlreadyEnrolled(m) => {
                    status(StatusCode::CONFLICT, "already_enrolled", (*m).into())
                }
                E::NotEnrolled(m) => status(StatusCode::CONFLICT, "not_enrolled", (*m).into()),
                E::Conflict(m) => status(StatusCode::CONFLICT, "conflict", m.clone()),
                E::TooManyAttempts { .. } | E::MailThrottled { .. } => status(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    e.to_string(),
                ),
                E::MailUnavailable(_) => status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "mail_unavailable",
                    "the mail server is unavailable: nothing in the message can be used; try \
                     again later"
                        .into(),
                ),
                E::MailRefused(_) => status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "mail_unavailable",
                    "the mail server refused the message, and trying again will not help: nothing \
                     was sent; an administrator must check this address and the mail settings"
                        .into(),
                ),
                E::MailUnconfirmed { .. } => status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "mail_unavailable",
                    "the mail server did not confirm the message in time; it may still arrive, \
                     and its code works if it does; if not, try again later"
                        .into(),
                ),
                E::Store(StoreError::Unavailable(_)) => status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; try again later".into(),
                ),
                E::Store(_) => internal(),
            },
            ApiError::InvalidRequest(m) => {
                status(StatusCode::BAD_REQUEST, "invalid_request", m.clone())
            }
            ApiError::NoRoute => status(
                StatusCode::NOT_FOUND,
                "not_found",
                "no route matches this path".into(),
            ),
            ApiError::MethodNotAllowed { allow } => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("this path accepts only {allow}"),
            ),
            ApiError::Internal(_) => internal(),
            ApiError::Unavailable(_) => status(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "a dependency of the server is unavailable".into(),
            ),
            ApiError::Busy { retry_after_secs } => status(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!(
                    "the server has more password checks queued than it can answer in time; \
                     try again in {retry_after_secs} s"
                ),
            ),
        }
    }

    /// The `error` code of this answer.
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    /// Log what the client must not see. 4xx answers are the client's
    /// business and are not logged here (the request line has the status).
    fn log(&self) {
        match self {
            ApiError::Domain(MfaError::Store(e @ StoreError::Unavailable(_))) => {
                if let Some(unlogged) = UNAVAILABLE_LOG.record(std::time::Instant::now()) {
                    tracing::warn!(
                        error = %e,
                        not_logged_since = unlogged,
                        "database unavailable (logged every {} s at most; each request's \
                         line has its 503)",
                        UNAVAILABLE_LOG_EVERY.as_secs()
                    );
                }
            }
            ApiError::Domain(MfaError::Store(e)) => {
                tracing::error!(error = %e, "storage failure");
            }
            ApiError::Domain(MfaError::MailUnavailable(detail) | MfaError::MailRefused(detail)) => {
                tracing::warn!(error = %detail, "mail not delivered");
            }
            ApiError::Domain(MfaError::MailUnconfirmed { detail, .. }) => {
                tracing::warn!(error = %detail, "mail not confirmed; its code was kept");
            }
            ApiError::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            ApiError::Unavailable(detail) => tracing::warn!(error = %detail, "not ready"),
            _ => {}
        }
    }
}

fn internal() -> (StatusCode, &'static str, String) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "an internal error occurred; it has been logged".into(),
    )
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (status, code, message) = self.parts();
        write!(f, "{} {code}: {message}", status.as_u16())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        self.log();
        let (status, error, message) = self.parts();
        let mut response = HttpResponse::build(status);
        match self {
            ApiError::Domain(
                MfaError::TooManyAttempts { retry_after_secs }
                | MfaError::MailThrottled { retry_after_secs }
                | MfaError::MailUnconfirmed {
                    retry_after_secs, ..
                },
            )
            | ApiError::Busy { retry_after_secs } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.max(&1).to_string()));
            }
            ApiError::Domain(MfaError::Store(StoreError::Unavailable(_))) => {
                response.insert_header((
                    header::RETRY_AFTER,
                    HeaderValue::from_static(DATABASE_RETRY_AFTER_SECS),
                ));
            }
            ApiError::Domain(MfaError::MailUnavailable(_)) => {
                response.insert_header((
                    header::RETRY_AFTER,
                    HeaderValue::from_static(MAIL_RETRY_AFTER_SECS),
                ));
            }
            ApiError::Domain(MfaError::Unauthorized) => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            ApiError::MethodNotAllowed { allow } => {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    response.insert_header((header::ALLOW, v));
                }
            }
            _ => {}
        }
        response.json(ErrorBody { error, message })
    }
}

/// The JSON body for a bare status, used to replace non-JSON error pages
/// that actix or a library produced.
pub(crate) fn body_for_status(status: StatusCode) -> ErrorBody {
    let (error, message) = match status.as_u16() {
        400 => ("invalid_request", "the request does not parse"),
        401 => ("unauthorized", "a valid bearer token is required"),
        403 => ("forbidden", "you are not allowed to do this"),
        404 => ("not_found", "no route matches this path"),
        405 => (
            "method_not_allowed",
            "this path does not accept this method",
        ),
        413 => ("invalid_request", "the request body is larger than 64 KiB"),
        415 => (
            "invalid_request",
            "the request body must be application/json",
        ),
        s if s < 500 => ("invalid_request", "the request cannot be handled"),
        503 => ("unavailable", "the server is unavailable"),
        _ => (
            "internal_error",
            "an internal error occurred; it has been logged",
        ),
    };
    ErrorBody {
        error,
        message: message.into(),
    }
}

/// How often "database unavailable" is logged at most: an outage answers
/// every request `503`, and a line for each (two with the request's own)
/// drowned the log (an audit counted 665 in 20 s on one server).
const UNAVAILABLE_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

static UNAVAILABLE_LOG: mfa_store::LogThrottle = mfa_store::LogThrottle::new(UNAVAILABLE_LOG_EVERY);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_error_has_its_status_and_code() {
        let cases: Vec<(MfaError, u16, &str)> = vec![
            (MfaError::InvalidRequest("x".into()), 400, "invalid_request"),
            (MfaError::InvalidCode, 400, "invalid_code"),
            (MfaError::CodeExpired, 400, "code_expired"),
            (MfaError::Unauthorized, 401, "unauthorized"),
            (MfaError::InvalidCredentials, 401, "invalid_credentials"),
            (MfaError::MfaRequired, 403, "mfa_required"),
            (MfaError::Forbidden, 403, "forbidden"),
            (MfaError::SignInRefused("x"), 403, "forbidden"),
            (MfaError::NotFound("user"), 404, "not_found"),
            (MfaError::AlreadyEnrolled("x"), 409, "already_enrolled"),
            (MfaError::NotEnrolled("x"), 409, "not_enrolled"),
            (MfaError::Conflict("x".into()), 409, "conflict"),
            (
                MfaError::TooManyAttempts {
                    retry_after_secs: 30,
                },
                429,
                "too_many_attempts",
            ),
            (
                MfaError::MailThrottled {
                    retry_after_secs: 29,
                },
                429,
                "too_many_attempts",
            ),
            (
                MfaError::MailUnavailable("x".into()),
                503,
                "mail_unavailable",
            ),
            (MfaError::MailRefused("x".into()), 503, "mail_unavailable"),
            (
                MfaError::MailUnconfirmed {
                    detail: "x".into(),
                    retry_after_secs: 30,
                },
                503,
                "mail_unavailable",
            ),
            (
                MfaError::Store(StoreError::Backend("secret detail".into())),
                500,
                "internal_error",
            ),
            (
                MfaError::Store(StoreError::Unavailable("connection refused".into())),
                503,
                "unavailable",
            ),
        ];
        let mut given = std::collections::BTreeSet::new();
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!(api.status_code().as_u16(), status, "{api}");
            assert_eq!(api.code(), code);
            given.insert(code);
        }
        let server_errors = [
            ApiError::InvalidRequest("x".into()),
            ApiError::NoRoute,
            ApiError::MethodNotAllowed {
                allow: "GET".into(),
            },
            ApiError::Internal("x".into()),
            ApiError::Unavailable("x".into()),
            ApiError::Busy {
                retry_after_secs: 1,
            },
        ];
        given.extend(server_errors.iter().map(ApiError::code));
        for status in 400..600 {
            if let Ok(status) = StatusCode::from_u16(status) {
                given.insert(body_for_status(status).error);
            }
        }
        // The document's enum is exactly what the server gives.
        assert_eq!(given, ERROR_CODES.into_iter().collect());
    }

    #[test]
    fn internal_details_stay_out_of_the_answer() {
        let api = ApiError::from(MfaError::Store(StoreError::Backend(
            "relation users: password=hunter2".into(),
        )));
        assert!(!api.to_string().contains("hunter2"));
        let api = ApiError::from(MfaError::MailUnavailable("smtp said 550 bob@x".into()));
        assert!(!api.to_string().contains("bob@x"));
    }

    #[test]
    fn lockout_has_retry_after() {
        let api = ApiError::from(MfaError::TooManyAttempts {
            retry_after_secs: 120,
        });
        let response = api.error_response();
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "120");
    }

    #[test]
    fn an_unavailable_database_has_retry_after() {
        let api = ApiError::from(MfaError::Store(StoreError::Unavailable(
            "timed out after 10 s waiting for a connection".into(),
        )));
        let response = api.error_response();
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "5");
        assert!(!api.to_string().contains("timed out"));
    }
}

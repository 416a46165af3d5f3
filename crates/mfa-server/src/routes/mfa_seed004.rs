//! MFA, seed 004 family: enrollment status, QR enrollment, self and admin
//! reset, email factor. `{oauth_uri}` of the seed is the server's root.
//!
//! The seed answers these with a bare `200 OK`; this server adds a small
//! JSON body: `{"status": "ok"}`, or on a partial session that completed
//! MFA, the new full token `{"mfa": "none", "token", "expiresAt"}`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, put, web};
use mfa_core::AssuranceLevel;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::app::Service;
use crate::auth::{AnySession, FullSession, InlineSession};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, NoBody, OptionalJson};
use crate::metrics::Metrics;
use crate::password_pool::PasswordPool;
use crate::routes::run;
use crate::wire::{
    AuthenticatorTypeQuery, EmailEnrollResponse, EmailTypeQuery, EmailVerifyRequest,
    EnrollResponse, Method, MfaDetailsResponse, QrVerifyRequest, RecoveryResetRequest,
    StatusResponse, TempSecretResponse,
};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(mfa_details)
        .service(associate_qr_code)
        .service(verify_qr_code_enroll)
        .service(reset_my_qr_code_enroll)
        .service(reset_qr_code_enroll)
        .service(enroll_email)
        .service(verify_email);
}

/// View the caller's MFA enrollment status (seed)
///
/// The factors this server offers and, per factor, whether the caller has
/// verified it. A pending (unconfirmed) authenticator is not verified.
#[utoipa::path(
    tag = "mfa",
    responses((status = 200, description = "The enrollment status.", body = MfaDetailsResponse)),
    extensions(("x-session" = json!("partial"))),
)]
#[get("/oauth/users/mfaDetails")]
pub async fn mfa_details(
    session: InlineSession,
) -> Result<web::Json<MfaDetailsResponse>, ApiError> {
    // The token is resolved in the same read as the factors.
    let status = run(move || {
        session.resolve_with(
            |service, token, _| service.mfa_status_of_token(token),
            |status| Some(status.user_id),
        )
    })
    .await?;
    Ok(web::Json(status.into()))
}

/// Whether the client asked for JSON rather than the PNG.
fn wants_json(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/json") && !refused
        })
}

/// Get a QR code to enroll in app-based MFA (seed)
///
/// Generates a pending authenticator secret (as `generateTempSecret`) and
/// answers the QR code of its `otpauth://` URI as `image/png`, to scan with
/// an authenticator app; or, with `Accept: application/json`, the JSON of
/// `generateTempSecret` (secret, URI, SVG QR code, expiry). `mfatype` must
/// be `AUTHENTICATOR` (`400 invalid_request` otherwise, or when absent). A
/// request body, which the seed allows ("MFA details for a customer", of
/// no given shape), is ignored, whatever it holds, up to 64 KiB as every
/// body (`400 invalid_request` beyond).
#[utoipa::path(
    tag = "mfa",
    params(AuthenticatorTypeQuery),
    request_body(content = Option<serde_json::Value>, description = "Ignored, whatever it holds (at most 64 KiB): the seed's optional \"MFA details for a customer\"."),
    responses(
        (status = 200, description = "The QR code (PNG), or with `Accept: application/json` the pending secret.",
            content(
                (PngImage = "image/png"),
                (TempSecretResponse = "application/json"),
            )),
        (status = 403, description = "`mfa_required`: the user already has a verified factor and the session verified none (a partial token, or a full one opened where no MFA was owed: `POST /user/auth/mfa/verify` on it first).", body = ErrorBody),
        (status = 409, description = "`already_enrolled`: an authenticator is verified; reset it first.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("partial"))),
)]
#[put("/users/mfa/associateQRCode")]
pub async fn associate_qr_code(
    req: HttpRequest,
    service: web::Data<Service>,
    AnySession(caller): AnySession,
    _query: crate::extract::Query<AuthenticatorTypeQuery>,
    // The seed allows a body of no given shape.
    _ignored_body: crate::extract::IgnoredBody,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    let json = wants_json(&req);
    let answer = run(move || -> Result<QrAnswer, ApiError> {
        let pending = service.start_authenticator_enrollment(&caller)?;
        let qr_error = |e: mfa_totp::TotpError| ApiError::Internal(format!("QR code: {e}"));
        Ok(if json {
            QrAnswer::Json(TempSecretResponse::new(pending).map_err(qr_error)?)
        } else {
            QrAnswer::Png(mfa_totp::qr_png(&pending.otpauth_uri).map_err(qr_error)?)
        })
    })
    .await?;
    Ok(match answer {
        QrAnswer::Png(png) => HttpResponse::Ok().content_type("image/png").body(png),
        QrAnswer::Json(secret) => HttpResponse::Ok().json(secret),
    })
}

// For the document only: `Vec<u8>` would be documented as an array of
// integers.
/// A PNG image.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // a type for the document only
struct PngImage(Vec<u8>);

/// What `associateQRCode` answers.
enum QrAnswer {
    Png(Vec<u8>),
    Json(TempSecretResponse),
}

/// Verify the QR code to enroll in app-based MFA (seed)
///
/// `{"mfatype": "AUTHENTICATOR", "totp": "331425"}`: a code from the app
/// confirms the pending secret, which becomes the user's verified
/// authenticator. On a partial session MFA is thereby complete: the answer
/// carries a new full token and the partial token is revoked.
#[utoipa::path(
    tag = "mfa",
    request_body = QrVerifyRequest,
    responses(
        (status = 200, description = "Enrolled: `{\"status\": \"ok\"}` on a full session, the new full token on a partial one.", body = EnrollResponse),
        (status = 400, description = "`invalid_code`: the code does not match; `code_expired`: the pending secret expired; `invalid_request`: the body does not parse or `mfatype` is not `AUTHENTICATOR`.", body = ErrorBody),
        (status = 403, description = "`mfa_required`: the user already has a verified factor and the session verified none (a partial token, or a full one opened where no MFA was owed: `POST /user/auth/mfa/verify` on it first).", body = ErrorBody),
        (status = 409, description = "`not_enrolled`: no pending secret; `already_enrolled`: an authenticator is verified.", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: locked out after repeated failures.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the next attempt may succeed."))),
    ),
    extensions(("x-session" = json!("partial"))),
)]
#[put("/users/mfa/verifyQRCodeEnroll")]
pub async fn verify_qr_code_enroll(
    service: web::Data<Service>,
    metrics: web::Data<Metrics>,
    AnySession(caller): AnySession,
    body: Json<QrVerifyRequest>,
) -> Result<web::Json<EnrollResponse>, ApiError> {
    let service = service.into_inner();
    let code = body.into_inner().totp;
    let result =
        web::block(move || service.confirm_authenticator_enrollment(&caller, &code)).await?;
    metrics.observe_verification(Method::Authenticator, &result, false);
    Ok(web::Json(result?.into()))
}

/// Self-reset app-based MFA enrollment (seed)
///
/// Removes the caller's authenticator; enroll again by scanning a new QR
/// code. The caller's other sessions end, and the user is mailed a notice;
/// an enrollment not yet confirmed (a pending secret) is only withdrawn,
/// without either. A full session in which a factor
/// was verified may do it; a partial session, or a full one opened where
/// no MFA was owed, only with `{"recoveryCode": "..."}` (for a lost phone):
/// a bare password never removes a factor (`403 mfa_required`). The body
/// is optional on a session that verified a factor; a recovery code given
/// is checked (and used) on any session.
#[utoipa::path(
    tag = "mfa",
    request_body(content = Option<RecoveryResetRequest>, description = "Optional on a full session that verified a factor; a recovery code is required on a partial one, or on a full one opened where no MFA was owed. A code given is checked and used on any session (`400 invalid_code` if wrong)."),
    responses(
        (status = 200, description = "The authenticator is removed (or the pending one withdrawn).", body = StatusResponse),
        (status = 400, description = "`invalid_code`: the recovery code did not verify; `invalid_request`: the body does not parse.", body = ErrorBody),
        (status = 403, description = "`mfa_required`: no recovery code, on a partial token or on a full one that verified no factor while the user has one (opened where no MFA was owed: `POST /user/auth/mfa/verify` on it first, or give a recovery code).", body = ErrorBody),
        (status = 409, description = "`not_enrolled`: the caller has no authenticator, verified or pending.", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: locked out after repeated failures; with a recovery code, also when the server's password checks are queued beyond `MFA_PASSWORD_QUEUE_MAX_WAIT_SECS` (10 s): nothing was checked, try again after `Retry-After`.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the next attempt may succeed."))),
    ),
    extensions(("x-session" = json!("partial"))),
)]
#[post("/users/mfa/resetMyQRCodeEnroll")]
pub async fn reset_my_qr_code_enroll(
    service: web::Data<Service>,
    metrics: web::Data<Metrics>,
    passwords: web::Data<PasswordPool>,
    AnySession(caller): AnySession,
    body: OptionalJson<RecoveryResetRequest>,
) -> Result<web::Json<StatusResponse>, ApiError> {
    let service = service.into_inner();
    let code = body.0.and_then(|b| b.recovery_code);
    let counts_as_verification = caller.level == AssuranceLevel::Partial && code.is_some();
    let result = match code {
        None => web::block(move || service.self_reset_authenticator(&caller, None)).await?,
        // A recovery code is an argon2 hash, checked on the password
        // threads apart from the database work around the check.
        Some(code) => {
            let (checker, finisher, begun_by) = (service.clone(), service.clone(), caller.clone());
            super::in_password_steps(
                &passwords,
                move || service.self_reset_begin(&begun_by, Some(&code)),
                move |check| check.map(|check| checker.check_recovery_code(check)),
                move |checked| finisher.self_reset_finish(&caller, checked),
            )
            .await?
        }
    };
    if counts_as_verification {
        metrics.observe_verification(Method::Recovery, &result, false);
    }
    result?;
    Ok(web::Json(StatusResponse::OK))
}

/// Reset app-based MFA enrollment by an admin (seed)
///
/// Admins of the current org. `{username}` is the user's email address.
/// Removes that user's authenticator (their email factor and recovery codes
/// stay) and ends their sessions; the user gets a notice by email. An
/// authenticator still pending (set up but never confirmed) is only
/// withdrawn: no session ends and no notice goes out.
#[utoipa::path(
    tag = "mfa",
    params(("username" = String, Path, description = "The user's email address, e.g. `your.email@domain.com`.")),
    responses(
        (status = 200, description = "The authenticator is removed (or the pending one withdrawn).", body = StatusResponse),
        (status = 403, description = "`forbidden`: not an admin of the current org, or the user is a superadmin (only superadmins manage superadmins). `mfa_required`: the admin has a verified factor and this session verified none (opened where no MFA was owed: `POST /user/auth/mfa/verify` on it first).", body = ErrorBody),
        (status = 404, description = "`not_found`: no such active member of the current org.", body = ErrorBody),
        (status = 409, description = "`not_enrolled`: the user has no authenticator, verified or pending.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[put("/users/{username}/mfa/resetQRCodeEnroll")]
pub async fn reset_qr_code_enroll(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    username: web::Path<String>,
    _no_body: NoBody,
) -> Result<web::Json<StatusResponse>, ApiError> {
    let service = service.into_inner();
    let email = username.into_inner();
    run(move || service.admin_reset_authenticator(&caller, &email)).await?;
    Ok(web::Json(StatusResponse::OK))
}

/// Enroll in email MFA (seed)
///
/// Emails a 6-digit code (valid 10 minutes, single use) to the caller's
/// address; confirm it with `verifyEmail`. At most one code per 30 s.
/// `mfatype` must be `EMAIL`.
#[utoipa::path(
    tag = "mfa",
    params(EmailTypeQuery),
    responses(
        (status = 200, description = "The code went out.", body = EmailEnrollResponse),
        (status = 403, description = "`mfa_required`: the user already has a verified factor and the session verified none (a partial token, or a full one opened where no MFA was owed: `POST /user/auth/mfa/verify` on it first).", body = ErrorBody),
        (status = 409, description = "`already_enrolled`: the email factor is verified.", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: a code was sent less than 30 s ago, or the user is locked out.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 503, description = "`mail_unavailable`: the mail server did not take the message, and no code is valid; or it took the message but did not confirm it in time (the message says so), and the code in it works if it arrives.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("partial"))),
)]
#[put("/oauth/users/mfa/enrollEmail")]
pub async fn enroll_email(
    service: web::Data<Service>,
    metrics: web::Data<Metrics>,
    AnySession(caller): AnySession,
    _query: crate::extract::Query<EmailTypeQuery>,
    _no_body: NoBody,
) -> Result<web::Json<EmailEnrollResponse>, ApiError> {
    let service = service.into_inner();
    let result = web::block(move || service.start_email_enrollment(&caller)).await?;
    metrics.observe_throttle(&result);
    Ok(web::Json(result?.into()))
}

/// Verify email MFA enrollment (seed)
///
/// `{"mfatype": "EMAIL", "totp": "786416"}` with the code from the email:
/// email becomes a verified factor. On a partial session MFA is thereby
/// complete: the answer carries a new full token and the partial token is
/// revoked.
#[utoipa::path(
    tag = "mfa",
    request_body = EmailVerifyRequest,
    responses(
        (status = 200, description = "Enrolled: `{\"status\": \"ok\"}` on a full session, the new full token on a partial one.", body = EnrollResponse),
        (status = 400, description = "`invalid_code`: wrong, used or voided code; `code_expired`: the code expired; `invalid_request`: the body does not parse or `mfatype` is not `EMAIL`.", body = ErrorBody),
        (status = 403, description = "`mfa_required`: the user already has a verified factor and the session verified none (a partial token, or a full one opened where no MFA was owed: `POST /user/auth/mfa/verify` on it first).", body = ErrorBody),
        (status = 409, description = "`already_enrolled`: the email factor is verified; `not_enrolled`: no code was sent (ask for one with `enrollEmail` first): not counted as a failure.", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: locked out after repeated failures.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the next attempt may succeed."))),
    ),
    extensions(("x-session" = json!("partial"))),
)]
#[put("/oauth/users/mfa/verifyEmail")]
pub async fn verify_email(
    service: web::Data<Service>,
    metrics: web::Data<Metrics>,
    AnySession(caller): AnySession,
    body: Json<EmailVerifyRequest>,
) -> Result<web::Json<EnrollResponse>, ApiError> {
    let service = service.into_inner();
    let code = body.into_inner().totp;
    let result = web::block(move || service.confirm_email_enrollment(&caller, &code)).await?;
    metrics.observe_verification(Method::Email, &result, false);
    Ok(web::Json(result?.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn accept_header_picks_json_only_when_asked() {
        let wants = |accept: Option<&str>| {
            let mut r = TestRequest::default();
            if let Some(a) = accept {
                r = r.insert_header((header::ACCEPT, a));
            }
            wants_json(&r.to_http_request())
        };
        assert!(!wants(None));
        assert!(!wants(Some("image/png")));
        assert!(!wants(Some("*/*")));
        assert!(wants(Some("application/json")));
        assert!(wants(Some("image/png;q=0.5, application/json")));
        assert!(!wants(Some("application/json;q=0")));
    }
}

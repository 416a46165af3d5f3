//! MFA, seed 000 family: authenticator enrollment and the admin reset.

use actix_web::{HttpResponse, post, put, web};
use mfa_core::UserId;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::app::Service;
use crate::auth::{AnySession, FullSession};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, NoBody};
use crate::metrics::Metrics;
use crate::routes::run;
use crate::wire::{CodeRequest, FullTokenResponse, Method, ResetRequest, TempSecretResponse};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(generate_temp_secret)
        .service(validate_code)
        .service(reset_mfa);
}

/// Generate user MFA temp secret (seed)
///
/// A new pending authenticator secret (160 bits), valid 10 minutes, with
/// its `otpauth://` URI and a QR code (SVG); it replaces an older pending
/// one. Confirm it with `validateCode`. A partial token may do this only
/// while the user has no verified factor (`setup_required`); a user who has
/// one adds another from a full session.
#[utoipa::path(
    tag = "mfa",
    responses(
        (status = 200, description = "The pending secret; shown once.", body = TempSecretResponse),
        (status = 403, description = "`mfa_required`: the user already has a verified factor and the session verified none (a partial token, or a full one opened where no MFA was owed: `POST /user/auth/mfa/verify` on it first).", body = ErrorBody),
        (status = 409, description = "`already_enrolled`: an authenticator is verified; reset it first.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("partial"))),
)]
#[post("/user/users/mfa/generateTempSecret")]
pub async fn generate_temp_secret(
    service: web::Data<Service>,
    AnySession(caller): AnySession,
    _no_body: NoBody,
) -> Result<web::Json<TempSecretResponse>, ApiError> {
    let service = service.into_inner();
    let answer = run(move || {
        let pending = service.start_authenticator_enrollment(&caller)?;
        TempSecretResponse::new(pending).map_err(|e| ApiError::Internal(format!("QR code: {e}")))
    })
    .await?;
    Ok(web::Json(answer))
}

/// Validate the temp secret with a code to complete MFA setup (seed)
///
/// `{"code": "123456"}` from the authenticator app: the pending secret
/// becomes the user's verified authenticator. On a full session the answer
/// is `204`. On a partial session MFA is thereby complete: the answer is
/// `200` with a new full token, and the partial token is revoked.
#[utoipa::path(
    tag = "mfa",
    request_body = CodeRequest,
    responses(
        (status = 200, description = "Partial session: enrolled and MFA complete; use the new full token.", body = FullTokenResponse),
        (status = 204, description = "Full session: enrolled."),
        (status = 400, description = "`invalid_code`: the code does not match the pending secret (or is not 6 ASCII digits); `code_expired`: the pending secret expired; `invalid_request`: the body does not parse.", body = ErrorBody),
        (status = 403, description = "`mfa_required`: the user already has a verified factor and the session verified none (a partial token, or a full one opened where no MFA was owed: `POST /user/auth/mfa/verify` on it first).", body = ErrorBody),
        (status = 409, description = "`not_enrolled`: no pending secret (generate one first); `already_enrolled`: an authenticator is verified.", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: locked out after repeated failures.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the next attempt may succeed."))),
    ),
    extensions(("x-session" = json!("partial"))),
)]
#[post("/user/users/mfa/validateCode")]
pub async fn validate_code(
    service: web::Data<Service>,
    metrics: web::Data<Metrics>,
    AnySession(caller): AnySession,
    body: Json<CodeRequest>,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    let code = body.into_inner().code;
    let result =
        web::block(move || service.confirm_authenticator_enrollment(&caller, &code)).await?;
    metrics.observe_verification(Method::Authenticator, &result, false);
    Ok(match result? {
        Some(token) => HttpResponse::Ok().json(FullTokenResponse::from(token)),
        None => HttpResponse::NoContent().finish(),
    })
}

/// Reset user MFA (seed)
///
/// Admins of the current org. `{"ids": [1, 2]}`: every MFA factor of each
/// user (authenticator, email factor, recovery codes) is removed and their
/// sessions end; at their next login they owe setup again if MFA applies.
/// All ids must be members of the current org, else `404` and nothing
/// changes. Each user who had a factor gets a notice by email naming what
/// was removed (queued: the answer does not wait for the mail server).
#[utoipa::path(
    tag = "mfa",
    request_body = ResetRequest,
    responses(
        (status = 204, description = "Update success."),
        (status = 403, description = "`forbidden`: not an admin of the current org, or an id is a superadmin (only superadmins manage superadmins); nothing changed. `mfa_required`: the admin has a verified factor and this session verified none (opened where no MFA was owed: `POST /user/auth/mfa/verify` on it first).", body = ErrorBody),
        (status = 404, description = "`not_found`: an id is not an active member of the current org; nothing changed.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[put("/user/users/mfa/reset")]
pub async fn reset_mfa(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    body: Json<ResetRequest>,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    let ids: Vec<UserId> = body
        .into_inner()
        .ids
        .into_iter()
        .map(UserId::from)
        .collect();
    run(move || service.reset_mfa(&caller, &ids)).await?;
    Ok(HttpResponse::NoContent().finish())
}

//! Authentication: password login, the MFA challenge and verification,
//! logout.

use actix_web::{HttpResponse, post, web};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::app::Service;
use crate::auth::{AnySession, InlineSession};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, NoBody};
use crate::metrics::Metrics;
use crate::password_pool::PasswordPool;
use crate::request_context::{RequestClient, RequestUser};
use crate::routes::run;
use crate::wire::{
    ChallengeRequest, CodeSentResponse, FullTokenResponse, LoginRequest, LoginResponse, Method,
    VerifyRequest,
};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(login)
        .service(challenge)
        .service(verify)
        .service(logout);
}

/// Log in with email and password
///
/// Checks the password (argon2id) and opens a session in `orgId`, or in the
/// user's active membership with the lowest org id. The login decision:
/// a membership opted out of MFA gets `mfa: "none"`; else if the org
/// enforces MFA or the user opted in, a user with a verified factor gets
/// `challenge_required` and one without gets `setup_required` (or, during
/// the org's grace period, `none` with `setupDueAt`, and a session that
/// ends then at the latest); else `none`.
///
/// With `none` the token is full. Otherwise it is partial: valid 10
/// minutes, accepted only by the endpoints marked *partial ok*, elsewhere
/// `403 mfa_required`. A full token from `none` has verified no factor:
/// for a user who has one, changes of factors answer `403 mfa_required`
/// until a code is verified on it (`POST /user/auth/mfa/verify`).
///
/// Password failures count apart from code failures: after 5 in a row the
/// user is locked out of the password step (`429`, doubling from 30 s up to
/// 15 min; a success resets it).
#[utoipa::path(
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in; see `mfa` for what is still owed.", body = LoginResponse),
        (status = 401, description = "`invalid_credentials`: email or password wrong (the same answer, in similar time, for an unknown email).", body = ErrorBody),
        (status = 403, description = "`forbidden`: the membership is inactive, the user is no member of `orgId`, or has no active membership.", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: locked out after repeated wrong passwords; or the server's password checks are queued beyond `MFA_PASSWORD_QUEUE_MAX_WAIT_SECS` (10 s): nothing was checked, try again after `Retry-After`.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the next attempt may succeed."))),
    ),
    extensions(("x-session" = json!("none"))),
)]
#[post("/user/auth/login")]
pub async fn login(
    service: web::Data<Service>,
    metrics: web::Data<Metrics>,
    passwords: web::Data<PasswordPool>,
    user: RequestUser,
    client: RequestClient,
    body: Json<LoginRequest>,
) -> Result<web::Json<LoginResponse>, ApiError> {
    let LoginRequest {
        email,
        password,
        org_id,
    } = body.into_inner();
    let result = login_steps(
        service.into_inner(),
        &passwords,
        email,
        password,
        org_id.map(Into::into),
        client.0,
    )
    .await?;
    metrics.observe_login(&result);
    if let Ok(login) = &result {
        user.note(login.user_id);
    }
    Ok(web::Json(result?.into()))
}

/// A login in [`super::in_password_steps`]: the password's check alone
/// on the password threads.
async fn login_steps(
    service: std::sync::Arc<Service>,
    passwords: &PasswordPool,
    email: String,
    password: String,
    org: Option<mfa_core::OrgId>,
    client: Option<std::net::IpAddr>,
) -> Result<mfa_core::MfaResult<mfa_core::service::LoginResult>, ApiError> {
    let (checker, finisher) = (service.clone(), service.clone());
    super::in_password_steps(
        passwords,
        move || service.login_begin(&email, org, client),
        move |begun| checker.login_check(begun, &password),
        move |checked| checked.and_then(|checked| finisher.login_finish(checked)),
    )
    .await
}

/// A recovery code's check in [`super::in_password_steps`]: the attempt
/// counted and the codes read, argon2 on the password threads, then the
/// code used and the session made full.
async fn verify_recovery_steps(
    service: std::sync::Arc<Service>,
    passwords: &PasswordPool,
    caller: mfa_core::Caller,
    code: String,
) -> Result<Result<mfa_core::service::NewToken, ApiError>, ApiError> {
    let (checker, finisher, begun_by) = (service.clone(), service.clone(), caller.clone());
    let verified = super::in_password_steps(
        passwords,
        move || service.recovery_code_begin(&begun_by, &code),
        move |check| checker.check_recovery_code(check),
        move |checked| finisher.verify_recovery_code(&caller, checked),
    )
    .await?;
    Ok(verified.map_err(ApiError::from))
}

/// Email a login code
///
/// Sends a 6-digit code, valid 10 minutes, to the caller's verified email
/// factor; a new code voids the previous one. At most one code per 30 s
/// (`429` with `Retry-After`). Only `EMAIL` is accepted: authenticator and
/// recovery codes need no challenge (`400 invalid_request` otherwise).
#[utoipa::path(
    tag = "auth",
    request_body = ChallengeRequest,
    responses(
        (status = 200, description = "The code went out.", body = CodeSentResponse),
        (status = 409, description = "`not_enrolled`: the caller has no verified email factor.", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: a code was sent less than 30 s ago, or the user is locked out.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 503, description = "`mail_unavailable`: the mail server did not take the message, and no code is valid; or it took the message but did not confirm it in time (the message says so), and the code in it works if it arrives.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("partial"))),
)]
#[post("/user/auth/mfa/challenge")]
pub async fn challenge(
    service: web::Data<Service>,
    metrics: web::Data<Metrics>,
    AnySession(caller): AnySession,
    _body: Json<ChallengeRequest>,
) -> Result<web::Json<CodeSentResponse>, ApiError> {
    let service = service.into_inner();
    let result = web::block(move || service.send_login_code(&caller)).await?;
    metrics.observe_throttle(&result);
    Ok(web::Json(result?.into()))
}

/// Verify the second factor
///
/// Checks an authenticator code (current 30 s step or one either side; a
/// step once accepted is never accepted again), an emailed login code, or a
/// recovery code (single use). On success the caller's session is replaced
/// by a new full one: the answer carries the new token and the old token is
/// revoked at once.
///
/// A full session takes it too: one opened where no MFA was owed (an org
/// that does not enforce it, an opted-out membership) has verified no
/// factor, and must verify one before it changes the factors of a user
/// who has one (`403 mfa_required` until then).
///
/// After 5 failed verifications of any kind in a row the user is locked out
/// (`429`, doubling from 30 s up to 15 min); a success resets the count.
#[utoipa::path(
    tag = "auth",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "MFA complete: a new full token; the presented token is revoked.", body = FullTokenResponse),
        (status = 400, description = "`invalid_code`: the code did not verify (wrong, malformed, used, or replayed); `code_expired`: the email code expired; `invalid_request`: the body does not parse.", body = ErrorBody),
        (status = 409, description = "`not_enrolled`: the caller has no verified factor of that method, or, for `EMAIL`, no login code was sent (ask for one first; not counted as a failure); for `RECOVERY`, no verified authenticator or email factor for the code to stand in for (enroll one: the login said `setup_required`).", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: locked out after repeated failures; for a `RECOVERY` code, also when the server's password checks are queued beyond `MFA_PASSWORD_QUEUE_MAX_WAIT_SECS` (10 s): nothing was checked, try again after `Retry-After`.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the next attempt may succeed."))),
    ),
    extensions(("x-session" = json!("partial"))),
)]
#[post("/user/auth/mfa/verify")]
pub async fn verify(
    service: web::Data<Service>,
    metrics: web::Data<Metrics>,
    passwords: web::Data<PasswordPool>,
    session: InlineSession,
    user: RequestUser,
    // A body that does not parse is refused only once the session is
    // resolved: a bad token gets its 401 whatever the body.
    body: Result<Json<VerifyRequest>, actix_web::Error>,
) -> actix_web::Result<web::Json<FullTokenResponse>> {
    let VerifyRequest { method, code } = match body {
        Ok(body) => body.into_inner(),
        Err(refusal) => {
            run(move || session.resolve()).await?;
            return Err(refusal);
        }
    };
    // Recovery codes are argon2 hashes, checked on the password threads
    // apart from the database work around the check.
    let (result, replayed) = if method == Method::Recovery {
        let service = service.into_inner();
        let caller = run(move || session.resolve()).await?;
        (
            verify_recovery_steps(service, &passwords, caller, code).await?,
            false,
        )
    } else {
        // The token is resolved on the thread that verifies, one trip to
        // a pool per request; for a right authenticator code, in the same
        // read as the code's state (`verify_mfa_of_token`).
        let work = move || {
            let verified = session.resolve_with(
                |service, token, client| {
                    Ok(service.verify_mfa_of_token_noting_replay(
                        token,
                        method.into(),
                        &code,
                        client,
                    ))
                },
                // Noted below, also where the code was refused.
                |_| None,
            );
            match verified {
                Ok(verified) => {
                    if let Some(id) = verified.user {
                        user.note(id);
                    }
                    (verified.result.map_err(ApiError::from), verified.replayed)
                }
                Err(refusal) => (Err(refusal), false),
            }
        };
        web::block(work).await.map_err(ApiError::from)?
    };
    let result = match result {
        Ok(token) => Ok(token),
        Err(ApiError::Domain(refusal)) => Err(refusal),
        Err(other) => return Err(other.into()),
    };
    // (A token that is no good, `Unauthorized`, is not counted.)
    metrics.observe_verification(method, &result, replayed);
    Ok(web::Json(result.map_err(ApiError::from)?.into()))
}

/// Log out
///
/// Revokes the presented token (partial or full) at once.
#[utoipa::path(
    tag = "auth",
    responses((status = 204, description = "The token is revoked.")),
    extensions(("x-session" = json!("any"))),
)]
#[post("/user/auth/logout")]
pub async fn logout(
    service: web::Data<Service>,
    AnySession(caller): AnySession,
    _no_body: NoBody,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    run(move || service.logout(&caller)).await?;
    Ok(HttpResponse::NoContent().finish())
}

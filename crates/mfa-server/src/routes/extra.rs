//! Beyond the seeds: recovery codes and the audit trail.

use actix_web::{get, post, web};
use mfa_core::service::page_request;
use mfa_core::{AuditAction, AuditFilter};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::app::Service;
use crate::auth::FullSession;
use crate::error::{ApiError, ErrorBody};
use crate::extract::NoBody;
use crate::password_pool::PasswordPool;
use crate::routes::{run, run_hashing};
use crate::wire::{AuditEventResponse, AuditQuery, PageResponse, RecoveryCodesResponse};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(recovery_codes).service(audit);
}

/// Generate recovery codes
///
/// 10 single-use codes, shown once, stored only as argon2 hashes; they
/// replace any older set. A recovery code stands in for the second factor
/// at login (`POST /user/auth/mfa/verify` with `RECOVERY`) and allows a
/// partial session to reset a lost authenticator
/// (`POST /users/mfa/resetMyQRCodeEnroll`). Needs a verified authenticator
/// or email factor, and a session in which a factor was verified.
#[utoipa::path(
    tag = "mfa",
    responses(
        (status = 200, description = "The new codes; the old set is void.", body = RecoveryCodesResponse),
        (status = 403, description = "`mfa_required`: a partial token, or a full one that verified no factor (opened where no MFA was owed: `POST /user/auth/mfa/verify` on it first).", body = ErrorBody),
        (status = 409, description = "`not_enrolled`: no verified authenticator or email factor; `conflict`: another request made new codes meanwhile (a double click): the codes it answered are the valid ones, and these were not stored.", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: the server's password checks are queued beyond `MFA_PASSWORD_QUEUE_MAX_WAIT_SECS` (10 s): nothing was checked, try again after `Retry-After`; the old codes stay valid.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[post("/user/users/mfa/recoveryCodes")]
pub async fn recovery_codes(
    service: web::Data<Service>,
    passwords: web::Data<PasswordPool>,
    FullSession(caller): FullSession,
    _no_body: NoBody,
) -> Result<web::Json<RecoveryCodesResponse>, ApiError> {
    // The hashes on the password threads, the database work around them
    // on the blocking pool: a held lock never holds a hashing thread.
    let service = service.into_inner();
    let new = {
        let (service, caller) = (service.clone(), caller.clone());
        run(move || service.recovery_codes_begin(&caller)).await?
    };
    let hashed = {
        let service = service.clone();
        run_hashing(&passwords, move || service.hash_recovery_codes(new)).await?
    };
    let codes = run(move || service.recovery_codes_finish(&caller, hashed)).await?;
    Ok(web::Json(RecoveryCodesResponse { codes }))
}

/// The current org's audit trail
///
/// Admins of the current org: one page of the org's audit events, newest
/// first, optionally only those whose actor or target is `userId`, of
/// one `action`, at or after `from` and before `to` (RFC 3339 times:
/// "what happened last night"), from one `clientAddress`, or older than
/// the event `beforeId` (a cursor: paging by `page` repeats events when
/// new ones arrive between two requests; paging by `beforeId` does not).
/// Each event has the IP address its request came from. Every MFA-relevant change and every failed or locked-out
/// verification is an event. A change of a member's factors (enrolled,
/// reset, new recovery codes) or account (names, password) is in the
/// trail of each of the member's orgs, wherever it was made: made in
/// another org, its detail ends with `, in another org` and its
/// `actorUserId` is `null` unless the member made it. A confirmed email
/// change, made by its link and so in no org, is the same event in each.
#[utoipa::path(
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page of events.", body = PageResponse<AuditEventResponse>),
        (status = 403, description = "`forbidden`: not an admin of the current org.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[get("/user/audit")]
pub async fn audit(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    query: crate::extract::Query<AuditQuery>,
) -> Result<web::Json<PageResponse<AuditEventResponse>>, ApiError> {
    let AuditQuery {
        user_id,
        action,
        from,
        to,
        client_address,
        before_id,
        page,
        size,
    } = query.into_inner();
    let page = page_request(page, size)?;
    let action = action
        .map(|a| {
            AuditAction::parse(&a).ok_or_else(|| {
                ApiError::InvalidRequest("action is not a known audit action".into())
            })
        })
        .transpose()?;
    let time = |text: Option<String>, name: &str| {
        text.map(|t| {
            crate::wire::parse_rfc3339(&t).ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "{name} is not an RFC 3339 time with a zone, such as 2026-11-22T18:00:00Z"
                ))
            })
        })
        .transpose()
    };
    let (from, to) = (time(from, "from")?, time(to, "to")?);
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(ApiError::InvalidRequest("from must be before to".into()));
    }
    let client = client_address
        .map(|text| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| ip.to_canonical())
                .map_err(|_| {
                    ApiError::InvalidRequest(
                        "the clientAddress filter is not an IP address, such as 203.0.113.7 or 2001:db8::1"
                            .into(),
                    )
                })
        })
        .transpose()?;
    let filter = AuditFilter {
        user_id: user_id.map(Into::into),
        action,
        from: from.map(crate::wire::whole_second_from),
        to: to.map(crate::wire::whole_second_from),
        client,
        before_id: before_id.map(Into::into),
        ..AuditFilter::default()
    };
    let service = service.into_inner();
    let events = run(move || service.audit_events(&caller, filter, page)).await?;
    Ok(web::Json(PageResponse::from_page(events)))
}

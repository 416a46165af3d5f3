//! Orgs and memberships (seed 000's `org` list).

use actix_web::{HttpResponse, delete, get, post, put, web};
use mfa_core::service::OrgPatch;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::app::Service;
use crate::auth::FullSession;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, NoBody, OptionalJson};
use crate::routes::run;
use crate::wire::{
    AllOrgsQuery, MembershipFields, MembershipResponse, OrgCreateRequest, OrgMfaRequest,
    OrgResponse, OrgUpdateRequest, UrlId,
};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    // `/user/org/mfa` before `/user/org/{id}`: both answer PUT.
    cfg.service(set_org_mfa)
        .service(create_org)
        .service(get_org)
        .service(update_org)
        .service(delete_org)
        .service(add_member_by_email)
        .service(get_membership)
        .service(add_member)
        .service(remove_member);
}

/// Enforce MFA for the current org (seed)
///
/// `{"isMfaEnforced": true}` makes every member who is not opted out owe
/// MFA at their next login (sessions already full stay full); `false`
/// lifts it. With `?allOrgs=true` (superadmins only) every org of the
/// deployment changes at once, as the seed describes for a production
/// environment with several orgs. Each change is audited.
#[utoipa::path(
    tag = "orgs",
    request_body = OrgMfaRequest,
    params(AllOrgsQuery),
    responses(
        (status = 204, description = "Update success."),
        (status = 403, description = "`forbidden`: not an admin of the current org (or, with `allOrgs=true`, not a superadmin); `mfa_required`: partial token.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[put("/user/org/mfa")]
pub async fn set_org_mfa(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    query: crate::extract::Query<AllOrgsQuery>,
    body: Json<OrgMfaRequest>,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    let all_orgs = query.all_orgs;
    let enforced = body.is_mfa_enforced;
    run(move || service.set_mfa_enforced(&caller, enforced, all_orgs)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Add an org
///
/// Superadmins only. The new org enforces nothing and has no members; add
/// them with the membership routes.
#[utoipa::path(
    tag = "orgs",
    request_body = OrgCreateRequest,
    responses(
        (status = 201, description = "Created.", body = OrgResponse),
        (status = 403, description = "`forbidden`: not a superadmin.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[post("/user/org")]
pub async fn create_org(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    body: Json<OrgCreateRequest>,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    let name = body.into_inner().name;
    let org = run(move || service.create_org(&caller, &name)).await?;
    Ok(HttpResponse::Created().json(OrgResponse::from(org)))
}

/// Load an org
///
/// Active members of the org and superadmins; anyone else gets `404`.
#[utoipa::path(
    tag = "orgs",
    params(("id" = i64, Path, minimum = 1, description = "Org id.")),
    responses(
        (status = 200, description = "The org.", body = OrgResponse),
        (status = 404, description = "`not_found`: no such org visible to the caller.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[get("/user/org/{id}")]
pub async fn get_org(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    id: web::Path<UrlId>,
) -> Result<web::Json<OrgResponse>, ApiError> {
    let service = service.into_inner();
    let id = id.into_inner().into();
    let org = run(move || service.get_org(&caller, id)).await?;
    Ok(web::Json(org.into()))
}

/// Update an org
///
/// Admins of the org. Only the fields present change: `name`, and
/// `mfaGracePeriodHours` (0 to 8760): after enforcement, members without a
/// factor may still log in without MFA for that many hours (the login
/// answer carries `setupDueAt`, and such a session ends then at the
/// latest); after that, `setup_required`. An empty body changes nothing
/// and answers the org.
#[utoipa::path(
    tag = "orgs",
    params(("id" = i64, Path, minimum = 1, description = "Org id.")),
    request_body = OrgUpdateRequest,
    responses(
        (status = 200, description = "The updated org.", body = OrgResponse),
        (status = 403, description = "`forbidden`: a member but not an admin of the org, or an admin in a session of another org (admin rights count in the session's org only); `mfa_required`: partial token.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such org visible to the caller.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[put("/user/org/{id}")]
pub async fn update_org(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    id: web::Path<UrlId>,
    body: Json<OrgUpdateRequest>,
) -> Result<web::Json<OrgResponse>, ApiError> {
    let service = service.into_inner();
    let id = id.into_inner().into();
    let OrgUpdateRequest {
        name,
        mfa_grace_period_hours,
    } = body.into_inner();
    let patch = OrgPatch {
        name,
        mfa_grace_period_hours,
    };
    let org = run(move || service.update_org(&caller, id, &patch)).await?;
    Ok(web::Json(org.into()))
}

/// Delete an org
///
/// Superadmins only. The org's memberships go with it. The org of the
/// caller's own session cannot be deleted (`400 invalid_request`).
#[utoipa::path(
    tag = "orgs",
    params(("id" = i64, Path, minimum = 1, description = "Org id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 403, description = "`forbidden`: not a superadmin.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such org.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[delete("/user/org/{id}")]
pub async fn delete_org(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    id: web::Path<UrlId>,
    _no_body: NoBody,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    let id = id.into_inner().into();
    run(move || service.delete_org(&caller, id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Add a user to an org by email address
///
/// Admins of `orgId`, for a user they can see, as by id (a member of an org
/// they administer; superadmins see everyone): another org's user is
/// `404`, like an unknown address. The new membership is active with every
/// flag off.
#[utoipa::path(
    tag = "orgs",
    params(
        ("orgId" = i64, Path, minimum = 1, description = "Org id."),
        ("email" = String, Path, description = "The user's email address."),
    ),
    responses(
        (status = 201, description = "The new membership.", body = MembershipResponse),
        (status = 403, description = "`forbidden`: a member but not an admin of `orgId`, or an admin in a session of another org.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such org visible to the caller, or no such user visible to the caller.", body = ErrorBody),
        (status = 409, description = "`conflict`: the user is already a member.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[post("/user/org/{orgId}/email/user/{email}")]
pub async fn add_member_by_email(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    path: web::Path<(UrlId, String)>,
    _no_body: NoBody,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    let (org, email) = path.into_inner();
    let m = run(move || service.add_member_by_email(&caller, org.into(), &email)).await?;
    Ok(HttpResponse::Created().json(MembershipResponse::from(m)))
}

/// Load a user org membership
///
/// Admins of `orgId`, or the member themselves.
#[utoipa::path(
    tag = "orgs",
    params(
        ("orgId" = i64, Path, minimum = 1, description = "Org id."),
        ("userId" = i64, Path, minimum = 1, description = "User id."),
    ),
    responses(
        (status = 200, description = "The membership.", body = MembershipResponse),
        (status = 403, description = "`forbidden`: a member but not an admin of `orgId`, or an admin in a session of another org.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such org or membership visible to the caller.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[get("/user/org/{orgId}/user/{userId}")]
pub async fn get_membership(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    path: web::Path<(UrlId, UrlId)>,
) -> Result<web::Json<MembershipResponse>, ApiError> {
    let service = service.into_inner();
    let (org, user) = path.into_inner();
    let m = run(move || service.get_membership(&caller, org.into(), user.into())).await?;
    Ok(web::Json(m.into()))
}

/// Add a user to an org
///
/// Admins of `orgId`, for a user they can see (a member of an org they
/// administer; superadmins see everyone). The body is optional: membership
/// flags that differ from the defaults (active, everything else off).
#[utoipa::path(
    tag = "orgs",
    params(
        ("orgId" = i64, Path, minimum = 1, description = "Org id."),
        ("userId" = i64, Path, minimum = 1, description = "User id."),
    ),
    request_body(content = Option<MembershipFields>, description = "Optional membership flags."),
    responses(
        (status = 201, description = "The new membership.", body = MembershipResponse),
        (status = 403, description = "`forbidden`: a member but not an admin of `orgId`, or an admin in a session of another org.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such org or user visible to the caller.", body = ErrorBody),
        (status = 409, description = "`conflict`: the user is already a member.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[post("/user/org/{orgId}/user/{userId}")]
pub async fn add_member(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    path: web::Path<(UrlId, UrlId)>,
    body: OptionalJson<MembershipFields>,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    let (org, user) = path.into_inner();
    let patch = body.0.unwrap_or_default().into();
    let m = run(move || service.add_member(&caller, org.into(), user.into(), &patch)).await?;
    Ok(HttpResponse::Created().json(MembershipResponse::from(m)))
}

/// Remove a user from an org
///
/// Admins of `orgId`. The user's sessions in that org end at once. An org
/// admin cannot remove the org's last active admin, themselves included
/// (`409`); a superadmin can.
#[utoipa::path(
    tag = "orgs",
    params(
        ("orgId" = i64, Path, minimum = 1, description = "Org id."),
        ("userId" = i64, Path, minimum = 1, description = "User id."),
    ),
    responses(
        (status = 204, description = "Removed."),
        (status = 403, description = "`forbidden`: a member but not an admin of `orgId`, or an admin in a session of another org; or the member is a superadmin and the caller is not (only superadmins manage superadmins).", body = ErrorBody),
        (status = 404, description = "`not_found`: no such org or membership visible to the caller.", body = ErrorBody),
        (status = 409, description = "`conflict`: the member is the org's last active admin (org admins only).", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[delete("/user/org/{orgId}/user/{userId}")]
pub async fn remove_member(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    path: web::Path<(UrlId, UrlId)>,
    _no_body: NoBody,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    let (org, user) = path.into_inner();
    run(move || service.remove_member(&caller, org.into(), user.into())).await?;
    Ok(HttpResponse::NoContent().finish())
}

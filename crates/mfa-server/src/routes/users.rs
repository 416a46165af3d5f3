//! Users (seed 000's `user` list, seeds 001 and 003).

use actix_web::{HttpResponse, delete, get, post, put, web};
use mfa_core::UserId;
use mfa_core::service::{NewUserRequest, UserPatch, UserRef, page_request};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::app::Service;
use crate::auth::{AnySession, FullSession};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Json, NoBody, OptionalJson};
use crate::password_pool::PasswordPool;
use crate::request_context::RequestClient;
use crate::routes::{run, run_hashing};
use crate::wire::{
    ByRefQuery, CountsResponse, CreateUserRequest, EmailRequest, ExistsResponse, IdsQuery,
    MeResponse, MembershipFields, MembershipResponse, MfaOptInRequest, OrgUserResponse, PageQuery,
    PageResponse, PendingEmailResponse, ResendRequest, SessionsEndedResponse, TokenRequest,
    UpdateUserRequest, UrlId, UserDetailResponse, UserResponse, parse_url_id,
};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    // Literal segments before `/user/users/{id}`.
    cfg.service(create_user)
        .service(users_by_ids)
        .service(search_users)
        .service(me)
        .service(set_my_mfa)
        .service(membership_counts)
        .service(email_exists)
        .service(user_by_email)
        .service(org_admins)
        .service(join_org)
        .service(delete_from_all_orgs)
        .service(confirm_email_change)
        .service(resend_email_change)
        .service(get_user)
        .service(end_sessions)
        .service(update_user)
        .service(delete_user)
        .service(update_membership);
}

/// Add a new user
///
/// Admins of the current org. The user joins the current org (as its admin
/// with `isAdmin: true`). Passwords need 8 characters to 1024 bytes.
#[utoipa::path(
    tag = "users",
    request_body = CreateUserRequest,
    responses(
        (status = 201, description = "The new user.", body = UserResponse),
        (status = 403, description = "`forbidden`: not an admin of the current org.", body = ErrorBody),
        (status = 409, description = "`conflict`: a user with this email exists.", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: the server's password checks are queued beyond `MFA_PASSWORD_QUEUE_MAX_WAIT_SECS` (10 s): nothing was checked, try again after `Retry-After`.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[post("/user/users")]
pub async fn create_user(
    service: web::Data<Service>,
    passwords: web::Data<PasswordPool>,
    FullSession(caller): FullSession,
    body: Json<CreateUserRequest>,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    let CreateUserRequest {
        email,
        first_name,
        last_name,
        password,
        is_admin,
    } = body.into_inner();
    let request = NewUserRequest {
        email,
        first_name,
        last_name,
        password,
        is_admin,
    };
    // The checks of the input here (no IO, microseconds); the strength
    // estimate and the hash on the password threads; the transaction on
    // the blocking pool: a held lock never holds a hashing thread.
    let checked = service
        .create_user_begin(&caller, &request)
        .map_err(ApiError::from)?;
    let hashed = {
        let service = service.clone();
        run_hashing(&passwords, move || service.hash_new_user_password(checked)).await?
    };
    let user = run(move || service.create_user_finish(&caller, hashed)).await?;
    Ok(HttpResponse::Created().json(UserResponse::from(user)))
}

/// Retrieve a set of users by id
///
/// Admins. `?ids=1,2,3` (at most 200, required). Users outside the
/// caller's orgs (for an org admin: not members of the session's org; for
/// a superadmin, who administers every org: members of no org) and
/// unknown ids are left out; the answer is ordered by id.
#[utoipa::path(
    tag = "users",
    params(IdsQuery),
    responses(
        (status = 200, description = "The visible users among `ids`.", body = Vec<UserResponse>),
        (status = 403, description = "`forbidden`: not an admin of the current org.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[get("/user/users")]
pub async fn users_by_ids(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    query: crate::extract::Query<IdsQuery>,
) -> Result<web::Json<Vec<UserResponse>>, ApiError> {
    let ids = query.parse().map_err(ApiError::InvalidRequest)?;
    let service = service.into_inner();
    let users = run(move || service.users_by_ids(&caller, &ids)).await?;
    Ok(web::Json(
        users.into_iter().map(UserResponse::from).collect(),
    ))
}

/// Search the current org's users
///
/// Admins of the current org. Members (active or not) whose first name,
/// last name, email or full name ("first last") contains `search`,
/// case-insensitively (all without `search`), ordered by id.
#[utoipa::path(
    tag = "users",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of users, each with their membership of the org.", body = PageResponse<OrgUserResponse>),
        (status = 403, description = "`forbidden`: not an admin of the current org.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[get("/user/users/page")]
pub async fn search_users(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    query: crate::extract::Query<PageQuery>,
) -> Result<web::Json<PageResponse<OrgUserResponse>>, ApiError> {
    let PageQuery { search, page, size } = query.into_inner();
    let page = page_request(page, size)?;
    let service = service.into_inner();
    let found = run(move || service.search_users(&caller, search.as_deref(), page)).await?;
    Ok(web::Json(PageResponse::from_page(found)))
}

/// Who am I?
///
/// The caller, with every membership. Accepts a partial token, so that a
/// client can show who is logging in while MFA is still owed.
#[utoipa::path(
    tag = "users",
    responses((status = 200, description = "The caller.", body = MeResponse)),
    extensions(("x-session" = json!("partial"))),
)]
#[get("/user/users/me")]
pub async fn me(
    service: web::Data<Service>,
    AnySession(caller): AnySession,
) -> Result<web::Json<MeResponse>, ApiError> {
    let service = service.into_inner();
    let (user, memberships, pending) = run(move || {
        let (user, memberships) = service.me(&caller)?;
        let pending = service.pending_email(&caller, caller.user_id)?;
        Ok::<_, mfa_core::MfaError>((user, memberships, pending))
    })
    .await?;
    Ok(web::Json(MeResponse {
        user: user.into(),
        memberships: memberships
            .into_iter()
            .map(MembershipResponse::from)
            .collect(),
        pending_email: pending.map(PendingEmailResponse::from),
    }))
}

/// Opt in to MFA personally
///
/// `{"mfaOptIn": true}`: the caller owes MFA at every login, even in orgs
/// that do not enforce it (a membership's `mfaOptOut` still wins). Takes
/// effect at the next login. Opting out, for a user with a verified
/// factor, takes a session in which a factor was verified.
#[utoipa::path(
    tag = "users",
    request_body = MfaOptInRequest,
    responses(
        (status = 204, description = "Saved."),
        (status = 403, description = "`mfa_required`: `false` from a session that verified no factor, for a user who has one (`POST /user/auth/mfa/verify` on it first); or a partial token.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[put("/user/users/me/mfa")]
pub async fn set_my_mfa(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    body: Json<MfaOptInRequest>,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    let opt_in = body.mfa_opt_in;
    run(move || service.set_personal_opt_in(&caller, opt_in)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Membership counts of the current org (seed)
///
/// Admins of the current org. `licensed`: members not excluded from the
/// membership count; `enabled`: the active ones among them; `inactive`: the
/// inactive ones among them.
#[utoipa::path(
    tag = "users",
    responses(
        (status = 200, description = "The counts.", body = CountsResponse),
        (status = 403, description = "`forbidden`: not an admin of the current org.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[get("/user/users/retrieveNotExcludeFromMembershipUserCounts")]
pub async fn membership_counts(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
) -> Result<web::Json<CountsResponse>, ApiError> {
    let service = service.into_inner();
    let counts = run(move || service.membership_counts(&caller)).await?;
    Ok(web::Json(counts.into()))
}

/// Check if a user exists by email address (seed)
///
/// Admins. `true` only for users in the caller's orgs (for an org admin:
/// members of the session's org; for a superadmin, who administers every
/// org: members of any org; `POST /user/users/email` finds a user of
/// none); a malformed address is simply `false`.
#[utoipa::path(
    tag = "users",
    params(("email" = String, Path, description = "Email address.")),
    responses(
        (status = 200, description = "Whether the user exists for the caller.", body = ExistsResponse),
        (status = 403, description = "`forbidden`: not an admin of the current org.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[get("/user/users/email/{email}")]
pub async fn email_exists(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    email: web::Path<String>,
) -> Result<web::Json<ExistsResponse>, ApiError> {
    let service = service.into_inner();
    let email = email.into_inner();
    let exists = run(move || service.email_exists(&caller, &email)).await?;
    Ok(web::Json(ExistsResponse { exists }))
}

/// Load a user by email, whatever their orgs (seed)
///
/// Superadmins only.
#[utoipa::path(
    tag = "users",
    request_body = EmailRequest,
    responses(
        (status = 200, description = "The user.", body = UserResponse),
        (status = 403, description = "`forbidden`: not a superadmin.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[post("/user/users/email")]
pub async fn user_by_email(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    body: Json<EmailRequest>,
) -> Result<web::Json<UserResponse>, ApiError> {
    let service = service.into_inner();
    let email = body.into_inner().email;
    let user = run(move || service.user_by_email(&caller, &email)).await?;
    Ok(web::Json(user.into()))
}

/// The admins of an org (seed)
///
/// Superadmins only: the org's active admins, ordered by id.
#[utoipa::path(
    tag = "users",
    params(("orgId" = i64, Path, minimum = 1, description = "Org id.")),
    responses(
        (status = 200, description = "The admins.", body = Vec<UserResponse>),
        (status = 403, description = "`forbidden`: not a superadmin.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such org.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[get("/user/users/admins/{orgId}")]
pub async fn org_admins(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    org: web::Path<UrlId>,
) -> Result<web::Json<Vec<UserResponse>>, ApiError> {
    let service = service.into_inner();
    let org = org.into_inner().into();
    let admins = run(move || service.org_admins(&caller, org)).await?;
    Ok(web::Json(
        admins.into_iter().map(UserResponse::from).collect(),
    ))
}

/// Join an org as its admin (seed)
///
/// Superadmins only: the caller becomes an active admin of the org (an
/// existing membership is re-activated and made admin). Audited. Joining
/// an org the caller is an active admin of already answers `201` with
/// the membership as it is, and is not audited again.
#[utoipa::path(
    tag = "users",
    params(("orgId" = i64, Path, minimum = 1, description = "Org id.")),
    responses(
        (status = 201, description = "The caller's membership.", body = MembershipResponse),
        (status = 403, description = "`forbidden`: not a superadmin.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such org.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[post("/user/users/insert/{orgId}")]
pub async fn join_org(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    org: web::Path<UrlId>,
    _no_body: NoBody,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    let org = org.into_inner().into();
    let m = run(move || service.join_org(&caller, org)).await?;
    Ok(HttpResponse::Created().json(MembershipResponse::from(m)))
}

/// Remove a user from every org (seed)
///
/// Superadmins only. Removes the user, by email, from every org, active or
/// not, and ends their sessions; answers the org ids they were removed
/// from. The user record itself stays.
#[utoipa::path(
    tag = "users",
    params(("email" = String, Path, description = "The user's email address.")),
    responses(
        (status = 200, description = "The org ids the user was removed from.", body = Vec<i64>),
        (status = 403, description = "`forbidden`: not a superadmin.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[delete("/user/users/deleteFromAllOrgs/{email}")]
pub async fn delete_from_all_orgs(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    email: web::Path<String>,
    _no_body: NoBody,
) -> Result<web::Json<Vec<i64>>, ApiError> {
    let service = service.into_inner();
    let email = email.into_inner();
    let orgs = run(move || service.delete_from_all_orgs(&caller, &email)).await?;
    Ok(web::Json(orgs.into_iter().map(|o| o.0).collect()))
}

/// Confirm an email change (seed)
///
/// Anyone holding the single-use token mailed to the new address (valid
/// 24 h). The new address takes effect; the email factor, if any, must be
/// verified again at the new address.
#[utoipa::path(
    tag = "users",
    request_body = TokenRequest,
    responses(
        (status = 204, description = "The new address is in effect."),
        (status = 400, description = "`invalid_code`: unknown or used token; `code_expired`: expired token (audited `email_change_refused`); `invalid_request`: the body does not parse.", body = ErrorBody),
        (status = 409, description = "`conflict`: another account took the new address after the request; the token is used up (audited `email_change_refused`).", body = ErrorBody),
    ),
    extensions(("x-session" = json!("none"))),
)]
#[post("/user/users/email/confirmChange")]
pub async fn confirm_email_change(
    service: web::Data<Service>,
    client: RequestClient,
    body: Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    let token = body.into_inner().token;
    run(move || service.confirm_email_change(&token, client.0)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Resend an email change confirmation (seed)
///
/// Self, or an admin of the session's org when the user is an active
/// member of it (or a superadmin). The contract does not name the user:
/// the optional body `{"userId": N}` does, and without it the caller's own
/// pending change is meant. A new token goes to the new address; the old
/// token is void once the new one was mailed (if it cannot be, the old one
/// still holds).
#[utoipa::path(
    tag = "users",
    request_body(content = Option<ResendRequest>, description = "Optional: whose change to resend (default: the caller)."),
    responses(
        (status = 204, description = "The confirmation was sent again."),
        (status = 404, description = "`not_found`: no such user visible to the caller, or no pending email change.", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: a confirmation went to this user's new address less than 30 s ago (one per 30 s per user, as email codes); `Retry-After` says when to ask again.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 503, description = "`mail_unavailable`: the mail server did not take the message; the change stays pending, and the token sent before still holds.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[post("/user/users/email/resendChangeConfirmation")]
pub async fn resend_email_change(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    body: OptionalJson<ResendRequest>,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    let user = body
        .0
        .and_then(|b| b.user_id)
        .map_or(caller.user_id, UserId::from);
    run(move || service.resend_email_change(&caller, user)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Load a user
///
/// Self, an admin of the session's org when the user belongs to it (active
/// or not), or a superadmin; anyone else gets `404`.
#[utoipa::path(
    tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "User id.")),
    responses(
        (status = 200, description = "The user, with an email change waiting for its confirmation.", body = UserDetailResponse),
        (status = 404, description = "`not_found`: no such user visible to the caller.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[get("/user/users/{id}")]
pub async fn get_user(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    id: web::Path<UrlId>,
) -> Result<web::Json<UserDetailResponse>, ApiError> {
    let service = service.into_inner();
    let id = id.into_inner().into();
    let (user, pending) = run(move || {
        let user = service.get_user(&caller, id)?;
        let pending = service.pending_email(&caller, id)?;
        Ok::<_, mfa_core::MfaError>((user, pending))
    })
    .await?;
    Ok(web::Json(UserDetailResponse {
        user: user.into(),
        pending_email: pending.map(PendingEmailResponse::from),
    }))
}

/// Sign a user out everywhere
///
/// Ends sessions without touching factors: a laptop left signed in, a
/// session that should not be (a lost phone is a reset instead). The user
/// themselves ends every session but the one making the call; an admin of
/// the current org ends all sessions of an active member of it, in every
/// org, under a reset's rules (only a superadmin signs a superadmin out;
/// an admin with a factor must have verified it in this session). Each
/// org of the user audits it as `sessions_ended` (a user's own call that
/// ended nothing writes no event). The answer says how many sessions
/// ended.
#[utoipa::path(
    tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "User id.")),
    responses(
        (status = 200, description = "How many sessions ended.", body = SessionsEndedResponse),
        (status = 403, description = "`forbidden`: neither the user nor an admin of the current org, or the user is a superadmin (only superadmins manage superadmins). `mfa_required`: the admin has a verified factor and this session verified none (`POST /user/auth/mfa/verify` on it first).", body = ErrorBody),
        (status = 404, description = "`not_found`: no such active member of the current org.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[post("/user/users/{id}/logout")]
pub async fn end_sessions(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    id: web::Path<UrlId>,
    _body: NoBody,
) -> Result<web::Json<SessionsEndedResponse>, ApiError> {
    let service = service.into_inner();
    let id = id.into_inner().into();
    let ended = run(move || service.end_sessions(&caller, id)).await?;
    Ok(web::Json(SessionsEndedResponse {
        sessions_ended: ended,
    }))
}

/// Update a user
///
/// Self, an admin of the session's org when the user is an active member
/// of it, or a superadmin (a member the org deactivated is `404` to its
/// admins). Only the fields present change. A new `email` does not take effect at once: a
/// single-use confirmation token (valid 24 h) goes to the new address and
/// a notice to the old one; until confirmed, codes keep going to the old
/// address. Users changing their own email or password must also send
/// `currentPassword` (`400 invalid_request` without it, and for a new
/// password that is the same). A password set by an admin ends the user's sessions;
/// set by the user, it ends their other sessions.
#[utoipa::path(
    tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "User id.")),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "The user (with the old email until a change is confirmed), and the email change waiting for its confirmation (`pendingEmail`, as `GET /user/users/{id}` answers).", body = UserDetailResponse),
        (status = 401, description = "`invalid_credentials`: `currentPassword` wrong for a self-service email or password change; `unauthorized`: no valid token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: the user is a superadmin and the caller is not (only superadmins manage superadmins); or `password` or `email` of a user who belongs to another org too, set by an org admin (only the user or a superadmin sets them). `mfa_required`: a new `email` or `password` of one's own, from a session that verified no factor, for a user who has one (a confirmed change of email removes the email factor, and a new password would lock the owner out of every org: `POST /user/auth/mfa/verify` on it first).", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user the caller may change (another org's, or deactivated in the caller's org).", body = ErrorBody),
        (status = 409, description = "`conflict`: the new email is taken.", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`: a new `email` less than 30 s after the last confirmation mail to this user (one per 30 s per user, as email codes); or the user's password is locked out after repeated wrong passwords (a wrong `currentPassword` counts as a wrong login password); or, with `password` or `currentPassword`, the server's password checks are queued beyond `MFA_PASSWORD_QUEUE_MAX_WAIT_SECS` (10 s). Nothing changed; `Retry-After` says when to ask again.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 503, description = "`mail_unavailable`: the confirmation could not be sent; nothing in the request was changed (the new email is sent for first, alone, and the other fields are changed only once its link went out).", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[put("/user/users/{id}")]
pub async fn update_user(
    service: web::Data<Service>,
    passwords: web::Data<PasswordPool>,
    FullSession(caller): FullSession,
    id: web::Path<UrlId>,
    body: Json<UpdateUserRequest>,
) -> Result<web::Json<UserDetailResponse>, ApiError> {
    let service = service.into_inner();
    let id = id.into_inner().into();
    let UpdateUserRequest {
        first_name,
        last_name,
        email,
        password,
        current_password,
    } = body.into_inner();
    let patch = UserPatch {
        first_name,
        last_name,
        email,
        password,
        current_password,
    };
    // The passwords on the password threads, the database work before
    // and after on the blocking pool: a held lock never holds a hashing
    // thread.
    let begun = {
        let (service, caller) = (service.clone(), caller.clone());
        run(move || service.update_user_begin(&caller, id, &patch)).await?
    };
    let checked = {
        let service = service.clone();
        if begun.hashes() {
            run_hashing(&passwords, move || service.update_user_check(begun)).await?
        } else {
            service.update_user_check(begun).map_err(ApiError::from)?
        }
    };
    let user = {
        let (service, caller) = (service.clone(), caller.clone());
        run(move || service.update_user_finish(&caller, checked)).await?
    };
    // The change just asked for shows at once: otherwise a client saw it
    // pending only at its next read.
    let pending = run(move || service.pending_email(&caller, id)).await?;
    Ok(web::Json(UserDetailResponse {
        user: user.into(),
        pending_email: pending.map(PendingEmailResponse::from),
    }))
}

/// Delete a user
///
/// Superadmins only, and not themselves (`400 invalid_request`). The user
/// goes with their memberships, factors and sessions.
#[utoipa::path(
    tag = "users",
    params(("id" = i64, Path, minimum = 1, description = "User id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 403, description = "`forbidden`: not a superadmin.", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user.", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[delete("/user/users/{id}")]
pub async fn delete_user(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    id: web::Path<UrlId>,
    _no_body: NoBody,
) -> Result<HttpResponse, ApiError> {
    let service = service.into_inner();
    let id = id.into_inner().into();
    run(move || service.delete_user(&caller, id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Update a user's membership of the current org (seed)
///
/// Admins of the current org. Any subset of the flags; only the fields
/// present change. `{"mfaOptOut": true}` exempts the member from the org's
/// MFA enforcement, `false` subjects them to it again (next login).
/// Deactivation (`isActive: false`) ends the member's sessions in the org.
/// An org admin cannot demote or deactivate the org's last active admin,
/// themselves included (`409`); a superadmin can.
/// With `byRef=true` the `{id}` of the path is the user's email address;
/// otherwise it must be a positive integer id.
#[utoipa::path(
    tag = "users",
    params(
        ("id" = String, Path, description = "User id, or with `byRef=true` the user's email address."),
        ByRefQuery,
    ),
    request_body = MembershipFields,
    responses(
        (status = 204, description = "Update success."),
        (status = 403, description = "`forbidden`: not an admin of the current org, or the member is a superadmin (only superadmins manage superadmins).", body = ErrorBody),
        (status = 404, description = "`not_found`: no such member of the current org.", body = ErrorBody),
        (status = 409, description = "`conflict`: the change would leave the org without an active admin (org admins only).", body = ErrorBody),
    ),
    extensions(("x-session" = json!("full"))),
)]
#[put("/user/users/{id}/membership")]
pub async fn update_membership(
    service: web::Data<Service>,
    FullSession(caller): FullSession,
    id: web::Path<String>,
    query: crate::extract::Query<ByRefQuery>,
    body: Json<MembershipFields>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let target = if query.by_ref {
        UserRef::Email(id)
    } else {
        match parse_url_id(&id) {
            Some(v) => UserRef::Id(UserId(v)),
            None => {
                return Err(ApiError::InvalidRequest(
                    "the path is not valid: ids are positive integers (use byRef=true for an email)"
                        .into(),
                ));
            }
        }
    };
    let patch = body.into_inner().into();
    let service = service.into_inner();
    run(move || service.update_membership(&caller, &target, &patch)).await?;
    Ok(HttpResponse::NoContent().finish())
}

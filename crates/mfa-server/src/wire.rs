//! The JSON of the API: request and response types, and explicit
//! conversions from domain types.
//!
//! Every request body type has `deny_unknown_fields` and camelCase names;
//! query types deny unknown parameters too (a misspelt `allOrgs` must not
//! silently mean "the current org only"). Response types are built from
//! domain values field by field, so a password hash, a TOTP secret or a
//! code can only reach the wire where a type names it on purpose (the
//! pending secret of `generateTempSecret`, the recovery codes shown once).

use mfa_core::service::{CodeSent, LoginResult, MfaStatus, NewToken, PendingAuthenticator};
use mfa_core::service::{PendingEmail, UserWithFactors};
use mfa_core::{AuditEvent, LoginDecision, Membership, MembershipCounts, MembershipPatch};
use mfa_core::{MfaMethod, MfaRequirement, Org, Page, Timestamp};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

/// A time as RFC 3339 in UTC, e.g. `2026-11-22T10:00:00Z`.
pub fn rfc3339(ts: Timestamp) -> String {
    // Timestamps come from the clock and the database: always in range. An
    // impossible one shows as the epoch rather than failing the answer.
    OffsetDateTime::from_unix_timestamp(ts.0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// An RFC 3339 time of a query (`from`, `to`), with its zone; `None` for
/// anything else.
pub fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// The first whole second at or after `t`: stored times are whole seconds,
/// so a bound with a fraction (`…:36.5Z`) lies between two of them (an
/// event at `…:36Z` is before it, one at `…:37Z` after it).
pub fn whole_second_from(t: OffsetDateTime) -> Timestamp {
    Timestamp(t.unix_timestamp() + i64::from(t.nanosecond() > 0))
}

// ---------------------------------------------------------------- ids

/// An id in a JSON body: a positive integer. Zero, negative numbers and
/// anything that is not an integer (a string too) are `400 invalid_request`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Id(pub i64);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const NOT_AN_ID: &str = "ids are positive integers (1, 2, ...)";
        struct IdVisitor;
        impl serde::de::Visitor<'_> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a positive integer id")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Id, E> {
                if v > 0 {
                    Ok(Id(v))
                } else {
                    Err(E::custom(NOT_AN_ID))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Id, E> {
                i64::try_from(v)
                    .map_err(|_| E::custom(NOT_AN_ID))
                    .and_then(|v| self.visit_i64(v))
            }
            // A number too large for an integer reads as one with a
            // fraction: said as what it is not (it read "invalid type:
            // floating point, expected i64").
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Id, E> {
                Err(E::custom(NOT_AN_ID))
            }
        }
        d.deserialize_i64(IdVisitor)
    }
}

/// An id written in a path or a query: decimal digits without a sign, a
/// leading zero or spaces. Each id has one spelling there, so that a rule a
/// proxy or a cache keys on the path (`/user/users/3`) cannot be passed by
/// another spelling of it (`/user/users/03`, `/user/users/+3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UrlId(pub i64);

/// The id `text` spells in a URL, if it is one.
pub fn parse_url_id(text: &str) -> Option<i64> {
    let canonical = text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    // Empty text and overflow fail the parse.
    canonical.then(|| text.parse().ok()).flatten()
}

impl<'de> Deserialize<'de> for UrlId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct UrlIdVisitor;
        impl serde::de::Visitor<'_> for UrlIdVisitor {
            type Value = UrlId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a positive integer id")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<UrlId, E> {
                parse_url_id(text).map(UrlId).ok_or_else(|| {
                    E::custom("ids are positive integers written as digits (1, 2, ...)")
                })
            }
        }
        d.deserialize_str(UrlIdVisitor)
    }
}

impl From<UrlId> for mfa_core::UserId {
    fn from(id: UrlId) -> Self {
        mfa_core::UserId(id.0)
    }
}

impl From<UrlId> for mfa_core::OrgId {
    fn from(id: UrlId) -> Self {
        mfa_core::OrgId(id.0)
    }
}

impl From<UrlId> for mfa_core::AuditEventId {
    fn from(id: UrlId) -> Self {
        mfa_core::AuditEventId(id.0)
    }
}

impl PartialSchema for Id {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            .description(Some("A positive integer id."))
            .into()
    }
}

impl ToSchema for Id {}

impl From<Id> for mfa_core::UserId {
    fn from(id: Id) -> Self {
        mfa_core::UserId(id.0)
    }
}

impl From<Id> for mfa_core::OrgId {
    fn from(id: Id) -> Self {
        mfa_core::OrgId(id.0)
    }
}

// ---------------------------------------------------------------- enums

/// A second-factor method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// TOTP authenticator app.
    Authenticator,
    /// Code sent by email.
    Email,
    /// Single-use recovery code.
    Recovery,
}

impl From<MfaMethod> for Method {
    fn from(m: MfaMethod) -> Self {
        match m {
            MfaMethod::Authenticator => Method::Authenticator,
            MfaMethod::Email => Method::Email,
            MfaMethod::Recovery => Method::Recovery,
        }
    }
}

impl From<Method> for MfaMethod {
    fn from(m: Method) -> Self {
        match m {
            Method::Authenticator => MfaMethod::Authenticator,
            Method::Email => MfaMethod::Email,
            Method::Recovery => MfaMethod::Recovery,
        }
    }
}

/// The only method whose codes are sent on request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum EmailMethod {
    /// Code sent by email.
    Email,
}

/// Seed 004's `mfatype` for the authenticator routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthenticatorType {
    /// TOTP authenticator app.
    Authenticator,
}

/// Seed 004's `mfatype` for the email routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum EmailType {
    /// Code sent by email.
    Email,
}

/// What a session still owes after a password login.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MfaState {
    /// Nothing: the token is full.
    None,
    /// No verified factor yet: the partial token may enroll one.
    SetupRequired,
    /// Present a code of one of `methods`.
    ChallengeRequired,
}

impl From<MfaRequirement> for MfaState {
    fn from(r: MfaRequirement) -> Self {
        match r {
            MfaRequirement::None => MfaState::None,
            MfaRequirement::SetupRequired => MfaState::SetupRequired,
            MfaRequirement::ChallengeRequired => MfaState::ChallengeRequired,
        }
    }
}

/// `"ok"`.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OkStatus {
    /// Done.
    Ok,
}

// ---------------------------------------------------------------- requests

/// `POST /user/auth/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoginRequest {
    /// Login email (case-insensitive).
    pub email: String,
    /// Password.
    pub password: String,
    /// The org to log into; default: the active membership with the lowest
    /// org id.
    #[serde(default)]
    pub org_id: Option<Id>,
}

/// `POST /user/auth/mfa/challenge`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChallengeRequest {
    /// Only `EMAIL`: authenticator and recovery codes need no challenge.
    pub method: EmailMethod,
}

/// `POST /user/auth/mfa/verify`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerifyRequest {
    /// Which factor the code belongs to.
    pub method: Method,
    /// The code: exactly 6 ASCII digits for `AUTHENTICATOR` and `EMAIL`; a
    /// recovery code as shown (dashes optional) for `RECOVERY`.
    pub code: String,
}

/// `POST /user/org`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OrgCreateRequest {
    /// 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
}

/// `PUT /user/org/{id}`: only the fields present change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OrgUpdateRequest {
    /// 1 to 200 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// 0 to 8760 hours: after enforcement, members without a factor may
    /// log in without MFA this long (`setupDueAt` in the login answer).
    #[serde(default)]
    #[schema(maximum = 8760)]
    pub mfa_grace_period_hours: Option<u32>,
}

/// `PUT /user/org/mfa` (seed 000).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"isMfaEnforced": true}))]
pub struct OrgMfaRequest {
    /// `true` enforces MFA at the next login of every member not opted
    /// out; `false` lifts enforcement.
    pub is_mfa_enforced: bool,
}

/// Membership flags; only the fields present change (or, on creation,
/// differ from the defaults: active, everything else off).
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"mfaOptOut": true}))]
pub struct MembershipFields {
    /// An inactive membership cannot log in; deactivation ends the
    /// member's sessions in the org.
    #[serde(default)]
    pub is_active: Option<bool>,
    /// Admin of the org.
    #[serde(default)]
    pub is_admin: Option<bool>,
    /// Carried for the seed API; no MFA meaning.
    #[serde(default)]
    pub all_access: Option<bool>,
    /// Exempt from the org's MFA enforcement (next login).
    #[serde(default)]
    pub mfa_opt_out: Option<bool>,
    /// Not counted as a licensed user.
    #[serde(default)]
    pub exclude_from_membership_count: Option<bool>,
    /// Carried for the seed API; no MFA meaning.
    #[serde(default)]
    pub has_advanced_permissions: Option<bool>,
}

impl From<MembershipFields> for MembershipPatch {
    fn from(f: MembershipFields) -> Self {
        MembershipPatch {
            is_active: f.is_active,
            is_admin: f.is_admin,
            all_access: f.all_access,
            mfa_opt_out: f.mfa_opt_out,
            exclude_from_membership_count: f.exclude_from_membership_count,
            has_advanced_permissions: f.has_advanced_permissions,
        }
    }
}

/// `POST /user/users`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateUserRequest {
    /// Login and mail address; unique; at most 254 characters.
    #[schema(max_length = 254)]
    pub email: String,
    /// Given name: 1 to 100 characters (leading and trailing spaces are
    /// dropped).
    #[schema(min_length = 1, max_length = 100)]
    pub first_name: String,
    /// Family name: 1 to 100 characters, as the given name.
    #[schema(min_length = 1, max_length = 100)]
    pub last_name: String,
    /// Initial password: 8 characters to 1024 bytes of UTF-8 (the byte
    /// bound has no JSON Schema keyword: `maxLength` counts characters).
    #[schema(min_length = 8)]
    pub password: String,
    /// Admin of the current org (default false).
    #[serde(default)]
    pub is_admin: bool,
}

/// `PUT /user/users/{id}`: only the fields present change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateUserRequest {
    /// Given name: 1 to 100 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100)]
    pub first_name: Option<String>,
    /// Family name: 1 to 100 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100)]
    pub last_name: Option<String>,
    /// New address: takes effect only when confirmed through the token
    /// mailed to it (`POST /user/users/email/confirmChange`). At most 254
    /// characters.
    #[serde(default)]
    #[schema(max_length = 254)]
    pub email: Option<String>,
    /// New password. Set by an admin, it ends the user's sessions; set by
    /// the user, it ends their other sessions. 8 characters to 1024 bytes
    /// of UTF-8.
    #[serde(default)]
    #[schema(min_length = 8)]
    pub password: Option<String>,
    /// The caller's current password: required when users change their own
    /// email or password (`401 invalid_credentials` when wrong or absent).
    #[serde(default)]
    pub current_password: Option<String>,
}

/// `PUT /user/users/me/mfa`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MfaOptInRequest {
    /// Ask for MFA at every login even where no org enforces it.
    pub mfa_opt_in: bool,
}

/// A body with one email address.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EmailRequest {
    /// Email address.
    pub email: String,
}

/// `POST /user/users/email/confirmChange`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenRequest {
    /// The token from the confirmation email.
    pub token: String,
}

/// `POST /user/users/email/resendChangeConfirmation` (optional body).
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResendRequest {
    /// Whose pending change to resend; default: the caller.
    #[serde(default)]
    pub user_id: Option<Id>,
}

/// `PUT /user/users/mfa/reset` (seed 000).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"ids": [12, 13]}))]
pub struct ResetRequest {
    /// Users of the current org, 1 to 10 000 ids.
    #[schema(min_items = 1, max_items = 10000)]
    pub ids: Vec<Id>,
}

/// `POST /user/users/mfa/validateCode` (seed 000).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"code": "123456"}))]
pub struct CodeRequest {
    /// The current code of the authenticator app: 6 ASCII digits.
    pub code: String,
}

/// `PUT /users/mfa/verifyQRCodeEnroll` (seed 004).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"mfatype": "AUTHENTICATOR", "totp": "331425"}))]
pub struct QrVerifyRequest {
    /// `AUTHENTICATOR`.
    pub mfatype: AuthenticatorType,
    /// The current code of the authenticator app: 6 ASCII digits.
    pub totp: String,
}

/// `PUT /oauth/users/mfa/verifyEmail` (seed 004).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"mfatype": "EMAIL", "totp": "786416"}))]
pub struct EmailVerifyRequest {
    /// `EMAIL`.
    pub mfatype: EmailType,
    /// The code from the email: 6 ASCII digits.
    pub totp: String,
}

/// `POST /users/mfa/resetMyQRCodeEnroll` (seed 004, optional body).
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RecoveryResetRequest {
    /// Needed on a partial session: a recovery code proves the second
    /// factor when the authenticator is lost. Ignored on a full session.
    #[serde(default)]
    pub recovery_code: Option<String>,
}

// ---------------------------------------------------------------- queries

/// `?ids=1,2,3`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IdsQuery {
    /// Positive ids, comma-separated (`ids=1,2,3`), at most 200.
    #[param(value_type = Vec<i64>, style = Form, explode = false, min_items = 1, max_items = 200)]
    pub ids: String,
}

/// Most ids in `?ids=`.
pub const MAX_QUERY_IDS: usize = 200;

impl IdsQuery {
    /// The ids, or why not.
    pub fn parse(&self) -> Result<Vec<mfa_core::UserId>, String> {
        let ids: Vec<mfa_core::UserId> = self
            .ids
            .split(',')
            .map(|s| {
                parse_url_id(s)
                    .map(mfa_core::UserId)
                    .ok_or_else(|| "ids must be comma-separated positive integers".to_string())
            })
            .collect::<Result<_, _>>()?;
        if ids.len() > MAX_QUERY_IDS {
            return Err(format!("at most {MAX_QUERY_IDS} ids per request"));
        }
        Ok(ids)
    }
}

/// Paging: `?page=0&size=20`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Case-insensitive substring of first name, last name, email or full
    /// name ("first last": `Mary Mem` finds Mary Member). At most 254
    /// characters.
    #[serde(default)]
    #[param(max_length = 254)]
    pub search: Option<String>,
    /// 0-based page number (default 0).
    #[serde(default)]
    #[param(maximum = 2147483647)]
    pub page: u32,
    /// Items per page, 1 to 200 (default 20).
    #[serde(default = "default_size")]
    #[param(minimum = 1, maximum = 200)]
    pub size: u32,
}

fn default_size() -> u32 {
    20
}

/// `?allOrgs=true`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct AllOrgsQuery {
    /// Superadmins only: every org of the deployment at once.
    #[serde(default)]
    pub all_orgs: bool,
}

/// `?byRef=false`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct ByRefQuery {
    /// `true`: the `{id}` of the path is the user's email address.
    #[serde(default)]
    pub by_ref: bool,
}

/// Filter and paging of the audit trail.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct AuditQuery {
    /// Only events whose actor or target is this user.
    #[serde(default)]
    #[param(value_type = Option<i64>, minimum = 1)]
    pub user_id: Option<UrlId>,
    /// Only this action, e.g. `mfa_reset`, `mfa_verify_failed`,
    /// `locked_out` (the snake_case names of the audit actions).
    #[serde(default)]
    pub action: Option<String>,
    /// Only events at or after this time, RFC 3339 with a zone
    /// (`2026-11-22T18:00:00Z`, `2026-11-22T19:00:00+01:00`).
    #[serde(default)]
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// Only events before this time, as `from`; after `from` when both
    /// are given.
    #[serde(default)]
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
    /// Only events of requests from this IP address (`203.0.113.7`,
    /// `2001:db8::1`; an IPv4-mapped IPv6 address is its IPv4 address).
    #[serde(default)]
    pub client_address: Option<String>,
    /// Only events older than this event id: a cursor. To page back
    /// through the trail without repeating events written meanwhile, ask
    /// again with the last id of the page before and `page` 0.
    #[serde(default)]
    #[param(value_type = Option<i64>, minimum = 1)]
    pub before_id: Option<UrlId>,
    /// 0-based page number (default 0).
    #[serde(default)]
    #[param(maximum = 2147483647)]
    pub page: u32,
    /// Items per page, 1 to 200 (default 20).
    #[serde(default = "default_size")]
    #[param(minimum = 1, maximum = 200)]
    pub size: u32,
}

/// `?mfatype=AUTHENTICATOR` (seed 004).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuthenticatorTypeQuery {
    /// `AUTHENTICATOR`; anything else, or nothing, is `400 invalid_request`.
    #[param(inline)]
    pub mfatype: AuthenticatorType,
}

/// `?mfatype=EMAIL` (seed 004).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EmailTypeQuery {
    /// `EMAIL`; anything else, or nothing, is `400 invalid_request`.
    #[param(inline)]
    pub mfatype: EmailType,
}

// ---------------------------------------------------------------- responses

/// The answer to a password login.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    /// The bearer token: full when `mfa` is `none`, else partial (10 min,
    /// accepted only by the endpoints marked *partial ok*).
    pub token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// End of the session.
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The session's org: the current org of every call with this token.
    pub org_id: i64,
    /// What the session still owes.
    pub mfa: MfaState,
    /// Methods to enroll (`setup_required`) or to present
    /// (`challenge_required`); empty for `none`.
    pub methods: Vec<Method>,
    /// During an org's enrollment grace period: when MFA setup becomes
    /// required. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub setup_due_at: Option<String>,
}

impl From<LoginResult> for LoginResponse {
    fn from(r: LoginResult) -> Self {
        let LoginDecision {
            requirement,
            methods,
            setup_due_at,
        } = r.decision;
        LoginResponse {
            token: r.token,
            token_type: "Bearer",
            expires_at: rfc3339(r.expires_at),
            org_id: r.org_id.0,
            mfa: requirement.into(),
            methods: methods.into_iter().map(Method::from).collect(),
            setup_due_at: setup_due_at.map(rfc3339),
        }
    }
}

/// Where an emailed code went.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CodeSentResponse {
    /// The address, masked: `a***@example.com`.
    pub sent_to: String,
    /// End of the code's validity.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

impl From<CodeSent> for CodeSentResponse {
    fn from(c: CodeSent) -> Self {
        CodeSentResponse {
            sent_to: c.sent_to,
            expires_at: rfc3339(c.expires_at),
        }
    }
}

/// A new full token after MFA on a partial session; the partial token is
/// revoked.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FullTokenResponse {
    /// Always `none`: nothing more is owed.
    pub mfa: MfaState,
    /// The new full bearer token.
    pub token: String,
    /// End of the new session.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

impl From<NewToken> for FullTokenResponse {
    fn from(t: NewToken) -> Self {
        FullTokenResponse {
            mfa: MfaState::None,
            token: t.token,
            expires_at: rfc3339(t.expires_at),
        }
    }
}

/// `{"status": "ok"}`.
#[derive(Serialize, ToSchema)]
pub struct StatusResponse {
    /// `ok`.
    pub status: OkStatus,
}

impl StatusResponse {
    /// `{"status": "ok"}`.
    pub const OK: StatusResponse = StatusResponse {
        status: OkStatus::Ok,
    };
}

/// The 200 answer of seed 004's verification routes: `{"status": "ok"}` on
/// a full session, the new full token on a partial one.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum EnrollResponse {
    /// Full session: done.
    Done(StatusResponse),
    /// Partial session: MFA is complete; use the new token.
    Upgraded(FullTokenResponse),
}

impl From<Option<NewToken>> for EnrollResponse {
    fn from(t: Option<NewToken>) -> Self {
        match t {
            Some(t) => EnrollResponse::Upgraded(t.into()),
            None => EnrollResponse::Done(StatusResponse::OK),
        }
    }
}

/// The answer of `enrollEmail`: the code went out.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailEnrollResponse {
    /// `ok`.
    pub status: OkStatus,
    /// The address, masked.
    pub sent_to: String,
    /// End of the code's validity.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

impl From<CodeSent> for EmailEnrollResponse {
    fn from(c: CodeSent) -> Self {
        EmailEnrollResponse {
            status: OkStatus::Ok,
            sent_to: c.sent_to,
            expires_at: rfc3339(c.expires_at),
        }
    }
}

/// An org.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrgResponse {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Whether members (not opted out) owe MFA at login.
    pub is_mfa_enforced: bool,
    /// When enforcement was last switched on; null if never.
    #[schema(format = DateTime, required = true)]
    pub mfa_enforced_at: Option<String>,
    /// Enrollment grace period after enforcement, in hours (0: none).
    pub mfa_grace_period_hours: u32,
    /// Creation time.
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<Org> for OrgResponse {
    fn from(o: Org) -> Self {
        OrgResponse {
            id: o.id.0,
            name: o.name,
            is_mfa_enforced: o.is_mfa_enforced,
            mfa_enforced_at: o.mfa_enforced_at.map(rfc3339),
            mfa_grace_period_hours: o.mfa_grace_period_hours,
            created_at: rfc3339(o.created_at),
        }
    }
}

/// A user's place in an org.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MembershipResponse {
    /// The member.
    pub user_id: i64,
    /// The org.
    pub org_id: i64,
    /// An inactive membership cannot log in.
    pub is_active: bool,
    /// Admin of the org.
    pub is_admin: bool,
    /// Carried for the seed API.
    pub all_access: bool,
    /// Exempt from the org's MFA enforcement.
    pub mfa_opt_out: bool,
    /// Not counted as a licensed user.
    pub exclude_from_membership_count: bool,
    /// Carried for the seed API.
    pub has_advanced_permissions: bool,
}

impl From<Membership> for MembershipResponse {
    fn from(m: Membership) -> Self {
        MembershipResponse {
            user_id: m.user_id.0,
            org_id: m.org_id.0,
            is_active: m.is_active,
            is_admin: m.is_admin,
            all_access: m.all_access,
            mfa_opt_out: m.mfa_opt_out,
            exclude_from_membership_count: m.exclude_from_membership_count,
            has_advanced_permissions: m.has_advanced_permissions,
        }
    }
}

/// A user's MFA state.
#[derive(Serialize, ToSchema)]
pub struct UserMfa {
    /// Whether the user has a verified authenticator or email factor.
    pub enrolled: bool,
    /// Methods usable at a challenge: verified factors, and `RECOVERY`
    /// while unused recovery codes are left.
    pub methods: Vec<Method>,
}

/// A user. Never a password hash, a secret or a code.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserResponse {
    /// Id.
    pub id: i64,
    /// Login and mail address (lower case).
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Deployment-wide administrator.
    pub is_super_admin: bool,
    /// Asked for MFA personally.
    pub mfa_opt_in: bool,
    /// Last successful password login; null if never.
    #[schema(format = DateTime, required = true)]
    pub last_login_at: Option<String>,
    /// MFA state.
    pub mfa: UserMfa,
}

impl From<UserWithFactors> for UserResponse {
    fn from(u: UserWithFactors) -> Self {
        let UserWithFactors { user, factors } = u;
        UserResponse {
            id: user.id.0,
            email: user.email,
            first_name: user.first_name,
            last_name: user.last_name,
            is_super_admin: user.is_super_admin,
            mfa_opt_in: user.mfa_opt_in,
            last_login_at: user.last_login_at.map(rfc3339),
            mfa: UserMfa {
                enrolled: factors.has_verified_factor(),
                methods: factors
                    .challenge_methods()
                    .into_iter()
                    .map(Method::from)
                    .collect(),
            },
        }
    }
}

/// A change of the user's email address waiting for its confirmation.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingEmailResponse {
    /// The address that takes effect once the token mailed to it is
    /// confirmed (`POST /user/users/email/confirmChange`).
    pub new_email: String,
    /// When that token stops working.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

impl From<PendingEmail> for PendingEmailResponse {
    fn from(p: PendingEmail) -> Self {
        PendingEmailResponse {
            new_email: p.new_email,
            expires_at: rfc3339(p.expires_at),
        }
    }
}

/// A member of the current org, as its admins list them
/// (`GET /user/users/page`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrgUserResponse {
    /// The user.
    #[serde(flatten)]
    pub user: UserResponse,
    /// Their membership of the current org: whether they may sign in there
    /// (`isActive`), administer it (`isAdmin`), and owe its MFA
    /// (`mfaOptOut`).
    pub membership: MembershipResponse,
}

impl From<mfa_core::service::OrgMember> for OrgUserResponse {
    fn from(m: mfa_core::service::OrgMember) -> Self {
        OrgUserResponse {
            user: m.user.into(),
            membership: m.membership.into(),
        }
    }
}

/// The caller, with their memberships.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeResponse {
    /// The user.
    #[serde(flatten)]
    pub user: UserResponse,
    /// Every membership, active or not.
    pub memberships: Vec<MembershipResponse>,
    /// The caller's email change waiting for its confirmation; null when
    /// none is (or its token expired).
    #[schema(required = true)]
    pub pending_email: Option<PendingEmailResponse>,
}

/// One user, as `GET /user/users/{id}` shows them.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserDetailResponse {
    /// The user.
    #[serde(flatten)]
    pub user: UserResponse,
    /// The user's email change waiting for its confirmation; null when
    /// none is (or its token expired).
    #[schema(required = true)]
    pub pending_email: Option<PendingEmailResponse>,
}

/// One page of results.
#[derive(Serialize, ToSchema)]
pub struct PageResponse<T: ToSchema> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Items across all pages.
    pub total: u64,
    /// The page number asked for (0-based).
    #[schema(maximum = 2147483647)]
    pub page: u32,
    /// The page size asked for.
    #[schema(minimum = 1, maximum = 200)]
    pub size: u32,
}

impl<T: ToSchema> PageResponse<T> {
    /// Convert the items of a domain page.
    pub fn from_page<D>(p: Page<D>) -> Self
    where
        T: From<D>,
    {
        PageResponse {
            items: p.items.into_iter().map(T::from).collect(),
            total: p.total,
            page: p.page,
            size: p.size,
        }
    }
}

/// The seed's licence counts.
#[derive(Serialize, ToSchema)]
pub struct CountsResponse {
    /// Members not excluded from the membership count.
    pub licensed: u64,
    /// Of those, the active ones.
    pub enabled: u64,
    /// Of those, the inactive ones.
    pub inactive: u64,
}

impl From<MembershipCounts> for CountsResponse {
    fn from(c: MembershipCounts) -> Self {
        CountsResponse {
            licensed: c.licensed,
            enabled: c.enabled,
            inactive: c.inactive,
        }
    }
}

/// Whether a user exists.
#[derive(Serialize, ToSchema)]
pub struct ExistsResponse {
    /// True only for users in the caller's orgs.
    pub exists: bool,
}

/// A pending authenticator secret: shown to its owner once, to be scanned
/// or typed into an authenticator app, then confirmed with a code.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TempSecretResponse {
    /// The shared secret, base32 without padding.
    pub secret: String,
    /// The `otpauth://totp/...` URI the QR code encodes.
    pub otpauth_uri: String,
    /// The QR code as an SVG document.
    pub qr_code_svg: String,
    /// End of the enrollment window (10 minutes).
    #[schema(format = DateTime)]
    pub expires_at: String,
}

impl TempSecretResponse {
    /// The answer for a pending authenticator, with its QR code drawn.
    pub fn new(p: PendingAuthenticator) -> Result<Self, mfa_totp::TotpError> {
        Ok(TempSecretResponse {
            qr_code_svg: mfa_totp::qr_svg(&p.otpauth_uri)?,
            secret: p.secret.to_base32(),
            otpauth_uri: p.otpauth_uri,
            expires_at: rfc3339(p.expires_at),
        })
    }
}

/// The enrollment state of one factor.
#[derive(Serialize, ToSchema)]
pub struct FactorDetail {
    /// Whether the factor is verified.
    pub verified: bool,
}

/// Seed 004's `details`.
#[derive(Serialize, ToSchema)]
pub struct MfaDetailsMap {
    /// The authenticator app.
    #[serde(rename = "AUTHENTICATOR")]
    pub authenticator: FactorDetail,
    /// The email factor.
    #[serde(rename = "EMAIL")]
    pub email: FactorDetail,
}

/// Seed 004's MFA enrollment status of the caller.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "availables": ["AUTHENTICATOR", "EMAIL"],
    "details": {"AUTHENTICATOR": {"verified": true}, "EMAIL": {"verified": false}}
}))]
pub struct MfaDetailsResponse {
    /// The factors this server offers.
    pub availables: Vec<Method>,
    /// Per factor, whether it is verified.
    pub details: MfaDetailsMap,
}

impl From<MfaStatus> for MfaDetailsResponse {
    fn from(s: MfaStatus) -> Self {
        MfaDetailsResponse {
            availables: vec![Method::Authenticator, Method::Email],
            details: MfaDetailsMap {
                authenticator: FactorDetail {
                    verified: s.factors.authenticator,
                },
                email: FactorDetail {
                    verified: s.factors.email,
                },
            },
        }
    }
}

/// What `POST /user/users/{id}/logout` did.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionsEndedResponse {
    /// How many sessions ended (0 when none was open).
    pub sessions_ended: u64,
}

/// A new set of recovery codes, shown once.
#[derive(Serialize, ToSchema)]
pub struct RecoveryCodesResponse {
    /// 10 single-use codes; the previous set is void.
    pub codes: Vec<String>,
}

/// An audit event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventResponse {
    /// Id (increasing).
    pub id: i64,
    /// When.
    #[schema(format = DateTime)]
    pub at: String,
    /// The org it concerns.
    #[schema(required = true)]
    pub org_id: Option<i64>,
    /// The signed-in user who did it. Null for a login's password step
    /// (whoever typed the password is not signed in; the account is the
    /// target), the bootstrap and the operator's `mfa-server admin`
    /// commands.
    #[schema(required = true)]
    pub actor_user_id: Option<i64>,
    /// Whom it concerns.
    #[schema(required = true)]
    pub target_user_id: Option<i64>,
    /// What, in snake_case, e.g. `mfa_enforced`, `mfa_reset`.
    pub action: String,
    /// Free text without secrets, codes or full email addresses.
    pub detail: String,
    /// The IP address the request came from: behind a balancer, the
    /// client its trusted proxies (`MFA_TRUSTED_PROXIES`) named. Null for
    /// the operator's commands, background work, events written before
    /// this server recorded addresses, and a request whose trusted proxy
    /// named no client.
    #[schema(required = true, example = "203.0.113.7")]
    pub client_address: Option<String>,
}

impl From<AuditEvent> for AuditEventResponse {
    fn from(e: AuditEvent) -> Self {
        AuditEventResponse {
            id: e.id.0,
            at: rfc3339(e.at),
            org_id: e.org_id.map(|o| o.0),
            actor_user_id: e.actor_user_id.map(|u| u.0),
            target_user_id: e.target_user_id.map(|u| u.0),
            action: e.action.as_str().to_string(),
            detail: e.detail,
            client_address: e.client.map(|ip| ip.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(Timestamp(1_700_000_000)), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn ids_are_positive() {
        assert_eq!(serde_json::from_str::<Id>("7").unwrap(), Id(7));
        assert_eq!(
            serde_json::from_str::<Id>("9223372036854775807").unwrap(),
            Id(i64::MAX)
        );
        for bad in ["0", "-1", "1.5", "\"7\"", "null"] {
            assert!(serde_json::from_str::<Id>(bad).is_err(), "{bad}");
        }
        // Out of range, said as for any other number that is no id.
        for too_large in ["9223372036854775808", "99999999999999999999"] {
            let e = serde_json::from_str::<Id>(too_large).unwrap_err();
            assert!(
                e.to_string().starts_with("ids are positive integers"),
                "{e}"
            );
        }
        let q = |s: &str| IdsQuery { ids: s.into() }.parse();
        assert_eq!(q("1,2,3").unwrap().len(), 3);
        for bad in ["1, 2", "1,,2", ",2", "1,2,", " 1", ""] {
            assert!(q(bad).is_err(), "{bad:?}");
        }
        assert!(q("1,x").is_err());
        assert!(q("0").is_err());
        assert!(q("1,03").is_err());
        assert!(q("+1").is_err());
    }

    #[test]
    fn ids_in_urls_have_one_spelling() {
        assert_eq!(parse_url_id("7"), Some(7));
        assert_eq!(parse_url_id("9223372036854775807"), Some(i64::MAX));
        for bad in [
            "",
            "0",
            "07",
            "+7",
            "-7",
            " 7",
            "7 ",
            "7.0",
            "1e3",
            "٣",
            "9223372036854775808",
        ] {
            assert_eq!(parse_url_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<OrgMfaRequest>(r#"{"isMfaEnforced":true}"#).is_ok());
        assert!(serde_json::from_str::<OrgMfaRequest>(r#"{"isMfaEnforced":true,"x":1}"#).is_err());
        assert!(
            serde_json::from_str::<QrVerifyRequest>(r#"{"mfatype":"EMAIL","totp":"1"}"#).is_err()
        );
    }
}

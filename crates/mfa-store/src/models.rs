//! Database rows and their explicit conversions to the domain types. Rows
//! are checked against both backends at compile time.

use diesel::prelude::*;
use mfa_core::{
    AssuranceLevel, AuditAction, AuditEvent, AuditEventId, EmailChange, EmailCode,
    EmailCodePurpose, Membership, Org, OrgId, RecoveryCode, Session, SessionId, Timestamp, User,
    UserId,
};

use crate::Error;
use crate::schema::*;

pub(crate) fn ts(t: i64) -> Timestamp {
    Timestamp(t)
}

pub(crate) fn opt_ts(t: Option<i64>) -> Option<Timestamp> {
    t.map(Timestamp)
}

/// A `u64` from the domain as a BIGINT.
pub(crate) fn to_i64(v: u64, what: &'static str) -> Result<i64, Error> {
    i64::try_from(v).map_err(|_| Error::OutOfRange(what))
}

/// A `u32` from the domain as an INTEGER.
pub(crate) fn to_i32(v: u32, what: &'static str) -> Result<i32, Error> {
    i32::try_from(v).map_err(|_| Error::OutOfRange(what))
}

/// A stored non-negative number.
pub(crate) fn to_unsigned<T: TryFrom<I>, I: Copy + std::fmt::Display>(
    v: I,
    what: &str,
) -> Result<T, Error> {
    T::try_from(v).map_err(|_| Error::Corrupt(format!("{what} out of range: {v}")))
}

/// An offset or limit for SQL: values beyond `i64::MAX` mean "all".
pub(crate) fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A count from SQL.
pub(crate) fn count(v: i64) -> Result<u64, Error> {
    to_unsigned(v, "count")
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = orgs)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct OrgRow {
    pub id: i64,
    pub name: String,
    pub is_mfa_enforced: bool,
    pub mfa_enforced_at: Option<i64>,
    pub mfa_grace_period_hours: i32,
    pub created_at: i64,
}

impl TryFrom<OrgRow> for Org {
    type Error = Error;

    fn try_from(r: OrgRow) -> Result<Org, Error> {
        Ok(Org {
            id: OrgId(r.id),
            name: r.name,
            is_mfa_enforced: r.is_mfa_enforced,
            mfa_enforced_at: opt_ts(r.mfa_enforced_at),
            mfa_grace_period_hours: to_unsigned(r.mfa_grace_period_hours, "grace period")?,
            created_at: ts(r.created_at),
        })
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = users)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct UserRow {
    pub id: i64,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub password_hash: String,
    pub is_super_admin: bool,
    pub mfa_opt_in: bool,
    pub last_login_at: Option<i64>,
    pub created_at: i64,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> User {
        User {
            id: UserId(r.id),
            email: r.email,
            first_name: r.first_name,
            last_name: r.last_name,
            password_hash: r.password_hash,
            is_super_admin: r.is_super_admin,
            mfa_opt_in: r.mfa_opt_in,
            last_login_at: opt_ts(r.last_login_at),
            created_at: ts(r.created_at),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = memberships)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct MembershipRow {
    pub user_id: i64,
    pub org_id: i64,
    pub is_active: bool,
    pub is_admin: bool,
    pub all_access: bool,
    pub mfa_opt_out: bool,
    pub exclude_from_membership_count: bool,
    pub has_advanced_permissions: bool,
}

impl From<MembershipRow> for Membership {
    fn from(r: MembershipRow) -> Membership {
        Membership {
            user_id: UserId(r.user_id),
            org_id: OrgId(r.org_id),
            is_active: r.is_active,
            is_admin: r.is_admin,
            all_access: r.all_access,
            mfa_opt_out: r.mfa_opt_out,
            exclude_from_membership_count: r.exclude_from_membership_count,
            has_advanced_permissions: r.has_advanced_permissions,
        }
    }
}

/// An authenticator as stored: the secret still encrypted.
#[derive(Queryable, Selectable)]
#[diesel(table_name = authenticators)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct AuthenticatorRow {
    pub user_id: i64,
    pub secret_ciphertext: Vec<u8>,
    pub algorithm: String,
    pub digits: i32,
    pub period: i64,
    pub verified: bool,
    pub expires_at: i64,
    pub verified_at: Option<i64>,
    pub last_used_step: Option<i64>,
    pub created_at: i64,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = email_codes)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct EmailCodeRow {
    pub id: i64,
    pub user_id: i64,
    pub purpose: String,
    pub code_hash: String,
    pub salt: String,
    pub sent_at: i64,
    pub expires_at: i64,
    pub consumed_at: Option<i64>,
}

impl TryFrom<EmailCodeRow> for EmailCode {
    type Error = Error;

    fn try_from(r: EmailCodeRow) -> Result<EmailCode, Error> {
        Ok(EmailCode {
            id: r.id,
            user_id: UserId(r.user_id),
            purpose: EmailCodePurpose::parse(&r.purpose)
                .ok_or_else(|| Error::Corrupt(format!("email code purpose {:?}", r.purpose)))?,
            code_hash: r.code_hash,
            salt: r.salt,
            sent_at: ts(r.sent_at),
            expires_at: ts(r.expires_at),
            consumed_at: opt_ts(r.consumed_at),
        })
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = recovery_codes)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct RecoveryCodeRow {
    pub id: i64,
    pub user_id: i64,
    pub code_hash: String,
    pub created_at: i64,
    pub used_at: Option<i64>,
}

impl From<RecoveryCodeRow> for RecoveryCode {
    fn from(r: RecoveryCodeRow) -> RecoveryCode {
        RecoveryCode {
            id: r.id,
            user_id: UserId(r.user_id),
            code_hash: r.code_hash,
            created_at: ts(r.created_at),
            used_at: opt_ts(r.used_at),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = sessions)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct SessionRow {
    pub id: i64,
    pub token_hash: String,
    pub user_id: i64,
    pub org_id: i64,
    pub level: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_seen_at: i64,
    pub revoked_at: Option<i64>,
    pub mfa_passed: bool,
}

impl TryFrom<SessionRow> for Session {
    type Error = Error;

    fn try_from(r: SessionRow) -> Result<Session, Error> {
        Ok(Session {
            id: SessionId(r.id),
            token_hash: r.token_hash,
            user_id: UserId(r.user_id),
            org_id: OrgId(r.org_id),
            level: AssuranceLevel::parse(&r.level)
                .ok_or_else(|| Error::Corrupt(format!("session level {:?}", r.level)))?,
            created_at: ts(r.created_at),
            expires_at: ts(r.expires_at),
            last_seen_at: ts(r.last_seen_at),
            revoked_at: opt_ts(r.revoked_at),
            mfa_passed: r.mfa_passed,
        })
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = email_changes)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct EmailChangeRow {
    pub id: i64,
    pub user_id: i64,
    pub new_email: String,
    pub token_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub consumed_at: Option<i64>,
}

impl From<EmailChangeRow> for EmailChange {
    fn from(r: EmailChangeRow) -> EmailChange {
        EmailChange {
            id: r.id,
            user_id: UserId(r.user_id),
            new_email: r.new_email,
            token_hash: r.token_hash,
            created_at: ts(r.created_at),
            expires_at: ts(r.expires_at),
            consumed_at: opt_ts(r.consumed_at),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_events)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub org_id: Option<i64>,
    pub actor_user_id: Option<i64>,
    pub target_user_id: Option<i64>,
    pub action: String,
    pub detail: String,
    pub client_address: Option<String>,
}

/// A client address as `audit_events.client_address` holds it:
/// `IpAddr`'s text, which is canonical (the audit filter compares it so).
pub(crate) fn client_text(client: Option<std::net::IpAddr>) -> Option<String> {
    client.map(|ip| ip.to_string())
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = Error;

    fn try_from(r: AuditRow) -> Result<AuditEvent, Error> {
        Ok(AuditEvent {
            id: AuditEventId(r.id),
            at: ts(r.at),
            org_id: r.org_id.map(OrgId),
            actor_user_id: r.actor_user_id.map(UserId),
            target_user_id: r.target_user_id.map(UserId),
            action: AuditAction::parse(&r.action)
                .ok_or_else(|| Error::Corrupt(format!("audit action {:?}", r.action)))?,
            detail: r.detail,
            client: r
                .client_address
                .map(|text| {
                    text.parse()
                        .map_err(|_| Error::Corrupt(format!("audit client address {text:?}")))
                })
                .transpose()?,
        })
    }
}

//! Authorization rules as pure functions over the caller and memberships.
//!
//! Roles: a **superadmin** may do anything in any org; an **admin of the
//! current org** (the org of the caller's session) manages that org's
//! members; a user may read and change themselves; everyone else gets
//! nothing. A user of another org is *not found*, never *forbidden*, so
//! that ids and emails of other orgs cannot be probed.

use std::net::IpAddr;
use std::ops::Deref;

use crate::error::{MfaError, MfaResult};
use crate::model::{AssuranceLevel, Membership, OrgId, SessionId, UserId};

/// Who is calling: resolved from a bearer token for each request.
/// `Debug` leaves out the token's hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    /// The session behind the token.
    pub session_id: SessionId,
    /// Hex SHA-256 of the token the session was resolved from: a rotation
    /// of the session ([`crate::SessionRotation`]) happens only while the
    /// session still has it.
    pub token_hash: String,
    /// The caller.
    pub user_id: UserId,
    /// The current org: the org of the session.
    pub org_id: OrgId,
    /// Partial (MFA owed) or full.
    pub level: AssuranceLevel,
    /// Deployment-wide administrator.
    pub is_super_admin: bool,
    /// Active admin of the current org.
    pub is_org_admin: bool,
    /// A factor was verified in this session ([`crate::Session::mfa_passed`]).
    pub mfa_passed: bool,
    /// The address the request came from, for the audit trail: set by the
    /// adapter that resolved the session (`None` where it knows none).
    pub client: Option<IpAddr>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("session_id", &self.session_id)
            .field("user_id", &self.user_id)
            .field("org_id", &self.org_id)
            .field("level", &self.level)
            .field("is_super_admin", &self.is_super_admin)
            .field("is_org_admin", &self.is_org_admin)
            .field("mfa_passed", &self.mfa_passed)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// The caller, its requests coming from `client`: the address the
    /// audit events it causes record.
    pub fn from_client(self, client: Option<IpAddr>) -> Caller {
        Caller { client, ..self }
    }

    /// The caller as a full session, or `MfaRequired` for a partial one.
    /// This is the one place that keeps partial sessions out of everything
    /// not marked "partial ok": operations that need a full session take a
    /// [`FullCaller`], which only this function makes.
    pub fn into_full(self) -> MfaResult<FullCaller> {
        match self.level {
            AssuranceLevel::Full => Ok(FullCaller(self)),
            AssuranceLevel::Partial => Err(MfaError::MfaRequired),
        }
    }

    /// Whether the caller may manage the current org's members.
    pub fn is_current_org_admin(&self) -> bool {
        self.is_super_admin || self.is_org_admin
    }
}

/// A caller whose session is full. See [`Caller::into_full`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullCaller(Caller);

impl Deref for FullCaller {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl AsRef<Caller> for FullCaller {
    fn as_ref(&self) -> &Caller {
        &self.0
    }
}

/// Superadmins only.
pub fn require_super_admin(caller: &Caller) -> MfaResult<()> {
    if caller.is_super_admin {
        Ok(())
    } else {
        Err(MfaError::Forbidden)
    }
}

/// Admins of the current org (and superadmins).
pub fn require_current_org_admin(caller: &Caller) -> MfaResult<()> {
    if caller.is_current_org_admin() {
        Ok(())
    } else {
        Err(MfaError::Forbidden)
    }
}

/// Admins of `org`, in a session of `org`, given the caller's membership
/// in it. A member who is not an admin, or an admin whose session is of
/// another org, is forbidden; a non-member does not see the org at all.
///
/// Admin rights count only in the session's org: the login decision is
/// made per org, so a session of an org that owes no MFA must not carry
/// its user's admin rights over an org that enforces it. An admin of two
/// orgs logs in to each (`orgId`) to administer it.
pub fn require_org_admin(
    caller: &Caller,
    org: OrgId,
    membership_in_org: Option<&Membership>,
) -> MfaResult<()> {
    if caller.is_super_admin || (org == caller.org_id && caller.is_org_admin) {
        return Ok(());
    }
    match membership_in_org {
        Some(m) if m.is_active => Err(MfaError::Forbidden),
        _ => Err(MfaError::NotFound("org")),
    }
}

/// Members of `org` (and superadmins) may read it.
pub fn require_org_member(
    caller: &Caller,
    membership_in_org: Option<&Membership>,
) -> MfaResult<()> {
    if caller.is_super_admin {
        return Ok(());
    }
    match membership_in_org {
        Some(m) if m.is_active => Ok(()),
        _ => Err(MfaError::NotFound("org")),
    }
}

/// The target of a current-org admin action must be a member of the
/// current org: anyone else is "not found".
pub fn require_member_of_current_org(target_membership: Option<&Membership>) -> MfaResult<()> {
    match target_membership {
        Some(_) => Ok(()),
        None => Err(MfaError::NotFound("user")),
    }
}

/// Superadmins are managed only by superadmins. An org admin who shares an
/// org with a superadmin (one who joined it) may see them, but may not set
/// their password, reset their factors or change their membership: that
/// would turn one org's admin into the deployment's superadmin.
pub fn require_may_manage(caller: &Caller, target_is_super_admin: bool) -> MfaResult<()> {
    if target_is_super_admin && !caller.is_super_admin {
        Err(MfaError::Forbidden)
    } else {
        Ok(())
    }
}

/// Whether the caller sees `target`: superadmins see everyone, users see
/// themselves, and an admin of the current org sees its members, active
/// or not. Only the current org's admin rights count (see
/// [`require_org_admin`]).
pub fn can_see_user(caller: &Caller, target: UserId, target_memberships: &[Membership]) -> bool {
    caller.is_super_admin
        || caller.user_id == target
        || (caller.is_org_admin && target_memberships.iter().any(|t| t.org_id == caller.org_id))
}

/// Whether a user with these memberships is in "the caller's orgs", as
/// the contract words the admins' lists (`GET /user/users?ids=`, whether
/// an email exists): for an org admin the session's org (admin rights
/// count there only), for a superadmin, who administers every org, any
/// org. A user of no org is in none: a superadmin finds them by email
/// ("without org", as the seed says).
pub fn in_callers_orgs(caller: &Caller, memberships: &[Membership]) -> bool {
    if caller.is_super_admin {
        !memberships.is_empty()
    } else {
        memberships.iter().any(|m| m.org_id == caller.org_id)
    }
}

/// [`can_see_user`] as a rule: `NotFound` when the target is not visible.
pub fn require_visible_user(
    caller: &Caller,
    target: UserId,
    target_memberships: &[Membership],
) -> MfaResult<()> {
    if can_see_user(caller, target, target_memberships) {
        Ok(())
    } else {
        Err(MfaError::NotFound("user"))
    }
}

/// Whether the caller may change `target`'s account (names, password,
/// email): themselves, superadmins, and an admin of the current org for
/// its *active* members. A member the org deactivated is left alone, as
/// by the resets: otherwise the org that let them go could still set
/// their password and email, and take over their account in the orgs
/// they are still active in.
pub fn require_manageable_user(
    caller: &Caller,
    target: UserId,
    target_memberships: &[Membership],
) -> MfaResult<()> {
    let manages = caller.is_super_admin
        || caller.user_id == target
        || (caller.is_org_admin
            && target_memberships
                .iter()
                .any(|t| t.org_id == caller.org_id && t.is_active));
    if manages {
        Ok(())
    } else {
        Err(MfaError::NotFound("user"))
    }
}

/// Whether the caller may set another user's password or email, given
/// the user's memberships: a superadmin, or an admin of the current org
/// when the user belongs to no other org. Whoever sets them can log in as
/// the user to every org the user belongs to, and one org's admin has no
/// say over another's: an org that owes no MFA could otherwise take over
/// an admin of an org that enforces it (who has not enrolled yet), or an
/// org a member left could take over the account they use elsewhere.
pub fn require_may_set_credentials(
    caller: &Caller,
    target_memberships: &[Membership],
) -> MfaResult<()> {
    if caller.is_super_admin || target_memberships.iter().all(|m| m.org_id == caller.org_id) {
        Ok(())
    } else {
        Err(MfaError::Forbidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(super_admin: bool, org_admin: bool) -> Caller {
        Caller {
            session_id: SessionId(1),
            token_hash: "0".repeat(64),
            user_id: UserId(1),
            org_id: OrgId(10),
            level: AssuranceLevel::Full,
            is_super_admin: super_admin,
            is_org_admin: org_admin,
            mfa_passed: true,
            client: None,
        }
    }

    fn membership(user: i64, org: i64, admin: bool) -> Membership {
        let mut m = Membership::new(UserId(user), OrgId(org));
        m.is_admin = admin;
        m
    }

    #[test]
    fn partial_caller_is_not_full() {
        let mut c = caller(false, false);
        c.level = AssuranceLevel::Partial;
        assert_eq!(c.clone().into_full(), Err(MfaError::MfaRequired));
        c.level = AssuranceLevel::Full;
        assert!(c.into_full().is_ok());
    }

    #[test]
    fn super_admin_rules() {
        assert_eq!(require_super_admin(&caller(true, false)), Ok(()));
        assert_eq!(
            require_super_admin(&caller(false, true)),
            Err(MfaError::Forbidden)
        );
    }

    #[test]
    fn the_callers_orgs_of_the_admins_lists() {
        let here = [membership(2, 10, false)];
        let elsewhere = [membership(2, 11, false)];
        let admin = caller(false, true);
        assert!(in_callers_orgs(&admin, &here));
        assert!(!in_callers_orgs(&admin, &elsewhere));
        assert!(!in_callers_orgs(&admin, &[]));
        let root = caller(true, false);
        assert!(in_callers_orgs(&root, &here));
        assert!(in_callers_orgs(&root, &elsewhere));
        assert!(!in_callers_orgs(&root, &[]), "a user of no org");
    }

    #[test]
    fn current_org_admin_rules() {
        assert_eq!(require_current_org_admin(&caller(false, true)), Ok(()));
        assert_eq!(require_current_org_admin(&caller(true, false)), Ok(()));
        assert_eq!(
            require_current_org_admin(&caller(false, false)),
            Err(MfaError::Forbidden)
        );
    }

    #[test]
    fn org_admin_member_and_stranger() {
        let c = caller(false, false);
        let admin_here = caller(false, true);
        let admin = membership(1, 10, true);
        let member = membership(1, 10, false);
        let mut inactive_admin = admin.clone();
        inactive_admin.is_active = false;
        assert_eq!(
            require_org_admin(&admin_here, OrgId(10), Some(&admin)),
            Ok(())
        );
        assert_eq!(
            require_org_admin(&c, OrgId(10), Some(&member)),
            Err(MfaError::Forbidden)
        );
        assert_eq!(
            require_org_admin(&c, OrgId(10), Some(&inactive_admin)),
            Err(MfaError::NotFound("org"))
        );
        assert_eq!(
            require_org_admin(&c, OrgId(10), None),
            Err(MfaError::NotFound("org"))
        );
        assert_eq!(
            require_org_admin(&caller(true, false), OrgId(20), None),
            Ok(())
        );
        assert_eq!(require_org_member(&c, Some(&member)), Ok(()));
        assert_eq!(require_org_member(&c, None), Err(MfaError::NotFound("org")));
    }

    #[test]
    fn admin_rights_count_in_the_sessions_org_only() {
        // An admin of org 20 whose session is of org 10 (where the login
        // may have owed no MFA) does not administer org 20 from it.
        let elsewhere = caller(false, false);
        let admin_of_20 = membership(1, 20, true);
        assert_eq!(
            require_org_admin(&elsewhere, OrgId(20), Some(&admin_of_20)),
            Err(MfaError::Forbidden)
        );
        let member_of_20 = vec![membership(2, 20, false)];
        assert!(!can_see_user(&elsewhere, UserId(2), &member_of_20));
        assert_eq!(
            require_manageable_user(&elsewhere, UserId(2), &member_of_20),
            Err(MfaError::NotFound("user"))
        );
    }

    #[test]
    fn credentials_of_a_user_of_other_orgs_are_set_by_superadmins_only() {
        let admin = caller(false, true);
        let here_only = vec![membership(2, 10, false)];
        let shared = vec![membership(2, 10, false), membership(2, 30, false)];
        assert_eq!(require_may_set_credentials(&admin, &here_only), Ok(()));
        assert_eq!(
            require_may_set_credentials(&admin, &shared),
            Err(MfaError::Forbidden)
        );
        assert_eq!(
            require_may_set_credentials(&caller(true, false), &shared),
            Ok(())
        );
    }

    #[test]
    fn a_deactivated_member_is_seen_but_not_managed() {
        let admin = caller(false, true);
        let mut deactivated = membership(2, 10, false);
        deactivated.is_active = false;
        let elsewhere_active = membership(2, 30, false);
        let memberships = vec![deactivated, elsewhere_active];
        assert!(can_see_user(&admin, UserId(2), &memberships));
        assert_eq!(
            require_manageable_user(&admin, UserId(2), &memberships),
            Err(MfaError::NotFound("user"))
        );
        let active_here = vec![membership(2, 10, false)];
        assert_eq!(
            require_manageable_user(&admin, UserId(2), &active_here),
            Ok(())
        );
        assert_eq!(
            require_manageable_user(&caller(false, false), UserId(1), &[]),
            Ok(())
        );
    }

    #[test]
    fn another_orgs_user_is_not_found() {
        let c = caller(false, true);
        let same_org = vec![membership(2, 10, false)];
        let other_org = vec![membership(3, 99, false)];
        assert!(can_see_user(&c, UserId(2), &same_org));
        assert_eq!(
            require_visible_user(&c, UserId(3), &other_org),
            Err(MfaError::NotFound("user"))
        );
        // Self is always visible; superadmins see everyone.
        assert!(can_see_user(&c, UserId(1), &[]));
        assert!(can_see_user(&caller(true, false), UserId(3), &other_org));
        // A plain member does not see fellow members.
        assert!(!can_see_user(&caller(false, false), UserId(2), &same_org));
        assert_eq!(
            require_member_of_current_org(None),
            Err(MfaError::NotFound("user"))
        );
    }

    #[test]
    fn only_superadmins_manage_superadmins() {
        assert_eq!(
            require_may_manage(&caller(false, true), true),
            Err(MfaError::Forbidden)
        );
        assert_eq!(require_may_manage(&caller(true, false), true), Ok(()));
        assert_eq!(require_may_manage(&caller(false, true), false), Ok(()));
    }
}

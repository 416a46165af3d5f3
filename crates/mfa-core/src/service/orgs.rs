//! What org admins do: enforce MFA, reset members' MFA, opt members out,
//! manage orgs and memberships, read the audit trail.

use std::collections::{HashMap, HashSet};

use unicode_segmentation::UnicodeSegmentation;

use super::*;
use crate::authz::{
    FullCaller, require_current_org_admin, require_may_manage, require_member_of_current_org,
    require_org_admin, require_org_member, require_super_admin, require_visible_user,
};
use crate::policy::may_change_factors;
use crate::text::{composed, is_unprintable, normalize_email};

/// Longest org name.
pub const MAX_ORG_NAME_CHARS: usize = 200;
/// Longest enrollment grace period: one year.
pub const MAX_GRACE_PERIOD_HOURS: u32 = 8760;

/// A partial update of an org.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrgPatch {
    /// New name.
    pub name: Option<String>,
    /// New enrollment grace period in hours.
    pub mfa_grace_period_hours: Option<u32>,
}

pub(super) fn check_org_name(name: &str) -> MfaResult<String> {
    let name = composed(name.trim());
    // Control characters (NUL above all, which PostgreSQL text refuses)
    // are refused like in user names.
    if name.is_empty()
        || name.chars().count() > MAX_ORG_NAME_CHARS
        || name.chars().any(is_unprintable)
    {
        return Err(MfaError::InvalidRequest(format!(
            "name must have 1 to {MAX_ORG_NAME_CHARS} printable characters"
        )));
    }
    Ok(name)
}

impl<S: Store> MfaService<S> {
    /// Switch MFA enforcement of the current org, or with `all_orgs` (a
    /// superadmin only) of every org of the deployment. Takes effect at the
    /// next login.
    pub fn set_mfa_enforced(
        &self,
        caller: &FullCaller,
        enforced: bool,
        all_orgs: bool,
    ) -> MfaResult<()> {
        let now = self.now();
        if all_orgs {
            require_super_admin(caller)?;
        } else {
            require_current_org_admin(caller)?;
        }
        self.write(|tx| {
            let ids = if all_orgs {
                tx.all_orgs()?.into_iter().map(|o| o.id).collect()
            } else {
                vec![caller.org_id]
            };
            // Every org locked in id order first, the caller's among them,
            // before the admin's check takes the caller's: two such
            // switches at once then wait for each other, not deadlock.
            let mut orgs = Vec::with_capacity(ids.len());
            for id in ids {
                match tx.org_for_update(id)? {
                    Some(org) => orgs.push(org),
                    None if all_orgs => {} // deleted meanwhile
                    None => return Err(MfaError::NotFound("org")),
                }
            }
            self.require_admin_step_up(tx, caller)?;
            for org in orgs {
                switch_enforcement(tx, org, enforced, now, Actor::caller(caller), "")?;
            }
            Ok(())
        })
    }

    /// Remove every factor of each user (authenticator, email factor,
    /// recovery codes) and end their sessions. All ids must be members of
    /// the current org, else nothing changes and the answer is `NotFound`.
    ///
    /// Each user who had a factor is sent a notice naming what was
    /// removed, queued in the reset's transaction (see
    /// [`MfaService::deliver_notices`]). Without a
    /// [`MfaService::with_notice_waker`] up to
    /// [`NOTICES_SENT_INLINE`] of them are sent
    /// inside this call, and the rest by the next `deliver_notices`.
    pub fn reset_mfa(&self, caller: &FullCaller, ids: &[UserId]) -> MfaResult<()> {
        let now = self.now();
        require_current_org_admin(caller)?;
        if ids.is_empty() {
            return Err(MfaError::InvalidRequest("ids must not be empty".into()));
        }
        if ids.len() > self.config.max_reset_ids {
            return Err(MfaError::InvalidRequest(format!(
                "at most {} ids per reset",
                self.config.max_reset_ids
            )));
        }
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        self.write(|tx| {
            // The org's lock before the users': every admin's write takes
            // them in that order (a user's lock first, a superadmin adding
            // that user elsewhere deadlocked with this).
            self.require_admin_step_up(tx, caller)?;
            tx.lock_users(&ids)?;
            // Only active members: an admin of an org the user left (or was
            // deactivated in) has no say over the user's factors.
            let active = tx
                .memberships_in_org(&ids, caller.org_id)?
                .iter()
                .filter(|m| m.is_active)
                .count();
            if active != ids.len() {
                return Err(MfaError::NotFound("user"));
            }
            let admin = acting_admin(tx, caller)?;
            // What the notice names: what each user had, not every kind
            // of factor (an audit got "authenticator app, email codes,
            // recovery codes" for a user with email codes only, and a
            // notice for one with no factor at all).
            let mut had: HashMap<UserId, Vec<MfaMethod>> = ids
                .iter()
                .copied()
                .zip(tx.factor_states_of(&ids)?)
                .map(|(id, states)| (id, summarize_factor_states(states).0.methods()))
                .collect();
            let had_a_factor: HashSet<UserId> = had
                .iter()
                .filter(|(_, methods)| !methods.is_empty())
                .map(|(id, _)| *id)
                .collect();
            let mut users = Vec::new();
            for user in tx.users_by_ids(&ids)? {
                require_may_manage(caller, user.is_super_admin)?;
                let methods = had.remove(&user.id).unwrap_or_default();
                users.push((user, methods));
            }
            self.remove_factors(tx, &ids, true)?;
            tx.revoke_sessions_of(&ids, now)?;
            let memberships = tx.memberships_of_users(&ids)?;
            let events: Vec<NewAuditEvent> = ids
                .iter()
                .flat_map(|&id| {
                    let detail = reset_detail(had_a_factor.contains(&id));
                    let detail = format!("{detail} by an admin");
                    let event = caller_event(caller, now, id, AuditAction::MfaReset, detail);
                    sign_in_change_events(event, &memberships)
                })
                .collect();
            tx.insert_audits(&events)?;
            let notices = users
                .into_iter()
                .filter(|(_, methods)| !methods.is_empty())
                .map(|(user, methods)| {
                    let kind = MailKind::FactorReset {
                        methods,
                        by_admin: Some(admin.clone()),
                    };
                    (user.email, kind)
                });
            self.notify_all(tx, notices)
        })
    }

    /// Remove the users' factors: the authenticator always, the email
    /// factor and recovery codes when `all`. Also forgets code failures, so
    /// the users can enroll again at once. `users` sorted and distinct.
    pub(super) fn remove_factors(
        &self,
        tx: &mut dyn StoreTx,
        users: &[UserId],
        all: bool,
    ) -> MfaResult<()> {
        tx.delete_authenticators_of(users)?;
        if all {
            tx.delete_email_factors_of(users)?;
            tx.delete_recovery_codes_of(users)?;
        }
        tx.reset_failures_of(users, FailureKind::Code)?;
        Ok(())
    }

    /// Remove the authenticator of the current org's member with this email
    /// (seed 004's admin reset), end their sessions and mail them a notice;
    /// an authenticator still pending (never confirmed) is only withdrawn.
    /// `NotEnrolled` when they have none, verified or pending.
    pub fn admin_reset_authenticator(&self, caller: &FullCaller, email: &str) -> MfaResult<()> {
        let now = self.now();
        require_current_org_admin(caller)?;
        let email = normalize_email(email).map_err(|_| MfaError::NotFound("user"))?;
        self.write(|tx| {
            // The org's lock before the user's, as every admin's write.
            self.require_admin_step_up(tx, caller)?;
            let user = tx
                .user_by_email(&email)?
                .ok_or(MfaError::NotFound("user"))?;
            lock_user(tx, user.id)?;
            let membership = tx.membership(user.id, caller.org_id)?;
            require_member_of_current_org(membership.as_ref().filter(|m| m.is_active))?;
            require_may_manage(caller, user.is_super_admin)?;
            let Some(state) = tx.authenticator_state(user.id)? else {
                return Err(MfaError::NotEnrolled("the user has no authenticator"));
            };
            // An enrollment never confirmed is no sign-in method: it is only
            // withdrawn, as the user's own reset withdraws it, with no
            // session ended and no notice (an audit saw the user's sessions
            // end for it, audited as a reset).
            let event = |detail: &str| {
                caller_event(
                    caller,
                    now,
                    user.id,
                    AuditAction::AuthenticatorReset,
                    detail,
                )
            };
            if !matches!(state, AuthenticatorState::Verified { .. }) {
                tx.delete_authenticator(user.id)?;
                tx.insert_audit(&event("pending enrollment withdrawn by an admin"))?;
                return Ok(());
            }
            self.remove_factors(tx, &[user.id], false)?;
            tx.revoke_user_sessions(user.id, None, None, now)?;
            audit_sign_in_change(tx, event("by an admin"))?;
            let admin = acting_admin(tx, caller)?;
            self.notify(
                tx,
                &user.email,
                MailKind::FactorReset {
                    methods: vec![MfaMethod::Authenticator],
                    by_admin: Some(admin),
                },
            )
        })
    }

    /// Create an org (superadmin).
    pub fn create_org(&self, caller: &FullCaller, name: &str) -> MfaResult<Org> {
        require_super_admin(caller)?;
        let name = check_org_name(name)?;
        let now = self.now();
        self.write(|tx| {
            self.require_admin_step_up(tx, caller)?;
            let org = tx.insert_org(&name, now)?;
            audit(
                tx,
                now,
                Some(org.id),
                Actor::caller(caller),
                None,
                AuditAction::OrgCreated,
                "",
            )?;
            Ok(org)
        })
    }

    /// Read an org (its members and superadmins).
    pub fn get_org(&self, caller: &FullCaller, id: OrgId) -> MfaResult<Org> {
        self.store.read(|tx| {
            require_org_member(caller, tx.membership(caller.user_id, id)?.as_ref())?;
            tx.org(id)?.ok_or(MfaError::NotFound("org"))
        })
    }

    /// Rename an org or set its grace period (its admins).
    pub fn update_org(&self, caller: &FullCaller, id: OrgId, patch: &OrgPatch) -> MfaResult<Org> {
        let name = patch.name.as_deref().map(check_org_name).transpose()?;
        if let Some(h) = patch.mfa_grace_period_hours
            && h > MAX_GRACE_PERIOD_HOURS
        {
            return Err(MfaError::InvalidRequest(format!(
                "mfaGracePeriodHours must be between 0 and {MAX_GRACE_PERIOD_HOURS}"
            )));
        }
        let now = self.now();
        self.write(|tx| {
            require_org_admin(caller, id, tx.membership(caller.user_id, id)?.as_ref())?;
            self.require_admin_step_up_with(tx, caller, id)?;
            let mut org = tx.org_for_update(id)?.ok_or(MfaError::NotFound("org"))?;
            // Only what differs is a change: the trail records no change
            // that did not happen (an empty body, the name it has).
            let mut changes = Vec::new();
            if let Some(name) = name.as_ref().filter(|n| **n != org.name) {
                org.name = name.clone();
                changes.push("name".to_string());
            }
            if let Some(h) = patch
                .mfa_grace_period_hours
                .filter(|h| *h != org.mfa_grace_period_hours)
            {
                org.mfa_grace_period_hours = h;
                changes.push(format!("mfaGracePeriodHours={h}"));
            }
            if changes.is_empty() {
                return Ok(org);
            }
            tx.update_org(&org)?;
            audit(
                tx,
                now,
                Some(org.id),
                Actor::caller(caller),
                None,
                AuditAction::OrgUpdated,
                changes.join(", "),
            )?;
            Ok(org)
        })
    }

    /// Delete an org with its memberships (superadmin).
    pub fn delete_org(&self, caller: &FullCaller, id: OrgId) -> MfaResult<()> {
        require_super_admin(caller)?;
        if id == caller.org_id {
            return Err(MfaError::InvalidRequest(
                "the org of the current session cannot be deleted".into(),
            ));
        }
        let now = self.now();
        self.write(|tx| {
            self.require_admin_step_up_with(tx, caller, id)?;
            if !tx.delete_org(id)? {
                return Err(MfaError::NotFound("org"));
            }
            audit(
                tx,
                now,
                None,
                Actor::caller(caller),
                None,
                AuditAction::OrgDeleted,
                format!("org {id}"),
            )
        })
    }

    /// Add an existing user the caller can see, found by email, to an org
    /// (its admins).
    pub fn add_member_by_email(
        &self,
        caller: &FullCaller,
        org: OrgId,
        email: &str,
    ) -> MfaResult<Membership> {
        let email = normalize_email(email)?;
        let now = self.now();
        self.write(|tx| {
            require_org_admin(caller, org, tx.membership(caller.user_id, org)?.as_ref())?;
            self.require_admin_step_up(tx, caller)?;
            tx.org_for_reference(org)?
                .ok_or(MfaError::NotFound("org"))?;
            let user = tx
                .user_by_email(&email)?
                .ok_or(MfaError::NotFound("user"))?;
            // As by id: only a user the caller can see. Otherwise an admin
            // of one org could pull any other org's user in by address,
            // and then, as an admin of a shared org, reset their factors
            // and set their password.
            require_visible_user(caller, user.id, &tx.memberships_of_user(user.id)?)?;
            let m = Membership::new(user.id, org);
            tx.insert_membership(&m)?;
            audit(
                tx,
                now,
                Some(org),
                Actor::caller(caller),
                Some(user.id),
                AuditAction::MembershipCreated,
                "",
            )?;
            Ok(m)
        })
    }

    /// Read a membership (admins of the org, or the member).
    pub fn get_membership(
        &self,
        caller: &FullCaller,
        org: OrgId,
        user: UserId,
    ) -> MfaResult<Membership> {
        self.store.read(|tx| {
            if caller.user_id != user {
                require_org_admin(caller, org, tx.membership(caller.user_id, org)?.as_ref())?;
            }
            tx.membership(user, org)?
                .ok_or(MfaError::NotFound("membership"))
        })
    }

    /// Add a user the caller can see to an org with the given flags (its
    /// admins).
    pub fn add_member(
        &self,
        caller: &FullCaller,
        org: OrgId,
        user: UserId,
        patch: &MembershipPatch,
    ) -> MfaResult<Membership> {
        let now = self.now();
        self.write(|tx| {
            require_org_admin(caller, org, tx.membership(caller.user_id, org)?.as_ref())?;
            self.require_admin_step_up(tx, caller)?;
            tx.org_for_reference(org)?
                .ok_or(MfaError::NotFound("org"))?;
            tx.user(user)?.ok_or(MfaError::NotFound("user"))?;
            require_visible_user(caller, user, &tx.memberships_of_user(user)?)?;
            let mut m = Membership::new(user, org);
            patch.apply_to(&mut m);
            tx.insert_membership(&m)?;
            audit(
                tx,
                now,
                Some(org),
                Actor::caller(caller),
                Some(user),
                AuditAction::MembershipCreated,
                new_membership_detail(&m),
            )?;
            Ok(m)
        })
    }

    /// Remove a user from an org (its admins); their sessions in it end.
    /// An org admin cannot remove the org's last active admin.
    pub fn remove_member(&self, caller: &FullCaller, org: OrgId, user: UserId) -> MfaResult<()> {
        let now = self.now();
        self.write(|tx| {
            require_org_admin(caller, org, tx.membership(caller.user_id, org)?.as_ref())?;
            self.require_admin_step_up_with(tx, caller, org)?;
            let guard = LastAdminGuard::take(tx, caller, org, true)?;
            let Some(membership) = tx.membership(user, org)? else {
                return Err(MfaError::NotFound("membership"));
            };
            // Only superadmins manage superadmins, their memberships too.
            require_may_manage(caller, load_user(tx, user)?.is_super_admin)?;
            guard.check(tx, &membership, None)?;
            if !tx.delete_membership(user, org)? {
                return Err(MfaError::NotFound("membership"));
            }
            tx.revoke_user_sessions(user, Some(org), None, now)?;
            audit(
                tx,
                now,
                Some(org),
                Actor::caller(caller),
                Some(user),
                AuditAction::MembershipDeleted,
                "",
            )
        })
    }

    /// Change a current-org member's flags (seed `PUT /user/users/{id}/membership`):
    /// only the fields present change. Opt-out changes are audited as such;
    /// deactivation ends the member's sessions in the org. An org admin
    /// cannot demote or deactivate the org's last active admin.
    pub fn update_membership(
        &self,
        caller: &FullCaller,
        target: &super::UserRef,
        patch: &MembershipPatch,
    ) -> MfaResult<()> {
        require_current_org_admin(caller)?;
        let now = self.now();
        self.write(|tx| {
            self.require_admin_step_up(tx, caller)?;
            let guard =
                LastAdminGuard::take(tx, caller, caller.org_id, patch.may_end_admin_rights())?;
            let user = self.resolve_user_ref(tx, target)?;
            let mut m = tx
                .membership_for_update(user, caller.org_id)?
                .ok_or(MfaError::NotFound("user"))?;
            let member = load_user(tx, user)?;
            require_may_manage(caller, member.is_super_admin)?;
            let before = m.clone();
            patch.apply_to(&mut m);
            if m == before {
                return Ok(());
            }
            guard.check(tx, &before, Some(&m))?;
            tx.update_membership(&m)?;
            let org = Some(caller.org_id);
            if m.mfa_opt_out != before.mfa_opt_out {
                audit(
                    tx,
                    now,
                    org,
                    Actor::caller(caller),
                    Some(user),
                    opt_out_action(m.mfa_opt_out),
                    "",
                )?;
            }
            // A deactivation ends the member's sessions in the org, and
            // its event says so.
            let ended = if before.is_active && !m.is_active {
                Some(tx.revoke_user_sessions(user, Some(caller.org_id), None, now)?)
            } else {
                None
            };
            let others = membership_changes(&before, &m);
            if !others.is_empty() {
                let mut detail = others.join(", ");
                if let Some(n) = ended {
                    let ended = sessions_in_words(n, "");
                    detail.push_str(&format!("; {ended} in the org ended"));
                }
                audit(
                    tx,
                    now,
                    org,
                    Actor::caller(caller),
                    Some(user),
                    AuditAction::MembershipUpdated,
                    detail,
                )?;
            }
            if m.mfa_opt_out && !before.mfa_opt_out {
                let admin = acting_admin(tx, caller)?;
                self.notify_opted_out(tx, &member.email, admin)?;
            }
            Ok(())
        })
    }

    /// The current org's licence counts (its admins).
    pub fn membership_counts(&self, caller: &FullCaller) -> MfaResult<MembershipCounts> {
        require_current_org_admin(caller)?;
        self.store
            .read(|tx| Ok(tx.membership_counts(caller.org_id)?))
    }

    /// The current org's audit events matching `filter` (its `org_id` is
    /// the caller's current org, whatever it says), newest first (its
    /// admins). A period whose `from` is after its `to` is refused; one
    /// where they are equal holds nothing.
    pub fn audit_events(
        &self,
        caller: &FullCaller,
        filter: AuditFilter,
        page: PageRequest,
    ) -> MfaResult<Page<AuditEvent>> {
        require_current_org_admin(caller)?;
        if let (Some(from), Some(to)) = (filter.from, filter.to)
            && from > to
        {
            return Err(MfaError::InvalidRequest("from must be before to".into()));
        }
        let filter = AuditFilter {
            org_id: Some(caller.org_id),
            ..filter
        };
        self.store.read(|tx| {
            let (items, total) = tx.audit_events(&filter, page.offset(), u64::from(page.size))?;
            Ok(Page {
                items,
                total,
                page: page.page,
                size: page.size,
            })
        })
    }
}

impl<S: Store> MfaService<S> {
    /// Every admin's write, in its transaction: the caller's session and
    /// rights read again, then [`require_admin_step_up`]. A caller is
    /// resolved before the transaction (or kept by an embedder across
    /// requests): a logout, a demotion, a deactivation or a deletion
    /// committed since must not be acted on. (An audit kept a
    /// `FullCaller` of an admin who was then demoted and deleted, and
    /// switched the org's enforcement off with it.) A session no longer
    /// live is `Unauthorized`; a right claimed and gone, `Forbidden`.
    ///
    /// It first takes the lock of the caller's org (the session's), before
    /// any user's or membership's: every admin's write in an org takes it
    /// first (call this at the start of its transaction), the change of an admin's
    /// rights there among them, so the rights are read after any change
    /// of them that committed before, and none commits while the write
    /// runs. (Read without it, a demotion that committed while the write
    /// waited for another row's lock was not seen.) `set_mfa_enforced`
    /// over every org takes all their locks in id order before this one.
    pub(crate) fn require_admin_step_up(
        &self,
        tx: &mut dyn StoreTx,
        caller: &FullCaller,
    ) -> MfaResult<()> {
        tx.org_for_update(caller.org_id)?;
        self.recheck_admin(tx, caller)
    }

    /// [`MfaService::require_admin_step_up`] for a write that also locks
    /// `other`, an org named in the request: both orgs' locks are taken in
    /// id order, so that two such writes crossing each other's orgs wait
    /// for each other instead of deadlocking.
    pub(crate) fn require_admin_step_up_with(
        &self,
        tx: &mut dyn StoreTx,
        caller: &FullCaller,
        other: OrgId,
    ) -> MfaResult<()> {
        let (first, second) = if other < caller.org_id {
            (other, caller.org_id)
        } else {
            (caller.org_id, other)
        };
        tx.org_for_update(first)?;
        if second != first {
            tx.org_for_update(second)?;
        }
        self.recheck_admin(tx, caller)
    }

    /// [`MfaService::require_admin_step_up`] without the org's lock: for a
    /// look before the write (which checks again), to refuse early.
    pub(crate) fn recheck_admin(&self, tx: &mut dyn StoreTx, caller: &FullCaller) -> MfaResult<()> {
        let found = tx
            .session_member_by_id(caller.session_id)?
            .ok_or(MfaError::Unauthorized)?;
        let fresh = self.live_caller(&found, self.now())?;
        if fresh.user_id != caller.user_id
            || fresh.org_id != caller.org_id
            || fresh.level != caller.level
        {
            return Err(MfaError::Unauthorized);
        }
        if (caller.is_super_admin && !fresh.is_super_admin)
            || (caller.is_org_admin && !fresh.is_org_admin)
        {
            return Err(MfaError::Forbidden);
        }
        require_admin_step_up(tx, fresh.user_id, fresh.level, fresh.mfa_passed)
    }
}

/// Every change an admin makes is held to the rule of the self-service
/// routes ([`may_change_factors`]) applied to the admin's own factors: an
/// admin who has a verified factor administers (resets factors, switches
/// enforcement, creates, promotes, opts out or removes members, sets
/// their passwords and emails) only from a session in which a factor was
/// verified. Otherwise whoever had the admin's password alone, logged in
/// through an org that owes no MFA, would remove the factors of members
/// who are also in orgs that enforce it, or switch enforcement off, or
/// create a factorless admin to do it (audits found all three). An admin
/// without any factor has nothing to verify, and is held to nothing more
/// than before; reads need no step-up.
fn require_admin_step_up(
    tx: &mut dyn StoreTx,
    admin: UserId,
    level: AssuranceLevel,
    mfa_passed: bool,
) -> MfaResult<()> {
    if mfa_passed {
        return Ok(());
    }
    let factors = load_factors(tx, admin)?;
    may_change_factors(level, mfa_passed, &factors)
}

/// Keeps an org administrable by its own admins: an org admin's change
/// that would leave the org without an active admin is refused with
/// `409 conflict`. Superadmins are not held to it: they administer every
/// org, admins or not, and can appoint one again.
///
/// The count is made under the org row's lock, taken before the
/// membership's (the order an org's deletion takes them in). Without it,
/// on PostgreSQL, two admins demoting each other at once would each count
/// the other and both succeed.
struct LastAdminGuard {
    org: Option<OrgId>,
}

impl LastAdminGuard {
    /// Lock `org` when `may_end_admin_rights` and the caller is held to
    /// the rule; otherwise a guard that lets every change through.
    fn take(
        tx: &mut dyn StoreTx,
        caller: &FullCaller,
        org: OrgId,
        may_end_admin_rights: bool,
    ) -> MfaResult<LastAdminGuard> {
        if caller.is_super_admin || !may_end_admin_rights {
            return Ok(LastAdminGuard { org: None });
        }
        tx.org_for_update(org)?;
        Ok(LastAdminGuard { org: Some(org) })
    }

    /// Refuse turning `before` into `after` (`None`: removing it) if it
    /// is the org's only active admin membership.
    fn check(
        &self,
        tx: &mut dyn StoreTx,
        before: &Membership,
        after: Option<&Membership>,
    ) -> MfaResult<()> {
        let Some(org) = self.org else {
            return Ok(());
        };
        let ends_admin_rights =
            before.is_active_admin() && !after.is_some_and(Membership::is_active_admin);
        if !ends_admin_rights {
            return Ok(());
        }
        let admins = tx.org_admins(org)?;
        if admins.iter().any(|admin| admin.id != before.user_id) {
            return Ok(());
        }
        Err(MfaError::Conflict(
            "this is the org's last active admin: make another member an admin first".into(),
        ))
    }
}

/// How the admin acting in `caller`'s session is named in notices: their
/// address and the org they act for (its member may be in several).
///
/// Not the admin's name: names are free text the admin writes, and a
/// notice is a genuine mail from the deployment's sender, so a name such
/// as "IT Security). Your account is suspended: visit http://…" made it
/// a phishing mail. An address says exactly who acted and reads as no
/// sentence; the org's name, also the org admins' text, is quoted and cut
/// short.
pub(super) fn acting_admin(tx: &mut dyn StoreTx, caller: &FullCaller) -> MfaResult<String> {
    let admin = load_user(tx, caller.user_id)?.email;
    Ok(match tx.org(caller.org_id)? {
        Some(org) => format!("{admin}, of \"{}\"", quoted_org_name(&org.name)),
        None => admin,
    })
}

/// Switch `org`'s enforcement to `enforced` and audit it, unless it is so
/// already; whether it changed. An enforcement begun anew starts the grace
/// period again. For an admin's switch and the operator's alike.
pub(super) fn switch_enforcement(
    tx: &mut dyn StoreTx,
    mut org: Org,
    enforced: bool,
    now: Timestamp,
    by: Actor,
    detail: &str,
) -> MfaResult<bool> {
    if org.is_mfa_enforced == enforced {
        return Ok(false);
    }
    org.is_mfa_enforced = enforced;
    if enforced {
        org.mfa_enforced_at = Some(now);
    }
    tx.update_org(&org)?;
    let action = if enforced {
        AuditAction::MfaEnforced
    } else {
        AuditAction::MfaUnenforced
    };
    audit(tx, now, Some(org.id), by, None, action, detail)?;
    Ok(true)
}

/// The audit action of a membership's opt-out set (`true`) or withdrawn.
pub(super) fn opt_out_action(opt_out: bool) -> AuditAction {
    if opt_out {
        AuditAction::MfaOptOut
    } else {
        AuditAction::MfaOptOutRemoved
    }
}

impl<S: Store> MfaService<S> {
    /// Tell `email`'s owner that an org stopped asking them for a second
    /// factor, and who did it: an opt-out takes a requirement away.
    pub(super) fn notify_opted_out(
        &self,
        tx: &mut dyn StoreTx,
        email: &str,
        by: String,
    ) -> MfaResult<()> {
        self.notify(
            tx,
            email,
            MailKind::SignInChanged {
                change: SignInChange::MfaOptOut,
                by_admin: Some(by),
            },
        )
    }
}

/// The most of an org's name a notice quotes, in user-perceived characters.
const NOTICE_ORG_NAME_CHARS: usize = 40;

/// `name` cut to [`NOTICE_ORG_NAME_CHARS`] user-perceived characters
/// (grapheme clusters: a cut never separates an accent from its letter or
/// the parts of a joined emoji), with `…` where it was cut, and its double
/// quotes made single, so that it cannot close the quote it stands in.
fn quoted_org_name(name: &str) -> String {
    let name = name.replace('"', "'");
    match name.grapheme_indices(true).nth(NOTICE_ORG_NAME_CHARS) {
        Some((end, _)) => format!("{}…", name[..end].trim_end()),
        None => name,
    }
}

/// What an `mfa_reset` event says was done: the trail must not claim
/// factors were removed from a user who had none (the reset still ended
/// their sessions and withdrew a pending enrollment).
pub(super) fn reset_detail(had_a_factor: bool) -> &'static str {
    if had_a_factor {
        "all factors removed; sessions ended"
    } else {
        "no factor was set up; sessions ended"
    }
}

/// What a new membership grants or withholds beyond a plain member's,
/// for its `membership_created` event: "isAdmin=true" for an admin made
/// at once, as a later promotion's `membership_updated` says it.
pub(super) fn new_membership_detail(m: &Membership) -> String {
    let mut changes = membership_changes(&Membership::new(m.user_id, m.org_id), m);
    if m.mfa_opt_out {
        changes.push("mfaOptOut=true".to_string());
    }
    changes.join(", ")
}

/// The non-MFA flags that differ, as `field=value` for the audit detail.
fn membership_changes(before: &Membership, after: &Membership) -> Vec<String> {
    let fields = [
        ("isActive", before.is_active, after.is_active),
        ("isAdmin", before.is_admin, after.is_admin),
        ("allAccess", before.all_access, after.all_access),
        (
            "excludeFromMembershipCount",
            before.exclude_from_membership_count,
            after.exclude_from_membership_count,
        ),
        (
            "hasAdvancedPermissions",
            before.has_advanced_permissions,
            after.has_advanced_permissions,
        ),
    ];
    fields
        .iter()
        .filter(|(_, b, a)| b != a)
        .map(|(name, _, a)| format!("{name}={a}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_org_name_is_quoted_briefly() {
        assert_eq!(quoted_org_name("Acme"), "Acme");
        assert_eq!(quoted_org_name("The \"Best\" Org"), "The 'Best' Org");
        let forty = "x".repeat(40);
        assert_eq!(quoted_org_name(&forty), forty);
        assert_eq!(quoted_org_name(&format!("{forty}y")), format!("{forty}…"));
        // A joined emoji and an accented letter count as one character
        // each and are kept or cut whole.
        let joined = format!("{}\u{1f468}\u{200d}\u{1f469}", "x".repeat(39));
        assert_eq!(quoted_org_name(&joined), joined);
        let joined = format!("{}\u{1f468}\u{200d}\u{1f469}", "x".repeat(40));
        assert_eq!(quoted_org_name(&joined), format!("{forty}…"));
        let accented = format!("{}e\u{301}", "x".repeat(39));
        assert_eq!(quoted_org_name(&accented), accented);
        let accented = format!("{}e\u{301}y", "x".repeat(39));
        assert_eq!(
            quoted_org_name(&accented),
            format!("{}e\u{301}…", "x".repeat(39))
        );
        assert_eq!(
            quoted_org_name(&format!("{} yz", "x".repeat(39))),
            format!("{}…", "x".repeat(39))
        );
    }

    #[test]
    fn org_names_are_printable_and_bounded() {
        assert_eq!(check_org_name("  Acme  ").as_deref(), Ok("Acme"));
        // Composed, and counted so: 200 letters with their accents fit.
        assert_eq!(check_org_name("Cafe\u{301}").as_deref(), Ok("Caf\u{e9}"));
        assert!(check_org_name(&"e\u{301}".repeat(200)).is_ok());
        for bad in ["", "   ", "a\u{0}b", "a\nb", "a\u{202E}b", &"x".repeat(201)] {
            assert!(check_org_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}

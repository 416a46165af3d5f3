//! The locking rule, checked: a transaction that changes a user's factors,
//! or writes a user, org or membership row back whole, has taken that row's
//! lock first in the same transaction (`lock_users`, the code checks'
//! locked reads, `org_for_update`, `membership_for_update`; a row the
//! transaction created itself is its own). On PostgreSQL, where write
//! transactions run side by side, a change without the lock decides on
//! what it read before another transaction's commit: docs/SECURITY.md,
//! rules 5 and 8.
//!
//! Debug builds (every test run) record the locks each transaction took
//! and panic at a write that breaks the rule, naming the method, so a new
//! write path that forgets the lock fails its first test on either
//! backend. Release builds record nothing: [`Held`] is empty and its
//! methods do nothing.

use mfa_core::{OrgId, UserId};

/// The rows a transaction holds the lock of.
#[derive(Default)]
pub(crate) struct Held {
    /// Whether a change without its lock panics.
    #[cfg(debug_assertions)]
    enforced: bool,
    #[cfg(debug_assertions)]
    users: std::collections::HashSet<UserId>,
    #[cfg(debug_assertions)]
    orgs: std::collections::HashSet<OrgId>,
    #[cfg(debug_assertions)]
    memberships: std::collections::HashSet<(UserId, OrgId)>,
}

#[cfg(debug_assertions)]
impl Held {
    pub(crate) fn new(enforced: bool) -> Held {
        Held {
            enforced,
            ..Held::default()
        }
    }

    pub(crate) fn users(&mut self, users: &[UserId]) {
        self.users.extend(users);
    }

    pub(crate) fn org(&mut self, org: OrgId) {
        self.orgs.insert(org);
    }

    pub(crate) fn membership(&mut self, user: UserId, org: OrgId) {
        self.memberships.insert((user, org));
    }

    #[track_caller]
    pub(crate) fn require_users(&self, users: &[UserId], change: &str) {
        if !self.enforced {
            return;
        }
        for user in users {
            assert!(
                self.users.contains(user),
                "{change} of user {} without the user's lock: take it first \
                 (lock_user, load_user_for_update)",
                user.0
            );
        }
    }

    #[track_caller]
    pub(crate) fn require_org(&self, org: OrgId, change: &str) {
        if !self.enforced {
            return;
        }
        assert!(
            self.orgs.contains(&org),
            "{change} of org {} without the org's lock: read it with org_for_update",
            org.0
        );
    }

    #[track_caller]
    pub(crate) fn require_membership(&self, user: UserId, org: OrgId, change: &str) {
        if !self.enforced {
            return;
        }
        assert!(
            self.memberships.contains(&(user, org)),
            "{change} of the membership of user {} in org {} without its lock: read it \
             with membership_for_update",
            user.0,
            org.0
        );
    }
}

#[cfg(not(debug_assertions))]
impl Held {
    #[inline(always)]
    pub(crate) fn new(_: bool) -> Held {
        Held {}
    }
    #[inline(always)]
    pub(crate) fn users(&mut self, _: &[UserId]) {}
    #[inline(always)]
    pub(crate) fn org(&mut self, _: OrgId) {}
    #[inline(always)]
    pub(crate) fn membership(&mut self, _: UserId, _: OrgId) {}
    #[inline(always)]
    pub(crate) fn require_users(&self, _: &[UserId], _: &str) {}
    #[inline(always)]
    pub(crate) fn require_org(&self, _: OrgId, _: &str) {}
    #[inline(always)]
    pub(crate) fn require_membership(&self, _: UserId, _: OrgId, _: &str) {}
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    #[test]
    fn a_held_row_may_be_changed() {
        let mut held = Held::new(true);
        held.users(&[UserId(1), UserId(2)]);
        held.org(OrgId(3));
        held.membership(UserId(1), OrgId(3));
        held.require_users(&[UserId(2), UserId(1)], "a reset");
        held.require_org(OrgId(3), "update_org");
        held.require_membership(UserId(1), OrgId(3), "update_membership");
    }

    #[test]
    #[should_panic(expected = "a reset of user 2 without the user's lock")]
    fn a_user_not_held_may_not() {
        let mut held = Held::new(true);
        held.users(&[UserId(1)]);
        held.require_users(&[UserId(1), UserId(2)], "a reset");
    }

    #[test]
    #[should_panic(expected = "update_org of org 3 without the org's lock")]
    fn an_org_not_held_may_not() {
        Held::new(true).require_org(OrgId(3), "update_org");
    }

    #[test]
    #[should_panic(expected = "membership of user 1 in org 3 without its lock")]
    fn a_membership_not_held_may_not() {
        let mut held = Held::new(true);
        held.membership(UserId(1), OrgId(4));
        held.require_membership(UserId(1), OrgId(3), "update_membership");
    }
}

//! The operator's console: the break-glass path for someone who runs the
//! deployment (shell access to a server and its configuration), not for an
//! HTTP user.
//!
//! Every operation of the service takes a [`Caller`] or a [`FullCaller`]
//! resolved from a bearer token. When the last admin of an org has lost
//! their phone, or before anyone can log in at all, there is no such caller.
//! [`OperatorConsole`] does a few admin actions without one: it has every
//! right in every org, so it is built only from the service itself
//! ([`OperatorConsole::new`]), never from a token, and nothing in the HTTP
//! adapter constructs it. Its changes follow the rules of their HTTP twins
//! (one transaction each, with the same audit events and notices); the
//! audit events have no actor user and a detail that ends with
//! "by the [`OPERATOR`]" ("reset, by the operator").
//!
//! [`FullCaller`]: crate::FullCaller

use super::*;
use crate::text::normalize_email;

/// How the operator is named in audit details and notices.
pub const OPERATOR: &str = "operator";

/// Admin actions done by the operator of the deployment (the `mfa-server
/// admin` commands): no session, every org.
///
/// Construct it only in code run by an operator (a command-line tool), never
/// in a request handler: it skips every authorization check.
pub struct OperatorConsole<'a, S: Store> {
    service: &'a MfaService<S>,
}

impl<S: Store> std::fmt::Debug for OperatorConsole<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorConsole")
    }
}

/// A user created by the operator. `Debug` leaves out the password.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorNewUser {
    /// Email (login).
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Initial password (check it with the password rules before asking).
    pub password: String,
    /// Deployment-wide administrator.
    pub is_super_admin: bool,
    /// Make the user a member of this org…
    pub org: Option<OrgId>,
    /// …and an admin of it.
    pub is_org_admin: bool,
}

crate::redact::debug_without_secrets!(OperatorNewUser {
    email, first_name, last_name, is_super_admin, org, is_org_admin
} secret { password });

/// What [`OperatorConsole::reset_mfa`] removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorReset {
    /// The user.
    pub user: User,
    /// The factors they had before the reset.
    pub had: FactorSummary,
    /// Sessions ended.
    pub sessions_ended: u64,
}

fn audit_detail(what: &str) -> String {
    if what.is_empty() {
        format!("by the {OPERATOR}")
    } else {
        format!("{what}, by the {OPERATOR}")
    }
}

impl<'a, S: Store> OperatorConsole<'a, S> {
    /// The console over this service. Only for operator tools: see the
    /// type's documentation.
    pub fn new(service: &'a MfaService<S>) -> OperatorConsole<'a, S> {
        OperatorConsole { service }
    }

    /// Every org, by id.
    pub fn orgs(&self) -> MfaResult<Vec<Org>> {
        let mut orgs = self.service.store.read(|tx| Ok(tx.all_orgs()?))?;
        orgs.sort_by_key(|o| o.id);
        Ok(orgs)
    }

    /// Create an org (audited `org_created`).
    pub fn create_org(&self, name: &str) -> MfaResult<Org> {
        let name = super::orgs::check_org_name(name)?;
        let now = self.service.now();
        self.service.write(|tx| {
            let org = tx.insert_org(&name, now)?;
            audit(
                tx,
                now,
                Some(org.id),
                Actor::NO_ONE,
                None,
                AuditAction::OrgCreated,
                audit_detail(""),
            )?;
            Ok(org)
        })
    }

    /// Create a user, optionally as a member (or admin) of an org (audited
    /// `user_created`, and `membership_created` with an org).
    pub fn create_user(&self, req: &OperatorNewUser) -> MfaResult<User> {
        let s = self.service;
        let email = s.new_address(&req.email)?;
        let first_name = super::users::check_name("firstName", &req.first_name)?;
        let last_name = super::users::check_name("lastName", &req.last_name)?;
        s.check_new_password(&req.password, &[&email, &first_name, &last_name])?;
        if req.is_org_admin && req.org.is_none() {
            return Err(MfaError::InvalidRequest("an org admin needs an org".into()));
        }
        let hash = s.hasher.hash(&req.password, s.rng.as_ref())?;
        let now = s.now();
        s.write(|tx| {
            if let Some(org) = req.org {
                tx.org_for_reference(org)?
                    .ok_or(MfaError::NotFound("org"))?;
            }
            if tx.user_by_email(&email)?.is_some() {
                return Err(MfaError::Conflict(
                    "a user with this email already exists".into(),
                ));
            }
            let user = tx.insert_user(&NewUser {
                email: email.clone(),
                first_name: first_name.clone(),
                last_name: last_name.clone(),
                password_hash: hash.clone(),
                is_super_admin: req.is_super_admin,
                created_at: now,
            })?;
            let what = if req.is_super_admin { "superadmin" } else { "" };
            audit(
                tx,
                now,
                req.org,
                Actor::NO_ONE,
                Some(user.id),
                AuditAction::UserCreated,
                audit_detail(what),
            )?;
            if let Some(org) = req.org {
                let mut m = Membership::new(user.id, org);
                m.is_admin = req.is_org_admin;
                tx.insert_membership(&m)?;
                audit(
                    tx,
                    now,
                    Some(org),
                    Actor::NO_ONE,
                    Some(user.id),
                    AuditAction::MembershipCreated,
                    audit_detail(&super::orgs::new_membership_detail(&m)),
                )?;
            }
            Ok(user)
        })
    }

    /// Make the user with this email an active member of `org`, an admin of
    /// it with `is_admin`. An existing membership is activated (and made
    /// admin with `is_admin`; an admin stays one), audited
    /// `membership_updated`; a new one is audited `membership_created`.
    /// Returns the membership and whether it is new.
    pub fn add_member(
        &self,
        org: OrgId,
        email: &str,
        is_admin: bool,
    ) -> MfaResult<(Membership, bool)> {
        let email = normalize_email(email).map_err(|_| MfaError::NotFound("user"))?;
        let now = self.service.now();
        self.service.write(|tx| {
            tx.org_for_reference(org)?
                .ok_or(MfaError::NotFound("org"))?;
            let user = tx
                .user_by_email(&email)?
                .ok_or(MfaError::NotFound("user"))?;
            match tx.membership_for_update(user.id, org)? {
                Some(before) => {
                    let mut m = before.clone();
                    m.is_active = true;
                    m.is_admin = m.is_admin || is_admin;
                    if m != before {
                        tx.update_membership(&m)?;
                        let mut changes = Vec::new();
                        if m.is_active != before.is_active {
                            changes.push("isActive=true");
                        }
                        if m.is_admin != before.is_admin {
                            changes.push("isAdmin=true");
                        }
                        audit(
                            tx,
                            now,
                            Some(org),
                            Actor::NO_ONE,
                            Some(user.id),
                            AuditAction::MembershipUpdated,
                            audit_detail(&changes.join(", ")),
                        )?;
                    }
                    Ok((m, false))
                }
                None => {
                    let mut m = Membership::new(user.id, org);
                    m.is_admin = is_admin;
                    tx.insert_membership(&m)?;
                    audit(
                        tx,
                        now,
                        Some(org),
                        Actor::NO_ONE,
                        Some(user.id),
                        AuditAction::MembershipCreated,
                        audit_detail(&super::orgs::new_membership_detail(&m)),
                    )?;
                    Ok((m, true))
                }
            }
        })
    }

    /// Switch MFA enforcement of an org (audited `mfa_enforced` or
    /// `mfa_unenforced`). Takes effect at the next login. Returns whether
    /// anything changed.
    pub fn set_mfa_enforced(&self, org: OrgId, enforced: bool) -> MfaResult<bool> {
        let now = self.service.now();
        self.service.write(|tx| {
            let o = tx.org_for_update(org)?.ok_or(MfaError::NotFound("org"))?;
            super::orgs::switch_enforcement(tx, o, enforced, now, Actor::NO_ONE, &audit_detail(""))
        })
    }

    /// Remove every factor of the user with this email (authenticator, email
    /// factor, recovery codes) and end all their sessions, as an admin's
    /// `PUT /user/users/mfa/reset` does: the next login owes MFA setup where
    /// MFA applies. Audited `mfa_reset` in each org the user belongs to; the
    /// user gets the usual notice.
    pub fn reset_mfa(&self, email: &str) -> MfaResult<OperatorReset> {
        let s = self.service;
        let email = normalize_email(email).map_err(|_| MfaError::NotFound("user"))?;
        let now = s.now();
        let reset = s.write(|tx| {
            let user = tx
                .user_by_email(&email)?
                .ok_or(MfaError::NotFound("user"))?;
            lock_user(tx, user.id)?;
            let had = load_factors(tx, user.id)?;
            s.remove_factors(tx, &[user.id], true)?;
            let sessions_ended = tx.revoke_user_sessions(user.id, None, None, now)?;
            let orgs: Vec<Option<OrgId>> = match tx.memberships_of_user(user.id)?.as_slice() {
                [] => vec![None],
                ms => ms.iter().map(|m| Some(m.org_id)).collect(),
            };
            for org in orgs {
                audit(
                    tx,
                    now,
                    org,
                    Actor::NO_ONE,
                    Some(user.id),
                    AuditAction::MfaReset,
                    audit_detail(super::orgs::reset_detail(!had.methods().is_empty())),
                )?;
            }
            let methods = had.methods();
            if !methods.is_empty() {
                s.notify(
                    tx,
                    &user.email,
                    MailKind::FactorReset {
                        methods,
                        by_admin: Some(format!("the {OPERATOR}")),
                    },
                )?;
            }
            Ok(OperatorReset {
                user,
                had,
                sessions_ended,
            })
        })?;
        Ok(reset)
    }

    /// Opt the member with this email out of `org`'s MFA enforcement, or
    /// with `opt_out` false withdraw the opt-out (audited `mfa_opt_out` or
    /// `mfa_opt_out_removed`), as `PUT /user/users/{id}/membership` with
    /// `{"mfaOptOut": …}` does. Takes effect at the next login. Returns
    /// whether anything changed.
    pub fn set_mfa_opt_out(&self, org: OrgId, email: &str, opt_out: bool) -> MfaResult<bool> {
        let email = normalize_email(email).map_err(|_| MfaError::NotFound("user"))?;
        let now = self.service.now();
        let changed = self.service.write(|tx| {
            tx.org(org)?.ok_or(MfaError::NotFound("org"))?;
            let user = tx
                .user_by_email(&email)?
                .ok_or(MfaError::NotFound("user"))?;
            let mut m = tx
                .membership_for_update(user.id, org)?
                .ok_or(MfaError::NotFound("membership"))?;
            if m.mfa_opt_out == opt_out {
                return Ok(false);
            }
            m.mfa_opt_out = opt_out;
            tx.update_membership(&m)?;
            audit(
                tx,
                now,
                Some(org),
                Actor::NO_ONE,
                Some(user.id),
                super::orgs::opt_out_action(opt_out),
                audit_detail(""),
            )?;
            if opt_out {
                self.service
                    .notify_opted_out(tx, &email, format!("the {OPERATOR}"))?;
            }
            Ok(true)
        })?;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::InMemoryStore;
    use crate::policy::MfaRequirement;
    use crate::ports::{FixedClock, MemoryMailer, OsRandomness};

    const PASSWORD: &str = "a long password";

    fn service() -> (MfaService<InMemoryStore>, Arc<MemoryMailer>) {
        let mailer = Arc::new(MemoryMailer::default());
        let service = MfaService::new(
            InMemoryStore::new(),
            mailer.clone(),
            Arc::new(FixedClock::new(Timestamp(1_700_000_000))),
            Arc::new(OsRandomness),
            ServiceConfig::default(),
        )
        .unwrap();
        (service, mailer)
    }

    fn operator_events(s: &MfaService<InMemoryStore>) -> Vec<AuditEvent> {
        s.store
            .read(|tx| Ok(tx.audit_events(&AuditFilter::default(), 0, 1000)?.0))
            .unwrap()
            .into_iter()
            .filter(|e| e.detail.ends_with("by the operator"))
            .collect()
    }

    #[test]
    fn break_glass_reset_of_the_last_admin() {
        let (s, mailer) = service();
        let console = OperatorConsole::new(&s);
        let org = console.create_org("Acme").unwrap();
        let user = console
            .create_user(&OperatorNewUser {
                email: "Admin@Example.com".into(),
                first_name: "Ada".into(),
                last_name: "Admin".into(),
                password: PASSWORD.into(),
                is_super_admin: false,
                org: Some(org.id),
                is_org_admin: true,
            })
            .unwrap();
        assert_eq!(user.email, "admin@example.com");
        assert!(console.set_mfa_enforced(org.id, true).unwrap());
        assert!(!console.set_mfa_enforced(org.id, true).unwrap(), "no-op");

        // The admin enrolls, then loses the phone.
        let login = s.login("admin@example.com", PASSWORD, None).unwrap();
        assert_eq!(login.decision.requirement, MfaRequirement::SetupRequired);
        let partial = s.authenticate(&login.token).unwrap();
        let pending = s.start_authenticator_enrollment(&partial).unwrap();
        let code = mfa_totp::totp(&pending.secret, s.now().unix_secs(), &s.config().totp);
        let full = s
            .confirm_authenticator_enrollment(&partial, &code)
            .unwrap()
            .unwrap();
        let login = s.login("admin@example.com", PASSWORD, None).unwrap();
        assert_eq!(
            login.decision.requirement,
            MfaRequirement::ChallengeRequired
        );

        let reset = console.reset_mfa("admin@example.com").unwrap();
        assert!(reset.had.authenticator);
        assert!(reset.sessions_ended >= 1);
        assert_eq!(s.authenticate(&full.token), Err(MfaError::Unauthorized));
        let login = s.login("admin@example.com", PASSWORD, None).unwrap();
        assert_eq!(login.decision.requirement, MfaRequirement::SetupRequired);
        assert!(
            mailer
                .sent()
                .iter()
                .any(|m| matches!(&m.kind, MailKind::FactorReset { by_admin: Some(by), .. } if by == "the operator"))
        );

        // Opt-out, then back.
        assert!(
            console
                .set_mfa_opt_out(org.id, "admin@example.com", true)
                .unwrap()
        );
        let login = s.login("admin@example.com", PASSWORD, None).unwrap();
        assert_eq!(login.decision.requirement, MfaRequirement::None);
        assert!(
            console
                .set_mfa_opt_out(org.id, "admin@example.com", false)
                .unwrap()
        );

        let actions: Vec<AuditAction> = operator_events(&s).iter().map(|e| e.action).collect();
        for action in [
            AuditAction::OrgCreated,
            AuditAction::UserCreated,
            AuditAction::MembershipCreated,
            AuditAction::MfaEnforced,
            AuditAction::MfaReset,
            AuditAction::MfaOptOut,
            AuditAction::MfaOptOutRemoved,
        ] {
            assert!(
                actions.contains(&action),
                "{action:?} not audited: {actions:?}"
            );
        }
        assert!(
            operator_events(&s)
                .iter()
                .all(|e| e.actor_user_id.is_none())
        );
    }

    #[test]
    fn refusals() {
        let (s, _) = service();
        let console = OperatorConsole::new(&s);
        let org = console.create_org("Acme").unwrap();
        let new = |email: &str, org: Option<OrgId>, admin: bool| OperatorNewUser {
            email: email.into(),
            first_name: String::new(),
            last_name: String::new(),
            password: PASSWORD.into(),
            is_super_admin: false,
            org,
            is_org_admin: admin,
        };
        console
            .create_user(&new("a@example.com", None, false))
            .unwrap();
        assert!(matches!(
            console.create_user(&new("a@example.com", None, false)),
            Err(MfaError::Conflict(_))
        ));
        assert!(matches!(
            console.create_user(&new("b@example.com", None, true)),
            Err(MfaError::InvalidRequest(_))
        ));
        assert_eq!(
            console.create_user(&new("b@example.com", Some(OrgId(999)), false)),
            Err(MfaError::NotFound("org"))
        );
        let mut short = new("b@example.com", None, false);
        short.password = "short".into();
        assert!(matches!(
            console.create_user(&short),
            Err(MfaError::InvalidRequest(_))
        ));
        assert!(matches!(
            console.create_org(""),
            Err(MfaError::InvalidRequest(_))
        ));
        assert_eq!(
            console.reset_mfa("nobody@example.com"),
            Err(MfaError::NotFound("user"))
        );
        assert_eq!(
            console.set_mfa_enforced(OrgId(999), true),
            Err(MfaError::NotFound("org"))
        );
        assert_eq!(
            console.set_mfa_opt_out(org.id, "a@example.com", true),
            Err(MfaError::NotFound("membership"))
        );
        // add-member makes the membership, then promotes it.
        let (m, created) = console.add_member(org.id, "a@example.com", false).unwrap();
        assert!(created && !m.is_admin);
        let (m, created) = console.add_member(org.id, "a@example.com", true).unwrap();
        assert!(!created && m.is_admin);
        assert_eq!(
            console.add_member(org.id, "nobody@example.com", false),
            Err(MfaError::NotFound("user"))
        );
    }
}

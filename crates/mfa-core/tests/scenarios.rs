//! The seed scenarios end to end through the service, with the in-memory
//! store, the memory mailer and a fixed clock.

use std::sync::Arc;

use mfa_core::ports::{FixedClock, MemoryMailer, OsRandomness};
use mfa_core::service::{
    CONFIRMED_EMAIL_CHANGE_RETENTION_SECS, ENDED_SESSION_RETENTION_SECS,
    LOCKOUT_NOTICE_INTERVAL_SECS, MfaStatus, NewUserRequest, OrgPatch, PURGE_BATCH, UserRef,
};
use mfa_core::*;
use mfa_totp::{OtpauthUri, Secret};

const T0: i64 = 1_700_000_000;
const ADMIN_EMAIL: &str = "admin@example.com";
const PASSWORD: &str = "correct horse battery";

struct World {
    svc: MfaService<InMemoryStore>,
    clock: Arc<FixedClock>,
    mailer: Arc<MemoryMailer>,
    admin: FullCaller,
    org: OrgId,
}

fn ok<T>(r: MfaResult<T>) -> T {
    r.unwrap_or_else(|e| panic!("unexpected error: {e:?}"))
}

fn world() -> World {
    world_with(ServiceConfig::default())
}

fn world_with(config: ServiceConfig) -> World {
    let clock = Arc::new(FixedClock::new(Timestamp(T0)));
    let mailer = Arc::new(MemoryMailer::default());
    let svc = ok(MfaService::new(
        InMemoryStore::new(),
        mailer.clone(),
        clock.clone(),
        Arc::new(OsRandomness),
        config,
    ));
    let (_, org) =
        ok(svc.bootstrap(ADMIN_EMAIL, PASSWORD, "Acme")).unwrap_or_else(|| panic!("bootstrap"));
    let login = ok(svc.login(ADMIN_EMAIL, PASSWORD, None));
    assert_eq!(login.decision.requirement, MfaRequirement::None);
    let admin = ok(ok(svc.authenticate(&login.token)).into_full());
    World {
        svc,
        clock,
        mailer,
        admin,
        org: org.id,
    }
}

impl World {
    /// The admin signed in again: a session the clock's advance ended (idle
    /// or expired) no longer administers.
    fn sign_admin_in_again(&mut self) {
        let login = ok(self.svc.login(ADMIN_EMAIL, PASSWORD, None));
        self.admin = ok(ok(self.svc.authenticate(&login.token)).into_full());
    }

    fn add_user(&self, email: &str) -> UserId {
        ok(self.svc.create_user(
            &self.admin,
            &NewUserRequest {
                email: email.into(),
                first_name: "Valentina".into(),
                last_name: "Rodriguez".into(),
                password: PASSWORD.into(),
                is_admin: false,
            },
        ))
        .user
        .id
    }

    fn login(&self, email: &str) -> (service::LoginResult, Caller) {
        let r = ok(self.svc.login(email, PASSWORD, None));
        let c = ok(self.svc.authenticate(&r.token));
        (r, c)
    }

    fn now(&self) -> u64 {
        self.svc.now().unix_secs()
    }

    /// Enroll an authenticator on a partial session; returns its secret and
    /// the new full caller.
    fn enroll_authenticator(&self, partial: &Caller) -> (Secret, Caller) {
        let pending = ok(self.svc.start_authenticator_enrollment(partial));
        let uri = OtpauthUri::parse(&pending.otpauth_uri).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(uri.secret, pending.secret);
        let code = mfa_totp::totp(&pending.secret, self.now(), &uri.params);
        let token = ok(self.svc.confirm_authenticator_enrollment(partial, &code))
            .unwrap_or_else(|| panic!("a partial session gets a new token"));
        (pending.secret, ok(self.svc.authenticate(&token.token)))
    }

    fn code(&self, secret: &Secret) -> String {
        mfa_totp::totp(secret, self.now(), &self.svc.config().totp)
    }

    /// The token of the email-change confirmation mailed to `to`.
    fn change_confirmation_token(&self, to: &str) -> String {
        self.mailer
            .sent()
            .iter()
            .find_map(|m| match &m.kind {
                MailKind::EmailChangeConfirm { token, .. } if m.to == to => Some(token.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no confirmation mailed to {to}"))
    }

    fn audit_actions(&self) -> Vec<AuditAction> {
        self.audit_events_of(None)
            .iter()
            .map(|e| e.action)
            .collect()
    }

    /// The admin's org's audit events, newest first, of `action` or all.
    fn audit_events_of(&self, action: Option<AuditAction>) -> Vec<AuditEvent> {
        ok(self.svc.audit_events(
            &self.admin,
            AuditFilter {
                action,
                ..AuditFilter::default()
            },
            ok(service::page_request(0, 200)),
        ))
        .items
    }
}

#[test]
fn enforce_then_setup_then_enroll_then_challenge() {
    let w = world();
    let user = w.add_user("valentina@example.com");
    let (before, _) = w.login("valentina@example.com");
    assert_eq!(before.decision.requirement, MfaRequirement::None);

    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (setup, partial) = w.login("valentina@example.com");
    assert_eq!(setup.decision.requirement, MfaRequirement::SetupRequired);
    assert_eq!(partial.level, AssuranceLevel::Partial);
    assert_eq!(partial.clone().into_full(), Err(MfaError::MfaRequired));

    let (secret, full) = w.enroll_authenticator(&partial);
    assert_eq!(full.level, AssuranceLevel::Full);
    assert_eq!(full.user_id, user);
    // The partial token was revoked at once.
    assert_eq!(
        w.svc.authenticate(&setup.token),
        Err(MfaError::Unauthorized)
    );

    w.clock.advance(60);
    let (challenge, partial) = w.login("valentina@example.com");
    assert_eq!(
        challenge.decision.requirement,
        MfaRequirement::ChallengeRequired
    );
    assert_eq!(challenge.decision.methods, vec![MfaMethod::Authenticator]);
    // A partial session of a user with a factor cannot enroll another one.
    assert_eq!(
        w.svc.start_authenticator_enrollment(&partial),
        Err(MfaError::MfaRequired)
    );
    assert_eq!(
        w.svc.start_email_enrollment(&partial),
        Err(MfaError::MfaRequired)
    );
    let token = ok(w
        .svc
        .verify_mfa(&partial, MfaMethod::Authenticator, &w.code(&secret)));
    assert_eq!(
        ok(w.svc.authenticate(&token.token)).level,
        AssuranceLevel::Full
    );
    assert_eq!(
        w.svc.authenticate(&challenge.token),
        Err(MfaError::Unauthorized)
    );
    let actions = w.audit_actions();
    for a in [
        AuditAction::MfaEnforced,
        AuditAction::AuthenticatorEnrolled,
        AuditAction::MfaVerifySucceeded,
    ] {
        assert!(actions.contains(&a), "{a:?} not audited");
    }
    assert!(w.mailer.sent().iter().any(|m| m.kind
        == MailKind::FactorEnrolled {
            method: MfaMethod::Authenticator
        }));
}

/// A change of how a user signs in that removes no factor is mailed to
/// them, saying who made it: a new password (set by an admin or by
/// themselves), an opt-out of MFA (by an admin, or the user's own opt-in
/// withdrawn), and a set of recovery codes replaced.
#[test]
fn changes_of_how_a_user_signs_in_are_mailed() {
    let w = world();
    let user = w.add_user("val@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let notices = |w: &World| -> Vec<(SignInChange, bool)> {
        w.mailer
            .sent()
            .into_iter()
            .filter(|m| m.to == "val@example.com")
            .filter_map(|m| match m.kind {
                MailKind::SignInChanged { change, by_admin } => Some((change, by_admin.is_some())),
                _ => None,
            })
            .collect()
    };
    // The user's own changes, by them; the first set of codes replaces none.
    let (_, partial) = w.login("val@example.com");
    let (secret, full) = w.enroll_authenticator(&partial);
    let full = ok(full.into_full());
    ok(w.svc.generate_recovery_codes(&full));
    ok(w.svc.generate_recovery_codes(&full));
    let own = service::UserPatch {
        password: Some("a much longer passphrase 47".into()),
        current_password: Some(PASSWORD.into()),
        ..Default::default()
    };
    ok(w.svc.update_user(&full, user, &own));
    // An admin's, by an administrator.
    let set = service::UserPatch {
        password: Some("yet another long passphrase 58".into()),
        ..Default::default()
    };
    ok(w.svc.update_user(&w.admin, user, &set));
    let opt_out = MembershipPatch {
        mfa_opt_out: Some(true),
        ..Default::default()
    };
    ok(w.svc
        .update_membership(&w.admin, &UserRef::Id(user), &opt_out));
    // Nothing changed, nothing mailed.
    ok(w.svc
        .update_membership(&w.admin, &UserRef::Id(user), &opt_out));
    // The user's own opt-in: given, not mailed; withdrawn, mailed.
    w.clock.advance(30);
    let login = ok(w
        .svc
        .login("val@example.com", "yet another long passphrase 58", None));
    let partial = ok(w.svc.authenticate(&login.token));
    let token = ok(w
        .svc
        .verify_mfa(&partial, MfaMethod::Authenticator, &w.code(&secret)));
    let full = ok(ok(w.svc.authenticate(&token.token)).into_full());
    ok(w.svc.set_personal_opt_in(&full, true));
    ok(w.svc.set_personal_opt_in(&full, false));
    ok(w.svc.set_personal_opt_in(&full, false));
    assert_eq!(
        notices(&w),
        [
            (SignInChange::RecoveryCodesReplaced, false),
            (SignInChange::PasswordSet, false),
            (SignInChange::PasswordSet, true),
            (SignInChange::MfaOptOut, true),
            (SignInChange::PersonalMfaOptOut, false),
        ]
    );
}

/// Two verifications on one partial session: the first makes it full
/// under a new token; the second, resolved from the old token, is refused
/// and spends nothing. (Both answered with a token, the first dead on
/// arrival, and both recovery codes were used up.)
#[test]
fn one_token_is_made_full_once() {
    let w = world();
    w.add_user("twice@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("twice@example.com");
    let (_, full) = w.enroll_authenticator(&partial);
    let codes = ok(w.svc.generate_recovery_codes(&ok(full.into_full())));
    let (_, partial) = w.login("twice@example.com");
    let token = ok(w.svc.verify_mfa(&partial, MfaMethod::Recovery, &codes[0]));
    assert_eq!(
        w.svc.verify_mfa(&partial, MfaMethod::Recovery, &codes[1]),
        Err(MfaError::Unauthorized)
    );
    ok(w.svc.authenticate(&token.token));
    // The second code was not spent.
    let (_, again) = w.login("twice@example.com");
    ok(w.svc.verify_mfa(&again, MfaMethod::Recovery, &codes[1]));
}

/// A caller is resolved before a write: an admin's rights taken away
/// since, or the session ended, are not acted on. (An audit kept an
/// admin's `FullCaller`, demoted, logged out and deleted that admin, and
/// still switched the org's enforcement off with it.)
#[test]
fn a_kept_caller_loses_what_its_admin_lost() {
    let w = world();
    let bob = w.add_user("bob@example.com");
    let promote = MembershipPatch {
        is_admin: Some(true),
        ..Default::default()
    };
    ok(w.svc
        .update_membership(&w.admin, &UserRef::Id(bob), &promote));
    let (_, caller) = w.login("bob@example.com");
    let kept = ok(caller.into_full());
    // A caller built by hand for a session that does not exist is nobody.
    let (_, mut forged) = w.login("bob@example.com");
    forged.session_id = SessionId(424_242);
    forged.is_super_admin = true;
    let forged = ok(forged.into_full());
    assert_eq!(
        w.svc.create_org(&forged, "Evil"),
        Err(MfaError::Unauthorized)
    );
    ok(w.svc.set_mfa_enforced(&kept, true, false));

    let demote = MembershipPatch {
        is_admin: Some(false),
        ..Default::default()
    };
    ok(w.svc
        .update_membership(&w.admin, &UserRef::Id(bob), &demote));
    assert_eq!(
        w.svc.set_mfa_enforced(&kept, false, false),
        Err(MfaError::Forbidden)
    );
    assert_eq!(
        w.svc.reset_mfa(&kept, &[w.admin.user_id]),
        Err(MfaError::Forbidden)
    );
    // Made admin again: the same session works again; once it ends, not.
    ok(w.svc
        .update_membership(&w.admin, &UserRef::Id(bob), &promote));
    ok(w.svc.set_mfa_enforced(&kept, true, false));
    ok(w.svc.logout(&kept));
    assert_eq!(
        w.svc.set_mfa_enforced(&kept, false, false),
        Err(MfaError::Unauthorized)
    );
    assert!(ok(w.svc.get_org(&w.admin, w.org)).is_mfa_enforced);
}

#[test]
fn opt_out_means_no_mfa_and_opt_in_again_restores_it() {
    let w = world();
    let user = w.add_user("val@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let patch = MembershipPatch {
        mfa_opt_out: Some(true),
        ..Default::default()
    };
    ok(w.svc
        .update_membership(&w.admin, &UserRef::Id(user), &patch));
    assert_eq!(
        w.login("val@example.com").0.decision.requirement,
        MfaRequirement::None
    );
    // By reference (the email), as the seed's byRef=true.
    let patch = MembershipPatch {
        mfa_opt_out: Some(false),
        ..Default::default()
    };
    ok(w.svc
        .update_membership(&w.admin, &UserRef::Email("VAL@example.com".into()), &patch));
    assert_eq!(
        w.login("val@example.com").0.decision.requirement,
        MfaRequirement::SetupRequired
    );
    let actions = w.audit_actions();
    assert!(actions.contains(&AuditAction::MfaOptOut));
    assert!(actions.contains(&AuditAction::MfaOptOutRemoved));
}

#[test]
fn admin_reset_sends_user_back_to_setup_and_ends_sessions() {
    let w = world();
    let user = w.add_user("lost.phone@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("lost.phone@example.com");
    let (_, full) = w.enroll_authenticator(&partial);
    let _ = full;
    w.clock.advance(60);
    let (challenge, _) = w.login("lost.phone@example.com");
    assert_eq!(
        challenge.decision.requirement,
        MfaRequirement::ChallengeRequired
    );

    let factorless = w.add_user("no.factor@example.com");
    ok(w.svc.reset_mfa(&w.admin, &[user, factorless]));
    assert_eq!(
        w.svc.authenticate(&challenge.token),
        Err(MfaError::Unauthorized)
    );
    // The notice names what was removed, and goes only to whoever had
    // something (an audit got every kind named, and a notice for a user
    // with no factor).
    let notices: Vec<_> = w
        .mailer
        .sent()
        .into_iter()
        .filter(|m| matches!(m.kind, MailKind::FactorReset { .. }))
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].to, "lost.phone@example.com");
    assert!(matches!(
        &notices[0].kind,
        MailKind::FactorReset { methods, by_admin: Some(by) }
            if methods == &[MfaMethod::Authenticator] && !by.contains("administrator")
    ));
    // The admin is named with the org they act for: a member of several
    // orgs is told which org's admin it was.
    assert!(
        matches!(&notices[0].kind, MailKind::FactorReset { by_admin: Some(by), .. } if by == &format!("{ADMIN_EMAIL}, of \"Acme\"")),
        "{notices:?}"
    );
    assert_eq!(
        w.login("lost.phone@example.com").0.decision.requirement,
        MfaRequirement::SetupRequired
    );
    assert!(w.audit_actions().contains(&AuditAction::MfaReset));
    assert!(w.mailer.sent().iter().any(|m| matches!(
        &m.kind,
        MailKind::FactorReset {
            by_admin: Some(_),
            ..
        }
    )));
}

/// An admin's name and an org's name are text the admin writes: the notice
/// a member gets names the admin by address and quotes the org's name cut
/// short, so that neither can make a genuine notice read as a phishing mail.
#[test]
fn a_notice_names_the_admin_by_address_and_quotes_the_org_briefly() {
    let w = world();
    let user = w.add_user("member@example.com");
    let lure = service::UserPatch {
        first_name: Some("IT Security). Your account is suspended: visit".into()),
        last_name: Some("http://evil.example/restore to restore access (ref".into()),
        ..service::UserPatch::default()
    };
    ok(w.svc.update_user(&w.admin, w.admin.user_id, &lure));
    let org_name = "Acme Corporation. Urgent: restore access at http://evil.example now";
    let rename = OrgPatch {
        name: Some(org_name.into()),
        mfa_grace_period_hours: None,
    };
    ok(w.svc.update_org(&w.admin, w.org, &rename));
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("member@example.com");
    w.enroll_authenticator(&partial);
    ok(w.svc.reset_mfa(&w.admin, &[user]));
    let by = w
        .mailer
        .sent()
        .into_iter()
        .find_map(|m| match m.kind {
            MailKind::FactorReset { by_admin, .. } => by_admin,
            _ => None,
        })
        .expect("a reset notice");
    assert_eq!(
        by,
        format!("{ADMIN_EMAIL}, of \"Acme Corporation. Urgent: restore access…\"")
    );
    assert!(!by.contains("evil"), "{by}");
}

#[test]
fn reset_with_a_foreign_id_changes_nothing() {
    let w = world();
    let mine = w.add_user("mine@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("mine@example.com");
    w.enroll_authenticator(&partial);
    // A user who belongs to another org only.
    let globex = ok(w.svc.create_org(&w.admin, "Globex"));
    let stranger = w.add_user("stranger@example.com");
    ok(w.svc
        .add_member(&w.admin, globex.id, stranger, &MembershipPatch::default()));
    ok(w.svc.remove_member(&w.admin, w.org, stranger));

    assert_eq!(
        w.svc.reset_mfa(&w.admin, &[mine, stranger]),
        Err(MfaError::NotFound("user"))
    );
    assert_eq!(
        w.svc.reset_mfa(&w.admin, &[mine, UserId(9_999)]),
        Err(MfaError::NotFound("user"))
    );
    assert!(!w.audit_actions().contains(&AuditAction::MfaReset));
    w.clock.advance(60);
    assert_eq!(
        w.login("mine@example.com").0.decision.requirement,
        MfaRequirement::ChallengeRequired
    );
}

#[test]
fn another_orgs_admin_sees_nothing_of_this_org() {
    let w = world();
    let victim = w.add_user("victim@example.com");
    let globex = ok(w.svc.create_org(&w.admin, "Globex"));
    // An admin of Globex only.
    let rival = w.add_user("rival@example.com");
    let patch = MembershipPatch {
        is_admin: Some(true),
        ..Default::default()
    };
    ok(w.svc.add_member(&w.admin, globex.id, rival, &patch));
    ok(w.svc.remove_member(&w.admin, w.org, rival));
    let r = ok(w.svc.login("rival@example.com", PASSWORD, None));
    assert_eq!(r.org_id, globex.id);
    let rival = ok(ok(w.svc.authenticate(&r.token)).into_full());
    assert!(rival.is_org_admin);

    assert_eq!(
        w.svc.reset_mfa(&rival, &[victim]),
        Err(MfaError::NotFound("user"))
    );
    let opt_out = MembershipPatch {
        mfa_opt_out: Some(true),
        ..Default::default()
    };
    assert_eq!(
        w.svc
            .update_membership(&rival, &UserRef::Id(victim), &opt_out),
        Err(MfaError::NotFound("user"))
    );
    assert_eq!(
        w.svc.get_user(&rival, victim),
        Err(MfaError::NotFound("user"))
    );
    assert_eq!(
        w.svc
            .admin_reset_authenticator(&rival, "victim@example.com"),
        Err(MfaError::NotFound("user"))
    );
    assert_eq!(w.svc.get_org(&rival, w.org), Err(MfaError::NotFound("org")));
    assert_eq!(
        w.svc.update_org(&rival, w.org, &OrgPatch::default()),
        Err(MfaError::NotFound("org"))
    );
    assert_eq!(
        w.svc.get_membership(&rival, w.org, victim),
        Err(MfaError::NotFound("org"))
    );
    assert!(ok(w.svc.users_by_ids(&rival, &[victim])).is_empty());
    assert!(!ok(w.svc.email_exists(&rival, "victim@example.com")));
    let page = ok(w
        .svc
        .search_users(&rival, Some("victim"), ok(service::page_request(0, 20))));
    assert_eq!(page.total, 0);
}

#[test]
fn replayed_code_is_refused_audited_and_mailed() {
    let w = world();
    w.add_user("replay@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("replay@example.com");
    let (secret, _) = w.enroll_authenticator(&partial);
    // The enrollment code's step is used: the same code cannot log in.
    let used = w.code(&secret);
    let (_, partial) = w.login("replay@example.com");
    assert_eq!(
        w.svc.verify_mfa(&partial, MfaMethod::Authenticator, &used),
        Err(MfaError::InvalidCode)
    );
    w.clock.advance(30);
    let fresh = w.code(&secret);
    ok(w.svc.verify_mfa(&partial, MfaMethod::Authenticator, &fresh));
    let (_, partial) = w.login("replay@example.com");
    assert_eq!(
        w.svc.verify_mfa(&partial, MfaMethod::Authenticator, &fresh),
        Err(MfaError::InvalidCode)
    );
    assert!(w.audit_actions().contains(&AuditAction::ReplayRefused));
    assert!(
        w.mailer
            .sent()
            .iter()
            .any(|m| m.kind == MailKind::ReplayRefused)
    );
}

#[test]
fn malformed_codes_are_refused() {
    let w = world();
    w.add_user("format@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("format@example.com");
    let (secret, _) = w.enroll_authenticator(&partial);
    w.clock.advance(30);
    let good = w.code(&secret);
    let (_, partial) = w.login("format@example.com");
    for bad in [
        format!(" {good}"),
        format!("{good}0"),
        good[..5].to_string(),
        "１２３４５６".to_string(),
    ] {
        assert_eq!(
            w.svc.verify_mfa(&partial, MfaMethod::Authenticator, &bad),
            Err(MfaError::InvalidCode)
        );
    }
    ok(w.svc.verify_mfa(&partial, MfaMethod::Authenticator, &good));
}

#[test]
fn lockout_after_five_failures_doubles_and_success_resets() {
    let w = world();
    w.add_user("brute@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("brute@example.com");
    let (secret, _) = w.enroll_authenticator(&partial);
    w.clock.advance(30);
    let (_, partial) = w.login("brute@example.com");
    let wrong = |w: &World| {
        let good = w.code(&secret);
        let bad = if good == "000000" { "111111" } else { "000000" };
        w.svc.verify_mfa(&partial, MfaMethod::Authenticator, bad)
    };
    for _ in 0..4 {
        assert_eq!(wrong(&w), Err(MfaError::InvalidCode));
    }
    assert_eq!(
        wrong(&w),
        Err(MfaError::TooManyAttempts {
            retry_after_secs: 30
        })
    );
    // Even the right code is refused during the lockout, unchecked and
    // uncounted (the next lockout is the second, not the third), and each
    // refusal is audited.
    assert!(
        w.audit_events_of(Some(AuditAction::RefusedWhileLockedOut))
            .is_empty()
    );
    assert_eq!(
        w.svc
            .verify_mfa(&partial, MfaMethod::Authenticator, &w.code(&secret)),
        Err(MfaError::TooManyAttempts {
            retry_after_secs: 30
        })
    );
    w.clock.advance(10);
    assert_eq!(
        wrong(&w),
        Err(MfaError::TooManyAttempts {
            retry_after_secs: 20
        })
    );
    let refused = w.audit_events_of(Some(AuditAction::RefusedWhileLockedOut));
    let details: Vec<_> = refused.iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(
        details,
        [
            "authenticator code refused unchecked: locked out for 20 s more",
            "authenticator code refused unchecked: locked out for 30 s more",
        ]
    );
    assert!(
        refused
            .iter()
            .all(|e| e.target_user_id == Some(partial.user_id) && e.org_id == Some(w.org))
    );
    w.clock.advance(20);
    assert_eq!(
        wrong(&w),
        Err(MfaError::TooManyAttempts {
            retry_after_secs: 60
        })
    );
    w.clock.advance(60);
    assert_eq!(
        wrong(&w),
        Err(MfaError::TooManyAttempts {
            retry_after_secs: 120
        })
    );
    w.clock.advance(120);
    // Code failures do not block the password step.
    let (_, partial2) = w.login("brute@example.com");
    ok(w.svc
        .verify_mfa(&partial2, MfaMethod::Authenticator, &w.code(&secret)));
    // The success reset the counter: four more failures lock nothing.
    w.clock.advance(30);
    let (_, partial3) = w.login("brute@example.com");
    for _ in 0..4 {
        let good = w.code(&secret);
        let bad = if good == "000000" { "111111" } else { "000000" };
        assert_eq!(
            w.svc.verify_mfa(&partial3, MfaMethod::Authenticator, bad),
            Err(MfaError::InvalidCode)
        );
    }
    assert!(w.audit_actions().contains(&AuditAction::LockedOut));
}

#[test]
fn a_hash_with_older_parameters_is_replaced_at_the_next_login() {
    let w = world();
    let user = w.add_user("valentina@example.com");
    let stored_hash = || {
        ok(w.svc.store().read(|tx| Ok(tx.user(user)?)))
            .unwrap_or_else(|| panic!("user"))
            .password_hash
    };
    let current = stored_hash();
    assert!(
        current.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"),
        "{current}"
    );
    let older = crypto::PasswordParams {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };
    let old_hash =
        ok(ok(crypto::PasswordHasher::new(older, &OsRandomness)).hash(PASSWORD, &OsRandomness));
    ok(w.svc
        .store()
        .write(|tx| Ok(tx.replace_password_hash(user, &current, &old_hash)?)));

    // A wrong password changes nothing.
    assert_eq!(
        w.svc
            .login("valentina@example.com", "wrong horse battery", None)
            .err(),
        Some(MfaError::InvalidCredentials)
    );
    assert_eq!(stored_hash(), old_hash);

    // The right one logs in with the old hash and replaces it.
    w.login("valentina@example.com");
    let rehashed = stored_hash();
    assert!(
        rehashed.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"),
        "{rehashed}"
    );
    assert_ne!(rehashed, current, "a fresh salt");
    w.login("valentina@example.com");
    assert_eq!(stored_hash(), rehashed, "a current hash stays");
}

/// An NTP correction or a restored virtual machine may step the clock
/// back: a lockout set at a "now" still to come must not last for the
/// size of the step (hours without a login for every locked user).
#[test]
fn a_clock_stepped_back_ends_a_lockout_rather_than_stretching_it() {
    let w = world();
    w.add_user("pw@example.com");
    for _ in 0..5 {
        let _ = w.svc.login("pw@example.com", "wrong password", None);
    }
    assert_eq!(
        w.svc.login("pw@example.com", PASSWORD, None).map(|_| ()),
        Err(MfaError::TooManyAttempts {
            retry_after_secs: 30
        })
    );
    w.clock.advance(-3600);
    ok(w.svc.login("pw@example.com", PASSWORD, None));

    // The bound is the lockout's own length and a minute, for the password
    // step as for codes: a step back of 59 s keeps a 30 s lockout (89 s to
    // go), one of 61 s ends it. (Judged with the attempt counted in, the
    // password step's bound was the next, longer delay's.)
    w.clock.advance(3600);
    for _ in 0..5 {
        let _ = w.svc.login("pw@example.com", "wrong password", None);
    }
    w.clock.advance(-59);
    assert_eq!(
        w.svc.login("pw@example.com", PASSWORD, None).map(|_| ()),
        Err(MfaError::TooManyAttempts {
            retry_after_secs: 89
        })
    );
    w.clock.advance(-2);
    ok(w.svc.login("pw@example.com", PASSWORD, None));

    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("pw@example.com");
    let (secret, _) = w.enroll_authenticator(&partial);
    w.clock.advance(2 * 3600);
    let (_, partial) = w.login("pw@example.com");
    let mut last = Ok(());
    for _ in 0..5 {
        let good = w.code(&secret);
        let bad = if good == "000000" { "111111" } else { "000000" };
        last = w
            .svc
            .verify_mfa(&partial, MfaMethod::Authenticator, bad)
            .map(|_| ());
    }
    assert_eq!(
        last,
        Err(MfaError::TooManyAttempts {
            retry_after_secs: 30
        })
    );
    w.clock.advance(-3600);
    let (_, partial) = w.login("pw@example.com");
    ok(w.svc
        .verify_mfa(&partial, MfaMethod::Authenticator, &w.code(&secret)));
}

#[test]
fn password_failures_lock_the_password_step_apart() {
    let w = world();
    w.add_user("pw@example.com");
    for _ in 0..4 {
        assert_eq!(
            w.svc
                .login("pw@example.com", "wrong password", None)
                .map(|_| ()),
            Err(MfaError::InvalidCredentials)
        );
    }
    assert_eq!(
        w.svc
            .login("pw@example.com", "wrong password", None)
            .map(|_| ()),
        Err(MfaError::TooManyAttempts {
            retry_after_secs: 30
        })
    );
    assert_eq!(
        w.svc.login("pw@example.com", PASSWORD, None).map(|_| ()),
        Err(MfaError::TooManyAttempts {
            retry_after_secs: 30
        })
    );
    let refused = w.audit_events_of(Some(AuditAction::RefusedWhileLockedOut));
    assert_eq!(refused.len(), 1);
    assert_eq!(
        refused[0].detail,
        "password refused unchecked: locked out for 30 s more"
    );
    w.clock.advance(30);
    ok(w.svc.login("pw@example.com", PASSWORD, None));
    // Unknown emails look the same as wrong passwords.
    assert_eq!(
        w.svc
            .login("nobody@example.com", PASSWORD, None)
            .map(|_| ()),
        Err(MfaError::InvalidCredentials)
    );
}

/// A login's steps, as a server runs them apart: a login that never
/// finishes (refused by the server's password queue) is never counted;
/// one that finishes is decided then, after the attempts that finished
/// before it, whatever its password check found.
#[test]
fn a_login_is_counted_and_decided_when_it_finishes() {
    let w = world();
    w.add_user("steps@example.com");
    let checked = |password: &str| {
        let begun = ok(w.svc.login_begin("steps@example.com", None, None));
        ok(w.svc.login_check(begun, password))
    };
    // Begun and checked, never finished: nothing counted.
    for _ in 0..8 {
        checked("wrong password");
    }
    ok(w.svc.login("steps@example.com", PASSWORD, None));
    let successes = w.audit_events_of(Some(AuditAction::LoginSucceeded)).len();

    // A right password checked while five wrong ones race it, and decided
    // after them: refused as they are, no session.
    let right = checked(PASSWORD);
    let wrong: Vec<_> = (0..5).map(|_| checked("wrong password")).collect();
    for (i, login) in wrong.into_iter().enumerate() {
        let refusal = match i {
            4 => MfaError::TooManyAttempts {
                retry_after_secs: 30,
            },
            _ => MfaError::InvalidCredentials,
        };
        assert_eq!(w.svc.login_finish(login).map(|_| ()), Err(refusal));
    }
    assert_eq!(
        w.svc.login_finish(right).map(|_| ()),
        Err(MfaError::TooManyAttempts {
            retry_after_secs: 30
        })
    );
    assert_eq!(
        w.audit_events_of(Some(AuditAction::LoginSucceeded)).len(),
        successes,
        "no session was opened"
    );
    // Locked: a login begun now is refused before any hashing.
    assert_eq!(
        w.svc
            .login_begin("steps@example.com", None, None)
            .map(|_| ()),
        Err(MfaError::TooManyAttempts {
            retry_after_secs: 30
        })
    );
}

/// A locked password step refuses in milliseconds, without a credential:
/// its refusals are audited once a minute per address, counting those
/// left out, so that nobody can write hundreds of rows a second into an
/// org's trail. (Codes, which need the password first, keep one event
/// per refusal.)
#[test]
fn a_locked_password_step_is_audited_sparingly() {
    let w = world();
    w.add_user("pw@example.com");
    let login = |password: &str| w.svc.login("pw@example.com", password, None).map(|_| ());
    for _ in 0..5 {
        let _ = login("wrong password");
    }
    for _ in 0..3 {
        assert!(matches!(
            login(PASSWORD),
            Err(MfaError::TooManyAttempts { .. })
        ));
    }
    let details = |w: &World| -> Vec<String> {
        w.audit_events_of(Some(AuditAction::RefusedWhileLockedOut))
            .into_iter()
            .map(|e| e.detail)
            .collect()
    };
    assert_eq!(
        details(&w),
        ["password refused unchecked: locked out for 30 s more"]
    );
    // The lockout ends, a sixth failure locks for 60 s, and a refusal
    // within the minute is left out again.
    w.clock.advance(30);
    let _ = login("wrong password");
    assert!(matches!(
        login(PASSWORD),
        Err(MfaError::TooManyAttempts { .. })
    ));
    assert_eq!(details(&w).len(), 1);
    w.clock.advance(30);
    assert!(matches!(
        login(PASSWORD),
        Err(MfaError::TooManyAttempts { .. })
    ));
    assert_eq!(
        details(&w)[0],
        "password refused unchecked: locked out for 30 s more; 3 more refused since the last \
         such event (a minute records the first from each of 3 clients at most)"
    );
    // Within that minute, the owner trying from elsewhere is an event of
    // its own, with its address; again from there, left out.
    let owner: std::net::IpAddr = "203.0.113.7".parse().expect("an address");
    for _ in 0..2 {
        assert!(matches!(
            w.svc.login_begin("pw@example.com", None, Some(owner)),
            Err(MfaError::TooManyAttempts { .. })
        ));
    }
    // More clients in that minute: the third is recorded, no more, and an
    // IPv6 /64 is one client.
    for client in ["198.51.100.1", "198.51.100.2", "2001:db8::1", "2001:db8::2"] {
        let client = client.parse().expect("an address");
        assert!(matches!(
            w.svc.login_begin("pw@example.com", None, Some(client)),
            Err(MfaError::TooManyAttempts { .. })
        ));
    }
    let refusals = w.audit_events_of(Some(AuditAction::RefusedWhileLockedOut));
    let clients: Vec<_> = refusals.iter().map(|e| e.client).collect();
    let first: std::net::IpAddr = "198.51.100.1".parse().expect("an address");
    assert_eq!(clients, [Some(first), Some(owner), None, None]);
    assert!(
        refusals[0].detail.contains("; 1 more refused"),
        "{}",
        refusals[0].detail
    );
    // Each event counts what was left out before it: the third client's,
    // the owner's second try; the next minute's, the three clients after.
    w.clock.advance(60);
    // (The lockout is over by then: one more failure starts the next.)
    let _ = login("wrong password");
    assert!(matches!(
        w.svc.login_begin("pw@example.com", None, Some(first)),
        Err(MfaError::TooManyAttempts { .. })
    ));
    let refusals = w.audit_events_of(Some(AuditAction::RefusedWhileLockedOut));
    assert!(
        refusals[0].detail.ends_with(
            "; 3 more refused since the last such event (a minute records the first from \
             each of 3 clients at most)"
        ),
        "{}",
        refusals[0].detail
    );
}

#[test]
fn an_unknown_email_is_locked_out_as_a_known_one_is() {
    let w = world();
    w.add_user("known@example.com");
    let answers = |email: &str| -> Vec<MfaResult<()>> {
        let mut answers = Vec::new();
        let mut attempt = |w: &World, password: &str| {
            answers.push(w.svc.login(email, password, None).map(|_| ()));
        };
        for _ in 0..5 {
            attempt(&w, "wrong password");
        }
        attempt(&w, PASSWORD);
        w.clock.advance(30);
        attempt(&w, "wrong password");
        w.clock.advance(24 * 3600 + 1);
        attempt(&w, "wrong password");
        answers
    };
    let known = answers("known@example.com");
    let unknown = answers("unknown@example.com");
    let locked = |retry_after_secs| Err(MfaError::TooManyAttempts { retry_after_secs });
    assert_eq!(
        known,
        [
            Err(MfaError::InvalidCredentials),
            Err(MfaError::InvalidCredentials),
            Err(MfaError::InvalidCredentials),
            Err(MfaError::InvalidCredentials),
            locked(30),
            locked(30),
            locked(60),
            // Over a day later the failures are forgotten.
            Err(MfaError::InvalidCredentials),
        ]
    );
    assert_eq!(unknown, known);

    // The unknown email's failures are audited without a user or an org,
    // so no org admin sees them; the known user's in the user's org.
    let events = ok(w.svc.store().read(|tx| {
        Ok(tx
            .audit_events(&AuditFilter::default(), 0, 200)?
            .0
            .into_iter()
            .filter(|e| e.target_user_id.is_none() && e.action != AuditAction::OrgCreated)
            .map(|e| (e.action, e.org_id, e.detail))
            .collect::<Vec<_>>())
    }));
    let count = |action| events.iter().filter(|e| e.0 == action).count();
    assert_eq!(count(AuditAction::LoginFailed), 7);
    assert_eq!(count(AuditAction::LockedOut), 2);
    assert_eq!(count(AuditAction::RefusedWhileLockedOut), 1);
    assert!(events.iter().all(|e| e.1.is_none()), "{events:?}");

    // A purge deletes what was forgotten, and only that: the known
    // address's counter (its last failure is a day old by now), then,
    // a day later, the unknown one's. The unknown address's events go
    // with its failures (anyone can make them, no admin sees them): the
    // nine over a day old, then the last.
    let purged = |w: &World| {
        let p = ok(w.svc.purge());
        (p.password_failures, p.anonymous_audit_events)
    };
    assert_eq!(purged(&w), (1, 9));
    assert_eq!(purged(&w), (0, 0));
    w.clock.advance(24 * 3600 + 1);
    assert_eq!(purged(&w), (1, 1));
    // The known user's stay, whatever their age.
    let known_events = ok(w.svc.store().read(|tx| {
        Ok(tx
            .audit_events(&AuditFilter::default(), 0, 200)?
            .0
            .into_iter()
            .filter(|e| e.action == AuditAction::LoginFailed)
            .count())
    }));
    assert_eq!(known_events, 7);
}

#[test]
fn a_lockout_follows_the_address_when_its_account_is_made_changed_or_deleted() {
    let w = world();
    let wrong = |email: &str| w.svc.login(email, "wrong password", None).map(|_| ());
    let fifth_failure = Err(MfaError::TooManyAttempts {
        retry_after_secs: 30,
    });
    // Four failures while the address has no user; the account made for
    // it then takes them over, so its first failure is the fifth.
    for _ in 0..4 {
        assert_eq!(
            wrong("later@example.com"),
            Err(MfaError::InvalidCredentials)
        );
    }
    let user = w.add_user("later@example.com");
    assert_eq!(wrong("later@example.com"), fifth_failure);

    // Deleted, the account leaves its lockout with the address.
    ok(w.svc.delete_user(&w.admin, user));
    assert!(matches!(
        wrong("later@example.com"),
        Err(MfaError::TooManyAttempts { .. })
    ));

    // An email change leaves the old address's failures with that
    // address, and the user takes over the new one's.
    let mover = w.add_user("old@example.com");
    let (_, caller) = w.login("old@example.com");
    let patch = service::UserPatch {
        email: Some("new@example.com".into()),
        current_password: Some(PASSWORD.into()),
        ..Default::default()
    };
    ok(w.svc.update_user(&ok(caller.into_full()), mover, &patch));
    for _ in 0..4 {
        assert_eq!(wrong("old@example.com"), Err(MfaError::InvalidCredentials));
    }
    for _ in 0..3 {
        assert_eq!(wrong("new@example.com"), Err(MfaError::InvalidCredentials));
    }
    ok(w.svc
        .confirm_email_change(&w.change_confirmation_token("new@example.com"), None));
    assert_eq!(wrong("old@example.com"), fifth_failure);
    assert_eq!(wrong("new@example.com"), Err(MfaError::InvalidCredentials));
    assert_eq!(wrong("new@example.com"), fifth_failure);
}

fn last_code(mailer: &MemoryMailer) -> String {
    mailer
        .sent()
        .iter()
        .rev()
        .find_map(|m| match &m.kind {
            MailKind::EnrollmentCode { code, .. } | MailKind::LoginCode { code, .. } => {
                Some(code.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no code mailed"))
}

#[test]
fn a_code_for_a_factor_the_user_lacks_is_not_enrolled_even_when_locked_out() {
    let w = world();
    w.add_user("mailonly@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("mailonly@example.com");
    ok(w.svc.start_email_enrollment(&partial));
    ok(w.svc
        .confirm_email_enrollment(&partial, &last_code(&w.mailer)));
    let (_, partial) = w.login("mailonly@example.com");
    // Wrong codes count once a login code was sent (before, they are
    // `not_enrolled`: `a_code_checked_before_any_was_sent_is_not_counted`).
    w.clock.advance(31);
    ok(w.svc.send_login_code(&partial));
    for _ in 0..4 {
        assert_eq!(
            w.svc.verify_mfa(&partial, MfaMethod::Email, "000000"),
            Err(MfaError::InvalidCode)
        );
    }
    assert!(matches!(
        w.svc.verify_mfa(&partial, MfaMethod::Email, "000000"),
        Err(MfaError::TooManyAttempts { .. })
    ));
    // Locked out; an authenticator code could never be checked (there is
    // no authenticator): `not_enrolled`, as for an email code without an
    // email factor, and no refusal is audited.
    assert!(matches!(
        w.svc
            .verify_mfa(&partial, MfaMethod::Authenticator, "123456"),
        Err(MfaError::NotEnrolled(_))
    ));
    assert!(
        w.audit_events_of(Some(AuditAction::RefusedWhileLockedOut))
            .is_empty()
    );
    assert!(matches!(
        w.svc.verify_mfa(&partial, MfaMethod::Email, "000000"),
        Err(MfaError::TooManyAttempts { .. })
    ));
    assert_eq!(
        w.audit_events_of(Some(AuditAction::RefusedWhileLockedOut))
            .len(),
        1
    );
}

#[test]
fn email_factor_enroll_and_login() {
    let w = world();
    w.add_user("mailonly@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("mailonly@example.com");
    let sent = ok(w.svc.start_email_enrollment(&partial));
    assert_eq!(sent.sent_to, "m***@example.com");
    // One send per 30 s: said as such, not as a lockout.
    assert!(matches!(
        w.svc.start_email_enrollment(&partial),
        Err(MfaError::MailThrottled { .. })
    ));
    let code = last_code(&w.mailer);
    let token =
        ok(w.svc.confirm_email_enrollment(&partial, &code)).unwrap_or_else(|| panic!("token"));
    let full = ok(w.svc.authenticate(&token.token));
    assert_eq!(full.level, AssuranceLevel::Full);
    // Single use.
    assert_eq!(
        w.svc.confirm_email_enrollment(&full, &code),
        Err(MfaError::AlreadyEnrolled(
            "the email factor is already verified"
        ))
    );

    w.clock.advance(31);
    let (login, partial) = w.login("mailonly@example.com");
    assert_eq!(login.decision.methods, vec![MfaMethod::Email]);
    ok(w.svc.send_login_code(&partial));
    let first = last_code(&w.mailer);
    w.clock.advance(31);
    ok(w.svc.send_login_code(&partial));
    let second = last_code(&w.mailer);
    // A new code voids the previous one.
    if first != second {
        assert_eq!(
            w.svc.verify_mfa(&partial, MfaMethod::Email, &first),
            Err(MfaError::InvalidCode)
        );
    }
    ok(w.svc.verify_mfa(&partial, MfaMethod::Email, &second));
    let (_, partial) = w.login("mailonly@example.com");
    assert_eq!(
        w.svc.verify_mfa(&partial, MfaMethod::Email, &second),
        Err(MfaError::InvalidCode)
    );
}

#[test]
fn email_code_expires_and_dead_mail_leaves_no_code() {
    let w = world();
    w.add_user("expiry@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("expiry@example.com");
    ok(w.svc.start_email_enrollment(&partial));
    let code = last_code(&w.mailer);
    w.clock.advance(600);
    assert_eq!(
        w.svc.confirm_email_enrollment(&partial, &code),
        Err(MfaError::CodeExpired)
    );

    let (_, partial) = w.login("expiry@example.com");
    // A mailer that refuses for good (not transient).
    w.mailer.set_failing(true);
    assert!(matches!(
        w.svc.start_email_enrollment(&partial),
        Err(MfaError::MailRefused(_))
    ));
    w.mailer.set_failing(false);
    // The failed send did not start the throttle or leave a code behind.
    ok(w.svc.start_email_enrollment(&partial));
}

#[test]
fn recovery_codes_log_in_once_each_and_reset_the_authenticator() {
    let w = world();
    w.add_user("recovery@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("recovery@example.com");
    let (_, full) = w.enroll_authenticator(&partial);
    let codes = ok(w.svc.generate_recovery_codes(&ok(full.into_full())));
    assert_eq!(codes.len(), 10);

    let (login, partial) = w.login("recovery@example.com");
    assert!(login.decision.methods.contains(&MfaMethod::Recovery));
    ok(w.svc
        .verify_mfa(&partial, MfaMethod::Recovery, &codes[0].to_uppercase()));
    let (_, partial) = w.login("recovery@example.com");
    assert_eq!(
        w.svc.verify_mfa(&partial, MfaMethod::Recovery, &codes[0]),
        Err(MfaError::InvalidCode)
    );
    // A bare partial session cannot reset the authenticator; a recovery code can.
    assert_eq!(
        w.svc.self_reset_authenticator(&partial, None),
        Err(MfaError::MfaRequired)
    );
    let token = ok(w.svc.login("recovery@example.com", PASSWORD, None)).token;
    let before = ok(status_of_token_agrees(&w, &token));
    assert!(before.factors.authenticator);
    assert_eq!(before.factors.recovery_codes_left, 9);
    ok(w.svc.self_reset_authenticator(&partial, Some(&codes[1])));
    assert!(!ok(w.svc.mfa_status(&partial)).factors.authenticator);
    // The reset ended the user's other sessions.
    assert_eq!(
        status_of_token_agrees(&w, &token),
        Err(MfaError::Unauthorized)
    );
    let token = ok(w.svc.login("recovery@example.com", PASSWORD, None)).token;
    let after = ok(status_of_token_agrees(&w, &token));
    assert!(!after.factors.authenticator);
    assert_eq!(after.factors.recovery_codes_left, 8);
    assert!(
        w.mailer
            .sent()
            .iter()
            .any(|m| matches!(m.kind, MailKind::RecoveryCodeUsed { remaining: 9 }))
    );
    // The code spent on the reset is mailed as a code spent, beside the
    // reset (an audit saw only "removed by you", and the count drop by two).
    assert!(
        w.mailer
            .sent()
            .iter()
            .any(|m| matches!(m.kind, MailKind::RecoveryCodeUsed { remaining: 8 }))
    );
    // Without a verified factor the eight codes left stand in for
    // nothing: the login asks for setup, and a code does not skip it.
    let (login, partial) = w.login("recovery@example.com");
    assert_eq!(login.decision.requirement, MfaRequirement::SetupRequired);
    assert!(matches!(
        w.svc.verify_mfa(&partial, MfaMethod::Recovery, &codes[2]),
        Err(MfaError::NotEnrolled(_))
    ));
    assert!(matches!(
        w.svc
            .verify_mfa_of_token(&login.token, MfaMethod::Recovery, &codes[2]),
        Err(MfaError::NotEnrolled(_))
    ));
    // Nor was the refusal a failed attempt: enrolling works as ever.
    w.enroll_authenticator(&partial);
}

/// The steps of a recovery code's check are public (a server runs the
/// hashing one on threads of its own); none of them lets a caller past
/// what the whole call refuses.
#[test]
fn new_recovery_codes_are_stored_for_their_own_caller_while_still_allowed() {
    let w = world();
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let mut fulls = Vec::new();
    for email in ["owner@example.com", "other@example.com"] {
        w.add_user(email);
        let (_, partial) = w.login(email);
        let (_, full) = w.enroll_authenticator(&partial);
        fulls.push(ok(full.into_full()));
    }
    let (owner, other) = (&fulls[0], &fulls[1]);
    let hashed_for_owner = || {
        let new = ok(w.svc.recovery_codes_begin(owner));
        assert!(!format!("{new:?}").contains('-'), "{new:?}");
        ok(w.svc.hash_recovery_codes(new))
    };
    // Codes made for one user are stored for no other.
    assert_eq!(
        w.svc.recovery_codes_finish(other, hashed_for_owner()),
        Err(MfaError::Forbidden)
    );
    // A factor removed between the check and the store refuses them.
    let hashed = hashed_for_owner();
    ok(w.svc.self_reset_authenticator(owner, None));
    assert!(matches!(
        w.svc.recovery_codes_finish(owner, hashed),
        Err(MfaError::NotEnrolled(_))
    ));
    // The other user's own codes are stored.
    let new = ok(w.svc.recovery_codes_begin(other));
    let hashed = ok(w.svc.hash_recovery_codes(new));
    assert_eq!(ok(w.svc.recovery_codes_finish(other, hashed)).len(), 10);

    // Two requests at once: the first stored is shown and works, the
    // second is refused, rather than shown codes the first replaced
    // (before, both were shown and only the last stored worked).
    let hashed_for_other = || {
        let new = ok(w.svc.recovery_codes_begin(other));
        ok(w.svc.hash_recovery_codes(new))
    };
    let (first, second) = (hashed_for_other(), hashed_for_other());
    let shown = ok(w.svc.recovery_codes_finish(other, first));
    assert!(matches!(
        w.svc.recovery_codes_finish(other, second),
        Err(MfaError::Conflict(_))
    ));
    // One after the other, each replaces the one before.
    let later = hashed_for_other();
    assert_ne!(ok(w.svc.recovery_codes_finish(other, later)), shown);
}

#[test]
fn the_steps_of_a_recovery_code_check_serve_only_their_own_caller() {
    let w = world();
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let mut codes = Vec::new();
    let mut partials = Vec::new();
    for email in ["owner@example.com", "other@example.com"] {
        w.add_user(email);
        let (_, partial) = w.login(email);
        let (_, full) = w.enroll_authenticator(&partial);
        codes.push(ok(w.svc.generate_recovery_codes(&ok(full.into_full()))));
        partials.push(w.login(email).1);
    }
    let (owner, other) = (&partials[0], &partials[1]);
    let check_for_owner = || {
        let check = ok(w.svc.recovery_code_begin(owner, &codes[0][0]));
        w.svc.check_recovery_code(check)
    };

    // The owner's code, checked for the owner, serves no other user.
    assert_eq!(
        w.svc.verify_recovery_code(other, check_for_owner()),
        Err(MfaError::InvalidCode)
    );
    assert_eq!(
        w.svc.self_reset_finish(other, Some(check_for_owner())),
        Err(MfaError::InvalidCode)
    );
    // A partial session skips no proof by leaving the check out.
    assert_eq!(
        w.svc.self_reset_finish(other, None),
        Err(MfaError::MfaRequired)
    );
    assert!(ok(w.svc.mfa_status(other)).factors.authenticator);

    // The code was not spent: it still logs its owner in, once.
    ok(w.svc.verify_recovery_code(owner, check_for_owner()));
    let owner = w.login("owner@example.com").1;
    let check = ok(w.svc.recovery_code_begin(&owner, &codes[0][0]));
    assert_eq!(
        w.svc
            .verify_recovery_code(&owner, w.svc.check_recovery_code(check)),
        Err(MfaError::InvalidCode)
    );
}

#[test]
fn overwriting_a_verified_authenticator_needs_a_reset() {
    let w = world();
    w.add_user("twice@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("twice@example.com");
    let (_, full) = w.enroll_authenticator(&partial);
    assert_eq!(
        w.svc.start_authenticator_enrollment(&full),
        Err(MfaError::AlreadyEnrolled(
            "an authenticator is already enrolled; reset it first"
        ))
    );
    ok(w.svc.self_reset_authenticator(&full, None));
    ok(w.svc.start_authenticator_enrollment(&full));
}

#[test]
fn grace_period_defers_setup() {
    let w = world();
    w.add_user("grace@example.com");
    ok(w.svc.update_org(
        &w.admin,
        w.org,
        &OrgPatch {
            name: None,
            mfa_grace_period_hours: Some(24),
        },
    ));
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (login, _) = w.login("grace@example.com");
    assert_eq!(login.decision.requirement, MfaRequirement::None);
    assert_eq!(login.decision.setup_due_at, Some(Timestamp(T0 + 24 * 3600)));
    w.clock.advance(24 * 3600);
    assert_eq!(
        w.login("grace@example.com").0.decision.requirement,
        MfaRequirement::SetupRequired
    );
}

#[test]
fn a_partial_session_never_outlives_a_full_one() {
    let w = world_with(ServiceConfig {
        session_ttl_secs: 120,
        ..ServiceConfig::default()
    });
    w.add_user("short@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (login, _) = w.login("short@example.com");
    assert_eq!(login.decision.requirement, MfaRequirement::SetupRequired);
    assert_eq!(login.expires_at, Timestamp(T0 + 120));
    w.clock.advance(121);
    assert_eq!(
        w.svc.authenticate(&login.token).map(|_| ()),
        Err(MfaError::Unauthorized)
    );
    let (login, _) = w.login("short@example.com");
    assert_eq!(login.expires_at, Timestamp(T0 + 121 + 120));
}

/// The status read that resolves its own token answers as `authenticate`
/// followed by `mfa_status` would.
fn status_of_token_agrees(w: &World, token: &str) -> MfaResult<MfaStatus> {
    let of_token = w.svc.mfa_status_of_token(token);
    let apart = w
        .svc
        .authenticate(token)
        .and_then(|caller| w.svc.mfa_status(&caller));
    assert_eq!(of_token, apart);
    of_token
}

#[test]
fn sessions_end_when_idle_expired_or_logged_out() {
    let w = world();
    w.add_user("session@example.com");
    let (login, caller) = w.login("session@example.com");
    w.clock.advance(29 * 60);
    ok(status_of_token_agrees(&w, &login.token));
    w.clock.advance(29 * 60);
    ok(w.svc.authenticate(&login.token));
    w.clock.advance(29 * 60);
    // Seen 29 minutes ago: still live (the status read notes it too).
    ok(w.svc.mfa_status_of_token(&login.token));
    w.clock.advance(29 * 60);
    ok(w.svc.authenticate(&login.token));
    w.clock.advance(31 * 60);
    assert_eq!(
        w.svc.authenticate(&login.token),
        Err(MfaError::Unauthorized)
    );
    assert_eq!(
        status_of_token_agrees(&w, &login.token),
        Err(MfaError::Unauthorized)
    );
    let (login, caller2) = w.login("session@example.com");
    let _ = caller;
    ok(w.svc.logout(&caller2));
    assert_eq!(
        w.svc.authenticate(&login.token),
        Err(MfaError::Unauthorized)
    );
    for token in [login.token.as_str(), "not a token", ""] {
        assert_eq!(
            status_of_token_agrees(&w, token),
            Err(MfaError::Unauthorized)
        );
    }
}

#[test]
fn inactive_membership_cannot_log_in_and_loses_its_sessions() {
    let w = world();
    let user = w.add_user("inactive@example.com");
    let (login, _) = w.login("inactive@example.com");
    let patch = MembershipPatch {
        is_active: Some(false),
        ..Default::default()
    };
    ok(w.svc
        .update_membership(&w.admin, &UserRef::Id(user), &patch));
    assert_eq!(
        status_of_token_agrees(&w, &login.token),
        Err(MfaError::Unauthorized)
    );
    assert_eq!(
        w.svc
            .login("inactive@example.com", PASSWORD, None)
            .map(|_| ()),
        Err(MfaError::SignInRefused(
            "this account's access is disabled in each of its orgs"
        ))
    );
    let counts = ok(w.svc.membership_counts(&w.admin));
    assert_eq!(
        (counts.licensed, counts.enabled, counts.inactive),
        (2, 1, 1)
    );
}

#[test]
fn email_change_waits_for_confirmation() {
    let w = world();
    let user = w.add_user("old@example.com");
    let (_, caller) = w.login("old@example.com");
    let caller = ok(caller.into_full());
    let patch = service::UserPatch {
        email: Some("new@example.com".into()),
        ..Default::default()
    };
    // A self-service change needs the current password: missing, it is a
    // bad request, not a wrong password counted toward the lockout.
    assert!(matches!(
        w.svc.update_user(&caller, user, &patch),
        Err(MfaError::InvalidRequest(why)) if why.contains("currentPassword is required")
    ));
    let patch = service::UserPatch {
        current_password: Some(PASSWORD.into()),
        ..patch
    };
    let updated = ok(w.svc.update_user(&caller, user, &patch));
    assert_eq!(updated.user.email, "old@example.com");
    let token = w.change_confirmation_token("new@example.com");
    assert!(w.mailer.sent().iter().any(|m| m.to == "old@example.com"
        && matches!(m.kind, MailKind::EmailChangeNotice { by_admin: None, .. })));
    let globex = ok(w.svc.create_org(&w.admin, "Globex"));
    ok(w.svc
        .add_member(&w.admin, globex.id, user, &Default::default()));
    ok(w.svc.confirm_email_change(&token, None));
    assert_eq!(
        w.svc.confirm_email_change(&token, None),
        Err(MfaError::InvalidCode)
    );
    ok(w.svc.login("new@example.com", PASSWORD, None));
    // The old address is told that it no longer signs in (it had no email
    // factor to lose).
    assert!(w.mailer.sent().iter().any(|m| m.to == "old@example.com"
        && matches!(
            &m.kind,
            MailKind::EmailChanged {
                new_email_masked,
                email_factor_removed: false,
            } if new_email_masked == "n***@example.com"
        )));
    // The change is in the audit trail of each of the user's orgs.
    let changed = w.audit_events_of(Some(AuditAction::EmailChanged));
    assert_eq!(changed.len(), 1);
    assert_eq!(
        changed[0].detail,
        "from o***@example.com to n***@example.com"
    );
    let in_globex = ok(w.svc.store().read(|tx| {
        let filter = AuditFilter {
            org_id: Some(globex.id),
            ..AuditFilter::default()
        };
        Ok(tx.audit_events(&filter, 0, 10)?.0)
    }));
    assert!(
        in_globex
            .iter()
            .any(|e| e.action == AuditAction::EmailChanged && e.target_user_id == Some(user))
    );
}

#[test]
fn superadmin_enforces_every_org() {
    let w = world();
    let globex = ok(w.svc.create_org(&w.admin, "Globex"));
    ok(w.svc.set_mfa_enforced(&w.admin, true, true));
    assert!(ok(w.svc.get_org(&w.admin, globex.id)).is_mfa_enforced);
    assert!(ok(w.svc.get_org(&w.admin, w.org)).is_mfa_enforced);
    // A plain org admin may not.
    let u = w.add_user("orgadmin@example.com");
    let patch = MembershipPatch {
        is_admin: Some(true),
        ..Default::default()
    };
    ok(w.svc.update_membership(&w.admin, &UserRef::Id(u), &patch));
    let patch = MembershipPatch {
        mfa_opt_out: Some(true),
        ..Default::default()
    };
    ok(w.svc.update_membership(&w.admin, &UserRef::Id(u), &patch));
    let (_, c) = w.login("orgadmin@example.com");
    let c = ok(c.into_full());
    assert_eq!(
        w.svc.set_mfa_enforced(&c, false, true),
        Err(MfaError::Forbidden)
    );
    ok(w.svc.set_mfa_enforced(&c, false, false));
}

/// `verify_mfa_of_token` answers as `authenticate` then `verify_mfa`: a
/// right code on a live session succeeds (through the memory store's fast
/// path, the session found by the token); a token that is no good is
/// `Unauthorized` whatever the code, and neither spends the code's step
/// nor counts a failure.
#[test]
fn verify_by_token_refuses_a_token_before_the_code() {
    let w = world();
    let user = w.add_user("token@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("token@example.com");
    let (secret, _) = w.enroll_authenticator(&partial);
    w.clock.advance(30);

    // Tokens that are no good, with the right code: refused, nothing spent.
    let (revoked, revoked_caller) = w.login("token@example.com");
    ok(w.svc.logout(&revoked_caller));
    let (expired, _) = w.login("token@example.com");
    w.clock.advance(11 * 60);
    assert_eq!(
        w.svc
            .verify_mfa_of_token(&expired.token, MfaMethod::Authenticator, &w.code(&secret)),
        Err(MfaError::Unauthorized)
    );
    let (live, _) = w.login("token@example.com");
    let code = w.code(&secret);
    for token in ["", "not a token", revoked.token.as_str()] {
        for method in [MfaMethod::Authenticator, MfaMethod::Recovery] {
            assert_eq!(
                w.svc.verify_mfa_of_token(token, method, &code),
                Err(MfaError::Unauthorized),
                "{token:?}"
            );
        }
    }
    // A wrong code on a live token counts, as with `verify_mfa`.
    assert_eq!(
        w.svc
            .verify_mfa_of_token(&live.token, MfaMethod::Authenticator, "000000"),
        Err(MfaError::InvalidCode)
    );
    // The right code still works: the refusals above spent nothing.
    let full = ok(w
        .svc
        .verify_mfa_of_token(&live.token, MfaMethod::Authenticator, &code));
    let caller = ok(w.svc.authenticate(&full.token));
    assert_eq!((caller.user_id, caller.level), (user, AssuranceLevel::Full));
    assert_eq!(
        w.svc.authenticate(&live.token),
        Err(MfaError::Unauthorized),
        "the partial token ends with the success"
    );
    // Once spent, the code is a replay.
    let (again, _) = w.login("token@example.com");
    assert_eq!(
        w.svc
            .verify_mfa_of_token(&again.token, MfaMethod::Authenticator, &code),
        Err(MfaError::InvalidCode)
    );

    // An inactive membership's token, with a fresh code: refused.
    w.clock.advance(30);
    let (member, _) = w.login("token@example.com");
    let patch = MembershipPatch {
        is_active: Some(false),
        ..Default::default()
    };
    ok(w.svc
        .update_membership(&w.admin, &UserRef::Id(user), &patch));
    assert_eq!(
        w.svc
            .verify_mfa_of_token(&member.token, MfaMethod::Authenticator, &w.code(&secret)),
        Err(MfaError::Unauthorized)
    );

    // A full session idle for longer than allowed, of a user with no
    // failures, with a fresh code: refused (the store's write checks only
    // revocation and expiry).
    w.add_user("idle@example.com");
    let (_, idle_partial) = w.login("idle@example.com");
    let (idle_secret, _) = w.enroll_authenticator(&idle_partial);
    w.clock.advance(30);
    let (idle, _) = w.login("idle@example.com");
    let idle_full =
        ok(w.svc
            .verify_mfa_of_token(&idle.token, MfaMethod::Authenticator, &w.code(&idle_secret)));
    w.clock.advance(31 * 60);
    assert_eq!(
        w.svc.verify_mfa_of_token(
            &idle_full.token,
            MfaMethod::Authenticator,
            &w.code(&idle_secret)
        ),
        Err(MfaError::Unauthorized)
    );
}

#[test]
fn ended_sessions_are_purged_an_hour_after_they_end() {
    let w = world(); // the admin's full session, never used again: idle
    w.add_user("sessions@example.com");
    let (logged_out, logged_out_caller) = w.login("sessions@example.com");
    ok(w.svc.logout(&logged_out_caller));
    let (live, _) = w.login("sessions@example.com");
    let (idle, _) = w.login("sessions@example.com");
    w.add_user("partial@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (partial, _) = w.login("partial@example.com"); // ends after 10 min

    // Step through two hours, using the live session every ten minutes.
    // (ended at: logged out T0, partial T0+600, idle and admin T0+1800)
    let mut purged = Vec::new();
    for step in 1..=12 {
        w.clock.advance(600);
        ok(w.svc.authenticate(&live.token));
        purged.push((step * 600, ok(w.svc.purge_ended_sessions())));
    }
    let mut expected: Vec<(i32, u64)> = (1..=12).map(|step| (step * 600, 0)).collect();
    // T0+3600: the logout ended exactly an hour ago, kept.
    expected[6].1 = 1; // T0+4200: the logout (T0), the partial (T0+600) is not yet past
    expected[7].1 = 1; // T0+4800: the partial
    expected[9].1 = 2; // T0+6000: idle since T0+1800: the idle one and the admin's
    assert_eq!(purged, expected);

    for token in [&logged_out.token, &idle.token, &partial.token] {
        assert_eq!(w.svc.authenticate(token), Err(MfaError::Unauthorized));
    }
    ok(w.svc.authenticate(&live.token));
    assert_eq!(ok(w.svc.purge_ended_sessions()), 0);
}

#[test]
fn a_purge_deletes_every_batch() {
    let w = world();
    let user = w.add_user("many@example.com");
    let sessions = u64::from(PURGE_BATCH) * 2 + 7;
    ok(w.svc.store().write(|tx| {
        for n in 0..sessions {
            tx.insert_session(&NewSession {
                token_hash: format!("{n:064x}"),
                user_id: user,
                org_id: w.org,
                level: AssuranceLevel::Partial,
                created_at: Timestamp(T0),
                expires_at: Timestamp(T0 + 600),
            })?;
        }
        Ok(())
    }));
    w.clock
        .advance(600 + i64::try_from(ENDED_SESSION_RETENTION_SECS).unwrap() + 1);
    // The admin's own session (idle since T0) is not yet an hour past its end.
    assert_eq!(ok(w.svc.purge_ended_sessions()), sessions);
    assert_eq!(ok(w.svc.purge_ended_sessions()), 0);
}

/// Every audit event in the store, oldest first.
fn all_audit_events(w: &World) -> Vec<AuditEvent> {
    let (mut events, _) = ok(w
        .svc
        .store()
        .read(|tx| Ok(tx.audit_events(&AuditFilter::default(), 0, 10_000)?)));
    events.reverse();
    events
}

#[test]
fn audit_events_are_kept_for_good_unless_a_retention_is_set() {
    const DAY: i64 = 24 * 3600;
    // The default: kept.
    let w = world();
    w.add_user("kept@example.com");
    let events = all_audit_events(&w);
    assert!(!events.is_empty());
    w.clock.advance(400 * DAY);
    assert_eq!(ok(w.svc.purge()).audit_events, 0);
    assert_eq!(all_audit_events(&w), events);

    // A retention of a day: the events of T0 go once they are a day old,
    // a younger one stays.
    let mut w = world_with(ServiceConfig {
        audit_retention_secs: Some(24 * 3600),
        ..ServiceConfig::default()
    });
    w.add_user("old@example.com");
    let old = all_audit_events(&w);
    w.clock.advance(12 * 3600);
    w.sign_admin_in_again();
    w.add_user("young@example.com");
    let young: Vec<AuditEvent> = all_audit_events(&w)[old.len()..].to_vec();
    assert!(!young.is_empty());
    w.clock.advance(DAY / 2); // T0 + 1 day: exactly a day old, kept
    assert_eq!(ok(w.svc.purge()).audit_events, 0);
    w.clock.advance(1);
    let purged = ok(w.svc.purge());
    assert_eq!(purged.audit_events, old.len() as u64);
    assert_eq!(all_audit_events(&w), young);
    w.clock.advance(DAY);
    ok(w.svc.purge());
    assert!(all_audit_events(&w).is_empty());
}

#[test]
fn a_confirmed_email_change_is_purged_a_pending_one_stays() {
    let mut w = world();
    let moved = w.add_user("moving@example.com");
    let pending = w.add_user("pending@example.com");
    let change = |user: UserId, email: &str| {
        let patch = service::UserPatch {
            email: Some(email.into()),
            ..Default::default()
        };
        ok(w.svc.update_user(&w.admin, user, &patch));
    };
    change(moved, "moved@example.com");
    change(pending, "never-confirmed@example.com");
    // Asked by an admin: the old address's notice says so (it blamed
    // "someone" and told the user to change their password).
    assert!(w.mailer.sent().iter().any(|m| m.to == "moving@example.com"
        && matches!(
            &m.kind,
            MailKind::EmailChangeNotice {
                by_admin: Some(_),
                ..
            }
        )));
    let token = w.change_confirmation_token("moved@example.com");
    ok(w.svc.confirm_email_change(&token, None));
    let rows = |w: &World| {
        ok(w.svc.store().read(|tx| {
            Ok((
                tx.pending_email_change(moved)?.is_some(),
                tx.email_change_by_token_hash(&mfa_core::crypto::hash_token(&token))?
                    .is_some(),
                tx.pending_email_change(pending)?.is_some(),
            ))
        }))
    };
    assert_eq!(rows(&w), (false, true, true));
    w.clock
        .advance(i64::try_from(CONFIRMED_EMAIL_CHANGE_RETENTION_SECS).unwrap());
    assert_eq!(ok(w.svc.purge()).email_changes, 0, "an hour old: kept");
    // Two days on: the pending change expired long ago, and stays (it can
    // be sent again); the confirmed one goes.
    w.clock.advance(2 * 24 * 3600);
    w.sign_admin_in_again();
    assert_eq!(ok(w.svc.purge()).email_changes, 1);
    assert_eq!(rows(&w), (false, false, true));
    // Its token answers as a used one did.
    assert_eq!(
        w.svc.confirm_email_change(&token, None),
        Err(MfaError::InvalidCode)
    );
    ok(w.svc.resend_email_change(&w.admin, pending));
}

#[test]
fn an_org_admin_resets_only_active_members_and_leaves_superadmins_alone() {
    let w = world();
    ok(w.svc.create_user(
        &w.admin,
        &NewUserRequest {
            email: "orgadmin@example.com".into(),
            first_name: "Olga".into(),
            last_name: "Admin".into(),
            password: PASSWORD.into(),
            is_admin: true,
        },
    ));
    let (_, org_admin) = w.login("orgadmin@example.com");
    let org_admin = ok(org_admin.into_full());
    let left = w.add_user("left@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("left@example.com");
    let (_, left_session) = w.enroll_authenticator(&partial);
    let deactivate = MembershipPatch {
        is_active: Some(false),
        ..Default::default()
    };
    ok(w.svc
        .update_membership(&w.admin, &UserRef::Id(left), &deactivate));

    // An inactive member is no longer the org admin's to reset.
    assert_eq!(
        w.svc.reset_mfa(&org_admin, &[left]),
        Err(MfaError::NotFound("user"))
    );
    assert_eq!(
        w.svc
            .admin_reset_authenticator(&org_admin, "left@example.com"),
        Err(MfaError::NotFound("user"))
    );
    assert!(ok(w.svc.mfa_status(&left_session)).factors.authenticator);

    // Nor is the superadmin's membership the org admin's to remove.
    assert_eq!(
        w.svc.remove_member(&org_admin, w.org, w.admin.user_id),
        Err(MfaError::Forbidden)
    );
    ok(w.svc.authenticate(&w.login(ADMIN_EMAIL).0.token));
    // A plain member's is.
    ok(w.svc.remove_member(&org_admin, w.org, left));
}

#[test]
fn an_expired_pending_secret_is_refused_after_the_lockout_and_the_code_format() {
    let w = world();
    w.add_user("late@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("late@example.com");
    let pending = ok(w.svc.start_authenticator_enrollment(&partial));
    w.clock.advance(601);
    let events_before = w.audit_actions().len();
    // A malformed code is `invalid_code`, whatever the secret's age.
    assert_eq!(
        w.svc.confirm_authenticator_enrollment(&partial, "12 345"),
        Err(MfaError::InvalidCode)
    );
    // A well-formed one is `code_expired`, and recorded.
    let late = mfa_totp::totp(&pending.secret, w.now(), &w.svc.config().totp);
    assert_eq!(
        w.svc.confirm_authenticator_enrollment(&partial, &late),
        Err(MfaError::CodeExpired)
    );
    let actions = w.audit_actions(); // newest first
    assert_eq!(actions.len(), events_before + 2);
    assert_eq!(
        actions[..2],
        [AuditAction::MfaVerifyFailed, AuditAction::MfaVerifyFailed]
    );
}

#[test]
fn wrong_current_passwords_count_toward_the_password_lockout() {
    let w = world();
    let user = w.add_user("guessed@example.com");
    let (_, caller) = w.login("guessed@example.com");
    let caller = ok(caller.into_full());
    let change = |current: &str| {
        let patch = service::UserPatch {
            password: Some("a brand new password".into()),
            current_password: Some(current.into()),
            ..Default::default()
        };
        w.svc.update_user(&caller, user, &patch).map(|_| ())
    };
    // A right one clears the count: four wrong, one right, four wrong
    // again are all plain refusals.
    for _ in 0..4 {
        assert_eq!(change("wrong guess"), Err(MfaError::InvalidCredentials));
    }
    let patch = service::UserPatch {
        email: Some("elsewhere@example.com".into()),
        current_password: Some(PASSWORD.into()),
        ..Default::default()
    };
    ok(w.svc.update_user(&caller, user, &patch));
    for _ in 0..4 {
        assert_eq!(change("wrong guess"), Err(MfaError::InvalidCredentials));
    }
    // The fifth wrong one in a row locks the password out, logins too.
    assert!(matches!(
        change("wrong guess"),
        Err(MfaError::TooManyAttempts { .. })
    ));
    assert!(matches!(
        change(PASSWORD),
        Err(MfaError::TooManyAttempts { .. })
    ));
    assert!(matches!(
        w.svc.login("guessed@example.com", PASSWORD, None),
        Err(MfaError::TooManyAttempts { .. })
    ));
    assert!(
        w.audit_actions()
            .iter()
            .filter(|a| **a == AuditAction::LoginFailed)
            .count()
            >= 9
    );
}

#[test]
fn an_org_admin_cannot_leave_the_org_without_an_active_admin() {
    let w = world();
    let globex = ok(w.svc.create_org(&w.admin, "Globex"));
    let make_admin = MembershipPatch {
        is_admin: Some(true),
        ..Default::default()
    };
    let [ann, ben, cat] = ["ann", "ben", "cat"].map(|name| {
        let id = w.add_user(&format!("{name}@example.com"));
        ok(w.svc.add_member(&w.admin, globex.id, id, &make_admin));
        ok(w.svc.remove_member(&w.admin, w.org, id));
        id
    });
    let org_admin = |email: &str| {
        let r = ok(w.svc.login(email, PASSWORD, Some(globex.id)));
        ok(ok(w.svc.authenticate(&r.token)).into_full())
    };
    let ann_caller = org_admin("ann@example.com");
    let last_admin = |r: MfaResult<()>| match r {
        Err(MfaError::Conflict(message)) => assert!(message.contains("last active admin")),
        other => panic!("expected the last-admin conflict, got {other:?}"),
    };
    let demote = MembershipPatch {
        is_admin: Some(false),
        ..Default::default()
    };
    let deactivate = MembershipPatch {
        is_active: Some(false),
        ..Default::default()
    };

    // Ann demotes Ben, deactivates Cat (still flagged admin): Ann is the
    // only active admin left, and can neither step down nor leave.
    ok(w.svc
        .update_membership(&ann_caller, &UserRef::Id(ben), &demote));
    ok(w.svc
        .update_membership(&ann_caller, &UserRef::Id(cat), &deactivate));
    for patch in [&demote, &deactivate] {
        last_admin(
            w.svc
                .update_membership(&ann_caller, &UserRef::Id(ann), patch),
        );
    }
    last_admin(w.svc.remove_member(&ann_caller, globex.id, ann));
    // Changes that keep her an active admin still go through.
    let opt_out_and_stay = MembershipPatch {
        is_admin: Some(true),
        mfa_opt_out: Some(true),
        ..Default::default()
    };
    ok(w.svc
        .update_membership(&ann_caller, &UserRef::Id(ann), &opt_out_and_stay));
    let ann_membership = ok(w.svc.get_membership(&ann_caller, globex.id, ann));
    assert!(ann_membership.is_active_admin() && ann_membership.mfa_opt_out);

    // With Cat active again, Ann may step down, and Cat is the last one.
    let activate = MembershipPatch {
        is_active: Some(true),
        ..Default::default()
    };
    ok(w.svc
        .update_membership(&ann_caller, &UserRef::Id(cat), &activate));
    ok(w.svc.remove_member(&ann_caller, globex.id, ann));
    let cat_caller = org_admin("cat@example.com");
    last_admin(
        w.svc
            .update_membership(&cat_caller, &UserRef::Id(cat), &demote),
    );
    // Demoting a member who is not an admin is no concern of the guard.
    ok(w.svc
        .update_membership(&cat_caller, &UserRef::Id(ben), &demote));

    // A superadmin, who administers every org anyway, may leave one
    // without admins.
    ok(w.svc.remove_member(&w.admin, globex.id, cat));
    assert!(ok(w.svc.org_admins(&w.admin, globex.id)).is_empty());
}

#[test]
fn a_session_that_verified_no_factor_changes_no_factor() {
    let w = world();
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let email = "vera@example.com";
    let user = w.add_user(email);
    // A second org that owes her no MFA: not enforced, and opted out.
    let globex = ok(w.svc.create_org(&w.admin, "Globex"));
    let opted_out = MembershipPatch {
        mfa_opt_out: Some(true),
        ..Default::default()
    };
    ok(w.svc.add_member(&w.admin, globex.id, user, &opted_out));
    let (_, partial) = w.login(email);
    let (secret, acme_session) = w.enroll_authenticator(&partial);
    assert!(acme_session.mfa_passed);
    ok(w.svc
        .set_personal_opt_in(&ok(acme_session.into_full()), true));

    // Her password alone opens a full session in Globex.
    let login = ok(w.svc.login(email, PASSWORD, Some(globex.id)));
    assert_eq!(login.decision.requirement, MfaRequirement::None);
    let unproven = ok(w.svc.authenticate(&login.token));
    assert_eq!(unproven.level, AssuranceLevel::Full);
    assert!(!unproven.mfa_passed);
    let full = ok(unproven.clone().into_full());
    let refused = Err(MfaError::MfaRequired);
    assert_eq!(
        w.svc.start_authenticator_enrollment(&unproven).map(|_| ()),
        refused
    );
    assert_eq!(w.svc.start_email_enrollment(&unproven).map(|_| ()), refused);
    assert_eq!(w.svc.self_reset_authenticator(&unproven, None), refused);
    assert_eq!(w.svc.generate_recovery_codes(&full).map(|_| ()), refused);
    assert_eq!(w.svc.set_personal_opt_in(&full, false), refused);
    let new_email = service::UserPatch {
        email: Some("thief@example.com".into()),
        current_password: Some(PASSWORD.into()),
        ..Default::default()
    };
    assert_eq!(
        w.svc.update_user(&full, user, &new_email).map(|_| ()),
        refused
    );
    // A new password would lock her out of Acme.
    let new_password = service::UserPatch {
        password: Some("a thief's new password".into()),
        current_password: Some(PASSWORD.into()),
        ..Default::default()
    };
    assert_eq!(
        w.svc.update_user(&full, user, &new_password).map(|_| ()),
        refused
    );
    // Her names are no factor.
    let rename = service::UserPatch {
        first_name: Some("Vera".into()),
        ..Default::default()
    };
    ok(w.svc.update_user(&full, user, &rename));
    let status = ok(w.svc.mfa_status(&unproven));
    assert!(status.factors.authenticator && !status.factors.email && !status.authenticator_pending);

    // Verifying a factor on the session opens the way.
    w.clock.advance(30);
    let stepped_up = ok(w
        .svc
        .verify_mfa(&unproven, MfaMethod::Authenticator, &w.code(&secret)));
    assert_eq!(
        w.svc.authenticate(&login.token),
        Err(MfaError::Unauthorized)
    );
    let proven = ok(w.svc.authenticate(&stepped_up.token));
    assert!(proven.mfa_passed);
    let codes = ok(w
        .svc
        .generate_recovery_codes(&ok(proven.clone().into_full())));
    assert_eq!(codes.len(), 10);

    // A recovery code also opens the self reset on such a session.
    let unproven = ok(w
        .svc
        .authenticate(&ok(w.svc.login(email, PASSWORD, Some(globex.id))).token));
    ok(w.svc.self_reset_authenticator(&unproven, Some(&codes[0])));
    // The stepped-up session changes her password.
    ok(w.svc
        .update_user(&ok(proven.into_full()), user, &new_password));
    assert_eq!(
        w.svc.login(email, PASSWORD, Some(globex.id)).map(|_| ()),
        Err(MfaError::InvalidCredentials)
    );

    // A user with no factor enrolls from such a session, which then has
    // verified one (recovery codes right after the enrollment).
    let newcomer = w.add_user("nico@example.com");
    ok(w.svc.add_member(&w.admin, globex.id, newcomer, &opted_out));
    let login = ok(w.svc.login("nico@example.com", PASSWORD, Some(globex.id)));
    let session = ok(w.svc.authenticate(&login.token));
    assert!(!session.mfa_passed);
    // With no factor to lose, the password alone changes the password.
    ok(w.svc
        .update_user(&ok(session.clone().into_full()), newcomer, &new_password));
    let pending = ok(w.svc.start_authenticator_enrollment(&session));
    let params = w.svc.config().totp;
    let code = mfa_totp::totp(&pending.secret, w.now(), &params);
    assert_eq!(
        ok(w.svc.confirm_authenticator_enrollment(&session, &code)),
        None
    );
    let session = ok(w.svc.authenticate(&login.token));
    assert!(session.mfa_passed);
    ok(w.svc.generate_recovery_codes(&ok(session.into_full())));
}

/// The bootstrap password's strength is checked when it is used, on a
/// store without users; once users exist it is ignored, weak or not (an
/// upgrade that left a weak one set must still start).
#[test]
fn a_weak_bootstrap_password_is_refused_only_when_used() {
    let fresh = ok(MfaService::new(
        InMemoryStore::new(),
        Arc::new(MemoryMailer::default()),
        Arc::new(FixedClock::new(Timestamp(T0))),
        Arc::new(OsRandomness),
        ServiceConfig::default(),
    ));
    let refused = fresh.bootstrap(ADMIN_EMAIL, "password123", "Acme");
    assert!(
        matches!(&refused, Err(MfaError::InvalidRequest(why)) if why.contains("too easy to guess")),
        "{refused:?}"
    );
    let w = world();
    assert_eq!(
        ok(w.svc.bootstrap(ADMIN_EMAIL, "password123", "Acme")),
        None,
        "ignored once users exist"
    );
}

/// Notices sent to `to` so far, by kind.
fn notices_to(w: &World, to: &str) -> Vec<MailKind> {
    w.mailer
        .sent()
        .into_iter()
        .filter(|m| m.to == to)
        .map(|m| m.kind)
        .collect()
}

/// Wrong codes at the second step that begin a lockout are mailed to the
/// user (whoever gave them knows the password), once an hour at most; a
/// guesser meets a new lockout each time one ends.
#[test]
fn a_lockout_at_the_second_step_is_mailed_once_an_hour() {
    let w = world();
    w.add_user("guessed@example.com");
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("guessed@example.com");
    w.enroll_authenticator(&partial);
    let told = |w: &World| {
        notices_to(w, "guessed@example.com")
            .into_iter()
            .filter(|k| *k == MailKind::CodesLockedOut)
            .count()
    };
    // Malformed codes count as wrong ones, and are never right.
    let guess = |w: &World, times: usize| -> MfaResult<service::NewToken> {
        let (_, session) = w.login("guessed@example.com");
        let mut last = Err(MfaError::InvalidCode);
        for _ in 0..times {
            last = w
                .svc
                .verify_mfa(&session, MfaMethod::Authenticator, "12345");
        }
        last
    };
    assert_eq!(guess(&w, 4), Err(MfaError::InvalidCode));
    assert_eq!(told(&w), 0, "no lockout yet");
    assert!(matches!(
        guess(&w, 1),
        Err(MfaError::TooManyAttempts { .. })
    ));
    assert_eq!(told(&w), 1);
    // The lockout ends; the next wrong code begins another, in the hour.
    w.clock.advance(31);
    assert!(matches!(
        guess(&w, 1),
        Err(MfaError::TooManyAttempts { .. })
    ));
    assert_eq!(told(&w), 1, "once an hour");
    w.clock.advance(LOCKOUT_NOTICE_INTERVAL_SECS);
    assert!(matches!(
        guess(&w, 1),
        Err(MfaError::TooManyAttempts { .. })
    ));
    assert_eq!(told(&w), 2, "an hour on");
    // The clock stepped back an hour: the lockout set "later" is over,
    // and the next one is not mailed again for the same hour.
    w.clock.advance(-LOCKOUT_NOTICE_INTERVAL_SECS);
    assert!(matches!(
        guess(&w, 1),
        Err(MfaError::TooManyAttempts { .. })
    ));
    assert_eq!(told(&w), 2, "once an hour, after a step back too");
}

#[test]
fn a_notice_waits_in_the_store_while_the_mail_server_is_down() {
    let w = world();
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let user = w.add_user("down@example.com");
    let (_, partial) = w.login("down@example.com");
    w.mailer.set_failing_for_now(true);
    w.enroll_authenticator(&partial);
    let enrolled = MailKind::FactorEnrolled {
        method: MfaMethod::Authenticator,
    };
    // The change is made; its notice waits.
    assert!(notices_to(&w, "down@example.com").is_empty());
    assert_eq!(ok(w.svc.notices_waiting()), 1);
    w.mailer.set_failing_for_now(false);
    // Not due before its delay.
    assert_eq!(ok(w.svc.deliver_notices()), service::NoticeRun::default());
    w.clock.advance(service::retry_delay(1) as i64);
    let run = ok(w.svc.deliver_notices());
    assert_eq!((run.sent, run.retried, run.given_up), (1, 0, 0));
    assert_eq!(notices_to(&w, "down@example.com"), [enrolled]);
    assert_eq!(ok(w.svc.notices_waiting()), 0);
    let _ = user;
}

#[test]
fn a_notice_is_given_up_after_its_last_try_or_a_refusal_for_good() {
    // Sessions idle for the notice's 2 hours of tries: the admin's acts
    // at the end.
    let w = world_with(ServiceConfig {
        session_idle_secs: 3 * 3600,
        ..ServiceConfig::default()
    });
    let user = w.add_user("gone@example.com");
    w.mailer.set_failing_for_now(true);
    ok(w.svc.reset_mfa(&w.admin, &[user]));
    // A user without factors is sent nothing; one with a factor is.
    assert_eq!(ok(w.svc.notices_waiting()), 0);
    ok(w.svc.set_mfa_enforced(&w.admin, true, false));
    let (_, partial) = w.login("gone@example.com");
    w.enroll_authenticator(&partial);
    assert_eq!(ok(w.svc.notices_waiting()), 1);
    let mut tries = 1;
    loop {
        w.clock.advance(service::retry_delay(tries) as i64);
        let run = ok(w.svc.deliver_notices());
        tries += 1;
        if tries == service::NOTICE_MAX_ATTEMPTS {
            assert_eq!((run.sent, run.retried, run.given_up), (0, 0, 1));
            break;
        }
        assert_eq!((run.sent, run.retried, run.given_up), (0, 1, 0));
    }
    assert_eq!(ok(w.svc.notices_waiting()), 0);
    // A refusal for good is not tried again.
    w.mailer.set_failing_for_now(false);
    w.mailer.set_failing(true);
    ok(w.svc.reset_mfa(&w.admin, &[user]));
    assert_eq!(ok(w.svc.notices_waiting()), 0);
    assert!(notices_to(&w, "gone@example.com").is_empty());
}

/// A service with a notice waker, bootstrapped, its admin's full session,
/// and a user `email` of the admin's org.
fn waking_service(
    mailer: Arc<dyn ports::Mailer>,
    clock: Arc<dyn ports::Clock>,
    waker: service::NoticeWaker,
    email: &str,
) -> (MfaService<InMemoryStore>, FullCaller, UserId) {
    let svc = ok(MfaService::new(
        InMemoryStore::new(),
        mailer,
        clock,
        Arc::new(OsRandomness),
        ServiceConfig::default(),
    ))
    .with_notice_waker(waker);
    ok(svc.bootstrap(ADMIN_EMAIL, PASSWORD, "Acme")).unwrap_or_else(|| panic!("bootstrap"));
    let login = ok(svc.login(ADMIN_EMAIL, PASSWORD, None));
    let admin = ok(ok(svc.authenticate(&login.token)).into_full());
    let user = ok(svc.create_user(
        &admin,
        &NewUserRequest {
            email: email.into(),
            first_name: "Noticed".into(),
            last_name: "User".into(),
            password: PASSWORD.into(),
            is_admin: false,
        },
    ))
    .user
    .id;
    (svc, admin, user)
}

#[test]
fn with_a_waker_the_request_leaves_its_notices_to_the_sender() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let mailer = Arc::new(MemoryMailer::default());
    let woken = Arc::new(AtomicU32::new(0));
    let waker: service::NoticeWaker = {
        let woken = woken.clone();
        Arc::new(move || {
            woken.fetch_add(1, Ordering::SeqCst);
        })
    };
    let (svc, admin, user) = waking_service(
        mailer.clone(),
        Arc::new(FixedClock::new(Timestamp(T0))),
        waker,
        "woken@example.com",
    );
    assert_eq!(woken.load(Ordering::SeqCst), 0);
    // A change that notifies wakes the sender once, after its commit.
    let opt_out = MembershipPatch {
        mfa_opt_out: Some(true),
        ..Default::default()
    };
    ok(svc.update_membership(&admin, &UserRef::Id(user), &opt_out));
    assert_eq!(woken.load(Ordering::SeqCst), 1);
    assert!(mailer.sent().is_empty());
    let run = ok(svc.deliver_notices());
    assert_eq!(run.sent, 1);
    assert_eq!(mailer.sent()[0].to, "woken@example.com");
    // A change refused queues nothing and wakes nothing.
    let bad = svc.reset_mfa(&admin, &[UserId(999_999)]);
    assert!(bad.is_err());
    assert_eq!(woken.load(Ordering::SeqCst), 1);
    assert_eq!(ok(svc.notices_waiting()), 0);
}

/// Without a waker, a change sends the notices it queued, not a backlog
/// an outage left: that is for `deliver_notices`. (A command took 80 s
/// over eight old notices against a mail server that hung, its own left.)
#[test]
fn a_change_sends_its_own_notice_not_the_backlog() {
    let w = world();
    let first = w.add_user("first@example.com");
    let second = w.add_user("second@example.com");
    let opt_out = MembershipPatch {
        mfa_opt_out: Some(true),
        ..Default::default()
    };
    w.mailer.set_failing_for_now(true);
    ok(w.svc
        .update_membership(&w.admin, &UserRef::Id(first), &opt_out));
    w.mailer.set_failing_for_now(false);
    w.clock.advance(service::retry_delay(1) as i64);
    // The first user's notice is due again; the second's change sends
    // the second's.
    ok(w.svc
        .update_membership(&w.admin, &UserRef::Id(second), &opt_out));
    assert_eq!(notices_to(&w, "second@example.com").len(), 1);
    assert!(notices_to(&w, "first@example.com").is_empty());
    assert_eq!(ok(w.svc.notices_waiting()), 1);
    let run = ok(w.svc.deliver_notices());
    assert_eq!((run.sent, run.retried, run.given_up), (1, 0, 0));
    assert_eq!(notices_to(&w, "first@example.com").len(), 1);
}

/// A mailer whose first notice waits until the test lets it go: a send
/// under way for as long as the test needs.
struct HeldMailer {
    inner: MemoryMailer,
    started: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
    release: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl ports::Mailer for HeldMailer {
    fn send(&self, mail: &Mail) -> Result<(), MailError> {
        self.inner.send(mail)
    }

    fn send_notice(&self, mail: &Mail) -> Result<(), MailError> {
        let held = self
            .release
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(release) = held {
            if let Some(started) = self
                .started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                let _ = started.send(());
            }
            let _ = release.recv_timeout(std::time::Duration::from_secs(60));
        }
        self.inner.send_notice(mail)
    }

    fn accepts_address(&self, email: &str) -> bool {
        self.inner.accepts_address(email)
    }
}

/// A fixed clock that counts its reads: while a send is held, only the
/// renewal of its lease reads it.
struct CountedClock {
    inner: FixedClock,
    reads: std::sync::atomic::AtomicU64,
}

impl ports::Clock for CountedClock {
    fn now(&self) -> Timestamp {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.now()
    }
}

/// An audit saw a send slower than the lease (a mail server whose replies
/// trickled in) lose its claim, and another process send the notice
/// again. The lease is renewed while the send is under way.
#[test]
fn a_slow_send_keeps_its_notice_to_itself() {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    let clock = Arc::new(CountedClock {
        inner: FixedClock::new(Timestamp(T0)),
        reads: Default::default(),
    });
    let (started_tx, started) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let mailer = Arc::new(HeldMailer {
        inner: MemoryMailer::default(),
        started: std::sync::Mutex::new(Some(started_tx)),
        release: std::sync::Mutex::new(Some(release_rx)),
    });
    // A waker that does nothing: the notice stays queued for the
    // deliveries below.
    let (svc, admin, user) = waking_service(
        mailer.clone(),
        clock.clone(),
        Arc::new(|| {}),
        "slow@example.com",
    );
    let opt_out = MembershipPatch {
        mfa_opt_out: Some(true),
        ..Default::default()
    };
    ok(svc.update_membership(&admin, &UserRef::Id(user), &opt_out));
    assert_eq!(ok(svc.notices_waiting()), 1);

    std::thread::scope(|scope| {
        // Moved in, so that a failed assertion lets the send go at once.
        let release = release;
        let slow = scope.spawn(|| svc.deliver_next_notice(service::NoticeOrder::Oldest));
        started
            .recv_timeout(Duration::from_secs(30))
            .expect("the send started");
        // A third of the lease passes: the sender renews it from now.
        clock.inner.advance(100);
        let reads = clock.reads.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(20);
        while clock.reads.load(Ordering::SeqCst) < reads + 2 {
            assert!(Instant::now() < deadline, "the lease was never looked at");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Past the first lease, inside the renewed one: another delivery
        // finds nothing to claim.
        clock.inner.advance(service::NOTICE_LEASE_SECS as i64 - 50);
        assert_eq!(
            ok(svc.deliver_next_notice(service::NoticeOrder::Oldest)),
            None,
            "another process claimed the notice under way"
        );
        release.send(()).expect("the send waits");
        let outcome = slow.join().expect("the sender did not panic");
        assert_eq!(ok(outcome), Some(service::NoticeOutcome::Sent));
    });
    assert_eq!(mailer.inner.sent().len(), 1);
    assert_eq!(ok(svc.notices_waiting()), 0);
}

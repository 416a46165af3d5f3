//! Pure decisions: the login decision of the API contract, the lockout
//! arithmetic and the enrollment rule for partial sessions. No IO, no state.

use crate::error::MfaError;
use crate::model::{AssuranceLevel, FailureState, Membership, MfaMethod, Org, Timestamp, User};

/// What a successful password login still owes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MfaRequirement {
    /// Nothing: the session is full.
    None,
    /// MFA is owed and the user has no verified factor: enroll one.
    SetupRequired,
    /// MFA is owed and the user has a verified factor: present it.
    ChallengeRequired,
}

impl MfaRequirement {
    /// Wire name: `none`, `setup_required`, `challenge_required`.
    pub fn as_str(self) -> &'static str {
        match self {
            MfaRequirement::None => "none",
            MfaRequirement::SetupRequired => "setup_required",
            MfaRequirement::ChallengeRequired => "challenge_required",
        }
    }
}

/// The verified factors of a user, as far as the login decision cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FactorSummary {
    /// A verified authenticator.
    pub authenticator: bool,
    /// A verified email factor.
    pub email: bool,
    /// Unused recovery codes left.
    pub recovery_codes_left: u64,
}

impl FactorSummary {
    /// The methods these factors sign in with: what a reset of all of
    /// them removes, and so what its notice names.
    pub fn methods(&self) -> Vec<MfaMethod> {
        let mut methods = Vec::new();
        if self.authenticator {
            methods.push(MfaMethod::Authenticator);
        }
        if self.email {
            methods.push(MfaMethod::Email);
        }
        if self.recovery_codes_left > 0 {
            methods.push(MfaMethod::Recovery);
        }
        methods
    }

    /// Whether the user has a verified authenticator or email factor.
    /// Recovery codes alone are not a factor: they only stand in for one.
    pub fn has_verified_factor(&self) -> bool {
        self.authenticator || self.email
    }

    /// Methods usable to answer a challenge.
    pub fn challenge_methods(&self) -> Vec<MfaMethod> {
        let mut methods = Vec::new();
        if self.authenticator {
            methods.push(MfaMethod::Authenticator);
        }
        if self.email {
            methods.push(MfaMethod::Email);
        }
        if self.recovery_codes_left > 0 && self.has_verified_factor() {
            methods.push(MfaMethod::Recovery);
        }
        methods
    }
}

/// The outcome of the login decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginDecision {
    /// What the session still owes.
    pub requirement: MfaRequirement,
    /// Methods to enroll (setup) or to present (challenge); empty for none.
    pub methods: Vec<MfaMethod>,
    /// During an enrollment grace period: when setup becomes required.
    pub setup_due_at: Option<Timestamp>,
}

/// Why an inactive membership's login opens no session.
pub const ACCESS_DISABLED: &str =
    "this account's access to the org is disabled: an admin of the org can enable it again";

/// The login decision of the API contract for user `user` logging into
/// `org` through `membership`:
///
/// 1. `membership.mfa_opt_out` → no MFA;
/// 2. else if the org enforces MFA or the user opted in → MFA is owed:
///    a verified factor → challenge, none → setup (or, inside the org's
///    grace period after enforcement, no MFA with a due date);
/// 3. else → no MFA.
///
/// An inactive membership cannot log in at all ([`ACCESS_DISABLED`]).
pub fn decide_login(
    org: &Org,
    membership: &Membership,
    user: &User,
    factors: &FactorSummary,
    now: Timestamp,
) -> Result<LoginDecision, MfaError> {
    if !membership.is_active {
        return Err(MfaError::SignInRefused(ACCESS_DISABLED));
    }
    let none = LoginDecision {
        requirement: MfaRequirement::None,
        methods: Vec::new(),
        setup_due_at: None,
    };
    if membership.mfa_opt_out {
        return Ok(none);
    }
    if !(org.is_mfa_enforced || user.mfa_opt_in) {
        return Ok(none);
    }
    if factors.has_verified_factor() {
        return Ok(LoginDecision {
            requirement: MfaRequirement::ChallengeRequired,
            methods: factors.challenge_methods(),
            setup_due_at: None,
        });
    }
    // The grace period is the org's gift to members it newly forces; a user
    // who opted in personally asked for MFA and gets no grace.
    if org.is_mfa_enforced
        && !user.mfa_opt_in
        && let Some(due) = grace_deadline(org)
        && now < due
    {
        return Ok(LoginDecision {
            setup_due_at: Some(due),
            ..none
        });
    }
    Ok(LoginDecision {
        requirement: MfaRequirement::SetupRequired,
        methods: vec![MfaMethod::Authenticator, MfaMethod::Email],
        setup_due_at: None,
    })
}

/// End of the org's enrollment grace period, if it has one.
pub fn grace_deadline(org: &Org) -> Option<Timestamp> {
    if !org.is_mfa_enforced || org.mfa_grace_period_hours == 0 {
        return None;
    }
    org.mfa_enforced_at
        .map(|at| at.plus_secs(u64::from(org.mfa_grace_period_hours) * 3600))
}

/// How far behind another's a server process's clock may be before a time
/// it finds ahead of it is taken for a clock stepped back: far more than
/// the drift of synchronised clocks and the rounding of whole seconds, far
/// less than the corrections that would otherwise lock users out for hours.
pub const CLOCK_SKEW_TOLERANCE_SECS: u64 = 60;

/// Lockout rule: after `threshold` consecutive failures the user is locked
/// out for `base_delay_secs`, doubling with every further failure up to
/// `max_delay_secs`; a success resets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures that trigger the first lockout.
    pub threshold: u32,
    /// First lockout length in seconds.
    pub base_delay_secs: u64,
    /// Longest lockout in seconds.
    pub max_delay_secs: u64,
    /// Failures are forgotten when none followed for longer than this (a
    /// "failure reset time"). The state kept for unknown emails must be
    /// deleted some time, and a user's must then be forgotten alike, or
    /// the difference would tell known emails from unknown ones. (0
    /// would forget every failure at the next one: no lockout at all.)
    pub forget_after_secs: u64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            threshold: 5,
            base_delay_secs: 30,
            max_delay_secs: 15 * 60,
            forget_after_secs: 24 * 3600,
        }
    }
}

impl LockoutPolicy {
    /// Lockout length after `failures` consecutive failures, if any.
    pub fn delay_after(&self, failures: u32) -> Option<u64> {
        if failures < self.threshold {
            return None;
        }
        let doublings = failures - self.threshold;
        let delay = if doublings >= 32 {
            self.max_delay_secs
        } else {
            self.base_delay_secs
                .saturating_mul(1u64 << doublings)
                .min(self.max_delay_secs)
        };
        Some(delay)
    }

    /// Failures before this time are forgotten at the next one.
    pub fn forget_before(&self, now: Timestamp) -> Timestamp {
        now.minus_secs(self.forget_after_secs)
    }

    /// Seconds to wait before the next attempt, if locked now.
    ///
    /// A lockout whose end lies further ahead than the lockout for
    /// `state.failures` lasts, by more than [`CLOCK_SKEW_TOLERANCE_SECS`],
    /// can only come from a clock stepped back (an NTP correction, a
    /// restored virtual machine): the lockout was set at a "now" that is
    /// still to come. It is taken as over rather than stretched by the
    /// size of the step, which would lock every locked user out for hours
    /// after a correction of hours, password logins and email codes alike.
    /// The failures stay counted, so the next one locks again, for longer.
    /// Within the tolerance it holds as set: another server process whose
    /// clock is a little behind (whole seconds, a second's rounding, a
    /// few seconds of drift) still keeps the lockout another set.
    pub fn retry_after(&self, state: &FailureState, now: Timestamp) -> Option<u64> {
        let longest = self
            .delay_after(state.failures)
            .unwrap_or(self.max_delay_secs)
            .saturating_add(CLOCK_SKEW_TOLERANCE_SECS);
        match state.locked_until {
            Some(until) if until > now => {
                let wait = now.secs_until(until);
                (wait <= longest).then_some(wait.max(1))
            }
            _ => None,
        }
    }
}

/// The rule that stops a stolen password from changing a user's factors
/// (enrolling an attacker's authenticator, removing the user's, taking new
/// recovery codes): while the user has no verified factor, any session
/// may enroll one; once they have one, only a full session in which a
/// factor was verified ([`crate::Session::mfa_passed`]) changes them.
///
/// A full session is not enough: one opened in an org that owes no MFA
/// (or through an opted-out membership) took only the password, and the
/// factors it would change are what the user's other orgs, which do
/// enforce MFA, rely on.
pub fn may_change_factors(
    level: AssuranceLevel,
    mfa_passed: bool,
    factors: &FactorSummary,
) -> Result<(), MfaError> {
    if !factors.has_verified_factor() || (level == AssuranceLevel::Full && mfa_passed) {
        Ok(())
    } else {
        Err(MfaError::MfaRequired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{OrgId, UserId};

    fn org(enforced: bool) -> Org {
        Org {
            id: OrgId(1),
            name: "Acme".into(),
            is_mfa_enforced: enforced,
            mfa_enforced_at: enforced.then_some(Timestamp(1_000)),
            mfa_grace_period_hours: 0,
            created_at: Timestamp(0),
        }
    }

    fn user(opt_in: bool) -> User {
        User {
            id: UserId(7),
            email: "a@example.com".into(),
            first_name: "A".into(),
            last_name: "B".into(),
            password_hash: String::new(),
            is_super_admin: false,
            mfa_opt_in: opt_in,
            last_login_at: None,
            created_at: Timestamp(0),
        }
    }

    fn member() -> Membership {
        Membership::new(UserId(7), OrgId(1))
    }

    const NO_FACTOR: FactorSummary = FactorSummary {
        authenticator: false,
        email: false,
        recovery_codes_left: 0,
    };
    const AUTHENTICATOR: FactorSummary = FactorSummary {
        authenticator: true,
        email: false,
        recovery_codes_left: 10,
    };

    fn decide(o: &Org, m: &Membership, u: &User, f: &FactorSummary) -> MfaRequirement {
        decide_login(o, m, u, f, Timestamp(2_000))
            .map(|d| d.requirement)
            .unwrap_or_else(|e| panic!("unexpected refusal: {e}"))
    }

    #[test]
    fn opt_out_wins_over_enforcement_and_personal_opt_in() {
        let mut m = member();
        m.mfa_opt_out = true;
        assert_eq!(
            decide(&org(true), &m, &user(true), &AUTHENTICATOR),
            MfaRequirement::None
        );
    }

    #[test]
    fn enforced_without_factor_requires_setup() {
        let d = decide_login(
            &org(true),
            &member(),
            &user(false),
            &NO_FACTOR,
            Timestamp(2_000),
        );
        let d = d.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.requirement, MfaRequirement::SetupRequired);
        assert_eq!(d.methods, vec![MfaMethod::Authenticator, MfaMethod::Email]);
    }

    #[test]
    fn enforced_with_factor_requires_challenge_with_its_methods() {
        let d = decide_login(
            &org(true),
            &member(),
            &user(false),
            &AUTHENTICATOR,
            Timestamp(2_000),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.requirement, MfaRequirement::ChallengeRequired);
        assert_eq!(
            d.methods,
            vec![MfaMethod::Authenticator, MfaMethod::Recovery]
        );
    }

    #[test]
    fn email_factor_counts_as_verified_factor() {
        let f = FactorSummary {
            email: true,
            ..NO_FACTOR
        };
        assert_eq!(
            decide(&org(true), &member(), &user(false), &f),
            MfaRequirement::ChallengeRequired
        );
    }

    #[test]
    fn recovery_codes_alone_are_not_a_factor() {
        let f = FactorSummary {
            recovery_codes_left: 3,
            ..NO_FACTOR
        };
        assert_eq!(
            decide(&org(true), &member(), &user(false), &f),
            MfaRequirement::SetupRequired
        );
    }

    #[test]
    fn personal_opt_in_owes_mfa_without_enforcement() {
        assert_eq!(
            decide(&org(false), &member(), &user(true), &NO_FACTOR),
            MfaRequirement::SetupRequired
        );
        assert_eq!(
            decide(&org(false), &member(), &user(true), &AUTHENTICATOR),
            MfaRequirement::ChallengeRequired
        );
    }

    #[test]
    fn neither_enforced_nor_opted_in_owes_nothing_even_with_factor() {
        assert_eq!(
            decide(&org(false), &member(), &user(false), &AUTHENTICATOR),
            MfaRequirement::None
        );
    }

    #[test]
    fn inactive_membership_cannot_log_in() {
        let mut m = member();
        m.is_active = false;
        assert_eq!(
            decide_login(&org(false), &m, &user(false), &NO_FACTOR, Timestamp(0)),
            Err(MfaError::SignInRefused(ACCESS_DISABLED))
        );
    }

    #[test]
    fn grace_period_defers_setup_until_due() {
        let mut o = org(true);
        o.mfa_grace_period_hours = 2;
        let due = Timestamp(1_000 + 7_200);
        let inside = decide_login(&o, &member(), &user(false), &NO_FACTOR, Timestamp(8_199))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(inside.requirement, MfaRequirement::None);
        assert_eq!(inside.setup_due_at, Some(due));
        let after = decide_login(&o, &member(), &user(false), &NO_FACTOR, due)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(after.requirement, MfaRequirement::SetupRequired);
        // The grace period never skips a challenge for a user who has a factor.
        let with_factor = decide_login(
            &o,
            &member(),
            &user(false),
            &AUTHENTICATOR,
            Timestamp(2_000),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(with_factor.requirement, MfaRequirement::ChallengeRequired);
        // Nor does it apply to a personal opt-in.
        let opted_in = decide_login(&o, &member(), &user(true), &NO_FACTOR, Timestamp(2_000))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opted_in.requirement, MfaRequirement::SetupRequired);
    }

    #[test]
    fn lockout_delay_doubles_from_30s_to_15min() {
        let p = LockoutPolicy::default();
        assert_eq!(p.delay_after(4), None);
        let delays: Vec<_> = (5..=12).map(|n| p.delay_after(n)).collect();
        assert_eq!(
            delays,
            vec![
                Some(30),
                Some(60),
                Some(120),
                Some(240),
                Some(480),
                Some(900),
                Some(900),
                Some(900)
            ]
        );
        assert_eq!(p.delay_after(u32::MAX), Some(900));
    }

    #[test]
    fn retry_after_counts_down_and_ends() {
        let p = LockoutPolicy::default();
        let s = FailureState {
            failures: 5,
            locked_until: Some(Timestamp(130)),
        };
        assert_eq!(p.retry_after(&s, Timestamp(100)), Some(30));
        assert_eq!(p.retry_after(&s, Timestamp(129)), Some(1));
        assert_eq!(p.retry_after(&s, Timestamp(130)), None);
    }

    #[test]
    fn a_clock_stepped_back_ends_a_lockout_instead_of_stretching_it() {
        let p = LockoutPolicy::default();
        let five = FailureState {
            failures: 5,
            locked_until: Some(Timestamp(10_030)),
        };
        // Set at 10,000 for 30 s; the clock then went back an hour.
        assert_eq!(p.retry_after(&five, Timestamp(10_000)), Some(30));
        assert_eq!(p.retry_after(&five, Timestamp(6_400)), None);
        // A process whose clock is up to a minute behind keeps it.
        assert_eq!(p.retry_after(&five, Timestamp(9_997)), Some(33));
        assert_eq!(p.retry_after(&five, Timestamp(9_940)), Some(90));
        assert_eq!(p.retry_after(&five, Timestamp(9_939)), None);
        // The longest lockout is bounded by its own length too.
        let many = FailureState {
            failures: 40,
            locked_until: Some(Timestamp(10_900)),
        };
        assert_eq!(p.retry_after(&many, Timestamp(10_000)), Some(900));
        assert_eq!(p.retry_after(&many, Timestamp(9_940)), Some(960));
        assert_eq!(p.retry_after(&many, Timestamp(9_939)), None);
    }

    #[test]
    fn factors_change_without_mfa_only_while_there_is_none() {
        use AssuranceLevel::{Full, Partial};
        for (level, mfa_passed) in [(Partial, false), (Full, false), (Full, true)] {
            assert_eq!(may_change_factors(level, mfa_passed, &NO_FACTOR), Ok(()));
        }
        for (level, mfa_passed) in [(Partial, false), (Partial, true), (Full, false)] {
            assert_eq!(
                may_change_factors(level, mfa_passed, &AUTHENTICATOR),
                Err(MfaError::MfaRequired),
                "{level:?}, mfa_passed: {mfa_passed}"
            );
        }
        assert_eq!(may_change_factors(Full, true, &AUTHENTICATOR), Ok(()));
    }
}

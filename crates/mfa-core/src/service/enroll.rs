//! Enrollment of factors, the caller's MFA status, self reset, recovery
//! codes and the personal opt-in.

use super::*;
use crate::authz::FullCaller;
use crate::crypto::{RECOVERY_CODE_COUNT, new_recovery_code, normalize_recovery_code};
use crate::policy::may_change_factors;
use mfa_totp::{OtpauthUri, Secret, VerifyError};

/// A freshly generated authenticator secret awaiting confirmation.
/// `Debug` shows neither the secret nor the URI that carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingAuthenticator {
    /// The shared secret (show it once, to its owner only).
    pub secret: Secret,
    /// The otpauth URI for QR codes.
    pub otpauth_uri: String,
    /// End of the enrollment window.
    pub expires_at: Timestamp,
}

crate::redact::debug_without_secrets!(PendingAuthenticator {
    secret, expires_at
} secret { otpauth_uri });

/// The caller's factors, as `mfaDetails` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MfaStatus {
    /// Whose factors: the session's user (for a server's log line, where
    /// the status was read with the session in one statement).
    pub user_id: UserId,
    /// Verified factors.
    pub factors: FactorSummary,
    /// An authenticator is generated but not confirmed.
    pub authenticator_pending: bool,
}

impl MfaStatus {
    fn of(user_id: UserId, states: FactorStates) -> MfaStatus {
        let (factors, authenticator) = summarize_factor_states(states);
        MfaStatus {
            user_id,
            factors,
            authenticator_pending: matches!(
                authenticator,
                Some(AuthenticatorState::Pending { .. })
            ),
        }
    }
}

/// The refusal of a second authenticator.
const AUTHENTICATOR_ENROLLED: &str = "an authenticator is already enrolled; reset it first";
/// The refusal of a second email enrollment.
const EMAIL_ENROLLED: &str = "the email factor is already verified";

impl<S: Store> MfaService<S> {
    /// Generate a pending authenticator secret, replacing an older pending
    /// one (partial ok while the user has no verified factor).
    pub fn start_authenticator_enrollment(
        &self,
        caller: &Caller,
    ) -> MfaResult<PendingAuthenticator> {
        let now = self.now();
        let mut bytes = vec![0u8; Secret::DEFAULT_LEN];
        self.rng.fill(&mut bytes);
        let secret = Secret::from_bytes(bytes);
        let params = self.config.totp;
        let expires_at = now.plus_secs(self.config.pending_secret_ttl_secs);
        let issuer = self.display_issuer();
        self.write(|tx| {
            lock_user(tx, caller.user_id)?;
            may_change_factors(
                caller.level,
                caller.mfa_passed,
                &load_factors(tx, caller.user_id)?,
            )?;
            let user = load_user(tx, caller.user_id)?;
            if !tx.put_pending_authenticator(user.id, &secret, &params, now, expires_at)? {
                return Err(MfaError::AlreadyEnrolled(AUTHENTICATOR_ENROLLED));
            }
            audit_own(
                tx,
                caller,
                now,
                AuditAction::AuthenticatorEnrollmentStarted,
                "",
            )?;
            let otpauth_uri = OtpauthUri {
                issuer: issuer.clone(),
                account: user.email,
                secret: secret.clone(),
                params,
            }
            .to_uri();
            Ok(PendingAuthenticator {
                secret: secret.clone(),
                otpauth_uri,
                expires_at,
            })
        })
    }

    /// Confirm the pending authenticator with a code from the app. On a
    /// partial session the session becomes full: the new token is returned.
    pub fn confirm_authenticator_enrollment(
        &self,
        caller: &Caller,
        code: &str,
    ) -> MfaResult<Option<NewToken>> {
        let now = self.now();
        let trace = AttemptTrace {
            user: Some(caller.user_id),
            by: Actor::caller(caller),
            org: Some(caller.org_id),
            what: "authenticator enrollment code",
            address: None,
        };
        self.write_then_refusal_audited(&trace, now, |tx| {
            lock_user(tx, caller.user_id)?;
            may_change_factors(
                caller.level,
                caller.mfa_passed,
                &load_factors(tx, caller.user_id)?,
            )?;
            let pending = match tx.authenticator(caller.user_id)? {
                None => {
                    return Err(MfaError::NotEnrolled(
                        "no pending authenticator: generate a secret first",
                    ));
                }
                Some(a) if a.is_verified() => {
                    return Err(MfaError::AlreadyEnrolled(AUTHENTICATOR_ENROLLED));
                }
                Some(a) => a,
            };
            let attempt = self.lock_code_attempt(tx, caller, now)?;
            // A lockout first, then the code's form, then the secret's age:
            // a malformed code is `invalid_code` whatever the secret.
            if let AuthenticatorState::Pending { expires_at } = pending.state
                && now >= expires_at
                && mfa_totp::is_well_formed_code(code, pending.params.digits)
            {
                // Not a guess (no code can match an expired secret), so
                // not counted; recorded all the same.
                audit_own(
                    tx,
                    caller,
                    now,
                    AuditAction::MfaVerifyFailed,
                    "pending authenticator expired",
                )?;
                return Ok(Err(MfaError::CodeExpired));
            }
            let verdict = mfa_totp::verify_totp(
                &pending.secret,
                code,
                now.unix_secs(),
                &pending.params,
                self.config.totp_window,
                None,
            );
            let step = match verdict {
                Ok(step) => step,
                Err(
                    VerifyError::Malformed | VerifyError::Mismatch | VerifyError::Replayed { .. },
                ) => {
                    return Ok(Err(fail_attempt(
                        tx,
                        &attempt,
                        Some(caller.org_id),
                        now,
                        AuditAction::MfaVerifyFailed,
                        "wrong code for pending authenticator",
                        MfaError::InvalidCode,
                    )?));
                }
            };
            if !tx.verify_authenticator(caller.user_id, step, now)? {
                // A concurrent confirmation won.
                return Err(MfaError::AlreadyEnrolled(AUTHENTICATOR_ENROLLED));
            }
            clear_attempt(tx, &attempt)?;
            audit_own_sign_in_change(tx, caller, now, AuditAction::AuthenticatorEnrolled, "")?;
            self.notify_owner(
                tx,
                caller.user_id,
                MailKind::FactorEnrolled {
                    method: MfaMethod::Authenticator,
                },
            )?;
            self.finish_enrollment(tx, caller, now).map(Ok)
        })
    }

    /// Email an enrollment code to the caller's address.
    pub fn start_email_enrollment(&self, caller: &Caller) -> MfaResult<CodeSent> {
        let user = self.store.read(|tx| {
            let factors = load_factors(tx, caller.user_id)?;
            may_change_factors(caller.level, caller.mfa_passed, &factors)?;
            if factors.email {
                return Err(MfaError::AlreadyEnrolled(EMAIL_ENROLLED));
            }
            load_user(tx, caller.user_id)
        })?;
        self.send_email_code(caller, &user, EmailCodePurpose::Enroll)
    }

    /// Confirm email enrollment with the emailed code. On a partial session
    /// the session becomes full: the new token is returned.
    pub fn confirm_email_enrollment(
        &self,
        caller: &Caller,
        code: &str,
    ) -> MfaResult<Option<NewToken>> {
        let now = self.now();
        let trace = AttemptTrace {
            user: Some(caller.user_id),
            by: Actor::caller(caller),
            org: Some(caller.org_id),
            what: "email enrollment code",
            address: None,
        };
        self.write_then_refusal_audited(&trace, now, |tx| {
            lock_user(tx, caller.user_id)?;
            let factors = load_factors(tx, caller.user_id)?;
            may_change_factors(caller.level, caller.mfa_passed, &factors)?;
            if factors.email {
                return Err(MfaError::AlreadyEnrolled(EMAIL_ENROLLED));
            }
            let attempt =
                match self.check_email_code(tx, caller, EmailCodePurpose::Enroll, code, now)? {
                    Ok(attempt) => attempt,
                    Err(refusal) => return Ok(Err(refusal)),
                };
            tx.set_email_factor_verified(caller.user_id, now)?;
            clear_attempt(tx, &attempt)?;
            audit_own_sign_in_change(tx, caller, now, AuditAction::EmailEnrolled, "")?;
            self.notify_owner(
                tx,
                caller.user_id,
                MailKind::FactorEnrolled {
                    method: MfaMethod::Email,
                },
            )?;
            self.finish_enrollment(tx, caller, now).map(Ok)
        })
    }

    /// A session that completes enrollment has verified a factor: a
    /// partial one has completed MFA (a new token), a full one is marked
    /// so in place.
    fn finish_enrollment(
        &self,
        tx: &mut dyn StoreTx,
        caller: &Caller,
        now: Timestamp,
    ) -> MfaResult<Option<NewToken>> {
        match caller.level {
            AssuranceLevel::Partial => self.upgrade_session(tx, caller, now).map(Some),
            AssuranceLevel::Full => {
                if !caller.mfa_passed {
                    tx.note_session_mfa_passed(caller.session_id)?;
                }
                Ok(None)
            }
        }
    }

    /// The caller's factors (partial ok). One statement where the store
    /// reads them so ([`StoreTx::factor_states`]).
    pub fn mfa_status(&self, caller: &Caller) -> MfaResult<MfaStatus> {
        self.store.read_statement(|tx| {
            Ok(MfaStatus::of(
                caller.user_id,
                tx.factor_states(caller.user_id)?,
            ))
        })
    }

    /// [`MfaService::authenticate`] and [`MfaService::mfa_status`] in one
    /// read (one statement on PostgreSQL): the status of the caller whose
    /// bearer token this is, for the hot self-service status route. The
    /// token is refused exactly as `authenticate` refuses it.
    pub fn mfa_status_of_token(&self, token: &str) -> MfaResult<MfaStatus> {
        let now = self.now();
        let token_hash = bearer_token_hash(token)?;
        let found = self
            .store
            .read_statement(|tx| Ok(tx.session_member_and_factor_states(&token_hash)?))?;
        let (member, states) = found.ok_or(MfaError::Unauthorized)?;
        let caller = self.caller_of(member, now)?;
        Ok(MfaStatus::of(caller.user_id, states))
    }

    /// Remove the caller's own authenticator. A full session may do it if
    /// a factor was verified in it or the user has no verified factor; any
    /// other session only with a recovery code (a bare password never
    /// removes a factor: see [`may_change_factors`]). A recovery code given
    /// is checked and used whatever the session. The caller's other
    /// sessions end, and a notice is mailed; an authenticator still
    /// pending (never confirmed) is only withdrawn.
    ///
    /// Its steps are public for a server that runs argon2 on threads of its
    /// own: [`MfaService::self_reset_begin`], then, for a recovery code,
    /// [`MfaService::check_recovery_code`] (the only one that hashes), then
    /// [`MfaService::self_reset_finish`].
    pub fn self_reset_authenticator(
        &self,
        caller: &Caller,
        recovery_code: Option<&str>,
    ) -> MfaResult<()> {
        let recovery = self
            .self_reset_begin(caller, recovery_code)?
            .map(|check| self.check_recovery_code(check));
        self.self_reset_finish(caller, recovery)
    }

    /// The first step of [`MfaService::self_reset_authenticator`]: whether
    /// the session may reset without a recovery code (`MfaRequired` when it
    /// may not and none is given), and the check of the code given, if one
    /// is (counted as [`MfaService::recovery_code_begin`] counts it).
    pub fn self_reset_begin(
        &self,
        caller: &Caller,
        recovery_code: Option<&str>,
    ) -> MfaResult<Option<RecoveryCheck>> {
        match recovery_code {
            None => {
                self.require_reset_proof_not_needed(caller)?;
                Ok(None)
            }
            // A code given is checked (and used) also where none is
            // needed: a wrong one must not pass unnoticed.
            Some(code) => {
                // Nothing to reset is no reason to spend (or count) a code.
                if self
                    .store
                    .read(|tx| Ok(tx.authenticator_state(caller.user_id)?))?
                    .is_none()
                {
                    return Err(MfaError::NotEnrolled("no authenticator to reset"));
                }
                Ok(Some(self.recovery_code_begin(caller, code)?))
            }
        }
    }

    /// `MfaRequired` unless `caller`'s session may remove a factor without
    /// a recovery code.
    fn require_reset_proof_not_needed(&self, caller: &Caller) -> MfaResult<()> {
        match caller.level {
            AssuranceLevel::Partial => Err(MfaError::MfaRequired),
            AssuranceLevel::Full if caller.mfa_passed => Ok(()),
            AssuranceLevel::Full => {
                let factors = self
                    .store
                    .read_statement(|tx| load_factors(tx, caller.user_id))?;
                may_change_factors(caller.level, caller.mfa_passed, &factors)
            }
        }
    }

    /// The last step of [`MfaService::self_reset_authenticator`]: the
    /// authenticator removed, with the recovery code checked for `caller`
    /// used (or its failure counted). Without one, the session must be one
    /// that needs none (`MfaRequired` otherwise).
    pub fn self_reset_finish(
        &self,
        caller: &Caller,
        recovery: Option<RecoveryChecked>,
    ) -> MfaResult<()> {
        let now = self.now();
        let recovery = match recovery {
            Some(checked) => Some(self.recovery_match_of(caller, checked)?),
            None => {
                self.require_reset_proof_not_needed(caller)?;
                None
            }
        };
        let trace = AttemptTrace {
            user: Some(caller.user_id),
            by: Actor::caller(caller),
            org: Some(caller.org_id),
            what: "recovery code",
            address: None,
        };
        let proven = recovery.is_some();
        self.write_then_refusal_audited(&trace, now, |tx| {
            lock_user(tx, caller.user_id)?;
            // Again under the user's lock: a factor verified since the
            // check above (the user finishing an enrollment elsewhere)
            // is not removed by a session that could not have removed it.
            let verified_here = caller.level == AssuranceLevel::Full && caller.mfa_passed;
            if !(proven || verified_here) {
                may_change_factors(
                    caller.level,
                    caller.mfa_passed,
                    &load_factors(tx, caller.user_id)?,
                )?;
            }
            if let Some(matched) = recovery {
                match self.consume_recovery_match(tx, caller, matched, now)? {
                    Ok(attempt) => clear_attempt(tx, &attempt)?,
                    Err(refusal) => return Ok(Err(refusal)),
                }
                // A recovery code spent is told apart from the reset it
                // proved, as at a login: with the password and a stolen
                // code, someone else may have removed the authenticator.
                let remaining = tx.unused_recovery_codes(caller.user_id)?;
                self.notify_owner(tx, caller.user_id, MailKind::RecoveryCodeUsed { remaining })?;
            }
            let verified = matches!(
                tx.authenticator_state(caller.user_id)?,
                Some(AuthenticatorState::Verified { .. })
            );
            if !tx.delete_authenticator(caller.user_id)? {
                return Err(MfaError::NotEnrolled("no authenticator to reset"));
            }
            // An enrollment not yet confirmed is withdrawn: no factor went,
            // so no other session ends and no notice goes out (an audit
            // saw "sign-in methods were removed" mailed for one).
            if !verified {
                audit_own(
                    tx,
                    caller,
                    now,
                    AuditAction::AuthenticatorReset,
                    "pending enrollment withdrawn",
                )?;
                return Ok(Ok(()));
            }
            tx.revoke_user_sessions(caller.user_id, None, Some(caller.session_id), now)?;
            audit_own_sign_in_change(
                tx,
                caller,
                now,
                AuditAction::AuthenticatorReset,
                "self reset",
            )?;
            self.notify_owner(
                tx,
                caller.user_id,
                MailKind::FactorReset {
                    methods: vec![MfaMethod::Authenticator],
                    by_admin: None,
                },
            )?;
            Ok(Ok(()))
        })
    }

    /// Generate a new set of recovery codes, voiding the old set. The codes
    /// are returned once and stored only as argon2 hashes.
    pub fn generate_recovery_codes(&self, caller: &FullCaller) -> MfaResult<Vec<String>> {
        let codes = self.recovery_codes_begin(caller)?;
        let hashed = self.hash_recovery_codes(codes)?;
        self.recovery_codes_finish(caller, hashed)
    }

    /// [`MfaService::generate_recovery_codes`] in three steps, so that a
    /// server runs the argon2 hashes on threads of their own and the
    /// database work apart (a held lock never holds a hashing thread):
    /// check that the caller may have codes and make them (a read), hash
    /// them ([`MfaService::hash_recovery_codes`], no store), and store them
    /// ([`MfaService::recovery_codes_finish`], which checks again).
    pub fn recovery_codes_begin(&self, caller: &FullCaller) -> MfaResult<NewRecoveryCodes> {
        let (factors, replaces) = self.store.read(|tx| {
            Ok((
                load_factors(tx, caller.user_id)?,
                recovery_set_of(tx, caller.user_id)?,
            ))
        })?;
        may_have_recovery_codes(caller, &factors)?;
        Ok(NewRecoveryCodes {
            user: caller.user_id,
            replaces,
            codes: (0..RECOVERY_CODE_COUNT)
                .map(|_| new_recovery_code(self.rng.as_ref()))
                .collect(),
        })
    }

    /// The argon2 hashes of new recovery codes; touches no store.
    pub fn hash_recovery_codes(&self, new: NewRecoveryCodes) -> MfaResult<HashedRecoveryCodes> {
        let hashes = new
            .codes
            .iter()
            .map(|c| {
                let normalized = normalize_recovery_code(c).unwrap_or_default();
                self.hasher.hash(&normalized, self.rng.as_ref())
            })
            .collect::<MfaResult<Vec<_>>>()?;
        Ok(HashedRecoveryCodes {
            user: new.user,
            replaces: new.replaces,
            codes: new.codes,
            hashes,
        })
    }

    /// Store hashed recovery codes in place of the caller's, audited; the
    /// codes to show. The caller must still be allowed them (a factor
    /// removed meanwhile refuses), and they must be the caller's.
    ///
    /// `Conflict` when another set was stored since the first step (two
    /// requests at once, a double click): each was answered its codes,
    /// and only the last stored worked, so a user could keep a set that
    /// was void before it was shown. Now the first stored is the one
    /// shown and valid, and the others are refused.
    pub fn recovery_codes_finish(
        &self,
        caller: &FullCaller,
        hashed: HashedRecoveryCodes,
    ) -> MfaResult<Vec<String>> {
        if hashed.user != caller.user_id {
            return Err(MfaError::Forbidden);
        }
        let now = self.now();
        let HashedRecoveryCodes {
            codes,
            hashes,
            replaces,
            ..
        } = hashed;
        self.write(|tx| {
            lock_user(tx, caller.user_id)?;
            may_have_recovery_codes(caller, &load_factors(tx, caller.user_id)?)?;
            if recovery_set_of(tx, caller.user_id)? != replaces {
                return Err(MfaError::Conflict(
                    "new recovery codes were made meanwhile by another request: the codes \
                     it showed are the valid ones; ask again for another set"
                        .into(),
                ));
            }
            tx.replace_recovery_codes(caller.user_id, &hashes, now)?;
            audit_own_sign_in_change(
                tx,
                caller,
                now,
                AuditAction::RecoveryCodesGenerated,
                format!("{} codes", hashes.len()),
            )?;
            // A set replaced is a set its owner may have kept somewhere
            // safe: they hear that it no longer works (the first set
            // replaces none).
            if replaces.is_some() {
                self.notify_owner(
                    tx,
                    caller.user_id,
                    MailKind::SignInChanged {
                        change: SignInChange::RecoveryCodesReplaced,
                        by_admin: None,
                    },
                )?;
            }
            Ok(())
        })?;
        Ok(codes)
    }
}

/// Which set of recovery codes the user has: the salted hash of its first
/// code, unique to the set (ids are not: SQLite may give a new set the ids
/// of the one it replaced). `None` without codes.
fn recovery_set_of(tx: &mut dyn StoreTx, user: UserId) -> MfaResult<Option<String>> {
    Ok(tx
        .recovery_codes(user)?
        .into_iter()
        .min_by_key(|c| c.id)
        .map(|c| c.code_hash))
}

/// Recovery codes may be had with a verified factor, from a session that
/// may change factors.
fn may_have_recovery_codes(caller: &FullCaller, factors: &FactorSummary) -> MfaResult<()> {
    if !factors.has_verified_factor() {
        return Err(MfaError::NotEnrolled(
            "recovery codes need a verified authenticator or email factor",
        ));
    }
    may_change_factors(caller.level, caller.mfa_passed, factors)
}

/// New recovery codes, not hashed yet ([`MfaService::recovery_codes_begin`]).
/// `Debug` leaves out the codes.
pub struct NewRecoveryCodes {
    user: UserId,
    /// The set they replace ([`recovery_set_of`]).
    replaces: Option<String>,
    codes: Vec<String>,
}

crate::redact::debug_without_secrets!(NewRecoveryCodes { user } secret { replaces, codes });

/// New recovery codes and their hashes ([`MfaService::hash_recovery_codes`]).
/// `Debug` leaves out the codes.
pub struct HashedRecoveryCodes {
    user: UserId,
    replaces: Option<String>,
    codes: Vec<String>,
    hashes: Vec<String>,
}

crate::redact::debug_without_secrets!(HashedRecoveryCodes { user } secret { replaces, codes, hashes });

impl<S: Store> MfaService<S> {
    /// Opt in to (or out of) MFA personally; takes effect at the next login.
    /// Opting out takes a session in which a factor was verified, if the
    /// user has one.
    pub fn set_personal_opt_in(&self, caller: &FullCaller, opt_in: bool) -> MfaResult<()> {
        let now = self.now();
        self.write(|tx| {
            let mut user = load_user_for_update(tx, caller.user_id)?;
            if user.mfa_opt_in == opt_in {
                return Ok(());
            }
            if !opt_in {
                // Opting out lets the password alone into every org that
                // does not enforce MFA: a change of the user's MFA, like a
                // change of factors.
                may_change_factors(
                    caller.level,
                    caller.mfa_passed,
                    &load_factors(tx, caller.user_id)?,
                )?;
            }
            user.mfa_opt_in = opt_in;
            tx.update_user(&user)?;
            let action = if opt_in {
                AuditAction::PersonalMfaOptIn
            } else {
                AuditAction::PersonalMfaOptOut
            };
            audit_own(tx, caller, now, action, "")?;
            // Withdrawing the opt-in takes a requirement away, as an
            // admin's opt-out does: a stolen session doing it is heard of.
            if !opt_in {
                self.notify(
                    tx,
                    &user.email,
                    MailKind::SignInChanged {
                        change: SignInChange::PersonalMfaOptOut,
                        by_admin: None,
                    },
                )?;
            }
            Ok(())
        })
    }
}

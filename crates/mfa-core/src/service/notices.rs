//! Notices: mail that reports a change already made (a factor enrolled or
//! reset, a replay refused, a recovery code used, an email change, a
//! password or an opt-out set).
//!
//! A notice is written to the store in the transaction of the change it
//! reports, so a committed change always has its notice, and a change
//! rolled back has none; a process stopped between the commit and the
//! mail loses nothing. It is sent afterwards by
//! [`MfaService::deliver_notices`], in whichever process claims it first:
//! at once after the commit (by the thread a [`NoticeWaker`] wakes, or
//! without one by the call that made the change, which sends the notices
//! it queued), and again later while its sends fail for a reason that may
//! pass. Delivery is at least once: a process stopped between a send and
//! the deletion of its notice leaves it to be sent again after
//! [`NOTICE_LEASE_SECS`].

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use super::*;
use crate::error::{MailError, StoreError};
use crate::ports::NewNotice;

/// Notices a call that queued some sends itself after its commit, at most
/// (without a [`NoticeWaker`]): the newest due, those it queued.
pub const NOTICES_SENT_INLINE: u64 = 8;

/// How long a claimed notice is left to the process that claimed it
/// before another may take it: a process stopped while it sent a notice
/// delays that one by this much. The lease is renewed while the send is
/// under way, once a fifth of it has passed, so that a send however slow
/// (a mail server whose replies trickle in, each just inside its
/// timeout: an audit saw one outlast the lease and the notice sent again
/// by another process) keeps its notice to itself.
pub const NOTICE_LEASE_SECS: u64 = 300;

/// How often a process sending a notice looks whether its lease is due
/// for renewal: a look reads the clock, a renewal is one write.
const NOTICE_LEASE_CHECK: Duration = Duration::from_secs(1);

/// Sends of one notice tried at most; with the delays of [`retry_delay`]
/// the last is about two hours after the first (7,410 s): a mail server
/// away for less than that loses no notice.
pub const NOTICE_MAX_ATTEMPTS: u32 = 9;

/// The delay before the second send of a notice; it doubles after each
/// failure, up to [`NOTICE_MAX_RETRY_SECS`].
pub const NOTICE_FIRST_RETRY_SECS: u64 = 30;

/// The longest delay between two sends of a notice.
pub const NOTICE_MAX_RETRY_SECS: u64 = 3600;

/// Called after a transaction that queued notices has committed: wakes
/// whatever sends them ([`MfaService::with_notice_waker`]).
pub type NoticeWaker = Arc<dyn Fn() + Send + Sync>;

/// Which due notice [`MfaService::deliver_next_notice`] claims.
pub use crate::ports::NoticeOrder;

/// What became of one notice claimed and sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeOutcome {
    /// The mail server took it: deleted.
    Sent,
    /// Its send failed for a reason that may pass: due again after
    /// [`retry_delay`].
    Retried,
    /// Refused for good, or failed at its [`NOTICE_MAX_ATTEMPTS`]th try:
    /// deleted unsent.
    GivenUp,
}

/// What one [`MfaService::deliver_notices`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoticeRun {
    /// Notices the mail server took (or may have taken), and deleted.
    pub sent: u64,
    /// Notices whose send failed for a reason that may pass, due again
    /// later.
    pub retried: u64,
    /// Notices deleted unsent: refused for good by the mail server, or
    /// failed [`NOTICE_MAX_ATTEMPTS`] times.
    pub given_up: u64,
}

impl NoticeRun {
    /// Add one notice's outcome.
    pub fn count(&mut self, outcome: NoticeOutcome) {
        match outcome {
            NoticeOutcome::Sent => self.sent += 1,
            NoticeOutcome::Retried => self.retried += 1,
            NoticeOutcome::GivenUp => self.given_up += 1,
        }
    }
}

/// The delay before the send after the `attempts`-th failed one.
pub fn retry_delay(attempts: u32) -> u64 {
    let doublings = attempts.saturating_sub(1).min(16);
    (NOTICE_FIRST_RETRY_SECS << doublings).min(NOTICE_MAX_RETRY_SECS)
}

impl<S: Store> MfaService<S> {
    /// Have `waker` called after each transaction that queued notices,
    /// instead of sending them in the request that made the change. A
    /// server wakes a thread of its own with it, which calls
    /// [`MfaService::deliver_notices`], so that no request waits for the
    /// mail server.
    pub fn with_notice_waker(mut self, waker: NoticeWaker) -> Self {
        self.notice_waker = Some(waker);
        self
    }

    /// Queue `kind` to `to` in `tx`.
    pub(crate) fn notify(&self, tx: &mut dyn StoreTx, to: &str, kind: MailKind) -> MfaResult<()> {
        self.notify_all(tx, [(to.to_string(), kind)])
    }

    /// Queue `kind` to the user's address in `tx`.
    pub(crate) fn notify_owner(
        &self,
        tx: &mut dyn StoreTx,
        user: UserId,
        kind: MailKind,
    ) -> MfaResult<()> {
        let to = load_user(tx, user)?.email;
        self.notify(tx, &to, kind)
    }

    /// Queue every `(to, kind)` in `tx`, in one statement where the store
    /// writes many rows so.
    pub(crate) fn notify_all(
        &self,
        tx: &mut dyn StoreTx,
        notices: impl IntoIterator<Item = (String, MailKind)>,
    ) -> MfaResult<()> {
        let now = self.now();
        let mut encoded = Vec::new();
        for (to, kind) in notices {
            let Some(payload) = kind.notice_payload() else {
                return Err(MfaError::Store(StoreError::Backend(
                    "a message with a code or a token is never stored as a notice".into(),
                )));
            };
            encoded.push((to, payload));
        }
        if encoded.is_empty() {
            return Ok(());
        }
        let rows: Vec<NewNotice<'_>> = encoded
            .iter()
            .map(|(to, payload)| NewNotice {
                to,
                payload,
                queued_at: now,
            })
            .collect();
        tx.queue_notices(&rows)?;
        self.notices_queued
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// [`Store::write`], then, if the transaction queued notices and
    /// committed, have them sent (see the module docs). Every write of the
    /// service that may notify runs through it.
    pub(crate) fn write<T: Send>(
        &self,
        f: impl FnMut(&mut dyn StoreTx) -> MfaResult<T> + Send,
    ) -> MfaResult<T> {
        // Notices another request queued meanwhile are counted too: they
        // only cause a wake-up, or a send, that their own request would
        // have caused; none of this one's is missed.
        let before = self.notices_queued.load(Ordering::Relaxed);
        let result = self.store.write(f);
        let queued = self
            .notices_queued
            .load(Ordering::Relaxed)
            .wrapping_sub(before);
        if result.is_ok() && queued > 0 {
            match &self.notice_waker {
                Some(wake) => wake(),
                // The newest: those this call queued, not a backlog a mail
                // outage left (an audit saw a command take 80 s over eight
                // old notices, its own left queued). Failures stay queued
                // for the next delivery.
                None => {
                    for _ in 0..queued.min(NOTICES_SENT_INLINE) {
                        if !matches!(self.deliver_next_notice(NoticeOrder::Newest), Ok(Some(_))) {
                            break;
                        }
                    }
                }
            }
        }
        result
    }

    /// Send the notices that are due, one claimed at a time, oldest first,
    /// until none is left: each one sent is deleted; one whose send failed
    /// for a reason that may pass is due again after [`retry_delay`], and
    /// given up after [`NOTICE_MAX_ATTEMPTS`]. Several processes may
    /// deliver at once: each notice is claimed by one. An embedder calls it
    /// when woken ([`MfaService::with_notice_waker`]) and every few
    /// seconds, for the retries and for notices a stopped process had
    /// claimed; a server that counts each outcome as it comes calls
    /// [`MfaService::deliver_next_notice`] in a loop instead.
    pub fn deliver_notices(&self) -> MfaResult<NoticeRun> {
        let mut run = NoticeRun::default();
        while let Some(outcome) = self.deliver_next_notice(NoticeOrder::Oldest)? {
            run.count(outcome);
        }
        Ok(run)
    }

    /// Claim the next notice due, send it and record the outcome; `None`
    /// when none is due. One at a time, so that the lease of a claim
    /// ([`NOTICE_LEASE_SECS`]) covers one send however slow the mail
    /// server: an audit saw a batch of eight outlast it on a server that
    /// took 9 s a reply, and another process send two of them again.
    pub fn deliver_next_notice(&self, order: NoticeOrder) -> MfaResult<Option<NoticeOutcome>> {
        let now = self.now();
        let lease_until = now.plus_secs(NOTICE_LEASE_SECS);
        let Some(notice) = self
            .store
            .write(|tx| Ok(tx.claim_notice(now, lease_until, order)?))?
        else {
            return Ok(None);
        };
        let sent = match serde_json::from_str::<MailKind>(&notice.payload) {
            Ok(kind) => std::thread::scope(|scope| {
                let (send_over, lease_not_needed) = mpsc::channel::<()>();
                scope.spawn(|| self.hold_notice_lease(notice.id, lease_until, lease_not_needed));
                let sent = self.mailer.send_notice(&Mail {
                    to: notice.to.clone(),
                    kind,
                });
                drop(send_over);
                sent
            }),
            // Written by a newer version, which may send it: left to it,
            // within the same number of tries.
            Err(e) => Err(MailError {
                transient: true,
                delivery_unknown: false,
                message: format!("not a notice this version knows: {e}"),
            }),
        };
        // A send whose outcome is unknown counts as sent: the mail server
        // took the message and did not confirm it in time, and sending
        // it again would repeat it at every try (an audit saw 8 copies).
        // The mailer says "unknown" only past the point where a server
        // that never answered would have failed
        // ([`crate::Mailer::send_notice`]).
        let outcome = match sent {
            Ok(())
            | Err(MailError {
                delivery_unknown: true,
                ..
            }) => NoticeOutcome::Sent,
            Err(e) if e.transient && notice.attempts < NOTICE_MAX_ATTEMPTS => {
                NoticeOutcome::Retried
            }
            Err(_) => NoticeOutcome::GivenUp,
        };
        match outcome {
            NoticeOutcome::Sent | NoticeOutcome::GivenUp => {
                self.store.write(|tx| Ok(tx.delete_notice(notice.id)?))?;
            }
            NoticeOutcome::Retried => {
                let at = self.now().plus_secs(retry_delay(notice.attempts));
                self.store
                    .write(|tx| Ok(tx.retry_notice_at(notice.id, at)?))?;
            }
        }
        Ok(Some(outcome))
    }

    /// Renew the lease of notice `id`, claimed until `held_until`, until
    /// `send_over` says the send has ended. A renewal that fails (the
    /// database away) is tried again at the next look; one that finds the
    /// notice claimed by another (this process's lease ran out while the
    /// database was away) ends the renewals.
    fn hold_notice_lease(&self, id: i64, mut held_until: Timestamp, send_over: mpsc::Receiver<()>) {
        while let Err(RecvTimeoutError::Timeout) = send_over.recv_timeout(NOTICE_LEASE_CHECK) {
            let now = self.now();
            if now.plus_secs(NOTICE_LEASE_SECS * 4 / 5) < held_until {
                continue;
            }
            let until = now.plus_secs(NOTICE_LEASE_SECS);
            match self
                .store
                .write(|tx| Ok(tx.extend_notice_lease(id, held_until, until)?))
            {
                Ok(true) => held_until = until,
                Ok(false) => return,
                Err(_) => {}
            }
        }
    }

    /// Notices waiting to be sent, claimed or not.
    pub fn notices_waiting(&self) -> MfaResult<u64> {
        self.store.read(|tx| Ok(tx.count_notices()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_an_hour() {
        // The waits between the tries.
        let delays: Vec<u64> = (1..NOTICE_MAX_ATTEMPTS).map(retry_delay).collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3600]);
        assert_eq!(delays.iter().sum::<u64>(), 7_410);
        assert_eq!(retry_delay(u32::MAX), NOTICE_MAX_RETRY_SECS);
    }

    #[test]
    fn codes_and_tokens_are_never_stored() {
        for kind in [
            MailKind::EnrollmentCode {
                code: "123456".into(),
                valid_for_secs: 600,
            },
            MailKind::LoginCode {
                code: "123456".into(),
                valid_for_secs: 600,
            },
            MailKind::EmailChangeConfirm {
                token: "t".into(),
                valid_for_secs: 600,
            },
        ] {
            assert_eq!(kind.notice_payload(), None);
        }
    }

    #[test]
    fn a_stored_notice_reads_back_as_it_was() {
        let kind = MailKind::FactorReset {
            methods: vec![MfaMethod::Authenticator, MfaMethod::Email],
            by_admin: Some("Bob Admin, of Org Two".into()),
        };
        let payload = kind.notice_payload().unwrap();
        assert_eq!(
            payload,
            r#"{"kind":"factor_reset","methods":["AUTHENTICATOR","EMAIL"],"by_admin":"Bob Admin, of Org Two"}"#
        );
        assert_eq!(serde_json::from_str::<MailKind>(&payload).unwrap(), kind);
    }

    /// The stored form of every notice, pinned: notices outlive the build
    /// that queued them (a restart, a rolling upgrade), so a variant or
    /// field renamed in the domain must fail here rather than leave rows
    /// no build reads. A change to this list needs a migration of the
    /// `notices` rows, or a `#[serde(alias)]`.
    #[test]
    fn the_stored_form_of_every_notice_is_pinned() {
        use crate::SignInChange as C;
        let signed_in = |change| MailKind::SignInChanged {
            change,
            by_admin: None,
        };
        for (kind, stored) in [
            (
                MailKind::FactorEnrolled {
                    method: MfaMethod::Recovery,
                },
                r#"{"kind":"factor_enrolled","method":"RECOVERY"}"#,
            ),
            (
                MailKind::FactorReset {
                    methods: vec![],
                    by_admin: None,
                },
                r#"{"kind":"factor_reset","methods":[],"by_admin":null}"#,
            ),
            (MailKind::ReplayRefused, r#"{"kind":"replay_refused"}"#),
            (MailKind::CodesLockedOut, r#"{"kind":"codes_locked_out"}"#),
            (
                MailKind::RecoveryCodeUsed { remaining: 3 },
                r#"{"kind":"recovery_code_used","remaining":3}"#,
            ),
            (
                MailKind::EmailChangeNotice {
                    new_email_masked: "n***@example.org".into(),
                    by_admin: Some("a@example.com".into()),
                },
                r#"{"kind":"email_change_notice","new_email_masked":"n***@example.org","by_admin":"a@example.com"}"#,
            ),
            (
                MailKind::EmailChanged {
                    new_email_masked: "n***@example.org".into(),
                    email_factor_removed: true,
                },
                r#"{"kind":"email_changed","new_email_masked":"n***@example.org","email_factor_removed":true}"#,
            ),
            (
                signed_in(C::PasswordSet),
                r#"{"kind":"sign_in_changed","change":"password_set","by_admin":null}"#,
            ),
            (
                signed_in(C::MfaOptOut),
                r#"{"kind":"sign_in_changed","change":"mfa_opt_out","by_admin":null}"#,
            ),
            (
                signed_in(C::PersonalMfaOptOut),
                r#"{"kind":"sign_in_changed","change":"personal_mfa_opt_out","by_admin":null}"#,
            ),
            (
                signed_in(C::RecoveryCodesReplaced),
                r#"{"kind":"sign_in_changed","change":"recovery_codes_replaced","by_admin":null}"#,
            ),
        ] {
            assert_eq!(kind.notice_payload().as_deref(), Some(stored), "{kind:?}");
            assert_eq!(serde_json::from_str::<MailKind>(stored).ok(), Some(kind));
        }
    }
}

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
//! without one by the call that made the change, which sends one batch of
//! the notices due), and again later while its sends fail for a reason
//! that may pass. Delivery is at least once: a process stopped
//! between a send and the deletion of its notice leaves it to be sent
//! again after [`NOTICE_LEASE_SECS`].

use std::sync::atomic::Ordering;

use super::*;
use crate::error::{MailError, StoreError};
use crate::ports::{NewNotice, QueuedNotice};

/// Notices claimed per write transaction of [`MfaService::deliver_notices`].
pub const NOTICE_BATCH: u32 = 8;

/// How long a claimed notice is left to the process that claimed it: well
/// over what a batch takes to send to a mail server that answers each
/// step at its timeout. A process stopped with notices claimed delays
/// them by this much.
pub const NOTICE_LEASE_SECS: u64 = 300;

/// Sends of one notice tried at most; with the delays of [`retry_delay`]
/// the last is about two hours after the first.
pub const NOTICE_MAX_ATTEMPTS: u32 = 8;

/// The delay before the second send of a notice; it doubles after each
/// failure, up to [`NOTICE_MAX_RETRY_SECS`].
pub const NOTICE_FIRST_RETRY_SECS: u64 = 30;

/// The longest delay between two sends of a notice.
pub const NOTICE_MAX_RETRY_SECS: u64 = 3600;

/// Called after a transaction that queued notices has committed: wakes
/// whatever sends them ([`MfaService::with_notice_waker`]).
pub type NoticeWaker = Arc<dyn Fn() + Send + Sync>;

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

/// The delay before the send after the `attempts`-th failed one.
pub fn retry_delay(attempts: u32) -> u64 {
    let doublings = attempts.saturating_sub(1).min(16);
    (NOTICE_FIRST_RETRY_SECS << doublings).min(NOTICE_MAX_RETRY_SECS)
}

/// A notice as stored: `None` for a message that carries a code or a
/// token, which is never written to the store.
fn notice_payload(kind: &MailKind) -> Option<String> {
    match kind {
        MailKind::EnrollmentCode { .. }
        | MailKind::LoginCode { .. }
        | MailKind::EmailChangeConfirm { .. } => None,
        MailKind::FactorEnrolled { .. }
        | MailKind::FactorReset { .. }
        | MailKind::ReplayRefused
        | MailKind::RecoveryCodeUsed { .. }
        | MailKind::EmailChangeNotice { .. }
        | MailKind::EmailChanged { .. }
        | MailKind::SignInChanged { .. } => serde_json::to_string(kind).ok(),
    }
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
            let Some(payload) = notice_payload(&kind) else {
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
        self.notices_queued.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// [`Store::write`], then, if the transaction queued notices and
    /// committed, have them sent (see the module docs). Every write of the
    /// service that may notify runs through it.
    pub(crate) fn write<T: Send>(
        &self,
        f: impl FnOnce(&mut dyn StoreTx) -> MfaResult<T> + Send,
    ) -> MfaResult<T> {
        // Another request's notices counted meanwhile only cause a wake-up
        // with nothing more to send; none of this one's is missed.
        let before = self.notices_queued.load(Ordering::Relaxed);
        let result = self.store.write(f);
        if result.is_ok() && self.notices_queued.load(Ordering::Relaxed) != before {
            match &self.notice_waker {
                Some(wake) => wake(),
                // One batch: a request does not send a backlog a mail
                // outage left. Failures stay queued for the next delivery.
                None => {
                    let _ = self.deliver_notice_batch(&mut NoticeRun::default());
                }
            }
        }
        result
    }

    /// Send the notices that are due, [`NOTICE_BATCH`] claimed at a time,
    /// until none is left: each one sent is deleted; one whose send failed
    /// for a reason that may pass is due again after [`retry_delay`], and
    /// given up after [`NOTICE_MAX_ATTEMPTS`]. Several processes may
    /// deliver at once: each notice is claimed by one. A server calls it
    /// when woken ([`MfaService::with_notice_waker`]) and every few
    /// seconds, for the retries and for notices a stopped process had
    /// claimed.
    pub fn deliver_notices(&self) -> MfaResult<NoticeRun> {
        let mut run = NoticeRun::default();
        while self.deliver_notice_batch(&mut run)? == NOTICE_BATCH as usize {}
        Ok(run)
    }

    /// Claim up to [`NOTICE_BATCH`] notices due and send them; how many
    /// were claimed.
    fn deliver_notice_batch(&self, run: &mut NoticeRun) -> MfaResult<usize> {
        let now = self.now();
        let lease_until = now.plus_secs(NOTICE_LEASE_SECS);
        let claimed = self
            .store
            .write(|tx| Ok(tx.claim_notices(now, lease_until, NOTICE_BATCH)?))?;
        for notice in &claimed {
            self.deliver_notice(notice, run)?;
        }
        Ok(claimed.len())
    }

    /// Send one claimed notice and record the outcome.
    fn deliver_notice(&self, notice: &QueuedNotice, run: &mut NoticeRun) -> MfaResult<()> {
        let sent = match serde_json::from_str::<MailKind>(&notice.payload) {
            Ok(kind) => self.mailer.send_notice(&Mail {
                to: notice.to.clone(),
                kind,
            }),
            // Written by a newer version, which may send it: left to it,
            // within the same number of tries.
            Err(e) => Err(MailError {
                transient: true,
                delivery_unknown: false,
                message: format!("not a notice this version knows: {e}"),
            }),
        };
        let retry = match sent {
            Ok(()) => None,
            Err(e) if e.delivery_unknown => None,
            Err(e) if e.transient && notice.attempts < NOTICE_MAX_ATTEMPTS => {
                Some(self.now().plus_secs(retry_delay(notice.attempts)))
            }
            Err(_) => {
                run.given_up += 1;
                self.store.write(|tx| Ok(tx.delete_notice(notice.id)?))?;
                return Ok(());
            }
        };
        match retry {
            None => {
                run.sent += 1;
                self.store.write(|tx| Ok(tx.delete_notice(notice.id)?))?;
            }
            Some(at) => {
                run.retried += 1;
                self.store
                    .write(|tx| Ok(tx.retry_notice_at(notice.id, at)?))?;
            }
        }
        Ok(())
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
        let delays: Vec<u64> = (1..=NOTICE_MAX_ATTEMPTS).map(retry_delay).collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3600]);
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
            assert_eq!(notice_payload(&kind), None);
        }
    }

    #[test]
    fn a_stored_notice_reads_back_as_it_was() {
        let kind = MailKind::FactorReset {
            methods: vec![MfaMethod::Authenticator, MfaMethod::Email],
            by_admin: Some("Bob Admin, of Org Two".into()),
        };
        let payload = notice_payload(&kind).unwrap();
        assert_eq!(
            payload,
            r#"{"kind":"factor_reset","methods":["AUTHENTICATOR","EMAIL"],"by_admin":"Bob Admin, of Org Two"}"#
        );
        assert_eq!(serde_json::from_str::<MailKind>(&payload).unwrap(), kind);
    }
}

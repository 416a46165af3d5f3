//! The server's mail between the service and the mail transport: a mail
//! server that stops answering slows the requests that need a message
//! delivered, and nothing else.
//!
//! A hung SMTP server holds a send for its timeout (10 s a step; a server
//! that stops after its greeting, 20 s, as lettre ends that session with
//! a `QUIT` whose answer it waits for). Before, 40 requests that mailed
//! at once took every blocking thread, so that logins, reads and `/readyz`
//! waited behind them and the load balancer took every node out (an audit
//! saw `/readyz` fail at 32 sends); and a reset mailed its notices one
//! after the other inside the request, 20 s each.
//!
//! - **Messages a request cannot do without** (codes, email-change
//!   confirmations: [`Mailer::send`]) are sent at most [`SENDS_AT_ONCE`]
//!   at a time. A send that finds them all busy waits at most
//!   [`SEND_SLOT_WAIT`] for one, then is refused as an unavailable mail
//!   server (`503 mail_unavailable`): so mail holds at most that many
//!   threads for long. Each is sent on a thread of its own, which holds
//!   the slot until the transport returns; the request waits for it at
//!   most [`SEND_DEADLINE`], and past that is told the message was not
//!   confirmed (it may still arrive), not kept longer.
//! - **Notices** ([`Mailer::send_notice`]: a factor added or removed, a
//!   replay refused, a recovery code used, the notice of an email change)
//!   report a change already made. The service queues them in the
//!   database with the change, and the thread of
//!   [`crate::notice_sender`] sends them, one at a time, so a request
//!   never waits for them. A notice waits for a send slot as long as it
//!   takes, and for the mail server's answer too: one whose delivery is
//!   unknown counts as sent, and one that failed is tried again later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mfa_core::service::NoticeOutcome;
use mfa_core::{Mail, MailError, Mailer};

/// Messages sent at once, notices included.
pub const SENDS_AT_ONCE: usize = 4;

/// How long a send waits for one of the [`SENDS_AT_ONCE`] slots. A
/// healthy mail server takes tens of milliseconds a message, so a burst of
/// hundreds fits in it.
pub const SEND_SLOT_WAIT: Duration = Duration::from_secs(2);

/// How long a request waits for its message, its wait for a send slot
/// included: the transport's timeout for one step of the SMTP dialogue
/// ([`mfa_email::SMTP_TIMEOUT`]), and a second for the steps before it,
/// which a mail server that answers takes milliseconds for.
pub const SEND_DEADLINE: Duration = Duration::from_secs(mfa_email::SMTP_TIMEOUT.as_secs() + 1);

/// Sends in flight, and a wake-up for a send waiting for a slot.
#[derive(Debug, Default)]
struct Slots {
    busy: Mutex<usize>,
    freed: Condvar,
}

/// A slot, given back when dropped.
struct Slot(Arc<Slots>);

impl Slots {
    /// A slot, waiting at most `wait` (`None`: as long as it takes).
    fn take(self: &Arc<Self>, wait: Option<Duration>) -> Option<Slot> {
        let deadline = wait.map(|wait| Instant::now() + wait);
        let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        while *busy >= SENDS_AT_ONCE {
            busy = match deadline {
                None => self
                    .freed
                    .wait(busy)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.checked_duration_since(Instant::now())?;
                    self.freed
                        .wait_timeout(busy, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        *busy += 1;
        Some(Slot(Arc::clone(self)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock().unwrap_or_else(PoisonError::into_inner);
        *busy -= 1;
        self.0.freed.notify_one();
    }
}

/// Outcomes of notices (see [`MailDispatch::counts`]).
#[derive(Debug, Default)]
struct Notices {
    /// Sends of notices, by outcome.
    sent: AtomicU64,
    failed: AtomicU64,
    /// Sends the mail server did not confirm in time (counted as sent).
    unconfirmed: AtomicU64,
    /// Notices deleted unsent.
    given_up: AtomicU64,
    /// Notices in the database after the last delivery.
    waiting: AtomicU64,
}

/// Outcomes of required messages (see [`MailDispatch::counts`]).
#[derive(Debug, Default)]
struct Required {
    sent: AtomicU64,
    failed: AtomicU64,
    busy: AtomicU64,
    /// Messages whose end the mail server did not confirm in time: it may
    /// have taken them.
    unconfirmed: AtomicU64,
}

/// The mailer the service gets: see the module docs.
pub struct MailDispatch {
    inner: Arc<dyn Mailer>,
    required: Arc<Required>,
    slots: Arc<Slots>,
    notices: Notices,
}

impl std::fmt::Debug for MailDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailDispatch")
            .field("slots", &self.slots)
            .field("notices", &self.notices)
            .finish_non_exhaustive()
    }
}

impl MailDispatch {
    /// Deliver through `inner`.
    pub fn new(inner: Arc<dyn Mailer>) -> MailDispatch {
        MailDispatch {
            inner,
            required: Arc::default(),
            slots: Arc::default(),
            notices: Notices::default(),
        }
    }

    /// Notices in the database, claimed or not, after the last delivery
    /// of this process.
    pub fn notices_waiting(&self) -> u64 {
        self.notices.waiting.load(Ordering::Relaxed)
    }

    /// Record what became of a notice (its sends are counted as they end).
    pub fn note_notice(&self, outcome: NoticeOutcome) {
        if outcome == NoticeOutcome::GivenUp {
            self.notices.given_up.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Record how many notices wait in the database.
    pub fn set_notices_waiting(&self, waiting: u64) {
        self.notices.waiting.store(waiting, Ordering::Relaxed);
    }

    /// `(kind, outcome, count)` since the start: `kind` `required` (a
    /// request waits for it) or `notice`; `outcome` `sent`, `failed`,
    /// `busy` (required: refused after waiting for a send slot),
    /// `unconfirmed` (the end of the message was not confirmed in time: the
    /// mail server may have taken it; a notice counts as sent) or
    /// `given_up` (a
    /// notice deleted unsent: refused for good, or failed at its every
    /// try).
    pub fn counts(&self) -> [(&'static str, &'static str, u64); 8] {
        let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
        [
            ("required", "sent", read(&self.required.sent)),
            ("required", "failed", read(&self.required.failed)),
            ("required", "busy", read(&self.required.busy)),
            ("required", "unconfirmed", read(&self.required.unconfirmed)),
            ("notice", "sent", read(&self.notices.sent)),
            ("notice", "failed", read(&self.notices.failed)),
            ("notice", "unconfirmed", read(&self.notices.unconfirmed)),
            ("notice", "given_up", read(&self.notices.given_up)),
        ]
    }
}

impl Mailer for MailDispatch {
    fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let started = Instant::now();
        let Some(slot) = self.slots.take(Some(SEND_SLOT_WAIT)) else {
            self.required.busy.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                sends = SENDS_AT_ONCE,
                "mail not sent: every mail slot is held by a send the mail server has not \
                 answered"
            );
            return Err(MailError {
                transient: true,
                delivery_unknown: false,
                message: "the mail server is not answering the messages before this one".into(),
            });
        };
        let (done, outcome) = sync_channel(1);
        let sender = {
            let (inner, required, mail) = (
                Arc::clone(&self.inner),
                Arc::clone(&self.required),
                mail.clone(),
            );
            std::thread::Builder::new()
                .name("mail-send".into())
                .spawn(move || {
                    let sent = inner.send(&mail);
                    let count = match &sent {
                        Ok(()) => &required.sent,
                        Err(e) if e.delivery_unknown => &required.unconfirmed,
                        Err(_) => &required.failed,
                    };
                    count.fetch_add(1, Ordering::Relaxed);
                    // The request may have stopped waiting.
                    let _ = done.send(sent);
                    drop(slot);
                })
        };
        if let Err(e) = sender {
            self.required.failed.fetch_add(1, Ordering::Relaxed);
            return Err(MailError {
                transient: true,
                delivery_unknown: false,
                message: format!("cannot start a thread to send the message: {e}"),
            });
        }
        // In all, the wait for a slot included.
        match outcome.recv_timeout(SEND_DEADLINE.saturating_sub(started.elapsed())) {
            Ok(sent) => sent,
            Err(RecvTimeoutError::Disconnected) => Err(MailError {
                transient: true,
                delivery_unknown: false,
                message: "the thread sending the message stopped".into(),
            }),
            // Counted by the send's thread when the mail server answers.
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    waited_secs = SEND_DEADLINE.as_secs(),
                    "the mail server has not confirmed the message in time; the request goes \
                     on without it"
                );
                Err(MailError {
                    transient: true,
                    delivery_unknown: true,
                    message: format!(
                        "the mail server did not confirm the message within {} s",
                        SEND_DEADLINE.as_secs()
                    ),
                })
            }
        }
    }

    fn send_notice(&self, mail: &Mail) -> Result<(), MailError> {
        let _slot = self.slots.take(None);
        // The transport logs a failure.
        let sent = self.inner.send_notice(mail);
        let outcome = match &sent {
            Ok(()) => &self.notices.sent,
            Err(e) if e.delivery_unknown => &self.notices.unconfirmed,
            Err(_) => &self.notices.failed,
        };
        outcome.fetch_add(1, Ordering::Relaxed);
        sent
    }

    fn accepts_address(&self, email: &str) -> bool {
        self.inner.accepts_address(email)
    }
}

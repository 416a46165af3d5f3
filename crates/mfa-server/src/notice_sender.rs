//! The thread that sends the notices the service queues in the database
//! ([`mfa_core::MfaService::deliver_notices`]): woken after each
//! transaction that queued some, and every [`NOTICE_POLL`] for the ones
//! due again after a failed send, or left by a process that stopped while
//! it held them. Each process of a deployment runs one; a notice is sent
//! by whichever claims it first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mfa_core::service::{NoticeOrder, NoticeOutcome, NoticeWaker};

use crate::Service;
use crate::mail_dispatch::MailDispatch;

/// How often the thread looks for notices due without being woken.
pub const NOTICE_POLL: Duration = Duration::from_secs(5);

/// Deliveries asked for and done, and whether to stop.
#[derive(Debug, Default)]
struct Passes {
    /// Asked for so far (each wake-up and each [`NoticeSender::flush`]).
    asked: u64,
    /// The value of `asked` when the last finished delivery began: every
    /// notice committed before that was tried.
    covered: u64,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    passes: Mutex<Passes>,
    /// Signalled when a delivery is asked for, and when one finishes.
    changed: Condvar,
    running: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Passes> {
        self.passes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ask for a delivery; the number to wait for.
    fn ask(&self) -> u64 {
        let mut passes = self.lock();
        passes.asked += 1;
        self.changed.notify_all();
        passes.asked
    }
}

/// The notice thread's handle: see the module docs.
#[derive(Debug, Default, Clone)]
pub struct NoticeSender {
    shared: Arc<Shared>,
}

impl NoticeSender {
    /// A sender whose thread is not started yet: its waker is given to the
    /// service first ([`mfa_core::MfaService::with_notice_waker`]).
    pub fn new() -> NoticeSender {
        NoticeSender::default()
    }

    /// What the service calls after a transaction that queued notices.
    pub fn waker(&self) -> NoticeWaker {
        let shared = self.shared.clone();
        Arc::new(move || {
            shared.ask();
        })
    }

    /// Start the thread: a delivery at once (notices a stopped process
    /// left), then one each time it is woken or [`NOTICE_POLL`] passed.
    pub fn start(&self, service: Arc<Service>, dispatch: Arc<MailDispatch>) -> std::io::Result<()> {
        let shared = self.shared.clone();
        shared.running.store(true, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("mail-notices".into())
            .spawn(move || {
                deliver_until_stopped(&shared, &service, &dispatch);
                shared.running.store(false, Ordering::SeqCst);
                shared.changed.notify_all();
            });
        if spawned.is_err() {
            self.shared.running.store(false, Ordering::SeqCst);
        }
        spawned.map(drop)
    }

    /// Have every notice committed before this call tried once (those due),
    /// waiting at most `wait`; whether that was done.
    pub fn flush(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let target = self.shared.ask();
        let mut passes = self.shared.lock();
        while passes.covered < target {
            if !self.shared.running.load(Ordering::SeqCst) {
                return false;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            passes = self
                .shared
                .changed
                .wait_timeout(passes, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Whether the thread runs (started, not stopped).
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// End the thread after the notice under way, if any.
    pub fn stop(&self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
    }

    /// Wait at most `wait` for the thread to end (after [`Self::stop`]);
    /// whether it did. A process that exits while a notice is being sent
    /// leaves it claimed, to be sent again by another process after the
    /// lease: an audit saw a stop begin a send in the last second of its
    /// flush, exit, and the notice arrive twice.
    pub fn wait_stopped(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        // Bounded polling: the thread's end is not signalled under the lock.
        while self.is_running() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

fn deliver_until_stopped(shared: &Shared, service: &Service, dispatch: &MailDispatch) {
    // The first delivery at once.
    let mut done = u64::MAX;
    loop {
        let began = {
            let mut passes = shared.lock();
            if done != u64::MAX {
                passes.covered = done;
                shared.changed.notify_all();
                if passes.asked == done && !passes.stop {
                    passes = shared
                        .changed
                        .wait_timeout(passes, NOTICE_POLL)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
            if passes.stop {
                return;
            }
            passes.asked
        };
        deliver(service, dispatch, shared);
        done = began;
    }
}

/// One delivery: every notice due, oldest first, each logged and counted
/// as it goes, and the count of those waiting kept fresh.
fn deliver(service: &Service, dispatch: &MailDispatch, shared: &Shared) {
    loop {
        // A stop asked for ends the delivery after the notice under way:
        // the others stay due, for this process's successor or another.
        if shared.lock().stop {
            break;
        }
        match service.deliver_next_notice(NoticeOrder::Oldest) {
            Ok(Some(outcome)) => {
                match outcome {
                    NoticeOutcome::Sent => {}
                    NoticeOutcome::Retried => {
                        tracing::warn!("notice not sent: it is tried again later");
                    }
                    NoticeOutcome::GivenUp => tracing::warn!(
                        "notice given up: the mail server refused it, or failed at its every try"
                    ),
                }
                dispatch.note_notice(outcome);
            }
            Ok(None) => break,
            Err(error) => {
                tracing::warn!(%error, "sending notices failed; they are tried again later");
                break;
            }
        }
        count_waiting(service, dispatch);
    }
    count_waiting(service, dispatch);
}

/// Read how many notices wait, for `mfa_mail_notices_queued`.
fn count_waiting(service: &Service, dispatch: &MailDispatch) {
    if let Ok(waiting) = service.notices_waiting() {
        dispatch.set_notices_waiting(waiting);
    }
}

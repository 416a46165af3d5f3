//! The queue of notices: written with the change, claimed by one process
//! at a time, due again after a lease or a failed send.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use mfa_core::ports::{NewNotice, NoticeOrder, QueuedNotice};
use mfa_core::{MfaError, Store, StoreTx, Timestamp};
use mfa_store::test_support::TestDatabase;

use crate::support::*;

fn queue(tx: &mut dyn StoreTx, to: &str, at: i64) -> mfa_core::MfaResult<()> {
    let notice = NewNotice {
        to,
        payload: r#"{"kind":"replay_refused"}"#,
        queued_at: Timestamp(at),
    };
    Ok(tx.queue_notices(&[notice])?)
}

fn a_notice_is_kept_only_with_its_change(db: TestDatabase) {
    let store = open(&db);
    let rolled_back: Result<(), MfaError> = store.write(|tx| {
        queue(tx, "gone@example.com", 10)?;
        Err(MfaError::Forbidden)
    });
    assert_eq!(rolled_back, Err(MfaError::Forbidden));
    assert_eq!(read(&store, |tx| Ok(tx.count_notices()?)), 0);
    write(&store, |tx| queue(tx, "kept@example.com", 10));
    assert_eq!(read(&store, |tx| Ok(tx.count_notices()?)), 1);
}

fn claim(
    store: &mfa_store::DbStore,
    now: i64,
    lease: i64,
    order: NoticeOrder,
) -> Option<QueuedNotice> {
    write(store, |tx| {
        Ok(tx.claim_notice(Timestamp(now), Timestamp(lease), order)?)
    })
}

fn a_claim_holds_a_notice_until_its_lease_ends(db: TestDatabase) {
    let store = open(&db);
    write(&store, |tx| {
        queue(tx, "a@example.com", 10)?;
        queue(tx, "b@example.com", 20)?;
        queue(tx, "later@example.com", 30)
    });
    // Due at their queueing time, oldest or newest first.
    let a = claim(&store, 25, 100, NoticeOrder::Oldest).expect("a is due");
    assert_eq!((a.to.as_str(), a.attempts), ("a@example.com", 1));
    assert_eq!(a.queued_at, Timestamp(10));
    assert_eq!(a.payload, r#"{"kind":"replay_refused"}"#);
    let b = claim(&store, 25, 100, NoticeOrder::Newest).expect("b is due");
    assert_eq!(b.to, "b@example.com");
    assert_eq!(claim(&store, 25, 100, NoticeOrder::Oldest), None);
    // Held by the lease: only the third is due.
    let later = claim(&store, 99, 200, NoticeOrder::Oldest).expect("the third");
    assert_eq!(later.to, "later@example.com");
    assert_eq!(claim(&store, 99, 200, NoticeOrder::Newest), None);
    // A failed send makes it due later; a sent one is deleted.
    write(&store, |tx| {
        tx.retry_notice_at(a.id, Timestamp(150))?;
        assert!(tx.delete_notice(b.id)?);
        assert!(!tx.delete_notice(b.id)?);
        Ok(())
    });
    let again = claim(&store, 150, 400, NoticeOrder::Oldest).expect("a again");
    assert_eq!((again.id, again.attempts), (a.id, 2));
    // The lease of a process that stopped runs out: another takes it.
    let taken_over = claim(&store, 200, 500, NoticeOrder::Oldest).expect("the third again");
    assert_eq!((taken_over.id, taken_over.attempts), (later.id, 2));
    assert_eq!(read(&store, |tx| Ok(tx.count_notices()?)), 2);
}

/// A lease renewed while its send is under way; only by the claim that
/// holds it: once another process took the notice over, the first
/// process's renewal finds another time and changes nothing.
fn a_lease_is_renewed_only_by_its_holder(db: TestDatabase) {
    let store = open(&db);
    write(&store, |tx| queue(tx, "slow@example.com", 10));
    let held = claim(&store, 10, 310, NoticeOrder::Oldest).expect("due");
    let renew = |held_until: i64, until: i64| {
        write(&store, |tx| {
            Ok(tx.extend_notice_lease(held.id, Timestamp(held_until), Timestamp(until))?)
        })
    };
    assert!(renew(310, 400));
    assert_eq!(claim(&store, 350, 650, NoticeOrder::Oldest), None);
    // Renewed from what the holder last set, not from the claim's time.
    assert!(!renew(310, 500));
    // The renewal stopped (its process is away): the lease runs out and
    // another process takes the notice; the first one's renewal fails.
    let taken = claim(&store, 400, 700, NoticeOrder::Oldest).expect("taken over");
    assert_eq!((taken.id, taken.attempts), (held.id, 2));
    assert!(!renew(400, 700));
    assert_eq!(claim(&store, 699, 999, NoticeOrder::Oldest), None);
    // A notice that is gone renews nothing.
    assert!(write(&store, |tx| Ok(tx.delete_notice(held.id)?)));
    assert!(!renew(700, 1_000));
}

fn many_notices_are_queued_at_once(db: TestDatabase) {
    let store = open(&db);
    let addresses: Vec<String> = (0..2_500).map(|i| format!("u{i}@example.com")).collect();
    write(&store, |tx| {
        let rows: Vec<NewNotice<'_>> = addresses
            .iter()
            .map(|to| NewNotice {
                to,
                payload: "{}",
                queued_at: Timestamp(1),
            })
            .collect();
        Ok(tx.queue_notices(&rows)?)
    });
    assert_eq!(read(&store, |tx| Ok(tx.count_notices()?)), 2_500);
}

/// Two processes delivering at once: each claims what the other does not
/// hold, without waiting for it (PostgreSQL; SQLite's writers are serial).
fn claims_skip_notices_another_process_is_claiming(db: TestDatabase) {
    if db.backend() == mfa_store::Backend::Sqlite {
        return;
    }
    let first = open(&db);
    let second = open(&db);
    write(&first, |tx| {
        (1..=5).try_for_each(|i| queue(tx, &format!("n{i}@example.com"), i))
    });
    let (claimed_tx, claimed) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let first_gave_up = AtomicBool::new(false);
    thread::scope(|scope| {
        let (first, gave_up) = (&first, &first_gave_up);
        scope.spawn(move || {
            let done = std::sync::Mutex::new(done);
            write(first, |tx| {
                let mine = tx.claim_notice(Timestamp(10), Timestamp(1_000), NoticeOrder::Oldest)?;
                claimed_tx.send(mine).expect("signal");
                if done
                    .lock()
                    .expect("receiver")
                    .recv_timeout(Duration::from_secs(10))
                    .is_err()
                {
                    gave_up.store(true, Ordering::SeqCst);
                }
                Ok(())
            })
        });
        let mine = claimed.recv().expect("the first claim holds a notice");
        let theirs = write(&second, |tx| {
            Ok(tx.claim_notice(Timestamp(10), Timestamp(1_000), NoticeOrder::Oldest)?)
        });
        assert!(
            !first_gave_up.load(Ordering::SeqCst),
            "the second claim waited for the first"
        );
        let _ = done_tx.send(());
        let (mine, theirs) = (mine.expect("mine"), theirs.expect("theirs"));
        assert_eq!(mine.to, "n1@example.com");
        assert_eq!(
            theirs.to, "n2@example.com",
            "the next one, not the one held"
        );
    });
}

backend_tests!(
    a_notice_is_kept_only_with_its_change,
    a_claim_holds_a_notice_until_its_lease_ends,
    a_lease_is_renewed_only_by_its_holder,
    many_notices_are_queued_at_once,
    claims_skip_notices_another_process_is_claiming,
);

//! Races between real threads (and separate connection pools): the
//! conditional updates let exactly one caller win.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use mfa_core::{
    AssuranceLevel, AuditAction, EmailCodePurpose, FailureKind, Membership, MfaResult,
    NewAuditEvent, NewEmailCode, NewSession, SessionPurge, Store, StoreTx, Timestamp, UserId,
};
use mfa_store::DbStore;
use mfa_store::test_support::TestDatabase;
use mfa_totp::{Secret, TotpParams};

use crate::support::*;

const THREADS: usize = 16;

fn user_with_verified_authenticator(store: &DbStore) -> UserId {
    write(store, |tx| {
        let user = add_user(tx, "racer@example.com");
        tx.put_pending_authenticator(
            user.id,
            &Secret::generate(),
            &TotpParams::default(),
            T0,
            Timestamp(T0.0 + 600),
        )?;
        tx.verify_authenticator(user.id, 10, T0)?;
        Ok(user.id)
    })
}

fn exactly_one_accepts(stores: &[&DbStore], user: UserId) {
    let accepted = race(stores, THREADS, |store, _| {
        store
            .write(|tx| Ok(tx.accept_totp_step(user, 1000)?))
            .expect("accept_totp_step")
    });
    assert_eq!(
        accepted.iter().filter(|a| **a).count(),
        1,
        "exactly one of {THREADS} racing callers may use a step: {accepted:?}"
    );
    let auth = read(stores[0], |tx| Ok(tx.authenticator(user)?)).expect("authenticator");
    assert_eq!(auth.last_used_step, Some(1000));
}

fn concurrent_accept_totp_step(db: TestDatabase) {
    let store = open(&db);
    let user = user_with_verified_authenticator(&store);
    exactly_one_accepts(&[&store], user);
}

/// Two stores with separate pools on one database, as two server processes.
fn concurrent_accept_totp_step_two_stores(db: TestDatabase) {
    let first = open(&db);
    let second = open(&db);
    let user = user_with_verified_authenticator(&first);
    exactly_one_accepts(&[&first, &second], user);
}

fn concurrent_consume_email_code(db: TestDatabase) {
    let first = open(&db);
    let second = open(&db);
    let code = write(&first, |tx| {
        let user = add_user(tx, "a@example.com");
        Ok(tx.replace_email_code(&NewEmailCode {
            user_id: user.id,
            purpose: EmailCodePurpose::Login,
            code_hash: "hash".into(),
            salt: "salt".into(),
            sent_at: T0,
            expires_at: Timestamp(T0.0 + 600),
        })?)
    });
    let consumed = race(&[&first, &second], THREADS, |store, _| {
        store
            .write(|tx| Ok(tx.consume_email_code(code.id, T0)?))
            .expect("consume_email_code")
    });
    assert_eq!(consumed.iter().filter(|c| **c).count(), 1, "{consumed:?}");
}

fn concurrent_consume_recovery_code(db: TestDatabase) {
    let store = open(&db);
    let code_id = write(&store, |tx| {
        let user = add_user(tx, "a@example.com");
        tx.replace_recovery_codes(user.id, &["$argon2id$c".to_string()], T0)?;
        Ok(tx.recovery_codes(user.id)?[0].id)
    });
    let used = race(&[&store], THREADS, |store, _| {
        store
            .write(|tx| Ok(tx.consume_recovery_code(code_id, T0)?))
            .expect("consume_recovery_code")
    });
    assert_eq!(used.iter().filter(|c| **c).count(), 1, "{used:?}");
}

fn concurrent_increment_failures(db: TestDatabase) {
    let first = open(&db);
    let second = open(&db);
    let user = write(&first, |tx| Ok(add_user(tx, "a@example.com").id));
    let mut counts = race(&[&first, &second], THREADS, |store, _| {
        store
            .write(|tx| Ok(count_failure(tx, user, FailureKind::Code)?.failures))
            .expect("increment_failures")
    });
    counts.sort_unstable();
    let expected: Vec<u32> = (1..=THREADS as u32).collect();
    assert_eq!(counts, expected, "every increment counted once");
    let state = read(&first, |tx| Ok(tx.failure_state(user, FailureKind::Code)?));
    assert_eq!(state.failures, THREADS as u32);
}

/// A write of the shape a request does: a few statements in one transaction.
fn request_write(tx: &mut dyn StoreTx, org: mfa_core::OrgId, n: usize) -> MfaResult<UserId> {
    let user = tx.insert_user(&new_user(&format!("user{n}@example.com"), "W", "R"))?;
    tx.insert_membership(&Membership::new(user.id, org))?;
    tx.insert_audit(&NewAuditEvent {
        at: T0,
        org_id: Some(org),
        actor_user_id: None,
        target_user_id: Some(user.id),
        action: AuditAction::UserCreated,
        detail: String::new(),
        client: None,
    })?;
    Ok(user.id)
}

/// 8 writer threads x 50 writes, with readers alongside: no "database is
/// locked", nothing lost. `stores` pools share the file.
fn many_writers(db: &TestDatabase, stores: &[&DbStore]) {
    const WRITERS: usize = 8;
    const WRITES: usize = 50;
    const READERS: usize = 4;
    let org = write(stores[0], |tx| Ok(add_org(tx, "Load").id));
    let started = Instant::now();
    let errors = race(stores, WRITERS + READERS, |store, i| {
        let mut errors = Vec::new();
        for j in 0..WRITES {
            let result = if i < WRITERS {
                store
                    .write(|tx| request_write(tx, org, i * WRITES + j))
                    .map(drop)
            } else {
                store
                    .read(|tx| Ok(tx.search_org_users(org, Some("user"), 0, 10)?))
                    .map(drop)
            };
            if let Err(e) = result {
                errors.push(format!("{e:?}"));
            }
        }
        errors
    });
    let elapsed = started.elapsed();
    let errors: Vec<String> = errors.into_iter().flatten().collect();
    assert!(
        errors.is_empty(),
        "{} failures, e.g. {:?}",
        errors.len(),
        errors.first()
    );
    let (_, members) = read(stores[0], |tx| Ok(tx.search_org_users(org, None, 0, 1)?));
    assert_eq!(members, (WRITERS * WRITES) as u64);
    eprintln!(
        "{}: {} write transactions ({} statements each) with {} readers over {} pool(s) in {:?}",
        db.backend(),
        WRITERS * WRITES,
        3,
        READERS,
        stores.len(),
        elapsed
    );
}

/// Racing attempts that check inside their transaction: each holds the
/// counter from its read to its commit, so each sees every failure before
/// it (no two see the same count), on users with and without a counter
/// row, across two pools. Half of them read the counter with the
/// authenticator, as an authenticator code check does.
fn concurrent_lock_failure_state(db: TestDatabase) {
    let first = open(&db);
    let second = open(&db);
    let (fresh, counted) = write(&first, |tx| {
        let fresh = add_user(tx, "fresh@example.com").id;
        let counted = add_user(tx, "counted@example.com").id;
        count_failure(tx, counted, FailureKind::Code)?;
        Ok((fresh, counted))
    });
    for (user, before) in [(fresh, 0), (counted, 1)] {
        let mut seen = race(&[&first, &second], THREADS, |store, i| {
            store
                .write(|tx| {
                    let state = if i % 4 < 2 {
                        tx.lock_failure_state(user, FailureKind::Code)?
                    } else {
                        tx.lock_failure_state_and_authenticator(user, FailureKind::Code)?
                            .0
                    };
                    // The check would run here; this attempt failed.
                    count_failure(tx, user, FailureKind::Code)?;
                    Ok(state.failures)
                })
                .expect("lock_failure_state")
        });
        seen.sort_unstable();
        let expected: Vec<u32> = (before..before + THREADS as u32).collect();
        assert_eq!(seen, expected, "each attempt saw the ones before it");
    }
}

/// Users locked by one transaction stay locked until it ends: another
/// transaction (on another pool) locking an overlapping set goes on only
/// after the first has finished its work. The pause only gives a missing
/// lock the time to show; the test cannot fail on a slow machine.
fn lock_users_holds_until_the_end(db: TestDatabase) {
    let first = open(&db);
    let second = open(&db);
    let (a, b, c) = write(&first, |tx| {
        Ok((
            add_user(tx, "a@example.com").id,
            add_user(tx, "b@example.com").id,
            add_user(tx, "c@example.com").id,
        ))
    });
    let first_done = AtomicBool::new(false);
    let locked = Barrier::new(2);
    thread::scope(|scope| {
        scope.spawn(|| {
            write(&first, |tx| {
                tx.lock_users(&[a, b])?;
                locked.wait();
                thread::sleep(Duration::from_millis(300));
                first_done.store(true, Ordering::SeqCst);
                Ok(())
            })
        });
        locked.wait();
        write(&second, |tx| {
            tx.lock_users(&[b, c])?;
            assert!(
                first_done.load(Ordering::SeqCst),
                "the second transaction locked b while the first held it"
            );
            Ok(())
        });
    });
}

/// A purge skips the ended sessions another transaction holds instead of
/// waiting for it (PostgreSQL; SQLite's writes are serial), and deletes
/// them once they are free. Were it to wait, the holder gives up after
/// its bounded wait and the test fails.
fn a_purge_skips_sessions_it_would_wait_for(db: TestDatabase) {
    if db.backend() == mfa_store::Backend::Sqlite {
        return;
    }
    let holder = open(&db);
    let purger = open(&db);
    let (held, free) = write(&holder, |tx| {
        let user = add_user(tx, "a@example.com");
        let org = add_org(tx, "A");
        let mut ids = Vec::new();
        for token in ["held", "free"] {
            let session = tx.insert_session(&NewSession {
                token_hash: token.into(),
                user_id: user.id,
                org_id: org.id,
                level: AssuranceLevel::Partial,
                created_at: T0,
                expires_at: Timestamp(T0.0 + 600),
            })?;
            tx.revoke_session(session.id, T0)?;
            ids.push(session.id);
        }
        Ok((ids[0], ids[1]))
    });
    let purge = SessionPurge {
        ended_before: Timestamp(T0.0 + 3600),
        full_seen_before: T0,
        limit: 100,
    };
    let (locked_tx, locked) = mpsc::channel();
    let (purged_tx, purged) = mpsc::channel();
    let holder_gave_up = AtomicBool::new(false);
    thread::scope(|scope| {
        let (holder, gave_up) = (&holder, &holder_gave_up);
        scope.spawn(move || {
            // The receiver is not `Sync`: the transaction's closure owns it.
            let purged = std::sync::Mutex::new(purged);
            write(holder, |tx| {
                // An update holds the row to the commit (as a verify does).
                tx.touch_session(held, T0)?;
                locked_tx.send(()).expect("signal");
                let purged = purged.lock().expect("receiver");
                if purged.recv_timeout(Duration::from_secs(10)).is_err() {
                    gave_up.store(true, Ordering::SeqCst);
                }
                Ok(())
            })
        });
        locked.recv().expect("the holder locked its session");
        let deleted = write(&purger, |tx| Ok(tx.delete_ended_sessions(&purge)?));
        assert!(
            !holder_gave_up.load(Ordering::SeqCst),
            "the purge waited for the held session"
        );
        assert_eq!(deleted, 1, "the free one only");
        let _ = purged_tx.send(());
    });
    let present = |id| {
        read(&purger, |tx| {
            Ok(tx
                .session_by_token_hash(if id == held { "held" } else { "free" })?
                .is_some())
        })
    };
    assert!(present(held) && !present(free));
    assert_eq!(
        write(&purger, |tx| Ok(tx.delete_ended_sessions(&purge)?)),
        1
    );
    assert!(!present(held));
}

fn concurrent_writers_never_fail(db: TestDatabase) {
    let store = open(&db);
    many_writers(&db, &[&store]);
}

fn concurrent_writers_two_stores_never_fail(db: TestDatabase) {
    let first = open(&db);
    let second = open(&db);
    many_writers(&db, &[&first, &second]);
}

/// Two audit purges at once on PostgreSQL: the second skips the events
/// the first holds and deletes the rest, without waiting for it.
fn audit_purges_skip_events_another_holds(db: TestDatabase) {
    if db.backend() == mfa_store::Backend::Sqlite {
        return;
    }
    let first = open(&db);
    let second = open(&db);
    write(&first, |tx| {
        for at in 1..=5 {
            tx.insert_audit(&NewAuditEvent {
                at: Timestamp(at),
                org_id: None,
                actor_user_id: None,
                target_user_id: None,
                action: AuditAction::LoginFailed,
                detail: String::new(),
                client: None,
            })?;
        }
        Ok(())
    });
    let cut = Timestamp(100);
    let (locked_tx, locked) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let first_gave_up = AtomicBool::new(false);
    thread::scope(|scope| {
        let (first, gave_up) = (&first, &first_gave_up);
        scope.spawn(move || {
            let done = std::sync::Mutex::new(done);
            write(first, |tx| {
                assert_eq!(tx.delete_audit_events_before(cut, 2)?, 2);
                locked_tx.send(()).expect("signal");
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
        locked.recv().expect("the first purge holds two events");
        let deleted = write(&second, |tx| Ok(tx.delete_audit_events_before(cut, 100)?));
        assert!(
            !first_gave_up.load(Ordering::SeqCst),
            "the second purge waited for the first"
        );
        assert_eq!(deleted, 3, "the three the first does not hold");
        let _ = done_tx.send(());
    });
    let (left, total) = read(&second, |tx| {
        Ok(tx.audit_events(&mfa_core::AuditFilter::default(), 0, 10)?)
    });
    assert_eq!((left, total), (Vec::new(), 0));
}

backend_tests!(
    concurrent_accept_totp_step,
    concurrent_accept_totp_step_two_stores,
    concurrent_consume_email_code,
    concurrent_consume_recovery_code,
    concurrent_increment_failures,
    concurrent_lock_failure_state,
    concurrent_writers_never_fail,
    concurrent_writers_two_stores_never_fail,
    lock_users_holds_until_the_end,
    a_purge_skips_sessions_it_would_wait_for,
    audit_purges_skip_events_another_holds,
);

/// Two write transactions that lock two users in opposite orders
/// deadlock; PostgreSQL breaks it by rolling one back, and the store runs
/// that one again instead of failing its request: both commit, the
/// victim's closure ran twice, and what it wrote is there once.
#[test]
fn a_write_postgres_rolled_back_for_a_deadlock_runs_again() {
    let Some(db) = TestDatabase::postgres() else {
        return;
    };
    let store = open(&db);
    let (a, b) = write(&store, |tx| {
        Ok((
            add_user(tx, "a@example.com").id,
            add_user(tx, "b@example.com").id,
        ))
    });
    let both_hold_one = Barrier::new(2);
    let runs = std::sync::atomic::AtomicU32::new(0);
    thread::scope(|s| {
        for (first, second) in [(a, b), (b, a)] {
            let (store, both_hold_one, runs) = (&store, &both_hold_one, &runs);
            s.spawn(move || {
                let mut run = 0;
                write(store, |tx| {
                    run += 1;
                    runs.fetch_add(1, Ordering::SeqCst);
                    tx.lock_users(&[first])?;
                    if run == 1 {
                        both_hold_one.wait();
                    }
                    tx.lock_users(&[second])?;
                    count_failure(tx, first, FailureKind::Code)?;
                    Ok(())
                });
            });
        }
    });
    assert_eq!(runs.load(Ordering::SeqCst), 3, "one of the two ran again");
    for user in [a, b] {
        let state = read(&store, |tx| Ok(tx.failure_state(user, FailureKind::Code)?));
        assert_eq!(state.failures, 1, "{user:?}: counted once");
    }
}

//! SQLite's writer commits queued write transactions together: each one
//! still succeeds or fails alone, and its caller hears of it only once it
//! is committed.

use std::sync::Barrier;
use std::thread;

use mfa_core::{MfaError, Store, UserId};
use mfa_store::DbStore;
use mfa_store::test_support::TestDatabase;

use crate::support::*;

const THREADS: usize = 16;
const ROUNDS: usize = 20;

/// `ROUNDS` times, `THREADS` threads released together each add a user;
/// every third refuses after its insert (a domain error: its savepoint is
/// rolled back, not its batch). Returns what each call answered.
fn add_users_together(store: &DbStore) -> Vec<(String, Result<UserId, MfaError>)> {
    let barrier = Barrier::new(THREADS);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut answers = Vec::new();
                    for round in 0..ROUNDS {
                        barrier.wait();
                        let email = format!("t{t}-r{round}@example.com");
                        let refuse = (t + round) % 3 == 0;
                        let answer = store.write(|tx| {
                            let user = add_user(tx, &email);
                            if refuse {
                                return Err(MfaError::Forbidden);
                            }
                            Ok(user.id)
                        });
                        // Answered only once committed: a read on another
                        // connection sees it at once.
                        if let Ok(id) = &answer {
                            let seen = read(store, |tx| Ok(tx.user(*id)?));
                            assert!(seen.is_some(), "{email} answered before its commit");
                        }
                        answers.push((email, answer));
                    }
                    answers
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a writer thread panicked"))
            .collect()
    })
}

#[test]
fn batched_transactions_commit_or_fail_alone() {
    let db = TestDatabase::sqlite();
    let store = open(&db);
    let before = store.committed_write_batches().expect("SQLite");
    let answers = add_users_together(&store);
    let batches = store.committed_write_batches().expect("SQLite") - before;

    let mut committed = 0;
    for (email, answer) in &answers {
        let found = read(&store, |tx| Ok(tx.user_by_email(email)?));
        match answer {
            Ok(id) => {
                assert_eq!(found.map(|u| u.id), Some(*id), "{email}");
                committed += 1;
            }
            Err(MfaError::Forbidden) => assert_eq!(found, None, "{email} was rolled back"),
            Err(other) => panic!("{email}: {other:?}"),
        }
    }
    assert_eq!(answers.len(), THREADS * ROUNDS);
    assert_eq!(committed, answers.iter().filter(|(_, a)| a.is_ok()).count());
    assert!(committed > 0);
    // Group commit happened: fewer commits than write transactions.
    assert!(
        batches < (THREADS * ROUNDS) as u64,
        "{batches} commits for {} transactions",
        THREADS * ROUNDS
    );
}

#[test]
fn a_panicking_transaction_fails_only_its_batch() {
    let db = TestDatabase::sqlite();
    let store = open(&db);
    let barrier = Barrier::new(THREADS);
    let answers: Vec<(String, Option<Result<UserId, MfaError>>)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (barrier, store) = (&barrier, &store);
                scope.spawn(move || {
                    barrier.wait();
                    let email = format!("t{t}@example.com");
                    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        store.write(|tx| {
                            let user = add_user(tx, &email);
                            assert!(t != 5, "transaction {t} panics");
                            Ok(user.id)
                        })
                    }));
                    (email, answer.ok())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect()
    });
    for (email, answer) in &answers {
        let found = read(&store, |tx| Ok(tx.user_by_email(email)?)).map(|u| u.id);
        match answer {
            None => assert_eq!(found, None, "{email}: the panicking one left nothing"),
            Some(Ok(id)) => assert_eq!(found, Some(*id), "{email}"),
            // Its batch was rolled back with the panicking transaction.
            Some(Err(_)) => assert_eq!(found, None, "{email}"),
        }
    }
    assert_eq!(answers.iter().filter(|(_, a)| a.is_none()).count(), 1);
    // The writer goes on.
    let id = write(&store, |tx| Ok(add_user(tx, "after@example.com").id));
    assert!(read(&store, |tx| Ok(tx.user(id)?)).is_some());
}

/// A write started inside another is refused at once, and the writer goes
/// on: it waited for itself, and every later write of the process with it.
#[test]
fn a_write_inside_a_write_is_refused_and_the_writer_goes_on() {
    let db = TestDatabase::sqlite();
    let store = open(&db);
    let inner = store.write(|_| Ok(store.write(|tx| Ok(add_user(tx, "inner@example.com")))));
    match inner {
        Ok(Err(MfaError::Store(mfa_core::StoreError::Backend(message)))) => {
            assert!(message.contains("inside another"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let later = store.write(|tx| Ok(add_user(tx, "later@example.com").id));
    assert!(later.is_ok(), "{later:?}");
}

//! `Store::apply_authenticator_success`: PostgreSQL's fast path of an
//! authenticator code check (SQLite offers none), for a session resolved
//! already and for the session of a token, found in the path's read.
//! Every change another transaction can make between the path's read and
//! its write is made from inside `check`, which runs between the two: the
//! write must then change nothing, so that the locked path decides.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use mfa_core::{
    AssuranceLevel, AuditAction, AuditEvent, AuditFilter, AuthenticatorSuccess, CodeOwner,
    FailureKind, FailureState, FailureSubject, NewAuditEvent, NewSession, OrgId, Session,
    SessionId, SessionMember, SessionRotation, Store, StoreTx, Timestamp, UserId,
};
use mfa_store::test_support::TestDatabase;
use mfa_store::{Backend, DbStore};
use mfa_totp::{Secret, TotpParams};

use crate::support::*;

/// The step the authenticator was confirmed with.
const CONFIRMED_STEP: u64 = 10;
/// The step of the code presented.
const STEP: u64 = 12;

/// The address the success is audited from.
const CLIENT: &str = "2001:db8::5";

struct Fixture {
    user: UserId,
    org: OrgId,
    session: SessionId,
    token: String,
    secret: Secret,
}

/// How the path is told whose code it checks.
#[derive(Clone, Copy, Debug)]
enum By {
    Session,
    Token,
}

const BY: [By; 2] = [By::Session, By::Token];

/// The owner of `f`'s code, told `by`.
fn owner(f: &Fixture, by: By) -> CodeOwner<'_> {
    match by {
        By::Session => CodeOwner::Session {
            user: f.user,
            session: f.session,
        },
        By::Token => CodeOwner::Token(&f.token),
    }
}

/// `check` is given the session exactly when the owner is a token, and
/// then `f`'s.
fn assert_member(f: &Fixture, by: By, member: Option<&SessionMember>) {
    match by {
        By::Session => assert_eq!(member, None),
        By::Token => {
            let member = member.expect("the token's session");
            assert_eq!(
                (member.session.id, member.session.user_id),
                (f.session, f.user)
            );
            assert_eq!(member.session.token_hash, f.token);
        }
    }
}

/// The token hash [`success`] rotates the session of `f` to.
fn new_token(f: &Fixture) -> String {
    format!("new-{}", f.token)
}

/// A member with an authenticator confirmed at [`CONFIRMED_STEP`] and a
/// partial session.
fn fixture(store: &DbStore, email: &str) -> Fixture {
    let secret = Secret::generate();
    write(store, |tx| {
        let org = add_org(tx, &format!("org of {email}")).id;
        let user = add_user(tx, email).id;
        enroll(tx, user, &secret, CONFIRMED_STEP);
        let token = format!("token-of-{email}");
        let session = tx.insert_session(&NewSession {
            token_hash: token.clone(),
            user_id: user,
            org_id: org,
            level: AssuranceLevel::Partial,
            created_at: T0,
            expires_at: Timestamp(T0.0 + 600),
        })?;
        Ok(Fixture {
            user,
            org,
            session: session.id,
            token,
            secret: secret.clone(),
        })
    })
}

fn enroll(tx: &mut dyn StoreTx, user: UserId, secret: &Secret, step: u64) {
    tx.lock_users(&[user]).expect("lock_users");
    tx.put_pending_authenticator(
        user,
        secret,
        &TotpParams::default(),
        T0,
        Timestamp(T0.0 + 600),
    )
    .expect("put_pending_authenticator");
    assert!(
        tx.verify_authenticator(user, step, T0)
            .expect("verify_authenticator")
    );
}

fn success(f: &Fixture) -> AuthenticatorSuccess {
    let now = Timestamp(T0.0 + 30);
    AuthenticatorSuccess {
        step: STEP,
        rotation: SessionRotation {
            presented_token_hash: f.token.clone(),
            token_hash: new_token(f),
            level: AssuranceLevel::Full,
            expires_at: Timestamp(now.0 + 3600),
            now,
        },
        audit: NewAuditEvent {
            at: now,
            org_id: Some(f.org),
            actor_user_id: Some(f.user),
            target_user_id: Some(f.user),
            action: AuditAction::MfaVerifySucceeded,
            detail: "method: authenticator".to_string(),
            client: Some(CLIENT.parse().expect("an address")),
        },
    }
}

/// What the path may change: the last used step, the session (under its
/// old token or under a new one of [`success`]'s), the user's audit
/// events.
type Observed = (Option<u64>, Vec<Session>, Vec<AuditEvent>);

fn observe(store: &DbStore, f: &Fixture) -> Observed {
    read(store, |tx| {
        let step = tx.authenticator(f.user)?.and_then(|a| a.last_used_step);
        let mut session = Vec::new();
        for token in [&f.token, &new_token(f)] {
            session.extend(tx.session_by_token_hash(token)?);
        }
        let filter = AuditFilter {
            user_id: Some(f.user),
            ..AuditFilter::default()
        };
        Ok((step, session, tx.audit_events(&filter, 0, 100)?.0))
    })
}

/// A success with nothing in its way: written whole on PostgreSQL, with
/// `check` given the state and the decrypted authenticator; not offered
/// on SQLite (`check` never called, nothing written).
fn applies_a_success_whole(db: TestDatabase) {
    let store = open(&db);
    for by in BY {
        let f = fixture(&store, &format!("whole-{by:?}@example.com"));
        let before = observe(&store, &f);
        let called = AtomicBool::new(false);
        let applied = store
            .apply_authenticator_success(owner(&f, by), |member, failures, authenticator| {
                called.store(true, Ordering::SeqCst);
                assert_member(&f, by, member);
                assert_eq!(*failures, FailureState::default());
                assert_eq!(authenticator.secret, f.secret);
                assert_eq!(authenticator.last_used_step, Some(CONFIRMED_STEP));
                Some(success(&f))
            })
            .expect("apply_authenticator_success");
        if db.backend() == Backend::Sqlite {
            assert!(!applied && !called.load(Ordering::SeqCst));
            assert_eq!(observe(&store, &f), before);
            continue;
        }
        assert!(applied, "{by:?}");
        let (step, session, events) = observe(&store, &f);
        assert_eq!(step, Some(STEP));
        let [session] = &session[..] else {
            panic!("one session: {session:?}")
        };
        assert_eq!(session.token_hash, new_token(&f));
        assert_eq!(session.level, AssuranceLevel::Full);
        assert_eq!(session.expires_at, Timestamp(T0.0 + 30 + 3600));
        assert_eq!(session.last_seen_at, Timestamp(T0.0 + 30));
        assert_eq!(events.len(), before.2.len() + 1);
        let event = &events[0];
        assert_eq!(event.action, AuditAction::MfaVerifySucceeded);
        assert_eq!(event.detail, "method: authenticator");
        assert_eq!(event.client, Some(CLIENT.parse().expect("an address")));
        assert_eq!(
            (event.org_id, event.actor_user_id, event.target_user_id),
            (Some(f.org), Some(f.user), Some(f.user))
        );
    }
}

/// `check` declining, or a state the path does not decide on (failures
/// counted, a lockout, a pending or missing authenticator), writes
/// nothing; `check` is called only for the first.
fn declines_without_writing(db: TestDatabase) {
    let store = open(&db);
    for by in BY {
        let declined = fixture(&store, &format!("declined-{by:?}@example.com"));
        let before = observe(&store, &declined);
        let applied = store
            .apply_authenticator_success(owner(&declined, by), |_, _, _| None)
            .expect("declined");
        assert!(!applied);
        assert_eq!(observe(&store, &declined), before);
    }
    // A token no session has: `check` is not called.
    let applied = store
        .apply_authenticator_success(CodeOwner::Token("no-such-token"), |_, _, _| {
            panic!("check called without a session")
        })
        .expect("unknown token");
    assert!(!applied);

    type Setup = fn(&mut dyn StoreTx, UserId);
    let states: [(&str, Setup); 4] = [
        ("failures", |tx, user| {
            count_failure(tx, user, FailureKind::Code)
                .map(drop)
                .expect("increment");
        }),
        ("lockout", |tx, user| {
            tx.set_locked_until(
                FailureSubject::User(user, FailureKind::Code),
                Some(Timestamp(T0.0 + 900)),
            )
            .expect("set_locked_until");
        }),
        ("pending", |tx, user| {
            assert!(tx.delete_authenticator(user).expect("delete"));
            tx.put_pending_authenticator(
                user,
                &Secret::generate(),
                &TotpParams::default(),
                T0,
                Timestamp(T0.0 + 600),
            )
            .expect("pending");
        }),
        ("none", |tx, user| {
            assert!(tx.delete_authenticator(user).expect("delete"));
        }),
    ];
    for by in BY {
        for (state, setup) in states {
            let email = format!("{state}-{by:?}@example.com");
            let f = fixture(&store, &email);
            write(&store, |tx| {
                tx.lock_users(&[f.user])?;
                setup(tx, f.user);
                Ok(())
            });
            let before = observe(&store, &f);
            let applied = store
                .apply_authenticator_success(owner(&f, by), |_, _, _| {
                    panic!("check called for {email}")
                })
                .expect("apply_authenticator_success");
            assert!(!applied, "{email}");
            assert_eq!(observe(&store, &f), before, "{email}");
        }
    }
}

/// Each change another transaction can commit between the read and the
/// write makes the write change nothing (PostgreSQL).
fn gives_way_to_a_change_after_its_read(db: TestDatabase) {
    if db.backend() == Backend::Sqlite {
        return;
    }
    let store = open(&db);
    type Change = fn(&mut dyn StoreTx, &Fixture);
    let changes: [(&str, Change); 8] = [
        ("step spent", |tx, f| {
            assert!(tx.accept_totp_step(f.user, STEP).expect("accept"));
        }),
        ("an earlier step spent", |tx, f| {
            assert!(tx.accept_totp_step(f.user, STEP - 1).expect("accept"));
        }),
        ("failure counted", |tx, f| {
            count_failure(tx, f.user, FailureKind::Code)
                .map(drop)
                .expect("increment");
        }),
        ("re-enrolled at the same step", |tx, f| {
            assert!(tx.delete_authenticator(f.user).expect("delete"));
            enroll(tx, f.user, &Secret::generate(), CONFIRMED_STEP);
        }),
        ("re-enrolled with the same secret", |tx, f| {
            assert!(tx.delete_authenticator(f.user).expect("delete"));
            enroll(tx, f.user, &f.secret, CONFIRMED_STEP);
        }),
        ("session revoked", |tx, f| {
            assert!(tx.revoke_session(f.session, T0).expect("revoke"));
        }),
        // Another verification on the same token made it full first.
        ("session rotated", |tx, f| {
            let rotation = SessionRotation {
                token_hash: format!("other-{}", f.token),
                ..success(f).rotation
            };
            assert!(tx.rotate_session(f.session, &rotation).expect("rotate"));
        }),
        ("user deleted", |tx, f| {
            assert!(tx.delete_user(f.user).expect("delete_user"));
        }),
    ];
    for by in BY {
        for (i, (what, change)) in changes.iter().enumerate() {
            let f = fixture(&store, &format!("change{i}-{by:?}@example.com"));
            let mut after_change = None;
            let applied = store
                .apply_authenticator_success(owner(&f, by), |_, _, _| {
                    write(&store, |tx| {
                        tx.lock_users(&[f.user])?;
                        change(tx, &f);
                        Ok(())
                    });
                    after_change = Some(observe(&store, &f));
                    Some(success(&f))
                })
                .expect("apply_authenticator_success");
            assert!(!applied, "applied after: {what} ({by:?})");
            assert_eq!(
                Some(observe(&store, &f)),
                after_change,
                "wrote after: {what} ({by:?})"
            );
        }
    }
    // A revoked session's token is found, but its success is not written
    // even if `check` (the domain refuses it) accepted it.
    let f = fixture(&store, "revoked-token@example.com");
    write(&store, |tx| Ok(tx.revoke_session(f.session, T0)?));
    let before = observe(&store, &f);
    let applied = store
        .apply_authenticator_success(owner(&f, By::Token), |member, _, _| {
            assert!(member.is_some_and(|m| m.session.revoked_at.is_some()));
            Some(success(&f))
        })
        .expect("revoked");
    assert!(!applied);
    assert_eq!(observe(&store, &f), before);
}

/// A transaction holding the user's lock is waited for, and what it
/// committed decides: the path's write does not pass it (PostgreSQL).
/// The pause only gives a missing lock the time to show.
fn waits_for_the_users_lock(db: TestDatabase) {
    if db.backend() == Backend::Sqlite {
        return;
    }
    let store = open(&db);
    for by in BY {
        let f = fixture(&store, &format!("waits-{by:?}@example.com"));
        let locked = Barrier::new(2);
        let holder_done = AtomicBool::new(false);
        thread::scope(|scope| {
            scope.spawn(|| {
                write(&store, |tx| {
                    tx.lock_users(&[f.user])?;
                    locked.wait();
                    thread::sleep(Duration::from_millis(300));
                    // The attempt under the lock failed: one failure counted.
                    count_failure(tx, f.user, FailureKind::Code)?;
                    holder_done.store(true, Ordering::SeqCst);
                    Ok(())
                })
            });
            let applied = store
                .apply_authenticator_success(owner(&f, by), |_, _, _| {
                    locked.wait();
                    Some(success(&f))
                })
                .expect("apply_authenticator_success");
            assert!(holder_done.load(Ordering::SeqCst), "did not wait ({by:?})");
            assert!(!applied, "passed a failure committed before it ({by:?})");
        });
        assert_eq!(observe(&store, &f).0, Some(CONFIRMED_STEP));
    }
}

/// One step presented by many at once, over two stores, half of them on
/// the locked path: exactly one succeeds (PostgreSQL).
fn racing_successes_spend_a_step_once(db: TestDatabase) {
    if db.backend() == Backend::Sqlite {
        return;
    }
    let first = open(&db);
    let second = open(&db);
    for round in 0..4 {
        let f = fixture(&first, &format!("race{round}@example.com"));
        let by = BY[round % 2];
        let wins = AtomicUsize::new(0);
        race(&[&first, &second], 16, |store, i| {
            let won = if i % 2 == 0 {
                store
                    .apply_authenticator_success(owner(&f, by), |_, _, _| Some(success(&f)))
                    .expect("fast path")
            } else {
                store
                    .write(|tx| {
                        tx.lock_users(&[f.user])?;
                        Ok(tx.accept_totp_step(f.user, STEP)?)
                    })
                    .expect("locked path")
            };
            if won {
                wins.fetch_add(1, Ordering::SeqCst);
            }
        });
        assert_eq!(wins.load(Ordering::SeqCst), 1, "round {round}");
        assert_eq!(observe(&first, &f).0, Some(STEP));
    }
}

backend_tests!(
    applies_a_success_whole,
    declines_without_writing,
    gives_way_to_a_change_after_its_read,
    waits_for_the_users_lock,
    racing_successes_spend_a_step_once,
);

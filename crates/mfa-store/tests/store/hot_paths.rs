//! The narrow queries of the hot paths (every authenticated request, every
//! MFA verify): they must agree with the full loads they stand in for.

use std::time::Duration;

use mfa_core::{
    AssuranceLevel, AuthenticatorState, FactorStates, Membership, MfaError, NewSession, SessionId,
    SessionMember, SessionRotation, Store, StoreError, StoreTx, Timestamp,
};
use mfa_store::StoreOptions;
use mfa_store::test_support::{TestDatabase, test_options};
use mfa_totp::{Secret, TotpParams};

use crate::support::*;

fn partial_session(
    tx: &mut dyn StoreTx,
    user: mfa_core::UserId,
    org: mfa_core::OrgId,
    hash: &str,
) -> SessionId {
    tx.insert_session(&NewSession {
        token_hash: hash.to_string(),
        user_id: user,
        org_id: org,
        level: AssuranceLevel::Partial,
        created_at: T0,
        expires_at: Timestamp(T0.0 + 600),
    })
    .expect("insert_session")
    .id
}

fn session_member_joins_user_and_membership(db: TestDatabase) {
    let store = open(&db);
    let (user, member_of, stranger_to) = write(&store, |tx| {
        let mut user = add_user(tx, "a@example.com");
        user.is_super_admin = true;
        tx.update_user(&user)?;
        let member_of = add_org(tx, "A");
        let stranger_to = add_org(tx, "B");
        let mut membership = Membership::new(user.id, member_of.id);
        membership.is_admin = true;
        tx.insert_membership(&membership)?;
        partial_session(tx, user.id, member_of.id, "in-a");
        partial_session(tx, user.id, stranger_to.id, "in-b");
        Ok((user, member_of, stranger_to))
    });
    read(&store, |tx| {
        let SessionMember {
            session,
            is_super_admin,
            membership,
        } = tx.session_member("in-a")?.expect("session in A");
        assert_eq!(Some(session.clone()), tx.session_by_token_hash("in-a")?);
        assert!(is_super_admin);
        assert_eq!(membership, tx.membership(user.id, member_of.id)?);
        assert!(membership.expect("member of A").is_admin);

        let in_b = tx.session_member("in-b")?.expect("session in B");
        assert_eq!(in_b.session.org_id, stranger_to.id);
        assert_eq!(in_b.membership, None, "no membership in B");

        assert_eq!(tx.session_member("unknown")?, None);
        // Joined to the factor states, the same session, user and
        // membership (the factors: `factor_states_without_secrets`).
        for hash in ["in-a", "in-b"] {
            let (member, _) = tx
                .session_member_and_factor_states(hash)?
                .expect("the session");
            assert_eq!(Some(member), tx.session_member(hash)?);
        }
        assert_eq!(tx.session_member_and_factor_states("unknown")?, None);
        Ok(())
    });
    // A deleted user's sessions resolve to nothing.
    write(&store, |tx| Ok(tx.delete_user(user.id)?));
    read(&store, |tx| {
        assert_eq!(tx.session_member("in-a")?, None);
        assert_eq!(tx.session_member_and_factor_states("in-a")?, None);
        Ok(())
    });
}

fn rotate_session_replaces_the_token_in_place(db: TestDatabase) {
    let store = open(&db);
    let (id, revoked) = write(&store, |tx| {
        let user = add_user(tx, "a@example.com");
        let org = add_org(tx, "A");
        let id = partial_session(tx, user.id, org.id, "old");
        let revoked = partial_session(tx, user.id, org.id, "revoked");
        tx.revoke_session(revoked, T0)?;
        Ok((id, revoked))
    });
    let now = Timestamp(T0.0 + 60);
    let rotation = |presented: &str, hash: &str| SessionRotation {
        presented_token_hash: presented.to_string(),
        token_hash: hash.to_string(),
        level: AssuranceLevel::Full,
        expires_at: Timestamp(now.0 + 3600),
        now,
    };
    assert!(write(&store, |tx| Ok(
        tx.rotate_session(id, &rotation("old", "new"))?
    )));
    // A second rotation under the token the first replaced: refused (of
    // two verifications racing on one token, one rotates).
    assert!(
        !write(&store, |tx| Ok(
            tx.rotate_session(id, &rotation("old", "twice"))?
        )),
        "the presented token is gone"
    );
    read(&store, |tx| {
        assert_eq!(
            tx.session_by_token_hash("old")?,
            None,
            "the old token is gone"
        );
        let rotated = tx.session_by_token_hash("new")?.expect("new token");
        assert_eq!(rotated.id, id);
        assert_eq!(rotated.level, AssuranceLevel::Full);
        assert_eq!(rotated.expires_at, Timestamp(now.0 + 3600));
        assert_eq!(rotated.last_seen_at, now);
        assert_eq!(rotated.created_at, T0);
        assert_eq!(rotated.revoked_at, None);
        assert!(rotated.mfa_passed, "a rotation completes MFA");
        Ok(())
    });
    assert!(
        !write(&store, |tx| Ok(
            tx.rotate_session(revoked, &rotation("revoked", "again"))?
        )),
        "a revoked session stays revoked"
    );
    let late = SessionRotation {
        now: Timestamp(T0.0 + 600),
        ..rotation("expiring", "late")
    };
    let partial = write(&store, |tx| {
        let user = add_user(tx, "b@example.com");
        let org = add_org(tx, "B");
        Ok(partial_session(tx, user.id, org.id, "expiring"))
    });
    assert!(
        !write(&store, |tx| Ok(tx.rotate_session(partial, &late)?)),
        "an expired session is not revived"
    );
    read(&store, |tx| {
        assert_eq!(tx.session_by_token_hash("late")?, None);
        assert_eq!(tx.session_by_token_hash("again")?, None);
        assert_eq!(tx.session_by_token_hash("twice")?, None);
        Ok(())
    });
}

fn factor_states_without_secrets(db: TestDatabase) {
    let store = open(&db);
    let (user, neighbour) = write(&store, |tx| {
        let user = add_user(tx, "a@example.com");
        let org = add_org(tx, "A");
        tx.insert_membership(&Membership::new(user.id, org.id))?;
        partial_session(tx, user.id, org.id, "token-of-a");
        // A neighbour with factors of every kind, which must not count.
        let neighbour = add_user(tx, "b@example.com");
        tx.put_pending_authenticator(
            neighbour.id,
            &Secret::generate(),
            &TotpParams::default(),
            T0,
            Timestamp(T0.0 + 600),
        )?;
        tx.verify_authenticator(neighbour.id, 1, T0)?;
        tx.set_email_factor_verified(neighbour.id, T0)?;
        tx.replace_recovery_codes(neighbour.id, &["n1".to_string(), "n2".to_string()], T0)?;
        Ok((user, neighbour.id))
    });
    let nobody = mfa_core::UserId(user.id.0 + 1000);
    // The one-statement read agrees with the three reads it stands for,
    // in a transaction and outside one; so does the read joined to the
    // session's.
    let agree = |expected: FactorStates| {
        let (member, states) = store
            .read_statement(|tx| Ok(tx.session_member_and_factor_states("token-of-a")?))
            .expect("session and factor states")
            .expect("the session");
        assert_eq!(states, expected);
        read(&store, |tx| {
            assert_eq!(Some(member.clone()), tx.session_member("token-of-a")?);
            Ok(())
        });
        read(&store, |tx| {
            let separate = FactorStates {
                authenticator: tx.authenticator_state(user.id)?,
                email_verified_at: tx.email_factor_verified_at(user.id)?,
                recovery_codes_left: tx.unused_recovery_codes(user.id)?,
            };
            assert_eq!(separate, expected);
            assert_eq!(tx.factor_states(user.id)?, expected);
            // Many users at once (a reset), in the order asked.
            let theirs = tx.factor_states(neighbour)?;
            assert_eq!(
                tx.factor_states_of(&[neighbour, user.id, nobody])?,
                [theirs, expected, FactorStates::default()]
            );
            Ok(())
        });
        let alone = store
            .read_statement(|tx| Ok(tx.factor_states(user.id)?))
            .expect("factor states");
        assert_eq!(alone, expected);
    };
    agree(FactorStates::default());

    let expires_at = Timestamp(T0.0 + 600);
    write(&store, |tx| {
        tx.put_pending_authenticator(
            user.id,
            &Secret::generate(),
            &TotpParams::default(),
            T0,
            expires_at,
        )?;
        tx.replace_recovery_codes(
            user.id,
            &["h1".to_string(), "h2".to_string(), "h3".to_string()],
            T0,
        )?;
        Ok(())
    });
    let first_code = read(&store, |tx| Ok(tx.recovery_codes(user.id)?[0].id));
    write(&store, |tx| Ok(tx.consume_recovery_code(first_code, T0)?));
    agree(FactorStates {
        authenticator: Some(AuthenticatorState::Pending { expires_at }),
        email_verified_at: None,
        recovery_codes_left: 2,
    });

    let verified_at = Timestamp(T0.0 + 30);
    assert!(write(&store, |tx| Ok(tx.verify_authenticator(
        user.id,
        7,
        verified_at
    )?)));
    read(&store, |tx| {
        let full = tx.authenticator(user.id)?.expect("authenticator");
        assert_eq!(tx.authenticator_state(user.id)?, Some(full.state));
        assert_eq!(full.state, AuthenticatorState::Verified { verified_at });
        Ok(())
    });
    let email_at = Timestamp(T0.0 + 60);
    write(&store, |tx| {
        Ok(tx.set_email_factor_verified(user.id, email_at)?)
    });
    agree(FactorStates {
        authenticator: Some(AuthenticatorState::Verified { verified_at }),
        email_verified_at: Some(email_at),
        recovery_codes_left: 2,
    });

    // No authenticator, the email factor and no unused codes.
    write(&store, |tx| {
        tx.delete_authenticator(user.id)?;
        tx.delete_recovery_codes(user.id)?;
        Ok(())
    });
    agree(FactorStates {
        authenticator: None,
        email_verified_at: Some(email_at),
        recovery_codes_left: 0,
    });
    // A user who does not exist has no factors.
    let missing = store
        .read_statement(|tx| Ok(tx.factor_states(nobody)?))
        .expect("factor states");
    assert_eq!(missing, FactorStates::default());
}

/// PostgreSQL connections are handed out untested; one found lost when
/// its transaction begins is replaced, so a database restart (here: every
/// backend of the pool terminated) costs no request.
#[test]
fn lost_postgres_connections_are_replaced() {
    let Some(db) = TestDatabase::postgres() else {
        return;
    };
    let store = open(&db);
    let user = write(&store, |tx| Ok(add_user(tx, "a@example.com").id));
    for round in 0..3 {
        let terminated = raw_texts(
            &db,
            "SELECT pg_terminate_backend(pid)::text AS value FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        );
        assert!(
            !terminated.is_empty(),
            "round {round}: the pool had a connection"
        );
        assert_eq!(
            read(&store, |tx| Ok(tx.user(user)?)).map(|u| u.id),
            Some(user),
            "round {round}: a read after the loss"
        );
        raw_texts(
            &db,
            "SELECT pg_terminate_backend(pid)::text AS value FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        );
        let found = store
            .read_statement(|tx| Ok(tx.user(user)?))
            .unwrap_or_else(|e| panic!("round {round}: a statement after the loss: {e:?}"));
        assert_eq!(found.map(|u| u.id), Some(user));
        raw_texts(
            &db,
            "SELECT pg_terminate_backend(pid)::text AS value FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        );
        let failures = write(&store, |tx| {
            Ok(count_failure(tx, user, mfa_core::FailureKind::Code)?)
        });
        assert_eq!(
            failures.failures,
            round + 1,
            "round {round}: one write, once"
        );
    }
}

/// Readiness is the database's, not a pooled connection's: with every
/// connection of a full pool terminated, `ping` answers at once (an audit
/// saw `/readyz` answer 503 once per dead connection, on every node).
#[test]
fn ping_looks_past_lost_postgres_connections() {
    let Some(db) = TestDatabase::postgres() else {
        return;
    };
    let store = open(&db);
    let held = 4;
    let together = std::sync::Barrier::new(held);
    std::thread::scope(|scope| {
        for _ in 0..held {
            scope.spawn(|| {
                read(&store, |_| {
                    together.wait();
                    Ok(())
                })
            });
        }
    });
    let terminated = raw_texts(
        &db,
        "SELECT pg_terminate_backend(pid)::text AS value FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    assert!(terminated.len() >= held, "{terminated:?}");
    store.ping().expect("ready after the connections were lost");
}

/// A database that cannot be reached fails every kind of operation with
/// `StoreError::Unavailable` once the pool's wait is over (the server
/// answers `503 unavailable`, not `500`), and the same store serves again
/// once the database takes connections.
#[test]
fn an_unreachable_postgres_database_is_unavailable() {
    let Some(db) = TestDatabase::postgres() else {
        return;
    };
    let store = db
        .open(StoreOptions {
            pool_timeout: Some(Duration::from_secs(1)),
            ..test_options()
        })
        .expect("open")
        .without_lock_rule();
    let user = write(&store, |tx| Ok(add_user(tx, "a@example.com").id));

    db.refuse_connections(true);
    let unavailable = |what: &str, result: Result<(), MfaError>| match result {
        Err(MfaError::Store(StoreError::Unavailable(why))) => why,
        other => panic!("{what} on a database that refuses connections: {other:?}"),
    };
    unavailable(
        "a read",
        store.read(|tx| tx.user(user).map(drop).map_err(Into::into)),
    );
    // Known unreachable now: the next ones do not wait the whole timeout.
    let why = unavailable(
        "a statement",
        store.read_statement(|tx| tx.user(user).map(drop).map_err(Into::into)),
    );
    assert!(why.contains("the last wait"), "{why}");
    let why = unavailable(
        "a write",
        store.write(|tx| {
            add_org(tx, "lost");
            Ok(())
        }),
    );
    assert!(why.contains("the last wait"), "{why}");
    assert!(store.ping().is_err(), "ping");

    db.refuse_connections(false);
    // The pool reconnects in the background, retrying within its wait.
    let found = (0..20)
        .find_map(|_| match store.read(|tx| Ok(tx.user(user)?)) {
            Ok(found) => Some(found),
            Err(_) => {
                std::thread::sleep(Duration::from_millis(250));
                None
            }
        })
        .expect("the store serves again once the database does");
    assert_eq!(found.map(|u| u.id), Some(user));
    assert_eq!(
        read(&store, |tx| Ok(tx.all_orgs()?)).len(),
        0,
        "nothing half-written"
    );
}

backend_tests!(
    session_member_joins_user_and_membership,
    rotate_session_replaces_the_token_in_place,
    factor_states_without_secrets,
);

//! Every `StoreTx` method, on both backends.

use mfa_core::{
    AssuranceLevel, AuditAction, AuditFilter, AuthenticatorState, EmailCodePurpose, FailureKind,
    FailureState, FailureSubject, Membership, MembershipCounts, MfaError, MfaResult, NewAuditEvent,
    NewEmailCode, NewSession, OrgId, SessionId, SessionPurge, Store, StoreError, StoreTx,
    Timestamp, UserId,
};
use mfa_store::DbStore;
use mfa_store::test_support::TestDatabase;
use mfa_totp::{Algorithm, Secret, TotpParams};

use crate::support::*;

fn orgs_crud(db: TestDatabase) {
    let store = open(&db);
    let (a, b) = write(&store, |tx| Ok((add_org(tx, "Acme"), add_org(tx, "Beta"))));
    assert_eq!(a.name, "Acme");
    assert!(!a.is_mfa_enforced);
    assert_eq!(a.mfa_enforced_at, None);
    assert_eq!(a.mfa_grace_period_hours, 0);
    assert_eq!(a.created_at, T0);
    assert!(b.id > a.id);

    let mut changed = a.clone();
    changed.name = "Acme Corp".into();
    changed.is_mfa_enforced = true;
    changed.mfa_enforced_at = Some(Timestamp(T0.0 + 60));
    changed.mfa_grace_period_hours = 72;
    write(&store, |tx| Ok(tx.update_org(&changed)?));
    read(&store, |tx| {
        assert_eq!(tx.org(a.id)?, Some(changed.clone()));
        assert_eq!(tx.all_orgs()?, vec![changed.clone(), b.clone()]);
        assert_eq!(tx.org(OrgId(a.id.0 + 1000))?, None);
        Ok(())
    });

    // switching enforcement off clears the time again
    changed.is_mfa_enforced = false;
    changed.mfa_enforced_at = None;
    write(&store, |tx| Ok(tx.update_org(&changed)?));
    assert_eq!(read(&store, |tx| Ok(tx.org(a.id)?)), Some(changed.clone()));

    let mut ghost = changed.clone();
    ghost.id = OrgId(a.id.0 + 1000);
    let missing = write(&store, |tx| Ok(tx.update_org(&ghost)));
    assert_eq!(missing, Err(StoreError::NotFound));

    assert!(write(&store, |tx| Ok(tx.delete_org(a.id)?)));
    assert!(!write(&store, |tx| Ok(tx.delete_org(a.id)?)));
    assert_eq!(read(&store, |tx| Ok(tx.all_orgs()?)), vec![b]);
}

fn users_crud(db: TestDatabase) {
    let store = open(&db);
    let alice = write(&store, |tx| {
        Ok(tx.insert_user(&new_user("Alice@Example.COM", "Alice", "Archer"))?)
    });
    assert_eq!(alice.email, "alice@example.com", "stored lower case");
    assert_eq!(alice.first_name, "Alice");
    assert!(!alice.mfa_opt_in);
    assert_eq!(alice.last_login_at, None);
    assert_eq!(alice.created_at, T0);
    let bob = write(&store, |tx| Ok(add_user(tx, "bob@example.com")));

    read(&store, |tx| {
        assert_eq!(tx.user(alice.id)?, Some(alice.clone()));
        assert_eq!(tx.user(UserId(bob.id.0 + 1000))?, None);
        assert_eq!(tx.user_by_email("alice@example.com")?, Some(alice.clone()));
        assert_eq!(tx.user_by_email("ALICE@example.com")?, Some(alice.clone()));
        assert_eq!(tx.user_by_email("nobody@example.com")?, None);
        assert_eq!(
            tx.users_by_ids(&[bob.id, UserId(bob.id.0 + 1000), alice.id])?,
            vec![alice.clone(), bob.clone()]
        );
        assert_eq!(tx.users_by_ids(&[])?, vec![]);
        assert_eq!(tx.count_users()?, 2);
        Ok(())
    });

    let mut changed = alice.clone();
    changed.email = "alice@new.example".into();
    changed.first_name = "Alicia".into();
    changed.last_name = "Arch".into();
    changed.password_hash = "$argon2id$new".into();
    changed.is_super_admin = true;
    changed.mfa_opt_in = true;
    changed.last_login_at = Some(Timestamp(T0.0 + 5));
    changed.created_at = Timestamp(1); // not written
    write(&store, |tx| Ok(tx.update_user(&changed)?));
    let stored = read(&store, |tx| Ok(tx.user(alice.id)?)).expect("alice");
    assert_eq!(stored.email, "alice@new.example");
    assert_eq!(stored.first_name, "Alicia");
    assert_eq!(stored.last_name, "Arch");
    assert_eq!(stored.password_hash, "$argon2id$new");
    assert!(stored.is_super_admin);
    assert!(stored.mfa_opt_in);
    assert_eq!(stored.last_login_at, Some(Timestamp(T0.0 + 5)));
    assert_eq!(stored.created_at, T0, "created_at is not updated");

    write(&store, |tx| {
        Ok(tx.set_last_login(alice.id, Timestamp(T0.0 + 99))?)
    });
    let stored = read(&store, |tx| Ok(tx.user(alice.id)?)).expect("alice");
    assert_eq!(stored.last_login_at, Some(Timestamp(T0.0 + 99)));
    assert_eq!(stored.first_name, "Alicia");

    // The hash is replaced only while it is still the one the caller saw.
    assert!(!write(&store, |tx| {
        Ok(tx.replace_password_hash(alice.id, "$argon2id$stale", "$argon2id$rehashed")?)
    }));
    assert!(write(&store, |tx| {
        Ok(tx.replace_password_hash(alice.id, "$argon2id$new", "$argon2id$rehashed")?)
    }));
    let stored = read(&store, |tx| Ok(tx.user(alice.id)?)).expect("alice");
    assert_eq!(stored.password_hash, "$argon2id$rehashed");
    assert_eq!(stored.last_login_at, Some(Timestamp(T0.0 + 99)));
    assert!(!write(&store, |tx| {
        Ok(tx.replace_password_hash(UserId(bob.id.0 + 1000), "$argon2id$new", "x")?)
    }));

    let mut ghost = stored.clone();
    ghost.id = UserId(bob.id.0 + 1000);
    ghost.email = "ghost@example.com".into();
    assert_eq!(
        write(&store, |tx| Ok(tx.update_user(&ghost))),
        Err(StoreError::NotFound)
    );

    assert!(write(&store, |tx| Ok(tx.delete_user(bob.id)?)));
    assert!(!write(&store, |tx| Ok(tx.delete_user(bob.id)?)));
    assert_eq!(read(&store, |tx| Ok(tx.count_users()?)), 1);
}

fn duplicate_email_is_a_unique_violation(db: TestDatabase) {
    let store = open(&db);
    let alice = write(&store, |tx| Ok(add_user(tx, "alice@example.com")));
    let bob = write(&store, |tx| Ok(add_user(tx, "bob@example.com")));

    // The violation comes back as the port's variant, and the transaction
    // stays usable after it (a savepoint on PostgreSQL).
    let (dup, carol) = write(&store, |tx| {
        let dup = tx.insert_user(&new_user("ALICE@example.com", "A", "B"));
        let carol = add_user(tx, "carol@example.com");
        Ok((dup, carol))
    });
    match dup {
        Err(StoreError::UniqueViolation(what)) => {
            assert!(what.contains("email"), "{what}");
            assert!(!what.contains("alice@"), "the value is not echoed: {what}");
        }
        other => panic!("expected a unique violation, got {other:?}"),
    }
    assert_eq!(
        read(&store, |tx| Ok(tx.user(carol.id)?)).map(|u| u.email),
        Some("carol@example.com".to_string())
    );

    let mut taken = bob.clone();
    taken.email = alice.email.clone();
    assert!(matches!(
        write(&store, |tx| Ok(tx.update_user(&taken))),
        Err(StoreError::UniqueViolation(_))
    ));

    // Through `?` in a domain closure it becomes a conflict.
    let err = store
        .write(|tx| Ok(tx.insert_user(&new_user("bob@example.com", "B", "B"))?))
        .expect_err("duplicate");
    assert!(matches!(err, MfaError::Conflict(_)), "{err:?}");
    assert_eq!(read(&store, |tx| Ok(tx.count_users()?)), 3);
}

fn search_org_users(db: TestDatabase) {
    let store = open(&db);
    let (org, other, users) = write(&store, |tx| {
        let org = add_org(tx, "Acme");
        let other = add_org(tx, "Other");
        let people = [
            ("emile@example.com", "Émile", "Zola"),
            ("ann@example.com", "Ann", "Smith"),
            ("joe@smithy.example", "Joe", "Bloggs"),
            ("pct@example.com", "100%", "Under_score"),
            ("outsider@example.com", "Ann", "Outsider"),
        ];
        let mut users = Vec::new();
        for (email, first, last) in people {
            users.push(tx.insert_user(&new_user(email, first, last))?);
        }
        for u in &users[..4] {
            tx.insert_membership(&Membership::new(u.id, org.id))?;
        }
        // inactive members are found too
        let mut inactive = Membership::new(users[1].id, other.id);
        inactive.is_active = false;
        tx.insert_membership(&inactive)?;
        tx.insert_membership(&Membership::new(users[4].id, other.id))?;
        Ok((org, other, users))
    });
    let ids = |found: &[mfa_core::User]| found.iter().map(|u| u.id).collect::<Vec<_>>();

    read(&store, |tx| {
        let (all, total) = tx.search_org_users(org.id, None, 0, 100)?;
        assert_eq!(total, 4);
        assert_eq!(ids(&all), ids(&users[..4]), "by id");

        let (found, total) = tx.search_org_users(org.id, Some("SMITH"), 0, 100)?;
        assert_eq!(total, 2, "last name and email domain");
        assert_eq!(ids(&found), vec![users[1].id, users[2].id]);

        let (found, _) = tx.search_org_users(org.id, Some("émile"), 0, 100)?;
        assert_eq!(ids(&found), vec![users[0].id], "Unicode case folding");
        let (found, _) = tx.search_org_users(org.id, Some("ÉMI"), 0, 100)?;
        assert_eq!(ids(&found), vec![users[0].id]);

        let (found, _) = tx.search_org_users(org.id, Some("ann"), 0, 100)?;
        assert_eq!(ids(&found), vec![users[1].id], "members of this org only");
        let (found, _) = tx.search_org_users(other.id, Some("ann"), 0, 100)?;
        assert_eq!(ids(&found), vec![users[1].id, users[4].id]);

        let (found, _) = tx.search_org_users(org.id, Some("%"), 0, 100)?;
        assert_eq!(ids(&found), vec![users[3].id], "% is literal");
        let (found, _) = tx.search_org_users(org.id, Some("r_s"), 0, 100)?;
        assert_eq!(ids(&found), vec![users[3].id], "_ is literal");
        let (found, _) = tx.search_org_users(org.id, Some("m_l"), 0, 100)?;
        assert!(found.is_empty(), "_ does not match any character");

        let (page, total) = tx.search_org_users(org.id, None, 1, 2)?;
        assert_eq!(total, 4);
        assert_eq!(ids(&page), ids(&users[1..3]));
        let (page, total) = tx.search_org_users(org.id, Some("example"), 3, 10)?;
        assert_eq!((ids(&page), total), (vec![users[3].id], 4));
        let (page, total) = tx.search_org_users(org.id, None, 10, 10)?;
        assert!(page.is_empty());
        assert_eq!(total, 4);
        let (page, _) = tx.search_org_users(org.id, None, 0, u64::MAX)?;
        assert_eq!(page.len(), 4);

        let (none, total) = tx.search_org_users(org.id, Some("nobody"), 0, 10)?;
        assert!(none.is_empty());
        assert_eq!(total, 0);

        // A match never spans two fields.
        let (none, _) = tx.search_org_users(org.id, Some("annsmith"), 0, 10)?;
        assert!(none.is_empty());
        let (none, _) = tx.search_org_users(org.id, Some("ann\u{1f}smith"), 0, 10)?;
        assert!(none.is_empty());
        Ok(())
    });

    // The search follows every change of a name or email.
    write(&store, |tx| {
        let mut zola = users[0].clone();
        zola.last_name = "Ørsted".into();
        zola.email = "HC@Example.org".into();
        tx.update_user(&zola)?;
        Ok(())
    });
    read(&store, |tx| {
        let (found, _) = tx.search_org_users(org.id, Some("ØRST"), 0, 10)?;
        assert_eq!(ids(&found), vec![users[0].id]);
        let (found, _) = tx.search_org_users(org.id, Some("hc@example.org"), 0, 10)?;
        assert_eq!(ids(&found), vec![users[0].id]);
        let (none, total) = tx.search_org_users(org.id, Some("zola"), 0, 10)?;
        assert!(none.is_empty());
        assert_eq!(total, 0);
        Ok(())
    });
}

fn memberships(db: TestDatabase) {
    let store = open(&db);
    let (org, org2, a, b, c) = write(&store, |tx| {
        Ok((
            add_org(tx, "Acme"),
            add_org(tx, "Beta"),
            add_user(tx, "a@example.com"),
            add_user(tx, "b@example.com"),
            add_user(tx, "c@example.com"),
        ))
    });
    let mut ma = Membership::new(a.id, org.id);
    ma.is_admin = true;
    ma.all_access = true;
    ma.has_advanced_permissions = true;
    let mut mb = Membership::new(b.id, org.id);
    mb.is_admin = true;
    mb.is_active = false;
    let mut mc = Membership::new(c.id, org.id);
    mc.exclude_from_membership_count = true;
    mc.mfa_opt_out = true;
    write(&store, |tx| {
        tx.insert_membership(&mc)?;
        tx.insert_membership(&ma)?;
        tx.insert_membership(&mb)?;
        tx.insert_membership(&Membership::new(a.id, org2.id))?;
        Ok(())
    });

    let dup = write(&store, |tx| {
        Ok(tx.insert_membership(&Membership::new(a.id, org.id)))
    });
    match dup {
        Err(StoreError::UniqueViolation(what)) => assert!(what.contains("member"), "{what}"),
        other => panic!("expected a unique violation, got {other:?}"),
    }
    let dangling = write(&store, |tx| {
        Ok(tx.insert_membership(&Membership::new(UserId(c.id.0 + 1000), org.id)))
    });
    assert_eq!(dangling, Err(StoreError::NotFound));

    read(&store, |tx| {
        assert_eq!(tx.membership(a.id, org.id)?, Some(ma.clone()));
        assert_eq!(tx.membership(c.id, org.id)?, Some(mc.clone()));
        assert_eq!(tx.membership(c.id, org2.id)?, None);
        assert_eq!(
            tx.memberships_of_user(a.id)?,
            vec![ma.clone(), Membership::new(a.id, org2.id)]
        );
        let admins: Vec<_> = tx.org_admins(org.id)?.into_iter().map(|u| u.id).collect();
        assert_eq!(admins, vec![a.id], "active admins only");
        assert_eq!(
            tx.membership_counts(org.id)?,
            MembershipCounts {
                licensed: 2,
                enabled: 1,
                inactive: 1
            }
        );
        Ok(())
    });

    // every flag is written
    mb.is_active = true;
    mb.all_access = true;
    mb.mfa_opt_out = true;
    mb.exclude_from_membership_count = true;
    mb.has_advanced_permissions = true;
    write(&store, |tx| Ok(tx.update_membership(&mb)?));
    read(&store, |tx| {
        assert_eq!(tx.membership(b.id, org.id)?, Some(mb.clone()));
        let admins: Vec<_> = tx.org_admins(org.id)?.into_iter().map(|u| u.id).collect();
        assert_eq!(admins, vec![a.id, b.id]);
        assert_eq!(
            tx.membership_counts(org.id)?,
            MembershipCounts {
                licensed: 1,
                enabled: 1,
                inactive: 0
            }
        );
        Ok(())
    });
    assert_eq!(
        write(&store, |tx| Ok(
            tx.update_membership(&Membership::new(c.id, org2.id))
        )),
        Err(StoreError::NotFound)
    );

    assert!(write(&store, |tx| Ok(tx.delete_membership(a.id, org.id)?)));
    assert!(!write(&store, |tx| Ok(tx.delete_membership(a.id, org.id)?)));
    read(&store, |tx| {
        assert_eq!(tx.membership(a.id, org.id)?, None);
        assert_eq!(tx.memberships_of_user(a.id)?.len(), 1);
        assert_eq!(tx.membership_counts(org2.id)?.licensed, 1);
        Ok(())
    });
}

/// The locking reads of an org and a membership return what the plain
/// reads do (the lock itself is proven over HTTP: the server's
/// `attacks::interleaving`).
fn reads_for_update(db: TestDatabase) {
    let store = open(&db);
    let (org, user, stranger) = write(&store, |tx| {
        let org = add_org(tx, "Acme");
        let user = add_user(tx, "a@example.com");
        let stranger = add_user(tx, "s@example.com");
        let mut m = Membership::new(user.id, org.id);
        m.mfa_opt_out = true;
        tx.insert_membership(&m)?;
        Ok((org, user.id, stranger.id))
    });
    write(&store, |tx| {
        assert_eq!(tx.org_for_update(org.id)?, tx.org(org.id)?);
        assert!(tx.org_for_update(org.id)?.is_some());
        assert_eq!(tx.org_for_update(OrgId(org.id.0 + 100))?, None);
        let m = tx.membership_for_update(user, org.id)?;
        assert_eq!(m, tx.membership(user, org.id)?);
        assert!(m.expect("the membership").mfa_opt_out);
        assert_eq!(tx.membership_for_update(stranger, org.id)?, None);
        let locked = tx.user_for_update(user)?;
        assert_eq!(locked, tx.user(user)?);
        assert_eq!(locked.expect("the user").email, "a@example.com");
        assert_eq!(tx.user_for_update(UserId(stranger.0 + 100))?, None);
        Ok(())
    });
}

fn authenticator_lifecycle(db: TestDatabase) {
    let store = open(&db);
    let user = write(&store, |tx| Ok(add_user(tx, "a@example.com")));
    let params = TotpParams::new(Algorithm::Sha256, 8, 60).expect("params");
    let first = Secret::generate();
    let second = Secret::generate();
    let expires = Timestamp(T0.0 + 600);

    assert_eq!(read(&store, |tx| Ok(tx.authenticator(user.id)?)), None);
    assert!(write(&store, |tx| Ok(tx.put_pending_authenticator(
        user.id, &first, &params, T0, expires
    )?)));
    let pending = read(&store, |tx| Ok(tx.authenticator(user.id)?)).expect("pending");
    assert_eq!(pending.user_id, user.id);
    assert_eq!(pending.secret, first);
    assert_eq!(pending.params, params);
    assert_eq!(
        pending.state,
        AuthenticatorState::Pending {
            expires_at: expires
        }
    );
    assert!(!pending.is_verified());
    assert_eq!(pending.last_used_step, None);
    assert_eq!(pending.created_at, T0);
    // a pending row cannot be used for login
    assert!(!write(&store, |tx| Ok(tx.accept_totp_step(user.id, 5)?)));

    // a new pending secret replaces the pending one
    let later = Timestamp(T0.0 + 10);
    assert!(write(&store, |tx| Ok(tx.put_pending_authenticator(
        user.id,
        &second,
        &TotpParams::default(),
        later,
        Timestamp(later.0 + 600)
    )?)));
    let pending = read(&store, |tx| Ok(tx.authenticator(user.id)?)).expect("pending");
    assert_eq!(pending.secret, second);
    assert_eq!(pending.params, TotpParams::default());
    assert_eq!(pending.created_at, later);

    assert!(write(&store, |tx| Ok(tx.verify_authenticator(
        user.id,
        1000,
        Timestamp(T0.0 + 20)
    )?)));
    assert!(
        !write(&store, |tx| Ok(tx.verify_authenticator(
            user.id,
            1001,
            Timestamp(T0.0 + 21)
        )?)),
        "verifies once"
    );
    let verified = read(&store, |tx| Ok(tx.authenticator(user.id)?)).expect("verified");
    assert_eq!(
        verified.state,
        AuthenticatorState::Verified {
            verified_at: Timestamp(T0.0 + 20)
        }
    );
    assert_eq!(verified.last_used_step, Some(1000));
    assert_eq!(verified.secret, second);

    // a verified authenticator is never replaced by a pending one
    assert!(!write(&store, |tx| Ok(tx.put_pending_authenticator(
        user.id, &first, &params, T0, expires
    )?)));
    let still = read(&store, |tx| Ok(tx.authenticator(user.id)?)).expect("verified");
    assert_eq!(still, verified);

    assert!(write(&store, |tx| Ok(tx.delete_authenticator(user.id)?)));
    assert!(!write(&store, |tx| Ok(tx.delete_authenticator(user.id)?)));
    assert_eq!(read(&store, |tx| Ok(tx.authenticator(user.id)?)), None);
    assert!(write(&store, |tx| Ok(tx.put_pending_authenticator(
        user.id, &first, &params, T0, expires
    )?)));
    assert!(!write(&store, |tx| Ok(tx.verify_authenticator(
        UserId(user.id.0 + 1000),
        1,
        T0
    )?)));
}

fn accept_totp_step_is_monotonic(db: TestDatabase) {
    let store = open(&db);
    let user = write(&store, |tx| {
        let user = add_user(tx, "a@example.com");
        tx.put_pending_authenticator(
            user.id,
            &Secret::generate(),
            &TotpParams::default(),
            T0,
            Timestamp(T0.0 + 600),
        )?;
        tx.verify_authenticator(user.id, 100, T0)?;
        Ok(user)
    });
    let accept = |step: u64| write(&store, |tx| Ok(tx.accept_totp_step(user.id, step)?));
    assert!(!accept(100), "the verifying step is used");
    assert!(!accept(99));
    assert!(accept(101));
    assert!(!accept(101), "replay");
    assert!(accept(105));
    assert!(!accept(103), "older than the last");
    assert!(!accept(105));
    assert!(accept(106));
    let auth = read(&store, |tx| Ok(tx.authenticator(user.id)?)).expect("authenticator");
    assert_eq!(auth.last_used_step, Some(106));
    assert!(!write(&store, |tx| Ok(
        tx.accept_totp_step(UserId(user.id.0 + 1), 500)?
    )));
}

fn email_factor(db: TestDatabase) {
    let store = open(&db);
    let user = write(&store, |tx| Ok(add_user(tx, "a@example.com")));
    assert_eq!(
        read(&store, |tx| Ok(tx.email_factor_verified_at(user.id)?)),
        None
    );
    write(&store, |tx| Ok(tx.set_email_factor_verified(user.id, T0)?));
    write(&store, |tx| {
        Ok(tx.set_email_factor_verified(user.id, Timestamp(T0.0 + 50))?)
    });
    assert_eq!(
        read(&store, |tx| Ok(tx.email_factor_verified_at(user.id)?)),
        Some(T0),
        "idempotent: the first time stays"
    );
    assert!(write(&store, |tx| Ok(tx.delete_email_factor(user.id)?)));
    assert!(!write(&store, |tx| Ok(tx.delete_email_factor(user.id)?)));
    assert_eq!(
        read(&store, |tx| Ok(tx.email_factor_verified_at(user.id)?)),
        None
    );
}

fn code(user: UserId, hash: &str, sent_at: i64) -> NewEmailCode {
    NewEmailCode {
        user_id: user,
        purpose: EmailCodePurpose::Login,
        code_hash: hash.to_string(),
        salt: "00ff".to_string(),
        sent_at: Timestamp(sent_at),
        expires_at: Timestamp(sent_at + 600),
    }
}

fn email_codes(db: TestDatabase) {
    let store = open(&db);
    let (user, other) = write(&store, |tx| {
        Ok((add_user(tx, "a@example.com"), add_user(tx, "b@example.com")))
    });
    assert_eq!(read(&store, |tx| Ok(tx.latest_email_code(user.id)?)), None);

    let mut enroll = code(user.id, "h1", T0.0);
    enroll.purpose = EmailCodePurpose::Enroll;
    let first = write(&store, |tx| Ok(tx.replace_email_code(&enroll)?));
    assert_eq!(first.purpose, EmailCodePurpose::Enroll);
    assert_eq!(first.code_hash, "h1");
    assert_eq!(first.salt, "00ff");
    assert_eq!(first.sent_at, T0);
    assert_eq!(first.expires_at, Timestamp(T0.0 + 600));
    assert_eq!(first.consumed_at, None);
    let others = write(&store, |tx| {
        Ok(tx.replace_email_code(&code(other.id, "o1", T0.0))?)
    });

    // a new code voids the previous one
    let second = write(&store, |tx| {
        Ok(tx.replace_email_code(&code(user.id, "h2", T0.0 + 30))?)
    });
    assert!(second.id > first.id);
    assert_eq!(
        read(&store, |tx| Ok(tx.latest_email_code(user.id)?)),
        Some(second.clone())
    );
    assert!(!write(
        &store,
        |tx| Ok(tx.consume_email_code(first.id, T0)?)
    ));

    let at = Timestamp(T0.0 + 40);
    assert!(write(
        &store,
        |tx| Ok(tx.consume_email_code(second.id, at)?)
    ));
    assert!(
        !write(&store, |tx| Ok(tx.consume_email_code(second.id, at)?)),
        "once"
    );
    let consumed = read(&store, |tx| Ok(tx.latest_email_code(user.id)?)).expect("code");
    assert_eq!(
        consumed.consumed_at,
        Some(at),
        "latest includes consumed codes"
    );

    write(&store, |tx| Ok(tx.delete_email_code(second.id)?));
    assert_eq!(read(&store, |tx| Ok(tx.latest_email_code(user.id)?)), None);
    let third = write(&store, |tx| {
        let third = tx.replace_email_code(&code(user.id, "h3", T0.0 + 60))?;
        tx.void_email_codes(user.id)?;
        Ok(third)
    });
    let voided = read(&store, |tx| Ok(tx.latest_email_code(user.id)?)).expect("kept");
    assert_eq!(
        (voided.id, voided.sent_at, voided.consumed_at),
        (third.id, third.sent_at, Some(third.sent_at)),
        "a voided code is consumed, and still says when it was sent"
    );
    assert!(voided.is_voided() && voided.code_hash.is_empty());
    assert!(
        !write(&store, |tx| Ok(tx.consume_email_code(third.id, T0)?)),
        "a voided code is used up"
    );
    assert_eq!(
        read(&store, |tx| Ok(tx.latest_email_code(other.id)?)),
        Some(others),
        "other users' codes are untouched"
    );
}

fn recovery_codes(db: TestDatabase) {
    let store = open(&db);
    let (user, other) = write(&store, |tx| {
        Ok((add_user(tx, "a@example.com"), add_user(tx, "b@example.com")))
    });
    let hashes: Vec<String> = (1..=3).map(|i| format!("$argon2id$code{i}")).collect();
    write(&store, |tx| {
        tx.replace_recovery_codes(user.id, &hashes, T0)?;
        Ok(tx.replace_recovery_codes(other.id, &hashes[..1], T0)?)
    });
    let codes = read(&store, |tx| Ok(tx.recovery_codes(user.id)?));
    assert_eq!(
        codes
            .iter()
            .map(|c| c.code_hash.clone())
            .collect::<Vec<_>>(),
        hashes,
        "by id"
    );
    assert!(
        codes
            .iter()
            .all(|c| c.user_id == user.id && c.created_at == T0 && c.used_at.is_none())
    );

    let at = Timestamp(T0.0 + 5);
    assert!(write(&store, |tx| Ok(
        tx.consume_recovery_code(codes[1].id, at)?
    )));
    assert!(
        !write(&store, |tx| Ok(tx.consume_recovery_code(codes[1].id, at)?)),
        "once"
    );
    let codes_now = read(&store, |tx| Ok(tx.recovery_codes(user.id)?));
    assert_eq!(codes_now[1].used_at, Some(at));
    assert_eq!(codes_now[0].used_at, None);

    // a new set replaces the old one, used codes included
    let fresh: Vec<String> = (4..=5).map(|i| format!("$argon2id$code{i}")).collect();
    write(&store, |tx| {
        Ok(tx.replace_recovery_codes(user.id, &fresh, at)?)
    });
    let replaced = read(&store, |tx| Ok(tx.recovery_codes(user.id)?));
    assert_eq!(replaced.len(), 2);
    assert!(
        replaced
            .iter()
            .all(|c| c.used_at.is_none() && c.created_at == at)
    );
    assert!(!write(&store, |tx| Ok(
        tx.consume_recovery_code(codes[0].id, at)?
    )));

    assert_eq!(
        write(&store, |tx| Ok(tx.delete_recovery_codes(user.id)?)),
        2
    );
    assert_eq!(
        write(&store, |tx| Ok(tx.delete_recovery_codes(user.id)?)),
        0
    );
    write(&store, |tx| {
        Ok(tx.replace_recovery_codes(user.id, &[], at)?)
    });
    assert!(read(&store, |tx| Ok(tx.recovery_codes(user.id)?)).is_empty());
    assert_eq!(read(&store, |tx| Ok(tx.recovery_codes(other.id)?)).len(), 1);
}

fn new_session(user: UserId, org: OrgId, token: &str) -> NewSession {
    NewSession {
        token_hash: token.to_string(),
        user_id: user,
        org_id: org,
        level: AssuranceLevel::Partial,
        created_at: T0,
        expires_at: Timestamp(T0.0 + 3600),
    }
}

fn sessions(db: TestDatabase) {
    let store = open(&db);
    let (user, org, org2) = write(&store, |tx| {
        Ok((
            add_user(tx, "a@example.com"),
            add_org(tx, "A"),
            add_org(tx, "B"),
        ))
    });
    let mut full = new_session(user.id, org.id, "hash-1");
    full.level = AssuranceLevel::Full;
    let s1 = write(&store, |tx| Ok(tx.insert_session(&full)?));
    assert_eq!(s1.token_hash, "hash-1");
    assert_eq!(s1.user_id, user.id);
    assert_eq!(s1.org_id, org.id);
    assert_eq!(s1.level, AssuranceLevel::Full);
    assert_eq!(s1.created_at, T0);
    assert_eq!(s1.last_seen_at, T0, "first seen at creation");
    assert_eq!(s1.expires_at, Timestamp(T0.0 + 3600));
    assert_eq!(s1.revoked_at, None);

    let dup = write(&store, |tx| {
        Ok(tx.insert_session(&new_session(user.id, org.id, "hash-1")))
    });
    assert!(
        matches!(dup, Err(StoreError::UniqueViolation(_))),
        "{dup:?}"
    );

    read(&store, |tx| {
        assert_eq!(tx.session_by_token_hash("hash-1")?, Some(s1.clone()));
        assert_eq!(tx.session_by_token_hash("nope")?, None);
        Ok(())
    });
    write(&store, |tx| {
        Ok(tx.touch_session(s1.id, Timestamp(T0.0 + 100))?)
    });
    let touched = read(&store, |tx| Ok(tx.session_by_token_hash("hash-1")?)).expect("s1");
    assert_eq!(touched.last_seen_at, Timestamp(T0.0 + 100));
    assert!(!touched.mfa_passed, "a login verifies no factor");
    write(&store, |tx| Ok(tx.note_session_mfa_passed(s1.id)?));
    let noted = read(&store, |tx| Ok(tx.session_member("hash-1")?)).expect("s1");
    assert!(noted.session.mfa_passed);
    assert_eq!(noted.session.last_seen_at, touched.last_seen_at);

    let now = Timestamp(T0.0 + 200);
    assert!(write(&store, |tx| Ok(tx.revoke_session(s1.id, now)?)));
    assert!(
        !write(&store, |tx| Ok(tx.revoke_session(s1.id, now)?)),
        "once"
    );
    let revoked = read(&store, |tx| Ok(tx.session_by_token_hash("hash-1")?)).expect("s1");
    assert_eq!(
        revoked.revoked_at,
        Some(now),
        "revoked sessions are still found"
    );
    assert!(!write(&store, |tx| Ok(
        tx.revoke_session(SessionId(s1.id.0 + 1000), now)?
    )));

    // revoke_user_sessions: org filter, exception, live ones only
    let (s2, s3, s4, s5, expired, stranger) = write(&store, |tx| {
        let stranger_user = add_user(tx, "b@example.com");
        let mut expired = new_session(user.id, org.id, "hash-expired");
        expired.expires_at = Timestamp(T0.0 + 10);
        Ok((
            tx.insert_session(&new_session(user.id, org.id, "hash-2"))?,
            tx.insert_session(&new_session(user.id, org.id, "hash-3"))?,
            tx.insert_session(&new_session(user.id, org2.id, "hash-4"))?,
            tx.insert_session(&new_session(user.id, org2.id, "hash-5"))?,
            tx.insert_session(&expired)?,
            tx.insert_session(&new_session(stranger_user.id, org.id, "hash-6"))?,
        ))
    });
    assert!(
        !write(&store, |tx| Ok(tx.revoke_session(expired.id, now)?)),
        "an expired session is not live"
    );
    let n = write(&store, |tx| {
        Ok(tx.revoke_user_sessions(user.id, Some(org.id), Some(s2.id), now)?)
    });
    assert_eq!(
        n, 1,
        "only s3: s1 revoked, s2 spared, expired not live, org2 not asked"
    );
    let revoked_at = |token: &str| {
        read(&store, |tx| Ok(tx.session_by_token_hash(token)?))
            .expect("session")
            .revoked_at
    };
    assert_eq!(revoked_at("hash-2"), None);
    assert_eq!(revoked_at("hash-3"), Some(now));
    assert_eq!(revoked_at("hash-4"), None);
    let n = write(&store, |tx| {
        Ok(tx.revoke_user_sessions(user.id, None, Some(s4.id), now)?)
    });
    assert_eq!(n, 2, "s2 and s5");
    assert_eq!(revoked_at("hash-4"), None);
    assert_eq!(revoked_at("hash-5"), Some(now));
    let n = write(&store, |tx| {
        Ok(tx.revoke_user_sessions(user.id, None, None, now)?)
    });
    assert_eq!(n, 1, "s4");
    assert_eq!(revoked_at("hash-6"), None, "other users untouched");
    let _ = (s3, s5, stranger);
}

/// `delete_ended_sessions` deletes exactly what `SessionPurge::covers`,
/// oldest first, a batch at a time.
fn ended_sessions_are_deleted(db: TestDatabase) {
    let store = open(&db);
    let at = |secs: i64| Timestamp(T0.0 + secs);
    let (user, org) = write(&store, |tx| {
        Ok((add_user(tx, "a@example.com"), add_org(tx, "A")))
    });
    let session = |token: &str, level: AssuranceLevel, expires: i64| NewSession {
        level,
        expires_at: at(expires),
        ..new_session(user.id, org.id, token)
    };
    use AssuranceLevel::{Full, Partial};
    write(&store, |tx| {
        let revoked_early = tx.insert_session(&session("revoked-early", Full, 3600))?;
        tx.revoke_session(revoked_early.id, at(10))?;
        let revoked_late = tx.insert_session(&session("revoked-late", Partial, 3600))?;
        tx.revoke_session(revoked_late.id, at(500))?;
        tx.insert_session(&session("expired", Partial, 50))?;
        tx.insert_session(&session("expires-at-the-cut", Partial, 100))?;
        tx.insert_session(&session("full-idle", Full, 3600))?;
        tx.insert_session(&session("partial-unseen", Partial, 3600))?;
        let seen = tx.insert_session(&session("full-seen", Full, 3600))?;
        tx.touch_session(seen.id, at(30))?;
        Ok(())
    });
    let purge = SessionPurge {
        ended_before: at(100),
        full_seen_before: at(20),
        limit: 2,
    };
    let present = || {
        let tokens = [
            "revoked-early",
            "revoked-late",
            "expired",
            "expires-at-the-cut",
            "full-idle",
            "partial-unseen",
            "full-seen",
        ];
        read(&store, |tx| {
            let mut found = Vec::new();
            for token in tokens {
                if tx.session_by_token_hash(token)?.is_some() {
                    found.push(token);
                }
            }
            Ok(found)
        })
    };
    assert_eq!(write(&store, |tx| Ok(tx.delete_ended_sessions(&purge)?)), 2);
    assert_eq!(
        present(),
        [
            "revoked-late",
            "expires-at-the-cut",
            "full-idle",
            "partial-unseen",
            "full-seen"
        ],
        "the two oldest first"
    );
    assert_eq!(write(&store, |tx| Ok(tx.delete_ended_sessions(&purge)?)), 1);
    assert_eq!(write(&store, |tx| Ok(tx.delete_ended_sessions(&purge)?)), 0);
    let left = present();
    assert_eq!(
        left,
        [
            "revoked-late",
            "expires-at-the-cut",
            "partial-unseen",
            "full-seen"
        ]
    );
    read(&store, |tx| {
        for token in left {
            let s = tx.session_by_token_hash(token)?.expect("kept");
            assert!(!purge.covers(&s), "{s:?}");
        }
        Ok(())
    });
}

fn failure_counters(db: TestDatabase) {
    let store = open(&db);
    let (user, other) = write(&store, |tx| {
        Ok((add_user(tx, "a@example.com"), add_user(tx, "b@example.com")))
    });
    let state = |u: UserId, kind| read(&store, |tx| Ok(tx.failure_state(u, kind)?));
    assert_eq!(state(user.id, FailureKind::Code), FailureState::default());

    for expected in 1..=3 {
        let n = write(&store, |tx| {
            Ok(count_failure(tx, user.id, FailureKind::Code)?)
        });
        assert_eq!(n.failures, expected);
    }
    assert_eq!(
        write(&store, |tx| Ok(count_failure(
            tx,
            user.id,
            FailureKind::Password
        )?))
        .failures,
        1,
        "kinds are counted apart"
    );
    assert_eq!(
        write(&store, |tx| Ok(count_failure(
            tx,
            other.id,
            FailureKind::Code
        )?))
        .failures,
        1,
        "users are counted apart"
    );

    let until = Timestamp(T0.0 + 900);
    write(&store, |tx| {
        Ok(tx.set_locked_until(
            FailureSubject::User(user.id, FailureKind::Code),
            Some(until),
        )?)
    });
    assert_eq!(
        state(user.id, FailureKind::Code),
        FailureState {
            failures: 3,
            locked_until: Some(until)
        }
    );
    // locking a user without failures creates the row
    write(&store, |tx| {
        Ok(tx.set_locked_until(
            FailureSubject::User(other.id, FailureKind::Password),
            Some(until),
        )?)
    });
    assert_eq!(
        state(other.id, FailureKind::Password),
        FailureState {
            failures: 0,
            locked_until: Some(until)
        }
    );
    write(&store, |tx| {
        Ok(tx.set_locked_until(FailureSubject::User(user.id, FailureKind::Code), None)?)
    });
    assert_eq!(state(user.id, FailureKind::Code).locked_until, None);
    assert_eq!(state(user.id, FailureKind::Code).failures, 3);

    write(&store, |tx| {
        Ok(tx.reset_failures(FailureSubject::User(user.id, FailureKind::Code))?)
    });
    assert_eq!(state(user.id, FailureKind::Code), FailureState::default());
    assert_eq!(state(user.id, FailureKind::Password).failures, 1);
    assert_eq!(
        write(&store, |tx| Ok(count_failure(
            tx,
            user.id,
            FailureKind::Code
        )?)),
        FailureState {
            failures: 1,
            locked_until: None
        },
        "counting starts again"
    );
}

/// What an authenticator code check reads under the user's lock in one go
/// is what the two reads it stands for return, through every state of the
/// counter (none, another kind's only, its own, locked) and of the
/// authenticator (none, pending, verified, used), beside another user's.
fn lock_failure_state_and_authenticator(db: TestDatabase) {
    let store = open(&db);
    let (user, other) = write(&store, |tx| {
        let user = add_user(tx, "a@example.com").id;
        let other = add_user(tx, "b@example.com").id;
        count_failure(tx, other, FailureKind::Code)?;
        tx.put_pending_authenticator(
            other,
            &Secret::generate(),
            &TotpParams::default(),
            T0,
            Timestamp(T0.0 + 600),
        )?;
        Ok((user, other))
    });
    let agree = |step: &str| {
        let (together, apart) = write(&store, |tx| {
            let together = tx.lock_failure_state_and_authenticator(user, FailureKind::Code)?;
            let apart = (
                tx.lock_failure_state(user, FailureKind::Code)?,
                tx.authenticator(user)?,
            );
            Ok((together, apart))
        });
        assert_eq!(together, apart, "{step}");
        together
    };
    assert_eq!(agree("nothing"), (FailureState::default(), None));
    write(&store, |tx| {
        Ok(count_failure(tx, user, FailureKind::Password)?)
    });
    assert_eq!(agree("a password failure").0, FailureState::default());
    let secret = Secret::generate();
    write(&store, |tx| {
        Ok(tx.put_pending_authenticator(
            user,
            &secret,
            &TotpParams::default(),
            T0,
            Timestamp(T0.0 + 600),
        )?)
    });
    let (_, pending) = agree("a pending authenticator");
    let pending = pending.expect("the pending authenticator");
    assert_eq!(pending.secret, secret);
    assert!(!pending.is_verified());
    write(&store, |tx| {
        count_failure(tx, user, FailureKind::Code)?;
        count_failure(tx, user, FailureKind::Code)?;
        Ok(tx.verify_authenticator(user, 7, T0)?)
    });
    let (state, verified) = agree("two code failures, verified");
    assert_eq!(state.failures, 2);
    assert!(verified.expect("the verified authenticator").is_verified());
    let until = Timestamp(T0.0 + 60);
    write(&store, |tx| {
        tx.set_locked_until(FailureSubject::User(user, FailureKind::Code), Some(until))?;
        Ok(tx.accept_totp_step(user, 9)?)
    });
    let (state, used) = agree("locked, a step used");
    assert_eq!(state.locked_until, Some(until));
    assert_eq!(used.expect("the authenticator").last_used_step, Some(9));
    write(&store, |tx| {
        tx.reset_failures(FailureSubject::User(user, FailureKind::Code))?;
        Ok(tx.delete_authenticator(user)?)
    });
    assert_eq!(agree("reset"), (FailureState::default(), None));
    let (state, pending) = write(&store, |tx| {
        Ok(tx.lock_failure_state_and_authenticator(other, FailureKind::Code)?)
    });
    assert_eq!(state.failures, 1, "the other user's counter");
    assert!(
        !pending
            .expect("the other user's authenticator")
            .is_verified()
    );
}

fn email_changes(db: TestDatabase) {
    let store = open(&db);
    let user = write(&store, |tx| Ok(add_user(tx, "a@example.com")));
    assert_eq!(
        read(&store, |tx| Ok(tx.pending_email_change(user.id)?)),
        None
    );

    let expires = Timestamp(T0.0 + 3600);
    let first = write(&store, |tx| {
        Ok(tx.put_email_change(user.id, "new@example.com", "tok-1", T0, expires)?)
    });
    assert_eq!(first.user_id, user.id);
    assert_eq!(first.new_email, "new@example.com");
    assert_eq!(first.token_hash, "tok-1");
    assert_eq!(first.created_at, T0);
    assert_eq!(first.expires_at, expires);
    assert_eq!(first.consumed_at, None);

    // a new request replaces the pending one
    let second = write(&store, |tx| {
        Ok(tx.put_email_change(user.id, "newer@example.com", "tok-2", T0, expires)?)
    });
    read(&store, |tx| {
        assert_eq!(tx.pending_email_change(user.id)?, Some(second.clone()));
        assert_eq!(tx.email_change_by_token_hash("tok-1")?, None);
        assert_eq!(
            tx.email_change_by_token_hash("tok-2")?,
            Some(second.clone())
        );
        Ok(())
    });

    let at = Timestamp(T0.0 + 60);
    assert!(write(&store, |tx| Ok(
        tx.consume_email_change(second.id, at)?
    )));
    assert!(
        !write(&store, |tx| Ok(tx.consume_email_change(second.id, at)?)),
        "once"
    );
    assert!(!write(&store, |tx| Ok(
        tx.consume_email_change(first.id, at)?
    )));
    read(&store, |tx| {
        assert_eq!(tx.pending_email_change(user.id)?, None);
        let consumed = tx.email_change_by_token_hash("tok-2")?.expect("kept");
        assert_eq!(consumed.consumed_at, Some(at));
        Ok(())
    });
    // a consumed change is history, not replaced by the next request
    let third = write(&store, |tx| {
        Ok(tx.put_email_change(user.id, "third@example.com", "tok-3", at, expires)?)
    });
    read(&store, |tx| {
        assert_eq!(tx.pending_email_change(user.id)?, Some(third.clone()));
        assert!(tx.email_change_by_token_hash("tok-2")?.is_some());
        Ok(())
    });
    // withdrawn (its link was never mailed): the pending one only, by its
    // own token; a consumed change stays history
    write(&store, |tx| {
        assert!(!tx.withdraw_email_change(user.id, "tok-2")?);
        assert!(!tx.withdraw_email_change(UserId(user.id.0 + 1), "tok-3")?);
        assert!(tx.withdraw_email_change(user.id, "tok-3")?);
        Ok(())
    });
    read(&store, |tx| {
        assert_eq!(tx.pending_email_change(user.id)?, None);
        assert!(tx.email_change_by_token_hash("tok-2")?.is_some());
        Ok(())
    });
}

fn event(
    at: i64,
    org: Option<OrgId>,
    actor: Option<UserId>,
    target: Option<UserId>,
    action: AuditAction,
) -> NewAuditEvent {
    NewAuditEvent {
        at: Timestamp(at),
        org_id: org,
        actor_user_id: actor,
        target_user_id: target,
        action,
        detail: format!("event at {at}"),
        // Every kind of address, and none, goes in and out unchanged.
        client: match at % 3 {
            0 => None,
            1 => Some("203.0.113.9".parse().expect("IPv4")),
            _ => Some("2001:db8::17".parse().expect("IPv6")),
        },
    }
}

fn audit(db: TestDatabase) {
    let store = open(&db);
    let (o1, o2, u1, u2) = (OrgId(1), OrgId(2), UserId(10), UserId(20));
    let events = [
        event(1, Some(o1), Some(u1), Some(u2), AuditAction::MfaReset),
        event(2, Some(o1), Some(u2), None, AuditAction::LoginSucceeded),
        event(3, Some(o2), Some(u1), Some(u1), AuditAction::MfaReset),
        event(4, None, None, Some(u2), AuditAction::LoginFailed),
        event(
            5,
            Some(o1),
            Some(u1),
            Some(u1),
            AuditAction::AuthenticatorEnrolled,
        ),
    ];
    write(&store, |tx| {
        for e in &events {
            tx.insert_audit(e)?;
        }
        Ok(())
    });
    let list = |filter: AuditFilter, offset, limit| {
        let (found, total) = read(&store, |tx| Ok(tx.audit_events(&filter, offset, limit)?));
        (
            found.iter().map(|e| e.at.0).collect::<Vec<_>>(),
            total,
            found,
        )
    };

    let (ats, total, all) = list(AuditFilter::default(), 0, 100);
    assert_eq!(ats, vec![5, 4, 3, 2, 1], "newest first");
    assert_eq!(total, 5);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    let oldest = &all[4];
    assert_eq!(oldest.org_id, Some(o1));
    assert_eq!(oldest.actor_user_id, Some(u1));
    assert_eq!(oldest.target_user_id, Some(u2));
    assert_eq!(oldest.action, AuditAction::MfaReset);
    assert_eq!(oldest.detail, "event at 1");
    assert_eq!(all[1].org_id, None);
    assert_eq!(all[1].actor_user_id, None);

    let by_org = AuditFilter {
        org_id: Some(o1),
        ..AuditFilter::default()
    };
    assert_eq!(list(by_org.clone(), 0, 100).0, vec![5, 2, 1]);
    let by_user = AuditFilter {
        user_id: Some(u2),
        ..AuditFilter::default()
    };
    assert_eq!(list(by_user, 0, 100).0, vec![4, 2, 1], "actor or target");
    let by_action = AuditFilter {
        action: Some(AuditAction::MfaReset),
        ..AuditFilter::default()
    };
    assert_eq!(list(by_action, 0, 100).0, vec![3, 1]);
    let combined = AuditFilter {
        org_id: Some(o1),
        user_id: Some(u1),
        action: Some(AuditAction::MfaReset),
        ..AuditFilter::default()
    };
    assert_eq!(list(combined, 0, 100).0, vec![1]);
    // A period: from (included) to (left out).
    let period = AuditFilter {
        from: Some(Timestamp(2)),
        to: Some(Timestamp(5)),
        ..AuditFilter::default()
    };
    assert_eq!(list(period, 0, 100).0, vec![4, 3, 2]);
    let since = AuditFilter {
        org_id: Some(o1),
        from: Some(Timestamp(2)),
        ..AuditFilter::default()
    };
    assert_eq!(list(since, 0, 100).0, vec![5, 2]);

    let (page, total, _) = list(by_org, 1, 1);
    assert_eq!((page, total), (vec![2], 3), "paging keeps the total");
    let (page, total, _) = list(AuditFilter::default(), 4, 10);
    assert_eq!((page, total), (vec![1], 5));
}

fn delete_user_cascades(db: TestDatabase) {
    let store = open(&db);
    let (user, keep, org) = write(&store, |tx| {
        let user = add_user(tx, "a@example.com");
        let keep = add_user(tx, "keep@example.com");
        let org = add_org(tx, "Acme");
        tx.insert_membership(&Membership::new(user.id, org.id))?;
        tx.insert_membership(&Membership::new(keep.id, org.id))?;
        tx.put_pending_authenticator(
            user.id,
            &Secret::generate(),
            &TotpParams::default(),
            T0,
            Timestamp(T0.0 + 600),
        )?;
        tx.set_email_factor_verified(user.id, T0)?;
        tx.replace_email_code(&code(user.id, "h", T0.0))?;
        tx.replace_recovery_codes(user.id, &["$argon2id$x".to_string()], T0)?;
        tx.insert_session(&new_session(user.id, org.id, "tok"))?;
        count_failure(tx, user.id, FailureKind::Code)?;
        tx.put_email_change(user.id, "b@example.com", "chg", T0, Timestamp(T0.0 + 60))?;
        tx.insert_audit(&event(
            1,
            Some(org.id),
            Some(user.id),
            Some(user.id),
            AuditAction::UserCreated,
        ))?;
        Ok((user, keep, org))
    });
    assert!(write(&store, |tx| Ok(tx.delete_user(user.id)?)));
    read(&store, |tx| {
        assert_eq!(tx.user(user.id)?, None);
        assert_eq!(tx.membership(user.id, org.id)?, None);
        assert_eq!(tx.authenticator(user.id)?, None);
        assert_eq!(tx.email_factor_verified_at(user.id)?, None);
        assert_eq!(tx.latest_email_code(user.id)?, None);
        assert!(tx.recovery_codes(user.id)?.is_empty());
        assert_eq!(tx.session_by_token_hash("tok")?, None);
        assert_eq!(
            tx.failure_state(user.id, FailureKind::Code)?,
            FailureState::default()
        );
        assert_eq!(tx.email_change_by_token_hash("chg")?, None);
        // the audit log outlives the user; others are untouched
        assert_eq!(tx.audit_events(&AuditFilter::default(), 0, 10)?.1, 1);
        assert!(tx.membership(keep.id, org.id)?.is_some());
        assert!(tx.org(org.id)?.is_some());
        Ok(())
    });
    for table in [
        "memberships",
        "authenticators",
        "email_factors",
        "email_codes",
        "recovery_codes",
        "sessions",
        "failure_counters",
        "email_changes",
    ] {
        let left = raw_texts(
            &db,
            &format!(
                "SELECT CAST(COUNT(*) AS TEXT) AS value FROM {table} WHERE user_id = {}",
                user.id.0
            ),
        );
        assert_eq!(left, vec!["0".to_string()], "{table}");
    }
}

fn delete_org_cascades_memberships(db: TestDatabase) {
    let store = open(&db);
    let (user, org, org2) = write(&store, |tx| {
        let user = add_user(tx, "a@example.com");
        let org = add_org(tx, "Acme");
        let org2 = add_org(tx, "Beta");
        tx.insert_membership(&Membership::new(user.id, org.id))?;
        tx.insert_membership(&Membership::new(user.id, org2.id))?;
        tx.insert_session(&new_session(user.id, org.id, "in-org"))?;
        tx.insert_session(&new_session(user.id, org2.id, "in-org2"))?;
        Ok((user, org, org2))
    });
    assert!(write(&store, |tx| Ok(tx.delete_org(org.id)?)));
    read(&store, |tx| {
        assert_eq!(tx.membership(user.id, org.id)?, None);
        assert_eq!(
            tx.memberships_of_user(user.id)?,
            vec![Membership::new(user.id, org2.id)]
        );
        assert_eq!(tx.session_by_token_hash("in-org")?, None);
        assert!(tx.session_by_token_hash("in-org2")?.is_some());
        assert!(tx.user(user.id)?.is_some(), "users stay");
        Ok(())
    });
}

fn rollback_on_err_leaves_nothing(db: TestDatabase) {
    let store = open(&db);
    let result: Result<(), MfaError> = store.write(|tx| {
        let user = add_user(tx, "a@example.com");
        let org = add_org(tx, "Acme");
        tx.insert_membership(&Membership::new(user.id, org.id))?;
        count_failure(tx, user.id, FailureKind::Code)?;
        tx.insert_audit(&event(
            1,
            Some(org.id),
            None,
            Some(user.id),
            AuditAction::UserCreated,
        ))?;
        Err(MfaError::InvalidCode)
    });
    assert_eq!(
        result,
        Err(MfaError::InvalidCode),
        "the domain error comes back as is"
    );
    read(&store, |tx| {
        assert_eq!(tx.count_users()?, 0);
        assert!(tx.all_orgs()?.is_empty());
        assert_eq!(tx.audit_events(&AuditFilter::default(), 0, 10)?.1, 0);
        Ok(())
    });

    // commit on Ok(Err(..)), as the service's write_then does
    let outer: Result<Result<(), MfaError>, MfaError> = store.write(|tx| {
        add_user(tx, "kept@example.com");
        Ok(Err(MfaError::InvalidCode))
    });
    assert_eq!(outer, Ok(Err(MfaError::InvalidCode)));
    assert_eq!(read(&store, |tx| Ok(tx.count_users()?)), 1);
}

fn reads_cannot_write(db: TestDatabase) {
    let store = open(&db);
    let attempt = store.read(|tx| Ok(tx.insert_org("sneaky", T0)));
    match attempt {
        Ok(Err(StoreError::Backend(_))) | Err(MfaError::Store(StoreError::Backend(_))) => {}
        other => panic!("a read transaction wrote: {other:?}"),
    }
    assert!(read(&store, |tx| Ok(tx.all_orgs()?)).is_empty());
}

fn failed_multi_user_reset_changes_nothing(db: TestDatabase) {
    let store = open(&db);
    let users = write(&store, |tx| {
        let mut users = Vec::new();
        for i in 0..4 {
            let user = add_user(tx, &format!("u{i}@example.com"));
            tx.put_pending_authenticator(
                user.id,
                &Secret::generate(),
                &TotpParams::default(),
                T0,
                Timestamp(T0.0 + 600),
            )?;
            tx.verify_authenticator(user.id, 7, T0)?;
            tx.replace_recovery_codes(user.id, &["$argon2id$a".into(), "$argon2id$b".into()], T0)?;
            tx.set_email_factor_verified(user.id, T0)?;
            users.push(user);
        }
        Ok(users)
    });
    let before: Vec<_> = users
        .iter()
        .map(|u| {
            read(&store, |tx| {
                Ok((
                    tx.authenticator(u.id)?,
                    tx.recovery_codes(u.id)?,
                    tx.email_factor_verified_at(u.id)?,
                ))
            })
        })
        .collect();

    // An admin resets every user's factors in one transaction; the third
    // reset fails half-way: nothing of the first two may remain.
    let result: Result<(), MfaError> = store.write(|tx| {
        for (i, user) in users.iter().enumerate() {
            tx.delete_authenticator(user.id)?;
            if i == 2 {
                return Err(MfaError::Store(StoreError::Backend(
                    "simulated failure".into(),
                )));
            }
            tx.delete_recovery_codes(user.id)?;
            tx.delete_email_factor(user.id)?;
            tx.insert_audit(&event(9, None, None, Some(user.id), AuditAction::MfaReset))?;
        }
        Ok(())
    });
    assert!(result.is_err());
    let after: Vec<_> = users
        .iter()
        .map(|u| {
            read(&store, |tx| {
                Ok((
                    tx.authenticator(u.id)?,
                    tx.recovery_codes(u.id)?,
                    tx.email_factor_verified_at(u.id)?,
                ))
            })
        })
        .collect();
    assert_eq!(before, after);
    assert_eq!(
        read(&store, |tx| Ok(tx
            .audit_events(&AuditFilter::default(), 0, 10)?
            .1)),
        0
    );
}

/// Everything one user has that a reset removes, plus a live session in
/// each of two orgs.
fn give_everything(tx: &mut dyn StoreTx, user: UserId, orgs: [OrgId; 2]) -> MfaResult<()> {
    tx.put_pending_authenticator(
        user,
        &Secret::generate(),
        &TotpParams::default(),
        T0,
        Timestamp(T0.0 + 600),
    )?;
    tx.verify_authenticator(user, 7, T0)?;
    tx.set_email_factor_verified(user, T0)?;
    tx.replace_email_code(&code(user, &format!("code-{}", user.0), T0.0))?;
    tx.replace_recovery_codes(user, &["$argon2id$a".into()], T0)?;
    count_failure(tx, user, FailureKind::Code)?;
    count_failure(tx, user, FailureKind::Password)?;
    for org in orgs {
        tx.insert_session(&new_session(user, org, &format!("s-{}-{}", user.0, org.0)))?;
    }
    Ok(())
}

/// What a reset removes, as seen by the one-user reads: authenticator,
/// email factor, email code, unused recovery codes, code failures and
/// password failures.
fn factors_left(store: &DbStore, user: UserId) -> (bool, bool, bool, u64, u32, u32) {
    read(store, |tx| {
        Ok((
            tx.authenticator_state(user)?.is_some(),
            tx.email_factor_verified_at(user)?.is_some(),
            // A live code: a removed factor's codes are voided, not gone.
            tx.latest_email_code(user)?
                .is_some_and(|code| code.consumed_at.is_none()),
            tx.unused_recovery_codes(user)?,
            tx.failure_state(user, FailureKind::Code)?.failures,
            tx.failure_state(user, FailureKind::Password)?.failures,
        ))
    })
}

/// The methods for many users at once do what the one-user methods do,
/// to the listed users only, and the audit insert keeps every event in
/// order past one chunk.
fn many_users_at_once(db: TestDatabase) {
    let store = open(&db);
    let (org, other_org, users) = write(&store, |tx| {
        let org = add_org(tx, "Acme");
        let other_org = add_org(tx, "Beta");
        let mut users = Vec::new();
        for i in 0..4 {
            let user = add_user(tx, &format!("u{i}@example.com")).id;
            give_everything(tx, user, [org.id, other_org.id])?;
            users.push(user);
        }
        // the first three are members of Acme, the last only of Beta
        for &user in &users[..3] {
            tx.insert_membership(&Membership::new(user, org.id))?;
        }
        tx.insert_membership(&Membership::new(users[3], other_org.id))?;
        Ok((org.id, other_org.id, users))
    });
    let members = read(&store, |tx| Ok(tx.memberships_in_org(&users, org)?));
    let member_ids: Vec<UserId> = members.iter().map(|m| m.user_id).collect();
    assert_eq!(member_ids, users[..3]);
    assert!(members.iter().all(|m| m.org_id == org));
    assert!(read(&store, |tx| Ok(tx.memberships_in_org(&[], org)?)).is_empty());

    let reset = [users[0], users[2]];
    let revoked = write(&store, |tx| {
        tx.lock_users(&reset)?;
        tx.delete_authenticators_of(&reset)?;
        tx.delete_email_factors_of(&reset)?;
        tx.delete_recovery_codes_of(&reset)?;
        tx.reset_failures_of(&reset, FailureKind::Code)?;
        Ok(tx.revoke_sessions_of(&reset, Timestamp(T0.0 + 1))?)
    });
    assert_eq!(revoked, 4, "both sessions of both users, in both orgs");
    for &user in &reset {
        assert_eq!(
            factors_left(&store, user),
            (false, false, false, 0, 0, 1),
            "user {user:?}: the password failures stay"
        );
    }
    for &user in &[users[1], users[3]] {
        assert_eq!(factors_left(&store, user), (true, true, true, 1, 1, 1));
    }
    read(&store, |tx| {
        for &user in &users {
            for org_id in [org, other_org] {
                let session = tx
                    .session_by_token_hash(&format!("s-{}-{}", user.0, org_id.0))?
                    .expect("the session stays, revoked or not");
                assert_eq!(session.revoked_at.is_some(), reset.contains(&user));
            }
        }
        Ok(())
    });

    // one past a chunk of events
    let events: Vec<NewAuditEvent> = (0..1001)
        .map(|i| {
            event(
                T0.0 + i,
                Some(org),
                None,
                Some(users[i as usize % 4]),
                AuditAction::MfaReset,
            )
        })
        .collect();
    write(&store, |tx| Ok(tx.insert_audits(&events)?));
    let (stored, total) = read(&store, |tx| {
        Ok(tx.audit_events(&AuditFilter::default(), 0, 2000)?)
    });
    assert_eq!(total, 1001);
    let stored: Vec<NewAuditEvent> = stored
        .into_iter()
        .rev()
        .map(|e| NewAuditEvent {
            at: e.at,
            org_id: e.org_id,
            actor_user_id: e.actor_user_id,
            target_user_id: e.target_user_id,
            action: e.action,
            detail: e.detail,
            client: e.client,
        })
        .collect();
    assert_eq!(stored, events, "oldest first, as inserted");
}

/// Confirmed email changes before the cut go, oldest first and at most
/// `limit`; pending ones stay, expired or not.
fn confirmed_email_changes_are_deleted(db: TestDatabase) {
    let store = open(&db);
    let at = |secs: i64| Timestamp(T0.0 + secs);
    let users = write(&store, |tx| {
        Ok((0..4)
            .map(|n| add_user(tx, &format!("u{n}@example.com")).id)
            .collect::<Vec<_>>())
    });
    write(&store, |tx| {
        for (n, user) in users.iter().enumerate() {
            let change = tx.put_email_change(
                *user,
                &format!("n{n}@example.com"),
                &format!("tok-{n}"),
                at(0),
                at(60),
            )?;
            // u0 confirmed at 10, u1 at 20, u2 at 100 (the cut); u3 pending.
            if let Some(confirmed) = [Some(10), Some(20), Some(100), None][n] {
                tx.consume_email_change(change.id, at(confirmed))?;
            }
        }
        Ok(())
    });
    let present = || {
        read(&store, |tx| {
            let mut found = Vec::new();
            for n in 0..4 {
                if tx
                    .email_change_by_token_hash(&format!("tok-{n}"))?
                    .is_some()
                {
                    found.push(n);
                }
            }
            Ok(found)
        })
    };
    let delete = |limit| {
        write(&store, |tx| {
            Ok(tx.delete_confirmed_email_changes(at(100), limit)?)
        })
    };
    assert_eq!(delete(1), 1);
    assert_eq!(present(), [1, 2, 3], "the oldest first");
    assert_eq!(delete(10), 1);
    assert_eq!(present(), [2, 3]);
    assert_eq!(delete(10), 0);
}

/// The times of every audit event, in order.
fn audit_times(store: &DbStore) -> Vec<i64> {
    let (events, _) = read(store, |tx| {
        Ok(tx.audit_events(&AuditFilter::default(), 0, 100)?)
    });
    let mut times: Vec<i64> = events.iter().map(|e| e.at.0).collect();
    times.sort_unstable();
    times
}

/// Audit events before the cut go, oldest first and at most `limit`.
fn old_audit_events_are_deleted(db: TestDatabase) {
    let store = open(&db);
    write(&store, |tx| {
        // Inserted out of time order, as by processes whose clocks differ.
        for at in [30, 10, 20, 100, 40] {
            tx.insert_audit(&event(
                at,
                Some(OrgId(1)),
                None,
                None,
                AuditAction::LoginFailed,
            ))?;
        }
        Ok(())
    });
    let times = || audit_times(&store);
    let delete = |limit| {
        write(&store, |tx| {
            Ok(tx.delete_audit_events_before(Timestamp(40), limit)?)
        })
    };
    assert_eq!(delete(2), 2);
    assert_eq!(times(), [30, 40, 100], "the oldest first");
    assert_eq!(delete(2), 1);
    assert_eq!(times(), [40, 100], "at the cut: kept");
    assert_eq!(delete(2), 0);
}

/// Only the events of password attempts at addresses no user has (no
/// org, actor or target, and one of the two actions) go, before the cut,
/// oldest first and at most `limit`: an org's events, or a user's, of the
/// same actions and times stay.
fn anonymous_audit_events_are_deleted(db: TestDatabase) {
    let store = open(&db);
    let user = write(&store, |tx| Ok(add_user(tx, "a@example.com").id));
    write(&store, |tx| {
        for at in [30, 10, 20, 100] {
            tx.insert_audit(&event(at, None, None, None, AuditAction::LoginFailed))?;
        }
        tx.insert_audit(&event(
            15,
            None,
            None,
            None,
            AuditAction::RefusedWhileLockedOut,
        ))?;
        // Not anonymous, or not a password attempt: kept.
        tx.insert_audit(&event(
            5,
            Some(OrgId(1)),
            None,
            None,
            AuditAction::LoginFailed,
        ))?;
        tx.insert_audit(&event(5, None, None, Some(user), AuditAction::LoginFailed))?;
        tx.insert_audit(&event(5, None, None, None, AuditAction::UserDeleted))?;
        Ok(())
    });
    let times = || audit_times(&store);
    let delete = |limit| {
        write(&store, |tx| {
            Ok(tx.delete_anonymous_audit_events_before(Timestamp(30), limit)?)
        })
    };
    assert_eq!(delete(2), 2);
    assert_eq!(times(), [5, 5, 5, 20, 30, 100], "the oldest first");
    assert_eq!(delete(5), 1);
    assert_eq!(times(), [5, 5, 5, 30, 100], "at the cut: kept");
    assert_eq!(delete(5), 0);
}

/// A user's failures are forgotten after a quiet spell: the next failure
/// after `forget_before` counts one, not one more.
fn failures_are_forgotten(db: TestDatabase) {
    let store = open(&db);
    let user = write(&store, |tx| Ok(add_user(tx, "a@example.com").id));
    let subject = FailureSubject::User(user, FailureKind::Code);
    let fail = |now: i64, forget_before: i64| {
        write(&store, |tx| {
            Ok(tx
                .increment_failures(subject, Timestamp(now), Timestamp(forget_before))?
                .failures)
        })
    };
    assert_eq!(fail(100, 0), 1);
    assert_eq!(fail(200, 100), 2, "at the cut: kept");
    assert_eq!(fail(300, 201), 1, "after the cut: forgotten");
    assert_eq!(fail(400, 0), 2);
}

/// Password failures are counted per address, under a keyed hash of the
/// email (never the email itself), whether a user has it or not; they are
/// forgotten, deleted and reset.
fn password_failures_by_address(db: TestDatabase) {
    let store = open(&db);
    write(&store, |tx| Ok(add_user(tx, "known@example.com")));
    let nobody = FailureSubject::Email("nobody@example.com");
    let other = FailureSubject::Email("other@example.com");
    let known = FailureSubject::Email("known@example.com");
    let fail = |subject, now: i64| {
        write(&store, |tx| {
            Ok(tx.increment_failures(subject, Timestamp(now), Timestamp(0))?)
        })
    };
    assert_eq!(fail(nobody, 10).failures, 1);
    assert_eq!(fail(nobody, 20).failures, 2);
    assert_eq!(fail(other, 30).failures, 1, "emails are counted apart");
    let until = Timestamp(500);
    write(&store, |tx| Ok(tx.set_locked_until(nobody, Some(until))?));
    assert_eq!(
        fail(nobody, 40),
        FailureState {
            failures: 3,
            locked_until: Some(until)
        }
    );
    let keys = raw_texts(
        &db,
        "SELECT email_key AS value FROM password_failures ORDER BY email_key",
    );
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| !k.contains('@')), "{keys:?}");

    let delete = |before: i64, limit| {
        write(&store, |tx| {
            Ok(tx.delete_forgotten_password_failures(Timestamp(before), limit)?)
        })
    };
    assert_eq!(delete(30, 10), 0, "at the cut: kept");
    assert_eq!(delete(41, 1), 1, "the oldest first");
    assert_eq!(
        fail(other, 50).failures,
        1,
        "deleted: counting starts again"
    );
    assert_eq!(fail(nobody, 60).failures, 4, "the other stayed");

    // A known address counts alike, and a reset clears its counter only.
    assert_eq!(fail(known, 70).failures, 1);
    assert_eq!(fail(known, 80).failures, 2);
    write(&store, |tx| Ok(tx.reset_failures(known)?));
    assert_eq!(fail(known, 90).failures, 1, "reset: counting starts again");
    assert_eq!(fail(nobody, 100).failures, 5, "other addresses keep theirs");
}

/// What a login reads first, in one statement, is what the two reads it
/// stands for return: no user, a user without memberships, with two.
fn user_with_memberships_by_email(db: TestDatabase) {
    let store = open(&db);
    let (user, lone) = write(&store, |tx| {
        let user = add_user(tx, "a@example.com");
        let lone = add_user(tx, "lone@example.com");
        for name in ["Second", "First"] {
            let org = add_org(tx, name);
            tx.insert_membership(&Membership::new(user.id, org.id))?;
        }
        Ok((user, lone))
    });
    let both = |email: &str| {
        read(&store, |tx| {
            let together = tx.user_with_memberships_by_email(email)?;
            let apart = match tx.user_by_email(email)? {
                Some(u) => {
                    let memberships = tx.memberships_of_user(u.id)?;
                    Some((u, memberships))
                }
                None => None,
            };
            assert_eq!(together, apart, "{email}");
            Ok(together)
        })
    };
    assert_eq!(both("nobody@example.com"), None);
    let (found, memberships) = both("lone@example.com").expect("lone");
    assert_eq!((found.id, memberships.len()), (lone.id, 0));
    let (found, memberships) = both("A@example.com").expect("a");
    assert_eq!(found.id, user.id);
    assert_eq!(memberships.len(), 2);
    assert!(memberships[0].org_id < memberships[1].org_id, "by org id");
}

backend_tests!(
    user_with_memberships_by_email,
    failures_are_forgotten,
    password_failures_by_address,
    orgs_crud,
    users_crud,
    duplicate_email_is_a_unique_violation,
    search_org_users,
    memberships,
    reads_for_update,
    authenticator_lifecycle,
    accept_totp_step_is_monotonic,
    email_factor,
    email_codes,
    recovery_codes,
    sessions,
    ended_sessions_are_deleted,
    failure_counters,
    lock_failure_state_and_authenticator,
    email_changes,
    confirmed_email_changes_are_deleted,
    audit,
    old_audit_events_are_deleted,
    anonymous_audit_events_are_deleted,
    delete_user_cascades,
    delete_org_cascades_memberships,
    rollback_on_err_leaves_nothing,
    reads_cannot_write,
    failed_multi_user_reset_changes_nothing,
    many_users_at_once,
);

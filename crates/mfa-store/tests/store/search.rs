//! The admin's user search (`search_org_users`) reads each membership's
//! copy of its user's search text: the copy follows every write of a user
//! or membership, the counts are exact, and the migration fills it.

use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use mfa_core::{Membership, MfaError, MfaResult, OrgId, Store, StoreTx, User, UserId};
use mfa_store::DbStore;
use mfa_store::test_support::TestDatabase;

use crate::support::*;

fn ids(users: &[User]) -> Vec<UserId> {
    users.iter().map(|u| u.id).collect()
}

/// The ids found for `term` in `org` (one page of 100) and the total.
fn find(store: &DbStore, org: OrgId, term: &str) -> (Vec<UserId>, u64) {
    read(store, |tx| {
        let (found, total) = tx.search_org_users(org, Some(term), 0, 100)?;
        Ok((ids(&found), total))
    })
}

/// A user who is a member of `orgs`.
fn member_of(
    tx: &mut dyn StoreTx,
    email: &str,
    first: &str,
    last: &str,
    orgs: &[OrgId],
) -> MfaResult<User> {
    let user = tx.insert_user(&new_user(email, first, last))?;
    for org in orgs {
        tx.insert_membership(&Membership::new(user.id, *org))?;
    }
    Ok(user)
}

fn rename_is_searchable_in_every_org(db: TestDatabase) {
    let store = open(&db);
    let (a, b, user, other) = write(&store, |tx| {
        let a = add_org(tx, "Acme").id;
        let b = add_org(tx, "Beta").id;
        let user = member_of(tx, "jane.doe@acme.example", "Jane", "Doe", &[a, b])?;
        let other = member_of(tx, "joe@acme.example", "Joe", "Bloggs", &[a])?;
        Ok((a, b, user, other))
    });
    for org in [a, b] {
        assert_eq!(find(&store, org, "doe"), (vec![user.id], 1));
    }

    // Last name, then email, each in its own transaction.
    let mut renamed = user.clone();
    renamed.last_name = "Roe".into();
    write(&store, |tx| Ok(tx.update_user(&renamed)?));
    for org in [a, b] {
        assert_eq!(find(&store, org, "roe"), (vec![user.id], 1), "new name");
        assert_eq!(find(&store, org, "jane"), (vec![user.id], 1));
        // The old email still holds "doe".
        assert_eq!(find(&store, org, "doe"), (vec![user.id], 1));
    }
    renamed.email = "Jane.Roe@Beta.example".into();
    write(&store, |tx| Ok(tx.update_user(&renamed)?));
    for org in [a, b] {
        assert_eq!(find(&store, org, "doe"), (vec![], 0), "old name and email");
        assert_eq!(find(&store, org, "acme.example"), {
            if org == a {
                (vec![other.id], 1)
            } else {
                (vec![], 0)
            }
        });
        assert_eq!(find(&store, org, "jane.roe@beta"), (vec![user.id], 1));
        assert_eq!(find(&store, org, "ROE"), (vec![user.id], 1));
    }

    // First name, and an update that changes no name (the copy stays).
    renamed.first_name = "Janet".into();
    write(&store, |tx| Ok(tx.update_user(&renamed)?));
    renamed.mfa_opt_in = true;
    write(&store, |tx| Ok(tx.update_user(&renamed)?));
    for org in [a, b] {
        assert_eq!(find(&store, org, "janet"), (vec![user.id], 1));
        assert_eq!(find(&store, org, "roe"), (vec![user.id], 1));
    }
    // The other member's copy is untouched.
    assert_eq!(find(&store, a, "bloggs"), (vec![other.id], 1));

    // A rename rolled back leaves the copies as they were.
    let mut rolled_back = renamed.clone();
    rolled_back.last_name = "Moe".into();
    let result: Result<(), _> = store.write(|tx| {
        tx.update_user(&rolled_back)?;
        Err(MfaError::Conflict("roll back".into()))
    });
    assert!(result.is_err());
    for org in [a, b] {
        assert_eq!(find(&store, org, "moe"), (vec![], 0));
        assert_eq!(find(&store, org, "roe"), (vec![user.id], 1));
    }
}

fn new_membership_is_searchable(db: TestDatabase) {
    let store = open(&db);
    let (a, b, user) = write(&store, |tx| {
        let a = add_org(tx, "Acme").id;
        let b = add_org(tx, "Beta").id;
        let user = member_of(tx, "ann@acme.example", "Ann", "Smith", &[a])?;
        Ok((a, b, user))
    });
    assert_eq!(find(&store, b, "smith"), (vec![], 0));

    // Renamed while a member of one org only, then added to a second: the
    // new membership copies the current name.
    let mut renamed = user.clone();
    renamed.last_name = "Jones".into();
    write(&store, |tx| {
        tx.update_user(&renamed)?;
        tx.insert_membership(&Membership::new(user.id, b))?;
        Ok(())
    });
    for org in [a, b] {
        assert_eq!(find(&store, org, "jones"), (vec![user.id], 1));
        assert_eq!(find(&store, org, "smith"), (vec![], 0));
    }
    read(&store, |tx| {
        let (all, total) = tx.search_org_users(b, None, 0, 10)?;
        assert_eq!((ids(&all), total), (vec![user.id], 1));
        Ok(())
    });

    // Removed and added again: found again.
    write(&store, |tx| Ok(tx.delete_membership(user.id, b)?));
    assert_eq!(find(&store, b, "jones"), (vec![], 0));
    write(&store, |tx| {
        Ok(tx.insert_membership(&Membership::new(user.id, b))?)
    });
    assert_eq!(find(&store, b, "jones"), (vec![user.id], 1));
}

fn counts_are_exact(db: TestDatabase) {
    let store = open(&db);
    // 45 members: 15 of them "Smith"; 5 outsiders, all "Smith", in
    // another org.
    let (org, members) = write(&store, |tx| {
        let org = add_org(tx, "Acme").id;
        let elsewhere = add_org(tx, "Beta").id;
        let mut members = Vec::new();
        for i in 0..45 {
            let last = if i % 3 == 0 { "Smith" } else { "Miller" };
            let email = format!("user{i}@acme.example");
            members.push(member_of(tx, &email, "Pat", last, &[org])?.id);
        }
        for i in 0..5 {
            let email = format!("outsider{i}@acme.example");
            member_of(tx, &email, "Pat", "Smith", &[elsewhere])?;
        }
        Ok((org, members))
    });
    let smiths: Vec<UserId> = members.iter().copied().step_by(3).collect();

    read(&store, |tx| {
        // Pages smaller than the matches: the count runs.
        for (term, expected) in [
            (Some("acme.example"), &members),
            (Some("PAT"), &members),
            (None, &members),
            (Some("smith"), &smiths),
        ] {
            let n = expected.len();
            // Every page of 10 by id, the last one partly full, and one
            // past the end.
            for offset in (0..=n + 10).step_by(10) {
                let (page, total) = tx.search_org_users(org, term, offset as u64, 10)?;
                let want = &expected[offset.min(n)..(offset + 10).min(n)];
                assert_eq!(ids(&page), want, "{term:?} from {offset}");
                assert_eq!(total, n as u64, "{term:?} from {offset}");
            }
            // A page that holds every match.
            let (page, total) = tx.search_org_users(org, term, 0, 100)?;
            assert_eq!((ids(&page), total), (expected.clone(), n as u64));
        }
        for offset in [0, 10, 100] {
            let (page, total) = tx.search_org_users(org, Some("nobody"), offset, 10)?;
            assert!(page.is_empty());
            assert_eq!(total, 0, "no match, offset {offset}");
        }
        // Exactly one page.
        let (page, total) = tx.search_org_users(org, Some("smith"), 0, 15)?;
        assert_eq!((page.len(), total), (15, 15));
        Ok(())
    });
}

fn wildcards_are_literal(db: TestDatabase) {
    let store = open(&db);
    let (org, users) = write(&store, |tx| {
        let org = add_org(tx, "Acme").id;
        let mut users = Vec::new();
        for (email, first, last) in [
            ("pct@acme.example", "100%", "Percent"),
            ("under@acme.example", "Under_score", "X"),
            ("back@acme.example", "Back\\slash", "X"),
            ("plain@acme.example", "Underscore", "Backslash"),
            ("star@acme.example", "Star*", "Question?"),
        ] {
            users.push(member_of(tx, email, first, last, &[org])?.id);
        }
        Ok((org, users))
    });
    assert_eq!(find(&store, org, "%"), (vec![users[0]], 1));
    assert_eq!(find(&store, org, "0%"), (vec![users[0]], 1));
    assert_eq!(find(&store, org, "_"), (vec![users[1]], 1));
    assert_eq!(find(&store, org, "r_s"), (vec![users[1]], 1));
    assert_eq!(find(&store, org, "under_"), (vec![users[1]], 1));
    assert_eq!(find(&store, org, "\\"), (vec![users[2]], 1));
    assert_eq!(find(&store, org, "k\\s"), (vec![users[2]], 1));
    assert_eq!(find(&store, org, "*"), (vec![users[4]], 1));
    assert_eq!(find(&store, org, "?"), (vec![users[4]], 1));
    assert_eq!(find(&store, org, "%%"), (vec![], 0));
    assert_eq!(find(&store, org, "\\%"), (vec![], 0));
    assert_eq!(
        find(&store, org, "d_e"),
        (vec![], 0),
        "_ is not any character"
    );
    assert_eq!(find(&store, org, "'"), (vec![], 0));
    assert_eq!(find(&store, org, "under"), (vec![users[1], users[3]], 2));
}

/// A rename and a new membership of the same user in racing transactions:
/// whichever commits first, the membership ends up with the new name.
fn rename_racing_new_membership(db: TestDatabase) {
    let store = open(&db);
    for rename_first in [false, true] {
        let (b, user) = write(&store, |tx| {
            let a = add_org(tx, "Acme").id;
            let b = add_org(tx, "Beta").id;
            let email = format!("race{rename_first}@acme.example");
            Ok((b, member_of(tx, &email, "Old", "Name", &[a])?))
        });
        let mut renamed = user.clone();
        renamed.first_name = "New".into();
        let barrier = Barrier::new(2);
        // The first transaction waits until the second has started, then
        // holds its writes a while before it commits.
        let first = |tx: &mut dyn StoreTx| -> MfaResult<()> {
            if rename_first {
                tx.update_user(&renamed)?;
            } else {
                tx.insert_membership(&Membership::new(user.id, b))?;
            }
            barrier.wait();
            thread::sleep(Duration::from_millis(200));
            Ok(())
        };
        let second = |tx: &mut dyn StoreTx| -> MfaResult<()> {
            if rename_first {
                tx.insert_membership(&Membership::new(user.id, b))?;
            } else {
                tx.update_user(&renamed)?;
            }
            Ok(())
        };
        thread::scope(|scope| {
            scope.spawn(|| write(&store, first));
            barrier.wait();
            // SQLite: waits for the first writer to finish.
            write(&store, second);
        });
        let (found, total) = find(&store, b, "new");
        assert!(found.contains(&user.id), "rename first: {rename_first}");
        assert_eq!(total, found.len() as u64);
        assert!(!find(&store, b, "old").0.contains(&user.id));
    }
}

/// `2026-11-23-000002_membership_search` copies the search text of every
/// existing user to their memberships.
fn migration_fills_the_copies(db: TestDatabase) {
    let (a, b, ann, joe) = {
        let store = open(&db);
        write(&store, |tx| {
            let a = add_org(tx, "Acme").id;
            let b = add_org(tx, "Beta").id;
            let ann = member_of(tx, "ann@acme.example", "Ann", "Smith", &[a, b])?.id;
            let joe = member_of(tx, "joe@beta.example", "Joé", "Bloggs", &[b])?.id;
            Ok((a, b, ann, joe))
        })
    };
    // Back to the schema before the migration, keeping the rows.
    undo_migration(&db, "2026-11-23-000002_membership_search");

    let store = open(&db);
    assert!(store.pending_migrations().expect("pending").is_empty());
    assert_eq!(find(&store, a, "smith"), (vec![ann], 1));
    assert_eq!(find(&store, b, "smith"), (vec![ann], 1));
    assert_eq!(find(&store, b, "JOÉ"), (vec![joe], 1));
    assert_eq!(find(&store, b, "example"), (vec![ann, joe], 2));
    assert_eq!(find(&store, a, "bloggs"), (vec![], 0));
}

/// "Ann Smi" finds Ann Smith (an audit typed a full name from the list
/// and found nobody), also for users written before the migration that
/// added the full name; a term still never spans two fields.
fn full_names_are_searchable(db: TestDatabase) {
    let (a, ann, joe, odysseus) = {
        let store = open(&db);
        let found = write(&store, |tx| {
            let a = add_org(tx, "Acme").id;
            let ann = member_of(tx, "ann@acme.example", "Ann", "Smith", &[a])?.id;
            let joe = member_of(tx, "joe@acme.example", "Joé", "Van Bloggs", &[a])?.id;
            // Lower-cased by Rust, with a final sigma: PostgreSQL's lower()
            // gives another text (an audit found such users lost by a
            // migration that used it).
            let odysseus = member_of(tx, "od@acme.example", "ΟΔΥΣΣΕΥΣ", "Λαέρτιος", &[a])?.id;
            Ok((a, ann, joe, odysseus))
        });
        assert_eq!(find(&store, found.0, "ann smi"), (vec![found.1], 1));
        assert_eq!(find(&store, found.0, "JOÉ VAN B"), (vec![found.2], 1));
        assert_eq!(find(&store, found.0, "ΟΔΥΣΣΕΥΣ ΛΑΈΡ"), (vec![found.3], 1));
        found
    };
    undo_migration(&db, "2026-11-29-000001_search_full_name");
    {
        let store =
            DbStore::connect(db.url(), mfa_store::test_support::test_options()).expect("connect");
        assert_eq!(find(&store, a, "ann smi"), (vec![], 0), "before it");
    }
    let store = open(&db);
    assert_eq!(find(&store, a, "ann smi"), (vec![ann], 1));
    assert_eq!(find(&store, a, "joé van bloggs"), (vec![joe], 1));
    assert_eq!(find(&store, a, "ΟΔΥΣΣΕΥΣ ΛΑΈΡ"), (vec![odysseus], 1));
    assert_eq!(find(&store, a, "οδυσσευς"), (vec![odysseus], 1));
    assert_eq!(find(&store, a, "smith joe"), (vec![], 0));
    assert_eq!(find(&store, a, "smith\u{1f}joe"), (vec![], 0));
}

backend_tests!(
    full_names_are_searchable,
    rename_is_searchable_in_every_org,
    new_membership_is_searchable,
    counts_are_exact,
    wildcards_are_literal,
    rename_racing_new_membership,
    migration_fills_the_copies,
);

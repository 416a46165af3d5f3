//! Two requests about one user, org or membership, interleaved inside
//! PostgreSQL, where write transactions run side by side (SQLite runs them
//! one after the other, so these orders cannot occur there). The test
//! holds a row lock of its own to stop the first request at a known
//! statement, sends the second while the first waits, and lets both go
//! on: every factor change, code check and login, and every write of a
//! user, org or membership row, takes the row's lock before it reads what
//! it decides on, so the second always reads what the first committed.
//!
//! Runs when `MFA_TEST_DATABASE_URL` is set; otherwise prints a skipped line.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::{audit_count, challenged_user, partial, verify};
use crate::helpers::{Answer, PASSWORD, TestServer, ids_of};

/// A row lock held by a transaction of the test's own until dropped.
struct RowLock {
    release: Option<mpsc::Sender<()>>,
    holder: Option<thread::JoinHandle<()>>,
}

impl RowLock {
    /// Run `locking` (a `SELECT … FOR …` of one row, `$1` the user's id)
    /// in a transaction that stays open until the lock is dropped.
    fn hold(url: &str, locking: &'static str, user: i64) -> RowLock {
        RowLock::hold_with(url, move |conn| {
            let rows = diesel::sql_query(locking)
                .bind::<BigInt, _>(user)
                .execute(conn)?;
            assert_eq!(rows, 1, "the row to lock exists");
            Ok(())
        })
    }

    /// `EXCLUSIVE` on a whole table: plain reads go on, every row lock
    /// and write waits.
    fn hold_table(url: &str, table: &'static str) -> RowLock {
        RowLock::hold_table_in(url, table, "EXCLUSIVE")
    }

    /// `ACCESS EXCLUSIVE` on a whole table: even plain reads wait.
    fn hold_table_from_readers(url: &str, table: &'static str) -> RowLock {
        RowLock::hold_table_in(url, table, "ACCESS EXCLUSIVE")
    }

    fn hold_table_in(url: &str, table: &'static str, mode: &'static str) -> RowLock {
        RowLock::hold_with(url, move |conn| {
            diesel::sql_query(format!("LOCK TABLE {table} IN {mode} MODE")).execute(conn)?;
            Ok(())
        })
    }

    fn hold_with(
        url: &str,
        lock: impl FnOnce(&mut PgConnection) -> diesel::QueryResult<()> + Send + 'static,
    ) -> RowLock {
        let url = url.to_string();
        let (locked_tx, locked) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let holder = thread::spawn(move || {
            let mut conn = PgConnection::establish(&url).expect("PostgreSQL");
            conn.transaction(|conn| {
                lock(conn)?;
                locked_tx.send(()).unwrap();
                // Dropped sender or a message: either way, let go.
                let _ = released.recv();
                diesel::QueryResult::Ok(())
            })
            .expect("the lock's transaction");
        });
        locked.recv().expect("the lock was taken");
        RowLock {
            release: Some(release),
            holder: Some(holder),
        }
    }
}

impl Drop for RowLock {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(holder) = self.holder.take() {
            let _ = holder.join();
        }
    }
}

#[derive(QueryableByName)]
struct Waiting {
    #[diesel(sql_type = Integer)]
    n: i32,
}

/// Wait until `n` sessions of the database wait for a lock, or `request`
/// has finished without waiting (a missing lock: the test then fails on
/// its answers), for at most ten seconds.
async fn until_waiting(url: &str, n: i32, request: &JoinHandle<Answer>) {
    let mut conn = PgConnection::establish(url).expect("PostgreSQL");
    for _ in 0..1000 {
        let waiting = diesel::sql_query(
            "SELECT count(*)::int AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .get_result::<Waiting>(&mut conn)
        .expect("pg_stat_activity")
        .n;
        if waiting >= n || request.is_finished() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} requests never waited for a lock");
}

/// The locks a test holds: a user's row (as a code check or a factor
/// change takes it), an authenticator's, an org's and a membership's.
const USER_ROW: &str = "SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE";
const AUTHENTICATOR_ROW: &str = "SELECT user_id FROM authenticators WHERE user_id = $1 FOR UPDATE";
const ORG_ROW: &str = "SELECT id FROM orgs WHERE id = $1 FOR NO KEY UPDATE";
const MEMBERSHIP_ROW: &str = "SELECT user_id FROM memberships WHERE user_id = $1 FOR NO KEY UPDATE";

/// One request: method, path, bearer token and JSON body.
struct Call<'a> {
    method: &'a str,
    path: String,
    token: Option<&'a str>,
    body: Option<Value>,
}

fn call<'a>(
    method: &'a str,
    path: impl Into<String>,
    token: Option<&'a str>,
    body: Option<Value>,
) -> Call<'a> {
    Call {
        method,
        path: path.into(),
        token,
        body,
    }
}

/// Send one request in the background.
fn send(s: &TestServer, call: Call<'_>) -> JoinHandle<Answer> {
    let mut req = s.client.request(
        reqwest::Method::from_bytes(call.method.as_bytes()).unwrap(),
        s.url(&call.path),
    );
    if let Some(token) = call.token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = call.body {
        req = req.json(&body);
    }
    tokio::spawn(async move { TestServer::answer(req.send().await.expect("request")).await })
}

/// A password login into `org` (test users share [`PASSWORD`]).
fn login_into(email: &str, org: i64) -> Call<'static> {
    call(
        "POST",
        "/user/auth/login",
        None,
        Some(json!({"email": email, "password": PASSWORD, "orgId": org})),
    )
}

/// Hold `locking` on the row of `id`, send `first`, send `second` once the
/// first waits for a lock, then let the row go: both answers, in order.
async fn interleave(
    s: &TestServer,
    url: &str,
    locking: &'static str,
    id: i64,
    first: Call<'_>,
    second: Call<'_>,
) -> (Answer, Answer) {
    interleave_under(s, url, RowLock::hold(url, locking, id), first, second).await
}

/// [`interleave`] under a lock already taken.
async fn interleave_under(
    s: &TestServer,
    url: &str,
    lock: RowLock,
    first: Call<'_>,
    second: Call<'_>,
) -> (Answer, Answer) {
    let first = send(s, first);
    until_waiting(url, 1, &first).await;
    let second = send(s, second);
    until_waiting(url, 2, &second).await;
    drop(lock);
    (first.await.unwrap(), second.await.unwrap())
}

/// A server on PostgreSQL, its database's URL and a superadmin's token;
/// `None` (the test skipped) without `MFA_TEST_DATABASE_URL`.
async fn server() -> Option<(TestServer, String, String)> {
    let s = TestServer::postgres().await?;
    let url = s.database().url().to_string();
    let root = s.root().await;
    Some((s, url, root))
}

/// A confirmation that read the pending secret A, then waited, must not
/// mark verified the secret B that a "generate" replaced A with meanwhile:
/// the user's app holds A, and would be locked out.
#[tokio::test]
async fn a_confirmation_verifies_the_secret_it_checked() {
    let Some((s, url, root)) = server().await else {
        return;
    };
    let email = "ada@example.com";
    let id = s.create_user(&root, email, false).await;
    let token = s.login(email, PASSWORD).await.token;
    let scanned = s.start_authenticator(&token).await;

    let (confirm, generate) = interleave(
        &s,
        &url,
        USER_ROW,
        id,
        call(
            "POST",
            "/user/users/mfa/validateCode",
            Some(&token),
            Some(json!({"code": s.totp(&scanned)})),
        ),
        call(
            "POST",
            "/user/users/mfa/generateTempSecret",
            Some(&token),
            None,
        ),
    )
    .await;

    confirm.expect(204, None);
    // Refused: the session was resolved before the confirmation committed,
    // as one that had verified no factor, and the user now has one.
    generate.expect(403, Some("mfa_required"));
    // The verified secret is the scanned one: a challenge takes its code.
    s.put("/user/users/me/mfa", &token, json!({"mfaOptIn": true}))
        .await
        .expect(204, None);
    s.advance(30);
    let challenged = partial(&s, email).await;
    verify(&s, &challenged, "AUTHENTICATOR", &s.totp(&scanned))
        .await
        .expect(200, None);
}

/// A code check that read the authenticator, then waited, while an admin
/// reset deleted it, must not call the code a replay (an audit event and a
/// warning mail about an attack that did not happen): it sees the reset.
#[tokio::test]
async fn a_code_check_beside_a_reset_sees_the_reset() {
    let Some((s, url, root)) = server().await else {
        return;
    };
    let email = "grace@example.com";
    let (id, secret, _) = challenged_user(&s, &root, email).await;
    let challenged = partial(&s, email).await;

    let (reset, check) = interleave(
        &s,
        &url,
        AUTHENTICATOR_ROW,
        id,
        call(
            "PUT",
            format!("/users/{email}/mfa/resetQRCodeEnroll"),
            Some(&root),
            None,
        ),
        call(
            "POST",
            "/user/auth/mfa/verify",
            Some(&challenged),
            Some(json!({"method": "AUTHENTICATOR", "code": s.totp(&secret)})),
        ),
    )
    .await;

    assert_eq!(reset.ok(), &json!({"status": "ok"}));
    assert_ne!(
        check.error(),
        "invalid_code",
        "a code checked beside a reset was refused as a bad one: {:?}",
        check.body
    );
    assert!(check.status == 401 || check.status == 409, "{check:?}");
    assert_eq!(audit_count(&s, &root, id, "replay_refused").await, 0);
    assert_eq!(audit_count(&s, &root, id, "mfa_verify_failed").await, 0);
}

/// A login whose password was checked against the old hash while an admin
/// set a new password (ending every session) must not open a session once
/// the change has committed: whoever held the old password is out.
#[tokio::test]
async fn a_login_beside_a_password_change_opens_no_session() {
    let Some((s, url, root)) = server().await else {
        return;
    };
    let email = "ivy@example.com";
    let id = s.create_user(&root, email, false).await;

    let (change, login) = interleave(
        &s,
        &url,
        USER_ROW,
        id,
        call(
            "PUT",
            format!("/user/users/{id}"),
            Some(&root),
            Some(json!({"password": "a brand new password"})),
        ),
        call(
            "POST",
            "/user/auth/login",
            None,
            Some(json!({"email": email, "password": PASSWORD})),
        ),
    )
    .await;

    change.expect(200, None);
    if login.status == 200 {
        let token = login.body["token"].as_str().unwrap();
        let me = s.get("/user/users/me", token).await;
        panic!(
            "a login with the old password opened a session after the change \
             (the session answers {})",
            me.status
        );
    }
    login.expect(401, Some("invalid_credentials"));
    assert_eq!(audit_count(&s, &root, id, "login_failed").await, 1);
    s.login(email, "a brand new password").await;
}

/// A self-service password change proven with the current password while
/// an admin set a new one (ending every session) must not replace the
/// admin's: whoever held the old password would choose the next.
#[tokio::test]
async fn a_self_change_beside_an_admin_change_is_refused() {
    let Some((s, url, root)) = server().await else {
        return;
    };
    let email = "jo@example.com";
    let id = s.create_user(&root, email, false).await;
    let own = s.login(email, PASSWORD).await.token;

    let (admin, own_change) = interleave(
        &s,
        &url,
        USER_ROW,
        id,
        call(
            "PUT",
            format!("/user/users/{id}"),
            Some(&root),
            Some(json!({"password": "the admin's new password"})),
        ),
        call(
            "PUT",
            format!("/user/users/{id}"),
            Some(&own),
            Some(json!({"password": "the holder's new password", "currentPassword": PASSWORD})),
        ),
    )
    .await;

    admin.expect(200, None);
    own_change.expect(401, Some("invalid_credentials"));
    s.login(email, "the admin's new password").await;
}

/// Two admins change one org at once: MFA enforced by one, the org renamed
/// by the other, whose transaction read the org before the enforcement
/// committed. Both changes stay; before the fix the rename wrote back the
/// org as it had read it, and MFA was no longer enforced.
#[tokio::test]
async fn an_enforcement_beside_a_rename_is_kept() {
    let Some((s, url, root)) = server().await else {
        return;
    };
    let org = s.root_org;

    let (enforce, rename) = interleave(
        &s,
        &url,
        ORG_ROW,
        org,
        call(
            "PUT",
            "/user/org/mfa",
            Some(&root),
            Some(json!({"isMfaEnforced": true})),
        ),
        call(
            "PUT",
            format!("/user/org/{org}"),
            Some(&root),
            Some(json!({"name": "Renamed"})),
        ),
    )
    .await;

    enforce.expect(204, None);
    rename.expect(200, None);
    let o = s.get(&format!("/user/org/{org}"), &root).await;
    assert_eq!(o.ok()["name"], "Renamed");
    assert_eq!(o.ok()["isMfaEnforced"], true, "the enforcement was lost");
}

/// Two admins change one membership at once: the admin flag taken away by
/// one, MFA opted out by the other, whose transaction read the membership
/// first. Both changes stay; before the fix the opt-out wrote the admin
/// flag back.
#[tokio::test]
async fn a_demotion_beside_an_opt_out_is_kept() {
    let Some((s, url, root)) = server().await else {
        return;
    };
    let id = s.create_user(&root, "kai@example.com", true).await;
    let path = format!("/user/users/{id}/membership");

    let (demote, opt_out) = interleave(
        &s,
        &url,
        MEMBERSHIP_ROW,
        id,
        call("PUT", &path, Some(&root), Some(json!({"isAdmin": false}))),
        call("PUT", &path, Some(&root), Some(json!({"mfaOptOut": true}))),
    )
    .await;

    demote.expect(204, None);
    opt_out.expect(204, None);
    let m = s
        .get(&format!("/user/org/{}/user/{id}", s.root_org), &root)
        .await;
    assert_eq!(m.ok()["isAdmin"], false, "the demotion was lost");
    assert_eq!(m.ok()["mfaOptOut"], true);
}

/// Two admins demote each other at once, the org's only two. The test
/// holds the memberships table, so both requests pass their session check
/// and wait at their first membership lock. Without the org's lock, both
/// then counted the other as the admin who stays, and both demotions went
/// through. With it, the second runs after the first committed, and finds
/// its own admin demoted: `403 forbidden` (every admin's write reads its
/// caller's rights under the org's lock), and one admin is left.
#[tokio::test]
async fn two_admins_demoting_each_other_leave_one() {
    let Some((s, url, root)) = server().await else {
        return;
    };
    let (org, ann, ann_token) = s
        .org_with_sole_admin(&root, "Pair", "ann@pair.example")
        .await;
    let ben = s.create_user(&ann_token, "ben@pair.example", true).await;
    let ben_token = s.login_org("ben@pair.example", PASSWORD, org).await.token;
    let demote = json!({"isAdmin": false});

    let (first, second) = interleave_under(
        &s,
        &url,
        RowLock::hold_table(&url, "memberships"),
        call(
            "PUT",
            format!("/user/users/{ben}/membership"),
            Some(&ann_token),
            Some(demote.clone()),
        ),
        call(
            "PUT",
            format!("/user/users/{ann}/membership"),
            Some(&ben_token),
            Some(demote),
        ),
    )
    .await;

    first.expect(204, None);
    second.expect(403, Some("forbidden"));
    let admins = s.get(&format!("/user/users/admins/{org}"), &root).await;
    assert_eq!(ids_of(admins.ok()), [ann]);
}

/// A login that read its org, then waited (the test holds the recovery
/// codes' table, which the login reads next and an org's deletion never
/// touches), while a superadmin deleted the org. Before, the deletion
/// committed meanwhile and the login's session insert failed on the
/// missing org: `404 not_found` "record not found", outside the login's
/// contract (an audit saw 3 in 480 racing logins). Now the login keeps the
/// org from deletion once read: the deletion waits for it, and the
/// session goes with the org.
#[tokio::test]
async fn a_login_keeps_its_org_until_the_session_is_in() {
    let Some((s, url, root)) = server().await else {
        return;
    };
    let email = "dora@doomed.example";
    let (org, _, _) = s.org_with_admin(&root, "Doomed", email).await;

    let (login, deletion) = interleave_under(
        &s,
        &url,
        RowLock::hold_table_from_readers(&url, "recovery_codes"),
        login_into(email, org),
        call("DELETE", format!("/user/org/{org}"), Some(&root), None),
    )
    .await;

    login.expect(200, None);
    deletion.expect(204, None);
    let token = login.body["token"].as_str().unwrap();
    s.get("/user/users/me", token)
        .await
        .expect(401, Some("unauthorized"));
    s.call(
        "POST",
        "/user/auth/login",
        None,
        Some(json!({"email": email, "password": PASSWORD, "orgId": org})),
    )
    .await
    .expect(403, Some("forbidden"));
}

/// An admin creating a user in their org, beside a superadmin deleting
/// the org: the creation keeps the org once read (the test holds the users
/// table against inserts, which the creation makes next and a deletion
/// never does), so the deletion waits and takes the new membership with
/// it. Before, the deletion committed meanwhile and the membership's
/// insert failed on the missing org: `404 not_found` "record not found"
/// (a second audit saw 13 in 30 such races).
#[tokio::test]
async fn a_user_created_beside_its_orgs_deletion() {
    let Some((s, url, root)) = server().await else {
        return;
    };
    let (org, _, admin) = s
        .org_with_admin(&root, "Doomed", "dora@doomed.example")
        .await;
    let new_user = json!({"email": "new@doomed.example", "firstName": "New",
                          "lastName": "User", "password": PASSWORD});

    let (created, deletion) = interleave_under(
        &s,
        &url,
        RowLock::hold_table(&url, "users"),
        call("POST", "/user/users", Some(&admin), Some(new_user)),
        call("DELETE", format!("/user/org/{org}"), Some(&root), None),
    )
    .await;

    created.expect(201, None);
    deletion.expect(204, None);
    s.get("/user/users/me", &admin)
        .await
        .expect(401, Some("unauthorized"));
}

/// A member logging in while an admin deactivates them, removes them
/// from the org, or a superadmin removes them from every org: the login
/// holds the membership it logs in through until its session is in (the
/// test holds the recovery codes against readers, which the login reads
/// right after), so the change waits and ends the new session with the
/// others. Before, the change committed meanwhile and ended the sessions
/// it saw, not the login's, which came back to life when the membership
/// was restored (an audit saw 16 of 100 such races).
#[tokio::test]
async fn a_login_beside_the_end_of_its_membership() {
    let Some((s, url, root)) = server().await else {
        return;
    };
    let (org, _, admin) = s
        .org_with_admin(&root, "Leaving", "lea@leaving.example")
        .await;
    let root_in_org = s
        .login_org(crate::helpers::ROOT_EMAIL, PASSWORD, org)
        .await
        .token;
    for (i, change) in ["deactivate", "remove", "remove from all orgs"]
        .into_iter()
        .enumerate()
    {
        let email = format!("m{i}@leaving.example");
        let member = s.create_user(&admin, &email, false).await;
        let end = match change {
            "deactivate" => call(
                "PUT",
                format!("/user/users/{member}/membership"),
                Some(&admin),
                Some(json!({"isActive": false})),
            ),
            "remove" => call(
                "DELETE",
                format!("/user/org/{org}/user/{member}"),
                Some(&admin),
                None,
            ),
            _ => call(
                "DELETE",
                format!("/user/users/deleteFromAllOrgs/{email}"),
                Some(&root),
                None,
            ),
        };
        // Back as an active member: reactivated, or added again.
        let restore = if change == "deactivate" {
            call(
                "PUT",
                format!("/user/users/{member}/membership"),
                Some(&admin),
                Some(json!({"isActive": true})),
            )
        } else {
            call(
                "POST",
                format!("/user/org/{org}/user/{member}"),
                Some(&root_in_org),
                None,
            )
        };

        let (login, ended) = interleave_under(
            &s,
            &url,
            RowLock::hold_table_from_readers(&url, "recovery_codes"),
            login_into(&email, org),
            end,
        )
        .await;

        login.expect(200, None);
        assert!(ended.status < 300, "{change}: {ended:?}");
        let restored = send(&s, restore).await.unwrap();
        assert!(restored.status < 300, "{change}, restored: {restored:?}");
        let token = login.body["token"].as_str().unwrap();
        s.get("/user/users/me", token)
            .await
            .expect(401, Some("unauthorized"));
    }
}

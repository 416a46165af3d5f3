//! Kill -9 in the middle of a write stream: every transaction reported as
//! committed survives, and the SQLite file opens cleanly.
//!
//! The writer is this test binary itself, re-executed with a filter that
//! runs only `crash_child_writer` and an environment variable naming the
//! database; without that variable the child test does nothing.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use diesel::RunQueryDsl;
use mfa_core::{Membership, Store};
use mfa_store::DbStore;
use mfa_store::test_support::{TestDatabase, test_options};

use crate::support::*;

/// Names the database the child writes to; set only for the child.
const CHILD_ENV: &str = "MFA_STORE_CRASH_CHILD_DB";
/// How many commits the parent waits for before it kills the child.
const COMMITS_BEFORE_KILL: usize = 300;
/// Upper bound of the child's loop, far beyond what it reaches before the kill.
const CHILD_MAX_WRITES: usize = 1_000_000;
const TIMEOUT: Duration = Duration::from_secs(60);

/// The child: write users (with a membership, atomically) and report each
/// id on stdout only after its transaction committed.
#[test]
fn crash_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return; // run as a normal test: nothing to do
    };
    let store = DbStore::open(&format!("sqlite://{path}"), test_options()).expect("child: open");
    let org = write(&store, |tx| Ok(add_org(tx, "crash").id));
    // stdout directly, unbuffered per line: libtest does not capture this
    let mut out = std::io::stdout().lock();
    for n in 0..CHILD_MAX_WRITES {
        let id = store
            .write(|tx| {
                let user = tx.insert_user(&new_user(&format!("c{n}@example.com"), "C", "D"))?;
                tx.insert_membership(&Membership::new(user.id, org))?;
                Ok(user.id)
            })
            .expect("child: write");
        writeln!(out, "committed {}", id.0).expect("child: stdout");
        out.flush().expect("child: flush");
    }
}

#[derive(diesel::QueryableByName)]
struct IntegrityCheck {
    #[diesel(sql_type = diesel::sql_types::Text)]
    integrity_check: String,
}

#[test]
fn sigkill_mid_write_loses_nothing_committed() {
    let db = TestDatabase::sqlite();
    let path = db.sqlite_path().expect("sqlite").to_path_buf();
    drop(open(&db)); // migrated before the child starts

    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash::crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child writer");
    let stdout = child.stdout.take().expect("child stdout");
    let (sender, ids) = mpsc::channel::<i64>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("committed ") {
                let id = id.trim().parse().expect("an id");
                if sender.send(id).is_err() {
                    break;
                }
            }
        }
    });

    let mut committed = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while committed.len() < COMMITS_BEFORE_KILL {
        match ids.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(id) => committed.push(id),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the child reported {} commits within {TIMEOUT:?}, expected {COMMITS_BEFORE_KILL}",
                    committed.len()
                );
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert_eq!(
        status.signal(),
        Some(9),
        "killed mid-stream, not finished: {status:?}"
    );
    reader.join().expect("reader thread");
    committed.extend(ids.try_iter());

    // The file is consistent (the WAL is replayed on open)...
    let mut raw = raw_sqlite(&db);
    let check: Vec<IntegrityCheck> = diesel::sql_query("PRAGMA integrity_check")
        .load(&mut raw)
        .expect("integrity_check");
    assert_eq!(
        check
            .iter()
            .map(|c| c.integrity_check.as_str())
            .collect::<Vec<_>>(),
        vec!["ok"]
    );
    drop(raw);

    // ...and every reported commit is there, with its membership.
    let store = open(&db);
    let org = read(&store, |tx| Ok(tx.all_orgs()?))
        .into_iter()
        .find(|o| o.name == "crash")
        .expect("the child's org");
    let missing: Vec<i64> = read(&store, |tx| {
        let mut missing = Vec::new();
        for id in &committed {
            let user = mfa_core::UserId(*id);
            if tx.user(user)?.is_none() || tx.membership(user, org.id)?.is_none() {
                missing.push(*id);
            }
        }
        Ok(missing)
    });
    assert!(missing.is_empty(), "committed but lost: {missing:?}");
    let users = read(&store, |tx| Ok(tx.count_users()?));
    assert!(users >= committed.len() as u64);
    // the store is fully usable after the crash
    write(&store, |tx| Ok(add_user(tx, "after@example.com")));
    let _ = store.ping();
    eprintln!(
        "crash test: {} commits reported before SIGKILL, {users} users found",
        committed.len()
    );
}

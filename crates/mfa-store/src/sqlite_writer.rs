//! SQLite's writer: one thread runs every write transaction of the
//! process, and commits the ones that queue up together.
//!
//! SQLite has one writer at a time. When each request's own thread took
//! its turn at a mutex, the lock sat idle about as long as it was held,
//! waiting for the next thread in line to be scheduled (half the time of
//! an MFA verify run on two busy cores); one thread that stays busy while
//! transactions are queued has no such gaps. Its closures borrow from
//! their callers, who wait for them: `rayon_core`'s `install` runs such a
//! closure on the pool's thread.
//!
//! Group commit: a `COMMIT` writes the transaction's pages to the WAL
//! (about half of a verify's time on the writer, measured before commits
//! were synced) and syncs the file. While further write
//! transactions are queued, the writer runs each in a savepoint of one
//! `BEGIN IMMEDIATE` transaction and commits them together, at most
//! [`MAX_BATCH`] at a time, when the queue is empty. A caller gets its
//! result only after the commit of its batch; if that commit fails, every
//! transaction of the batch fails, as none of them was committed. A
//! transaction that fails rolls back its own savepoint, not its batch.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::Error;
use crate::sqlite::{self, Role};
use crate::store::TxError;

/// Most write transactions committed together: as many as a server's
/// 64 connections can have queued. Each commit syncs the WAL
/// (`synchronous = FULL`), and the writer waits for that sync; fewer syncs
/// per transaction gave MFA verify 16.0–16.5k/s against 14.9k/s with at
/// most 16 (docs/PERFORMANCE.md, sixteenth round).
const MAX_BATCH: usize = 64;

/// The writer thread and its connection.
pub(crate) struct SqliteWriter {
    thread: rayon_core::ThreadPool,
    state: Mutex<WriterState>,
    /// Write transactions submitted and not yet run on the writer thread:
    /// while there are any, an open batch is left for them to commit.
    queued: AtomicUsize,
    /// Batches committed (for tests of the batching).
    commits: AtomicU64,
}

struct WriterState {
    path: String,
    conn: SqliteConnection,
    batch: Option<Batch>,
}

/// An open `BEGIN IMMEDIATE` transaction holding finished write
/// transactions that wait for its commit.
struct Batch {
    outcome: Arc<Outcome>,
    transactions: usize,
}

/// Whether a batch committed; its callers wait for it.
#[derive(Default)]
struct Outcome {
    result: Mutex<Option<Result<(), String>>>,
    settled: Condvar,
}

impl Outcome {
    fn settle(&self, result: Result<(), String>) {
        *self.result.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        self.settled.notify_all();
    }

    fn wait(&self) -> Result<(), String> {
        let mut result = self.result.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(result) = result.as_ref() {
                return result.clone();
            }
            result = self
                .settled
                .wait(result)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The error of a transaction whose batch did not commit.
fn not_committed(message: &str) -> TxError {
    TxError::Db(DieselError::DatabaseError(
        DatabaseErrorKind::Unknown,
        Box::new(format!("the write was not committed: {message}")),
    ))
}

impl SqliteWriter {
    /// The writer for the database at `path`, on a connection of its own.
    pub(crate) fn start(path: &str) -> Result<SqliteWriter, Error> {
        let conn = writer_connection(path)?;
        let thread = rayon_core::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "sqlite-writer".into())
            .build()
            .map_err(|e| Error::Configuration(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteWriter {
            thread,
            state: Mutex::new(WriterState {
                path: path.to_string(),
                conn,
                batch: None,
            }),
            queued: AtomicUsize::new(0),
            commits: AtomicU64::new(0),
        })
    }

    /// Run `body` as one write transaction on the writer thread; its result
    /// once committed. A write asked for from inside another (on the writer
    /// thread) is refused: the writer would wait for itself, and every
    /// later write of the process with it, for good.
    pub(crate) fn write<T: Send>(
        &self,
        body: impl FnOnce(&mut SqliteConnection) -> Result<T, TxError> + Send,
    ) -> Result<T, TxError> {
        if self.thread.current_thread_index().is_some() {
            return Err(TxError::Db(DieselError::DatabaseError(
                DatabaseErrorKind::Unknown,
                Box::new(
                    "a write transaction was started inside another one: SQLite's writer \
                     would wait for itself; do the inner work in the outer transaction"
                        .to_string(),
                ),
            )));
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        let (result, pending) = self.thread.install(|| self.run(body));
        match pending {
            None => result,
            Some(outcome) => match outcome.wait() {
                Ok(()) => result,
                Err(message) => Err(not_committed(&message)),
            },
        }
    }

    /// Run `f` on the writer connection outside any batch (migrations, key
    /// rotation): an open batch is committed first.
    pub(crate) fn exclusive<T>(
        &self,
        f: impl FnOnce(&mut SqliteConnection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut state = self.lock();
        // A failed commit fails the batch's own callers, not this.
        let _ = state.commit_batch();
        f(&mut state.conn)
    }

    /// Batches committed so far.
    #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// A poisoned lock is taken: a panic ends its batch (see `run`), so the
    /// state is consistent.
    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// On the writer thread: run `body` in the batch, then commit the batch
    /// unless more transactions are queued to join it. The outcome to wait
    /// for when the result is not committed yet.
    fn run<T>(
        &self,
        body: impl FnOnce(&mut SqliteConnection) -> Result<T, TxError>,
    ) -> (Result<T, TxError>, Option<Arc<Outcome>>) {
        let mut state = self.lock();
        let ran = panic::catch_unwind(AssertUnwindSafe(|| state.run_in_batch(body)));
        let others = self.queued.fetch_sub(1, Ordering::SeqCst) - 1;
        let result = match ran {
            Ok(result) => result,
            Err(panicked) => {
                state.abort_batch("a write transaction panicked");
                drop(state);
                panic::resume_unwind(panicked);
            }
        };
        let Some(batch) = &state.batch else {
            return (result, None);
        };
        // A database error may have left the transaction unusable (SQLite
        // rolls it all back on some I/O errors): end the batch at once.
        let failed_in_database = matches!(result, Err(TxError::Db(_)));
        if others == 0 || batch.transactions >= MAX_BATCH || failed_in_database {
            let committed = state.commit_batch();
            self.commits.fetch_add(1, Ordering::Relaxed);
            return match (result, committed) {
                (Ok(value), Ok(())) => (Ok(value), None),
                (Ok(_), Err(message)) => (Err(not_committed(&message)), None),
                (Err(e), _) => (Err(e), None),
            };
        }
        match result {
            Ok(value) => (Ok(value), Some(Arc::clone(&batch.outcome))),
            // Rolled back to its savepoint: nothing of it waits for the commit.
            Err(e) => (Err(e), None),
        }
    }
}

impl Drop for SqliteWriter {
    fn drop(&mut self) {
        // Nothing is left open in practice: a batch stays open only while
        // transactions are queued, and they borrow the store.
        let _ = self.lock().commit_batch();
    }
}

impl WriterState {
    /// Run `body` in a savepoint of the open batch, opening one first.
    fn run_in_batch<T>(
        &mut self,
        body: impl FnOnce(&mut SqliteConnection) -> Result<T, TxError>,
    ) -> Result<T, TxError> {
        if self.batch.is_none() {
            // BEGIN IMMEDIATE takes the write lock up front (waiting for
            // other processes up to the busy timeout), so a transaction
            // never fails half-way on a lock upgrade.
            AnsiTransactionManager::begin_transaction_sql(&mut self.conn, "BEGIN IMMEDIATE")?;
            self.batch = Some(Batch {
                outcome: Arc::default(),
                transactions: 0,
            });
        }
        if let Some(batch) = &mut self.batch {
            batch.transactions += 1;
        }
        // Nested in the batch's transaction: a savepoint.
        self.conn.transaction(body)
    }

    /// Commit the open batch, if any, and tell its callers.
    fn commit_batch(&mut self) -> Result<(), String> {
        let Some(batch) = self.batch.take() else {
            return Ok(());
        };
        let committed =
            AnsiTransactionManager::commit_transaction(&mut self.conn).map_err(|e| e.to_string());
        if committed.is_err() {
            self.reconnect();
        }
        batch.outcome.settle(committed.clone());
        committed
    }

    /// Roll the open batch back (all of it) and fail its callers.
    fn abort_batch(&mut self, why: &str) {
        if let Some(batch) = self.batch.take() {
            // A new connection: closing the old one rolls back whatever
            // state its transaction was left in.
            self.reconnect();
            batch.outcome.settle(Err(why.to_string()));
        }
    }

    /// Replace the connection. If a new one cannot be had, the old one is
    /// kept, rolled back if it can be; writes fail until the file is back.
    fn reconnect(&mut self) {
        match writer_connection(&self.path) {
            Ok(conn) => self.conn = conn,
            Err(_) => {
                let _ = AnsiTransactionManager::rollback_transaction(&mut self.conn);
            }
        }
    }
}

fn writer_connection(path: &str) -> Result<SqliteConnection, Error> {
    let mut conn = SqliteConnection::establish(path)?;
    sqlite::configure(&mut conn, Role::Writer)?;
    Ok(conn)
}

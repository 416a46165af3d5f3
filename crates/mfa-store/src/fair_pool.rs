//! An r2d2 pool whose callers get connections in the order they asked.
//!
//! r2d2 hands a returned connection to whichever thread asks next: the
//! thread it wakes must take the pool's lock again, and a thread that just
//! arrived (or just returned a connection and starts its next request)
//! often takes the connection first. The woken thread then waits again, at
//! the back of the queue. With more threads than connections single
//! requests starve: PostgreSQL reads and verifications at 64 connections
//! had a p99 a third to a half higher than with this pool (figures in
//! docs/PERFORMANCE.md). The multi-second reads seen in the same runs
//! were PostgreSQL's own, with more busy backends than cores; a smaller
//! pool (`StoreOptions::pool_size`) is what removes those.
//!
//! Here only one caller at a time waits inside the pool: the holder of
//! `turn`, a mutex handed over first-come first-served (parking_lot's fair
//! unlock gives it to the longest waiter; no newcomer can take it in
//! between). A connection returned to the pool therefore goes to the
//! longest-waiting caller. Used for PostgreSQL, whose statements hold a
//! connection long enough that the hand-over costs little (see the
//! SQLite read pool in `store` for the other case).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use diesel::r2d2::{ManageConnection, Pool, PooledConnection};
use parking_lot::{Mutex, MutexGuard};

use crate::Error;

/// An r2d2 pool with first-come first-served checkout (see the module
/// docs).
pub(crate) struct FairPool<M: ManageConnection> {
    pool: Pool<M>,
    turn: Mutex<()>,
    timeout: Duration,
    /// The last wait ended without a connection while the pool had none
    /// at all: the database is not answering. Until a connection comes,
    /// callers wait [`UNREACHABLE_WAIT`] instead of the whole timeout.
    unreachable: AtomicBool,
}

/// How long a caller waits for a connection while the database is known
/// not to answer. Without it every request of an outage held a blocking
/// thread for the whole timeout, and those queued behind them waited two
/// or three timeouts for an answer (an audit saw 30 s with a 10 s bound).
/// r2d2 keeps trying to connect meanwhile, so the first connection after
/// the outage ends it.
pub(crate) const UNREACHABLE_WAIT: Duration = Duration::from_millis(100);

impl<M: ManageConnection> fmt::Debug for FairPool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.pool.state();
        f.debug_struct("FairPool")
            .field("connections", &state.connections)
            .field("idle_connections", &state.idle_connections)
            .finish()
    }
}

impl<M: ManageConnection> FairPool<M> {
    /// Serve `pool` in order; a caller waits at most `timeout` in all.
    pub(crate) fn new(pool: Pool<M>, timeout: Duration) -> FairPool<M> {
        FairPool {
            pool,
            turn: Mutex::new(()),
            timeout,
            unreachable: AtomicBool::new(false),
        }
    }

    /// A connection, after the callers that asked before.
    pub(crate) fn get(&self) -> Result<PooledConnection<M>, Error> {
        self.get_within(self.timeout)
    }

    /// [`FairPool::get`], waiting at most `timeout`.
    pub(crate) fn get_within(&self, timeout: Duration) -> Result<PooledConnection<M>, Error> {
        if self.unreachable.load(Ordering::Relaxed) {
            return self.get_while_unreachable();
        }
        let deadline = Instant::now() + timeout;
        let timed_out = || {
            Error::Pool(format!(
                "timed out after {} s waiting for a connection",
                timeout.as_secs()
            ))
        };
        let turn = self.turn.try_lock_until(deadline).ok_or_else(timed_out)?;
        // Found out while this caller waited for its turn.
        if self.unreachable.load(Ordering::Relaxed) {
            MutexGuard::unlock_fair(turn);
            return self.get_while_unreachable();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let got = self.pool.get_timeout(left);
        // No connection in the pool at all (lost ones are discarded, new
        // ones fail): not a busy pool but a database that does not answer.
        if got.is_err() && self.pool.state().connections == 0 {
            self.unreachable.store(true, Ordering::Relaxed);
        }
        MutexGuard::unlock_fair(turn);
        Ok(got?)
    }

    /// A connection if one comes within [`UNREACHABLE_WAIT`], which ends
    /// the outage; callers do not queue for their turn meanwhile.
    fn get_while_unreachable(&self) -> Result<PooledConnection<M>, Error> {
        match self.pool.get_timeout(UNREACHABLE_WAIT) {
            Ok(conn) => {
                self.unreachable.store(false, Ordering::Relaxed);
                Ok(conn)
            }
            Err(e) => Err(Error::Pool(format!(
                "the database did not answer the last wait for a connection either: {e}"
            ))),
        }
    }

    /// The most connections the pool holds.
    pub(crate) fn max_size(&self) -> u32 {
        self.pool.max_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    /// Connections that are plain numbers.
    #[derive(Debug)]
    struct Numbers(AtomicUsize);

    #[derive(Debug)]
    struct NoError;

    impl fmt::Display for NoError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("no error")
        }
    }

    impl std::error::Error for NoError {}

    impl ManageConnection for Numbers {
        type Connection = usize;
        type Error = NoError;
        fn connect(&self) -> Result<usize, NoError> {
            Ok(self.0.fetch_add(1, Ordering::Relaxed))
        }
        fn is_valid(&self, _: &mut usize) -> Result<(), NoError> {
            Ok(())
        }
        fn has_broken(&self, _: &mut usize) -> bool {
            false
        }
    }

    fn pool(size: u32, timeout: Duration) -> Arc<FairPool<Numbers>> {
        let pool = Pool::builder()
            .max_size(size)
            .min_idle(Some(size))
            .test_on_check_out(false)
            .build(Numbers(AtomicUsize::new(0)))
            .unwrap_or_else(|e| panic!("{e}"));
        Arc::new(FairPool::new(pool, timeout))
    }

    /// The starvation r2d2 alone allows: a thread that returns its
    /// connection and asks again at once takes it back before the thread
    /// that was already waiting for it. Here the waiter goes first, every
    /// time. (No timing: the waiter is known to be queued once it holds
    /// the turn.)
    #[test]
    fn a_waiting_caller_goes_before_one_that_asks_again() {
        let pool = pool(1, Duration::from_secs(30));
        for _ in 0..20 {
            let order = Arc::new(Mutex::new(Vec::new()));
            let held = pool.get().unwrap_or_else(|e| panic!("{e}"));
            let waiter = {
                let pool = pool.clone();
                let order = order.clone();
                thread::spawn(move || {
                    let conn = pool.get().unwrap_or_else(|e| panic!("{e}"));
                    order.lock().push("waiter");
                    drop(conn);
                })
            };
            let queued = (0..10_000).any(|_| {
                thread::sleep(Duration::from_millis(1));
                pool.turn.is_locked()
            });
            assert!(queued, "the waiter never took its turn");
            drop(held);
            let again = pool.get().unwrap_or_else(|e| panic!("{e}"));
            order.lock().push("asked again");
            drop(again);
            waiter
                .join()
                .unwrap_or_else(|_| panic!("the waiter panicked"));
            assert_eq!(*order.lock(), ["waiter", "asked again"]);
        }
    }

    /// Callers queued behind one that waits for a connection give up at
    /// their own deadline, not one timeout after the caller before them.
    #[test]
    fn callers_give_up_at_their_own_deadline() {
        const TIMEOUT: Duration = Duration::from_millis(300);
        let pool = pool(1, TIMEOUT);
        let held = pool.get().unwrap_or_else(|e| panic!("{e}"));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let pool = pool.clone();
                thread::spawn(move || {
                    let asked = Instant::now();
                    let result = pool.get().map(|_| ());
                    (result, asked.elapsed())
                })
            })
            .collect();
        for waiter in waiters {
            let (result, waited) = waiter.join().unwrap_or_else(|_| panic!("panicked"));
            assert!(matches!(result, Err(Error::Pool(_))), "{result:?}");
            assert!(waited >= TIMEOUT && waited < 2 * TIMEOUT, "{waited:?}");
        }
        drop(held);
        assert!(pool.get().is_ok());
    }

    /// Connections to a database that can be switched off (the flag
    /// says it is up); those made before it went are found broken when
    /// returned.
    #[derive(Debug)]
    struct Switchable(Arc<AtomicBool>);

    impl ManageConnection for Switchable {
        type Connection = ();
        type Error = NoError;
        fn connect(&self) -> Result<(), NoError> {
            if self.0.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(NoError)
            }
        }
        fn is_valid(&self, _: &mut ()) -> Result<(), NoError> {
            Ok(())
        }
        fn has_broken(&self, _: &mut ()) -> bool {
            !self.0.load(Ordering::SeqCst)
        }
    }

    /// A wait that ends with no connection at all marks the database
    /// unreachable: the next callers do not wait the whole timeout (an
    /// audit saw requests of an outage answered after three timeouts),
    /// and the first connection after it ends the outage.
    #[test]
    fn an_unreachable_database_is_not_waited_for_again() {
        let up = Arc::new(AtomicBool::new(true));
        let pool = Pool::builder()
            .max_size(1)
            .min_idle(Some(1))
            .test_on_check_out(false)
            // r2d2 retries a failed connect after at most half of this
            .connection_timeout(Duration::from_millis(200))
            .build(Switchable(up.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        let pool = FairPool::new(pool, Duration::from_millis(200));
        let conn = pool.get().unwrap_or_else(|e| panic!("{e}"));
        up.store(false, Ordering::SeqCst);
        drop(conn);

        let first = pool.get().map(|_| ());
        assert!(matches!(first, Err(Error::Pool(_))), "{first:?}");
        assert!(pool.unreachable.load(Ordering::Relaxed));
        match pool.get().map(|_| ()) {
            Err(Error::Pool(m)) => assert!(m.contains("the last wait"), "{m}"),
            other => panic!("{other:?}"),
        }

        up.store(true, Ordering::SeqCst);
        let back = (0..50).any(|_| pool.get().is_ok());
        assert!(back, "no connection after the database came back");
        assert!(!pool.unreachable.load(Ordering::Relaxed));
    }
}

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
}

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
        }
    }

    /// A connection, after the callers that asked before.
    pub(crate) fn get(&self) -> Result<PooledConnection<M>, Error> {
        let deadline = Instant::now() + self.timeout;
        let timed_out = || {
            Error::Pool(format!(
                "timed out after {} s waiting for a connection",
                self.timeout.as_secs()
            ))
        };
        let turn = self.turn.try_lock_until(deadline).ok_or_else(timed_out)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let got = self.pool.get_timeout(left);
        MutexGuard::unlock_fair(turn);
        Ok(got?)
    }

    /// The most connections the pool holds.
    pub(crate) fn max_size(&self) -> u32 {
        self.pool.max_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
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

    /// The starvation r2d2 alone allows: threads that return a connection
    /// and ask again at once. Each takes a connection `ROUNDS` times; the
    /// longest any single checkout waits must stay near the time the
    /// queue ahead of it takes.
    #[test]
    fn no_caller_waits_while_others_take_turns_again() {
        const THREADS: usize = 16;
        const ROUNDS: usize = 200;
        const HOLD: Duration = Duration::from_micros(200);
        let pool = pool(2, Duration::from_secs(30));
        let start = Arc::new(Barrier::new(THREADS));
        let begun = Instant::now();
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let pool = pool.clone();
                let start = start.clone();
                thread::spawn(move || {
                    start.wait();
                    let mut longest = Duration::ZERO;
                    for _ in 0..ROUNDS {
                        let asked = Instant::now();
                        let conn = pool.get().unwrap_or_else(|e| panic!("{e}"));
                        longest = longest.max(asked.elapsed());
                        thread::sleep(HOLD);
                        drop(conn);
                    }
                    longest
                })
            })
            .collect();
        let longest: Vec<Duration> = threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| panic!("a thread panicked")))
            .collect();
        let run = begun.elapsed();
        let worst = longest.into_iter().max().unwrap_or_default();
        // In order, a checkout waits while each thread ahead of it holds a
        // connection once: THREADS / 2 holds, which is `run / ROUNDS` as
        // measured (so a loaded machine moves the bound too): about 2.5 ms
        // here. The longest wait measured 3-6 ms in order, and 23-28 ms with
        // r2d2's own hand-over.
        let in_order = run / ROUNDS as u32;
        assert!(
            worst < 5 * in_order,
            "longest wait {worst:?}, in order about {in_order:?}"
        );
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
}

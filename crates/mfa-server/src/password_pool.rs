//! A small dedicated thread pool for the operations that run argon2id
//! (password login, recovery codes, setting a password).
//!
//! One argon2id verification takes ~15 ms of one core and as much memory as
//! its `m` parameter (7 MiB by default, 19 MiB with `m=19456,t=2`). On the
//! general blocking pool (hundreds of threads) a login storm would run as
//! many of them at once as there are requests: every core busy with
//! hashing, the database work of MFA verifications and reads queued behind
//! it, and one buffer per concurrent hash (over 1 GiB at 64 connections
//! with 19 MiB buffers, kept afterwards by the allocator's per-thread
//! arenas). Here they run on as many threads as there are cores; further
//! requests wait asynchronously in a queue, holding neither a worker nor a
//! blocking thread. The threads run at the lowest scheduling priority
//! (nice 19 on Linux), so that when hashing and short database work
//! compete for a core, the short work goes first: password logins get the
//! CPU the rest of the server leaves, and all of it when nothing else runs.
//! (On a host shared with other busy processes logins would get little; an
//! MFA server has the host to itself.)
//!
//! Throughput of password logins is unchanged: with one hash per core at a
//! time the cores are as busy as with more, and each hash gets a core to
//! itself.
//!
//! When no job has come for [`IDLE_AFTER`], the pool runs its idle hook
//! once (the server gives argon2's kept buffers back to the system there),
//! so the memory of a login storm is not held after it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::error::ApiError;

type Job = Box<dyn FnOnce() + Send + 'static>;
type IdleHook = Arc<dyn Fn() + Send + Sync + 'static>;

/// How long the pool waits without a job before it runs its idle hook. A
/// storm sends jobs every few milliseconds; a quiet server's next login
/// pays for the release with a few milliseconds of page faults.
pub const IDLE_AFTER: Duration = Duration::from_secs(1);

/// Scheduling priority of the pool's threads (`nice`): 0 is normal, 19 the
/// lowest. See docs/PERFORMANCE.md for MFA verify latency beside a login
/// flood.
pub const NICE: i32 = 19;

/// Threads that run password hashing, one job at a time each.
#[derive(Debug)]
pub struct PasswordPool {
    queue: Sender<Job>,
    threads: usize,
}

impl PasswordPool {
    /// A pool of `threads` threads (at least 1), named `argon2-N`, that
    /// runs `on_idle` once each time no job has come for `idle_after`.
    pub fn new(
        threads: usize,
        idle_after: Duration,
        on_idle: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<PasswordPool> {
        let threads = threads.max(1);
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let on_idle: IdleHook = Arc::new(on_idle);
        for i in 0..threads {
            let receiver = receiver.clone();
            let on_idle = on_idle.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(&receiver, idle_after, on_idle.as_ref()))?;
        }
        Ok(PasswordPool {
            queue: sender,
            threads,
        })
    }

    /// A pool with one thread per core and the default [`IDLE_AFTER`].
    pub fn per_core(on_idle: impl Fn() + Send + Sync + 'static) -> std::io::Result<PasswordPool> {
        PasswordPool::new(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            IDLE_AFTER,
            on_idle,
        )
    }

    /// How many threads the pool has.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f` on the pool and wait for it without blocking the caller's
    /// thread, like `actix_web::web::block`. A panic in `f` is an internal
    /// error; the pool thread survives it.
    pub async fn block<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(catch_unwind(AssertUnwindSafe(f)));
        });
        self.queue
            .send(job)
            .map_err(|_| ApiError::Internal("the password pool has stopped".into()))?;
        match result.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(ApiError::Internal("a password task panicked".into())),
            Err(_) => Err(ApiError::Internal("the password pool has stopped".into())),
        }
    }
}

fn worker(receiver: &Mutex<Receiver<Job>>, idle_after: Duration, on_idle: &(dyn Fn() + Sync)) {
    lower_priority();
    loop {
        // Only one idle thread waits for a job at a time; the others wait
        // for the lock. So the timeout means the whole pool had nothing to
        // do, and the hook runs once per quiet spell: afterwards the
        // thread waits without a timeout. A job runs after the lock is
        // released.
        let job = {
            let receiver = receiver.lock().unwrap_or_else(PoisonError::into_inner);
            match receiver.recv_timeout(idle_after) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => {
                    on_idle();
                    receiver.recv().ok()
                }
                Err(RecvTimeoutError::Disconnected) => None,
            }
        };
        match job {
            Some(job) => job(),
            // The pool was dropped: no more jobs can come.
            None => return,
        }
    }
}

/// Give the calling thread the pool's lower priority. Failure (a platform
/// without per-thread nice values) changes nothing but the priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // On Linux the nice value is per thread: PRIO_PROCESS with "this
        // process" (0) sets the calling thread's.
        if let Err(e) = rustix::process::setpriority_process(None, NICE) {
            tracing::debug!(error = %e, "cannot lower the priority of the password pool");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn jobs_run_and_panics_are_internal_errors() {
        let pool = PasswordPool::new(2, IDLE_AFTER, || {}).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pool.threads(), 2);
        let name = pool
            .block(|| std::thread::current().name().map(str::to_string))
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(name.is_some_and(|n| n.starts_with("argon2-")));
        let err = pool
            .block(|| -> u32 { panic!("boom") })
            .await
            .err()
            .unwrap_or_else(|| panic!("a panic must be an error"));
        assert!(matches!(err, ApiError::Internal(_)));
        // The thread that panicked still serves.
        let sum = futures_join(&pool).await;
        assert_eq!(sum, (1..=8).sum::<u32>());
    }

    async fn futures_join(pool: &PasswordPool) -> u32 {
        let mut total = 0;
        for i in 1..=8u32 {
            total += pool.block(move || i).await.unwrap_or(0);
        }
        total
    }

    #[cfg(target_os = "linux")]
    #[actix_web::test]
    async fn pool_threads_run_at_lower_priority() {
        let pool = PasswordPool::new(1, IDLE_AFTER, || {}).unwrap_or_else(|e| panic!("{e}"));
        let nice = pool
            .block(|| rustix::process::getpriority_process(None))
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(nice >= NICE, "nice {nice}");
    }

    #[actix_web::test]
    async fn the_idle_hook_runs_once_per_quiet_spell() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let idle_after = Duration::from_millis(200);
        let pool = PasswordPool::new(2, idle_after, move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let wait_for = |n: usize| {
            let calls = calls.clone();
            async move {
                for _ in 0..400 {
                    if calls.load(Ordering::SeqCst) >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!(
                    "the idle hook ran {} times, not {n}",
                    calls.load(Ordering::SeqCst)
                );
            }
        };
        // Quiet from the start: one call, then no more while it stays quiet.
        wait_for(1).await;
        tokio::time::sleep(idle_after * 4).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A job ends the quiet spell; the next one runs it once more.
        pool.block(|| ()).await.unwrap_or_else(|e| panic!("{e:?}"));
        wait_for(2).await;
        tokio::time::sleep(idle_after * 4).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}

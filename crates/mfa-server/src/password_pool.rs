//! A small dedicated thread pool for the operations that run argon2id
//! (password login, recovery codes, setting a password).
//!
//! One argon2id verification takes ~15 ms of one core and 19 MiB of memory.
//! On the general blocking pool (hundreds of threads) a login storm would
//! run as many of them at once as there are requests: every core busy with
//! hashing, the database work of MFA verifications and reads queued behind
//! it, and 19 MiB per concurrent hash (over 1 GiB at 64 connections, kept
//! afterwards by the allocator's per-thread arenas). Here they run on as
//! many threads as there are cores; further requests wait asynchronously
//! in a queue, holding neither a worker nor a blocking thread. The threads
//! run at the lowest scheduling priority (nice 19 on Linux), so that when
//! hashing and short database work compete for a core, the short work goes
//! first: password logins get the CPU the rest of the server leaves, and
//! all of it when nothing else runs. (On a host shared with other busy
//! processes logins would get little; an MFA server has the host to
//! itself.)
//!
//! Throughput of password logins is unchanged: with one hash per core at a
//! time the cores are as busy as with more, and each hash gets a core to
//! itself.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::ApiError;

type Job = Box<dyn FnOnce() + Send + 'static>;

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
    /// A pool of `threads` threads (at least 1), named `argon2-N`.
    pub fn new(threads: usize) -> std::io::Result<PasswordPool> {
        let threads = threads.max(1);
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(&receiver))?;
        }
        Ok(PasswordPool {
            queue: sender,
            threads,
        })
    }

    /// A pool with one thread per core.
    pub fn per_core() -> std::io::Result<PasswordPool> {
        PasswordPool::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
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

fn worker(receiver: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        // Only one idle thread waits in `recv` at a time; the others wait
        // for the lock. A job runs after the lock is released.
        let job = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        match job {
            Ok(job) => job(),
            // The pool was dropped: no more jobs can come.
            Err(_) => return,
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
        let pool = PasswordPool::new(2).unwrap_or_else(|e| panic!("{e}"));
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
        let pool = PasswordPool::new(1).unwrap_or_else(|e| panic!("{e}"));
        let nice = pool
            .block(|| rustix::process::getpriority_process(None))
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(nice >= NICE, "nice {nice}");
    }
}

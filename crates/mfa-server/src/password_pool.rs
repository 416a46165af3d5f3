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
//!
//! The queue's delay is bounded (`MFA_PASSWORD_QUEUE_MAX_WAIT_SECS`). A
//! storm beyond what the cores can hash would otherwise grow the queue
//! without end: every login waiting longer than the one before, and the
//! pool hashing for clients that gave up long ago (actix-web runs a
//! handler to its end after an HTTP/1 client disconnects), so that no
//! one gets in. Instead a job is refused, and its caller answered
//! `429 too_many_attempts` with `Retry-After` ([`ApiError::Busy`]) after
//! [`REFUSAL_DELAY`], when the jobs ahead of it are expected to take
//! longer than the bound
//! (queued jobs × the recent mean run time ÷ threads, at most the bound
//! and one run: jobs beyond it would be refused), and, should the
//! estimate have been wrong, when it has waited longer than the bound by
//! the time a thread takes it. Whoever is admitted is answered within
//! about the bound.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::ApiError;

/// A job runs, or is refused because it waited too long.
type Job = Box<dyn FnOnce(Admission) + Send + 'static>;
type IdleHook = Arc<dyn Fn() + Send + Sync + 'static>;

/// What a pool thread does with a job it takes from the queue.
enum Admission {
    Run,
    Refuse { retry_after_secs: u64 },
}

/// A job and when it was queued.
struct Queued {
    job: Job,
    queued_at: Instant,
}

/// How long the pool waits without a job before it runs its idle hook. A
/// storm sends jobs every few milliseconds; a quiet server's next login
/// pays for the release with a few milliseconds of page faults.
pub const IDLE_AFTER: Duration = Duration::from_secs(1);

/// Scheduling priority of the pool's threads (`nice`): 0 is normal, 19 the
/// lowest. See docs/PERFORMANCE.md for MFA verify latency beside a login
/// flood.
pub const NICE: i32 = 19;

/// How long a caller refused for the queue's length waits for its
/// answer: a client that asks again at once, ignoring `Retry-After`, asks
/// once a second per connection instead of as fast as refusals come back,
/// which would take the CPU from the hashing threads at their low
/// priority. (1,000 such connections without it: 75,000 refusals a second,
/// and 29 logins a second instead of ~200.) The wait holds no thread.
pub const REFUSAL_DELAY: Duration = Duration::from_secs(1);

/// Threads that run password hashing, one job at a time each.
#[derive(Debug)]
pub struct PasswordPool {
    queue: Sender<Queued>,
    threads: usize,
    /// `None`: jobs wait as long as it takes.
    max_wait: Option<Duration>,
    load: Arc<PoolLoad>,
}

/// The pool's queue and refusals, shared with its threads and read by
/// `/metrics`.
#[derive(Debug, Default)]
pub struct PoolLoad {
    /// Jobs queued and not yet taken by a thread.
    waiting: AtomicUsize,
    /// Mean run time of recent jobs, in microseconds (an exponentially
    /// weighted moving average; 0 before the first job).
    mean_run_micros: AtomicU64,
    /// Jobs refused because of the queue's delay, since the start.
    refused: AtomicU64,
}

impl PoolLoad {
    /// Jobs queued and not yet taken by a thread.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Jobs refused because of the queue's delay, since the start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Mean run time of recent jobs; `None` before the first has run.
    pub fn mean_run(&self) -> Option<Duration> {
        match self.mean_run_micros.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }

    /// How long a job queued now is expected to wait for a thread: the
    /// jobs ahead of it × the mean run time ÷ the threads, but never more
    /// than `max_wait` and one run. A job ahead that has waited past the
    /// bound when a thread takes it is refused without running, so every
    /// job ahead that runs starts within `max_wait` from now. Without the
    /// cap, a queue filled before the first run time was known (a burst at
    /// start, every job admitted) made the estimate count a thousand jobs
    /// that would only be refused, and `Retry-After` say minutes.
    fn expected_wait(&self, threads: usize, max_wait: Duration) -> Duration {
        let ahead = self.waiting() as u64;
        let mean = self.mean_run_micros.load(Ordering::Relaxed);
        let queue = Duration::from_micros(ahead.saturating_mul(mean) / threads.max(1) as u64);
        queue.min(max_wait.saturating_add(Duration::from_micros(mean)))
    }

    fn record_run(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // Each thread records its own jobs; a lost update between two
        // threads only skips one sample of the average.
        let mean = self.mean_run_micros.load(Ordering::Relaxed);
        let next = if mean == 0 {
            micros
        } else {
            // Weight 1/8 for the newest run: a change of hash parameters
            // or machine speed shows within a few dozen jobs.
            mean - mean / 8 + micros / 8
        };
        self.mean_run_micros.store(next, Ordering::Relaxed);
    }
}

/// Whole seconds to tell a refused caller to wait, at least 1.
fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl PasswordPool {
    /// A pool of `threads` threads (at least 1), named `argon2-N`, that
    /// refuses jobs that would wait longer than `max_wait` (`None`: never)
    /// and runs `on_idle` once each time no job has come for `idle_after`.
    pub fn new(
        threads: usize,
        max_wait: Option<Duration>,
        idle_after: Duration,
        on_idle: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<PasswordPool> {
        let threads = threads.max(1);
        let (sender, receiver) = channel::<Queued>();
        let receiver = Arc::new(Mutex::new(receiver));
        let on_idle: IdleHook = Arc::new(on_idle);
        let load = Arc::new(PoolLoad::default());
        for i in 0..threads {
            let receiver = receiver.clone();
            let on_idle = on_idle.clone();
            let load = load.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || worker(&receiver, &load, max_wait, idle_after, on_idle.as_ref()))?;
        }
        Ok(PasswordPool {
            queue: sender,
            threads,
            max_wait,
            load,
        })
    }

    /// A pool with one thread per core and the default [`IDLE_AFTER`].
    pub fn per_core(
        max_wait: Option<Duration>,
        on_idle: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<PasswordPool> {
        PasswordPool::new(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_wait,
            IDLE_AFTER,
            on_idle,
        )
    }

    /// How many threads the pool has.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The queue and refusal counts, for `/metrics`.
    pub fn load(&self) -> Arc<PoolLoad> {
        self.load.clone()
    }

    /// Queue `f`, which no one waits for, to give the pool a first run
    /// time. Until a job has run there is nothing to estimate a wait with,
    /// and the first burst of a storm would be admitted whole (its tail
    /// refused only after waiting out the bound); the server queues one
    /// password check of its own at start.
    pub fn calibrate(&self, f: impl FnOnce() + Send + 'static) {
        self.enqueue(Box::new(move |admission| {
            if matches!(admission, Admission::Run) {
                // The thread must survive a panic here too.
                let _ = catch_unwind(AssertUnwindSafe(f));
            }
        }));
    }

    /// Put `job` in the queue; false if the pool has stopped.
    fn enqueue(&self, job: Job) -> bool {
        self.load.waiting.fetch_add(1, Ordering::Relaxed);
        let queued = Queued {
            job,
            queued_at: Instant::now(),
        };
        if self.queue.send(queued).is_err() {
            self.load.waiting.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Run `f` on the pool and wait for it without blocking the caller's
    /// thread, like `actix_web::web::block`. A panic in `f` is an internal
    /// error; the pool thread survives it. [`ApiError::Busy`] when the
    /// queue's delay is over the bound: `f` has not run.
    pub async fn block<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if let Some(max_wait) = self.max_wait {
            let expected = self.load.expected_wait(self.threads, max_wait);
            if expected > max_wait {
                self.load.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(REFUSAL_DELAY).await;
                return Err(ApiError::Busy {
                    retry_after_secs: retry_after_secs(expected),
                });
            }
        }
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |admission| {
            let _ = done.send(match admission {
                Admission::Run => Ok(catch_unwind(AssertUnwindSafe(f))),
                Admission::Refuse { retry_after_secs } => Err(retry_after_secs),
            });
        });
        if !self.enqueue(job) {
            return Err(ApiError::Internal("the password pool has stopped".into()));
        }
        match result.await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(_))) => Err(ApiError::Internal("a password task panicked".into())),
            Ok(Err(retry_after_secs)) => Err(ApiError::Busy { retry_after_secs }),
            Err(_) => Err(ApiError::Internal("the password pool has stopped".into())),
        }
    }
}

fn worker(
    receiver: &Mutex<Receiver<Queued>>,
    load: &PoolLoad,
    max_wait: Option<Duration>,
    idle_after: Duration,
    on_idle: &(dyn Fn() + Sync),
) {
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
        let Some(Queued { job, queued_at }) = job else {
            // The pool was dropped: no more jobs can come.
            return;
        };
        load.waiting.fetch_sub(1, Ordering::Relaxed);
        let waited = queued_at.elapsed();
        if max_wait.is_some_and(|max_wait| waited > max_wait) {
            load.refused.fetch_add(1, Ordering::Relaxed);
            job(Admission::Refuse {
                retry_after_secs: retry_after_secs(waited),
            });
            continue;
        }
        let started = Instant::now();
        job(Admission::Run);
        load.record_run(started.elapsed());
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
        let pool = PasswordPool::new(2, None, IDLE_AFTER, || {}).unwrap_or_else(|e| panic!("{e}"));
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

    /// Hold the pool's only thread until the returned sender sends (or is
    /// dropped); the task ends when the held job ends.
    async fn hold_the_thread(
        pool: &Arc<PasswordPool>,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<(), ApiError>>,
    ) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, is_running) = tokio::sync::oneshot::channel::<()>();
        let holder = pool.clone();
        let job = tokio::spawn(async move {
            holder
                .block(move || {
                    let _ = started.send(());
                    let _ = held.recv();
                })
                .await
        });
        tokio::time::timeout(Duration::from_secs(10), is_running)
            .await
            .unwrap_or_else(|e| panic!("the holding job did not start: {e}"))
            .unwrap_or_else(|e| panic!("the holding job did not start: {e}"));
        (release, job)
    }

    /// Queue `count` empty jobs, each from a task of its own, and wait
    /// until they are in the queue (if they are admitted).
    async fn queue_jobs(
        pool: &Arc<PasswordPool>,
        count: usize,
    ) -> Vec<tokio::task::JoinHandle<Result<(), ApiError>>> {
        let jobs = (0..count)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.block(|| ()).await })
            })
            .collect();
        for _ in 0..400 {
            if pool.load().waiting() == count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        jobs
    }

    #[actix_web::test]
    async fn a_job_that_waited_past_the_bound_is_refused_without_running() {
        use std::sync::atomic::AtomicBool;
        let pool = Arc::new(
            PasswordPool::new(1, Some(Duration::from_millis(100)), IDLE_AFTER, || {})
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let (release, holder) = hold_the_thread(&pool).await;
        // No job has finished yet, so nothing is expected to wait: queued.
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let queued_pool = pool.clone();
        let queued = tokio::spawn(async move {
            queued_pool
                .block(move || flag.store(true, Ordering::SeqCst))
                .await
        });
        for _ in 0..400 {
            if pool.load().waiting() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pool.load().waiting(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        release.send(()).unwrap_or_else(|e| panic!("{e}"));
        holder
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("the holder ran: {e:?}"));
        let err = queued
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .err()
            .unwrap_or_else(|| panic!("a job that waited 400 ms of 100 must be refused"));
        // It waited at least 400 ms: told to come back in a second or more.
        assert!(matches!(err, ApiError::Busy { retry_after_secs } if retry_after_secs >= 1));
        assert!(!ran.load(Ordering::SeqCst), "the refused job ran");
        assert_eq!((pool.load().waiting(), pool.load().refused()), (0, 1));
        // The pool serves again.
        pool.block(|| ()).await.unwrap_or_else(|e| panic!("{e:?}"));
    }

    #[actix_web::test]
    async fn a_job_behind_too_long_a_queue_is_refused_at_once() {
        let max_wait = Duration::from_secs(1);
        let pool = Arc::new(
            PasswordPool::new(1, Some(max_wait), IDLE_AFTER, || {})
                .unwrap_or_else(|e| panic!("{e}")),
        );
        // One job of at least 300 ms: the mean run time is that now.
        pool.block(|| std::thread::sleep(Duration::from_millis(300)))
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let (release, holder) = hold_the_thread(&pool).await;
        // Four jobs wait: the next would wait at least 4 × 300 ms.
        let waiting = queue_jobs(&pool, 4).await;
        assert_eq!(pool.load().waiting(), 4, "the first jobs were admitted");
        let refused = tokio::time::timeout(
            Duration::from_secs(5),
            pool.block(|| panic!("a refused job must not run")),
        )
        .await
        .unwrap_or_else(|_| panic!("queued instead of refused at once"))
        .err()
        .unwrap_or_else(|| panic!("refused at once"));
        // Answered while the thread is still held: it did not wait.
        assert!(!holder.is_finished());
        assert!(
            matches!(refused, ApiError::Busy { retry_after_secs } if retry_after_secs >= 2),
            "{refused:?}"
        );
        assert_eq!(pool.load().refused(), 1);
        release.send(()).unwrap_or_else(|e| panic!("{e}"));
        holder
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        // The waiting jobs run, or are refused once they waited too long:
        // never anything else.
        for job in waiting {
            match job.await.unwrap_or_else(|e| panic!("{e}")) {
                Ok(()) | Err(ApiError::Busy { .. }) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_expected_wait_counts_only_jobs_that_can_still_run() {
        let load = PoolLoad::default();
        let max_wait = Duration::from_secs(2);
        load.record_run(Duration::from_millis(500));
        load.waiting.store(4, Ordering::Relaxed);
        // Four jobs ahead on two threads: two runs each.
        assert_eq!(load.expected_wait(2, max_wait), Duration::from_secs(1));
        // A thousand ahead, queued before the run time was known: those
        // that would start after the bound are refused without running.
        load.waiting.store(1_000, Ordering::Relaxed);
        let expected = load.expected_wait(2, max_wait);
        assert_eq!(expected, Duration::from_millis(2_500));
        assert_eq!(retry_after_secs(expected), 3);
    }

    #[actix_web::test]
    async fn a_calibrated_pool_bounds_the_first_burst() {
        let pool = Arc::new(
            PasswordPool::new(1, Some(Duration::from_secs(1)), IDLE_AFTER, || {})
                .unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(pool.load().mean_run(), None);
        pool.calibrate(|| std::thread::sleep(Duration::from_millis(300)));
        for _ in 0..400 {
            if pool.load().mean_run().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mean = pool.load().mean_run();
        assert!(mean >= Some(Duration::from_millis(300)), "{mean:?}");
        assert_eq!(pool.load().waiting(), 0);
        // The first burst: four jobs queue behind a held thread, and the
        // fifth, expected to wait over a second, is refused at once.
        let (release, holder) = hold_the_thread(&pool).await;
        let waiting = queue_jobs(&pool, 4).await;
        let refused = pool.block(|| panic!("a refused job must not run")).await;
        assert!(matches!(refused, Err(ApiError::Busy { .. })), "{refused:?}");
        assert!(!holder.is_finished(), "refused while the thread was held");
        release.send(()).unwrap_or_else(|e| panic!("{e}"));
        for job in waiting {
            let _ = job.await;
        }
    }

    #[actix_web::test]
    async fn without_a_bound_nothing_is_refused() {
        let pool = Arc::new(
            PasswordPool::new(1, None, IDLE_AFTER, || {}).unwrap_or_else(|e| panic!("{e}")),
        );
        pool.block(|| std::thread::sleep(Duration::from_millis(50)))
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let (release, holder) = hold_the_thread(&pool).await;
        let waiting = queue_jobs(&pool, 20).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        release.send(()).unwrap_or_else(|e| panic!("{e}"));
        let _ = holder.await;
        for job in waiting {
            job.await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("{e:?}"));
        }
        assert_eq!(pool.load().refused(), 0);
    }

    #[cfg(target_os = "linux")]
    #[actix_web::test]
    async fn pool_threads_run_at_lower_priority() {
        let pool = PasswordPool::new(1, None, IDLE_AFTER, || {}).unwrap_or_else(|e| panic!("{e}"));
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
        let pool = PasswordPool::new(2, None, idle_after, move || {
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

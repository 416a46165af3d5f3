//! The load runner: a number of keep-alive connections, each running flows
//! of one or more requests back to back (closed loop) or at a fixed rate
//! (open loop), for a bounded time, with latencies in an HDR histogram.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::http::{Connector, Request, Response};

/// What a flow does next after a response.
pub enum Next<C> {
    /// Send another request as part of the same flow.
    Request(Request, C),
    /// The flow is over: `Ok`, or the kind of error.
    Done(Result<(), String>),
}

/// A source of flows (one request, or several in a row, like login then
/// verify). Shared by every connection of a run.
pub trait Workload: Send + Sync + 'static {
    /// What a flow carries between its requests.
    type Ctx: Send + 'static;
    /// The first request of the next flow, or `None` when the workload has
    /// run out of work (e.g. no user has a fresh code left).
    fn start(&self) -> Option<(Request, Self::Ctx)>;
    /// Judge a response.
    fn respond(&self, ctx: Self::Ctx, res: &Response) -> Next<Self::Ctx>;
    /// The flow failed on the connection (no response): give back what it held.
    fn abandon(&self, _ctx: Self::Ctx) {}
}

/// How to run a workload.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Concurrent connections.
    pub connections: usize,
    /// Stop starting flows after this long.
    pub duration: Duration,
    /// Open loop: flows per second over all connections. Latency is then
    /// measured from the time a flow was due, not from when it was sent,
    /// so a stalled server shows in the figures (no coordinated omission).
    pub rate: Option<f64>,
    /// Stop after this many flows in all (e.g. 1 for the reset).
    pub max_flows: Option<u64>,
}

/// What a run measured.
#[derive(Debug)]
pub struct Measured {
    /// Successful flows.
    pub ok: u64,
    /// Failed flows by kind (`400 invalid_code`, `io: …`).
    pub errors: BTreeMap<String, u64>,
    /// HTTP requests sent.
    pub http_requests: u64,
    /// From the start to the end of the last flow.
    pub elapsed: Duration,
    /// Latencies of successful flows in microseconds.
    pub latency_us: Histogram<u64>,
    /// Whether the workload ran out of work before the time was up.
    pub exhausted: bool,
}

impl Measured {
    /// Failed flows in all.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successful flows per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// A latency quantile in milliseconds (0 when nothing succeeded).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|e| panic!("histogram bounds: {e}"))
}

struct TaskResult {
    ok: u64,
    errors: BTreeMap<String, u64>,
    http_requests: u64,
    latency_us: Histogram<u64>,
    exhausted: bool,
    ended: Instant,
}

/// Run `workload` as `spec` says against the server `connector` points at.
pub async fn run<W: Workload>(connector: &Connector, workload: Arc<W>, spec: Spec) -> Measured {
    let start = Instant::now();
    let deadline = start + spec.duration;
    let connections = spec.connections.max(1);
    let interval = spec
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(connections as f64 / r));
    let remaining = spec
        .max_flows
        .map(|n| Arc::new(std::sync::atomic::AtomicU64::new(n)));
    let mut tasks = Vec::with_capacity(connections);
    for i in 0..connections {
        let connector = connector.clone();
        let workload = workload.clone();
        let remaining = remaining.clone();
        // Open loop: connection i starts i/rate after the others.
        let offset = interval.map(|iv| iv.mul_f64(i as f64 / connections as f64));
        tasks.push(tokio::spawn(async move {
            connection_loop(
                connector, workload, deadline, start, interval, offset, remaining,
            )
            .await
        }));
    }
    let mut total = Measured {
        ok: 0,
        errors: BTreeMap::new(),
        http_requests: 0,
        elapsed: Duration::ZERO,
        latency_us: histogram(),
        exhausted: false,
    };
    let mut last_end = start;
    for task in tasks {
        let Ok(r) = task.await else {
            *total
                .errors
                .entry("harness task panicked".into())
                .or_default() += 1;
            continue;
        };
        total.ok += r.ok;
        total.http_requests += r.http_requests;
        for (k, v) in r.errors {
            *total.errors.entry(k).or_default() += v;
        }
        let _ = total.latency_us.add(&r.latency_us);
        total.exhausted |= r.exhausted;
        last_end = last_end.max(r.ended);
    }
    total.elapsed = last_end - start;
    total
}

async fn connection_loop<W: Workload>(
    connector: Connector,
    workload: Arc<W>,
    deadline: Instant,
    start: Instant,
    interval: Option<Duration>,
    offset: Option<Duration>,
    remaining: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> TaskResult {
    use std::sync::atomic::Ordering;
    let mut result = TaskResult {
        ok: 0,
        errors: BTreeMap::new(),
        http_requests: 0,
        latency_us: histogram(),
        exhausted: false,
        ended: start,
    };
    let mut conn = None;
    let mut n: u32 = 0;
    loop {
        let due = match (interval, offset) {
            (Some(iv), Some(off)) => {
                let due = start + off + iv * n;
                if due >= deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                due
            }
            _ => Instant::now(),
        };
        n = n.saturating_add(1);
        if Instant::now() >= deadline {
            break;
        }
        if let Some(remaining) = &remaining
            && remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1))
                .is_err()
        {
            break;
        }
        let Some((mut req, mut ctx)) = workload.start() else {
            result.exhausted = true;
            break;
        };
        let outcome = loop {
            let c = match &mut conn {
                Some(c) => c,
                slot @ None => match connector.connect().await {
                    Ok(c) => slot.insert(c),
                    Err(e) => {
                        workload.abandon(ctx);
                        break Err(format!("connect: {}", e.kind()));
                    }
                },
            };
            result.http_requests += 1;
            match c.send(&req).await {
                Ok(res) => match workload.respond(ctx, &res) {
                    Next::Request(r, cx) => {
                        req = r;
                        ctx = cx;
                    }
                    Next::Done(outcome) => break outcome,
                },
                Err(e) => {
                    conn = None;
                    workload.abandon(ctx);
                    break Err(format!("io: {}", e.kind()));
                }
            }
        };
        match outcome {
            Ok(()) => {
                result.ok += 1;
                let us = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
                let _ = result.latency_us.record(us.max(1));
            }
            Err(kind) => *result.errors.entry(kind).or_default() += 1,
        }
        result.ended = Instant::now();
    }
    result
}

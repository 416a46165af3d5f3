//! The report: one row per measured run, the targets of the performance
//! issue judged against them, printed as a table and written as JSON.

use serde::Serialize;

use crate::load::Measured;

/// One measured run.
#[derive(Debug, Serialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Concurrent connections.
    pub connections: usize,
    /// Open-loop rate asked for, flows/s (closed loop when absent).
    pub offered_rate: Option<f64>,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// Successful flows.
    pub ok: u64,
    /// Failed flows.
    pub errors: u64,
    /// Failed flows by kind.
    pub error_kinds: std::collections::BTreeMap<String, u64>,
    /// HTTP requests sent.
    pub http_requests: u64,
    /// Successful flows per second.
    pub per_sec: f64,
    /// Latency quantiles of successful flows, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Highest server RSS sampled during the run, MiB.
    pub server_rss_max_mib: Option<f64>,
    /// The server's peak RSS over its life so far (VmHWM), MiB.
    pub server_peak_rss_mib: Option<f64>,
    /// Server CPU time per successful flow, ms (user + system).
    pub server_cpu_ms_per_flow: Option<f64>,
    /// Cores the server kept busy on average.
    pub server_cores: Option<f64>,
    /// PostgreSQL: CPU time of the database's backends per flow, ms.
    pub db_cpu_ms_per_flow: Option<f64>,
    /// PostgreSQL: cores its backends kept busy on average.
    pub db_cores: Option<f64>,
    /// Cores this harness kept busy on average (its own cost).
    pub client_cores: Option<f64>,
    /// The 1-minute load average when the run ended.
    pub loadavg_1m: Option<f64>,
    /// What else to know (e.g. the workload ran out of fresh codes).
    pub note: String,
}

impl Row {
    /// A row from a measurement.
    pub fn new(scenario: impl Into<String>, connections: usize, m: &Measured) -> Row {
        Row {
            scenario: scenario.into(),
            connections,
            offered_rate: None,
            seconds: m.elapsed.as_secs_f64(),
            ok: m.ok,
            errors: m.error_count(),
            error_kinds: m.errors.clone(),
            http_requests: m.http_requests,
            per_sec: m.rate(),
            p50_ms: m.quantile_ms(0.50),
            p95_ms: m.quantile_ms(0.95),
            p99_ms: m.quantile_ms(0.99),
            max_ms: if m.latency_us.is_empty() {
                0.0
            } else {
                m.latency_us.max() as f64 / 1000.0
            },
            server_rss_max_mib: None,
            server_peak_rss_mib: None,
            server_cpu_ms_per_flow: None,
            server_cores: None,
            client_cores: None,
            db_cpu_ms_per_flow: None,
            db_cores: None,
            loadavg_1m: loadavg_1m(),
            note: if m.exhausted {
                "ran out of fresh codes before the time was up".into()
            } else {
                String::new()
            },
        }
    }
}

/// A target of the issue and whether this run met it.
#[derive(Debug, Serialize)]
pub struct Target {
    /// What is aimed at.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met or not; `None` when the scenario did not run.
    pub met: Option<bool>,
}

/// The 1-minute load average.
pub fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The CPU model from `/proc/cpuinfo`.
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// Total memory in MiB from `/proc/meminfo`.
pub fn mem_total_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib / 1024)
}

/// KiB to MiB.
pub fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

/// The rows as a text table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<34} {:>5} {:>6} {:>8} {:>6} {:>9} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7} {:>6} {:>5} {:>6} {:>5} {:>5} {:>5}\n",
        "scenario",
        "conns",
        "secs",
        "ok",
        "errors",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "RSS MiB",
        "peak",
        "cpu/op",
        "srv",
        "db/op",
        "db",
        "cli",
        "load"
    ));
    for r in rows {
        out.push_str(&format!(
            "{:<34} {:>5} {:>6.2} {:>8} {:>6} {:>9.1} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>7} {:>7} {:>6} {:>5} {:>6} {:>5} {:>5} {:>5}\n",
            r.scenario,
            r.connections,
            r.seconds,
            r.ok,
            r.errors,
            r.per_sec,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.max_ms,
            opt(r.server_rss_max_mib, 1),
            opt(r.server_peak_rss_mib, 1),
            opt(r.server_cpu_ms_per_flow, 3),
            opt(r.server_cores, 2),
            opt(r.db_cpu_ms_per_flow, 3),
            opt(r.db_cores, 2),
            opt(r.client_cores, 2),
            opt(r.loadavg_1m, 2),
        ));
        if !r.error_kinds.is_empty() {
            out.push_str(&format!("    errors: {:?}\n", r.error_kinds));
        }
        if !r.note.is_empty() {
            out.push_str(&format!("    note: {}\n", r.note));
        }
    }
    out
}

/// The targets as text.
pub fn targets(targets: &[Target]) -> String {
    let mut out = String::new();
    for t in targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not run",
        };
        out.push_str(&format!(
            "  [{verdict:^7}] {:<58} measured: {}\n",
            t.target, t.measured
        ));
    }
    out
}

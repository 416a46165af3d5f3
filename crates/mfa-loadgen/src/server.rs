//! The server under test: a child process of the release `mfa-server`
//! binary, or one already running at a URL; its readiness and its memory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mfa_core::crypto::PasswordParams;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::http::{ClientKind, Connector, Method, Request};

/// How to start the server.
#[derive(Debug)]
pub struct Launch<'a> {
    /// The `mfa-server` binary.
    pub binary: &'a Path,
    /// `MFA_DATABASE_URL`.
    pub database_url: &'a str,
    /// `MFA_ENCRYPTION_KEY` (base64).
    pub encryption_key: &'a str,
    /// `MFA_DATA_DIR` (mail outbox; the server log goes there too).
    pub data_dir: &'a Path,
    /// `MFA_LOG`.
    pub log: &'a str,
    /// `MFA_DATABASE_POOL_SIZE`, if not the server's default.
    pub pool_size: Option<u32>,
    /// `MFA_PASSWORD_HASH`, if not the server's default.
    pub password_hash: Option<PasswordParams>,
}

/// A server child process.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stderr (the tracing log).
    pub log_file: PathBuf,
}

/// The `mfa-server` next to this binary (`target/release/` when both were
/// built with `cargo build --release`).
pub fn default_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.join("mfa-server");
    candidate.is_file().then_some(candidate)
}

impl ServerProcess {
    /// Start the server on a free loopback port and wait until `/readyz`
    /// answers 200.
    pub async fn start(launch: &Launch<'_>) -> Result<ServerProcess, String> {
        std::fs::create_dir_all(launch.data_dir)
            .map_err(|e| format!("cannot create {}: {e}", launch.data_dir.display()))?;
        let log_file = launch.data_dir.join("server.log");
        let log = std::fs::File::create(&log_file)
            .map_err(|e| format!("cannot create {}: {e}", log_file.display()))?;
        let mut command = Command::new(launch.binary);
        match launch.pool_size {
            Some(size) => command.env("MFA_DATABASE_POOL_SIZE", size.to_string()),
            None => command.env_remove("MFA_DATABASE_POOL_SIZE"),
        };
        match launch.password_hash {
            Some(params) => command.env("MFA_PASSWORD_HASH", params.to_string()),
            None => command.env_remove("MFA_PASSWORD_HASH"),
        };
        let mut child = command
            .env("MFA_DATABASE_URL", launch.database_url)
            .env("MFA_ENCRYPTION_KEY", launch.encryption_key)
            .env("MFA_DATA_DIR", launch.data_dir)
            .env("MFA_BIND", "127.0.0.1:0")
            .env("MFA_LOG", launch.log)
            .env_remove("MFA_SMTP_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", launch.binary.display()))?;
        let pid = child.id().ok_or("the server exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        // The banner's first line: "MFA server listening on http://ADDR".
        let addr = tokio::time::timeout(Duration::from_secs(120), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((_, url)) = line.split_once("listening on http://") {
                    return url.trim().trim_end_matches('/').parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| {
            format!(
                "the server did not report its address; see {}",
                log_file.display()
            )
        })?;
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let server = ServerProcess {
            child,
            pid,
            addr,
            log_file,
        };
        wait_ready(addr, Duration::from_secs(60)).await?;
        Ok(server)
    }

    /// Stop the server with SIGTERM (graceful), or kill it after 15 s.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Wait until `GET /readyz` answers 200.
pub async fn wait_ready(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let connector = Connector::new(ClientKind::Raw, addr);
    loop {
        if let Ok(mut conn) = connector.connect().await
            && let Ok(res) = conn.send(&Request::new(Method::Get, "/readyz")).await
            && res.status == 200
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{addr} did not become ready in {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time a process has used (user + system), in seconds, from
/// `/proc/PID/stat` (`self` for this process).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces: count from its ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line are the 12th and 13th after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_SEC)
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux platform this runs on.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Samples a process's resident memory every 50 ms; keeps the highest
/// value since the last [`RssSampler::reset`].
#[derive(Debug, Clone)]
pub struct RssSampler {
    max_kib: Arc<AtomicU64>,
    pid: Option<u32>,
}

impl RssSampler {
    /// Start sampling `pid` (nothing when `None`).
    pub fn start(pid: Option<u32>) -> RssSampler {
        let sampler = RssSampler {
            max_kib: Arc::new(AtomicU64::new(0)),
            pid,
        };
        if let Some(pid) = pid {
            let max = sampler.max_kib.clone();
            tokio::spawn(async move {
                loop {
                    match proc_status_kib(pid, "VmRSS") {
                        Some(kib) => {
                            max.fetch_max(kib, Ordering::Relaxed);
                        }
                        None => return,
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
        sampler
    }

    /// Forget the maximum so far.
    pub fn reset(&self) {
        let now = self
            .pid
            .and_then(|pid| proc_status_kib(pid, "VmRSS"))
            .unwrap_or(0);
        self.max_kib.store(now, Ordering::Relaxed);
    }

    /// The highest sampled RSS since the last reset, in KiB.
    pub fn max_kib(&self) -> Option<u64> {
        self.pid.map(|_| self.max_kib.load(Ordering::Relaxed))
    }

    /// The kernel's peak RSS of the process over its life (`VmHWM`), KiB.
    pub fn peak_kib(&self) -> Option<u64> {
        self.pid.and_then(|pid| proc_status_kib(pid, "VmHWM"))
    }

    /// The current RSS, KiB.
    pub fn current_kib(&self) -> Option<u64> {
        self.pid.and_then(|pid| proc_status_kib(pid, "VmRSS"))
    }
}

//! The server's log: events are formatted on the thread that emits them
//! and written to stderr by a thread of their own.
//!
//! A write to stderr can block: a pipe whose reader stalls (a collector,
//! a container runtime's log driver, a terminal paused with Ctrl-S) fills
//! after 64 KiB, and every request writes a line. Written from the
//! request's worker, that write would stop the worker and every request
//! it serves, so a stalled log reader would stop logins. Here the workers
//! only queue the line; the log thread writes it.
//!
//! The queue holds [`QUEUED_LINES`] lines (a few MiB). When the reader is
//! stalled that long, further lines are dropped, never waited for, and
//! counted: `mfa_log_lines_dropped_total` in `/metrics`. Nothing of the
//! security record is lost that way: the audit trail is written in the
//! database, in the transaction of the change it records.
//!
//! The CLI's other commands keep writing stderr directly: they run one
//! operation, and their log lines must come before their final message.

use std::io::{self, BufWriter, Write};
use std::sync::OnceLock;
use std::time::Duration;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

/// Lines the log thread may be behind before new ones are dropped.
pub const QUEUED_LINES: usize = 16_384;

/// The log thread's pause after each write-out (see [`Gathering`]).
const GATHER: Duration = Duration::from_millis(1);

/// The dropped-line count of the process's log, once [`init_server_log`]
/// has installed it (the log is global, as tracing's subscriber is).
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the log thread running; dropping it writes out what is queued
/// (waiting at most about a second for a stalled reader) and stops it.
#[must_use = "the log thread stops when this is dropped"]
pub struct LogGuard {
    _worker: WorkerGuard,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGuard").finish_non_exhaustive()
    }
}

/// Install the process's log: the filter `spec` (`MFA_LOG`, see
/// [`crate::config::log_filter`]), written to stderr by the log thread.
/// Colour only on a terminal. A second call in one process leaves the
/// first log in place.
pub fn init_server_log(spec: &str) -> LogGuard {
    use std::io::IsTerminal as _;
    let ansi = io::stderr().is_terminal();
    let (writer, worker) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("mfa-log")
        .finish(Gathering(BufWriter::new(io::stderr())));
    let counter = writer.error_counter();
    let installed = tracing_subscriber::fmt()
        .with_env_filter(crate::config::log_filter(spec))
        .with_ansi(ansi)
        .with_writer(writer)
        .try_init()
        .is_ok();
    if installed {
        let _ = DROPPED.set(counter);
    }
    LogGuard { _worker: worker }
}

/// stderr as the log thread writes it: buffered, so that a write-out is
/// one syscall for many lines, and with a pause after each write-out (the
/// thread writes out whenever it has emptied its queue). A thread that
/// waits on an empty queue is woken by the next line: on a busy server
/// that was a wake-up, and two context switches, for every request. After
/// the pause the lines of the last millisecond are waiting, and the thread
/// takes them all at once; an idle server's thread waits on the queue and
/// costs nothing.
struct Gathering(BufWriter<io::Stderr>);

impl Write for Gathering {
    /// `buf` is one event, ending in its newline: written as one line.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&one_line(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let flushed = self.0.flush();
        std::thread::sleep(GATHER);
        flushed
    }
}

/// An event's text with the line breaks inside it written as `\n` (and
/// `\r`): a value that holds one (PostgreSQL's messages do: `…failed:
/// Connection refused\n\tIs the server running…`) split the event into
/// lines without a time or a level, which a collector reading a line per
/// event takes for events of their own. The final newline stays.
fn one_line(event: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    if !body.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        return std::borrow::Cow::Borrowed(event);
    }
    let mut line = Vec::with_capacity(event.len() + 8);
    for &b in body {
        match b {
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => line.extend_from_slice(b"\\r"),
            _ => line.push(b),
        }
    }
    if body.len() < event.len() {
        line.push(b'\n');
    }
    std::borrow::Cow::Owned(line)
}

/// Log lines dropped so far because the log's reader was stalled (0 until
/// [`init_server_log`] has run, e.g. in a server embedded in a test).
pub fn dropped_log_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn an_event_is_one_line() {
        let event =
            b"WARN database unavailable error=connection refused\n\tIs the server running\n";
        assert_eq!(
            &*one_line(event),
            &b"WARN database unavailable error=connection refused\\n\tIs the server running\n"[..]
        );
        assert_eq!(&*one_line(b"INFO ready\n"), &b"INFO ready\n"[..]);
        assert_eq!(&*one_line(b"a\r\nb"), &b"a\\r\\nb"[..]);
    }
}

//! One log line per period for a failure that repeats on every request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one line through per period and counts those held back, so that
/// an outage (a database refusing connections, every request answered
/// `503`) is logged once per period with a count instead of drowning the
/// log. The pool's connect failures use one; the server uses another for
/// the requests answered "unavailable".
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    /// When the last line was let through, and the lines held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    /// A throttle letting one line through per `every`.
    pub const fn new(every: Duration) -> LogThrottle {
        LogThrottle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Whether a line at `now` is written: `Some(lines held back since
    /// the last one written)`, or `None` when it is to be held back (and
    /// is counted).
    pub fn record(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, held_back) = &mut *state;
        if last.is_some_and(|at| now.duration_since(at) < self.every) {
            *held_back += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_then_the_count_held_back() {
        let every = Duration::from_secs(30);
        let log = LogThrottle::new(every);
        let start = Instant::now();
        assert_eq!(log.record(start), Some(0), "the first is written");
        for i in 1..=32 {
            assert_eq!(log.record(start + Duration::from_millis(60 * i)), None);
        }
        let later = start + every;
        assert_eq!(log.record(later), Some(32), "then with the count");
        assert_eq!(log.record(later + Duration::from_secs(1)), None);
        assert_eq!(log.record(later + every), Some(1));
    }
}

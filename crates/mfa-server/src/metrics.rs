//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `http_requests_total` | method, route, status | requests answered; `method` is one of HTTP's nine or `other`; `route` is the route pattern (`/user/users/{id}`), never the raw path, or `unmatched` |
//! | `http_request_duration_seconds` | method, route, status | latency histogram |
//! | `mfa_verifications_total` | method, outcome | second-factor verifications (login challenge, enrollment confirmation, recovery): `success`, `failure`, `replay` (an authenticator code whose step was already used), `locked_out` |
//! | `mfa_lockouts_total` | kind | attempts refused with `429` because of a lockout or throttle: `code` or `password` |
//! | `logins_total` | outcome | password logins: `success`, `invalid_credentials`, `forbidden`, `locked_out` |
//! | `mfa_log_lines_dropped_total` | | log lines dropped because stderr's reader was stalled ([`crate::logging`]) |
//! | `mfa_password_queue_jobs` | | password checks (logins, recovery codes, new passwords) waiting for a thread of the password pool |
//! | `mfa_password_jobs_refused_total` | | password checks refused with `429` because the queue's delay was over `MFA_PASSWORD_QUEUE_MAX_WAIT_SECS` ([`crate::password_pool`]) |
//! | `mfa_mail_messages_total` | kind, outcome | mail, by `kind`: `required` (codes, email-change links: a request waits for them) or `notice` (queued); `outcome`: `sent`, `failed` (the mail server refused it or did not answer), `busy` (a required message refused after waiting for one of the sends at once), `unconfirmed` (a request stopped waiting for its message after 11 s; the message is counted as `sent` or `failed` as well when the mail server answers), `given_up` (a notice deleted unsent; a notice's `failed` counts each failed try, its `unconfirmed` a send not confirmed in time, counted as sent) ([`crate::mail_dispatch`], [`crate::notice_sender`]) |
//! | `mfa_mail_notices_queued` | | notices waiting to be sent |
//!
//! Every label takes its value from a fixed set: a client that chose a
//! label's value (a raw path, a method of its own invention) could add a
//! series per request, growing the server's memory and every scrape
//! without bound.
//!
//! The domain does no IO, so outcomes are read from results at the HTTP
//! layer. A replay answers `invalid_code` like any wrong code; the service
//! says which refusal was a replay
//! ([`mfa_core::MfaService::verify_mfa_of_token_noting_replay`]).

use std::sync::Arc;

use mfa_core::MfaError;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::mail_dispatch::MailDispatch;
use crate::password_pool::PoolLoad;
use crate::wire::Method;

/// Labels of the request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

/// Labels of the verification metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerificationLabels {
    method: &'static str,
    outcome: &'static str,
}

/// Labels of the lockout metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LockoutLabels {
    kind: &'static str,
}

/// Labels of the login metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    outcome: &'static str,
}

/// The `method` label of the verification metric.
const VERIFICATION_METHODS: [&str; 3] = ["AUTHENTICATOR", "EMAIL", "RECOVERY"];

type HistogramFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;

/// The server's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<HttpLabels, Counter>,
    latency: HistogramFamily,
    verifications: Family<VerificationLabels, Counter>,
    lockouts: Family<LockoutLabels, Counter>,
    logins: Family<LoginLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<HttpLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let verifications = Family::<VerificationLabels, Counter>::default();
        let lockouts = Family::<LockoutLabels, Counter>::default();
        let logins = Family::<LoginLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route pattern and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by method, route pattern and status",
            latency.clone(),
        );
        registry.register(
            "mfa_verifications",
            "Second-factor verifications by method and outcome (success, failure, replay, locked_out)",
            verifications.clone(),
        );
        registry.register(
            "mfa_lockouts",
            "Attempts refused with 429 because of a lockout or throttle, by kind (code, password)",
            lockouts.clone(),
        );
        registry.register(
            "logins",
            "Password logins by outcome (success, invalid_credentials, forbidden, locked_out)",
            logins.clone(),
        );
        registry.register_collector(Box::new(DroppedLogLines));
        // Every series an alert reads exists from the start, at 0: one that
        // first appears at 1 has no increase, and the first replay or
        // lockout after a restart would go unseen.
        for method in VERIFICATION_METHODS {
            for outcome in ["success", "failure", "replay", "locked_out"] {
                // Only an authenticator's code has a step to replay.
                if outcome != "replay" || method == VERIFICATION_METHODS[0] {
                    drop(verifications.get_or_create(&VerificationLabels { method, outcome }));
                }
            }
        }
        for kind in ["code", "password"] {
            drop(lockouts.get_or_create(&LockoutLabels { kind }));
        }
        for outcome in ["success", "invalid_credentials", "forbidden", "locked_out"] {
            drop(logins.get_or_create(&LoginLabels { outcome }));
        }
        Metrics {
            registry,
            requests,
            latency,
            verifications,
            lockouts,
            logins,
        }
    }

    /// Export the password pool's queue and refusals.
    pub fn observe_password_pool(&mut self, load: Arc<PoolLoad>) {
        self.registry
            .register_collector(Box::new(PasswordPoolLoad(load)));
    }

    /// Export the mail's counts and queue, read at each scrape.
    pub fn observe_mail(&mut self, dispatch: Arc<MailDispatch>) {
        self.registry
            .register_collector(Box::new(MailLoad(dispatch)));
    }

    /// Count one answered request. `route` is the route pattern.
    pub fn observe_request(
        &self,
        method: &actix_web::http::Method,
        route: &str,
        status: u16,
        seconds: f64,
    ) {
        let labels = HttpLabels {
            method: method_label(method),
            route: route.to_string(),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }

    /// Count the outcome of a second-factor verification. Refusals that are
    /// not about the code (not enrolled, MFA required) are not counted.
    pub fn observe_verification<T>(
        &self,
        method: Method,
        result: &Result<T, MfaError>,
        replayed: bool,
    ) {
        let outcome = match result {
            Ok(_) => "success",
            Err(MfaError::TooManyAttempts { .. }) => {
                self.lockouts
                    .get_or_create(&LockoutLabels { kind: "code" })
                    .inc();
                "locked_out"
            }
            Err(MfaError::InvalidCode | MfaError::CodeExpired) if replayed => "replay",
            Err(MfaError::InvalidCode | MfaError::CodeExpired) => "failure",
            Err(_) => return,
        };
        let method = match method {
            Method::Authenticator => VERIFICATION_METHODS[0],
            Method::Email => VERIFICATION_METHODS[1],
            Method::Recovery => VERIFICATION_METHODS[2],
        };
        self.verifications
            .get_or_create(&VerificationLabels { method, outcome })
            .inc();
    }

    /// Count a password login.
    pub fn observe_login<T>(&self, result: &Result<T, MfaError>) {
        let outcome = match result {
            Ok(_) => "success",
            Err(MfaError::InvalidCredentials) => "invalid_credentials",
            Err(MfaError::Forbidden | MfaError::SignInRefused(_)) => "forbidden",
            Err(MfaError::TooManyAttempts { .. }) => {
                self.lockouts
                    .get_or_create(&LockoutLabels { kind: "password" })
                    .inc();
                "locked_out"
            }
            Err(_) => return,
        };
        self.logins.get_or_create(&LoginLabels { outcome }).inc();
    }

    /// Count a request refused by the email resend throttle or a lockout
    /// outside verification (sending a code).
    pub fn observe_throttle<T>(&self, result: &Result<T, MfaError>) {
        if let Err(MfaError::TooManyAttempts { .. }) = result {
            self.lockouts
                .get_or_create(&LockoutLabels { kind: "code" })
                .inc();
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The `method` label: HTTP's nine methods by name, any other (a client
/// may send any token) as `other`.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("other")
}

/// `mfa_log_lines_dropped_total`, read from the log at each scrape.
#[derive(Debug)]
struct DroppedLogLines;

impl Collector for DroppedLogLines {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(crate::logging::dropped_log_lines());
        let metric = encoder.encode_descriptor(
            "mfa_log_lines_dropped",
            "Log lines dropped because the reader of stderr was stalled",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

/// `mfa_password_queue_jobs` and `mfa_password_jobs_refused_total`, read
/// from the pool at each scrape.
#[derive(Debug)]
struct PasswordPoolLoad(Arc<PoolLoad>);

impl Collector for PasswordPoolLoad {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let waiting = ConstGauge::new(i64::try_from(self.0.waiting()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "mfa_password_queue_jobs",
            "Password checks waiting for a thread of the password pool",
            None,
            waiting.metric_type(),
        )?;
        waiting.encode(metric)?;
        let refused = ConstCounter::new(self.0.refused());
        let metric = encoder.encode_descriptor(
            "mfa_password_jobs_refused",
            "Password checks refused with 429 because the password queue's delay was over its bound",
            None,
            refused.metric_type(),
        )?;
        refused.encode(metric)
    }
}

/// `mfa_mail_messages_total` and `mfa_mail_notices_queued`, read from the
/// dispatch at each scrape.
#[derive(Debug)]
struct MailLoad(Arc<MailDispatch>);

impl Collector for MailLoad {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let queued = ConstGauge::new(i64::try_from(self.0.notices_waiting()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "mfa_mail_notices_queued",
            "Notices waiting to be sent",
            None,
            queued.metric_type(),
        )?;
        queued.encode(metric)?;
        let mut family = encoder.encode_descriptor(
            "mfa_mail_messages",
            "Mail by kind (required or notice) and outcome",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (kind, outcome, count) in self.0.counts() {
            let counter = ConstCounter::new(count);
            let labels = [("kind", kind), ("outcome", outcome)];
            let metric = family.encode_family(&labels)?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_route_patterns_and_outcomes() {
        let m = Metrics::new();
        m.observe_request(
            &actix_web::http::Method::GET,
            "/user/users/{id}",
            200,
            0.004,
        );
        for invented in ["FOO", "BAR"] {
            let method = actix_web::http::Method::from_bytes(invented.as_bytes()).unwrap();
            m.observe_request(&method, "unmatched", 404, 0.001);
        }
        m.observe_verification::<()>(Method::Authenticator, &Err(MfaError::InvalidCode), true);
        m.observe_verification::<()>(
            Method::Email,
            &Err(MfaError::TooManyAttempts {
                retry_after_secs: 30,
            }),
            false,
        );
        let text = m.encode().unwrap();
        assert!(text.contains(r#"route="/user/users/{id}""#), "{text}");
        assert!(
            text.contains(
                r#"http_requests_total{method="other",route="unmatched",status="404"} 2"#
            ),
            "{text}"
        );
        assert!(!text.contains("FOO") && !text.contains("BAR"), "{text}");
        assert!(text.contains(r#"outcome="replay""#), "{text}");
        assert!(
            text.contains(r#"mfa_lockouts_total{kind="code"} 1"#),
            "{text}"
        );
        // No log installed in this process: nothing dropped.
        assert!(
            text.contains("# TYPE mfa_log_lines_dropped counter\nmfa_log_lines_dropped_total 0\n"),
            "{text}"
        );
    }
}

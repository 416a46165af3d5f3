//! Deleting what has ended: sessions, confirmed email changes, forgotten
//! password failures with the events of the unknown addresses among them,
//! and audit events past the deployment's retention. Nothing here changes what any
//! request sees, apart from the audit trail the operator chose to shorten.

use super::*;
use crate::ports::StoreResult;

/// How long a purge keeps a session after it ended: far longer than any
/// difference between the clocks of server processes, so no process
/// still takes a token for live whose session another has deleted.
pub const ENDED_SESSION_RETENTION_SECS: u64 = 60 * 60;

/// How long a purge keeps a confirmed email change. Its token answers
/// `invalid_code` whether the row is there (consumed) or not, so the hour
/// is only for someone reading the database right after a change.
pub const CONFIRMED_EMAIL_CHANGE_RETENTION_SECS: u64 = 60 * 60;

/// Rows deleted per write transaction of a purge: a short transaction,
/// so the SQLite writer is not held up for long.
pub const PURGE_BATCH: u32 = 1_000;

/// What one [`MfaService::purge`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Sessions that ended over [`ENDED_SESSION_RETENTION_SECS`] ago.
    pub sessions: u64,
    /// Email changes confirmed over
    /// [`CONFIRMED_EMAIL_CHANGE_RETENTION_SECS`] ago.
    pub email_changes: u64,
    /// Password failure counters of addresses whose failures are
    /// forgotten ([`crate::LockoutPolicy::forget_after_secs`]).
    pub password_failures: u64,
    /// Audit events older than [`ServiceConfig::audit_retention_secs`].
    pub audit_events: u64,
    /// Events of password attempts at addresses no user has, from before
    /// those addresses' failures are forgotten
    /// ([`crate::LockoutPolicy::forget_after_secs`]).
    pub anonymous_audit_events: u64,
}

impl<S: Store> MfaService<S> {
    /// Delete everything that has ended (see [`Purged`]), in batches of
    /// [`PURGE_BATCH`] rows per write transaction, until none is left.
    /// Several processes may purge at once: on PostgreSQL each skips the
    /// rows another holds. Without it, every login would leave a session
    /// row behind for good, and every event an audit row.
    pub fn purge(&self) -> MfaResult<Purged> {
        Ok(Purged {
            sessions: self.purge_ended_sessions()?,
            email_changes: self.purge_confirmed_email_changes()?,
            password_failures: self.purge_forgotten_password_failures()?,
            audit_events: self.purge_old_audit_events()?,
            anonymous_audit_events: self.purge_anonymous_audit_events()?,
        })
    }

    /// Delete the sessions that ended (revoked, expired or idle) more than
    /// [`ENDED_SESSION_RETENTION_SECS`] ago; how many. Their tokens
    /// resolved to nothing already, and nothing else refers to them; the
    /// audit trail keeps what happened.
    pub fn purge_ended_sessions(&self) -> MfaResult<u64> {
        let ended_before = self.now().minus_secs(ENDED_SESSION_RETENTION_SECS);
        let purge = SessionPurge {
            ended_before,
            full_seen_before: ended_before.minus_secs(self.config.session_idle_secs),
            limit: PURGE_BATCH,
        };
        self.delete_in_batches(|tx| tx.delete_ended_sessions(&purge))
    }

    /// Delete the email changes confirmed more than
    /// [`CONFIRMED_EMAIL_CHANGE_RETENTION_SECS`] ago; how many. A pending
    /// change stays, expired or not: it can be sent again.
    pub fn purge_confirmed_email_changes(&self) -> MfaResult<u64> {
        let before = self.now().minus_secs(CONFIRMED_EMAIL_CHANGE_RETENTION_SECS);
        self.delete_in_batches(|tx| tx.delete_confirmed_email_changes(before, PURGE_BATCH))
    }

    /// Delete the password failure counters whose last failure is older
    /// than the password lockout forgets; how many. The next failure of
    /// such an address would start from one anyway.
    pub fn purge_forgotten_password_failures(&self) -> MfaResult<u64> {
        let before = self.config.password_lockout.forget_before(self.now());
        self.delete_in_batches(|tx| tx.delete_forgotten_password_failures(before, PURGE_BATCH))
    }

    /// Delete the audit events older than
    /// [`ServiceConfig::audit_retention_secs`]; how many (none when the
    /// events are kept for good).
    pub fn purge_old_audit_events(&self) -> MfaResult<u64> {
        let Some(retention) = self.config.audit_retention_secs else {
            return Ok(0);
        };
        let before = self.now().minus_secs(retention);
        self.delete_in_batches(|tx| tx.delete_audit_events_before(before, PURGE_BATCH))
    }

    /// Delete the events of password attempts at addresses no user has
    /// ([`AuditEvent::is_anonymous_password_attempt`]) from before the
    /// failures they count are forgotten, whatever the audit retention;
    /// how many. Anyone can make them, one per login with an invented
    /// address, and no admin's trail shows them (they belong to no org):
    /// kept for good, they grew the database without a bound. They go
    /// with the counters they explain.
    pub fn purge_anonymous_audit_events(&self) -> MfaResult<u64> {
        let before = self.config.password_lockout.forget_before(self.now());
        self.delete_in_batches(|tx| tx.delete_anonymous_audit_events_before(before, PURGE_BATCH))
    }

    /// Run `batch`, which deletes at most [`PURGE_BATCH`] rows, one write
    /// transaction at a time until it deletes fewer; the rows deleted.
    fn delete_in_batches(
        &self,
        batch: impl Fn(&mut dyn StoreTx) -> StoreResult<u64> + Send + Sync,
    ) -> MfaResult<u64> {
        let mut deleted = 0;
        loop {
            // Each full batch deleted rows that existed, so this ends.
            let n = self.write(|tx| Ok(batch(tx)?))?;
            deleted += n;
            if n < u64::from(PURGE_BATCH) {
                return Ok(deleted);
            }
        }
    }
}

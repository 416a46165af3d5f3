//! PostgreSQL's fast path of an authenticator code check
//! ([`Store::apply_authenticator_success`](mfa_core::Store)): a read and one
//! conditional write, with no transaction around them.
//!
//! The locked path is a transaction of seven round trips (`BEGIN`, the
//! user's lock, the counter and the authenticator, the step, the audit
//! event, the session, `COMMIT`), after the token lookup. On this path a
//! verify is two statements, each committed by itself: the read (for
//! `CodeOwner::Token`, the token's session read with the counter and the
//! authenticator; for `CodeOwner::Session`, a session resolved before,
//! just the two) and the conditional write. docs/PERFORMANCE.md (tenth
//! and eleventh rounds) has the figures: +24% over the transaction, and
//! +8% more with the token read in the same statement.
//!
//! Why one statement is safe without the transaction's lock held while
//! the code is checked: it first locks the user's row, the authenticator
//! and the session (`FOR NO KEY UPDATE OF u, a, s`, taken in that order,
//! the user first like every transaction of the locking rule), and after
//! any wait PostgreSQL checks the conditions again on the rows as last
//! committed. The failure counter, which has no row to lock for most
//! users, is read after the locks with a snapshot of its own (see
//! [`APPLY`]): a failure counted while this statement waited for the
//! user's lock is seen, as on the locked path. The writes change only
//! locked rows and add the audit event, so they all happen, or none does
//! when a condition no longer holds. The conditions are what the domain
//! decided on: the same authenticator (its ciphertext: a new secret, or
//! the same secret encrypted again, reads as a change), verified, the same
//! last used step and a step above it, no failure and no lockout of code
//! checks, the session live, the user's, and still under the token the
//! caller presented.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bytea, Nullable, Text};
use mfa_core::{
    Authenticator, AuthenticatorSuccess, CodeOwner, FailureKind, FailureState, MfaResult,
    SessionMember,
};

use super::{PgDb, store_failure};
use crate::Error;
use crate::crypto::SecretCipher;
use crate::error::DbResultExt;
use crate::models::to_i64;
use crate::prepared::Prepared;
use crate::tx::{
    authenticator_from_row, failure_row_and_authenticator, failure_state_from,
    session_failure_row_and_authenticator,
};

/// The conditional write. `target` locks the rows and re-checks what the
/// domain decided on; `stepped` spends the step if it is above the last
/// used one and the failure counter is clear, read by
/// `failure_counter_is_clear` (a VOLATILE function: a snapshot of its own,
/// taken after the locks, so it sees every failure committed before them;
/// the statement's snapshot may be older). The session and the audit
/// event follow `stepped`: all three rows or none.
const APPLY: &str = "\
WITH target AS (
    SELECT a.user_id, s.id AS session_id
      FROM users u
      JOIN authenticators a ON a.user_id = u.id
      JOIN sessions s ON s.user_id = u.id
     WHERE u.id = $1
       AND s.id = $2
       AND a.verified
       AND a.secret_ciphertext = $4
       AND a.last_used_step IS NOT DISTINCT FROM $5
       AND s.revoked_at IS NULL
       AND s.expires_at > $6
       AND s.token_hash = $17
       FOR NO KEY UPDATE OF u, a, s
), stepped AS (
    UPDATE authenticators SET last_used_step = $7
      FROM target
     WHERE authenticators.user_id = target.user_id
       AND (authenticators.last_used_step IS NULL OR authenticators.last_used_step < $7)
       AND failure_counter_is_clear(target.user_id, $3)
    RETURNING target.session_id
), rotated AS (
    UPDATE sessions SET token_hash = $8, level = $9, expires_at = $10, last_seen_at = $6,
           mfa_passed = TRUE
      FROM stepped WHERE sessions.id = stepped.session_id
    RETURNING 1
), audited AS (
    INSERT INTO audit_events (at, org_id, actor_user_id, target_user_id, action, detail,
                              client_address)
    SELECT $11, $12, $13, $14, $15, $16, $18 FROM stepped
    RETURNING 1
)
SELECT (SELECT count(*) FROM stepped) AS stepped,
       (SELECT count(*) FROM rotated) AS rotated,
       (SELECT count(*) FROM audited) AS audited";

/// What [`APPLY`] wrote: one row of each, or none.
#[derive(QueryableByName)]
struct Applied {
    #[diesel(sql_type = BigInt)]
    stepped: i64,
    #[diesel(sql_type = BigInt)]
    rotated: i64,
    #[diesel(sql_type = BigInt)]
    audited: i64,
}

impl PgDb {
    /// See the module docs and the port's.
    pub(super) fn apply_authenticator_success(
        &self,
        cipher: &SecretCipher,
        owner: CodeOwner<'_>,
        check: impl FnOnce(
            Option<&SessionMember>,
            &FailureState,
            &Authenticator,
        ) -> Option<AuthenticatorSuccess>,
    ) -> MfaResult<bool> {
        let kind = FailureKind::Code;
        let (user, session, member, (counter, row)) = match owner {
            CodeOwner::Session { user, session } => {
                let read = self
                    .statement(|conn| Ok(failure_row_and_authenticator(conn, user, kind).db()?))?;
                (user, session, None, read)
            }
            CodeOwner::Token(token_hash) => {
                let found = self.statement(|conn| {
                    session_failure_row_and_authenticator(conn, token_hash, kind)
                        .map_err(store_failure)
                })?;
                let Some((member, read)) = found else {
                    return Ok(false);
                };
                (
                    member.session.user_id,
                    member.session.id,
                    Some(member),
                    read,
                )
            }
        };
        let failures = failure_state_from(counter).map_err(store_failure)?;
        let Some(row) = row.filter(|r| r.verified) else {
            return Ok(false);
        };
        if failures != FailureState::default() {
            return Ok(false);
        }
        let ciphertext = row.secret_ciphertext.clone();
        let last_used_step = row.last_used_step;
        let authenticator = authenticator_from_row(cipher, row).map_err(store_failure)?;
        let Some(success) = check(member.as_ref(), &failures, &authenticator) else {
            return Ok(false);
        };
        let step = to_i64(success.step, "TOTP step").map_err(store_failure)?;
        let (rotation, audit) = (&success.rotation, &success.audit);
        // `Prepared`: diesel keeps no prepared form of an `sql_query`, and
        // planning this statement anew cost PostgreSQL about 0.5 ms a call.
        let query = Prepared(
            diesel::sql_query(APPLY)
                .bind::<BigInt, _>(user.0)
                .bind::<BigInt, _>(session.0)
                .bind::<Text, _>(kind.as_str())
                .bind::<Bytea, _>(&ciphertext)
                .bind::<Nullable<BigInt>, _>(last_used_step)
                .bind::<BigInt, _>(rotation.now.0)
                .bind::<BigInt, _>(step)
                .bind::<Text, _>(&rotation.token_hash)
                .bind::<Text, _>(rotation.level.as_str())
                .bind::<BigInt, _>(rotation.expires_at.0)
                .bind::<BigInt, _>(audit.at.0)
                .bind::<Nullable<BigInt>, _>(audit.org_id.map(|o| o.0))
                .bind::<Nullable<BigInt>, _>(audit.actor_user_id.map(|u| u.0))
                .bind::<Nullable<BigInt>, _>(audit.target_user_id.map(|u| u.0))
                .bind::<Text, _>(audit.action.as_str())
                .bind::<Text, _>(&audit.detail)
                .bind::<Text, _>(&rotation.presented_token_hash)
                .bind::<Nullable<Text>, _>(crate::models::client_text(audit.client)),
        );
        let mut pooled = self.pool.get().map_err(store_failure)?;
        let applied = match query.get_result::<Applied>(&mut **pooled) {
            Ok(applied) => applied,
            // Lost with the connection: whether it committed is unknown.
            // The locked path, which starts on a live connection, reads
            // the outcome and decides (a success that did commit then
            // reads as a replay of its own code).
            Err(e) if pooled.note(&e) => return Ok(false),
            Err(e) => return Err(store_failure(Error::from(e))),
        };
        match (applied.stepped, applied.rotated, applied.audited) {
            (1, 1, 1) => Ok(true),
            (0, 0, 0) => Ok(false),
            other => Err(store_failure(Error::Corrupt(format!(
                "authenticator success wrote {other:?} rows"
            )))),
        }
    }
}

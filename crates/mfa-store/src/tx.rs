//! [`StoreTx`] for both backends. The method bodies are written once in
//! [`impl_store_tx!`] and instantiated for `SqliteConnection` and
//! `PgConnection`: the queries are the same, only diesel's backend types
//! differ, and concrete connection types spare us diesel's generic bounds.
//!
//! Lookups by a primary or unique key load with `get_result`, not `first`:
//! `first` appends `LIMIT ?`, and SQLite (3.47 and later) reads a bound
//! LIMIT while planning, so that binding it again expires the cached
//! prepared statement. Every execution was then parsed and planned anew,
//! about a fifth of the server's CPU time in an MFA verify (see
//! docs/PERFORMANCE.md). `first` stays where `ORDER BY … LIMIT 1` is meant.

use std::collections::HashMap;

use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel::sql_types::Integer;
use diesel::upsert::excluded;
use mfa_core::ports::{NewNotice, NoticeOrder, QueuedNotice, StoreResult};
use mfa_core::{
    AssuranceLevel, AuditAction, AuditEvent, AuditFilter, Authenticator, AuthenticatorState,
    EmailChange, EmailCode, FactorStates, FailureKind, FailureState, FailureSubject, Membership,
    MembershipCounts, NewAuditEvent, NewEmailCode, NewSession, NewUser, Org, OrgId, RecoveryCode,
    Session, SessionId, SessionMember, SessionPurge, SessionRotation, StoreError, StoreTx,
    Timestamp, User, UserId,
};
use mfa_totp::{Algorithm, Secret, TotpParams};

use crate::Error;
use crate::crypto::SecretCipher;
use crate::error::DbResultExt;
use crate::lock_rule::Held;
use crate::models::*;
use crate::prepared::Prepared;
use crate::schema::*;

/// One open transaction: a connection inside `BEGIN … COMMIT` and the cipher
/// for authenticator secrets.
pub(crate) struct Tx<'a, C> {
    conn: &'a mut C,
    cipher: &'a SecretCipher,
    /// The rows this transaction locked (debug builds; see [`Held`]).
    held: Held,
}

impl<'a, C> Tx<'a, C> {
    /// `lock_rule`: whether debug builds check the locking rule.
    pub(crate) fn new(conn: &'a mut C, cipher: &'a SecretCipher, lock_rule: bool) -> Self {
        Tx {
            conn,
            cipher,
            held: Held::new(lock_rule),
        }
    }
}

/// Joins the fields of `users.search_text`; no search can contain it (a
/// search that does matches nobody), so a match never spans two fields.
const SEARCH_SEPARATOR: char = '\u{1f}';

/// `users.search_text` and its copy on each of the user's memberships
/// (`memberships.search_text`, which the search reads): first name, last
/// name, email and the full name ("first last", so that "Mary Mem" finds
/// Mary Member), lower-cased like the search pattern ([`like_pattern`])
/// and joined by [`SEARCH_SEPARATOR`]. An address whose domain is
/// internationalised (stored in ASCII, `xn--…`) is there in its Unicode
/// form too, as an admin types it (`bücher`).
fn search_text(first_name: &str, last_name: &str, email: &str) -> String {
    let full_name = format!("{first_name} {last_name}");
    let mut fields: Vec<String> = [first_name, last_name, email, &full_name]
        .iter()
        .map(|field| field.to_lowercase())
        .collect();
    if let Some((local, domain)) = email.split_once('@')
        && domain.split('.').any(|label| label.starts_with("xn--"))
        && let (unicode, Ok(())) = idna::domain_to_unicode(domain)
    {
        fields.push(format!("{local}@{unicode}").to_lowercase());
    }
    fields.join(&SEARCH_SEPARATOR.to_string())
}

/// `%search%` for `LIKE … ESCAPE '\'`, lower-cased, wildcards escaped.
fn like_pattern(search: &str) -> String {
    let mut pattern = String::with_capacity(search.len() + 2);
    pattern.push('%');
    for c in search.to_lowercase().chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Most ids bound in one `IN (…)`: SQLite allows 32766 variables.
const IDS_PER_QUERY: usize = 1000;

pub(crate) fn authenticator_from_row(
    cipher: &SecretCipher,
    r: AuthenticatorRow,
) -> Result<Authenticator, Error> {
    let user_id = UserId(r.user_id);
    let secret: Secret = cipher.decrypt(user_id, &r.secret_ciphertext)?;
    let algorithm: Algorithm = r
        .algorithm
        .parse()
        .map_err(|_| Error::Corrupt(format!("authenticator algorithm {:?}", r.algorithm)))?;
    let params = TotpParams {
        algorithm,
        digits: to_unsigned(r.digits, "authenticator digits")?,
        period: to_unsigned(r.period, "authenticator period")?,
    };
    let state = authenticator_state(r.verified, r.verified_at, r.expires_at)?;
    let last_used_step = r
        .last_used_step
        .map(|s| to_unsigned(s, "last used step"))
        .transpose()?;
    Ok(Authenticator {
        user_id,
        secret,
        params,
        state,
        last_used_step,
        created_at: ts(r.created_at),
    })
}

/// The state of an authenticator from its columns.
fn authenticator_state(
    verified: bool,
    verified_at: Option<i64>,
    expires_at: i64,
) -> Result<AuthenticatorState, Error> {
    if !verified {
        return Ok(AuthenticatorState::Pending {
            expires_at: ts(expires_at),
        });
    }
    let verified_at = verified_at
        .ok_or_else(|| Error::Corrupt("verified authenticator without verified_at".into()))?;
    Ok(AuthenticatorState::Verified {
        verified_at: ts(verified_at),
    })
}

/// What a code check reads under the user's lock: the failure counter's
/// `(failures, locked_until)` and the authenticator, each if there is one.
pub(crate) type LockedCodeCheck = (Option<(i32, Option<i64>)>, Option<AuthenticatorRow>);

/// What [`StoreTx::factor_states`] reads: the authenticator's verified
/// flag, verification and expiry times, the email factor's verification
/// time, and the number of unused recovery codes.
type FactorStatesRow = (Option<(bool, Option<i64>, i64)>, Option<i64>, i64);

/// The users `$filter` keeps, each joined to their authenticator, email
/// factor and unused recovery codes, one group per user: what
/// [`factor_states_columns!`] reads.
macro_rules! factor_states_of_users {
    ($filter:expr) => {
        users::table
            .left_join(authenticators::table)
            .left_join(email_factors::table)
            .left_join(
                recovery_codes::table.on(recovery_codes::user_id
                    .eq(users::id)
                    .and(recovery_codes::used_at.is_null())),
            )
            .filter($filter)
            .group_by((users::id, authenticators::user_id, email_factors::user_id))
    };
}

/// The session `filter` picks, with its user's superadmin flag and its
/// membership in the session's org, as a [`SessionMember`] (a macro, not
/// a function, as diesel's filter types differ by backend).
macro_rules! session_member_where {
    ($conn:expr, $filter:expr) => {{
        let row: Option<(SessionRow, bool, Option<MembershipRow>)> = sessions::table
            .inner_join(users::table)
            .left_join(
                memberships::table.on(memberships::user_id
                    .eq(sessions::user_id)
                    .and(memberships::org_id.eq(sessions::org_id))),
            )
            .filter($filter)
            .select((
                SessionRow::as_select(),
                users::is_super_admin,
                Option::<MembershipRow>::as_select(),
            ))
            .get_result($conn)
            .optional()
            .db()?;
        match row {
            None => None,
            Some((session, is_super_admin, membership)) => Some(SessionMember {
                session: Session::try_from(session).db()?,
                is_super_admin,
                membership: membership.map(Membership::from),
            }),
        }
    }};
}

/// The columns of a [`FactorStatesRow`] in [`factor_states_of_users!`].
macro_rules! factor_states_columns {
    () => {
        (
            (
                authenticators::verified,
                authenticators::verified_at,
                authenticators::expires_at,
            )
                .nullable(),
            email_factors::verified_at.nullable(),
            diesel::dsl::count(recovery_codes::id.nullable()),
        )
    };
}

/// A session, its user's superadmin flag and membership, and the user's
/// factor states (the unused recovery codes counted by a subquery).
type SessionMemberFactorsRow = (
    SessionRow,
    bool,
    Option<MembershipRow>,
    Option<(bool, Option<i64>, i64)>,
    Option<i64>,
    Option<i64>,
);

// The factor states are grouped by the primary keys of the user's row, the
// authenticator and the email factor (at most one of each per user), which
// determine the columns read from them.
diesel::allow_columns_to_appear_in_same_group_by_clause!(
    users::id,
    authenticators::user_id,
    authenticators::verified,
    authenticators::verified_at,
    authenticators::expires_at,
    email_factors::user_id,
    email_factors::verified_at,
);

/// A failure counter's `(failures, locked_until)`; no row is no failures.
pub(crate) fn failure_state_from(row: Option<(i32, Option<i64>)>) -> Result<FailureState, Error> {
    let Some((failures, locked_until)) = row else {
        return Ok(FailureState::default());
    };
    Ok(FailureState {
        failures: to_unsigned(failures, "failure count")?,
        locked_until: opt_ts(locked_until),
    })
}

impl Tx<'_, diesel::SqliteConnection> {
    /// The failure counter, read. Write transactions are serial on SQLite
    /// (`BEGIN IMMEDIATE`), so reading it is holding it.
    fn lock_failure_row(
        &mut self,
        user: UserId,
        kind: FailureKind,
    ) -> QueryResult<Option<(i32, Option<i64>)>> {
        failure_counters::table
            .find((user.0, kind.as_str()))
            .select((failure_counters::failures, failure_counters::locked_until))
            .get_result(self.conn)
            .optional()
    }

    /// [`Tx::lock_failure_row`] and the authenticator: two statements, as
    /// each costs no round trip here.
    fn lock_failure_row_and_authenticator(
        &mut self,
        user: UserId,
        kind: FailureKind,
    ) -> QueryResult<LockedCodeCheck> {
        let counter = self.lock_failure_row(user, kind)?;
        let authenticator = authenticators::table
            .find(user.0)
            .select(AuthenticatorRow::as_select())
            .get_result(self.conn)
            .optional()?;
        Ok((counter, authenticator))
    }
}

impl Tx<'_, diesel::PgConnection> {
    /// `FOR NO KEY UPDATE` on the user's row (a user deleted meanwhile has
    /// none to lock, and nothing else to read either).
    fn lock_user_row(&mut self, user: UserId) -> QueryResult<()> {
        users::table
            .find(user.0)
            .select(users::id)
            .for_no_key_update()
            .get_result::<i64>(self.conn)
            .optional()?;
        Ok(())
    }

    /// The failure counter, held until the transaction ends by a lock on
    /// the user's row (`FOR NO KEY UPDATE`: attempts of one user queue on
    /// it; foreign-key checks and other users do not). The counter row
    /// cannot carry the lock: most users have none (it exists only while
    /// there are failures), and creating one per user to lock it grew the
    /// table under plans made for an empty one: sequential scans, and
    /// 1.08 ms of PostgreSQL CPU per MFA verify instead of 0.75 ms.
    fn lock_failure_row(
        &mut self,
        user: UserId,
        kind: FailureKind,
    ) -> QueryResult<Option<(i32, Option<i64>)>> {
        self.lock_user_row(user)?;
        // A statement of its own, after the lock: its snapshot is taken
        // once the attempts before this one have committed. (Read in the
        // locking statement, the counter would be as of before the wait.)
        failure_counters::table
            .find((user.0, kind.as_str()))
            .select((failure_counters::failures, failure_counters::locked_until))
            .get_result(self.conn)
            .optional()
    }

    /// [`Tx::lock_failure_row`] with the authenticator read in the same
    /// statement as the counter, after the lock: one round trip fewer per
    /// code check.
    fn lock_failure_row_and_authenticator(
        &mut self,
        user: UserId,
        kind: FailureKind,
    ) -> QueryResult<LockedCodeCheck> {
        self.lock_user_row(user)?;
        failure_row_and_authenticator(self.conn, user, kind)
    }
}

/// The failure counter of `kind` and the authenticator of a user, in one
/// statement. Both are joined to the user's row, which exists (a session
/// of the user is being checked); a user deleted meanwhile reads as no
/// counter and no authenticator. Read after the user's lock by the locked
/// code check, and without a lock by the fast path of
/// `Store::apply_authenticator_success`.
pub(crate) fn failure_row_and_authenticator(
    conn: &mut diesel::PgConnection,
    user: UserId,
    kind: FailureKind,
) -> QueryResult<LockedCodeCheck> {
    let row: Option<LockedCodeCheck> = users::table
        .left_join(
            failure_counters::table.on(failure_counters::user_id
                .eq(users::id)
                .and(failure_counters::kind.eq(kind.as_str()))),
        )
        .left_join(authenticators::table)
        .filter(users::id.eq(user.0))
        .select((
            (failure_counters::failures, failure_counters::locked_until).nullable(),
            // `AuthenticatorRow` is loaded by position, in the table's
            // column order (diesel loads no nullable `as_select` inside a
            // tuple).
            authenticators::all_columns.nullable(),
        ))
        .get_result(conn)
        .optional()?;
    Ok(row.unwrap_or((None, None)))
}

/// The factor states of a [`FactorStatesRow`].
fn factor_states_from(row: FactorStatesRow) -> Result<FactorStates, Error> {
    let (authenticator, email_verified_at, left) = row;
    Ok(FactorStates {
        authenticator: authenticator
            .map(|(verified, verified_at, expires_at)| {
                authenticator_state(verified, verified_at, expires_at)
            })
            .transpose()?,
        email_verified_at: opt_ts(email_verified_at),
        recovery_codes_left: count(left)?,
    })
}

/// The ids of the sessions `$purge` covers ([`SessionPurge::covers`]),
/// oldest first, at most `$purge.limit` of them.
macro_rules! ended_sessions {
    ($purge:expr) => {
        sessions::table
            .select(sessions::id)
            .filter(
                sessions::revoked_at
                    .lt($purge.ended_before.0)
                    .or(sessions::expires_at.lt($purge.ended_before.0))
                    .or(sessions::level
                        .eq(AssuranceLevel::Full.as_str())
                        .and(sessions::last_seen_at.lt($purge.full_seen_before.0))),
            )
            .order(sessions::id)
            .limit(i64::from($purge.limit))
    };
}

/// The ids of the email changes confirmed before `$before`, oldest first,
/// at most `$limit` of them.
macro_rules! confirmed_email_changes {
    ($before:expr, $limit:expr) => {
        email_changes::table
            .select(email_changes::id)
            .filter(email_changes::consumed_at.lt($before.0))
            .order(email_changes::id)
            .limit(i64::from($limit))
    };
}

/// The upsert of one more failure into `$table` (`failure_counters` or
/// `password_failures`, whose counter columns have the same names):
/// `$values` for a new counter; on `$conflict`, one more failure, or one
/// again when the last came before `$forget_before`. Returns the failures
/// and the lockout after it.
macro_rules! add_failure {
    ($table:ident, $conflict:expr, $values:expr, $forget_before:expr) => {
        Prepared(
            diesel::insert_into($table::table)
                .values($values)
                .on_conflict($conflict)
                .do_update()
                .set((
                    $table::failures.eq(case_when(
                        $table::last_failure_at.lt($forget_before.0),
                        1.into_sql::<Integer>(),
                    )
                    .otherwise($table::failures + 1)),
                    $table::last_failure_at.eq(excluded($table::last_failure_at)),
                ))
                .returning(($table::failures, $table::locked_until)),
        )
    };
}

/// The keys of the addresses whose last password failure came before
/// `$before`, oldest first, at most `$limit` of them.
macro_rules! forgotten_password_failures {
    ($before:expr, $limit:expr) => {
        password_failures::table
            .select(password_failures::email_key)
            .filter(password_failures::last_failure_at.lt($before.0))
            .order(password_failures::last_failure_at)
            .limit(i64::from($limit))
    };
}

/// The ids of the audit events recorded before `$before`, oldest first, at
/// most `$limit` of them (by `audit_events_at_idx`).
macro_rules! old_audit_events {
    ($before:expr, $limit:expr) => {
        audit_events::table
            .select(audit_events::id)
            .filter(audit_events::at.lt($before.0))
            .order(audit_events::at)
            .limit(i64::from($limit))
    };
}

/// Ids of the oldest events of password attempts at addresses no user has,
/// recorded before `$before`: the rows of the partial index
/// `audit_events_anonymous_at_idx`, whose condition this repeats.
macro_rules! anonymous_audit_events {
    ($before:expr, $limit:expr) => {
        audit_events::table
            .select(audit_events::id)
            .filter(audit_events::org_id.is_null())
            .filter(audit_events::actor_user_id.is_null())
            .filter(audit_events::target_user_id.is_null())
            .filter(audit_events::action.eq_any([
                AuditAction::LoginFailed.as_str(),
                AuditAction::LockedOut.as_str(),
                AuditAction::RefusedWhileLockedOut.as_str(),
            ]))
            .filter(audit_events::at.lt($before.0))
            .order(audit_events::at)
            .limit(i64::from($limit))
    };
}

/// The first notice due at `now` by id, `asc` (oldest) or `desc`.
macro_rules! due_notice {
    ($now:expr, $direction:ident) => {
        notices::table
            .select(notices::id)
            .filter(notices::due_at.le($now.0))
            .order(notices::id.$direction())
            .limit(1)
    };
}

impl Tx<'_, diesel::SqliteConnection> {
    /// The notice a claim takes. Write transactions are serial here:
    /// nobody else holds it.
    fn due_notice_id(&mut self, now: Timestamp, order: NoticeOrder) -> QueryResult<Option<i64>> {
        match order {
            NoticeOrder::Oldest => due_notice!(now, asc).first(self.conn).optional(),
            NoticeOrder::Newest => due_notice!(now, desc).first(self.conn).optional(),
        }
    }

    /// The sessions a purge deletes. Write transactions are serial here:
    /// nobody else holds them.
    fn ended_session_ids(&mut self, purge: &SessionPurge) -> QueryResult<Vec<i64>> {
        ended_sessions!(purge).load(self.conn)
    }

    fn confirmed_email_change_ids(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> QueryResult<Vec<i64>> {
        confirmed_email_changes!(before, limit).load(self.conn)
    }

    fn old_audit_event_ids(&mut self, before: Timestamp, limit: u32) -> QueryResult<Vec<i64>> {
        old_audit_events!(before, limit).load(self.conn)
    }

    fn anonymous_audit_event_ids(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> QueryResult<Vec<i64>> {
        anonymous_audit_events!(before, limit).load(self.conn)
    }

    fn forgotten_password_failure_keys(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> QueryResult<Vec<String>> {
        forgotten_password_failures!(before, limit).load(self.conn)
    }
}

impl Tx<'_, diesel::PgConnection> {
    /// Locked, skipping those another process is claiming: two processes
    /// delivering at once take different notices, and neither waits.
    fn due_notice_id(&mut self, now: Timestamp, order: NoticeOrder) -> QueryResult<Option<i64>> {
        match order {
            NoticeOrder::Oldest => due_notice!(now, asc)
                .for_update()
                .skip_locked()
                .first(self.conn)
                .optional(),
            NoticeOrder::Newest => due_notice!(now, desc)
                .for_update()
                .skip_locked()
                .first(self.conn)
                .optional(),
        }
    }

    /// The sessions a purge deletes, locked, skipping those another
    /// transaction holds (a session being verified or revoked, under its
    /// user's lock): a purge never waits for a request, so it never
    /// deadlocks with one, and a skipped session waits for the next purge.
    fn ended_session_ids(&mut self, purge: &SessionPurge) -> QueryResult<Vec<i64>> {
        ended_sessions!(purge)
            .for_update()
            .skip_locked()
            .load(self.conn)
    }

    /// Locked, skipping those another transaction holds, as sessions.
    fn confirmed_email_change_ids(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> QueryResult<Vec<i64>> {
        confirmed_email_changes!(before, limit)
            .for_update()
            .skip_locked()
            .load(self.conn)
    }

    /// Locked, skipping those another process's purge holds: two purges
    /// split the work instead of one waiting for the other.
    fn old_audit_event_ids(&mut self, before: Timestamp, limit: u32) -> QueryResult<Vec<i64>> {
        old_audit_events!(before, limit)
            .for_update()
            .skip_locked()
            .load(self.conn)
    }

    /// Locked, skipping those another process's purge holds.
    fn anonymous_audit_event_ids(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> QueryResult<Vec<i64>> {
        anonymous_audit_events!(before, limit)
            .for_update()
            .skip_locked()
            .load(self.conn)
    }

    /// Locked, skipping those another transaction holds (a login of that
    /// email counting a failure): the purge never waits for a request.
    fn forgotten_password_failure_keys(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> QueryResult<Vec<String>> {
        forgotten_password_failures!(before, limit)
            .for_update()
            .skip_locked()
            .load(self.conn)
    }
}

impl Tx<'_, diesel::SqliteConnection> {
    /// Two statements: in SQLite's read transaction there is no round
    /// trip to save.
    fn session_member_with_factor_states(
        &mut self,
        token_hash: &str,
    ) -> StoreResult<Option<(SessionMember, FactorStates)>> {
        mfa_core::ports::session_member_then_factor_states(self, token_hash)
    }
}

impl Tx<'_, diesel::PgConnection> {
    /// One statement: the session, its user and membership as
    /// [`StoreTx::session_member`] reads them, with the user's
    /// authenticator and email factor joined and the unused recovery codes
    /// counted as [`StoreTx::factor_states`] does. One round trip and one
    /// snapshot instead of two.
    fn session_member_with_factor_states(
        &mut self,
        token_hash: &str,
    ) -> StoreResult<Option<(SessionMember, FactorStates)>> {
        let unused_codes = recovery_codes::table
            .filter(recovery_codes::user_id.eq(sessions::user_id))
            .filter(recovery_codes::used_at.is_null())
            .count()
            .single_value();
        let row: Option<SessionMemberFactorsRow> = sessions::table
            .inner_join(users::table)
            .left_join(
                memberships::table.on(memberships::user_id
                    .eq(sessions::user_id)
                    .and(memberships::org_id.eq(sessions::org_id))),
            )
            .left_join(authenticators::table.on(authenticators::user_id.eq(sessions::user_id)))
            .left_join(email_factors::table.on(email_factors::user_id.eq(sessions::user_id)))
            .filter(sessions::token_hash.eq(token_hash))
            .select((
                SessionRow::as_select(),
                users::is_super_admin,
                Option::<MembershipRow>::as_select(),
                (
                    authenticators::verified,
                    authenticators::verified_at,
                    authenticators::expires_at,
                )
                    .nullable(),
                email_factors::verified_at.nullable(),
                unused_codes,
            ))
            .get_result(self.conn)
            .optional()
            .db()?;
        let Some((session, is_super_admin, membership, authenticator, email, left)) = row else {
            return Ok(None);
        };
        let member = SessionMember {
            session: Session::try_from(session).db()?,
            is_super_admin,
            membership: membership.map(Membership::from),
        };
        let states = factor_states_from((authenticator, email, left.unwrap_or(0))).db()?;
        Ok(Some((member, states)))
    }
}

/// [`failure_row_and_authenticator`] for the session of a token hash,
/// read in the same statement with its user and membership as
/// [`StoreTx::session_member`] reads them; `None` without such a session.
/// Read without a lock by the fast path of
/// `Store::apply_authenticator_success` for `CodeOwner::Token`.
pub(crate) fn session_failure_row_and_authenticator(
    conn: &mut diesel::PgConnection,
    token_hash: &str,
    kind: FailureKind,
) -> Result<Option<(SessionMember, LockedCodeCheck)>, Error> {
    let row = sessions::table
        .inner_join(users::table)
        .left_join(
            memberships::table.on(memberships::user_id
                .eq(sessions::user_id)
                .and(memberships::org_id.eq(sessions::org_id))),
        )
        .left_join(
            failure_counters::table.on(failure_counters::user_id
                .eq(sessions::user_id)
                .and(failure_counters::kind.eq(kind.as_str()))),
        )
        .left_join(authenticators::table.on(authenticators::user_id.eq(sessions::user_id)))
        .filter(sessions::token_hash.eq(token_hash))
        .select((
            SessionRow::as_select(),
            users::is_super_admin,
            Option::<MembershipRow>::as_select(),
            (failure_counters::failures, failure_counters::locked_until).nullable(),
            // `AuthenticatorRow` is loaded by position, in the table's
            // column order (diesel loads no nullable `as_select` inside a
            // tuple).
            authenticators::all_columns.nullable(),
        ))
        .get_result::<(
            SessionRow,
            bool,
            Option<MembershipRow>,
            Option<(i32, Option<i64>)>,
            Option<AuthenticatorRow>,
        )>(conn)
        .optional()?;
    let Some((session, is_super_admin, membership, counter, authenticator)) = row else {
        return Ok(None);
    };
    let member = SessionMember {
        session: Session::try_from(session)?,
        is_super_admin,
        membership: membership.map(Membership::from),
    };
    Ok(Some((member, (counter, authenticator))))
}

impl Tx<'_, diesel::SqliteConnection> {
    /// Nothing to lock: write transactions are serial on SQLite.
    fn lock_user_rows(&mut self, _users: &[UserId]) -> QueryResult<()> {
        Ok(())
    }

    /// The org, read: write transactions are serial on SQLite.
    fn locked_org(&mut self, id: OrgId) -> StoreResult<Option<Org>> {
        StoreTx::org(self, id)
    }

    /// The org, read: write transactions are serial on SQLite.
    fn referenced_org(&mut self, id: OrgId) -> StoreResult<Option<Org>> {
        StoreTx::org(self, id)
    }

    /// The user, read: write transactions are serial on SQLite.
    fn locked_user(&mut self, id: UserId) -> StoreResult<Option<User>> {
        StoreTx::user(self, id)
    }

    /// The membership, read: write transactions are serial on SQLite.
    fn locked_membership(&mut self, user: UserId, org: OrgId) -> StoreResult<Option<Membership>> {
        StoreTx::membership(self, user, org)
    }
}

/// The org of a locking read's row, if any.
fn org_of(row: QueryResult<Option<OrgRow>>) -> StoreResult<Option<Org>> {
    row.db()?.map(Org::try_from).transpose().db()
}

impl Tx<'_, diesel::PgConnection> {
    /// The org under `FOR NO KEY UPDATE`: after a wait for the lock,
    /// PostgreSQL returns the row as the transaction before committed it.
    /// (The plain read's statement plus the lock clause, which diesel
    /// allows on PostgreSQL only, so it cannot live in `impl_store_tx!`.)
    fn locked_org(&mut self, id: OrgId) -> StoreResult<Option<Org>> {
        org_of(
            orgs::table
                .find(id.0)
                .select(OrgRow::as_select())
                .for_no_key_update()
                .get_result(self.conn)
                .optional(),
        )
    }

    /// The org under `FOR KEY SHARE`, which only a deletion (or a change
    /// of its id) waits for: the lock a row inserted later that references
    /// the org takes anyway, taken when the org is read.
    fn referenced_org(&mut self, id: OrgId) -> StoreResult<Option<Org>> {
        org_of(
            orgs::table
                .find(id.0)
                .select(OrgRow::as_select())
                .for_key_share()
                .get_result(self.conn)
                .optional(),
        )
    }

    /// The user under `FOR NO KEY UPDATE`, as [`Tx::locked_org`]: the
    /// lock and the read in one statement, which after a wait returns the
    /// row as the transaction before committed it.
    fn locked_user(&mut self, id: UserId) -> StoreResult<Option<User>> {
        let row: Option<UserRow> = users::table
            .find(id.0)
            .select(UserRow::as_select())
            .for_no_key_update()
            .get_result(self.conn)
            .optional()
            .db()?;
        Ok(row.map(User::from))
    }

    /// The membership under `FOR NO KEY UPDATE`, as [`Tx::locked_org`].
    fn locked_membership(&mut self, user: UserId, org: OrgId) -> StoreResult<Option<Membership>> {
        let row: Option<MembershipRow> = memberships::table
            .find((user.0, org.0))
            .select(MembershipRow::as_select())
            .for_no_key_update()
            .get_result(self.conn)
            .optional()
            .db()?;
        Ok(row.map(Membership::from))
    }
}

impl Tx<'_, diesel::PgConnection> {
    /// `FOR NO KEY UPDATE` on the users' rows, taken in id order (the rows
    /// are locked as the sorted result is produced). The same lock as a
    /// code check's ([`Tx::lock_failure_row`]), so a reset and a check of
    /// one user queue on it, whichever comes first.
    fn lock_user_rows(&mut self, users: &[UserId]) -> QueryResult<()> {
        for chunk in id_chunks(users) {
            users::table
                .filter(users::id.eq_any(chunk))
                .order(users::id.asc())
                .select(users::id)
                .for_no_key_update()
                .load::<i64>(self.conn)?;
        }
        Ok(())
    }
}

/// User ids as bound parameters, at most [`IDS_PER_QUERY`] at a time.
fn id_chunks(users: &[UserId]) -> impl Iterator<Item = Vec<i64>> + '_ {
    users
        .chunks(IDS_PER_QUERY)
        .map(|chunk| chunk.iter().map(|id| id.0).collect())
}

/// Delete the rows of `$table` whose `user_id` is one of `$users`, a
/// statement per chunk of ids (inside [`impl_store_tx!`]: `?` returns a
/// `StoreResult`).
macro_rules! delete_rows_of_users {
    ($conn:expr, $table:ident, $users:expr) => {
        for chunk in id_chunks($users) {
            diesel::delete($table::table.filter($table::user_id.eq_any(chunk)))
                .execute($conn)
                .db()?;
        }
    };
}

macro_rules! impl_store_tx {
    ($conn:ty, $db:ty) => {
        impl Tx<'_, $conn> {
            /// [`StoreTx::void_email_codes`] for each of `users`: marked
            /// consumed as of their sending (if unused) and without a hash,
            /// which no check of a code takes for a live one or one sent.
            fn void_email_codes_of(&mut self, users: &[UserId]) -> StoreResult<()> {
                // One statement for both: a reset of 1,000 ids runs it once.
                let consumed = diesel::dsl::sql::<
                    diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
                >("COALESCE(consumed_at, sent_at)");
                for chunk in id_chunks(users) {
                    diesel::update(email_codes::table.filter(email_codes::user_id.eq_any(chunk)))
                        .set((
                            email_codes::code_hash.eq(""),
                            email_codes::consumed_at.eq(consumed.clone()),
                        ))
                        .execute(self.conn)
                        .db()?;
                }
                Ok(())
            }

            /// Run `f` in a savepoint, so that a constraint violation the
            /// caller may handle leaves the transaction usable (PostgreSQL
            /// otherwise aborts the whole transaction on any error).
            fn savepoint<T>(
                &mut self,
                f: impl FnOnce(&mut $conn) -> QueryResult<T>,
            ) -> QueryResult<T> {
                self.conn.transaction(f)
            }

            /// Delete the audit events `ids` a purge picked; how many.
            fn delete_audit_events(&mut self, ids: &[i64]) -> StoreResult<u64> {
                if ids.is_empty() {
                    return Ok(0);
                }
                let deleted =
                    diesel::delete(audit_events::table.filter(audit_events::id.eq_any(ids)))
                        .execute(self.conn)
                        .db()?;
                Ok(deleted as u64)
            }
        }

        impl StoreTx for Tx<'_, $conn> {
            // ---- orgs

            fn insert_org(&mut self, name: &str, now: Timestamp) -> StoreResult<Org> {
                let row: OrgRow = diesel::insert_into(orgs::table)
                    .values((
                        orgs::name.eq(name),
                        orgs::is_mfa_enforced.eq(false),
                        orgs::mfa_enforced_at.eq(None::<i64>),
                        orgs::mfa_grace_period_hours.eq(0),
                        orgs::created_at.eq(now.0),
                    ))
                    .returning(OrgRow::as_returning())
                    .get_result(self.conn)
                    .db()?;
                // A row no other transaction can see until this one commits.
                self.held.org(OrgId(row.id));
                Org::try_from(row).db()
            }

            fn org(&mut self, id: OrgId) -> StoreResult<Option<Org>> {
                orgs::table
                    .find(id.0)
                    .select(OrgRow::as_select())
                    .get_result(self.conn)
                    .optional()
                    .db()?
                    .map(Org::try_from)
                    .transpose()
                    .db()
            }

            fn org_for_update(&mut self, id: OrgId) -> StoreResult<Option<Org>> {
                self.held.org(id);
                self.locked_org(id)
            }

            fn org_for_reference(&mut self, id: OrgId) -> StoreResult<Option<Org>> {
                self.referenced_org(id)
            }

            fn all_orgs(&mut self) -> StoreResult<Vec<Org>> {
                orgs::table
                    .order(orgs::id.asc())
                    .select(OrgRow::as_select())
                    .load(self.conn)
                    .db()?
                    .into_iter()
                    .map(Org::try_from)
                    .collect::<Result<_, _>>()
                    .db()
            }

            fn update_org(&mut self, org: &Org) -> StoreResult<()> {
                self.held.require_org(org.id, "update_org");
                let grace = to_i32(org.mfa_grace_period_hours, "grace period").db()?;
                let changed = diesel::update(orgs::table.find(org.id.0))
                    .set((
                        orgs::name.eq(&org.name),
                        orgs::is_mfa_enforced.eq(org.is_mfa_enforced),
                        orgs::mfa_enforced_at.eq(org.mfa_enforced_at.map(|t| t.0)),
                        orgs::mfa_grace_period_hours.eq(grace),
                    ))
                    .execute(self.conn)
                    .db()?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            fn delete_org(&mut self, id: OrgId) -> StoreResult<bool> {
                // memberships and sessions go with it (ON DELETE CASCADE)
                let deleted = diesel::delete(orgs::table.find(id.0))
                    .execute(self.conn)
                    .db()?;
                Ok(deleted > 0)
            }

            // ---- users

            fn insert_user(&mut self, user: &NewUser) -> StoreResult<User> {
                let email = user.email.to_lowercase();
                let row: UserRow = self
                    .savepoint(|conn| {
                        diesel::insert_into(users::table)
                            .values((
                                users::email.eq(&email),
                                users::first_name.eq(&user.first_name),
                                users::last_name.eq(&user.last_name),
                                users::password_hash.eq(&user.password_hash),
                                users::is_super_admin.eq(user.is_super_admin),
                                users::mfa_opt_in.eq(false),
                                users::last_login_at.eq(None::<i64>),
                                users::created_at.eq(user.created_at.0),
                                users::search_text.eq(search_text(
                                    &user.first_name,
                                    &user.last_name,
                                    &email,
                                )),
                            ))
                            .returning(UserRow::as_returning())
                            .get_result(conn)
                    })
                    .db()?;
                // A row no other transaction can see until this one commits.
                self.held.users(&[UserId(row.id)]);
                Ok(row.into())
            }

            fn user(&mut self, id: UserId) -> StoreResult<Option<User>> {
                let row: Option<UserRow> = users::table
                    .find(id.0)
                    .select(UserRow::as_select())
                    .get_result(self.conn)
                    .optional()
                    .db()?;
                Ok(row.map(User::from))
            }

            fn user_for_update(&mut self, id: UserId) -> StoreResult<Option<User>> {
                self.held.users(&[id]);
                self.locked_user(id)
            }

            fn user_by_email(&mut self, email: &str) -> StoreResult<Option<User>> {
                let row: Option<UserRow> = users::table
                    .filter(users::email.eq(email.to_lowercase()))
                    .select(UserRow::as_select())
                    .get_result(self.conn)
                    .optional()
                    .db()?;
                Ok(row.map(User::from))
            }

            fn user_with_memberships_by_email(
                &mut self,
                email: &str,
            ) -> StoreResult<Option<(User, Vec<Membership>)>> {
                let rows: Vec<(UserRow, Option<MembershipRow>)> = users::table
                    .left_join(memberships::table)
                    .filter(users::email.eq(email.to_lowercase()))
                    .order(memberships::org_id.asc())
                    .select((UserRow::as_select(), Option::<MembershipRow>::as_select()))
                    .load(self.conn)
                    .db()?;
                let mut rows = rows.into_iter();
                let Some((user, first)) = rows.next() else {
                    return Ok(None);
                };
                let memberships = first
                    .into_iter()
                    .chain(rows.filter_map(|(_, m)| m))
                    .map(Membership::from)
                    .collect();
                Ok(Some((User::from(user), memberships)))
            }

            fn users_by_ids(&mut self, ids: &[UserId]) -> StoreResult<Vec<User>> {
                let mut found: Vec<User> = Vec::with_capacity(ids.len());
                for chunk in id_chunks(ids) {
                    let rows: Vec<UserRow> = users::table
                        .filter(users::id.eq_any(chunk))
                        .select(UserRow::as_select())
                        .load(self.conn)
                        .db()?;
                    found.extend(rows.into_iter().map(User::from));
                }
                found.sort_by_key(|u| u.id);
                found.dedup_by_key(|u| u.id);
                Ok(found)
            }

            fn update_user(&mut self, user: &User) -> StoreResult<()> {
                self.held.require_users(&[user.id], "update_user");
                let email = user.email.to_lowercase();
                let text = search_text(&user.first_name, &user.last_name, &email);
                let changed = self
                    .savepoint(|conn| {
                        let changed = diesel::update(users::table.find(user.id.0))
                            .set((
                                users::email.eq(&email),
                                users::first_name.eq(&user.first_name),
                                users::last_name.eq(&user.last_name),
                                users::password_hash.eq(&user.password_hash),
                                users::is_super_admin.eq(user.is_super_admin),
                                users::mfa_opt_in.eq(user.mfa_opt_in),
                                users::last_login_at.eq(user.last_login_at.map(|t| t.0)),
                                users::search_text.eq(&text),
                            ))
                            .execute(conn)?;
                        // The search reads the memberships' copy. Most updates
                        // change no name: copies that are current are not
                        // written again.
                        diesel::update(
                            memberships::table
                                .filter(memberships::user_id.eq(user.id.0))
                                .filter(memberships::search_text.ne(&text)),
                        )
                        .set(memberships::search_text.eq(&text))
                        .execute(conn)?;
                        Ok(changed)
                    })
                    .db()?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            fn set_last_login(&mut self, id: UserId, at: Timestamp) -> StoreResult<()> {
                Prepared(
                    diesel::update(users::table.find(id.0))
                        .set(users::last_login_at.eq(Some(at.0)))
                        .returning(users::id),
                )
                .load::<i64>(self.conn)
                .db()?;
                Ok(())
            }

            fn replace_password_hash(
                &mut self,
                id: UserId,
                old: &str,
                new: &str,
            ) -> StoreResult<bool> {
                // One statement: PostgreSQL checks the old hash again after
                // waiting for a concurrent writer of the row.
                let replaced =
                    diesel::update(users::table.find(id.0).filter(users::password_hash.eq(old)))
                        .set(users::password_hash.eq(new))
                        .execute(self.conn)
                        .db()?;
                Ok(replaced == 1)
            }

            fn delete_user(&mut self, id: UserId) -> StoreResult<bool> {
                // everything the user owns goes with it (ON DELETE CASCADE)
                let deleted = diesel::delete(users::table.find(id.0))
                    .execute(self.conn)
                    .db()?;
                Ok(deleted > 0)
            }

            fn count_users(&mut self) -> StoreResult<u64> {
                let n: i64 = users::table.count().get_result(self.conn).db()?;
                count(n).db()
            }

            fn search_org_users(
                &mut self,
                org: OrgId,
                search: Option<&str>,
                offset: u64,
                limit: u64,
            ) -> StoreResult<(Vec<User>, u64)> {
                if search.is_some_and(|s| s.contains(SEARCH_SEPARATOR)) {
                    return Ok((Vec::new(), 0));
                }
                let pattern = search.map(like_pattern);
                // The org's memberships, matched on their copy of the search
                // text: the index on (org_id, user_id, search_text) holds
                // them in page order, so neither the page nor the count
                // reads a user that does not match (PostgreSQL: or the
                // trigram index, for a term few members have). Users are
                // read for the page's ids only.
                let matching = || {
                    let mut query = memberships::table
                        .filter(memberships::org_id.eq(org.0))
                        .into_boxed::<$db>();
                    if let Some(p) = &pattern {
                        // LIKE rather than SQLite's instr() (both sides are
                        // lower-cased already): counting 100,000 members took
                        // 5.6-7.7 ms with LIKE and 7.3-8.3 ms with instr(),
                        // 5.9-6.2 ms of either reading the index. And
                        // PostgreSQL's trigram index serves LIKE only.
                        //
                        // Written as SQL text, which diesel does not keep as
                        // a prepared statement: PostgreSQL then plans every
                        // search for its own term. A prepared statement gets
                        // a generic plan after five runs, and no one plan
                        // suits every term (with the trigram index for all
                        // of them, counting a term that all 100,000 members
                        // have took 49 instead of 15 ms). SQLite parses the
                        // statement each time: 10 µs.
                        query = query.filter(
                            diesel::dsl::sql::<diesel::sql_types::Bool>(
                                "memberships.search_text LIKE ",
                            )
                            .bind::<diesel::sql_types::Text, _>(p.clone())
                            .sql(" ESCAPE '\\'"),
                        );
                    }
                    query
                };
                let page = matching()
                    .order(memberships::user_id.asc())
                    .offset(clamp(offset))
                    .limit(clamp(limit))
                    .select(memberships::user_id);
                let rows: Vec<UserRow> = users::table
                    .filter(users::id.eq_any(page))
                    .order(users::id.asc())
                    .select(UserRow::as_select())
                    .load(self.conn)
                    .db()?;
                let found = rows.len() as u64;
                // A page with room to spare ends the matches: no count needed
                // (one snapshot, so the two cannot disagree).
                let total = if found < limit && (offset == 0 || found > 0) {
                    offset.saturating_add(found)
                } else {
                    let n: i64 = matching().count().get_result(self.conn).db()?;
                    count(n).db()?
                };
                Ok((rows.into_iter().map(User::from).collect(), total))
            }

            // ---- memberships

            fn insert_membership(&mut self, m: &Membership) -> StoreResult<()> {
                self.held.membership(m.user_id, m.org_id);
                // The user's search text for the membership's copy, read by
                // an update that changes nothing so that the user's row stays
                // locked until commit. On PostgreSQL a concurrent
                // `update_user` then either commits first (and this reads its
                // text) or waits and updates this membership's copy too; a
                // plain read could copy the text from before a rename that
                // commits meanwhile. SQLite runs one writer at a time anyway.
                let text: Option<String> = diesel::update(users::table.find(m.user_id.0))
                    .set(users::search_text.eq(users::search_text))
                    .returning(users::search_text)
                    .get_result(self.conn)
                    .optional()
                    .db()?;
                // No such user: what the foreign key would have said.
                let Some(text) = text else {
                    return Err(StoreError::NotFound);
                };
                self.savepoint(|conn| {
                    diesel::insert_into(memberships::table)
                        .values((
                            memberships::user_id.eq(m.user_id.0),
                            memberships::org_id.eq(m.org_id.0),
                            memberships::is_active.eq(m.is_active),
                            memberships::is_admin.eq(m.is_admin),
                            memberships::all_access.eq(m.all_access),
                            memberships::mfa_opt_out.eq(m.mfa_opt_out),
                            memberships::exclude_from_membership_count
                                .eq(m.exclude_from_membership_count),
                            memberships::has_advanced_permissions.eq(m.has_advanced_permissions),
                            memberships::search_text.eq(&text),
                        ))
                        .execute(conn)
                })
                .db()?;
                Ok(())
            }

            fn membership(&mut self, user: UserId, org: OrgId) -> StoreResult<Option<Membership>> {
                let row: Option<MembershipRow> = memberships::table
                    .find((user.0, org.0))
                    .select(MembershipRow::as_select())
                    .get_result(self.conn)
                    .optional()
                    .db()?;
                Ok(row.map(Membership::from))
            }

            fn membership_for_update(
                &mut self,
                user: UserId,
                org: OrgId,
            ) -> StoreResult<Option<Membership>> {
                self.held.membership(user, org);
                self.locked_membership(user, org)
            }

            fn memberships_of_user(&mut self, user: UserId) -> StoreResult<Vec<Membership>> {
                let rows: Vec<MembershipRow> = memberships::table
                    .filter(memberships::user_id.eq(user.0))
                    .order(memberships::org_id.asc())
                    .select(MembershipRow::as_select())
                    .load(self.conn)
                    .db()?;
                Ok(rows.into_iter().map(Membership::from).collect())
            }

            fn update_membership(&mut self, m: &Membership) -> StoreResult<()> {
                self.held
                    .require_membership(m.user_id, m.org_id, "update_membership");
                let changed = diesel::update(memberships::table.find((m.user_id.0, m.org_id.0)))
                    .set((
                        memberships::is_active.eq(m.is_active),
                        memberships::is_admin.eq(m.is_admin),
                        memberships::all_access.eq(m.all_access),
                        memberships::mfa_opt_out.eq(m.mfa_opt_out),
                        memberships::exclude_from_membership_count
                            .eq(m.exclude_from_membership_count),
                        memberships::has_advanced_permissions.eq(m.has_advanced_permissions),
                    ))
                    .execute(self.conn)
                    .db()?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            fn delete_membership(&mut self, user: UserId, org: OrgId) -> StoreResult<bool> {
                let deleted = diesel::delete(memberships::table.find((user.0, org.0)))
                    .execute(self.conn)
                    .db()?;
                Ok(deleted > 0)
            }

            fn org_admins(&mut self, org: OrgId) -> StoreResult<Vec<User>> {
                let rows: Vec<UserRow> = users::table
                    .inner_join(memberships::table)
                    .filter(memberships::org_id.eq(org.0))
                    .filter(memberships::is_admin.eq(true))
                    .filter(memberships::is_active.eq(true))
                    .order(users::id.asc())
                    .select(UserRow::as_select())
                    .load(self.conn)
                    .db()?;
                Ok(rows.into_iter().map(User::from).collect())
            }

            fn membership_counts(&mut self, org: OrgId) -> StoreResult<MembershipCounts> {
                let licensed = || {
                    memberships::table
                        .filter(memberships::org_id.eq(org.0))
                        .filter(memberships::exclude_from_membership_count.eq(false))
                };
                let total: i64 = licensed().count().get_result(self.conn).db()?;
                let enabled: i64 = licensed()
                    .filter(memberships::is_active.eq(true))
                    .count()
                    .get_result(self.conn)
                    .db()?;
                let licensed = count(total).db()?;
                let enabled = count(enabled).db()?;
                Ok(MembershipCounts {
                    licensed,
                    enabled,
                    inactive: licensed.saturating_sub(enabled),
                })
            }

            // ---- authenticator

            fn authenticator(&mut self, user: UserId) -> StoreResult<Option<Authenticator>> {
                let row: Option<AuthenticatorRow> = authenticators::table
                    .find(user.0)
                    .select(AuthenticatorRow::as_select())
                    .get_result(self.conn)
                    .optional()
                    .db()?;
                row.map(|r| authenticator_from_row(self.cipher, r))
                    .transpose()
                    .db()
            }

            fn authenticator_state(
                &mut self,
                user: UserId,
            ) -> StoreResult<Option<AuthenticatorState>> {
                let row: Option<(bool, Option<i64>, i64)> = authenticators::table
                    .find(user.0)
                    .select((
                        authenticators::verified,
                        authenticators::verified_at,
                        authenticators::expires_at,
                    ))
                    .get_result(self.conn)
                    .optional()
                    .db()?;
                row.map(|(verified, verified_at, expires_at)| {
                    authenticator_state(verified, verified_at, expires_at)
                })
                .transpose()
                .db()
            }

            fn put_pending_authenticator(
                &mut self,
                user: UserId,
                secret: &Secret,
                params: &TotpParams,
                created_at: Timestamp,
                expires_at: Timestamp,
            ) -> StoreResult<bool> {
                self.held
                    .require_users(&[user], "put_pending_authenticator");
                // Only the ciphertext is bound: the plaintext never reaches SQL.
                let ciphertext = self.cipher.encrypt(user, secret).db()?;
                let digits = to_i32(params.digits, "authenticator digits").db()?;
                let period = to_i64(params.period, "authenticator period").db()?;
                // A conditional upsert: a pending row is replaced, a verified
                // one is left alone (the DO UPDATE's WHERE fails: 0 rows).
                let upsert = diesel::insert_into(authenticators::table)
                    .values((
                        authenticators::user_id.eq(user.0),
                        authenticators::secret_ciphertext.eq(&ciphertext),
                        authenticators::algorithm.eq(params.algorithm.as_str()),
                        authenticators::digits.eq(digits),
                        authenticators::period.eq(period),
                        authenticators::verified.eq(false),
                        authenticators::expires_at.eq(expires_at.0),
                        authenticators::verified_at.eq(None::<i64>),
                        authenticators::last_used_step.eq(None::<i64>),
                        authenticators::created_at.eq(created_at.0),
                    ))
                    .on_conflict(authenticators::user_id)
                    .do_update()
                    .set((
                        authenticators::secret_ciphertext
                            .eq(excluded(authenticators::secret_ciphertext)),
                        authenticators::algorithm.eq(excluded(authenticators::algorithm)),
                        authenticators::digits.eq(excluded(authenticators::digits)),
                        authenticators::period.eq(excluded(authenticators::period)),
                        authenticators::expires_at.eq(excluded(authenticators::expires_at)),
                        authenticators::verified_at.eq(None::<i64>),
                        authenticators::last_used_step.eq(None::<i64>),
                        authenticators::created_at.eq(excluded(authenticators::created_at)),
                    ));
                // `ON CONFLICT … DO UPDATE … WHERE`: QueryDsl::filter does not
                // apply to an insert, the upsert's own FilterDsl does.
                let written = diesel::query_dsl::methods::FilterDsl::filter(
                    upsert,
                    authenticators::verified.eq(false),
                )
                .execute(self.conn)
                .db()?;
                Ok(written > 0)
            }

            fn verify_authenticator(
                &mut self,
                user: UserId,
                step: u64,
                now: Timestamp,
            ) -> StoreResult<bool> {
                self.held.require_users(&[user], "verify_authenticator");
                let step = to_i64(step, "TOTP step").db()?;
                let changed = Prepared(
                    diesel::update(
                        authenticators::table
                            .filter(authenticators::user_id.eq(user.0))
                            .filter(authenticators::verified.eq(false)),
                    )
                    .set((
                        authenticators::verified.eq(true),
                        authenticators::verified_at.eq(Some(now.0)),
                        authenticators::last_used_step.eq(Some(step)),
                    ))
                    .returning(authenticators::user_id),
                )
                .load::<i64>(self.conn)
                .db()?;
                Ok(!changed.is_empty())
            }

            fn accept_totp_step(&mut self, user: UserId, step: u64) -> StoreResult<bool> {
                self.held.require_users(&[user], "accept_totp_step");
                let step = to_i64(step, "TOTP step").db()?;
                let changed = Prepared(
                    diesel::update(
                        authenticators::table
                            .filter(authenticators::user_id.eq(user.0))
                            .filter(authenticators::verified.eq(true))
                            .filter(
                                authenticators::last_used_step
                                    .is_null()
                                    .or(authenticators::last_used_step.lt(step)),
                            ),
                    )
                    .set(authenticators::last_used_step.eq(Some(step)))
                    .returning(authenticators::user_id),
                )
                .load::<i64>(self.conn)
                .db()?;
                Ok(!changed.is_empty())
            }

            fn delete_authenticator(&mut self, user: UserId) -> StoreResult<bool> {
                self.held.require_users(&[user], "delete_authenticator");
                let deleted = diesel::delete(authenticators::table.find(user.0))
                    .execute(self.conn)
                    .db()?;
                Ok(deleted > 0)
            }

            // ---- email factor and codes

            fn email_factor_verified_at(&mut self, user: UserId) -> StoreResult<Option<Timestamp>> {
                let at: Option<i64> = email_factors::table
                    .find(user.0)
                    .select(email_factors::verified_at)
                    .get_result(self.conn)
                    .optional()
                    .db()?;
                Ok(opt_ts(at))
            }

            fn set_email_factor_verified(
                &mut self,
                user: UserId,
                at: Timestamp,
            ) -> StoreResult<()> {
                self.held
                    .require_users(&[user], "set_email_factor_verified");
                // idempotent: the first verification time stays
                diesel::insert_into(email_factors::table)
                    .values((
                        email_factors::user_id.eq(user.0),
                        email_factors::verified_at.eq(at.0),
                    ))
                    .on_conflict(email_factors::user_id)
                    .do_nothing()
                    .execute(self.conn)
                    .db()?;
                Ok(())
            }

            fn delete_email_factor(&mut self, user: UserId) -> StoreResult<bool> {
                self.held.require_users(&[user], "delete_email_factor");
                let deleted = diesel::delete(email_factors::table.find(user.0))
                    .execute(self.conn)
                    .db()?;
                Ok(deleted > 0)
            }

            fn latest_email_code(&mut self, user: UserId) -> StoreResult<Option<EmailCode>> {
                email_codes::table
                    .filter(email_codes::user_id.eq(user.0))
                    .order(email_codes::id.desc())
                    .select(EmailCodeRow::as_select())
                    .first(self.conn)
                    .optional()
                    .db()?
                    .map(EmailCode::try_from)
                    .transpose()
                    .db()
            }

            fn email_code_digest(&self, code_hash: &str) -> String {
                self.cipher.code_digest(code_hash)
            }

            fn replace_email_code(&mut self, code: &NewEmailCode) -> StoreResult<EmailCode> {
                diesel::delete(email_codes::table.filter(email_codes::user_id.eq(code.user_id.0)))
                    .execute(self.conn)
                    .db()?;
                let row: EmailCodeRow = diesel::insert_into(email_codes::table)
                    .values((
                        email_codes::user_id.eq(code.user_id.0),
                        email_codes::purpose.eq(code.purpose.as_str()),
                        email_codes::code_hash.eq(&code.code_hash),
                        email_codes::salt.eq(&code.salt),
                        email_codes::sent_at.eq(code.sent_at.0),
                        email_codes::expires_at.eq(code.expires_at.0),
                        email_codes::consumed_at.eq(None::<i64>),
                    ))
                    .returning(EmailCodeRow::as_returning())
                    .get_result(self.conn)
                    .db()?;
                EmailCode::try_from(row).db()
            }

            fn consume_email_code(&mut self, id: i64, now: Timestamp) -> StoreResult<bool> {
                let changed = Prepared(
                    diesel::update(
                        email_codes::table
                            .find(id)
                            .filter(email_codes::consumed_at.is_null()),
                    )
                    .set(email_codes::consumed_at.eq(Some(now.0)))
                    .returning(email_codes::id),
                )
                .load::<i64>(self.conn)
                .db()?;
                Ok(!changed.is_empty())
            }

            fn delete_email_code(&mut self, id: i64) -> StoreResult<()> {
                diesel::delete(email_codes::table.find(id))
                    .execute(self.conn)
                    .db()?;
                Ok(())
            }

            fn void_email_codes(&mut self, user: UserId) -> StoreResult<()> {
                self.void_email_codes_of(&[user])
            }

            // ---- recovery codes

            fn recovery_codes(&mut self, user: UserId) -> StoreResult<Vec<RecoveryCode>> {
                let rows: Vec<RecoveryCodeRow> = recovery_codes::table
                    .filter(recovery_codes::user_id.eq(user.0))
                    .order(recovery_codes::id.asc())
                    .select(RecoveryCodeRow::as_select())
                    .load(self.conn)
                    .db()?;
                Ok(rows.into_iter().map(RecoveryCode::from).collect())
            }

            fn unused_recovery_codes(&mut self, user: UserId) -> StoreResult<u64> {
                let n: i64 = recovery_codes::table
                    .filter(recovery_codes::user_id.eq(user.0))
                    .filter(recovery_codes::used_at.is_null())
                    .count()
                    .get_result(self.conn)
                    .db()?;
                count(n).db()
            }

            fn factor_states(&mut self, user: UserId) -> StoreResult<FactorStates> {
                // One statement, one snapshot: the user's row with the
                // authenticator, the email factor and the unused recovery
                // codes joined to it and counted. A user deleted meanwhile
                // reads as no factors.
                let row: Option<FactorStatesRow> = factor_states_of_users!(users::id.eq(user.0))
                    .select(factor_states_columns!())
                    .get_result(self.conn)
                    .optional()
                    .db()?;
                row.map_or(Ok(FactorStates::default()), factor_states_from)
                    .db()
            }

            fn factor_states_of(&mut self, users: &[UserId]) -> StoreResult<Vec<FactorStates>> {
                // As `factor_states`, a statement per chunk of ids.
                let mut found: HashMap<i64, FactorStatesRow> = HashMap::with_capacity(users.len());
                for chunk in id_chunks(users) {
                    let rows: Vec<(i64, FactorStatesRow)> =
                        factor_states_of_users!(users::id.eq_any(chunk))
                            .select((users::id, factor_states_columns!()))
                            .load(self.conn)
                            .db()?;
                    found.extend(rows);
                }
                users
                    .iter()
                    .map(|user| {
                        found
                            .remove(&user.0)
                            .map_or(Ok(FactorStates::default()), factor_states_from)
                            .db()
                    })
                    .collect()
            }

            fn replace_recovery_codes(
                &mut self,
                user: UserId,
                hashes: &[String],
                now: Timestamp,
            ) -> StoreResult<()> {
                self.held.require_users(&[user], "replace_recovery_codes");
                diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user.0)))
                    .execute(self.conn)
                    .db()?;
                if hashes.is_empty() {
                    return Ok(());
                }
                let rows: Vec<_> = hashes
                    .iter()
                    .map(|hash| {
                        (
                            recovery_codes::user_id.eq(user.0),
                            recovery_codes::code_hash.eq(hash.as_str()),
                            recovery_codes::created_at.eq(now.0),
                        )
                    })
                    .collect();
                diesel::insert_into(recovery_codes::table)
                    .values(rows)
                    .execute(self.conn)
                    .db()?;
                Ok(())
            }

            fn consume_recovery_code(&mut self, id: i64, now: Timestamp) -> StoreResult<bool> {
                let changed = Prepared(
                    diesel::update(
                        recovery_codes::table
                            .find(id)
                            .filter(recovery_codes::used_at.is_null()),
                    )
                    .set(recovery_codes::used_at.eq(Some(now.0)))
                    .returning(recovery_codes::id),
                )
                .load::<i64>(self.conn)
                .db()?;
                Ok(!changed.is_empty())
            }

            fn delete_recovery_codes(&mut self, user: UserId) -> StoreResult<u64> {
                self.held.require_users(&[user], "delete_recovery_codes");
                let deleted = diesel::delete(
                    recovery_codes::table.filter(recovery_codes::user_id.eq(user.0)),
                )
                .execute(self.conn)
                .db()?;
                Ok(deleted as u64)
            }

            // ---- sessions

            fn insert_session(&mut self, s: &NewSession) -> StoreResult<Session> {
                // No savepoint: the token hash is the only unique column and
                // tokens carry 256 random bits, so no caller handles a
                // violation. A savepoint costs two statements per login and
                // MFA verify (two round trips on PostgreSQL).
                let row: SessionRow = Prepared(
                    diesel::insert_into(sessions::table)
                        .values((
                            sessions::token_hash.eq(&s.token_hash),
                            sessions::user_id.eq(s.user_id.0),
                            sessions::org_id.eq(s.org_id.0),
                            sessions::level.eq(s.level.as_str()),
                            sessions::created_at.eq(s.created_at.0),
                            sessions::expires_at.eq(s.expires_at.0),
                            sessions::last_seen_at.eq(s.created_at.0),
                            sessions::revoked_at.eq(None::<i64>),
                        ))
                        .returning(SessionRow::as_returning()),
                )
                .get_result(self.conn)
                .db()?;
                Session::try_from(row).db()
            }

            fn session_by_token_hash(&mut self, token_hash: &str) -> StoreResult<Option<Session>> {
                sessions::table
                    .filter(sessions::token_hash.eq(token_hash))
                    .select(SessionRow::as_select())
                    .get_result(self.conn)
                    .optional()
                    .db()?
                    .map(Session::try_from)
                    .transpose()
                    .db()
            }

            fn session_member(&mut self, token_hash: &str) -> StoreResult<Option<SessionMember>> {
                Ok(session_member_where!(
                    self.conn,
                    sessions::token_hash.eq(token_hash)
                ))
            }

            fn session_member_by_id(
                &mut self,
                id: SessionId,
            ) -> StoreResult<Option<SessionMember>> {
                Ok(session_member_where!(self.conn, sessions::id.eq(id.0)))
            }

            fn session_member_and_factor_states(
                &mut self,
                token_hash: &str,
            ) -> StoreResult<Option<(SessionMember, FactorStates)>> {
                self.session_member_with_factor_states(token_hash)
            }

            fn rotate_session(
                &mut self,
                id: SessionId,
                rotation: &SessionRotation,
            ) -> StoreResult<bool> {
                let changed = Prepared(
                    diesel::update(
                        sessions::table
                            .find(id.0)
                            .filter(sessions::revoked_at.is_null())
                            .filter(sessions::expires_at.gt(rotation.now.0))
                            .filter(sessions::token_hash.eq(&rotation.presented_token_hash)),
                    )
                    .set((
                        sessions::token_hash.eq(&rotation.token_hash),
                        sessions::level.eq(rotation.level.as_str()),
                        sessions::expires_at.eq(rotation.expires_at.0),
                        sessions::last_seen_at.eq(rotation.now.0),
                        sessions::mfa_passed.eq(true),
                    ))
                    .returning(sessions::id),
                )
                .load::<i64>(self.conn)
                .db()?;
                Ok(!changed.is_empty())
            }

            fn note_session_mfa_passed(&mut self, id: SessionId) -> StoreResult<()> {
                Prepared(
                    diesel::update(sessions::table.find(id.0))
                        .set(sessions::mfa_passed.eq(true))
                        .returning(sessions::id),
                )
                .load::<i64>(self.conn)
                .db()?;
                Ok(())
            }

            fn touch_session(&mut self, id: SessionId, now: Timestamp) -> StoreResult<()> {
                Prepared(
                    diesel::update(sessions::table.find(id.0))
                        .set(sessions::last_seen_at.eq(now.0))
                        .returning(sessions::id),
                )
                .load::<i64>(self.conn)
                .db()?;
                Ok(())
            }

            fn revoke_session(&mut self, id: SessionId, now: Timestamp) -> StoreResult<bool> {
                let changed = Prepared(
                    diesel::update(
                        sessions::table
                            .find(id.0)
                            .filter(sessions::revoked_at.is_null())
                            .filter(sessions::expires_at.gt(now.0)),
                    )
                    .set(sessions::revoked_at.eq(Some(now.0)))
                    .returning(sessions::id),
                )
                .load::<i64>(self.conn)
                .db()?;
                Ok(!changed.is_empty())
            }

            fn revoke_user_sessions(
                &mut self,
                user: UserId,
                only_org: Option<OrgId>,
                except: Option<SessionId>,
                now: Timestamp,
            ) -> StoreResult<u64> {
                let mut query = diesel::update(sessions::table)
                    .set(sessions::revoked_at.eq(Some(now.0)))
                    .filter(sessions::user_id.eq(user.0))
                    .filter(sessions::revoked_at.is_null())
                    .filter(sessions::expires_at.gt(now.0))
                    .into_boxed::<$db>();
                if let Some(org) = only_org {
                    query = query.filter(sessions::org_id.eq(org.0));
                }
                if let Some(spared) = except {
                    query = query.filter(sessions::id.ne(spared.0));
                }
                let revoked = query.execute(self.conn).db()?;
                Ok(revoked as u64)
            }

            fn delete_ended_sessions(&mut self, purge: &SessionPurge) -> StoreResult<u64> {
                let ended = self.ended_session_ids(purge).db()?;
                if ended.is_empty() {
                    return Ok(0);
                }
                let deleted = diesel::delete(sessions::table.filter(sessions::id.eq_any(&ended)))
                    .execute(self.conn)
                    .db()?;
                Ok(deleted as u64)
            }

            // ---- failure counters

            fn failure_state(
                &mut self,
                user: UserId,
                kind: FailureKind,
            ) -> StoreResult<FailureState> {
                let row: Option<(i32, Option<i64>)> = failure_counters::table
                    .find((user.0, kind.as_str()))
                    .select((failure_counters::failures, failure_counters::locked_until))
                    .get_result(self.conn)
                    .optional()
                    .db()?;
                failure_state_from(row).db()
            }

            fn password_failure_state(&mut self, email: &str) -> StoreResult<FailureState> {
                let row: Option<(i32, Option<i64>)> = password_failures::table
                    .find(self.cipher.email_key(email))
                    .select((password_failures::failures, password_failures::locked_until))
                    .get_result(self.conn)
                    .optional()
                    .db()?;
                failure_state_from(row).db()
            }

            fn lock_failure_state(
                &mut self,
                user: UserId,
                kind: FailureKind,
            ) -> StoreResult<FailureState> {
                self.held.users(&[user]);
                let row = self.lock_failure_row(user, kind).db()?;
                failure_state_from(row).db()
            }

            fn lock_failure_state_and_authenticator(
                &mut self,
                user: UserId,
                kind: FailureKind,
            ) -> StoreResult<(FailureState, Option<Authenticator>)> {
                self.held.users(&[user]);
                let (counter, authenticator) =
                    self.lock_failure_row_and_authenticator(user, kind).db()?;
                let authenticator = authenticator
                    .map(|r| authenticator_from_row(self.cipher, r))
                    .transpose()
                    .db()?;
                Ok((failure_state_from(counter).db()?, authenticator))
            }

            fn increment_failures(
                &mut self,
                subject: FailureSubject<'_>,
                now: Timestamp,
                forget_before: Timestamp,
            ) -> StoreResult<FailureState> {
                // One statement: atomic against any concurrent increment.
                // A counter whose last failure is older than
                // `forget_before` starts again at one (NULL: a counter from
                // before the column existed, kept).
                let row: (i32, Option<i64>) = match subject {
                    FailureSubject::User(user, kind) => add_failure!(
                        failure_counters,
                        (failure_counters::user_id, failure_counters::kind),
                        (
                            failure_counters::user_id.eq(user.0),
                            failure_counters::kind.eq(kind.as_str()),
                            failure_counters::failures.eq(1),
                            failure_counters::locked_until.eq(None::<i64>),
                            failure_counters::last_failure_at.eq(Some(now.0)),
                        ),
                        forget_before
                    )
                    .get_result(self.conn)
                    .db()?,
                    FailureSubject::Email(email) => add_failure!(
                        password_failures,
                        password_failures::email_key,
                        (
                            password_failures::email_key.eq(self.cipher.email_key(email)),
                            password_failures::failures.eq(1),
                            password_failures::locked_until.eq(None::<i64>),
                            password_failures::last_failure_at.eq(now.0),
                        ),
                        forget_before
                    )
                    .get_result(self.conn)
                    .db()?,
                };
                failure_state_from(Some(row)).db()
            }

            fn set_locked_until(
                &mut self,
                subject: FailureSubject<'_>,
                until: Option<Timestamp>,
            ) -> StoreResult<()> {
                let until = until.map(|t| t.0);
                match subject {
                    FailureSubject::User(user, kind) => Prepared(
                        diesel::insert_into(failure_counters::table)
                            .values((
                                failure_counters::user_id.eq(user.0),
                                failure_counters::kind.eq(kind.as_str()),
                                failure_counters::failures.eq(0),
                                failure_counters::locked_until.eq(until),
                            ))
                            .on_conflict((failure_counters::user_id, failure_counters::kind))
                            .do_update()
                            .set(
                                failure_counters::locked_until
                                    .eq(excluded(failure_counters::locked_until)),
                            ),
                    )
                    .execute(self.conn)
                    .db()?,
                    // Only ever after `increment_failures` in the same
                    // transaction: the counter exists.
                    FailureSubject::Email(email) => Prepared(
                        diesel::update(password_failures::table.find(self.cipher.email_key(email)))
                            .set(password_failures::locked_until.eq(until)),
                    )
                    .execute(self.conn)
                    .db()?,
                };
                Ok(())
            }

            fn delete_forgotten_password_failures(
                &mut self,
                before: Timestamp,
                limit: u32,
            ) -> StoreResult<u64> {
                let forgotten = self.forgotten_password_failure_keys(before, limit).db()?;
                if forgotten.is_empty() {
                    return Ok(0);
                }
                let deleted = diesel::delete(
                    password_failures::table
                        .filter(password_failures::email_key.eq_any(&forgotten)),
                )
                .execute(self.conn)
                .db()?;
                Ok(deleted as u64)
            }

            fn reset_failures(&mut self, subject: FailureSubject<'_>) -> StoreResult<()> {
                match subject {
                    FailureSubject::User(user, kind) => {
                        diesel::delete(failure_counters::table.find((user.0, kind.as_str())))
                            .execute(self.conn)
                    }
                    FailureSubject::Email(email) => {
                        diesel::delete(password_failures::table.find(self.cipher.email_key(email)))
                            .execute(self.conn)
                    }
                }
                .db()?;
                Ok(())
            }

            // ---- email change

            fn put_email_change(
                &mut self,
                user: UserId,
                new_email: &str,
                token_hash: &str,
                now: Timestamp,
                expires_at: Timestamp,
            ) -> StoreResult<EmailChange> {
                diesel::delete(
                    email_changes::table
                        .filter(email_changes::user_id.eq(user.0))
                        .filter(email_changes::consumed_at.is_null()),
                )
                .execute(self.conn)
                .db()?;
                let new_email = new_email.to_lowercase();
                let row: EmailChangeRow = self
                    .savepoint(|conn| {
                        diesel::insert_into(email_changes::table)
                            .values((
                                email_changes::user_id.eq(user.0),
                                email_changes::new_email.eq(&new_email),
                                email_changes::token_hash.eq(token_hash),
                                email_changes::created_at.eq(now.0),
                                email_changes::expires_at.eq(expires_at.0),
                                email_changes::consumed_at.eq(None::<i64>),
                            ))
                            .returning(EmailChangeRow::as_returning())
                            .get_result(conn)
                    })
                    .db()?;
                Ok(row.into())
            }

            fn pending_email_change(&mut self, user: UserId) -> StoreResult<Option<EmailChange>> {
                let row: Option<EmailChangeRow> = email_changes::table
                    .filter(email_changes::user_id.eq(user.0))
                    .filter(email_changes::consumed_at.is_null())
                    .order(email_changes::id.desc())
                    .select(EmailChangeRow::as_select())
                    .first(self.conn)
                    .optional()
                    .db()?;
                Ok(row.map(EmailChange::from))
            }

            fn email_change_by_token_hash(
                &mut self,
                token_hash: &str,
            ) -> StoreResult<Option<EmailChange>> {
                let row: Option<EmailChangeRow> = email_changes::table
                    .filter(email_changes::token_hash.eq(token_hash))
                    .select(EmailChangeRow::as_select())
                    .get_result(self.conn)
                    .optional()
                    .db()?;
                Ok(row.map(EmailChange::from))
            }

            fn consume_email_change(&mut self, id: i64, now: Timestamp) -> StoreResult<bool> {
                let changed = diesel::update(
                    email_changes::table
                        .find(id)
                        .filter(email_changes::consumed_at.is_null()),
                )
                .set(email_changes::consumed_at.eq(Some(now.0)))
                .execute(self.conn)
                .db()?;
                Ok(changed > 0)
            }

            fn withdraw_email_change(
                &mut self,
                user: UserId,
                token_hash: &str,
            ) -> StoreResult<bool> {
                let deleted = diesel::delete(
                    email_changes::table
                        .filter(email_changes::user_id.eq(user.0))
                        .filter(email_changes::token_hash.eq(token_hash))
                        .filter(email_changes::consumed_at.is_null()),
                )
                .execute(self.conn)
                .db()?;
                Ok(deleted > 0)
            }

            fn delete_confirmed_email_changes(
                &mut self,
                before: Timestamp,
                limit: u32,
            ) -> StoreResult<u64> {
                let confirmed = self.confirmed_email_change_ids(before, limit).db()?;
                if confirmed.is_empty() {
                    return Ok(0);
                }
                let deleted = diesel::delete(
                    email_changes::table.filter(email_changes::id.eq_any(&confirmed)),
                )
                .execute(self.conn)
                .db()?;
                Ok(deleted as u64)
            }

            // ---- audit

            fn delete_audit_events_before(
                &mut self,
                before: Timestamp,
                limit: u32,
            ) -> StoreResult<u64> {
                let old = self.old_audit_event_ids(before, limit).db()?;
                self.delete_audit_events(&old)
            }

            fn delete_anonymous_audit_events_before(
                &mut self,
                before: Timestamp,
                limit: u32,
            ) -> StoreResult<u64> {
                let old = self.anonymous_audit_event_ids(before, limit).db()?;
                self.delete_audit_events(&old)
            }

            fn insert_audit(&mut self, e: &NewAuditEvent) -> StoreResult<()> {
                Prepared(
                    diesel::insert_into(audit_events::table)
                        .values((
                            audit_events::at.eq(e.at.0),
                            audit_events::org_id.eq(e.org_id.map(|o| o.0)),
                            audit_events::actor_user_id.eq(e.actor_user_id.map(|u| u.0)),
                            audit_events::target_user_id.eq(e.target_user_id.map(|u| u.0)),
                            audit_events::action.eq(e.action.as_str()),
                            audit_events::detail.eq(&e.detail),
                            audit_events::client_address.eq(client_text(e.client)),
                        ))
                        .returning(audit_events::id),
                )
                .load::<i64>(self.conn)
                .db()?;
                Ok(())
            }

            fn insert_audits(&mut self, events: &[NewAuditEvent]) -> StoreResult<()> {
                // Seven bound values a row: 7,000 for a chunk, under both
                // backends' limits.
                for chunk in events.chunks(IDS_PER_QUERY) {
                    let rows: Vec<_> = chunk
                        .iter()
                        .map(|e| {
                            (
                                audit_events::at.eq(e.at.0),
                                audit_events::org_id.eq(e.org_id.map(|o| o.0)),
                                audit_events::actor_user_id.eq(e.actor_user_id.map(|u| u.0)),
                                audit_events::target_user_id.eq(e.target_user_id.map(|u| u.0)),
                                audit_events::action.eq(e.action.as_str()),
                                audit_events::detail.eq(e.detail.as_str()),
                                audit_events::client_address.eq(client_text(e.client)),
                            )
                        })
                        .collect();
                    diesel::insert_into(audit_events::table)
                        .values(rows)
                        .execute(self.conn)
                        .db()?;
                }
                Ok(())
            }

            // ---- notices

            fn queue_notices(&mut self, queued: &[NewNotice<'_>]) -> StoreResult<()> {
                // Four bound values a row.
                for chunk in queued.chunks(IDS_PER_QUERY) {
                    let rows: Vec<_> = chunk
                        .iter()
                        .map(|n| {
                            (
                                notices::recipient.eq(n.to),
                                notices::payload.eq(n.payload),
                                notices::queued_at.eq(n.queued_at.0),
                                notices::due_at.eq(n.queued_at.0),
                            )
                        })
                        .collect();
                    diesel::insert_into(notices::table)
                        .values(rows)
                        .execute(self.conn)
                        .db()?;
                }
                Ok(())
            }

            fn claim_notice(
                &mut self,
                now: Timestamp,
                lease_until: Timestamp,
                order: NoticeOrder,
            ) -> StoreResult<Option<QueuedNotice>> {
                let Some(id) = self.due_notice_id(now, order).db()? else {
                    return Ok(None);
                };
                let (id, to, payload, queued_at, attempts): (i64, String, String, i64, i32) =
                    diesel::update(notices::table.find(id))
                        .set((
                            notices::attempts.eq(notices::attempts + 1),
                            notices::due_at.eq(lease_until.0),
                        ))
                        .returning((
                            notices::id,
                            notices::recipient,
                            notices::payload,
                            notices::queued_at,
                            notices::attempts,
                        ))
                        .get_result(self.conn)
                        .db()?;
                Ok(Some(QueuedNotice {
                    id,
                    to,
                    payload,
                    queued_at: Timestamp(queued_at),
                    attempts: u32::try_from(attempts).unwrap_or(0),
                }))
            }

            fn extend_notice_lease(
                &mut self,
                id: i64,
                held_until: Timestamp,
                until: Timestamp,
            ) -> StoreResult<bool> {
                let renewed = diesel::update(
                    notices::table
                        .find(id)
                        .filter(notices::due_at.eq(held_until.0)),
                )
                .set(notices::due_at.eq(until.0))
                .execute(self.conn)
                .db()?;
                Ok(renewed > 0)
            }

            fn retry_notice_at(&mut self, id: i64, at: Timestamp) -> StoreResult<()> {
                diesel::update(notices::table.find(id))
                    .set(notices::due_at.eq(at.0))
                    .execute(self.conn)
                    .db()?;
                Ok(())
            }

            fn delete_notice(&mut self, id: i64) -> StoreResult<bool> {
                let deleted = diesel::delete(notices::table.find(id))
                    .execute(self.conn)
                    .db()?;
                Ok(deleted > 0)
            }

            fn count_notices(&mut self) -> StoreResult<u64> {
                let count: i64 = notices::table.count().get_result(self.conn).db()?;
                Ok(count as u64)
            }

            // ---- many users at once

            fn lock_users(&mut self, users: &[UserId]) -> StoreResult<()> {
                self.held.users(users);
                self.lock_user_rows(users).db()
            }

            fn memberships_in_org(
                &mut self,
                users: &[UserId],
                org: OrgId,
            ) -> StoreResult<Vec<Membership>> {
                let mut found = Vec::with_capacity(users.len());
                for chunk in id_chunks(users) {
                    let rows: Vec<MembershipRow> = memberships::table
                        .filter(memberships::org_id.eq(org.0))
                        .filter(memberships::user_id.eq_any(chunk))
                        .select(MembershipRow::as_select())
                        .load(self.conn)
                        .db()?;
                    found.extend(rows.into_iter().map(Membership::from));
                }
                found.sort_by_key(|m| m.user_id);
                Ok(found)
            }

            fn memberships_of_users(&mut self, users: &[UserId]) -> StoreResult<Vec<Membership>> {
                let mut found = Vec::with_capacity(users.len());
                for chunk in id_chunks(users) {
                    let rows: Vec<MembershipRow> = memberships::table
                        .filter(memberships::user_id.eq_any(chunk))
                        .select(MembershipRow::as_select())
                        .load(self.conn)
                        .db()?;
                    found.extend(rows.into_iter().map(Membership::from));
                }
                found.sort_by_key(|m| (m.user_id, m.org_id));
                Ok(found)
            }

            fn delete_authenticators_of(&mut self, users: &[UserId]) -> StoreResult<()> {
                self.held.require_users(users, "delete_authenticators_of");
                delete_rows_of_users!(self.conn, authenticators, users);
                Ok(())
            }

            fn delete_email_factors_of(&mut self, users: &[UserId]) -> StoreResult<()> {
                self.held.require_users(users, "delete_email_factors_of");
                delete_rows_of_users!(self.conn, email_factors, users);
                self.void_email_codes_of(users)
            }

            fn delete_recovery_codes_of(&mut self, users: &[UserId]) -> StoreResult<()> {
                self.held.require_users(users, "delete_recovery_codes_of");
                delete_rows_of_users!(self.conn, recovery_codes, users);
                Ok(())
            }

            fn reset_failures_of(
                &mut self,
                users: &[UserId],
                kind: FailureKind,
            ) -> StoreResult<()> {
                for chunk in id_chunks(users) {
                    diesel::delete(
                        failure_counters::table
                            .filter(failure_counters::user_id.eq_any(chunk))
                            .filter(failure_counters::kind.eq(kind.as_str())),
                    )
                    .execute(self.conn)
                    .db()?;
                }
                Ok(())
            }

            fn revoke_sessions_of(&mut self, users: &[UserId], now: Timestamp) -> StoreResult<u64> {
                let mut revoked = 0;
                for chunk in id_chunks(users) {
                    revoked += diesel::update(sessions::table)
                        .set(sessions::revoked_at.eq(Some(now.0)))
                        .filter(sessions::user_id.eq_any(chunk))
                        .filter(sessions::revoked_at.is_null())
                        .filter(sessions::expires_at.gt(now.0))
                        .execute(self.conn)
                        .db()?;
                }
                Ok(revoked as u64)
            }

            fn audit_events(
                &mut self,
                filter: &AuditFilter,
                offset: u64,
                limit: u64,
            ) -> StoreResult<(Vec<AuditEvent>, u64)> {
                let matching = || {
                    let mut query = audit_events::table.into_boxed::<$db>();
                    if let Some(org) = filter.org_id {
                        query = query.filter(audit_events::org_id.eq(org.0));
                    }
                    if let Some(user) = filter.user_id {
                        query = query.filter(
                            audit_events::actor_user_id
                                .eq(user.0)
                                .or(audit_events::target_user_id.eq(user.0)),
                        );
                    }
                    if let Some(action) = filter.action {
                        query = query.filter(audit_events::action.eq(action.as_str()));
                    }
                    if let Some(from) = filter.from {
                        query = query.filter(audit_events::at.ge(from.0));
                    }
                    if let Some(to) = filter.to {
                        query = query.filter(audit_events::at.lt(to.0));
                    }
                    if let Some(client) = client_text(filter.client) {
                        query = query.filter(audit_events::client_address.eq(client));
                    }
                    if let Some(before) = filter.before_id {
                        query = query.filter(audit_events::id.lt(before.0));
                    }
                    query
                };
                let total: i64 = matching().count().get_result(self.conn).db()?;
                let rows: Vec<AuditRow> = matching()
                    .order(audit_events::id.desc())
                    .offset(clamp(offset))
                    .limit(clamp(limit))
                    .select(AuditRow::as_select())
                    .load(self.conn)
                    .db()?;
                let events = rows
                    .into_iter()
                    .map(AuditEvent::try_from)
                    .collect::<Result<Vec<_>, _>>()
                    .db()?;
                Ok((events, count(total).db()?))
            }
        }
    };
}

impl_store_tx!(diesel::SqliteConnection, diesel::sqlite::Sqlite);
impl_store_tx!(diesel::PgConnection, diesel::pg::Pg);

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("Ann"), "%ann%");
        assert_eq!(like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
        assert_eq!(like_pattern("ÉMILE"), "%émile%");
    }
}

//! Users: creation, reads, updates with confirmed email changes, the
//! superadmin's seed endpoints, and the bootstrap of an empty deployment.

use std::collections::HashMap;

use super::orgs::{acting_admin, new_membership_detail};
use super::*;
use crate::authz::{
    FullCaller, in_callers_orgs, require_current_org_admin, require_manageable_user,
    require_may_manage, require_may_set_credentials, require_member_of_current_org,
    require_super_admin, require_visible_user,
};
use crate::crypto::{check_password_rules, hash_token, new_token};
use crate::policy::may_change_factors;
use crate::text::{composed, is_unprintable, mask_email, mask_email_apart, normalize_email};

/// Longest first or last name.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest user search: no name or email is longer, so a longer one could
/// match nothing (and SQLite refuses a LIKE pattern over 50,000 bytes).
pub const MAX_SEARCH_CHARS: usize = crate::text::MAX_EMAIL_LEN;

/// How a route names a user: by id, or (seed `byRef=true`) by email.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserRef {
    /// By id.
    Id(UserId),
    /// By email.
    Email(String),
}

/// A user with their verified factors, as the API shows users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserWithFactors {
    /// The user (the adapter must not show `password_hash`).
    pub user: User,
    /// Verified factors.
    pub factors: FactorSummary,
}

/// A member of an org, as its admins list them: the user, and the
/// membership that says whether they may sign in there, administer it,
/// and owe its MFA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgMember {
    /// The user with their factors.
    pub user: UserWithFactors,
    /// Their membership of the org.
    pub membership: Membership,
}

/// A user to be created by an admin into the current org. `Debug` leaves
/// out the password.
#[derive(Clone, PartialEq, Eq)]
pub struct NewUserRequest {
    /// Email (login).
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Initial password.
    pub password: String,
    /// Admin of the current org.
    pub is_admin: bool,
}

crate::redact::debug_without_secrets!(NewUserRequest {
    email, first_name, last_name, is_admin
} secret { password });

/// A new user's request, checked ([`MfaService::create_user_begin`]); its
/// password is hashed next ([`MfaService::hash_new_user_password`]).
/// `Debug` leaves out the password.
#[derive(Clone)]
pub struct NewUserChecked {
    email: String,
    first_name: String,
    last_name: String,
    is_admin: bool,
    password: String,
}

crate::redact::debug_without_secrets!(NewUserChecked {
    email, first_name, last_name, is_admin
} secret { password });

/// A new user with their password hashed
/// ([`MfaService::hash_new_user_password`]); stored next
/// ([`MfaService::create_user_finish`]). `Debug` leaves out the hash.
#[derive(Clone)]
pub struct NewUserHashed {
    email: String,
    first_name: String,
    last_name: String,
    is_admin: bool,
    password_hash: String,
}

crate::redact::debug_without_secrets!(NewUserHashed {
    email, first_name, last_name, is_admin
} secret { password_hash });

/// An update of a user, checked and read, its current password counted
/// ([`MfaService::update_user_begin`]); its passwords are checked and
/// hashed next ([`MfaService::update_user_check`]). `Debug` leaves out
/// the passwords.
pub struct UserUpdate {
    /// The session it was begun on: only that one may finish it.
    session: SessionId,
    id: UserId,
    /// When the update began: the time its steps count and audit at.
    now: Timestamp,
    first_name: Option<String>,
    last_name: Option<String>,
    /// A new email, other than the current one.
    new_email: Option<String>,
    /// The user as read at the start.
    current: User,
    /// An admin sets another user's email or password.
    sets_credentials: bool,
    /// Users changing their own email or password: the attempt with the
    /// current password they gave, counted, and that password.
    current_password: Option<(ReservedPasswordAttempt, String)>,
    new_password: Option<String>,
}

impl UserUpdate {
    /// Whether [`MfaService::update_user_check`] runs argon2 for it (a
    /// password to check or to set); without, it does nothing worth a
    /// thread of its own.
    pub fn hashes(&self) -> bool {
        self.current_password.is_some() || self.new_password.is_some()
    }
}

impl std::fmt::Debug for UserUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserUpdate")
            .field("id", &self.id)
            .field("now", &self.now)
            .field("new_email", &self.new_email)
            .field("checks_current_password", &self.current_password.is_some())
            .field("sets_password", &self.new_password.is_some())
            .finish_non_exhaustive()
    }
}

/// An update of a user whose passwords were checked and hashed
/// ([`MfaService::update_user_check`]); written next
/// ([`MfaService::update_user_finish`]). `Debug` leaves out the
/// passwords and the hash.
pub struct UserUpdateChecked {
    begun: UserUpdate,
    /// Whether the current password given was right, when one was asked.
    current_password_right: Option<bool>,
    new_hash: Option<String>,
    /// Why the new password is refused (too easy to guess), if it is.
    refusal: Option<MfaError>,
}

impl std::fmt::Debug for UserUpdateChecked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserUpdateChecked")
            .field("begun", &self.begun)
            .field("current_password_right", &self.current_password_right)
            .field("refusal", &self.refusal)
            .finish_non_exhaustive()
    }
}

/// A change of a user's email address waiting for its confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingEmail {
    /// The address that takes effect once the mailed token is confirmed.
    pub new_email: String,
    /// When the token stops working.
    pub expires_at: Timestamp,
}

/// A partial update of a user. `Debug` leaves out the passwords.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserPatch {
    /// New given name.
    pub first_name: Option<String>,
    /// New family name.
    pub last_name: Option<String>,
    /// New email: takes effect only once confirmed through the link sent
    /// to it.
    pub email: Option<String>,
    /// New password.
    pub password: Option<String>,
    /// The caller's current password: required when users change their own
    /// email or password.
    pub current_password: Option<String>,
}

crate::redact::debug_without_secrets!(UserPatch {
    first_name, last_name, email
} secret { password, current_password });

pub(super) fn check_name(field: &str, value: &str) -> MfaResult<String> {
    let v = composed(value.trim());
    if v.chars().any(is_unprintable) {
        return Err(MfaError::InvalidRequest(format!(
            "{field} must not hold control, format or invisible characters"
        )));
    }
    if v.chars().count() > MAX_NAME_CHARS {
        return Err(MfaError::InvalidRequest(format!(
            "{field} must have at most {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(v)
}

/// [`check_name`], and not blank: the seed's *Create User* and *User
/// Profile* require both names. (The operator's `create-user` may leave
/// them out.)
fn check_required_name(field: &str, value: &str) -> MfaResult<String> {
    let v = check_name(field, value)?;
    if v.is_empty() {
        return Err(MfaError::InvalidRequest(format!(
            "{field} must not be empty"
        )));
    }
    Ok(v)
}

/// The confirmation link of an email change: its token and lifetime.
struct ChangeLink<'a> {
    token: &'a str,
    ttl: u64,
}

/// Store the pending change of `id`'s email to `new_email` under `link`'s
/// token (an older token void), audited `email_change_requested` with the
/// masked address and `note`.
fn put_email_change_audited(
    tx: &mut dyn StoreTx,
    caller: &FullCaller,
    id: UserId,
    new_email: &str,
    link: &ChangeLink<'_>,
    now: Timestamp,
    note: &str,
) -> MfaResult<()> {
    let expires_at = now.plus_secs(link.ttl);
    tx.put_email_change(id, new_email, &hash_token(link.token), now, expires_at)?;
    audit_email_change(
        tx,
        caller,
        id,
        now,
        AuditAction::EmailChangeRequested,
        format!("to {}{note}", mask_email(new_email)),
    )
}

/// Audit a step of `caller`'s change of `id`'s email, in the caller's org.
fn audit_email_change(
    tx: &mut dyn StoreTx,
    caller: &FullCaller,
    id: UserId,
    now: Timestamp,
    action: AuditAction,
    detail: String,
) -> MfaResult<()> {
    audit(
        tx,
        now,
        Some(caller.org_id),
        Actor::caller(caller),
        Some(id),
        action,
        detail,
    )
}

fn with_factors(tx: &mut dyn StoreTx, user: User) -> MfaResult<UserWithFactors> {
    let factors = load_factors(tx, user.id)?;
    Ok(UserWithFactors { user, factors })
}

impl<S: Store> MfaService<S> {
    /// On an empty deployment, create the superadmin and a first org with
    /// them as its admin. Returns `None` when any user exists already,
    /// also when another server process bootstrapped the same database at
    /// the same moment (its insert won; this transaction rolled back).
    pub fn bootstrap(
        &self,
        email: &str,
        password: &str,
        org_name: &str,
    ) -> MfaResult<Option<(User, Org)>> {
        self.bootstrap_announced(email, password, org_name, |_, _| Ok(()))
    }

    /// [`MfaService::bootstrap`], with `announce` called once the
    /// superadmin and the org are written, before they are committed. An
    /// error from it leaves nothing created (and is returned), so the next
    /// start bootstraps again: a server that shows a generated password
    /// shows it there, and a password nobody saw never becomes the only
    /// way in.
    pub fn bootstrap_announced(
        &self,
        email: &str,
        password: &str,
        org_name: &str,
        announce: impl FnOnce(&User, &Org) -> MfaResult<()> + Send,
    ) -> MfaResult<Option<(User, Org)>> {
        let email = self.new_address(email)?;
        check_password_rules(password)?;
        // Every start but the first finds users: it need not spend 7 MiB
        // and ~15 ms of argon2 on a hash it would throw away. The count is
        // checked again in the transaction, for servers starting together.
        if self.store.read(|tx| Ok(tx.count_users()?))? > 0 {
            return Ok(None);
        }
        // Only now: a password that is ignored (users exist) stops nothing,
        // whatever the strength asked for since it was set.
        self.check_password_strength(password, &[&email, org_name])?;
        let hash = self.hasher.hash(password, self.rng.as_ref())?;
        let now = self.now();
        let mut announce = Some(announce);
        let created = self.write(|tx| {
            if tx.count_users()? > 0 {
                return Ok(None);
            }
            let org = tx.insert_org(org_name, now)?;
            let user = tx.insert_user(&NewUser {
                email: email.clone(),
                first_name: "Super".into(),
                last_name: "Admin".into(),
                password_hash: hash.clone(),
                is_super_admin: true,
                created_at: now,
            })?;
            let mut m = Membership::new(user.id, org.id);
            m.is_admin = true;
            tx.insert_membership(&m)?;
            audit(
                tx,
                now,
                Some(org.id),
                Actor::NO_ONE,
                Some(user.id),
                AuditAction::OrgCreated,
                "bootstrap",
            )?;
            audit(
                tx,
                now,
                Some(org.id),
                Actor::NO_ONE,
                Some(user.id),
                AuditAction::UserCreated,
                "bootstrap superadmin",
            )?;
            // Once: a transaction the database rolled back and ran again
            // commits the password the first run announced.
            if let Some(announce) = announce.take() {
                announce(&user, &org)?;
            }
            Ok(Some((user, org)))
        });
        match created {
            // Servers starting together on one empty database: both counted
            // no user, the other inserted the superadmin first.
            Err(MfaError::Conflict(_)) if self.store.read(|tx| Ok(tx.count_users()?))? > 0 => {
                Ok(None)
            }
            other => other,
        }
    }

    pub(crate) fn resolve_user_ref(&self, tx: &mut dyn StoreTx, r: &UserRef) -> MfaResult<UserId> {
        match r {
            UserRef::Id(id) => Ok(*id),
            UserRef::Email(email) => {
                let email = normalize_email(email).map_err(|_| MfaError::NotFound("user"))?;
                Ok(tx
                    .user_by_email(&email)?
                    .ok_or(MfaError::NotFound("user"))?
                    .id)
            }
        }
    }

    /// Create a user in the current org (its admins).
    ///
    /// The three steps it takes in turn ([`MfaService::create_user_begin`],
    /// [`MfaService::hash_new_user_password`],
    /// [`MfaService::create_user_finish`]) are public for a server that
    /// runs argon2 on threads of its own: only the middle one hashes, and
    /// only the last one touches the store.
    pub fn create_user(
        &self,
        caller: &FullCaller,
        req: &NewUserRequest,
    ) -> MfaResult<UserWithFactors> {
        let checked = self.create_user_begin(caller, req)?;
        let hashed = self.hash_new_user_password(checked)?;
        self.create_user_finish(caller, hashed)
    }

    /// The first step of [`MfaService::create_user`]: the caller is an
    /// admin of the current org, and the request's address, names and
    /// password are valid. It reads and writes nothing, so that no
    /// password is hashed for a request that would be refused for them.
    pub fn create_user_begin(
        &self,
        caller: &FullCaller,
        req: &NewUserRequest,
    ) -> MfaResult<NewUserChecked> {
        require_current_org_admin(caller)?;
        let email = self.new_address(&req.email)?;
        let first_name = check_required_name("firstName", &req.first_name)?;
        let last_name = check_required_name("lastName", &req.last_name)?;
        check_password_rules(&req.password)?;
        Ok(NewUserChecked {
            email,
            first_name,
            last_name,
            is_admin: req.is_admin,
            password: req.password.clone(),
        })
    }

    /// The second step of [`MfaService::create_user`]: how guessable the
    /// password is, estimated (`InvalidRequest` when too easily), and the
    /// password hashed with argon2id. It reads and writes nothing.
    pub fn hash_new_user_password(&self, checked: NewUserChecked) -> MfaResult<NewUserHashed> {
        let NewUserChecked {
            email,
            first_name,
            last_name,
            is_admin,
            password,
        } = checked;
        self.check_password_strength(&password, &[&email, &first_name, &last_name])?;
        Ok(NewUserHashed {
            password_hash: self.hasher.hash(&password, self.rng.as_ref())?,
            email,
            first_name,
            last_name,
            is_admin,
        })
    }

    /// The last step of [`MfaService::create_user`], in one transaction:
    /// the caller's rights checked again (with the admin's step-up), the
    /// user and their membership stored, and audited.
    pub fn create_user_finish(
        &self,
        caller: &FullCaller,
        hashed: NewUserHashed,
    ) -> MfaResult<UserWithFactors> {
        require_current_org_admin(caller)?;
        let NewUserHashed {
            email,
            first_name,
            last_name,
            is_admin,
            password_hash,
        } = hashed;
        let now = self.now();
        self.write(|tx| {
            self.require_admin_step_up(tx, caller)?;
            // The caller's org, deleted since the session was resolved,
            // took the session with it.
            tx.org_for_reference(caller.org_id)?
                .ok_or(MfaError::Unauthorized)?;
            let user = tx.insert_user(&NewUser {
                email: email.clone(),
                first_name: first_name.clone(),
                last_name: last_name.clone(),
                password_hash: password_hash.clone(),
                is_super_admin: false,
                created_at: now,
            })?;
            let mut m = Membership::new(user.id, caller.org_id);
            m.is_admin = is_admin;
            tx.insert_membership(&m)?;
            // As the operator's create-user writes them: the membership, and
            // with it an admin's rights, in the trail too.
            for (action, detail) in [
                (AuditAction::UserCreated, String::new()),
                (AuditAction::MembershipCreated, new_membership_detail(&m)),
            ] {
                audit(
                    tx,
                    now,
                    Some(caller.org_id),
                    Actor::caller(caller),
                    Some(user.id),
                    action,
                    detail,
                )?;
            }
            with_factors(tx, user)
        })
    }

    /// The users with these ids that the caller can see (admins).
    pub fn users_by_ids(
        &self,
        caller: &FullCaller,
        ids: &[UserId],
    ) -> MfaResult<Vec<UserWithFactors>> {
        require_current_org_admin(caller)?;
        self.store.read(|tx| {
            let mut out = Vec::new();
            for user in tx.users_by_ids(ids)? {
                let target_ms = tx.memberships_of_user(user.id)?;
                if in_callers_orgs(caller, &target_ms) {
                    out.push(with_factors(tx, user)?);
                }
            }
            Ok(out)
        })
    }

    /// A page of the current org's users whose name, full name or email contains
    /// `search`, case-insensitively (its admins).
    pub fn search_users(
        &self,
        caller: &FullCaller,
        search: Option<&str>,
        page: PageRequest,
    ) -> MfaResult<Page<OrgMember>> {
        require_current_org_admin(caller)?;
        // Composed, as names and addresses are stored.
        let search = search
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(composed);
        let search = search.as_deref();
        if search.is_some_and(|s| s.chars().any(char::is_control)) {
            // NUL above all: PostgreSQL text refuses it.
            return Err(MfaError::InvalidRequest(
                "search must not contain control characters".into(),
            ));
        }
        if search.is_some_and(|s| s.chars().count() > MAX_SEARCH_CHARS) {
            return Err(MfaError::InvalidRequest(format!(
                "search is at most {MAX_SEARCH_CHARS} characters: no name or email is longer"
            )));
        }
        self.store.read(|tx| {
            let (users, total) =
                tx.search_org_users(caller.org_id, search, page.offset(), u64::from(page.size))?;
            let ids: Vec<UserId> = users.iter().map(|u| u.id).collect();
            let mut memberships: HashMap<UserId, Membership> = tx
                .memberships_in_org(&ids, caller.org_id)?
                .into_iter()
                .map(|m| (m.user_id, m))
                .collect();
            let items = users
                .into_iter()
                .filter_map(|u| {
                    // Every user found is a member; one whose membership
                    // went between the two reads is left out.
                    let membership = memberships.remove(&u.id)?;
                    Some(with_factors(tx, u).map(|user| OrgMember { user, membership }))
                })
                .collect::<MfaResult<Vec<_>>>()?;
            Ok(Page {
                items,
                total,
                page: page.page,
                size: page.size,
            })
        })
    }

    /// The caller with their memberships (partial ok).
    pub fn me(&self, caller: &Caller) -> MfaResult<(UserWithFactors, Vec<Membership>)> {
        self.store.read(|tx| {
            let user = load_user(tx, caller.user_id)?;
            let memberships = tx.memberships_of_user(caller.user_id)?;
            Ok((with_factors(tx, user)?, memberships))
        })
    }

    fn visible_user(&self, tx: &mut dyn StoreTx, caller: &Caller, id: UserId) -> MfaResult<User> {
        let user = tx.user(id)?.ok_or(MfaError::NotFound("user"))?;
        require_visible_user(caller, id, &tx.memberships_of_user(id)?)?;
        Ok(user)
    }

    /// The user `id` and their memberships, if the caller may change
    /// their account ([`require_manageable_user`]).
    fn manageable_user(
        &self,
        tx: &mut dyn StoreTx,
        caller: &Caller,
        id: UserId,
    ) -> MfaResult<(User, Vec<Membership>)> {
        let user = tx.user(id)?.ok_or(MfaError::NotFound("user"))?;
        let memberships = tx.memberships_of_user(id)?;
        require_manageable_user(caller, id, &memberships)?;
        Ok((user, memberships))
    }

    /// The email change waiting for its confirmation, if any (and not
    /// expired), of a user the caller may read as [`MfaService::get_user`]
    /// says, or the caller's own on any session.
    pub fn pending_email(&self, caller: &Caller, id: UserId) -> MfaResult<Option<PendingEmail>> {
        let now = self.now();
        self.store.read(|tx| {
            if id != caller.user_id {
                self.visible_user(tx, caller, id)?;
            }
            Ok(tx
                .pending_email_change(id)?
                .filter(|change| now < change.expires_at)
                .map(|change| PendingEmail {
                    new_email: change.new_email,
                    expires_at: change.expires_at,
                }))
        })
    }

    /// Read a user (self, admins of the current org for its members,
    /// superadmins).
    pub fn get_user(&self, caller: &FullCaller, id: UserId) -> MfaResult<UserWithFactors> {
        self.store.read(|tx| {
            let user = self.visible_user(tx, caller, id)?;
            with_factors(tx, user)
        })
    }

    /// Update a user (self, admins of the current org for its active
    /// members, superadmins). A new
    /// email does not take effect at once: a single-use token goes to the
    /// new address and a notice to the old one.
    ///
    /// The three steps it takes in turn ([`MfaService::update_user_begin`],
    /// [`MfaService::update_user_check`],
    /// [`MfaService::update_user_finish`]) are public for a server that
    /// runs argon2 on threads of its own: only the middle one hashes, and
    /// only the other two touch the store.
    pub fn update_user(
        &self,
        caller: &FullCaller,
        id: UserId,
        patch: &UserPatch,
    ) -> MfaResult<UserWithFactors> {
        let begun = self.update_user_begin(caller, id, patch)?;
        let checked = self.update_user_check(begun)?;
        self.update_user_finish(caller, checked)
    }

    /// The first step of [`MfaService::update_user`]: the patch checked,
    /// the user read, the caller's rights checked, and, when users change
    /// their own email or password, the current password they gave
    /// counted toward their address's lockout (`TooManyAttempts` while it
    /// is locked out, before any hashing), as a login's is.
    pub fn update_user_begin(
        &self,
        caller: &FullCaller,
        id: UserId,
        patch: &UserPatch,
    ) -> MfaResult<UserUpdate> {
        let now = self.now();
        let first_name = patch
            .first_name
            .as_deref()
            .map(|v| check_required_name("firstName", v))
            .transpose()?;
        let last_name = patch
            .last_name
            .as_deref()
            .map(|v| check_required_name("lastName", v))
            .transpose()?;
        let new_email = patch
            .email
            .as_deref()
            .map(|e| self.new_address(e))
            .transpose()?;
        if let Some(p) = &patch.password {
            check_password_rules(p)?;
        }
        let (current, memberships) = self.store.read(|tx| self.manageable_user(tx, caller, id))?;
        require_may_manage(caller, current.is_super_admin)?;
        let new_email = new_email.filter(|e| *e != current.email);
        let is_self = caller.user_id == id;
        if is_self && (new_email.is_some() || patch.password.is_some()) && !caller.mfa_passed {
            // A confirmed change of email removes the email factor, and a
            // new password locks its owner out of every org: from a session
            // that verified no factor (one opened in an org that owes no
            // MFA), the password alone would take away what the user's
            // other orgs rely on.
            let factors = self
                .store
                .read_statement(|tx| load_factors(tx, caller.user_id))?;
            may_change_factors(caller.level, caller.mfa_passed, &factors)?;
        }
        // Checked before argon2, and again in the write transaction, so
        // that a membership committed in between counts.
        let sets_credentials = !is_self && (new_email.is_some() || patch.password.is_some());
        if sets_credentials {
            require_may_set_credentials(caller, &memberships)?;
        }
        // Any change to another user is an admin's, held to the step-up
        // (an audit renamed users from a superadmin's password alone).
        if !is_self {
            self.store
                .read_statement(|tx| self.recheck_admin(tx, caller))?;
        }
        let verified_current_password =
            is_self && (new_email.is_some() || patch.password.is_some());
        // A wrong current password is a password guess like a wrong login:
        // counted (before argon2, as a login's) toward the same lockout,
        // and audited; a right one clears the count.
        let current_password = if verified_current_password {
            let Some(given) = patch.current_password.clone() else {
                return Err(MfaError::InvalidRequest(
                    "currentPassword is required to change your own email or password".into(),
                ));
            };
            // Said before the current one is checked: it tells the user
            // nothing they did not send (an admin, who sends no current
            // password, is never told whether a password is the user's).
            if patch.password.as_deref() == Some(given.as_str()) {
                return Err(MfaError::InvalidRequest(
                    "the new password is the current one".into(),
                ));
            }
            let attempt = self.reserve_password_attempt(
                &current.email,
                Some(id),
                Actor::caller(caller),
                Some(caller.org_id),
                now,
            )?;
            Some((ReservedPasswordAttempt::new(&current.email, attempt), given))
        } else {
            None
        };
        Ok(UserUpdate {
            session: caller.session_id,
            id,
            now,
            first_name,
            last_name,
            new_email,
            current,
            sets_credentials,
            current_password,
            new_password: patch.password.clone(),
        })
    }

    /// The second step of [`MfaService::update_user`]: the current
    /// password given checked with argon2id; then, unless it was wrong,
    /// how guessable the new one is estimated, and the new one hashed. It
    /// reads and writes nothing.
    pub fn update_user_check(&self, begun: UserUpdate) -> MfaResult<UserUpdateChecked> {
        let current_password_right = begun
            .current_password
            .as_ref()
            .map(|(_, given)| self.hasher.verify(given, &begun.current.password_hash));
        // A wrong current password ends the update: nothing to estimate or
        // hash for (a stolen session does not get the estimate's CPU).
        let (new_hash, refusal) = match (&begun.new_password, current_password_right) {
            (Some(password), None | Some(true)) => {
                let current = &begun.current;
                let mut context = vec![
                    current.email.as_str(),
                    begun.first_name.as_deref().unwrap_or(&current.first_name),
                    begun.last_name.as_deref().unwrap_or(&current.last_name),
                ];
                context.extend(begun.new_email.as_deref());
                match self.check_password_strength(password, &context) {
                    Ok(()) => (Some(self.hasher.hash(password, self.rng.as_ref())?), None),
                    Err(refusal) => (None, Some(refusal)),
                }
            }
            _ => (None, None),
        };
        Ok(UserUpdateChecked {
            begun,
            current_password_right,
            new_hash,
            refusal,
        })
    }

    /// The last step of [`MfaService::update_user`]: a wrong current
    /// password audited and refused (`InvalidCredentials`, or
    /// `TooManyAttempts` when it starts a lockout), a right one's count
    /// cleared; then the new email's link mailed, and the rest of the
    /// change written. Refused as a wrong password when the update was
    /// begun on another session.
    pub fn update_user_finish(
        &self,
        caller: &FullCaller,
        checked: UserUpdateChecked,
    ) -> MfaResult<UserWithFactors> {
        let UserUpdateChecked {
            begun:
                UserUpdate {
                    session,
                    id,
                    now,
                    first_name,
                    last_name,
                    new_email,
                    current,
                    sets_credentials,
                    current_password,
                    new_password: _,
                },
            current_password_right,
            new_hash,
            refusal,
        } = checked;
        if session != caller.session_id {
            return Err(MfaError::InvalidCredentials);
        }
        let is_self = caller.user_id == id;
        let verified_current_password = current_password.is_some();
        if let Some((reserved, _)) = &current_password {
            let attempt = reserved.attempt();
            if current_password_right != Some(true) {
                return self.refuse_wrong_password(
                    &attempt,
                    Some(caller.org_id),
                    now,
                    "wrong currentPassword for a change of email or password",
                );
            }
            // Cleared at once, not with the change: a change refused later
            // (the new email taken) must not leave a right password counted.
            self.write(|tx| clear_attempt(tx, &attempt))?;
        }
        // A new password too easy to guess: refused, with the right
        // current password's count cleared and nothing changed.
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        let token = new_token(self.rng.as_ref());
        let ttl = self.config.email_change_ttl_secs;
        // Checked in every transaction of the change.
        let lock_checked = |tx: &mut dyn StoreTx| -> MfaResult<User> {
            // An admin's: the org's lock before the user's.
            if !is_self {
                self.require_admin_step_up(tx, caller)?;
            }
            let user = load_user_for_update(tx, id)?;
            if sets_credentials {
                require_may_set_credentials(caller, &tx.memberships_of_user(id)?)?;
            }
            if verified_current_password && user.password_hash != current.password_hash {
                // The password the caller proved is no longer the user's:
                // it was changed (by an admin, say) while it was checked.
                return Err(MfaError::InvalidCredentials);
            }
            Ok(user)
        };
        // A new email goes first, alone: its link is mailed before anything
        // else in the request is changed, so a link that cannot be sent
        // (`MailUnavailable`, the change withdrawn) leaves the whole
        // request undone, as its 503 says. (Names and a password saved
        // before the mail failed were kept behind a 503: an audit.)
        if let Some(e) = &new_email {
            let (old_email, by_admin) = self.write(|tx| {
                let user = lock_checked(tx)?;
                if tx.user_by_email(e)?.is_some() {
                    return Err(MfaError::Conflict("that email is taken".into()));
                }
                if let Some(pending) = tx.pending_email_change(id)? {
                    throttle_email_change(&pending, now, &self.config)?;
                }
                let link = ChangeLink { token: &token, ttl };
                put_email_change_audited(tx, caller, id, e, &link, now, "")?;
                let by_admin = match is_self {
                    true => None,
                    false => Some(acting_admin(tx, caller)?),
                };
                Ok((user.email, by_admin))
            })?;
            self.deliver_change_link(caller, id, e, token, ttl, None)?;
            // Queued once the link is out: a link that could not be sent
            // withdrew the change, which then never was.
            self.write(|tx| {
                self.notify(
                    tx,
                    &old_email,
                    MailKind::EmailChangeNotice {
                        new_email_masked: mask_email_apart(e, &old_email),
                        by_admin: by_admin.clone(),
                    },
                )
            })?;
        }
        let updated = self.write(|tx| {
            let mut user = lock_checked(tx)?;
            let mut changes = Vec::new();
            if let Some(v) = first_name.as_ref().filter(|v| **v != user.first_name) {
                user.first_name = v.clone();
                changes.push("firstName");
            }
            if let Some(v) = last_name.as_ref().filter(|v| **v != user.last_name) {
                user.last_name = v.clone();
                changes.push("lastName");
            }
            if let Some(h) = &new_hash {
                user.password_hash = h.clone();
                changes.push("password");
            }
            if !changes.is_empty() {
                tx.update_user(&user)?;
                // A user is one account in all their orgs: each sees it
                // change (a new password most of all).
                let event = caller_event(
                    caller,
                    now,
                    id,
                    AuditAction::UserUpdated,
                    changes.join(", "),
                );
                audit_sign_in_change(tx, event)?;
            }
            // Who set a new password, for the owner's notice.
            let password_set_by = match (&new_hash, is_self) {
                (None, _) => None,
                (Some(_), true) => {
                    tx.revoke_user_sessions(id, None, Some(caller.session_id), now)?;
                    Some(None)
                }
                (Some(_), false) => {
                    // An admin set the password: whoever held the old one is out.
                    tx.revoke_user_sessions(id, None, None, now)?;
                    Some(Some(acting_admin(tx, caller)?))
                }
            };
            if let Some(by_admin) = password_set_by {
                self.notify(
                    tx,
                    &user.email,
                    MailKind::SignInChanged {
                        change: SignInChange::PasswordSet,
                        by_admin,
                    },
                )?;
            }
            with_factors(tx, user)
        })?;
        Ok(updated)
    }

    /// Make a pending email change take effect (anyone holding the token).
    /// The email factor must be verified again at the new address, and
    /// every session of the user ends: the change removes a factor, and a
    /// session opened before it, a partial one in particular, would
    /// otherwise find the user without one and be let in to enroll
    /// another.
    /// `client` is the address the link was opened from, for the trail.
    pub fn confirm_email_change(&self, token: &str, client: Option<IpAddr>) -> MfaResult<()> {
        let now = self.now();
        let token_hash = hash_token(token);
        self.write_then(|tx| {
            let change = tx
                .email_change_by_token_hash(&token_hash)?
                .filter(|c| c.consumed_at.is_none())
                .ok_or(MfaError::InvalidCode)?;
            let to = mask_email(&change.new_email);
            let refused = |tx: &mut dyn StoreTx, why: &str| {
                let detail = format!("to {to}: {why}");
                audit_in_orgs_of(
                    tx,
                    change.user_id,
                    client,
                    now,
                    AuditAction::EmailChangeRefused,
                    &detail,
                )
            };
            if now >= change.expires_at {
                refused(tx, "the link expired")?;
                return Ok(Err(MfaError::CodeExpired));
            }
            if !tx.consume_email_change(change.id, now)? {
                return Err(MfaError::InvalidCode);
            }
            if tx.user_by_email(&change.new_email)?.is_some() {
                // Another account took the address after the request: the
                // link is used up (it can never succeed), and the trail
                // says why the user still has the old address.
                refused(tx, "the address is taken")?;
                return Ok(Err(MfaError::Conflict("that email is taken".into())));
            }
            let mut user = load_user_for_update(tx, change.user_id)?;
            let old = user.email.clone();
            user.email = change.new_email.clone();
            tx.update_user(&user)?;
            let email_factor_removed = tx.email_factor_verified_at(user.id)?.is_some();
            tx.delete_email_factor(user.id)?;
            tx.void_email_codes(user.id)?;
            tx.revoke_user_sessions(user.id, None, None, now)?;
            let detail = format!("from {} to {to}", mask_email(&old));
            audit_in_orgs_of(tx, user.id, client, now, AuditAction::EmailChanged, &detail)?;
            // The old address learns that it no longer signs in: if the
            // change was not the user's, this is the last chance to see it.
            self.notify(
                tx,
                &old,
                MailKind::EmailChanged {
                    new_email_masked: mask_email_apart(&change.new_email, &old),
                    email_factor_removed,
                },
            )?;
            Ok(Ok(()))
        })
    }

    /// Send the confirmation of a pending email change again, with a new
    /// token (self, admins of the current org for its active members).
    pub fn resend_email_change(&self, caller: &FullCaller, id: UserId) -> MfaResult<()> {
        let now = self.now();
        let token = new_token(self.rng.as_ref());
        let ttl = self.config.email_change_ttl_secs;
        let previous = self.write(|tx| {
            self.manageable_user(tx, caller, id)?;
            // Another user's link sent again is an admin's act, held to
            // the step-up as setting the address was (an audit sent one
            // from an admin's password alone).
            if caller.user_id != id {
                self.require_admin_step_up(tx, caller)?;
            }
            let pending = tx
                .pending_email_change(id)?
                .ok_or(MfaError::NotFound("pending email change"))?;
            throttle_email_change(&pending, now, &self.config)?;
            // A new token (the old one void) for the same change: audited
            // as its request, so the trail shows every link that went out.
            let link = ChangeLink { token: &token, ttl };
            put_email_change_audited(
                tx,
                caller,
                id,
                &pending.new_email,
                &link,
                now,
                ", sent again",
            )?;
            Ok(pending)
        })?;
        let new_email = previous.new_email.clone();
        self.deliver_change_link(caller, id, &new_email, token, ttl, Some(previous))
    }

    /// Mail the confirmation link of `id`'s pending change to `new_email`.
    /// A link that could not be sent is withdrawn with its change: nobody
    /// holds it, and it must not hold up the next attempt for 30 s. A link
    /// sent again (`previous`: the change as it was) gives way to the one
    /// sent before, which was delivered and still holds.
    fn deliver_change_link(
        &self,
        caller: &FullCaller,
        id: UserId,
        new_email: &str,
        token: String,
        ttl: u64,
        previous: Option<EmailChange>,
    ) -> MfaResult<()> {
        let token_hash = hash_token(&token);
        let kind = MailKind::EmailChangeConfirm {
            token,
            valid_for_secs: ttl,
        };
        // All or nothing, whatever the mail server said: a link that may
        // still arrive is withdrawn too (the request is answered as failed,
        // and the other fields are not changed).
        let sent = self.deliver(new_email, kind).map_err(|e| match e {
            MfaError::MailUnconfirmed { detail, .. } => MfaError::MailUnavailable(detail),
            other => other,
        });
        if sent.is_err() {
            let now = self.now();
            self.write(|tx| {
                // Unless a later request replaced it meanwhile.
                if !tx.withdraw_email_change(id, &token_hash)? {
                    return Ok(());
                }
                let why = match &previous {
                    Some(before) => {
                        tx.put_email_change(
                            id,
                            &before.new_email,
                            &before.token_hash,
                            before.created_at,
                            before.expires_at,
                        )?;
                        "the new confirmation link could not be mailed; the one sent before still holds"
                    }
                    None => "withdrawn, the confirmation link could not be mailed",
                };
                // The trail's request is followed by why nothing came of
                // it (an audit read a change that never happened).
                audit_email_change(
                    tx,
                    caller,
                    id,
                    now,
                    AuditAction::EmailChangeRefused,
                    format!("to {}: {why}", mask_email(new_email)),
                )
            })?;
        }
        sent
    }

    /// Delete a user (superadmin); not oneself.
    pub fn delete_user(&self, caller: &FullCaller, id: UserId) -> MfaResult<()> {
        require_super_admin(caller)?;
        if id == caller.user_id {
            return Err(MfaError::InvalidRequest(
                "you cannot delete yourself".into(),
            ));
        }
        let now = self.now();
        self.write(|tx| {
            self.require_admin_step_up(tx, caller)?;
            if !tx.delete_user(id)? {
                return Err(MfaError::NotFound("user"));
            }
            audit(
                tx,
                now,
                Some(caller.org_id),
                Actor::caller(caller),
                None,
                AuditAction::UserDeleted,
                format!("user {id}"),
            )
        })
    }

    /// Whether a user with this email exists among the users the caller
    /// can see (admins).
    pub fn email_exists(&self, caller: &FullCaller, email: &str) -> MfaResult<bool> {
        require_current_org_admin(caller)?;
        let Ok(email) = normalize_email(email) else {
            return Ok(false);
        };
        self.store.read(|tx| {
            let Some(user) = tx.user_by_email(&email)? else {
                return Ok(false);
            };
            Ok(in_callers_orgs(caller, &tx.memberships_of_user(user.id)?))
        })
    }

    /// Load any user by email, whatever their orgs (superadmin).
    pub fn user_by_email(&self, caller: &FullCaller, email: &str) -> MfaResult<UserWithFactors> {
        require_super_admin(caller)?;
        let email = normalize_email(email).map_err(|_| MfaError::NotFound("user"))?;
        self.store.read(|tx| {
            let user = tx
                .user_by_email(&email)?
                .ok_or(MfaError::NotFound("user"))?;
            with_factors(tx, user)
        })
    }

    /// The active admins of an org (superadmin).
    pub fn org_admins(&self, caller: &FullCaller, org: OrgId) -> MfaResult<Vec<UserWithFactors>> {
        require_super_admin(caller)?;
        self.store.read(|tx| {
            tx.org(org)?.ok_or(MfaError::NotFound("org"))?;
            let admins = tx.org_admins(org)?;
            admins.into_iter().map(|u| with_factors(tx, u)).collect()
        })
    }

    /// The superadmin joins an org as its admin (audited). Joining an org
    /// they are an active admin of already changes nothing and audits
    /// nothing: the trail showed joins that did not happen.
    pub fn join_org(&self, caller: &FullCaller, org: OrgId) -> MfaResult<Membership> {
        require_super_admin(caller)?;
        let now = self.now();
        self.write(|tx| {
            self.require_admin_step_up(tx, caller)?;
            tx.org_for_reference(org)?
                .ok_or(MfaError::NotFound("org"))?;
            let m = match tx.membership_for_update(caller.user_id, org)? {
                Some(m) if m.is_active && m.is_admin => return Ok(m),
                Some(mut m) => {
                    m.is_active = true;
                    m.is_admin = true;
                    tx.update_membership(&m)?;
                    m
                }
                None => {
                    let mut m = Membership::new(caller.user_id, org);
                    m.is_admin = true;
                    tx.insert_membership(&m)?;
                    m
                }
            };
            audit(
                tx,
                now,
                Some(org),
                Actor::caller(caller),
                Some(caller.user_id),
                AuditAction::SuperAdminJoinedOrg,
                "",
            )?;
            Ok(m)
        })
    }

    /// Remove a user, by email, from every org, active or not (superadmin).
    /// Returns the org ids; the user's sessions end.
    pub fn delete_from_all_orgs(&self, caller: &FullCaller, email: &str) -> MfaResult<Vec<OrgId>> {
        require_super_admin(caller)?;
        let email = normalize_email(email).map_err(|_| MfaError::NotFound("user"))?;
        let now = self.now();
        self.write(|tx| {
            self.require_admin_step_up(tx, caller)?;
            let user = tx
                .user_by_email(&email)?
                .ok_or(MfaError::NotFound("user"))?;
            let orgs: Vec<OrgId> = tx
                .memberships_of_user(user.id)?
                .iter()
                .map(|m| m.org_id)
                .collect();
            for &org in &orgs {
                tx.delete_membership(user.id, org)?;
                audit(
                    tx,
                    now,
                    Some(org),
                    Actor::caller(caller),
                    Some(user.id),
                    AuditAction::MembershipDeleted,
                    "removed from all orgs",
                )?;
            }
            tx.revoke_user_sessions(user.id, None, None, now)?;
            Ok(orgs)
        })
    }

    /// Whether the current org has this user as a member; for adapters
    /// that resolve seed references before calling in.
    pub fn require_current_org_member(&self, caller: &FullCaller, user: UserId) -> MfaResult<()> {
        self.store
            .read(|tx| require_member_of_current_org(tx.membership(user, caller.org_id)?.as_ref()))
    }
}

/// An email change's confirmation goes to an address nobody has proven
/// yet, so the server must not send it at any rate a caller asks: at most
/// one per `email_resend_interval_secs` per user, as email codes, whether
/// it is a new change or a resend of the pending one (whose `created_at`
/// is its last mail).
fn throttle_email_change(
    pending: &EmailChange,
    now: Timestamp,
    config: &ServiceConfig,
) -> MfaResult<()> {
    throttle_mail(pending.created_at, now, config.email_resend_interval_secs)
}

/// An event about `user`'s own account that no session places in an org
/// (an email change confirmed or refused through its link): written to
/// each org of the user, so that every admin of the user sees it (an admin
/// reads the audit trail of one org), or to none if they have no org.
fn audit_in_orgs_of(
    tx: &mut dyn StoreTx,
    user: UserId,
    client: Option<IpAddr>,
    now: Timestamp,
    action: AuditAction,
    detail: &str,
) -> MfaResult<()> {
    let mut orgs: Vec<Option<OrgId>> = tx
        .memberships_of_user(user)?
        .iter()
        .map(|m| Some(m.org_id))
        .collect();
    if orgs.is_empty() {
        orgs.push(None);
    }
    let events: Vec<NewAuditEvent> = orgs
        .into_iter()
        .map(|org_id| {
            let by = Actor {
                user: Some(user),
                client,
            };
            event(now, org_id, by, Some(user), action, detail)
        })
        .collect();
    Ok(tx.insert_audits(&events)?)
}

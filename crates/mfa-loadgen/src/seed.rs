//! Seeding: one org enforcing MFA, an admin, and N members with a verified
//! authenticator of a known secret, partial sessions to verify on and full
//! sessions to read with, written straight through mfa-store in large
//! write transactions. Nothing here is measured.

use std::time::Instant;

use mfa_core::crypto::{PasswordHasher, PasswordParams, hash_token, new_token};
use mfa_core::ports::{Clock, OsRandomness, SystemClock};
use mfa_core::{
    AssuranceLevel, Membership, MfaError, NewSession, NewUser, OrgId, Store, StoreTx, Timestamp,
    UserId,
};
use mfa_store::DbStore;
use mfa_totp::{Secret, TotpParams};

/// The password of every seeded user (one argon2 hash, reused).
pub const PASSWORD: &str = "loadgen password 2026";

/// Users written per write transaction.
const BATCH: usize = 2_000;

/// Seeded sessions outlive a run of any length: the server checks only
/// their expiry (partial ones normally last 10 minutes).
const SESSION_LIFETIME_SECS: u64 = 6 * 3600;

/// Seeded partial sessions are "created" (and so last seen) this far in the
/// future. The server writes a session's last-seen time when it is over a
/// minute old; a partial session of a real login storm is verified seconds
/// after its login, never over a minute later, but seeding 100,000 users
/// on PostgreSQL takes minutes. A last-seen time ahead of the clock keeps
/// the verify runs from paying a write per request that a storm does not
/// pay. (Full sessions for reads are touched once before the read run.)
const PARTIAL_SEEN_AHEAD_SECS: u64 = 3600;

const FIRST_NAMES: [&str; 20] = [
    "Ann", "Bob", "Carla", "Dmitri", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal",
    "Lena", "Mateo", "Nora", "Oskar", "Priya", "Quentin", "Rosa", "Sven", "Tanja",
];
const LAST_NAMES: [&str; 25] = [
    "Meyer", "Okafor", "Rossi", "Nguyen", "Schmidt", "Garcia", "Kowalski", "Haddad", "Tanaka",
    "Silva", "Jensen", "Novak", "Dubois", "Fischer", "Ivanova", "Moreau", "Costa", "Yilmaz",
    "Larsen", "Weber", "Becker", "Lopez", "Horvat", "Berg", "Sato",
];

/// What to seed.
#[derive(Clone, Copy, Debug)]
pub struct SeedSpec {
    /// Members of the org.
    pub users: usize,
    /// Partial sessions per member (each verifies once).
    pub partial_sessions_per_user: usize,
    /// Members (the first ones) that also get a full session to read with.
    pub full_sessions: usize,
    /// argon2id parameters of the members' password hash.
    pub password_params: PasswordParams,
}

/// What the scenarios need to know about the seeded data.
#[derive(Debug)]
pub struct Seeded {
    /// User ids, by member index.
    pub user_ids: Vec<UserId>,
    /// Authenticator secrets, by member index.
    pub secrets: Vec<Secret>,
    /// Partial-session tokens: member `i`'s `k`-th at `i * per_user + k`.
    pub partial_tokens: Vec<String>,
    /// Partial sessions per member.
    pub partial_per_user: usize,
    /// Full-session tokens of the first members.
    pub full_tokens: Vec<String>,
    /// A full session of the org's admin.
    pub admin_token: String,
    /// Seconds spent seeding.
    pub seconds: f64,
}

/// The email of member `i`.
pub fn email(i: usize) -> String {
    format!("user{i}@loadgen.example")
}

/// The first name of member `i` (20 names, round robin).
pub fn first_name(i: usize) -> &'static str {
    FIRST_NAMES[i % FIRST_NAMES.len()]
}

fn last_name(i: usize) -> &'static str {
    LAST_NAMES[(i / FIRST_NAMES.len()) % LAST_NAMES.len()]
}

/// Seed `spec` into an empty, migrated store. Prints progress to stderr.
pub fn seed(store: &DbStore, spec: SeedSpec) -> Result<Seeded, MfaError> {
    let started = Instant::now();
    let rng = OsRandomness;
    let now = SystemClock.now();
    // One argon2 hash for everyone: hashing 100k passwords would take
    // 25 minutes and measure nothing.
    let hasher = PasswordHasher::new(spec.password_params, &rng)?;
    let password_hash = hasher.hash(PASSWORD, &rng)?;
    let params = TotpParams::default();
    let expires_at = now.plus_secs(SESSION_LIFETIME_SECS);

    let (org_id, admin_token) = store.write(|tx| {
        let mut org = tx.insert_org("Loadgen Inc", now)?;
        org.is_mfa_enforced = true;
        org.mfa_enforced_at = Some(now);
        tx.update_org(&org)?;
        let admin = tx.insert_user(&NewUser {
            email: "admin@loadgen.example".into(),
            first_name: "Ada".into(),
            last_name: "Admin".into(),
            password_hash: password_hash.clone(),
            is_super_admin: false,
            created_at: now,
        })?;
        tx.insert_membership(&Membership {
            is_admin: true,
            ..Membership::new(admin.id, org.id)
        })?;
        let token = new_token(&rng);
        insert_session(
            tx,
            &token,
            admin.id,
            org.id,
            AssuranceLevel::Full,
            now,
            expires_at,
        )?;
        Ok((org.id, token))
    })?;

    let per_user = spec.partial_sessions_per_user;
    let mut user_ids = Vec::with_capacity(spec.users);
    let mut secrets = Vec::with_capacity(spec.users);
    let mut partial_tokens = Vec::with_capacity(spec.users * per_user);
    let mut full_tokens = Vec::with_capacity(spec.full_sessions.min(spec.users));
    let mut next_report = Instant::now();
    for batch_start in (0..spec.users).step_by(BATCH) {
        let batch_end = (batch_start + BATCH).min(spec.users);
        let written = store.write(|tx| {
            let mut out = Vec::with_capacity(batch_end - batch_start);
            for i in batch_start..batch_end {
                let user = tx.insert_user(&NewUser {
                    email: email(i),
                    first_name: first_name(i).into(),
                    last_name: last_name(i).into(),
                    password_hash: password_hash.clone(),
                    is_super_admin: false,
                    created_at: now,
                })?;
                tx.insert_membership(&Membership::new(user.id, org_id))?;
                let secret = Secret::generate();
                tx.put_pending_authenticator(user.id, &secret, &params, now, now.plus_secs(600))?;
                // Step 0 as the last used one: every current step is fresh.
                if !tx.verify_authenticator(user.id, 0, now)? {
                    return Err(MfaError::Conflict("authenticator already verified".into()));
                }
                let mut tokens = Vec::with_capacity(per_user);
                for _ in 0..per_user {
                    let token = new_token(&rng);
                    insert_session(
                        tx,
                        &token,
                        user.id,
                        org_id,
                        AssuranceLevel::Partial,
                        now.plus_secs(PARTIAL_SEEN_AHEAD_SECS),
                        expires_at,
                    )?;
                    tokens.push(token);
                }
                let full = if i < spec.full_sessions {
                    let token = new_token(&rng);
                    insert_session(
                        tx,
                        &token,
                        user.id,
                        org_id,
                        AssuranceLevel::Full,
                        now,
                        expires_at,
                    )?;
                    Some(token)
                } else {
                    None
                };
                out.push((user.id, secret, tokens, full));
            }
            Ok(out)
        })?;
        for (id, secret, tokens, full) in written {
            user_ids.push(id);
            secrets.push(secret);
            partial_tokens.extend(tokens);
            full_tokens.extend(full);
        }
        if next_report <= Instant::now() || batch_end == spec.users {
            eprintln!(
                "  seeded {batch_end}/{} users ({:.1} s)",
                spec.users,
                started.elapsed().as_secs_f64()
            );
            next_report = Instant::now() + std::time::Duration::from_secs(5);
        }
    }
    Ok(Seeded {
        user_ids,
        secrets,
        partial_tokens,
        partial_per_user: per_user,
        full_tokens,
        admin_token,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn insert_session(
    tx: &mut dyn StoreTx,
    token: &str,
    user_id: UserId,
    org_id: OrgId,
    level: AssuranceLevel,
    created_at: Timestamp,
    expires_at: Timestamp,
) -> Result<(), MfaError> {
    tx.insert_session(&NewSession {
        token_hash: hash_token(token),
        user_id,
        org_id,
        level,
        created_at,
        expires_at,
    })?;
    Ok(())
}

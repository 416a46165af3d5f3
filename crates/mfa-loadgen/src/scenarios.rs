//! The workloads: MFA verify, full login, authenticated read, user search,
//! reset, and the password-login flood.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use mfa_totp::{Secret, TotpParams, time_step, totp_at_step};
use serde_json::json;

use crate::http::{Method, Request, Response};
use crate::load::{Next, Workload};
use crate::seed::{self, Seeded};

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A member as the verify workloads see them.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    /// Index into the seeded data.
    pub index: usize,
    /// The last TOTP step the server accepted (seeded as 0).
    last_step: u64,
    /// Seeded partial sessions spent (each successful verify revokes one).
    sessions_used: usize,
}

/// The members whose codes the verify workloads present, in a queue: a
/// member is held by one flow at a time, so their steps go up in order.
///
/// The server accepts a code of the current step or one either side, and
/// each step of a user once. A member is therefore offered the current step
/// and then the next one (never the previous one, which a step boundary
/// during the request could push out of the window): two fresh codes per
/// member at any moment, one more every period. Each successful verify also
/// revokes the partial session it ran on, so a member verifies at most as
/// often as they have seeded partial sessions.
#[derive(Debug)]
pub struct MemberPool {
    queue: Mutex<VecDeque<Member>>,
    sessions_per_member: usize,
    period: u64,
}

impl MemberPool {
    /// The members with these indexes.
    pub fn new(
        members: std::ops::Range<usize>,
        sessions_per_member: usize,
        params: &TotpParams,
    ) -> MemberPool {
        MemberPool {
            queue: Mutex::new(
                members
                    .map(|index| Member {
                        index,
                        last_step: 0,
                        sessions_used: 0,
                    })
                    .collect(),
            ),
            sessions_per_member,
            period: params.period,
        }
    }

    /// A member with a fresh step now (and an unspent partial session if
    /// `need_session`), with that step; `None` when nobody has one.
    pub fn take(&self, need_session: bool) -> Option<(Member, u64)> {
        let now = time_step(unix_now(), self.period);
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        for _ in 0..queue.len() {
            let member = queue.pop_front()?;
            let step = (member.last_step + 1).max(now);
            let has_session = member.sessions_used < self.sessions_per_member;
            if step <= now + 1 && (has_session || !need_session) {
                return Some((member, step));
            }
            queue.push_back(member);
        }
        None
    }

    /// Put a member back after a flow.
    pub fn give_back(&self, member: Member) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(member);
    }

    /// Members in the queue (not held by a flow).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn verify_request(token: &str, code: &str) -> Request {
    Request::new(Method::Post, "/user/auth/mfa/verify")
        .bearer(token)
        .json(&json!({"method": "AUTHENTICATOR", "code": code}))
}

fn login_request(index: usize) -> Request {
    Request::new(Method::Post, "/user/auth/login")
        .json(&json!({"email": seed::email(index), "password": seed::PASSWORD}))
}

/// A 200 whose JSON has a non-empty string `token`.
fn token_of(res: &Response) -> Result<String, String> {
    if res.status != 200 {
        return Err(res.error_kind());
    }
    res.json()
        .and_then(|v| v.get("token")?.as_str().map(str::to_string))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "200 without a token".to_string())
}

/// Scenario 1: distinct members present a fresh valid authenticator code on
/// a seeded partial session (`POST /user/auth/mfa/verify`).
#[derive(Debug)]
pub struct Verify {
    /// Shared with the other verify workloads.
    pub pool: Arc<MemberPool>,
    /// The seeded data.
    pub seeded: Arc<Seeded>,
    /// The TOTP parameters of the seeded authenticators.
    pub params: TotpParams,
}

impl Workload for Verify {
    type Ctx = (Member, u64);

    fn start(&self) -> Option<(Request, Self::Ctx)> {
        let (member, step) = self.pool.take(true)?;
        let token = &self.seeded.partial_tokens
            [member.index * self.seeded.partial_per_user + member.sessions_used];
        let code = totp_at_step(&self.seeded.secrets[member.index], step, &self.params);
        Some((verify_request(token, &code), (member, step)))
    }

    fn respond(&self, (mut member, step): Self::Ctx, res: &Response) -> Next<Self::Ctx> {
        member.last_step = spent_step(&self.seeded.secrets[member.index], step, &self.params);
        let outcome = token_of(res).map(|_| {
            member.sessions_used += 1;
        });
        self.pool.give_back(member);
        Next::Done(outcome)
    }

    fn abandon(&self, (member, step): Self::Ctx) {
        // The server may have accepted the step: never offer it again.
        self.pool.give_back(Member {
            last_step: spent_step(&self.seeded.secrets[member.index], step, &self.params),
            ..member
        });
    }
}

/// The last step the server may have spent on the code of `step`. It
/// accepts a code once, at the highest step of its ±1 window that the code
/// matches, so a code shared with a later step (one pair of neighbouring
/// steps in a million) spends that step too, and offering it next would be
/// refused as a replay.
fn spent_step(secret: &Secret, step: u64, params: &TotpParams) -> u64 {
    let code = totp_at_step(secret, step, params);
    (step + 1..=step + 2)
        .rev()
        .find(|&later| totp_at_step(secret, later, params) == code)
        .unwrap_or(step)
}

/// The stage of a full login.
#[derive(Debug)]
pub enum LoginStage {
    /// The password was sent.
    Password(Member, u64),
    /// The code was sent on the partial session.
    Code(Member, u64),
}

/// Scenario 2: a full login: password (`POST /user/auth/login`, argon2id),
/// then the authenticator code on the partial session it returns.
#[derive(Debug)]
pub struct Login {
    /// Shared with the other verify workloads.
    pub pool: Arc<MemberPool>,
    /// The seeded data.
    pub seeded: Arc<Seeded>,
    /// The TOTP parameters of the seeded authenticators.
    pub params: TotpParams,
}

impl Workload for Login {
    type Ctx = LoginStage;

    fn start(&self) -> Option<(Request, Self::Ctx)> {
        let (member, step) = self.pool.take(false)?;
        Some((
            login_request(member.index),
            LoginStage::Password(member, step),
        ))
    }

    fn respond(&self, ctx: Self::Ctx, res: &Response) -> Next<Self::Ctx> {
        match ctx {
            LoginStage::Password(member, step) => {
                let challenged = res.json().is_some_and(|v| {
                    v.get("mfa").and_then(|m| m.as_str()) == Some("challenge_required")
                });
                match token_of(res) {
                    Ok(token) if challenged => {
                        let code =
                            totp_at_step(&self.seeded.secrets[member.index], step, &self.params);
                        Next::Request(
                            verify_request(&token, &code),
                            LoginStage::Code(member, step),
                        )
                    }
                    Ok(_) => {
                        self.pool.give_back(member);
                        Next::Done(Err("login without challenge_required".into()))
                    }
                    Err(e) => {
                        self.pool.give_back(member);
                        Next::Done(Err(format!("login: {e}")))
                    }
                }
            }
            LoginStage::Code(mut member, step) => {
                member.last_step =
                    spent_step(&self.seeded.secrets[member.index], step, &self.params);
                self.pool.give_back(member);
                Next::Done(
                    token_of(res)
                        .map(|_| ())
                        .map_err(|e| format!("verify: {e}")),
                )
            }
        }
    }

    fn abandon(&self, ctx: Self::Ctx) {
        match ctx {
            LoginStage::Password(member, _) => self.pool.give_back(member),
            LoginStage::Code(member, step) => self.pool.give_back(Member {
                last_step: spent_step(&self.seeded.secrets[member.index], step, &self.params),
                ..member
            }),
        }
    }
}

/// The flood beside verification: password logins only, round robin over
/// the members (each opens a partial session; no code follows).
#[derive(Debug)]
pub struct PasswordFlood {
    /// Members to log in as: `0..members`.
    pub members: usize,
    /// Round-robin position.
    pub next: AtomicUsize,
}

impl Workload for PasswordFlood {
    type Ctx = ();

    fn start(&self) -> Option<(Request, ())> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.members.max(1);
        Some((login_request(i), ()))
    }

    fn respond(&self, _: (), res: &Response) -> Next<()> {
        Next::Done(token_of(res).map(|_| ()))
    }
}

/// Scenario 3: the authenticated read `GET /oauth/users/mfaDetails` on full
/// sessions, round robin.
#[derive(Debug)]
pub struct Read {
    /// The seeded data (its full-session tokens).
    pub seeded: Arc<Seeded>,
    /// Round-robin position.
    pub next: AtomicUsize,
}

impl Workload for Read {
    type Ctx = ();

    fn start(&self) -> Option<(Request, ())> {
        let tokens = &self.seeded.full_tokens;
        if tokens.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % tokens.len();
        Some((
            Request::new(Method::Get, "/oauth/users/mfaDetails").bearer(&tokens[i]),
            (),
        ))
    }

    fn respond(&self, _: (), res: &Response) -> Next<()> {
        let enrolled = res.json().is_some_and(|v| {
            v.pointer("/details/AUTHENTICATOR/verified")
                .and_then(|b| b.as_bool())
                == Some(true)
        });
        Next::Done(match (res.status, enrolled) {
            (200, true) => Ok(()),
            (200, false) => Err("200 without a verified authenticator".into()),
            _ => Err(res.error_kind()),
        })
    }
}

/// Scenario 4: the admin's user search
/// `GET /user/users/page?search=…&page=0&size=20` over the whole org.
#[derive(Debug)]
pub struct Search {
    /// The admin's full-session token.
    pub admin_token: String,
    /// The search terms, round robin.
    pub terms: Vec<String>,
    /// Round-robin position.
    pub next: AtomicUsize,
}

impl Workload for Search {
    type Ctx = ();

    fn start(&self) -> Option<(Request, ())> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.terms.len().max(1);
        let term = self.terms.get(i).map(String::as_str).unwrap_or("");
        Some((
            Request::new(
                Method::Get,
                format!("/user/users/page?search={term}&page=0&size=20"),
            )
            .bearer(&self.admin_token),
            (),
        ))
    }

    fn respond(&self, _: (), res: &Response) -> Next<()> {
        let paged = res.json().is_some_and(|v| v.get("total").is_some());
        Next::Done(match (res.status, paged) {
            (200, true) => Ok(()),
            (200, false) => Err("200 without a page".into()),
            _ => Err(res.error_kind()),
        })
    }
}

/// Scenario 5: one admin reset of many members' factors
/// (`PUT /user/users/mfa/reset`).
#[derive(Debug)]
pub struct Reset {
    /// The admin's full-session token.
    pub admin_token: String,
    /// The user ids to reset.
    pub ids: Vec<i64>,
}

impl Workload for Reset {
    type Ctx = ();

    fn start(&self) -> Option<(Request, ())> {
        Some((
            Request::new(Method::Put, "/user/users/mfa/reset")
                .bearer(&self.admin_token)
                .json(&json!({ "ids": self.ids })),
            (),
        ))
    }

    fn respond(&self, _: (), res: &Response) -> Next<()> {
        Next::Done(if res.status == 204 {
            Ok(())
        } else {
            Err(res.error_kind())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_shared_with_the_next_step_spends_both() {
        let params = TotpParams::default();
        let secret = Secret::from_bytes((0u8..20).collect());
        // Steps 1,340,014 and 1,340,015 of this secret both give 485512.
        assert_eq!(
            totp_at_step(&secret, 1_340_014, &params),
            totp_at_step(&secret, 1_340_015, &params)
        );
        assert_eq!(spent_step(&secret, 1_340_014, &params), 1_340_015);
        assert_eq!(spent_step(&secret, 1_340_015, &params), 1_340_015);
    }

    #[test]
    fn a_member_gets_the_current_step_then_the_next_then_waits() {
        let params = TotpParams::default();
        let pool = MemberPool::new(0..1, 5, &params);
        let (m, first) = pool.take(true).unwrap_or_else(|| panic!("empty"));
        let now = time_step(unix_now(), params.period);
        assert!(first == now || first == now + 1, "{first} vs {now}");
        pool.give_back(Member {
            last_step: first,
            sessions_used: m.sessions_used + 1,
            ..m
        });
        if let Some((m, second)) = pool.take(true) {
            assert_eq!(second, first + 1);
            pool.give_back(Member {
                last_step: second,
                ..m
            });
        }
        // Two steps ahead of now is outside the window: nobody is offered.
        let current = time_step(unix_now(), params.period);
        if first == current {
            assert!(pool.take(true).is_none());
        }
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn members_without_sessions_still_log_in() {
        let params = TotpParams::default();
        let pool = MemberPool::new(0..1, 0, &params);
        assert!(pool.take(true).is_none());
        assert!(pool.take(false).is_some());
    }
}

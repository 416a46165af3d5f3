//! The routes: thin adapters that parse wire types, call the service on the
//! blocking pool, and map the result to wire types.
//!
//! Registration order matters where patterns overlap: a literal segment
//! (`/user/users/me`, `/user/org/mfa`) is registered before the `{id}`
//! pattern of the same method, because actix takes the first match.

use actix_web::web;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::error::ApiError;
use crate::password_pool::PasswordPool;

pub mod auth;
pub mod extra;
pub mod health;
pub mod mfa_seed000;
pub mod mfa_seed004;
pub mod orgs;
pub mod ui;
pub mod users;

/// Register every route of the API. Each goes through utoipa-actix-web's
/// `service`, which takes only handlers with a `#[utoipa::path]`: a route
/// cannot be registered without being documented.
pub fn configure(cfg: &mut ServiceConfig<'_>) {
    auth::configure(cfg);
    orgs::configure(cfg);
    mfa_seed000::configure(cfg);
    extra::configure(cfg);
    users::configure(cfg);
    mfa_seed004::configure(cfg);
    health::configure(cfg);
    ui::configure(cfg);
}

/// Run a blocking operation (diesel, argon2, SMTP) on the blocking pool and
/// turn both its error and a failure of the pool (a panic) into an answer.
pub(crate) async fn run<T, E, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    web::block(f).await?.map_err(Into::into)
}

/// Like [`run`], for an operation that hashes or verifies a password or a
/// recovery code (argon2id): on the password pool, not the blocking pool.
pub(crate) async fn run_hashing<T, E, F>(pool: &PasswordPool, f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    pool.block(f).await?.map_err(Into::into)
}

/// A check of a password or a recovery code in its three steps, each
/// where it waits for nothing scarce: `begin` (the attempt counted, the
/// hash read) on the blocking pool, argon2's `check` alone on the password
/// threads, `finish` (the outcome written) on the blocking pool again. A
/// database that stops answering, or holds a row's lock, then holds no
/// hashing thread: when a login ran whole on the password threads, every
/// login queued behind one waiting for the database, other users' too,
/// was refused as a throttle (an audit saw 56 of 60). A refusal of
/// `begin` (a lockout) is the answer, unhashed.
pub(crate) async fn in_password_steps<B, C, T>(
    passwords: &PasswordPool,
    begin: impl FnOnce() -> mfa_core::MfaResult<B> + Send + 'static,
    check: impl FnOnce(B) -> C + Send + 'static,
    finish: impl FnOnce(C) -> mfa_core::MfaResult<T> + Send + 'static,
) -> Result<mfa_core::MfaResult<T>, ApiError>
where
    B: Send + 'static,
    C: Send + 'static,
    T: Send + 'static,
{
    let begun = match web::block(begin).await? {
        Ok(begun) => begun,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let checked = passwords.block(move || check(begun)).await?;
    Ok(web::block(move || finish(checked)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::ResponseError as _;

    #[actix_web::test]
    async fn a_panic_on_the_blocking_pool_is_a_500() {
        let err = run(|| -> Result<(), ApiError> { panic!("boom") })
            .await
            .unwrap_err();
        assert_eq!(err.status_code().as_u16(), 500);
        assert_eq!(err.code(), "internal_error");
    }
}

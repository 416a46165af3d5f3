//! The one place where sessions are enforced: two extractors.
//!
//! - [`AnySession`]: any live session, partial (MFA still owed) or full,
//!   for the endpoints marked *partial ok* and for logout.
//! - [`FullSession`]: a full session; a partial one gets
//!   `403 mfa_required` through [`mfa_core::Caller::into_full`].
//!
//! The bearer token comes only from the `Authorization: Bearer` header,
//! never from a URL or a cookie. A missing or malformed header, and an
//! unknown, revoked or expired token, are `401 unauthorized`. The token is
//! resolved on the blocking pool (it is a database read).
//!
//! The session comes first: [`resolve_first`] resolves the token of every
//! request that has an `Authorization` header before the handler's
//! extractors run, and the session extractors take that result, ready. So
//! a token that is not good enough gets its `401` or `403 mfa_required`
//! whatever the body, query or path (which the other extractors would
//! otherwise refuse with `400` while the database read is still under
//! way): a partial token learns nothing about any input of a route it may
//! not use.
//!
//! A query string that the route does not take, or a path with a
//! percent-encoded unreserved character ([`crate::middleware::vet_url`]),
//! is refused by these extractors too,
//! once the session has passed: `400 invalid_request` after the `401` and
//! `403` a token that is not good enough gets.
//!
//! A third extractor, [`InlineSession`], is for the hot routes listed in
//! [`INLINE_SESSION_PATHS`]: the middleware leaves them alone and the
//! handler resolves the token on the thread that does its own database
//! work, one trip to a pool instead of two. `mfaDetails` takes no input at
//! all; `verify` takes its body as a `Result` and answers its refusal only
//! after the session is resolved. So nothing answers before the session is
//! checked, and the rule above holds for them too.

use std::future::{Future, ready};
use std::net::IpAddr;
use std::pin::Pin;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, dev::Payload, web};
use mfa_core::{Caller, FullCaller, MfaError, UserId};

use crate::app::Service;
use crate::error::ApiError;
use crate::middleware::RefusedUrl;
use crate::request_context::{RequestClient, RequestUser};

/// Longest bearer token looked at; real ones are 43 characters.
const MAX_TOKEN_LEN: usize = 256;

/// A caller with a live session of either level.
#[derive(Debug)]
pub struct AnySession(pub Caller);

/// A caller with a full session.
#[derive(Debug)]
pub struct FullSession(pub FullCaller);

/// Paths whose handlers resolve the session themselves with
/// [`InlineSession`], so [`resolve_first`] does not. Only routes whose
/// handler resolves the session before it looks at any input belong here:
/// routes without input, and `verify`, which holds a body's refusal until
/// then (tests send a bad token with a body that does not parse to every
/// route, and check that routes listed here take no query or path).
pub const INLINE_SESSION_PATHS: &[&str] = &["/oauth/users/mfaDetails", "/user/auth/mfa/verify"];

/// A session still to be resolved, on the blocking thread of the handler's
/// own database work (see the module docs). Either level.
pub struct InlineSession {
    found: Result<(String, web::Data<Service>), ApiError>,
    resolved: Option<Result<Caller, ApiError>>,
    refused_url: Option<RefusedUrl>,
    user: RequestUser,
    client: Option<IpAddr>,
}

impl InlineSession {
    /// The caller, or `401 unauthorized`. Blocks (a database read) unless
    /// the middleware resolved it already: call it on the blocking pool.
    pub fn resolve(self) -> Result<Caller, ApiError> {
        let caller = match self.resolved {
            Some(resolved) => resolved?,
            None => {
                let (token, service) = self.found?;
                service.authenticate(&token)?.from_client(self.client)
            }
        };
        self.user.note(caller.user_id);
        if let Some(refused) = self.refused_url {
            return Err(refused.refusal());
        }
        Ok(caller)
    }

    /// Run `read`, which resolves the bearer token itself, in the same
    /// read as its own work (`MfaService::mfa_status_of_token`), and is
    /// `Unauthorized` exactly where [`InlineSession::resolve`] would be;
    /// it is given the request's client address for what it audits.
    /// `user_of` says whose session it read, for the log (`None`: the
    /// caller notes it).
    /// Blocks: call it on the blocking pool.
    pub fn resolve_with<T>(
        self,
        read: impl FnOnce(&Service, &str, Option<IpAddr>) -> Result<T, MfaError>,
        user_of: impl FnOnce(&T) -> Option<UserId>,
    ) -> Result<T, ApiError> {
        if let Some(refused) = self.refused_url {
            // The session first, then the URL.
            self.resolve()?;
            return Err(refused.refusal());
        }
        let (token, service) = self.found?;
        let read = read(&service, &token, self.client)?;
        if let Some(user) = user_of(&read) {
            self.user.note(user);
        }
        Ok(read)
    }
}

/// `400 invalid_request` if [`crate::middleware::vet_url`] marked `req`.
fn refuse_url(req: &HttpRequest) -> Result<(), ApiError> {
    match req.extensions().get::<RefusedUrl>() {
        Some(refused) => Err(refused.refusal()),
        None => Ok(()),
    }
}

/// The token of `Authorization: Bearer <token>`, if well formed.
fn bearer_token(req: &HttpRequest) -> Option<String> {
    // Two headers are refused, not the first taken: a proxy that checks
    // the last one would otherwise vouch for another token than this.
    let mut values = req.headers().get_all(header::AUTHORIZATION);
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    let well_formed = scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token.bytes().all(|b| b.is_ascii_graphic());
    well_formed.then(|| token.to_string())
}

/// The token of a request and the service to resolve it with.
fn token_and_service(req: &HttpRequest) -> Result<(String, web::Data<Service>), ApiError> {
    let token = bearer_token(req).ok_or(MfaError::Unauthorized)?;
    let service = req
        .app_data::<web::Data<Service>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("the service is not configured".into()))?;
    Ok((token, service))
}

async fn resolve(
    found: Result<(String, web::Data<Service>), ApiError>,
    client: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    let (token, service) = found?;
    let caller = web::block(move || service.authenticate(&token)).await??;
    Ok(caller.from_client(client))
}

/// The session of a request as [`resolve_first`] found it.
struct Resolved(Result<Caller, ApiError>);

/// Middleware: resolve the session of a request with an `Authorization`
/// header before the handler's extractors run (see the module docs).
pub async fn resolve_first(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.headers().contains_key(header::AUTHORIZATION)
        && !INLINE_SESSION_PATHS.contains(&req.path())
    {
        let client = RequestClient::of(req.request());
        let resolved = resolve(token_and_service(req.request()), client).await;
        if let Ok(caller) = &resolved {
            RequestUser::of(req.request()).note(caller.user_id);
        }
        req.extensions_mut().insert(Resolved(resolved));
    }
    next.call(req).await
}

/// The session of `req`: the one [`resolve_first`] found, or else
/// resolved now.
fn session(req: &HttpRequest) -> Pin<Box<dyn Future<Output = Result<Caller, ApiError>>>> {
    let resolved = req.extensions_mut().remove::<Resolved>();
    match resolved {
        Some(Resolved(resolved)) => Box::pin(ready(resolved)),
        None => {
            let user = RequestUser::of(req);
            let found = token_and_service(req);
            let client = RequestClient::of(req);
            Box::pin(async move {
                let caller = resolve(found, client).await?;
                user.note(caller.user_id);
                Ok(caller)
            })
        }
    }
}

impl FromRequest for AnySession {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let caller = session(req);
        let url = refuse_url(req);
        Box::pin(async move {
            let caller = caller.await?;
            url?;
            Ok(AnySession(caller))
        })
    }
}

impl FromRequest for FullSession {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let caller = session(req);
        let url = refuse_url(req);
        Box::pin(async move {
            let caller = caller.await?.into_full()?;
            url?;
            Ok(FullSession(caller))
        })
    }
}

impl FromRequest for InlineSession {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let resolved = req
            .extensions_mut()
            .remove::<Resolved>()
            .map(|Resolved(r)| r);
        ready(Ok(InlineSession {
            found: token_and_service(req),
            resolved,
            refused_url: req.extensions().get::<RefusedUrl>().copied(),
            user: RequestUser::of(req),
            client: RequestClient::of(req),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn only_well_formed_bearer_headers_count() {
        let token = |v: Option<&str>| {
            let mut r = TestRequest::default();
            if let Some(v) = v {
                r = r.insert_header((header::AUTHORIZATION, v));
            }
            bearer_token(&r.to_http_request())
        };
        assert_eq!(token(Some("Bearer abc")).as_deref(), Some("abc"));
        assert_eq!(token(Some("bearer  abc ")).as_deref(), Some("abc"));
        assert_eq!(token(None), None);
        assert_eq!(token(Some("Basic abc")), None);
        assert_eq!(token(Some("Bearer")), None);
        assert_eq!(token(Some("Bearer a b")), None);
        assert_eq!(token(Some(&format!("Bearer {}", "x".repeat(300)))), None);
    }
}

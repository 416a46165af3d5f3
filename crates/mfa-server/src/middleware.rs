//! What wraps every request: the request log and metrics, JSON for every
//! error page, the rule on query strings, and the answer for unknown
//! routes.
//!
//! There is no panic-catching layer: handlers do no work that can panic
//! (no `unwrap`, no indexing), and everything that could (storage,
//! argon2, mail, QR codes) runs in `web::block`, whose panics come back as
//! a blocking error and answer `500 internal_error` (see [`crate::error`]).

use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ResourceDef, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, Next};
use actix_web::{Error, HttpMessage as _, HttpRequest, HttpResponse, web};
use utoipa::openapi::RefOr;
use utoipa::openapi::path::{Operation, ParameterIn};

use crate::error::{ApiError, body_for_status};
use crate::metrics::Metrics;
use crate::request_context::{
    self, REQUEST_ID, RequestClient, RequestIds, RequestUser, TrustedProxies,
};

/// The header proxies append the address they were reached from to.
const FORWARDED_FOR: header::HeaderName = header::HeaderName::from_static("x-forwarded-for");

/// One log line and the metrics of each request: method, route pattern
/// (never the raw path, which may hold an email address), status, latency,
/// and where it came from ([`crate::request_context`]): the client's
/// address, the request id (answered in `X-Request-Id`) and the user of
/// its session, if one was resolved.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let start = Instant::now();
    let method = req.method().clone();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let (client, request_id) = match req.app_data::<web::Data<TrustedProxies>>() {
        Some(proxies) => {
            let peer = req.peer_addr().map(|peer| peer.ip().to_canonical());
            let forwarded = req.headers().get_all(FORWARDED_FOR);
            let client = proxies.client(peer, forwarded.map(HeaderValue::as_bytes));
            let trusted = peer.is_some_and(|peer| proxies.trusts(peer));
            let id = req
                .app_data::<web::Data<RequestIds>>()
                .map(|ids| ids.of(&req, trusted));
            (client, id)
        }
        None => (None, None),
    };
    let user = RequestUser::attach(&req);
    RequestClient::attach(&req, client);
    let mut res = next.call(req).await?;
    let elapsed = start.elapsed();
    if let Some(value) = request_id
        .as_deref()
        .and_then(request_context::header_value)
    {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    let client = tracing::field::display(request_context::ShownClient(client));
    let request_id = request_id.as_deref();
    let user = user.get().map(|user| user.0);
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let status = res.status().as_u16();
    if let Some(metrics) = metrics {
        metrics.observe_request(&method, &route, status, elapsed.as_secs_f64());
    }
    let latency_ms = format!("{:.3}", elapsed.as_secs_f64() * 1000.0);
    let method = method.as_str();
    if status >= 500 {
        tracing::warn!(method, route, status, %latency_ms, client, request_id, user, "request");
    } else {
        tracing::info!(method, route, status, %latency_ms, client, request_id, user, "request");
    }
    Ok(res)
}

/// Replace an error answer that is not JSON (from actix itself or a
/// library) with the JSON error body for its status. The headers that
/// matter to clients (`Allow`, `Retry-After`, `WWW-Authenticate`) stay.
pub fn json_error_page<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (req, old) = res.into_parts();
    let mut replacement = HttpResponse::build(status);
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = old.headers().get(&name) {
            replacement.insert_header((name, v.clone()));
        }
    }
    let response = replacement.json(body_for_status(status));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_into_right_body(),
    ))
}

/// The documented routes, for telling `404` from `405` and for the rule
/// on query strings.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<(ResourceDef, Vec<RouteOperation>)>,
}

/// What the table knows of one documented operation.
#[derive(Debug)]
struct RouteOperation {
    method: &'static str,
    /// A query string this operation does not declare is refused.
    vets_query: bool,
    /// `x-session: none`: no session is checked first.
    sessionless: bool,
}

/// Paths the rule on query strings leaves alone: pages for browsers, and
/// the document and API browser that Swagger UI serves (and reads its own
/// query parameters on). Every other documented operation refuses a query
/// string it does not declare (`openapi.md`).
pub const QUERY_RULE_EXEMPT_PATHS: &[&str] = &[
    "/admin",
    "/account",
    crate::openapi::OPENAPI_PATH,
    crate::openapi::SWAGGER_UI_PATH,
];

/// A request whose URL its route refuses: a query string the route does
/// not take, or a path that percent-encodes a character that needs no
/// encoding. Its session is checked first: the session extractors answer
/// `400 invalid_request` for it only once the session has passed (see
/// [`crate::auth`]).
#[derive(Clone, Copy, Debug)]
pub struct RefusedUrl(&'static str);

impl RefusedUrl {
    /// A query string on a route that takes none.
    pub const UNEXPECTED_QUERY: RefusedUrl =
        RefusedUrl("unknown query parameter: this route takes no query string");
    /// `%32` for `2`: a second spelling of the same path, which a rule a
    /// proxy keys on the path would not see (RFC 3986 2.3: letters,
    /// digits and `-._~` are written as themselves).
    pub const ENCODED_UNRESERVED: RefusedUrl =
        RefusedUrl("the path percent-encodes a letter, digit or one of -._~: write it as itself");

    /// The answer.
    pub fn refusal(self) -> ApiError {
        ApiError::InvalidRequest(self.0.into())
    }
}

/// Whether `path` percent-encodes an unreserved character (RFC 3986 2.3).
fn encodes_unreserved(path: &str) -> bool {
    path.split('%').skip(1).any(|escape| {
        escape
            .get(..2)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .is_some_and(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    })
}

impl RouteTable {
    /// The paths and operations of an OpenAPI document.
    pub fn from_openapi(api: &utoipa::openapi::OpenApi) -> RouteTable {
        let routes = api
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let exempt = QUERY_RULE_EXEMPT_PATHS.contains(&path.as_str());
                let operations = [
                    ("GET", &item.get),
                    ("POST", &item.post),
                    ("PUT", &item.put),
                    ("DELETE", &item.delete),
                    ("PATCH", &item.patch),
                ]
                .into_iter()
                .filter_map(|(method, op)| {
                    let op = op.as_ref()?;
                    Some(RouteOperation {
                        method,
                        vets_query: !exempt && !declares_query(op),
                        sessionless: crate::openapi::session_of(op) == "none",
                    })
                })
                .collect();
                (ResourceDef::new(path.as_str()), operations)
            })
            .collect();
        RouteTable { routes }
    }

    /// The methods served on `path`, if any route has that path: those of
    /// the route without parameters that has it, if one does (no id or
    /// email is a word), else those of every pattern it matches.
    fn methods_of(&self, path: &str) -> Option<String> {
        self.literal_methods_of(path)
            .or_else(|| self.methods_where(|def| def.is_match(path)))
    }

    /// The methods served on `path` by a route without parameters, if one
    /// has that path (`/user/users/me`): a path some pattern also matches
    /// (`PUT /user/users/{id}`) names that route all the same, since no id
    /// or email is a word.
    pub fn literal_methods_of(&self, path: &str) -> Option<String> {
        self.methods_where(|def| def.pattern() == Some(path))
    }

    fn methods_where(&self, route: impl Fn(&ResourceDef) -> bool) -> Option<String> {
        let mut methods: Vec<&str> = self
            .routes
            .iter()
            .filter(|(def, _)| route(def))
            .flat_map(|(_, ops)| ops.iter().map(|op| op.method))
            .collect();
        if methods.contains(&"GET") {
            // Served as the GET ([`head_as_get`]).
            methods.push("HEAD");
        }
        methods.sort_unstable();
        methods.dedup();
        (!methods.is_empty()).then(|| methods.join(", "))
    }

    /// The documented operation `method` `path` is, if any. Where a
    /// literal path and a pattern both match (`/user/users/me` and
    /// `/user/users/{id}`), the one with fewer parameters, as the routes
    /// are served.
    fn operation(&self, method: &str, path: &str) -> Option<&RouteOperation> {
        self.routes
            .iter()
            .filter(|(def, _)| def.is_match(path))
            .filter_map(|(def, ops)| {
                let op = ops.iter().find(|op| op.method == method)?;
                let parameters = def.pattern().map_or(0, |p| p.matches('{').count());
                Some((parameters, op))
            })
            .min_by_key(|(parameters, _)| *parameters)
            .map(|(_, op)| op)
    }
}

/// Whether `op` declares a query parameter.
fn declares_query(op: &Operation) -> bool {
    op.parameters.iter().flatten().any(|p| match p {
        RefOr::T(p) => p.parameter_in == ParameterIn::Query,
        // Not looked up: taken to declare one, so that nothing is refused.
        RefOr::Ref(_) => true,
    })
}

/// The rules on URLs of documented operations. A query string that the
/// operation does not declare is `400 invalid_request`, like an unknown
/// body field, so that a misspelt parameter never silently means its
/// default; so is a path that percent-encodes an unreserved character, a
/// second spelling of the same path. A public route answers it here; a
/// route with a session has it marked ([`RefusedUrl`]) and answered after
/// its session is checked. Operations that declare parameters refuse
/// unknown ones themselves (`deny_unknown_fields`). Requests without a
/// query string or a `%` in the path, the hot paths among them, cost
/// nothing here.
pub async fn vet_url<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, Error> {
    // `?`, `?&&`: no parameter, as the query extractors see it.
    let has_query = !req.query_string().split('&').all(str::is_empty);
    let encoded = req.path().contains('%') && encodes_unreserved(req.path());
    if has_query || encoded {
        let refused = req.app_data::<web::Data<RouteTable>>().and_then(|routes| {
            let op = routes.operation(req.method().as_str(), req.path())?;
            let refusal = if encoded {
                RefusedUrl::ENCODED_UNRESERVED
            } else if op.vets_query {
                RefusedUrl::UNEXPECTED_QUERY
            } else {
                return None;
            };
            Some((refusal, op.sessionless))
        });
        match refused {
            Some((refusal, true)) => {
                let answer = actix_web::ResponseError::error_response(&refusal.refusal());
                return Ok(req.into_response(answer).map_into_right_body());
            }
            Some((refusal, false)) => {
                req.extensions_mut().insert(refusal);
            }
            None => {}
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// A `HEAD` request is served as the `GET` of its path (a load balancer's
/// health check: `HEAD /healthz`), through every check a `GET` passes. The
/// connection sends the answer's status and headers without its body: it
/// decides so from the request line as it arrived.
pub async fn head_as_get<B: MessageBody>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, Error> {
    if req.method() == actix_web::http::Method::HEAD {
        req.head_mut().method = actix_web::http::Method::GET;
    }
    next.call(req).await
}

/// The answer when no route takes the request: `405` with `Allow` when the
/// path exists with other methods, else `404`.
pub async fn fallback(
    req: HttpRequest,
    routes: web::Data<RouteTable>,
) -> Result<HttpResponse, ApiError> {
    let path = req.path();
    Err(match routes.methods_of(path) {
        Some(allow) => ApiError::MethodNotAllowed { allow },
        // The files of the pages and of Swagger UI are read only (an
        // unknown one is 404 to GET, as it should be).
        None if (path.starts_with("/assets/") || path.starts_with("/swagger-ui/"))
            && !matches!(*req.method(), actix_web::http::Method::GET) =>
        {
            ApiError::MethodNotAllowed {
                allow: "GET, HEAD".into(),
            }
        }
        None => ApiError::NoRoute,
    })
}

/// Swagger UI's Content-Security-Policy: its scripts are its own files, so
/// no other script runs on a page of the origin that keeps the console's
/// token in `sessionStorage`; its React styles are inline.
pub const SWAGGER_UI_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// [`SWAGGER_UI_POLICY`] on Swagger UI's answers (the other pages set
/// theirs; [`default_headers`] gives the rest only `frame-ancestors`).
pub async fn swagger_ui_policy<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, Error> {
    let swagger = req.path().starts_with(crate::openapi::SWAGGER_UI_PATH);
    let mut res = next.call(req).await?;
    if swagger {
        res.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(SWAGGER_UI_POLICY),
        );
    }
    Ok(res)
}

/// The `Cache-Control` and `X-Content-Type-Options` of every answer, and
/// that no other site may frame it: Swagger UI above all, which would
/// otherwise be the one page without it (the console's pages set a fuller
/// policy of their own, which these defaults leave alone).
pub fn default_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .add((
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .add((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .add((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        ))
}

#[cfg(test)]
mod tests {
    use super::encodes_unreserved;

    #[test]
    fn encoded_unreserved_characters_are_found() {
        for encoded in [
            "/user/users/%32",
            "/a%41",
            "/x/%2d",
            "/%7E",
            "/%5f/",
            "/%2E",
        ] {
            assert!(encodes_unreserved(encoded), "{encoded}");
        }
        for plain in [
            "/user/users/2",
            "/a%2Fb",
            "/a%40b.com",
            "/%2B1",
            "/%20",
            "/%",
            "/%4",
            "/%zz",
        ] {
            assert!(!encodes_unreserved(plain), "{plain}");
        }
    }
}

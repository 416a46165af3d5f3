//! The OpenAPI 3 document, served at `/api-docs/openapi.json` and browsed
//! with the vendored Swagger UI at `/swagger-ui/`.
//!
//! Paths come from the `#[utoipa::path]` of each handler, collected by
//! utoipa-actix-web as the routes are registered, so the document and the
//! router cannot drift apart. [`complete`] then adds what every operation
//! shares, from its `x-session` extension (`none`, `partial`, `any`,
//! `full`): the security requirement, a sentence on the session level, and
//! the error answers common to all (`400 invalid_request` where there is
//! input, `401 unauthorized`, `403 mfa_required`, `500 internal_error`,
//! `503 unavailable` where the database is read).

use utoipa::OpenApi;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HttpMethod, Ref, RefOr, Response};

use crate::error::ErrorBody;

/// The fixed part of the document: info, tags, the security scheme.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "MFA Server",
        description = include_str!("openapi.md"),
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "auth", description = "Login, the MFA challenge and verification, logout."),
        (name = "orgs", description = "Orgs, their MFA enforcement (seed 000) and memberships."),
        (name = "users", description = "Users, their memberships and email changes (seeds 000, 001, 003)."),
        (name = "mfa", description = "Factors: authenticator and email enrollment, resets, recovery codes (seeds 000, 004)."),
        (name = "audit", description = "The audit trail."),
        (name = "operations", description = "Health, readiness, metrics and this document."),
        (name = "console", description = "The browser pages: the admin console and the self-service MFA page."),
    ),
    modifiers(&BearerScheme),
)]
pub struct ApiDoc;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api-docs/openapi.json";
/// Where Swagger UI is served.
pub const SWAGGER_UI_PATH: &str = "/swagger-ui/";

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The opaque token of `POST /user/auth/login` (or of a completed MFA \
                         verification). Partial tokens are accepted only where an operation \
                         says `partial` or `any`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every operation of a path item.
fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
        item.head.as_mut(),
        item.options.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// Add `response` under `status`, or, when the operation already documents
/// that status without mentioning `code`, extend its description.
fn add_error(op: &mut Operation, status: &str, code: &str, sentence: &str) {
    let text = format!("`{code}`: {sentence}");
    match op.responses.responses.get_mut(status) {
        Some(RefOr::T(existing)) => {
            if !existing.description.contains(&format!("`{code}`")) {
                existing.description.push_str(&format!(" {text}"));
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            op.responses
                .responses
                .insert(status.to_string(), error_response(&text));
        }
    }
}

/// The session level an operation declares in `x-session`.
pub(crate) fn session_of(op: &Operation) -> String {
    op.extensions
        .as_ref()
        .and_then(|e| e.get("x-session"))
        .and_then(|v| v.as_str())
        .unwrap_or("full")
        .to_string()
}

/// Add the shared parts to every operation of a collected document, and
/// the two routes served by Swagger UI itself.
pub fn complete(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    add_document_routes(&mut api);
    for (path, item) in api.paths.paths.iter_mut() {
        let vets_query = !crate::middleware::QUERY_RULE_EXEMPT_PATHS.contains(&path.as_str());
        for op in operations_mut(item) {
            let session = session_of(op);
            let (sentence, secured) = match session.as_str() {
                "none" => ("**Session:** none (public).", false),
                "partial" => (
                    "**Session:** partial ok: a partial (pre-MFA) token or a full one.",
                    true,
                ),
                "any" => ("**Session:** any token, partial or full.", true),
                _ => (
                    "**Session:** full; a partial token gets `403 mfa_required`.",
                    true,
                ),
            };
            let description = op.description.get_or_insert_with(String::new);
            if !description.is_empty() {
                description.push_str("\n\n");
            }
            description.push_str(sentence);

            op.security = Some(if secured {
                vec![SecurityRequirement::new("bearer", Vec::<String>::new())]
            } else {
                vec![SecurityRequirement::default()]
            });
            let has_input =
                op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            if has_input {
                add_error(
                    op,
                    "400",
                    "invalid_request",
                    "the body, query or path does not parse (malformed JSON, wrong type, \
                     unknown field or parameter, body over 64 KiB, id not a positive integer) \
                     or breaks a rule.",
                );
            } else if vets_query {
                add_error(
                    op,
                    "400",
                    "invalid_request",
                    "a query string: this route takes none.",
                );
            }
            if secured {
                add_error(
                    op,
                    "401",
                    "unauthorized",
                    "no valid bearer token (missing, malformed, unknown, revoked or expired).",
                );
            }
            if session == "full" {
                add_error(
                    op,
                    "403",
                    "mfa_required",
                    "a partial (pre-MFA) token; complete MFA first. Also, for a change of \
                     factors, of one's own email or password, or any admin's change, a full \
                     session that verified no factor while its user has one (opened where no \
                     MFA was owed): `POST /user/auth/mfa/verify` on it first.",
                );
            }
            add_error(
                op,
                "500",
                "internal_error",
                "a bug or a database failure; the details are in the server log.",
            );
            // Every API route reads the database; the pages, health and
            // metrics routes do not (`/readyz` documents its own 503).
            if secured || path.starts_with("/user/") {
                add_error(
                    op,
                    "503",
                    "unavailable",
                    "the database did not answer within `MFA_DATABASE_TIMEOUT_SECS` \
                     (no connection could be had); try again after `Retry-After` seconds.",
                );
            }
            if path != "/readyz" {
                declare_retry_after_on_503(op);
            }
        }
    }
    api
}

/// Every `503` of the API but `/readyz`'s comes with `Retry-After`, except
/// the mail server's outright refusal, which no retry mends.
fn declare_retry_after_on_503(op: &mut Operation) {
    if let Some(RefOr::T(response)) = op.responses.responses.get_mut("503") {
        response
            .headers
            .entry("Retry-After".into())
            .or_insert_with(|| {
                HeaderBuilder::new()
                    .schema(Some(<u64 as utoipa::PartialSchema>::schema()))
                    .description(Some(
                        "Seconds to wait before trying again. Absent when the mail server \
                         refused the message outright: trying again will not help.",
                    ))
                    .build()
                    .into()
            });
    }
}

/// Document the two routes Swagger UI serves itself.
fn add_document_routes(api: &mut utoipa::openapi::OpenApi) {
    let json = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content("application/json", ContentBuilder::new().build())
            .build()
    };
    let html = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content("text/html", ContentBuilder::new().build())
            .build()
    };
    let operation = |summary: &str, response: Response| {
        let mut op = Operation::new();
        op.tags = Some(vec!["operations".into()]);
        op.summary = Some(summary.into());
        op.operation_id = Some(summary.to_lowercase().replace(' ', "_"));
        op.responses.responses.insert("200".into(), response.into());
        op.extensions = Some(
            [("x-session".to_string(), serde_json::json!("none"))]
                .into_iter()
                .collect(),
        );
        op
    };
    api.paths.paths.insert(
        OPENAPI_PATH.into(),
        PathItem::new(
            HttpMethod::Get,
            operation("OpenAPI document", json("This document.")),
        ),
    );
    api.paths.paths.insert(
        SWAGGER_UI_PATH.into(),
        PathItem::new(
            HttpMethod::Get,
            operation(
                "Swagger UI",
                html("An API browser served from the binary (no CDN)."),
            ),
        ),
    );
}

//! The browser pages: the admin console at `/admin` (User Management, Edit
//! User, Org settings, Audit trail) and the self-service MFA page at
//! `/account`, with their script and style under `/assets/`.
//!
//! Static HTML, CSS and JavaScript from `assets/`, compiled into the binary:
//! no CDN, no build step. The pages are clients of the JSON API like any
//! other: they sign in with `POST /user/auth/login`, keep the bearer token
//! in `sessionStorage` and send it in the `Authorization` header, never in
//! a URL or a cookie, so the API needs no CSRF defence for them.
//!
//! The pages are served with a strict Content-Security-Policy (scripts and
//! styles only from this origin, no inline script or style, images only
//! from this origin and `data:` for the QR code, no framing, no form
//! submission by navigation) and `X-Frame-Options: DENY`. Two values are
//! filled in when a page is served: the environment (`data-environment`,
//! for the sandbox warning) and the audit actions of the filter.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, get, web};
use mfa_core::AuditAction;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::app::Service;
use crate::error::ApiError;

/// The Content-Security-Policy of the pages.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

const ADMIN_HTML: &str = include_str!("../../assets/admin.html");
const ACCOUNT_HTML: &str = include_str!("../../assets/account.html");
const SIGNIN_HTML: &str = include_str!("../../assets/signin.html");

/// A file under `/assets/`.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    Asset {
        name: "ui.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../assets/ui.css"),
    },
    Asset {
        name: "common.js",
        content_type: JS,
        body: include_str!("../../assets/common.js"),
    },
    Asset {
        name: "admin.js",
        content_type: JS,
        body: include_str!("../../assets/admin.js"),
    },
    Asset {
        name: "account.js",
        content_type: JS,
        body: include_str!("../../assets/account.js"),
    },
];

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(admin)
        .service(account)
        // Not API routes: left out of the OpenAPI document, like Swagger
        // UI's own files.
        .map(|c| c.route("/assets/{file}", web::get().to(asset)));
}

/// Fill in a page template.
fn render(template: &str, environment: &str) -> String {
    let actions: String = AuditAction::ALL
        .iter()
        .map(|a| {
            let name = a.as_str();
            format!("            <option value=\"{name}\">{name}</option>\n")
        })
        .collect();
    template
        .replace("{{SIGNIN}}", SIGNIN_HTML)
        .replace("{{ENVIRONMENT}}", environment)
        .replace("{{AUDIT_ACTIONS}}\n", &actions)
}

/// A page with the headers that keep it to itself.
fn page(template: &str, service: &Service) -> HttpResponse {
    let body = render(template, service.config().environment.as_str());
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .insert_header((
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .insert_header((
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .body(body)
}

/// The admin console
///
/// An HTML page for org admins, served from the binary: sign-in (password,
/// then MFA setup or challenge), User Management (search, licence counts,
/// paging, CSV export), Edit User (profile, account status toggles with
/// "Enforce org-level MFA", "Reset MFA for this user"), Org settings (MFA
/// enforcement, grace period) and the Audit trail. Every action is a call
/// to this API with the bearer token kept in the browser's
/// `sessionStorage`. Served with a strict Content-Security-Policy and
/// `X-Frame-Options: DENY`.
#[utoipa::path(
    tag = "console",
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)),
    extensions(("x-session" = json!("none"))),
)]
#[get("/admin")]
pub async fn admin(service: web::Data<Service>) -> HttpResponse {
    page(ADMIN_HTML, &service)
}

/// The self-service MFA page
///
/// An HTML page for every user, served from the binary: sign-in, the MFA
/// status (`mfaDetails`), authenticator enrollment (QR code and the key in
/// groups of four), email enrollment, recovery codes shown once with copy
/// and download, self reset and the personal opt-in. Served with a strict
/// Content-Security-Policy and `X-Frame-Options: DENY`.
#[utoipa::path(
    tag = "console",
    responses((status = 200, description = "The page.", content_type = "text/html", body = String)),
    extensions(("x-session" = json!("none"))),
)]
#[get("/account")]
pub async fn account(service: web::Data<Service>) -> HttpResponse {
    page(ACCOUNT_HTML, &service)
}

/// The pages' script and style.
async fn asset(file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.name == file.as_str())
        .ok_or(ApiError::NoRoute)?;
    Ok(HttpResponse::Ok()
        .content_type(asset.content_type)
        .body(asset.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages() -> [(&'static str, String); 2] {
        [
            ("admin", render(ADMIN_HTML, "production")),
            ("account", render(ACCOUNT_HTML, "sandbox")),
        ]
    }

    #[test]
    fn templates_are_filled_in() {
        for (name, html) in pages() {
            assert!(!html.contains("{{"), "{name}: a placeholder is left");
            assert!(html.contains("id=\"signin-view\""), "{name}");
        }
        let [(_, admin_html), (_, account_html)] = pages();
        assert!(admin_html.contains("data-environment=\"production\""));
        assert!(account_html.contains("data-environment=\"sandbox\""));
        for action in AuditAction::ALL {
            assert!(
                admin_html.contains(&format!("<option value=\"{}\">", action.as_str())),
                "{action:?}"
            );
        }
    }

    /// The CSP forbids inline script and style: none may be written.
    #[test]
    fn no_inline_script_or_style() {
        for (name, html) in pages() {
            assert!(!html.contains("<style"), "{name}");
            assert!(!html.contains(" style="), "{name}");
            assert!(!html.contains("javascript:"), "{name}");
            for (i, _) in html.match_indices("<script") {
                let tag = &html[i..i + html[i..].find('>').unwrap()];
                assert!(
                    tag.contains(" src=\"/assets/"),
                    "{name}: inline script {tag}"
                );
            }
            for attribute in [
                " onclick=",
                " onload=",
                " onerror=",
                " onsubmit=",
                " onchange=",
            ] {
                assert!(!html.contains(attribute), "{name}: {attribute}");
            }
        }
    }

    /// Every asset a page or a script refers to is served.
    #[test]
    fn referenced_assets_exist() {
        let mut texts: Vec<String> = pages().into_iter().map(|(_, html)| html).collect();
        texts.extend(ASSETS.iter().map(|a| a.body.to_string()));
        for text in &texts {
            for (i, _) in text.match_indices("/assets/") {
                let rest = &text[i + "/assets/".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "/assets/{name} is not served"
                );
            }
            for (i, _) in text.match_indices("from \"./") {
                let rest = &text[i + "from \"./".len()..];
                let name = &rest[..rest.find('"').unwrap()];
                assert!(ASSETS.iter().any(|a| a.name == name), "./{name}");
            }
        }
    }

    /// Every form control has a label: `<label for>`, `aria-label` or
    /// `aria-labelledby`. (Controls the scripts create are checked in the
    /// browser tests.)
    #[test]
    fn every_control_is_labelled() {
        for (name, html) in pages() {
            for tag in ["<input", "<select", "<textarea"] {
                for (i, _) in html.match_indices(tag) {
                    let element = &html[i..i + html[i..].find('>').unwrap()];
                    if element.contains("aria-label") {
                        continue;
                    }
                    let id = element
                        .split("id=\"")
                        .nth(1)
                        .and_then(|r| r.split('"').next())
                        .unwrap_or_else(|| panic!("{name}: control without id: {element}"));
                    assert!(
                        html.contains(&format!("<label for=\"{id}\"")),
                        "{name}: #{id} has no label"
                    );
                }
            }
            assert!(!html.contains("<div role=\"button\""), "{name}");
        }
    }
}

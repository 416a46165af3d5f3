//! Embedding `mfa-core` with `mfa-store` on SQLite in your own actix-web
//! service: two routes of your API call the MFA service, one login with the
//! MFA decision and one "who am I" behind a bearer token. The example
//! starts on 127.0.0.1 (a free port), calls itself over HTTP once and stops.
//!
//! ```sh
//! cargo run -p mfa-examples --bin embed-sqlite-actix
//! ```
//!
//! The service is synchronous (diesel, argon2): call it through
//! `web::block`, never on an async worker. A real service keeps its
//! encryption key in configuration (`EncryptionKey::from_base64`); this one
//! makes a fresh key and database each run.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use mfa_core::ports::{MemoryMailer, OsRandomness, SystemClock};
use mfa_core::{MfaError, MfaService, ServiceConfig, StoreError};
use mfa_store::{DbStore, EncryptionKey, StoreOptions};
use serde::Deserialize;
use serde_json::json;

type Mfa = MfaService<DbStore>;

const PASSWORD: &str = "correct horse battery staple";

#[derive(Deserialize)]
struct LoginBody {
    email: String,
    password: String,
}

/// Your API's error mapping: one place, and every variant named (no `_`
/// arm), so that a variant a new release adds is a compile error here,
/// not a `400` for a mail server that is down.
fn error(e: MfaError) -> HttpResponse {
    let status = match &e {
        MfaError::InvalidRequest(_) | MfaError::InvalidCode | MfaError::CodeExpired => {
            StatusCode::BAD_REQUEST
        }
        MfaError::InvalidCredentials | MfaError::Unauthorized => StatusCode::UNAUTHORIZED,
        MfaError::MfaRequired | MfaError::Forbidden | MfaError::SignInRefused(_) => {
            StatusCode::FORBIDDEN
        }
        MfaError::NotFound(_) => StatusCode::NOT_FOUND,
        MfaError::AlreadyEnrolled(_) | MfaError::NotEnrolled(_) | MfaError::Conflict(_) => {
            StatusCode::CONFLICT
        }
        MfaError::TooManyAttempts { .. } | MfaError::MailThrottled { .. } => {
            StatusCode::TOO_MANY_REQUESTS
        }
        MfaError::MailUnavailable(_)
        | MfaError::MailRefused(_)
        | MfaError::MailUnconfirmed { .. }
        | MfaError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
        MfaError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    HttpResponse::build(status).json(json!({"error": e.to_string()}))
}

/// `POST /login`: the password, then what MFA the session still owes.
/// The audit trail records the client's address: here the peer's (behind
/// a proxy, the client it names, if you trust it).
async fn login(mfa: web::Data<Mfa>, req: HttpRequest, body: web::Json<LoginBody>) -> HttpResponse {
    let body = body.into_inner();
    let client = req.peer_addr().map(|peer| peer.ip().to_canonical());
    let steps = move || {
        let begun = mfa.login_begin(&body.email, None, client)?;
        let checked = mfa.login_check(begun, &body.password)?;
        mfa.login_finish(checked)
    };
    match web::block(steps).await {
        Ok(Ok(login)) => HttpResponse::Ok().json(json!({
            "token": login.token,
            "mfa": login.decision.requirement.as_str(),
        })),
        Ok(Err(e)) => error(e),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

/// `GET /me`: who the bearer token belongs to, if its MFA is done.
async fn me(mfa: web::Data<Mfa>, req: HttpRequest) -> HttpResponse {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let client = req.peer_addr().map(|peer| peer.ip().to_canonical());
    let caller = web::block(move || {
        mfa.authenticate(&token)
            .and_then(|c| c.from_client(client).into_full())
    })
    .await;
    match caller {
        Ok(Ok(caller)) => HttpResponse::Ok().json(json!({
            "userId": caller.user_id.0,
            "orgId": caller.org_id.0,
        })),
        Ok(Err(e)) => error(e),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

/// One HTTP/1.1 request with std's blocking socket: status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("app.db").display());
    let setup = move || -> Result<Mfa, String> {
        let store = DbStore::open(&url, StoreOptions::new(EncryptionKey::generate()))
            .map_err(|e| e.to_string())?;
        let mfa = MfaService::new(
            store,
            Arc::new(MemoryMailer::default()), // or mfa_email::EmailMailer
            Arc::new(SystemClock),
            Arc::new(OsRandomness),
            ServiceConfig::default(),
        )
        .map_err(|e| e.to_string())?;
        mfa.bootstrap("admin@example.com", PASSWORD, "Acme")
            .map_err(|e| e.to_string())?;
        Ok(mfa)
    };
    // Opening and migrating the database blocks: the blocking pool again.
    let mfa = web::block(setup)
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?;
    let mfa = web::Data::new(mfa);

    let server = HttpServer::new(move || {
        App::new()
            .app_data(mfa.clone())
            .route("/login", web::post().to(login))
            .route("/me", web::get().to(me))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))?;
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    let running = actix_web::rt::spawn(server);
    println!("listening on http://{addr}");

    // Call ourselves: log in, then use the token.
    let calls = web::block(move || {
        let credentials = json!({"email": "admin@example.com", "password": PASSWORD}).to_string();
        let (status, body) = http(addr, "POST", "/login", None, &credentials);
        println!("POST /login -> {status} {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let token = answer["token"].as_str().unwrap_or_default().to_string();
        let (me_status, body) = http(addr, "GET", "/me", Some(&token), "");
        println!("GET /me -> {me_status} {body}");
        let (bad_status, _) = http(addr, "GET", "/me", Some("not-a-token"), "");
        println!("GET /me with a bad token -> {bad_status}");
        (status, me_status, bad_status)
    })
    .await
    .map_err(std::io::Error::other)?;

    handle.stop(true).await;
    let _ = running.await;
    if calls == (200, 200, 401) {
        println!("ok");
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "unexpected answers {calls:?}"
        )))
    }
}

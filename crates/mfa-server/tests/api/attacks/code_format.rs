//! A code is exactly 6 ASCII digits: the right code with a space, an extra
//! digit or written in other digits (full-width, Arabic-Indic, Devanagari,
//! mathematical) is refused with `400 invalid_code` on every route that
//! takes a code, and the plain right code is accepted right after.

use mfa_totp::Secret;
use serde_json::json;

use super::{partial, verify};
use crate::helpers::{Answer, PASSWORD, TestServer};
use crate::on_every_backend;

on_every_backend!(malformed_codes_on_every_code_route);

/// How many ways [`spoil`] knows.
const SPOILS: usize = 16;

/// The right code, spoiled the `i`-th way.
fn spoil(code: &str, i: usize) -> String {
    let shift = |zero: u32| -> String {
        code.chars()
            .map(|c| char::from_u32(zero + c.to_digit(10).unwrap()).unwrap())
            .collect()
    };
    let (a, b) = code.split_at(3);
    match i {
        0 => format!(" {code}"),
        1 => format!("{code} "),
        2 => format!("{a} {b}"),
        3 => format!("{code}\n"),
        4 => format!("\t{code}"),
        5 => format!("{code}0"),
        6 => format!("0{code}"),
        7 => code[..5].to_string(),
        8 => shift(0xFF10),   // full-width
        9 => shift(0x0660),   // Arabic-Indic
        10 => shift(0x0966),  // Devanagari
        11 => shift(0x1D7CE), // mathematical bold
        12 => format!("{a}\u{200b}{b}"),
        13 => format!("+{code}"),
        14 => format!("{code}\u{0}"),
        _ => format!("{code}\u{0301}"),
    }
}

#[derive(Clone, Copy, Debug)]
enum Route {
    ValidateCode,
    VerifyQrCode,
    VerifyEmail,
    LoginAuthenticator,
    LoginEmail,
}

/// The user under test and what the routes need.
struct Cody<'a> {
    s: &'a TestServer,
    root: String,
    email: &'static str,
    full: String,
    partial: String,
    pending: Option<Secret>,
    secret: Option<Secret>,
    email_code: Option<String>,
}

impl Cody<'_> {
    /// Make a right code exist for `route` and return it.
    async fn prepare(&mut self, route: Route) -> String {
        let s = self.s;
        match route {
            Route::ValidateCode | Route::VerifyQrCode => {
                if self.pending.is_none() {
                    self.pending = Some(s.start_authenticator(&self.full).await);
                }
                s.totp(self.pending.as_ref().unwrap())
            }
            Route::LoginAuthenticator => s.totp(self.secret.as_ref().unwrap()),
            Route::VerifyEmail | Route::LoginEmail => {
                if self.email_code.is_none() {
                    // At most one code per 30 s.
                    s.advance(31);
                    let a = match route {
                        Route::VerifyEmail => {
                            s.call(
                                "PUT",
                                "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
                                Some(&self.full),
                                None,
                            )
                            .await
                        }
                        _ => {
                            s.post(
                                "/user/auth/mfa/challenge",
                                &self.partial,
                                json!({"method": "EMAIL"}),
                            )
                            .await
                        }
                    };
                    a.expect(200, None);
                    self.email_code = Some(s.last_code(self.email));
                }
                self.email_code.clone().unwrap()
            }
        }
    }

    async fn send(&self, route: Route, code: &str) -> Answer {
        let s = self.s;
        match route {
            Route::ValidateCode => {
                s.post(
                    "/user/users/mfa/validateCode",
                    &self.full,
                    json!({"code": code}),
                )
                .await
            }
            Route::VerifyQrCode => {
                s.put(
                    "/users/mfa/verifyQRCodeEnroll",
                    &self.full,
                    json!({"mfatype": "AUTHENTICATOR", "totp": code}),
                )
                .await
            }
            Route::VerifyEmail => {
                s.put(
                    "/oauth/users/mfa/verifyEmail",
                    &self.full,
                    json!({"mfatype": "EMAIL", "totp": code}),
                )
                .await
            }
            Route::LoginAuthenticator => verify(s, &self.partial, "AUTHENTICATOR", code).await,
            Route::LoginEmail => verify(s, &self.partial, "EMAIL", code).await,
        }
    }

    /// The right code is accepted; undo what it did, so that the route
    /// can be attacked again.
    async fn accept(&mut self, route: Route, code: &str) {
        let s = self.s;
        self.send(route, code).await.ok();
        match route {
            Route::ValidateCode | Route::VerifyQrCode => {
                s.call(
                    "POST",
                    "/users/mfa/resetMyQRCodeEnroll",
                    Some(&self.full),
                    None,
                )
                .await
                .expect(200, None);
                self.pending = None;
            }
            Route::VerifyEmail => {
                // An admin reset removes the email factor (and ends the
                // user's sessions).
                let id = s.get("/user/users/me", &self.full).await.ok()["id"].clone();
                s.put("/user/users/mfa/reset", &self.root, json!({"ids": [id]}))
                    .await
                    .expect(204, None);
                self.full = s.login(self.email, PASSWORD).await.token;
                self.email_code = None;
            }
            Route::LoginAuthenticator => {
                s.advance(30);
                self.partial = partial(s, self.email).await;
            }
            Route::LoginEmail => {
                self.partial = partial(s, self.email).await;
                self.email_code = None;
            }
        }
    }

    /// Every spoiled form of the right code is refused, four at a time (a
    /// fifth failure would lock the user out), each batch followed by the
    /// right code, accepted.
    async fn attack(&mut self, route: Route) {
        let mut i = 0;
        while i < SPOILS {
            let code = self.prepare(route).await;
            for _ in 0..4 {
                if i == SPOILS {
                    break;
                }
                let bad = spoil(&code, i);
                let a = self.send(route, &bad).await;
                assert!(
                    a.status == 400 && a.error() == "invalid_code",
                    "{route:?}: {bad:?} for {code:?} was not refused: {a:?}"
                );
                i += 1;
            }
            self.accept(route, &code).await;
        }
    }
}

async fn malformed_codes_on_every_code_route(s: TestServer) {
    let root = s.root().await;
    let email = "cody@example.com";
    s.create_user(&root, email, false).await;
    let full = s.login(email, PASSWORD).await.token;

    // Other JSON types are no codes either.
    for code in [json!(123456), json!(["123456"]), json!(null)] {
        s.post("/user/users/mfa/validateCode", &full, json!({"code": code}))
            .await
            .expect(400, Some("invalid_request"));
    }

    let mut cody = Cody {
        s: &s,
        root,
        email,
        full,
        partial: String::new(),
        pending: None,
        secret: None,
        email_code: None,
    };
    // Enrollment.
    for route in [Route::ValidateCode, Route::VerifyQrCode, Route::VerifyEmail] {
        cody.attack(route).await;
    }

    // Login: both factors, MFA owed at every login.
    let secret = s.enroll_authenticator(&cody.full).await;
    let code = cody.prepare(Route::VerifyEmail).await;
    cody.send(Route::VerifyEmail, &code).await.expect(200, None);
    cody.email_code = None;
    s.put("/user/users/me/mfa", &cody.full, json!({"mfaOptIn": true}))
        .await
        .expect(204, None);
    cody.secret = Some(secret);
    cody.partial = partial(&s, email).await;
    for route in [Route::LoginAuthenticator, Route::LoginEmail] {
        cody.attack(route).await;
    }
}

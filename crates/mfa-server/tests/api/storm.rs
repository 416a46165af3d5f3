//! Every write route at once. In each of 30 rounds eight clients start a
//! step together: factor changes, code checks, logins, resets, opt-outs,
//! enforcement switches, password changes, membership changes and
//! deletions of orgs and users, about a handful of users. The two clients
//! of a pair take the same kind of step about overlapping users, one on
//! each of two servers sharing the database.
//!
//! On PostgreSQL these transactions run side by side and take row locks in
//! many orders, explicitly (`FOR NO KEY UPDATE`) and implicitly (updates,
//! deletes, the cascades of a deleted org or user, the key-share locks of
//! foreign keys). Two transactions that wait for each other are a
//! deadlock, which PostgreSQL breaks by failing one of them: the request
//! would answer 500. (A bulk reset that locked its users in the request's
//! order instead of by id failed this test 3 runs of 3.) On SQLite the
//! writer runs them one at a time, and the test is the same mix against
//! its batching writer.
//!
//! No answer may be a 5xx, and every kind of step must have made its
//! change at least once. Afterwards every user is reset, enrolls again and
//! is served, so nothing the storm left behind is broken.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use mfa_totp::Secret;
use serde_json::{Value, json};

use crate::helpers::{Answer, PASSWORD, TestServer};
use crate::on_every_backend;

on_every_backend!(every_write_route_at_once);

/// Clients sending at once, in pairs: the two of a pair do the same kind
/// of step about overlapping users, one on each server.
const CLIENTS: usize = 8;
/// Rounds: in each, every client takes one step, all starting together.
const ROUNDS: usize = 30;
/// Members of the storm's org whom the clients act on.
const USERS: usize = 6;

/// What the clients do, one entry per kind of step.
const OPS: &[&str] = &[
    "enforce",
    "opt_out",
    "bulk_reset",
    "admin_reset",
    "rename",
    "enroll",
    "verify",
    "self_reset",
    "email",
    "recovery",
    "password",
    "membership",
    "org_delete",
    "user_delete",
    "tick",
];

struct Storm {
    servers: [TestServer; 2],
    /// The superadmin, logged in to the root org.
    root: String,
    /// An admin of the storm's org (never a target, so the token lasts).
    admin: String,
    org: i64,
    /// (id, email) of the targets.
    users: Vec<(i64, String)>,
    /// The secret of each user's newest confirmed authenticator.
    secrets: Mutex<HashMap<i64, Secret>>,
    /// How often the requests of each step kind got each status.
    outcomes: Mutex<BTreeMap<(&'static str, u16), usize>>,
    /// How many steps of each kind made their change.
    changes: Mutex<BTreeMap<&'static str, usize>>,
}

impl Storm {
    fn server(&self, client: usize) -> &TestServer {
        &self.servers[client % 2]
    }

    /// Send one request to the client's server and count its status; a
    /// 5xx fails the test at once.
    async fn send(
        &self,
        client: usize,
        op: &'static str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let answer = self.server(client).call(method, path, token, body).await;
        assert!(
            answer.status < 500,
            "{op}: {method} {path} answered {} {}",
            answer.status,
            answer.body
        );
        *self
            .outcomes
            .lock()
            .unwrap()
            .entry((op, answer.status))
            .or_default() += 1;
        answer
    }

    /// Log `email` in to `org` and enroll or answer the challenge if MFA
    /// is owed (verify a code anyway if not): a full token, or `None`
    /// where the storm got in the way.
    async fn session(
        &self,
        client: usize,
        op: &'static str,
        id: i64,
        email: &str,
        org: i64,
    ) -> Option<String> {
        let body = json!({"email": email, "password": PASSWORD, "orgId": org});
        let login = self
            .send(client, op, "POST", "/user/auth/login", None, Some(body))
            .await;
        if login.status != 200 {
            return None;
        }
        let token = login.body["token"].as_str()?.to_string();
        let mfa = login.body["mfa"].as_str()?;
        if mfa == "setup_required" {
            return self.enroll(client, op, id, &token).await;
        }
        // A challenge; or a session that owes no MFA, which verifies a
        // factor all the same if the user has one (the storm may have
        // reset it): only such a session changes factors.
        let secret = self.secrets.lock().unwrap().get(&id).cloned();
        let verified = match secret {
            Some(secret) => {
                if mfa != "challenge_required" {
                    // The storm spends the users' steps fast: this user
                    // waits for the next code.
                    self.server(client).advance(30);
                }
                let code = self.server(client).totp(&secret);
                let body = json!({"method": "AUTHENTICATOR", "code": code});
                let path = "/user/auth/mfa/verify";
                let a = self
                    .send(client, op, "POST", path, Some(&token), Some(body))
                    .await;
                (a.status == 200).then(|| a.body["token"].as_str().unwrap().to_string())
            }
            None => None,
        };
        match mfa {
            "challenge_required" => verified,
            _ => verified.or(Some(token)),
        }
    }

    /// Enroll a new authenticator on `token`: the full token afterwards
    /// (the same one, or the new one a partial session is given).
    async fn enroll(
        &self,
        client: usize,
        op: &'static str,
        id: i64,
        token: &str,
    ) -> Option<String> {
        let path = "/user/users/mfa/generateTempSecret";
        let started = self.send(client, op, "POST", path, Some(token), None).await;
        if started.status != 200 {
            return None;
        }
        let secret = Secret::from_base32(started.body["secret"].as_str()?).unwrap();
        let code = self.server(client).totp(&secret);
        let path = "/user/users/mfa/validateCode";
        let body = json!({"code": code});
        let confirmed = self
            .send(client, op, "POST", path, Some(token), Some(body))
            .await;
        match confirmed.status {
            200 | 204 => {
                self.secrets.lock().unwrap().insert(id, secret);
                match confirmed.body["token"].as_str() {
                    Some(full) => Some(full.to_string()),
                    None => Some(token.to_string()),
                }
            }
            _ => None,
        }
    }

    /// Changes on a full session, as a user at work sends them: new
    /// recovery codes, a new email factor, the factor summary.
    async fn on_session(&self, client: usize, op: &'static str, token: Option<&str>) {
        let Some(token) = token else { return };
        let token = Some(token);
        self.send(
            client,
            op,
            "POST",
            "/user/users/mfa/recoveryCodes",
            token,
            None,
        )
        .await;
        let path = "/oauth/users/mfa/enrollEmail?mfatype=EMAIL";
        self.send(client, op, "PUT", path, token, None).await;
        self.send(client, op, "GET", "/oauth/users/mfaDetails", token, None)
            .await;
    }

    /// The step of one client in round `step`; counts whether its change
    /// went through.
    async fn step(&self, client: usize, step: usize) {
        let op = OPS[(step + client / 2) % OPS.len()];
        let done = self.change(op, client, step).await;
        *self.changes.lock().unwrap().entry(op).or_default() += usize::from(done);
    }

    /// Make the change of a step of kind `op`: whether it went through.
    async fn change(&self, op: &'static str, client: usize, step: usize) -> bool {
        let (id, email) = self.users[(step + client) % USERS].clone();
        let next = |k: usize| self.users[(step + client + k) % USERS].0;
        let admin = Some(self.admin.as_str());
        let root = Some(self.root.as_str());
        let org = self.org;
        match op {
            "enforce" => {
                let body = json!({"isMfaEnforced": (step + client).is_multiple_of(2)});
                let path = "/user/org/mfa";
                succeeded(&self.send(client, op, "PUT", path, admin, Some(body)).await)
            }
            "opt_out" => {
                let path = format!("/user/users/{id}/membership");
                let body = json!({"mfaOptOut": (step + client / 2).is_multiple_of(2)});
                succeeded(&self.send(client, op, "PUT", &path, admin, Some(body)).await)
            }
            "bulk_reset" => {
                // The pair's lists overlap in opposite orders: the store
                // must lock them in one order whatever the request's.
                let ids = if client.is_multiple_of(2) {
                    [id, next(1), next(2)]
                } else {
                    [next(2), next(1), id]
                };
                let body = json!({"ids": ids});
                let path = "/user/users/mfa/reset";
                succeeded(&self.send(client, op, "PUT", path, admin, Some(body)).await)
            }
            "admin_reset" => {
                // Something to reset, unless the storm took it already.
                if let Some(token) = self.session(client, op, id, &email, org).await {
                    self.enroll(client, op, id, &token).await;
                }
                let path = format!("/users/{email}/mfa/resetQRCodeEnroll");
                succeeded(&self.send(client, op, "PUT", &path, admin, None).await)
            }
            "rename" => {
                let body = json!({"name": format!("Storm {client}-{step}")});
                let path = format!("/user/org/{org}");
                succeeded(&self.send(client, op, "PUT", &path, admin, Some(body)).await)
            }
            "enroll" => match self.session(client, op, id, &email, org).await {
                Some(token) => self.enroll(client, op, id, &token).await.is_some(),
                None => false,
            },
            "verify" => match self.session(client, op, id, &email, org).await {
                Some(token) => {
                    let path = "/oauth/users/mfaDetails";
                    succeeded(&self.send(client, op, "GET", path, Some(&token), None).await)
                }
                None => false,
            },
            "self_reset" => match self.session(client, op, id, &email, org).await {
                Some(token) => {
                    let path = "/users/mfa/resetMyQRCodeEnroll";
                    succeeded(
                        &self
                            .send(client, op, "POST", path, Some(&token), None)
                            .await,
                    )
                }
                None => false,
            },
            "email" => {
                let Some(token) = self.session(client, op, id, &email, org).await else {
                    return false;
                };
                let path = "/oauth/users/mfa/enrollEmail?mfatype=EMAIL";
                let sent = self.send(client, op, "PUT", path, Some(&token), None).await;
                let code = self
                    .server(client)
                    .mails_to(&email)
                    .iter()
                    .rev()
                    .find_map(|m| m.code());
                let (200, Some(code)) = (sent.status, code) else {
                    return false;
                };
                let body = json!({"mfatype": "EMAIL", "totp": code});
                let path = "/oauth/users/mfa/verifyEmail";
                succeeded(
                    &self
                        .send(client, op, "PUT", path, Some(&token), Some(body))
                        .await,
                )
            }
            "recovery" => match self.session(client, op, id, &email, org).await {
                Some(token) => {
                    let path = "/user/users/mfa/recoveryCodes";
                    succeeded(
                        &self
                            .send(client, op, "POST", path, Some(&token), None)
                            .await,
                    )
                }
                None => false,
            },
            "password" => {
                let path = format!("/user/users/{id}");
                let body = json!({"password": PASSWORD});
                succeeded(&self.send(client, op, "PUT", &path, admin, Some(body)).await)
            }
            "membership" => {
                let path = format!("/user/users/deleteFromAllOrgs/{email}");
                self.send(client, op, "DELETE", &path, root, None).await;
                let path = format!("/user/org/{org}/email/user/{email}");
                succeeded(&self.send(client, op, "POST", &path, root, None).await)
            }
            "org_delete" => {
                // An org with two of the users, deleted while one of them
                // works in it on the other server and logs in to it again.
                let body = json!({"name": format!("Doomed {client}-{step}")});
                let created = self
                    .send(client, op, "POST", "/user/org", root, Some(body))
                    .await;
                let doomed = created.body["id"].as_i64().expect("org id");
                let other = &self.users[(step + client + 1) % USERS].1;
                for member in [&email, other] {
                    let path = format!("/user/org/{doomed}/email/user/{member}");
                    self.send(client, op, "POST", &path, root, None).await;
                }
                let inside = self.session(client + 1, op, id, &email, doomed).await;
                let path = format!("/user/org/{doomed}");
                let (deleted, _, _) = tokio::join!(
                    self.send(client, op, "DELETE", &path, root, None),
                    self.on_session(client + 1, op, inside.as_deref()),
                    self.session(client + 1, op, id, &email, doomed),
                );
                succeeded(&deleted)
            }
            "user_delete" => {
                // A new member, deleted while it works on the other server,
                // logs in again, and an admin resets it with a target of
                // the storm.
                let temp = format!("temp-{client}-{step}@example.com");
                let body = json!({"email": temp, "firstName": "Temp", "lastName": "User",
                                  "password": PASSWORD});
                let created = self
                    .send(client, op, "POST", "/user/users", admin, Some(body))
                    .await;
                let temp_id = created.body["id"].as_i64().expect("user id");
                let inside = self.session(client + 1, op, temp_id, &temp, org).await;
                let path = format!("/user/users/{temp_id}");
                let reset = json!({"ids": [temp_id, id]});
                let (deleted, _, _, _) = tokio::join!(
                    self.send(client, op, "DELETE", &path, root, None),
                    self.on_session(client + 1, op, inside.as_deref()),
                    self.session(client + 1, op, temp_id, &temp, org),
                    self.send(
                        client,
                        op,
                        "PUT",
                        "/user/users/mfa/reset",
                        admin,
                        Some(reset)
                    ),
                );
                succeeded(&deleted)
            }
            "tick" => {
                self.server(client).advance(30);
                true
            }
            other => unreachable!("step kind {other}"),
        }
    }
}

/// Whether the answer is a success.
fn succeeded(answer: &Answer) -> bool {
    (200..300).contains(&answer.status)
}

async fn every_write_route_at_once(s: TestServer) {
    let root = s.root().await;
    let (org, _, admin) = s
        .org_with_admin(&root, "Storm", "storm.admin@example.com")
        .await;
    let mut users = Vec::new();
    for i in 0..USERS {
        let email = format!("storm{i}@example.com");
        users.push((s.create_user(&admin, &email, false).await, email));
    }
    let twin = s.twin().await;
    let storm = Arc::new(Storm {
        servers: [s, twin],
        root,
        admin,
        org,
        users,
        secrets: Mutex::new(HashMap::new()),
        outcomes: Mutex::new(BTreeMap::new()),
        changes: Mutex::new(BTreeMap::new()),
    });

    for round in 0..ROUNDS {
        let steps: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let storm = storm.clone();
                tokio::spawn(async move { storm.step(client, round).await })
            })
            .collect();
        for step in steps {
            // A step's panic (a 5xx) fails the test here, with its message.
            step.await.expect("a step of the storm");
        }
    }

    let outcomes = storm.outcomes.lock().unwrap().clone();
    let changes = storm.changes.lock().unwrap().clone();
    println!("storm: statuses by step kind {outcomes:?}; changes made {changes:?}");
    // The storm did what it is for: every kind of change went through,
    // on top of whatever the races refused.
    for op in OPS {
        assert!(
            changes.get(op).is_some_and(|&n| n > 0),
            "no {op} step made its change: {changes:?}; statuses {outcomes:?}"
        );
    }

    // Afterwards: every target is a member again, reset, and owes MFA;
    // each enrolls and is served.
    let s = &storm.servers[0];
    let ids: Vec<i64> = storm.users.iter().map(|(id, _)| *id).collect();
    for (id, email) in &storm.users {
        let added = s
            .call(
                "POST",
                &format!("/user/org/{org}/email/user/{email}"),
                Some(&storm.root),
                None,
            )
            .await;
        // 409: still (or again) a member.
        assert!(matches!(added.status, 201 | 409), "{added:?}");
        s.put(
            &format!("/user/users/{id}/membership"),
            &storm.admin,
            json!({"mfaOptOut": false}),
        )
        .await
        .expect(204, None);
    }
    s.put("/user/users/mfa/reset", &storm.admin, json!({"ids": ids}))
        .await
        .expect(204, None);
    s.enforce(&storm.admin, true).await;
    s.advance(30);
    for (id, email) in &storm.users {
        let login = s.login_org(email, PASSWORD, org).await;
        assert_eq!(login.mfa, "setup_required", "{email}: {:?}", login.body);
        let full = storm
            .enroll(0, "after", *id, &login.token)
            .await
            .unwrap_or_else(|| panic!("{email} could not enroll after the storm"));
        let details = s.get("/oauth/users/mfaDetails", &full).await;
        assert_eq!(
            details.ok()["details"]["AUTHENTICATOR"]["verified"],
            true,
            "{email}: {details:?}"
        );
    }
}

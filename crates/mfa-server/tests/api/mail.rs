//! Mail over real SMTP: a dead mail server leaves no code valid and no
//! email change pending, and answers 503; outside production the issuer
//! carries the environment.

use serde_json::json;

use crate::helpers::{Answer, PASSWORD, TestServer};
use crate::on_every_backend;

/// A server on SQLite and the session of pat@example.com, a user with no
/// factor.
async fn server_with_pat() -> (TestServer, String) {
    let s = TestServer::sqlite().await;
    let root = s.root().await;
    s.create_user(&root, "pat@example.com", false).await;
    let pat = s.login("pat@example.com", PASSWORD).await.token;
    (s, pat)
}

/// Ask for an email code (the seed's email enrollment): a mail to pat.
async fn ask_for_code(s: &TestServer, token: &str) -> Answer {
    s.call(
        "PUT",
        "/oauth/users/mfa/enrollEmail?mfatype=EMAIL",
        Some(token),
        None,
    )
    .await
}

#[tokio::test]
async fn mail_server_down_is_503_and_leaves_no_code() {
    let (s, pat) = server_with_pat().await;

    s.smtp.set_failing(true);
    let a = ask_for_code(&s, &pat).await;
    a.expect(503, Some("mail_unavailable"));
    // The trail says the code was withdrawn, beside its sending (an audit
    // read "sent" for codes no mail carried).
    assert_eq!(
        s.query_number(
            "SELECT count(*) AS n FROM audit_events WHERE action = 'email_code_withdrawn'"
        ),
        Some(1)
    );
    assert!(!a.body["message"].as_str().unwrap().contains("127.0.0.1"));

    // Nothing was sent, so no code may verify; the throttle did not start.
    s.smtp.set_failing(false);
    s.put(
        "/oauth/users/mfa/verifyEmail",
        &pat,
        json!({"mfatype": "EMAIL", "totp": "123456"}),
    )
    .await
    .expect(409, Some("not_enrolled"));
    ask_for_code(&s, &pat).await.expect(200, None);
}

/// A mail server that keeps the message but does not confirm it (slow
/// content checks): the answer is 503 once the request's wait ends, not
/// after lettre's wait for the answer to its `QUIT` as well (which came
/// to twice the SMTP timeout), and the code in the message works when it
/// arrives.
#[tokio::test]
async fn a_code_whose_mail_was_not_confirmed_in_time_still_works() {
    let (s, pat) = server_with_pat().await;

    s.smtp
        .set_data_reply_delay(std::time::Duration::from_secs(60));
    let started = std::time::Instant::now();
    let a = ask_for_code(&s, &pat).await;
    let waited = started.elapsed();
    assert!(
        waited >= mfa_email::SMTP_TIMEOUT
            && waited < mfa_email::SMTP_TIMEOUT * 2 - std::time::Duration::from_secs(3),
        "answered after {waited:?}"
    );
    a.expect(503, Some("mail_unavailable"));
    let message = a.body["message"].as_str().unwrap();
    assert!(message.contains("may still arrive"), "{message}");
    // When another may be asked for: the kept code holds the per-user
    // interval (a shorter wait met a 429).
    assert_eq!(a.header("retry-after"), Some("30"));
    s.smtp.set_data_reply_delay(std::time::Duration::ZERO);
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"mfa_mail_messages_total{kind="required",outcome="unconfirmed"} 1"#),
        "{metrics}"
    );

    let mails = s.smtp.messages();
    assert_eq!(mails.len(), 1, "sent once, not again after the timeout");
    let code = mails[0].code().expect("a code in the mail");
    s.put(
        "/oauth/users/mfa/verifyEmail",
        &pat,
        json!({"mfatype": "EMAIL", "totp": code}),
    )
    .await
    .expect(200, None);
}

/// A relay that takes the connection and never greets took nothing: the
/// request is told the mail server is unavailable, not that its message
/// "may still arrive" (an audit was told so, and waited for it).
#[tokio::test]
async fn a_relay_that_never_greets_is_unavailable_not_unconfirmed() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let url = format!(
        "smtp://127.0.0.1:{}?tls=none",
        silent.local_addr().expect("address").port()
    );
    // Connections are accepted by the kernel's backlog and never read.
    let s = TestServer::sqlite_with(&[("MFA_SMTP_URL", url.as_str())]).await;
    let root = s.root().await;
    s.create_user(&root, "pat@example.com", false).await;
    let pat = s.login("pat@example.com", PASSWORD).await.token;
    let a = ask_for_code(&s, &pat).await;
    a.expect(503, Some("mail_unavailable"));
    let message = a.body["message"].as_str().unwrap();
    assert!(!message.contains("may still arrive"), "{message}");
    assert!(message.contains("try again later"), "{message}");
    drop(silent);
}

/// With MFA_PUBLIC_URL, an email change's mail links to the account page,
/// the token in the fragment; the token from the link confirms the change.
#[tokio::test]
async fn an_email_change_mail_links_to_the_account_page() {
    let s = TestServer::sqlite_with(&[("MFA_PUBLIC_URL", "https://mfa.example.com/")]).await;
    let root = s.root().await;
    let pat = s.create_user(&root, "pat@example.com", false).await;
    s.put(
        &format!("/user/users/{pat}"),
        &root,
        json!({"email": "pat@new.example"}),
    )
    .await
    .expect(200, None);
    let mail = s
        .mails_to("pat@new.example")
        .pop()
        .expect("the confirmation");
    let text = mail.text().expect("text");
    let prefix = "https://mfa.example.com/account#confirm-email=";
    let link = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no link in {text}"));
    let token = &link[prefix.len()..];
    assert_eq!(Some(token.to_string()), mail.token());
    s.call(
        "POST",
        "/user/users/email/confirmChange",
        None,
        Some(json!({"token": token})),
    )
    .await
    .expect(204, None);
}

/// A mail server that refuses the address for good (550 at RCPT) is not
/// answered "try again later": nothing was sent, and no Retry-After.
#[tokio::test]
async fn a_refused_address_is_not_told_to_try_again() {
    let (s, pat) = server_with_pat().await;
    s.smtp.set_refusing_recipients(true);
    let a = ask_for_code(&s, &pat).await;
    a.expect(503, Some("mail_unavailable"));
    let message = a.body["message"].as_str().unwrap();
    assert!(message.contains("trying again will not help"), "{message}");
    assert_eq!(a.header("retry-after"), None);
    // No code was left, and the throttle did not start.
    s.smtp.set_refusing_recipients(false);
    ask_for_code(&s, &pat).await.expect(200, None);
}

#[tokio::test]
async fn sandbox_issuer_is_marked() {
    let s = TestServer::sqlite_with(&[("MFA_ENVIRONMENT", "sandbox")]).await;
    let root = s.root().await;
    let t = s.generate_temp_secret(&root).await;
    t.expect(200, None);
    let uri = t.body["otpauthUri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Acme%20%28sandbox%29:root%40example.com?"),
        "{uri}"
    );
    assert!(uri.contains("&issuer=Acme%20%28sandbox%29&"), "{uri}");
}

/// An email change whose link could not be mailed is withdrawn: nothing
/// stays pending, and the next attempt is not held up by the 30 s limit.
#[tokio::test]
async fn a_change_link_that_could_not_be_sent_is_withdrawn() {
    let s = TestServer::sqlite().await;
    let root = s.root().await;
    let pat = s.create_user(&root, "pat@example.com", false).await;
    let token = s.login("pat@example.com", PASSWORD).await.token;
    let change = json!({"email": "pat@new.example", "currentPassword": PASSWORD});

    s.smtp.set_failing(true);
    // The other changes of the request are not made either (an audit
    // found the new name saved behind the 503).
    let mut with_name = change.clone();
    with_name["firstName"] = json!("Renamed");
    s.put(&format!("/user/users/{pat}"), &token, with_name)
        .await
        .expect(503, Some("mail_unavailable"));
    s.smtp.set_failing(false);
    let after = s.get(&format!("/user/users/{pat}"), &root).await;
    assert_ne!(after.ok()["firstName"], "Renamed");
    assert_eq!(after.ok()["pendingEmail"], serde_json::Value::Null);
    // The trail says the request came to nothing.
    let trail = s
        .get("/user/audit?action=email_change_refused", &root)
        .await;
    assert!(
        trail
            .ok()
            .to_string()
            .contains("the confirmation link could not be mailed"),
        "{:?}",
        trail.body
    );
    let resend = || {
        s.call(
            "POST",
            "/user/users/email/resendChangeConfirmation",
            Some(&token),
            None,
        )
    };
    resend().await.expect(404, Some("not_found"));
    s.put(&format!("/user/users/{pat}"), &token, change)
        .await
        .expect(200, None);
    let link = s.last_token("pat@new.example");
    // A resend that cannot be mailed takes nothing away: only its new link
    // is withdrawn, and the one sent before still holds.
    s.advance(31);
    s.smtp.set_failing(true);
    resend().await.expect(503, Some("mail_unavailable"));
    s.smtp.set_failing(false);
    let after = s.get(&format!("/user/users/{pat}"), &root).await;
    assert_eq!(after.ok()["pendingEmail"]["newEmail"], "pat@new.example");
    s.call(
        "POST",
        "/user/users/email/confirmChange",
        None,
        Some(json!({"token": link})),
    )
    .await
    .expect(204, None);
    assert_eq!(
        s.get(&format!("/user/users/{pat}"), &root).await.ok()["email"],
        "pat@new.example"
    );
}

/// A mail server that accepts connections and never says a word.
struct HungSmtp {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HungSmtp {
    fn start() -> HungSmtp {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            // Bounded: stopped by the test, or after two minutes.
            for _ in 0..6_000 {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok((stream, _)) = listener.accept() {
                    held.push(stream);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        HungSmtp {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }
}

impl Drop for HungSmtp {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A mail server that hangs holds a few sends, not the server: a reset
/// answers without waiting for its notices, and requests that need a
/// message beyond the few are refused after a short wait, so readiness,
/// reads and logins go on. (An audit saw 40 such sends take every blocking
/// thread: `/readyz` failed, a login took 15 s, and a reset of three users
/// took 61 s, 20 s per notice.)
#[tokio::test]
async fn a_hung_mail_server_holds_a_few_sends_not_the_server() {
    let hung = HungSmtp::start();
    let s = TestServer::sqlite_with(&[("MFA_SMTP_URL", &hung.url())]).await;
    let root = s.root().await;

    let lost = s.create_user(&root, "lost@example.com", false).await;
    let lost_token = s.login("lost@example.com", PASSWORD).await.token;
    s.enroll_authenticator(&lost_token).await;
    let started = std::time::Instant::now();
    s.put("/user/users/mfa/reset", &root, json!({"ids": [lost]}))
        .await
        .expect(204, None);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the reset waited for its notice: {:?}",
        started.elapsed()
    );

    const SENDS: usize = 40;
    let mut tokens = Vec::new();
    for i in 0..SENDS {
        let email = format!("mailer{i}@example.com");
        s.create_user(&root, &email, false).await;
        tokens.push(s.login(&email, PASSWORD).await.token);
    }
    let sends: Vec<_> = tokens
        .iter()
        .map(|token| {
            let request = s
                .client
                .put(s.url("/oauth/users/mfa/enrollEmail?mfatype=EMAIL"))
                .bearer_auth(token);
            tokio::spawn(async move { request.send().await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    s.call("GET", "/readyz", None, None).await.expect(200, None);
    s.get("/oauth/users/mfaDetails", &root)
        .await
        .expect(200, None);
    s.login("lost@example.com", PASSWORD).await;

    // Those beyond the few sends at once are refused after the short
    // wait; the few fail when the mail server's timeout ends them.
    drop(hung);
    for send in sends {
        let answer = TestServer::answer(send.await.unwrap().expect("answered")).await;
        answer.expect(503, Some("mail_unavailable"));
        assert_eq!(answer.header("retry-after"), Some("10"));
    }
    // /metrics tells which: refused for the mail slots, or failed.
    let metrics = s.metrics().await;
    let count = |series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {metrics}"))
    };
    let busy = count(r#"mfa_mail_messages_total{kind="required",outcome="busy"} "#);
    let failed = count(r#"mfa_mail_messages_total{kind="required",outcome="failed"} "#);
    assert_eq!(busy + failed, SENDS as u64, "{metrics}");
    // (Some that waited got a slot once the mail server was gone, and
    // failed at once.)
    assert!(busy > 0, "{metrics}");
    assert!(metrics.contains("mfa_mail_notices_queued "), "{metrics}");
}

/// A code checked before any was sent is no guess: `409 not_enrolled`,
/// uncounted, however often, and the code asked for next works. (Counted
/// as wrong codes, five such calls locked the user out of asking for one.)
#[tokio::test]
async fn a_code_checked_before_any_was_sent_is_not_counted() {
    let (s, pat) = server_with_pat().await;
    let verify = |code: String| {
        s.put(
            "/oauth/users/mfa/verifyEmail",
            &pat,
            json!({"mfatype": "EMAIL", "totp": code}),
        )
    };
    for _ in 0..8 {
        let a = verify("123456".into()).await;
        a.expect(409, Some("not_enrolled"));
        let message = a.body["message"].as_str().unwrap();
        assert!(message.contains("no email code was sent"), "{message}");
    }
    ask_for_code(&s, &pat).await.expect(200, None);
    let code = s.smtp.messages()[0].code().expect("a code in the mail");
    verify(code.clone()).await.expect(200, None);

    // A login code checked when only the enrollment's was sent: the same.
    for guess in ["123456".to_string(), code] {
        let a = s
            .post(
                "/user/auth/mfa/verify",
                &pat,
                json!({"method": "EMAIL", "code": guess}),
            )
            .await;
        a.expect(409, Some("not_enrolled"));
        let message = a.body["message"].as_str().unwrap();
        assert!(message.contains("no login code was sent"), "{message}");
    }
    for _ in 0..6 {
        s.post(
            "/user/auth/mfa/verify",
            &pat,
            json!({"method": "EMAIL", "code": "123456"}),
        )
        .await
        .expect(409, Some("not_enrolled"));
    }
}

on_every_backend!(a_notice_outlives_a_mail_outage_and_its_server);

/// A new user of the root org, opted out of MFA by the root admin: a
/// change that queues one notice to them.
async fn opt_out_with_notice(s: &TestServer, email: &str) {
    let root = s.root().await;
    let user = s.create_user(&root, email, false).await;
    s.put(
        &format!("/user/users/{user}/membership"),
        &root,
        json!({"mfaOptOut": true}),
    )
    .await
    .expect(204, None);
}

/// Assert that `/metrics` shows each of `series` (a whole line or part of one).
async fn expect_series(s: &TestServer, series: &[&str]) {
    let metrics = s.metrics().await;
    for line in series {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }
}

/// A notice is kept in the database until a server sends it: one whose
/// send failed while the mail server was down is sent by another server
/// process once the mail server is back and the first process has
/// stopped. (Notices were queued in the memory of the process that made
/// the change: a crash or a stop during an outage lost them, and a failed
/// send was never tried again.)
async fn a_notice_outlives_a_mail_outage_and_its_server(s: TestServer) {
    let root = s.root().await;
    let user = s.create_user(&root, "outage@example.com", false).await;
    let token = s.login("outage@example.com", PASSWORD).await.token;
    s.enroll_authenticator(&token).await;
    let changed = |s: &TestServer| {
        s.mails_to("outage@example.com")
            .iter()
            .filter(|m| {
                m.subject()
                    .is_some_and(|subject| subject.contains("sign-in methods changed"))
            })
            .count()
    };
    // The enrollment's notice is out before the mail server goes.
    assert_eq!(changed(&s), 0);

    s.smtp.set_failing(true);
    s.put("/user/users/mfa/reset", &root, json!({"ids": [user]}))
        .await
        .expect(204, None);
    assert_eq!(changed(&s), 0);
    expect_series(
        &s,
        &[
            "\nmfa_mail_notices_queued 1\n",
            r#"mfa_mail_messages_total{kind="notice",outcome="failed"} 1"#,
        ],
    )
    .await;

    let twin = s.twin().await;
    drop(s);
    twin.smtp.set_failing(false);
    // Not before its retry is due.
    assert_eq!(changed(&twin), 0);
    twin.advance(mfa_core::service::retry_delay(1) as i64);
    assert_eq!(changed(&twin), 1);
    assert_eq!(changed(&twin), 1, "sent once");
    expect_series(&twin, &["\nmfa_mail_notices_queued 0\n"]).await;
}

/// A send slower than the lease on its notice (a mail server whose replies
/// trickle in, each just inside its timeout) keeps the notice: the lease
/// is renewed while the send is under way, so no other server process
/// takes the notice over and sends it a second time. (An audit saw it
/// sent twice.)
async fn a_slow_notice_send_keeps_its_notice(s: TestServer) {
    use mfa_core::service::NOTICE_LEASE_SECS;
    use std::time::{Duration, Instant};
    let twin = s.twin().await;
    // Slow, but inside the step's timeout: the send succeeds.
    s.smtp
        .set_mail_from_reply_delay(mfa_email::SMTP_TIMEOUT - Duration::from_secs(2));
    opt_out_with_notice(&s, "trickle@example.com").await;
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("the send began", &|| s.smtp.mail_from_commands() == 1);
    let lease = || s.query_number("SELECT max(due_at) AS n FROM notices");
    let claimed_at = s.now() as i64;
    assert_eq!(lease(), Some(claimed_at + NOTICE_LEASE_SECS as i64));
    // A third of the lease passes: the sending process renews it.
    s.advance(100);
    wait_for("the lease was renewed", &|| {
        lease() == Some(claimed_at + 100 + NOTICE_LEASE_SECS as i64)
    });
    // Past the first lease: neither process takes the notice again (the
    // twin's delivery runs as the mail is read).
    s.advance(NOTICE_LEASE_SECS as i64 - 50);
    assert_eq!(s.mails_to("trickle@example.com").len(), 1);
    drop(twin);
    assert_eq!(s.smtp.mail_from_commands(), 1, "one send, not two");
    expect_series(&s, &["\nmfa_mail_notices_queued 0\n"]).await;
}

on_every_backend!(a_slow_notice_send_keeps_its_notice);

/// A notice to a mail server that never answered is tried again, not
/// counted as sent: nothing says it arrived. (An audit saw such notices
/// deleted as delivered, and never sent once the mail server was back.)
#[tokio::test]
async fn a_notice_the_mail_server_never_answered_is_tried_again() {
    let hung = HungSmtp::start();
    let s = TestServer::sqlite_with(&[("MFA_SMTP_URL", &hung.url())]).await;
    opt_out_with_notice(&s, "unanswered@example.com").await;
    // Waits for the send to time out.
    assert!(s.mails_to("unanswered@example.com").is_empty());
    expect_series(
        &s,
        &[
            "\nmfa_mail_notices_queued 1\n",
            r#"mfa_mail_messages_total{kind="notice",outcome="failed"} 1"#,
            r#"mfa_mail_messages_total{kind="notice",outcome="sent"} 0"#,
            r#"mfa_mail_messages_total{kind="notice",outcome="given_up"} 0"#,
        ],
    )
    .await;
}

/// A notice whose end the mail server confirms too late is counted as
/// sent, not sent again at every try: the server took it. (Retried, it
/// arrived 8 times.)
#[tokio::test]
async fn a_notice_confirmed_late_is_sent_once() {
    let s = TestServer::sqlite().await;
    s.smtp
        .set_data_reply_delay(mfa_email::SMTP_TIMEOUT + std::time::Duration::from_secs(5));
    opt_out_with_notice(&s, "late@example.com").await;
    assert_eq!(s.mails_to("late@example.com").len(), 1);
    s.smtp.set_data_reply_delay(std::time::Duration::ZERO);
    s.advance(mfa_core::service::retry_delay(1) as i64);
    assert_eq!(s.mails_to("late@example.com").len(), 1, "not sent again");
    expect_series(
        &s,
        &[
            "\nmfa_mail_notices_queued 0\n",
            r#"mfa_mail_messages_total{kind="notice",outcome="unconfirmed"} 1"#,
            r#"mfa_mail_messages_total{kind="notice",outcome="failed"} 0"#,
        ],
    )
    .await;
}

/// A mail server that greets and then stalls before it takes anything
/// (here at `MAIL FROM`; a slow recipient check alike) did not take the
/// notice: tried again, not counted as sent. (An audit saw such notices
/// deleted as "unconfirmed" and never sent.)
#[tokio::test]
async fn a_notice_stalled_before_its_data_is_tried_again() {
    let s = TestServer::sqlite().await;
    s.smtp
        .set_mail_from_reply_delay(mfa_email::SMTP_TIMEOUT + std::time::Duration::from_secs(5));
    opt_out_with_notice(&s, "stalled@example.com").await;
    assert!(s.mails_to("stalled@example.com").is_empty());
    expect_series(
        &s,
        &[
            "\nmfa_mail_notices_queued 1\n",
            r#"mfa_mail_messages_total{kind="notice",outcome="failed"} 1"#,
            r#"mfa_mail_messages_total{kind="notice",outcome="unconfirmed"} 0"#,
        ],
    )
    .await;
    // Sent at its retry once the server answers.
    s.smtp.set_mail_from_reply_delay(std::time::Duration::ZERO);
    s.advance(mfa_core::service::retry_delay(1) as i64);
    assert_eq!(s.mails_to("stalled@example.com").len(), 1);
}

/// A mail server that does not offer the STARTTLS the URL requires gets
/// nothing of the notice in clear text, and the notice waits for the path
/// to be mended instead of being given up: a STARTTLS stripped on the way
/// would otherwise make every notice disappear. (An audit saw it given up
/// at its first try.)
#[tokio::test]
async fn a_notice_refused_by_the_client_before_it_is_offered_waits() {
    let plain = mfa_email::test_support::SmtpSink::start().expect("SMTP sink");
    let url = format!("smtp://127.0.0.1:{}", plain.port());
    let s = TestServer::sqlite_with(&[("MFA_SMTP_URL", &url)]).await;
    opt_out_with_notice(&s, "stripped@example.com").await;
    assert!(s.mails_to("stripped@example.com").is_empty());
    assert_eq!(plain.mail_from_commands(), 0, "nothing offered in clear");
    assert!(plain.messages().is_empty());
    expect_series(
        &s,
        &[
            "\nmfa_mail_notices_queued 1\n",
            r#"mfa_mail_messages_total{kind="notice",outcome="failed"} 1"#,
            r#"mfa_mail_messages_total{kind="notice",outcome="given_up"} 0"#,
        ],
    )
    .await;
}

/// An address beyond ASCII goes only to a mail server that offers
/// SMTPUTF8 (RFC 6531), as lettre's transport sends codes: a notice to a
/// server without it is given up before anything is offered. (An audit
/// saw it sent raw.)
#[tokio::test]
async fn a_notice_to_an_address_beyond_ascii_needs_smtputf8() {
    let s = TestServer::sqlite().await;
    opt_out_with_notice(&s, "jörg@example.com").await;
    assert!(s.mails_to("jörg@example.com").is_empty());
    assert_eq!(s.smtp.mail_from_commands(), 0, "nothing offered");
    expect_series(
        &s,
        &[
            "\nmfa_mail_notices_queued 0\n",
            r#"mfa_mail_messages_total{kind="notice",outcome="given_up"} 1"#,
        ],
    )
    .await;
}

//! The admin console (`/admin`) and the self-service page (`/account`).
//!
//! The pages' headers are checked over plain HTTP. The pages themselves run
//! in headless Chromium, driven through chromedriver with fantoccini, against
//! the real server: an admin signs in, enforces MFA, finds a user, turns
//! their org-level MFA off and on and resets their MFA through the pop-up; a
//! user signs in, reads the key from the page, enrolls with a computed code
//! and sees "Verified"; a user signed in where no MFA is owed is asked for
//! a code before new recovery codes. Without `/usr/bin/chromium` and
//! `/usr/bin/chromedriver` the browser tests print that they were skipped
//! (`.ci/run` installs both).
//!
//! With `MFA_SCREENSHOT_DIR` set, the main screens are saved there as PNG
//! (the ones in `docs/screenshots/` come from such a run).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use mfa_totp::Secret;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestServer};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The longest wait for anything on a page (the suite shares the machine).
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// One browser at a time: Chromium is heavy, and the rest of the suite runs
/// in parallel.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---- the pages over plain HTTP

#[tokio::test]
async fn pages_are_served_from_the_binary_with_strict_headers() {
    let s = TestServer::sqlite().await;
    for (path, script) in [("/admin", "admin.js"), ("/account", "account.js")] {
        let a = s.call("GET", path, None, None).await;
        a.expect(200, None);
        assert!(
            a.header("content-type")
                .unwrap()
                .starts_with("text/html; charset=utf-8")
        );
        let csp = a.header("content-security-policy").expect("CSP");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {directive} not in {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(a.header("x-frame-options"), Some("DENY"));
        assert_eq!(a.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        let html = String::from_utf8(a.bytes).unwrap();
        assert!(
            html.contains(&format!(
                "<script type=\"module\" src=\"/assets/{script}\"></script>"
            )),
            "{html}"
        );
        assert!(html.contains("data-environment=\"production\""));
        assert!(!html.contains("{{"), "{html}");
    }
    for (file, content_type) in [
        ("admin.js", "text/javascript"),
        ("account.js", "text/javascript"),
        ("common.js", "text/javascript"),
        ("ui.css", "text/css"),
    ] {
        let a = s.call("GET", &format!("/assets/{file}"), None, None).await;
        a.expect(200, None);
        assert!(
            a.header("content-type").unwrap().starts_with(content_type),
            "{file}: {a:?}"
        );
        assert!(a.bytes.len() > 1000, "{file}");
    }
    // Unknown files and other methods: the JSON errors of every route.
    s.call("GET", "/assets/missing.js", None, None)
        .await
        .expect(404, Some("not_found"));
    s.call("GET", "/assets/../Cargo.toml", None, None)
        .await
        .expect(404, Some("not_found"));
    s.call("POST", "/admin", None, None)
        .await
        .expect(405, Some("method_not_allowed"));

    // The sandbox warning of the org settings is switched by the page's
    // environment.
    let sandbox = TestServer::sqlite_with(&[("MFA_ENVIRONMENT", "sandbox")]).await;
    let a = sandbox.call("GET", "/admin", None, None).await;
    assert!(
        String::from_utf8(a.bytes)
            .unwrap()
            .contains("data-environment=\"sandbox\"")
    );
}

// ---- the browser

/// chromedriver in its own process group, ended with everything it started.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    async fn start() -> Driver {
        let port = free_port();
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt as _;
            command.process_group(0);
        }
        let child = command.spawn().expect("start chromedriver");
        let mut driver = Driver { child, port };
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = driver.child.try_wait().expect("chromedriver status") {
                panic!("chromedriver exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver does not listen on {port}"
            );
            tokio::time::sleep(POLL).await;
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium it started, also
        // when a test failed before closing its session.
        #[cfg(unix)]
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

struct Browser {
    client: Client,
    base: String,
    downloads: PathBuf,
    screenshots: Option<PathBuf>,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A fresh headless Chromium (1280x900) on `server`, or `None` when
    /// Chromium or chromedriver is not installed, unless
    /// `MFA_TEST_REQUIRE_BROWSER` is set (as CI sets it): then their
    /// absence fails the test instead of passing it untested.
    async fn start(server: &TestServer) -> Option<Browser> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            assert!(
                std::env::var_os("MFA_TEST_REQUIRE_BROWSER").is_none(),
                "MFA_TEST_REQUIRE_BROWSER is set, and {CHROMIUM} or {CHROMEDRIVER} is missing"
            );
            println!("skipped: chromium/chromedriver not installed");
            return None;
        }
        let profile = tempfile::tempdir().expect("profile directory");
        let downloads = profile.path().join("downloads");
        std::fs::create_dir(&downloads).unwrap();
        let driver = Driver::start().await;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().join("chromium").display()),
                    "--window-size=1280,900",
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a WebDriver session");
        let screenshots = std::env::var_os("MFA_SCREENSHOT_DIR").map(PathBuf::from);
        if let Some(dir) = &screenshots {
            std::fs::create_dir_all(dir).expect("MFA_SCREENSHOT_DIR");
        }
        let browser = Browser {
            client,
            base: server.base.clone(),
            downloads,
            screenshots,
            _driver: driver,
            _profile: profile,
        };
        browser.viewport(1280, 900).await;
        Some(browser)
    }

    /// Size the window so that the page itself gets `width` x `height`.
    async fn viewport(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
        let inner = self
            .eval("return [window.innerWidth, window.innerHeight];")
            .await;
        let (w, h) = (inner[0].as_u64().unwrap(), inner[1].as_u64().unwrap());
        let (w, h) = (w as u32, h as u32);
        if (w, h) != (width, height) {
            self.client
                .set_window_size(2 * width - w, 2 * height - h)
                .await
                .unwrap();
        }
    }

    async fn close(self) {
        let Browser { client, .. } = self;
        client.close().await.expect("close the session");
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{}", self.base, path))
            .await
            .expect("goto");
        // Count what the Content-Security-Policy blocks from now on.
        self.eval(
            "window.cspViolations = []; document.addEventListener('securitypolicyviolation', \
             (e) => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));",
        )
        .await;
    }

    /// Poll `check` until it answers `Some`, for at most [`WAIT`].
    async fn until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() > deadline {
                let alert = self.text_of("#alert").await.unwrap_or_default();
                let status = self.text_of("#status").await.unwrap_or_default();
                panic!("timed out waiting for {what}; alert: {alert:?}; status: {status:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn text_of(&self, css: &str) -> Option<String> {
        let el = self.client.find(Locator::Css(css)).await.ok()?;
        el.text().await.ok()
    }

    /// The element, once it is displayed.
    async fn visible(&self, css: &str) -> Element {
        self.until(&format!("{css} to be displayed"), || async {
            let el = self.client.find(Locator::Css(css)).await.ok()?;
            el.is_displayed().await.ok()?.then_some(el)
        })
        .await
    }

    /// Wait until the element is hidden or gone.
    async fn gone(&self, css: &str) {
        self.until(&format!("{css} to disappear"), || async {
            match self.client.find(Locator::Css(css)).await {
                Err(_) => Some(()),
                Ok(el) => (!el.is_displayed().await.ok()?).then_some(()),
            }
        })
        .await
    }

    /// The element's text, once it contains `needle`.
    async fn text_contains(&self, css: &str, needle: &str) -> String {
        self.until(&format!("{needle:?} in {css}"), || async {
            let text = self.text_of(css).await?;
            text.contains(needle).then_some(text)
        })
        .await
    }

    /// Wait until `css` matches exactly `n` displayed elements.
    async fn count(&self, css: &str, n: usize) -> Vec<Element> {
        self.until(&format!("{n} of {css}"), || async {
            let all = self.client.find_all(Locator::Css(css)).await.ok()?;
            let mut shown = Vec::new();
            for el in all {
                if el.is_displayed().await.ok()? {
                    shown.push(el);
                }
            }
            (shown.len() == n).then_some(shown)
        })
        .await
    }

    async fn fill(&self, css: &str, text: &str) {
        let el = self.visible(css).await;
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("type");
    }

    async fn click(&self, css: &str) {
        self.visible(css).await.click().await.expect("click");
    }

    async fn checked(&self, css: &str) -> bool {
        let el = self.visible(css).await;
        el.is_selected().await.expect("checked")
    }

    async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("script runs")
    }

    /// Save a screenshot when `MFA_SCREENSHOT_DIR` is set.
    async fn screenshot(&self, name: &str) {
        let Some(dir) = &self.screenshots else {
            return;
        };
        self.eval("window.scrollTo(0, 0);").await;
        // Let the focus ring and fonts settle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write the screenshot");
    }

    /// Every form control of the page has an accessible name, every dialog
    /// a title, every button is a `<button>` with text.
    async fn assert_accessible(&self) {
        let problems = self
            .eval(
                r#"
                const problems = [];
                for (const el of document.querySelectorAll("input, select, textarea")) {
                  const named = el.labels.length > 0 || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
                  if (!named) problems.push("unlabelled " + el.outerHTML);
                }
                for (const d of document.querySelectorAll("dialog")) {
                  const id = d.getAttribute("aria-labelledby");
                  if (!id || !document.getElementById(id)) problems.push("dialog without title " + d.id);
                }
                for (const b of document.querySelectorAll("button")) {
                  if (!b.textContent.trim() && !b.getAttribute("aria-label")) problems.push("button without text " + b.outerHTML);
                }
                if (document.querySelectorAll("[onclick], [role=button]:not(button)").length) problems.push("click handlers on non-buttons");
                for (const v of window.cspViolations || []) problems.push("blocked by the CSP: " + v);
                return problems;
                "#,
            )
            .await;
        assert_eq!(problems, json!([]), "accessibility problems");
    }

    /// The page fits the width of the window: nothing to scroll sideways.
    async fn assert_no_sideways_scrolling(&self) {
        let overflow = self
            .eval("return document.documentElement.scrollWidth - window.innerWidth;")
            .await;
        assert!(
            overflow.as_i64().unwrap_or(1) <= 0,
            "the page is wider than the window by {overflow}px"
        );
    }
}

/// Create a user with a name in the current org of `token`.
async fn person(
    s: &TestServer,
    token: &str,
    first: &str,
    last: &str,
    admin: bool,
) -> (i64, String) {
    let email = format!(
        "{}.{}@example.com",
        first.to_lowercase(),
        last.to_lowercase()
    );
    let a = s
        .post(
            "/user/users",
            token,
            json!({"email": email, "firstName": first, "lastName": last,
                   "password": PASSWORD, "isAdmin": admin}),
        )
        .await;
    a.expect(201, None);
    (a.body["id"].as_i64().unwrap(), email)
}

/// The key shown on the page, with the spaces of its groups of four.
async fn key_on_page(b: &Browser, css: &str) -> Secret {
    let grouped = b.visible(css).await.text().await.unwrap();
    let groups: Vec<&str> = grouped.split(' ').collect();
    assert!(groups.len() >= 8, "{grouped}");
    assert!(
        groups[..groups.len() - 1].iter().all(|g| g.len() == 4),
        "not in groups of four: {grouped}"
    );
    Secret::from_base32(&groups.concat()).expect("a base32 key")
}

/// Names for a second page of users; none contains "val".
const OTHERS: &[(&str, &str)] = &[
    ("Amara", "Okafor"),
    ("Bruno", "Costa"),
    ("Chen", "Wei"),
    ("Dana", "Kim"),
    ("Elif", "Demir"),
    ("Farid", "Haddad"),
    ("Greta", "Nilsson"),
    ("Hugo", "Martin"),
    ("Ines", "Moreau"),
    ("Jonas", "Becker"),
    ("Kofi", "Mensah"),
    ("Lena", "Fischer"),
    ("Mateo", "Garcia"),
    ("Nadia", "Petrova"),
    ("Oscar", "Lind"),
    ("Priya", "Sharma"),
    ("Quinn", "Murphy"),
    ("Rosa", "Lopez"),
    ("Sven", "Berg"),
    ("Tomas", "Novak"),
    ("Yuki", "Tanaka"),
];

#[tokio::test]
async fn admin_console_enforces_mfa_opts_a_user_out_and_back_in_and_resets_them() {
    let _one = ONE_BROWSER.lock().await;
    // The sandbox, so that the org settings show their warning.
    let s = TestServer::sqlite_with(&[("MFA_ENVIRONMENT", "sandbox")]).await;
    let Some(b) = Browser::start(&s).await else {
        return;
    };
    let root = s.root().await;
    let org = s.root_org;
    let (ada_id, ada) = person(&s, &root, "Ada", "Lovelace", true).await;
    let (val_id, val) = person(&s, &root, "Valentina", "Rodriguez", false).await;
    let mut others = Vec::new();
    for (first, last) in OTHERS {
        others.push(person(&s, &root, first, last, false).await);
    }
    // Valentina has an authenticator (and so a last login).
    let val_login = s.login(&val, PASSWORD).await;
    s.enroll_authenticator(&val_login.token).await;
    let users_total = 2 + 1 + OTHERS.len(); // root, Ada, Valentina, the others

    // Sign in: a wrong password is refused in words, then the right one.
    b.goto("/admin").await;
    b.visible("#signin-view").await;
    b.fill("#signin-email", &ada).await;
    b.fill("#signin-password", "not the password").await;
    b.click("#password-form button[type=submit]").await;
    b.text_contains("#alert", "Email or password is wrong.")
        .await;
    b.fill("#signin-password", PASSWORD).await;
    b.screenshot("signin").await;
    b.click("#password-form button[type=submit]").await;

    // User Management: counts, the first page, "Never" for who never
    // logged in, paging.
    b.visible("#users-view").await;
    b.count("#user-list .user-row", 20).await;
    b.text_contains(
        "#user-counts",
        &format!("{users_total} Licensed Users | {users_total} Enabled | 0 Inactive"),
    )
    .await;
    b.text_contains("#users-page", &format!("Page 1 of 2 · {users_total} users"))
        .await;
    b.text_contains("#user-list", "Last login: Never").await;
    b.text_contains("#user-list", "Last login: 2027-01-15 08:00 UTC")
        .await;
    let token: Value = b
        .eval("return JSON.parse(sessionStorage.getItem('mfa-admin.session')).token;")
        .await;
    let token = token
        .as_str()
        .expect("the token in sessionStorage")
        .to_string();
    assert!(
        !b.client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains(&token)
    );
    b.screenshot("user-management").await;
    b.click("#users-next").await;
    b.text_contains("#users-page", "Page 2 of 2").await;
    b.count("#user-list .user-row", users_total - 20).await;
    b.assert_accessible().await;

    // Org settings: enforce MFA for the org, set a grace period.
    b.click("a[data-nav=org]").await;
    b.visible("#org-view").await;
    b.text_contains(
        "#sandbox-warning",
        "MFA should only be enforced in production",
    )
    .await;
    assert!(!b.checked("#toggle-enforce").await);
    b.click("#toggle-enforce").await;
    b.text_contains("#status", "MFA is now enforced for this org.")
        .await;
    b.text_contains(
        "#org-enforced-at",
        "MFA enforced since 2027-01-15 08:00 UTC",
    )
    .await;
    let o = s.get(&format!("/user/org/{org}"), &root).await;
    assert_eq!(o.ok()["isMfaEnforced"], true);
    b.fill("#grace-hours", "48").await;
    b.click("#grace-form button[type=submit]").await;
    b.text_contains("#status", "Grace period saved: 48 hours.")
        .await;
    let o = s.get(&format!("/user/org/{org}"), &root).await;
    assert_eq!(o.ok()["mfaGracePeriodHours"], 48);
    b.screenshot("org-settings").await;
    // Turning enforcement off weakens every member's sign-in: asked
    // first. Cancel keeps it; confirmed, it goes; then on again.
    b.click("#toggle-enforce").await;
    b.visible("#unenforce-confirm").await;
    b.click("#unenforce-cancel").await;
    b.gone("#unenforce-dialog").await;
    assert!(b.checked("#toggle-enforce").await);
    let o = s.get(&format!("/user/org/{org}"), &root).await;
    assert_eq!(o.ok()["isMfaEnforced"], true);
    b.click("#toggle-enforce").await;
    b.click("#unenforce-confirm").await;
    b.text_contains("#status", "MFA is no longer enforced for this org.")
        .await;
    let o = s.get(&format!("/user/org/{org}"), &root).await;
    assert_eq!(o.ok()["isMfaEnforced"], false);
    b.click("#toggle-enforce").await;
    b.text_contains("#status", "MFA is now enforced for this org.")
        .await;
    let o = s.get(&format!("/user/org/{org}"), &root).await;
    assert_eq!(o.ok()["isMfaEnforced"], true);

    // Find Valentina as the seed does: type "val".
    b.click("a[data-nav=users]").await;
    b.fill("#user-search", "val").await;
    let rows = b.count("#user-list .user-row", 1).await;
    assert!(
        rows[0]
            .text()
            .await
            .unwrap()
            .contains("Valentina Rodriguez")
    );
    b.text_contains("#users-page", "Page 1 of 1 · 1 user").await;
    // A user that is not there: said, and no form of nobody's switches.
    b.eval("location.hash = '#/users/999999'; return true;")
        .await;
    b.text_contains("#alert", "not found").await;
    b.gone("#edit-forms").await;
    b.eval("location.hash = '#/users'; return true;").await;
    b.click("#user-list .user-name").await;

    // Edit User: the org enforces MFA, so the org-level wording.
    b.visible("#edit-view").await;
    b.text_contains(
        "#edit-title",
        "User Management: Edit User: Valentina Rodriguez",
    )
    .await;
    b.text_contains("#reset-mfa", "Reset org-level MFA for this user")
        .await;
    b.text_contains("#user-mfa", "set up: Authenticator app")
        .await;
    assert!(b.checked("#toggle-active").await);
    assert!(!b.checked("#toggle-admin").await);
    assert!(b.checked("#toggle-mfa").await);
    b.text_contains(
        "#toggle-mfa-hint",
        "On: this user uses MFA when the org enforces it",
    )
    .await;
    let membership = || async {
        s.get(&format!("/user/org/{org}/user/{val_id}"), &root)
            .await
            .ok()
            .clone()
    };

    // "Enforce org-level MFA" off (with the keyboard) and on again.
    b.visible("#toggle-mfa").await.send_keys(" ").await.unwrap();
    b.text_contains(
        "#status",
        "Enforce org-level MFA turned off for Valentina Rodriguez.",
    )
    .await;
    assert!(!b.checked("#toggle-mfa").await);
    b.text_contains(
        "#toggle-mfa-hint",
        "Off: this user is opted out of MFA in this org",
    )
    .await;
    assert_eq!(membership().await["mfaOptOut"], true);
    b.click("#toggle-mfa").await;
    b.text_contains(
        "#status",
        "Enforce org-level MFA turned on for Valentina Rodriguez.",
    )
    .await;
    assert_eq!(membership().await["mfaOptOut"], false);

    // "Enable user access" off asks first; Cancel leaves it on.
    b.click("#toggle-active").await;
    b.visible("#disable-dialog").await;
    b.text_contains(
        "#disable-dialog-text",
        &format!("Valentina Rodriguez ({val}) can no longer sign in to"),
    )
    .await;
    b.click("#disable-cancel").await;
    b.gone("#disable-dialog").await;
    assert!(b.checked("#toggle-active").await);
    assert_eq!(membership().await["isActive"], true);

    // Sign out everywhere: her session ends, her factors stay.
    let hers = s.login(&val, PASSWORD).await.token;
    b.click("#sign-out-user").await;
    b.visible("#sign-out-dialog").await;
    b.text_contains("#sign-out-dialog-text", "Their password and MFA stay")
        .await;
    b.click("#sign-out-confirm").await;
    b.gone("#sign-out-dialog").await;
    b.text_contains("#status", "Valentina Rodriguez was signed out: ")
        .await;
    s.get("/user/users/me", &hers)
        .await
        .expect(401, Some("unauthorized"));
    b.text_contains("#user-mfa", "set up: Authenticator app")
        .await;

    // Reset: Cancel changes nothing; Reset MFA removes her factors.
    b.click("#reset-mfa").await;
    b.visible("#reset-dialog").await;
    b.text_contains("#reset-dialog-title", "Reset MFA for this user?")
        .await;
    b.text_contains(
        "#reset-dialog-text",
        "Once MFA is reset, the user will need to set up their multi-factor authentication again",
    )
    .await;
    b.click("#reset-cancel").await;
    b.gone("#reset-dialog").await;
    let user = s.get(&format!("/user/users/{val_id}"), &root).await;
    assert_eq!(user.ok()["mfa"]["enrolled"], true);
    b.click("#reset-mfa").await;
    b.visible("#reset-confirm").await;
    b.text_contains(
        "#reset-dialog-who",
        &format!("Valentina Rodriguez ({val}) loses the authenticator app"),
    )
    .await;
    b.screenshot("edit-user-reset").await;
    b.click("#reset-confirm").await;
    b.gone("#reset-dialog").await;
    b.text_contains("#status", "MFA was reset for Valentina Rodriguez.")
        .await;
    b.text_contains("#user-mfa", "not set up").await;
    let user = s.get(&format!("/user/users/{val_id}"), &root).await;
    assert_eq!(user.ok()["mfa"]["enrolled"], false);
    // With nothing left, the dialog does not say she loses factors.
    b.click("#reset-mfa").await;
    b.text_contains(
        "#reset-dialog-who",
        &format!("Valentina Rodriguez ({val}) has no MFA set up"),
    )
    .await;
    b.click("#reset-cancel").await;
    b.gone("#reset-dialog").await;

    // Her audit trail, then one action of it, by email.
    b.click("#user-audit-link").await;
    b.visible("#audit-view").await;
    b.text_contains("#audit-rows", "mfa_reset").await;
    b.text_contains("#audit-rows", "mfa_opt_out_removed").await;
    b.text_contains("#audit-rows", &ada).await;
    b.screenshot("audit-trail").await;
    // The action filter reads in words; its values stay the codes.
    assert_eq!(
        b.text_of("#audit-action option[value=mfa_opt_out]")
            .await
            .as_deref(),
        Some("Opted out of org MFA")
    );
    b.fill("#audit-user", &val).await;
    b.click("#audit-action option[value=mfa_opt_out]").await;
    b.click("#audit-form button[type=submit]").await;
    let rows = b.count("#audit-rows tr", 1).await;
    assert_eq!(
        rows[0].attr("data-action").await.unwrap().as_deref(),
        Some("mfa_opt_out")
    );
    b.text_contains("#audit-page", "1 event").await;
    // Where it came from: the console's own address here.
    b.text_contains("#audit-rows td.client", "127.0.0.1").await;
    // The period and the address narrow it too; a period's times are UTC,
    // as the table's are.
    let filtered = |from: &'static str, to: &'static str, client: &'static str| {
        let b = &b;
        async move {
            b.eval(&format!(
                "document.querySelector('#audit-from').value = '{from}'; \
                 document.querySelector('#audit-to').value = '{to}'; \
                 document.querySelector('#audit-client').value = '{client}';"
            ))
            .await;
            b.click("#audit-form button[type=submit]").await;
        }
    };
    filtered("2000-01-01T00:00", "2099-01-01T00:00:30", "127.0.0.1").await;
    b.count("#audit-rows tr", 1).await;
    filtered("2099-01-01T00:00", "", "").await;
    b.count("#audit-rows tr", 0).await;
    b.visible("#audit-empty").await;
    filtered("", "", "192.0.2.1").await;
    b.count("#audit-rows tr", 0).await;
    filtered("", "", "not an address").await;
    b.text_contains("#alert", "IP address: not an IP address")
        .await;
    filtered("", "", "").await;
    b.count("#audit-rows tr", 1).await;
    let events = s
        .get(
            &format!("/user/audit?userId={val_id}&action=mfa_opt_out"),
            &root,
        )
        .await;
    assert_eq!(events.ok()["total"], 1);
    // An unknown user is said in words, and the rows of the filter before
    // do not stay under it.
    b.fill("#audit-user", "nobody@example.com").await;
    b.click("#audit-form button[type=submit]").await;
    b.text_contains("#alert", "No user of this org matches")
        .await;
    b.count("#audit-rows tr", 0).await;
    assert_eq!(b.text_of("#audit-page").await.as_deref(), Some(""));
    b.click("#audit-clear").await;

    // Export as CSV: every user, every page. One name holds what a
    // spreadsheet would run as formulas, where the list separator is a
    // comma and where it is a semicolon.
    let (yuki_id, _) = others.last().expect("Yuki");
    let renamed = s
        .put(
            &format!("/user/users/{yuki_id}"),
            &root,
            json!({"firstName": "=Yuki", "lastName": "Tanaka;=1+1;\"@x"}),
        )
        .await;
    renamed.ok();
    b.click("a[data-nav=users]").await;
    b.fill("#user-search", "").await;
    b.text_contains("#users-page", "Page 1 of 2").await;
    b.click("#export-csv").await;
    b.text_contains("#status", &format!("Exported {users_total} users as CSV."))
        .await;
    let csv_path = b.downloads.join(format!("users-org-{org}.csv"));
    let csv = b
        .until("the CSV download", || async {
            std::fs::read_to_string(&csv_path).ok()
        })
        .await;
    // A byte-order mark first, so that Excel reads the file as UTF-8.
    let csv = csv
        .strip_prefix('\u{feff}')
        .unwrap_or_else(|| panic!("no byte-order mark: {csv:?}"))
        .to_string();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "id,firstName,lastName,email,lastLoginAt,mfaEnrolled,mfaMethods,active,admin,mfaOptOut"
    );
    assert_eq!(lines.len(), 1 + users_total, "{csv}");
    let ada_user = s.get(&format!("/user/users/{ada_id}"), &root).await;
    let ada_login = ada_user.ok()["lastLoginAt"].as_str().unwrap().to_string();
    let ada_line = format!("{ada_id},Ada,Lovelace,{ada},{ada_login},no,,yes,yes,no");
    assert!(lines.contains(&ada_line.as_str()), "{csv}");
    assert!(
        csv.contains(
            ",'=Yuki,\"Tanaka;'=1+1;'\"\"@x\",yuki.tanaka@example.com,Never,no,,yes,no,no"
        )
    );

    b.assert_accessible().await;

    // A phone's width: no sideways scrolling.
    b.viewport(375, 812).await;
    b.visible("#users-view").await;
    b.assert_no_sideways_scrolling().await;
    b.screenshot("user-management-phone").await;
    b.fill("#user-search", "val").await;
    b.count("#user-list .user-row", 1).await;

    // The audit trail on a phone: each event a block, every cell about as
    // wide as the screen, nothing off to the side.
    b.click("a[data-nav=audit]").await;
    b.visible("#audit-view").await;
    b.fill("#audit-user", &val).await;
    b.click("#audit-form button[type=submit]").await;
    b.text_contains("#audit-rows", "MFA reset").await;
    b.assert_no_sideways_scrolling().await;
    let layout = b
        .eval(
            "const wrap = document.querySelector('#audit-view .table-wrap'); \
             const cells = [...document.querySelectorAll('#audit-rows td')]; \
             return [wrap.scrollWidth - wrap.clientWidth, \
                     Math.min(...cells.map((td) => td.getBoundingClientRect().width))];",
        )
        .await;
    assert!(layout[0].as_f64().unwrap() <= 0.0, "{layout}");
    assert!(layout[1].as_f64().unwrap() >= 280.0, "{layout}");
    b.screenshot("audit-trail-phone").await;
    b.viewport(1280, 900).await;

    // Sign out: the token is revoked and gone from the browser, and so is
    // what the page showed: rows, the search, the filters, the address.
    b.click("#sign-out").await;
    b.visible("#signin-view").await;
    b.text_contains("#status", "You are signed out.").await;
    assert_eq!(b.eval("return sessionStorage.length;").await, json!(0));
    s.get("/user/users/me", &token)
        .await
        .expect(401, Some("unauthorized"));
    let left = b
        .eval(
            "return [document.querySelectorAll('#user-list li, #audit-rows tr').length, \
                     document.querySelector('#user-search').value, \
                     document.querySelector('#audit-user').value, \
                     document.querySelector('#audit-action').value, \
                     document.querySelector('#edit-email').value, \
                     document.querySelector('#signin-email').value, \
                     location.hash];",
        )
        .await;
    assert_eq!(left, json!([0, "", "", "", "", "", ""]));
    // The next person in this tab starts afresh at User Management.
    b.fill("#signin-email", &ada).await;
    b.fill("#signin-password", PASSWORD).await;
    b.click("#password-form button[type=submit]").await;
    b.visible("#users-view").await;
    assert_eq!(
        b.eval("return document.querySelector('#user-search').value;")
            .await,
        json!("")
    );
    b.count("#user-list .user-row", 20).await;

    // A leaver: removed from the org after a question, Cancel first.
    let (tomas_id, _) = OTHERS
        .iter()
        .zip(&others)
        .find(|((first, _), _)| *first == "Tomas")
        .map(|(_, person)| person.clone())
        .expect("Tomas");
    b.eval(&format!(
        "location.hash = '#/users/{tomas_id}'; return true;"
    ))
    .await;
    b.text_contains("#edit-title", "Edit User: Tomas Novak")
        .await;
    b.click("#remove-member").await;
    b.text_contains(
        "#remove-dialog-text",
        "can no longer sign in to Default org",
    )
    .await;
    b.click("#remove-cancel").await;
    b.gone("#remove-dialog").await;
    let member = format!("/user/org/{org}/user/{tomas_id}");
    s.get(&member, &root).await.expect(200, None);
    b.click("#remove-member").await;
    b.click("#remove-confirm").await;
    b.text_contains("#status", "Tomas Novak was removed from this org.")
        .await;
    b.visible("#users-view").await;
    s.get(&member, &root).await.expect(404, Some("not_found"));
    // One's own account offers no removal.
    b.eval(&format!("location.hash = '#/users/{ada_id}'; return true;"))
        .await;
    b.text_contains("#edit-title", "Edit User: Ada Lovelace")
        .await;
    b.gone("#remove-member").await;
    b.close().await;
}

#[tokio::test]
async fn account_page_enrolls_an_authenticator_from_the_key_on_the_page() {
    let _one = ONE_BROWSER.lock().await;
    let s = TestServer::sqlite().await;
    let Some(b) = Browser::start(&s).await else {
        return;
    };
    let root = s.root().await;
    let (uma_id, uma) = person(&s, &root, "Uma", "Tester", false).await;
    s.enforce(&root, true).await;

    // Sign in: the org enforces MFA and Uma has no factor, so setup.
    b.goto("/account").await;
    b.fill("#signin-email", &uma).await;
    b.fill("#signin-password", PASSWORD).await;
    b.click("#password-form button[type=submit]").await;
    b.visible("#setup-view").await;
    let qr = b.visible("#setup-authenticator img.qr").await;
    let src = qr.attr("src").await.unwrap().unwrap();
    assert!(src.starts_with("data:image/svg+xml;base64,"), "{src}");
    let secret = key_on_page(&b, "#setup-authenticator .secret").await;
    // The same key behind the link an app on this device opens.
    let link = b
        .visible("#setup-authenticator a[href^='otpauth:']")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let uri = mfa_totp::OtpauthUri::parse(&link).expect("an otpauth URI");
    assert_eq!(uri.secret, secret, "{link}");
    b.assert_accessible().await;
    b.screenshot("account-setup").await;

    // A wrong code is refused in words; the computed one enrolls.
    b.fill("#setup-authenticator input.code", "000000").await;
    b.click("#setup-authenticator button[type=submit]").await;
    b.text_contains("#alert", "The code is not valid.").await;
    // Typed as the app shows it, with a space: sent as its digits.
    let code = s.totp(&secret);
    b.fill(
        "#setup-authenticator input.code",
        &format!("{} {}", &code[..3], &code[3..]),
    )
    .await;
    b.click("#setup-authenticator button[type=submit]").await;
    b.visible("#account-view").await;
    // A factor and no recovery codes: the page asks for them.
    b.visible("#recovery-missing").await;
    b.text_contains("#status-sign-in", "asks for a second factor")
        .await;
    // The key of the setup does not stay in the hidden sign-in view.
    assert_eq!(
        b.eval("return document.querySelector('#signin-view').textContent.includes('Or enter this key');")
            .await,
        json!(false)
    );
    assert_eq!(
        b.text_contains("#status-authenticator", "Verified").await,
        "Verified"
    );
    b.text_contains("#status-email", "Not set up").await;

    // Email codes: the code from the mail.
    b.click("#enroll-email button").await;
    b.text_contains("#enroll-email", "A code was sent to").await;
    let code = s.last_code(&uma);
    b.fill("#enroll-email input.code", &code).await;
    b.click("#enroll-email button[type=submit]").await;
    b.text_contains("#status", "Email codes verified.").await;
    b.text_contains("#status-email", "Verified").await;

    // Recovery codes, shown once.
    b.click("#generate-recovery").await;
    b.count("#recovery-codes li", 10).await;
    b.text_contains("#status-recovery", "Available").await;
    assert_eq!(
        b.eval("return document.activeElement.id;").await,
        json!("recovery-codes"),
        "the keyboard focus is on the codes"
    );
    b.gone("#recovery-missing").await;
    b.visible("#copy-recovery").await;
    b.visible("#download-recovery").await;
    b.assert_accessible().await;
    b.screenshot("account").await;

    // Personal opt-in.
    b.click("#toggle-opt-in").await;
    b.text_contains(
        "#status",
        "From your next sign-in, MFA is asked every time.",
    )
    .await;
    let user = s.get(&format!("/user/users/{uma_id}"), &root).await;
    assert_eq!(user.ok()["mfaOptIn"], true);

    // A session elsewhere ends; this one goes on.
    let elsewhere = s.login(&uma, PASSWORD).await.token;
    b.click("#sign-out-others").await;
    b.text_contains("#status", "other session").await;
    b.text_contains("#status", "This one goes on.").await;
    s.get("/user/users/me", &elsewhere)
        .await
        .expect(401, Some("unauthorized"));
    b.text_contains("#status-email", "Verified").await;

    // Sign out and in again: now a challenge, answered with the app.
    b.click("#sign-out").await;
    b.visible("#signin-view").await;
    b.fill("#signin-email", &uma).await;
    b.fill("#signin-password", PASSWORD).await;
    b.click("#password-form button[type=submit]").await;
    b.visible("#challenge-view").await;
    for method in ["authenticator", "email", "recovery"] {
        b.visible(&format!("#challenge-method-{method}")).await;
    }
    s.advance(30);
    b.fill("#challenge-code", &s.totp(&secret)).await;
    b.click("#challenge-form button[type=submit]").await;
    b.visible("#account-view").await;
    b.text_contains("#status-authenticator", "Verified").await;

    // Self reset through its pop-up, then a new authenticator on the full
    // session.
    b.click("#self-reset").await;
    b.click("#self-reset-confirm").await;
    b.gone("#self-reset-dialog").await;
    b.text_contains("#status", "Your authenticator was reset.")
        .await;
    b.text_contains("#status-authenticator", "Not set up").await;
    b.click("#start-authenticator").await;
    let secret = key_on_page(&b, "#enroll-authenticator .secret").await;
    s.advance(30);
    b.fill("#enroll-authenticator input.code", &s.totp(&secret))
        .await;
    b.click("#enroll-authenticator button[type=submit]").await;
    b.text_contains("#status", "Authenticator app verified.")
        .await;
    b.text_contains("#status-authenticator", "Verified").await;
    let details = s
        .get(
            "/oauth/users/mfaDetails",
            &s.login(&uma, PASSWORD).await.token,
        )
        .await;
    // A partial token (Uma owes MFA) may read the status.
    assert_eq!(details.ok()["details"]["AUTHENTICATOR"]["verified"], true);

    // Not an admin: no admin console link, and the console says so.
    assert!(
        !b.visible("#who")
            .await
            .text()
            .await
            .unwrap()
            .contains("Admin console")
    );
    b.goto("/admin").await;
    b.text_contains("#forbidden-view", "not an administrator of this org")
        .await;
    assert!(
        !b.client
            .find(Locator::Css("#admin-nav"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    b.close().await;
}

/// A user with an authenticator signs in where no MFA is owed: the session
/// verified no factor, so new recovery codes answer `mfa_required`, and
/// the page asks for a code on the session (here a recovery code), then
/// carries out what was asked: the new codes are shown without a second
/// click. "Cancel" of the challenge goes back to the page, nothing done.
#[tokio::test]
async fn account_page_asks_for_a_code_before_changing_factors() {
    let _one = ONE_BROWSER.lock().await;
    let s = TestServer::sqlite().await;
    let Some(b) = Browser::start(&s).await else {
        return;
    };
    let root = s.root().await;
    let (_, ada) = person(&s, &root, "Ada", "Stepup", false).await;
    let enrolled = s.login(&ada, PASSWORD).await.token;
    let _secret = s.enroll_authenticator(&enrolled).await;
    let codes = s
        .post("/user/users/mfa/recoveryCodes", &enrolled, json!(null))
        .await;
    let recovery = codes.ok()["codes"][0].as_str().unwrap().to_string();

    b.goto("/account").await;
    b.fill("#signin-email", &ada).await;
    b.fill("#signin-password", PASSWORD).await;
    b.click("#password-form button[type=submit]").await;
    b.visible("#account-view").await;
    b.text_contains("#status-authenticator", "Verified").await;

    // Cancel: back to the page, nothing changed, said in words.
    b.click("#generate-recovery").await;
    b.visible("#challenge-view").await;
    b.text_contains("#challenge-view", "Cancel").await;
    b.click("#challenge-view button[data-action=restart-signin]")
        .await;
    b.visible("#account-view").await;
    // One plain sentence, no lead.
    assert_eq!(
        b.text_of("#alert").await.as_deref(),
        Some("Nothing was changed.")
    );
    assert_eq!(b.eval("return sessionStorage.length;").await, json!(1));

    // Left through the URL instead: cancelled too, and the button is free.
    b.click("#generate-recovery").await;
    b.visible("#challenge-view").await;
    b.eval("location.hash = '#elsewhere';").await;
    b.visible("#account-view").await;
    b.text_contains("#alert", "Nothing was changed.").await;
    b.until("the button to be free", || async {
        let free = b
            .eval(
                "const x = document.querySelector('#generate-recovery'); \
                 return !x.disabled && !x.hasAttribute('aria-busy');",
            )
            .await;
        (free == json!(true)).then_some(())
    })
    .await;

    // The session ends while the challenge is shown: signed out, in words.
    b.click("#generate-recovery").await;
    b.visible("#challenge-view").await;
    let token = b
        .eval("return JSON.parse(sessionStorage.getItem('mfa-admin.session')).token;")
        .await;
    s.call("POST", "/user/auth/logout", token.as_str(), None)
        .await
        .expect(204, None);
    b.fill("#challenge-code", "000000").await;
    b.click("#challenge-form button[type=submit]").await;
    b.visible("#password-form").await;
    b.text_contains("#alert", "Your session has ended.").await;
    b.gone("#challenge-view").await;
    assert_eq!(b.eval("return sessionStorage.length;").await, json!(0));
    b.gone("#who").await;

    b.fill("#signin-email", &ada).await;
    b.fill("#signin-password", PASSWORD).await;
    b.click("#password-form button[type=submit]").await;
    b.visible("#account-view").await;
    b.click("#generate-recovery").await;
    b.visible("#challenge-view").await;
    b.text_contains("#status", "Verify one to go on").await;
    // In a step-up's words, not a sign-in's (an audit read "Your password
    // was right" in the middle of an admin action).
    b.text_contains("#signin-title", "Confirm it is you").await;
    b.text_contains("#challenge-intro", "has not verified a second factor")
        .await;
    b.visible("#challenge-method-authenticator").await;
    b.click("#challenge-method-recovery").await;
    b.fill("#challenge-code", &recovery).await;
    b.click("#challenge-form button[type=submit]").await;
    b.visible("#account-view").await;
    let shown = b.count("#recovery-codes li", 10).await;
    let first = shown[0].text().await.unwrap();
    b.text_contains("#status", "10 new recovery codes").await;
    assert_ne!(first, recovery);
    // The next action on the session needs no new challenge.
    b.click("#self-reset").await;
    b.click("#self-reset-confirm").await;
    b.text_contains("#status", "Your authenticator was reset.")
        .await;
    b.close().await;
}

/// The own email address and password on the account page, the password
/// change through the challenge of a session that verified no factor, and
/// the confirmation of the new address from the sign-in view.
#[tokio::test]
async fn account_page_changes_email_and_password_and_confirms_the_new_address() {
    let _one = ONE_BROWSER.lock().await;
    let s = TestServer::sqlite().await;
    let Some(b) = Browser::start(&s).await else {
        return;
    };
    let root = s.root().await;
    let (ada_id, ada) = person(&s, &root, "Ada", "Mover", false).await;
    let secret = s
        .enroll_authenticator(&s.login(&ada, PASSWORD).await.token)
        .await;
    let new_password = "a brand new long password";
    let new_email = "ada.moved@example.com";

    b.goto("/account").await;
    b.fill("#signin-email", &ada).await;
    b.fill("#signin-password", PASSWORD).await;
    b.click("#password-form button[type=submit]").await;
    b.visible("#account-view").await;
    b.text_contains("#my-email", &ada).await;

    // Two different new passwords: said, nothing sent.
    b.fill("#new-password", new_password).await;
    b.fill("#new-password-again", "something else entirely")
        .await;
    b.fill("#password-current", PASSWORD).await;
    b.click("#password-change-form button[type=submit]").await;
    b.text_contains("#alert", "The two new passwords differ.")
        .await;
    // The session verified no factor: the challenge, then the change is
    // made without asking again.
    b.fill("#new-password-again", new_password).await;
    b.fill("#password-current", PASSWORD).await;
    b.click("#password-change-form button[type=submit]").await;
    b.visible("#challenge-view").await;
    b.fill("#challenge-code", &s.totp(&secret)).await;
    b.click("#challenge-form button[type=submit]").await;
    b.visible("#account-view").await;
    b.text_contains("#status", "Your password was changed.")
        .await;
    s.login(&ada, new_password).await;

    // A wrong current password, then a new email address: pending until
    // the token is entered.
    b.fill("#new-email", new_email).await;
    b.fill("#email-current-password", "not my password").await;
    b.click("#email-form button[type=submit]").await;
    b.text_contains("#alert", "Your current password is wrong.")
        .await;
    b.fill("#new-email", new_email).await;
    b.fill("#email-current-password", new_password).await;
    b.click("#email-form button[type=submit]").await;
    b.text_contains(
        "#status",
        &format!("A confirmation token was sent to {new_email}"),
    )
    .await;
    b.text_contains("#email-pending", &format!("Pending: {new_email}"))
        .await;
    let first_token = s.last_token(new_email);
    s.advance(31);
    b.click("#resend-my-email").await;
    b.text_contains("#status", &format!("A new token was sent to {new_email}"))
        .await;
    let token = s.last_token(new_email);
    assert_ne!(token, first_token);
    b.assert_accessible().await;
    // A reload still says so: the page learns it from the server
    // (`pendingEmail` of /user/users/me), not from its own memory.
    b.goto("/account").await;
    b.visible("#account-view").await;
    b.text_contains("#email-pending", &format!("Pending: {new_email}"))
        .await;

    // Signed out, from the sign-in view: a used-up token, then the right one.
    b.click("#sign-out").await;
    b.visible("#signin-view").await;
    b.click("#signin-more a").await;
    b.visible("#confirm-email-view").await;
    b.text_contains("#confirm-back", "Back to sign-in").await;
    b.fill("#confirm-token", &first_token).await;
    b.click("#confirm-email-form button[type=submit]").await;
    b.text_contains("#alert", "This token is not valid, so no address changed.")
        .await;
    b.fill("#confirm-token", &token).await;
    b.click("#confirm-email-form button[type=submit]").await;
    b.text_contains("#status", "Your new email address is confirmed")
        .await;
    assert_eq!(b.text_of("#alert").await.as_deref(), Some(""));
    let user = s.get(&format!("/user/users/{ada_id}"), &root).await;
    assert_eq!(user.ok()["email"], new_email);
    b.screenshot("confirm-email").await;
    b.fill("#confirm-token", &token).await;
    b.click("#confirm-email-form button[type=submit]").await;
    b.text_contains("#alert", "This token is not valid").await;
    b.assert_accessible().await;

    b.click("#confirm-back").await;
    b.visible("#password-form").await;
    b.fill("#signin-email", new_email).await;
    b.fill("#signin-password", new_password).await;
    b.click("#password-form button[type=submit]").await;
    b.visible("#account-view").await;
    b.text_contains("#my-email", new_email).await;

    // Confirmed while signed in: the server ends every session, so the page
    // signs out at once, says so, and offers the new address for sign-in.
    let newer_email = "ada.again@example.com";
    b.fill("#new-email", newer_email).await;
    b.fill("#email-current-password", new_password).await;
    b.click("#email-form button[type=submit]").await;
    // A new session, which verified no factor: the challenge first.
    b.visible("#challenge-view").await;
    b.fill("#challenge-code", &s.totp(&secret)).await;
    b.click("#challenge-form button[type=submit]").await;
    b.text_contains("#email-pending", &format!("Pending: {newer_email}"))
        .await;
    // From the mail's link (with MFA_PUBLIC_URL): the token is filled in
    // from the fragment, and taken out of the address bar.
    let newer_token = s.last_token(newer_email);
    b.goto(&format!("/account#confirm-email={newer_token}"))
        .await;
    b.visible("#confirm-email-view").await;
    assert_eq!(
        b.eval("return document.querySelector('#confirm-token').value;")
            .await,
        json!(newer_token)
    );
    assert_eq!(
        b.eval("return location.hash;").await,
        json!("#confirm-email")
    );
    b.click("#confirm-email-form button[type=submit]").await;
    b.text_contains(
        "#status",
        &format!("Your new email address is confirmed. This ended your sessions, this one too: sign in with {newer_email}"),
    )
    .await;
    assert_eq!(b.text_of("#alert").await.as_deref(), Some(""));
    assert_eq!(b.eval("return sessionStorage.length;").await, json!(0));
    b.gone("#who").await;
    assert_eq!(
        b.eval("return document.querySelector('#email-pending-text').textContent;")
            .await,
        json!("")
    );
    b.text_contains("#confirm-back", "Back to sign-in").await;
    b.click("#confirm-back").await;
    b.visible("#password-form").await;
    assert_eq!(
        b.eval("return document.querySelector('#signin-email').value;")
            .await,
        json!(newer_email)
    );
    b.fill("#signin-password", new_password).await;
    b.click("#password-form button[type=submit]").await;
    b.visible("#account-view").await;
    b.text_contains("#my-email", newer_email).await;

    // Another account's token, from a link someone sent: it confirms that
    // account's change, and this page says so and stays signed in (it told
    // the user their own sessions had ended, and signed out in the tab only).
    let (bob_id, bob) = person(&s, &root, "Bob", "Sender", false).await;
    let bob_token = s.login(&bob, PASSWORD).await.token;
    s.put(
        &format!("/user/users/{bob_id}"),
        &bob_token,
        json!({"email": "bob.new@example.com", "currentPassword": PASSWORD}),
    )
    .await
    .ok();
    let bobs = s.last_token("bob.new@example.com");
    b.goto(&format!("/account#confirm-email={bobs}")).await;
    b.visible("#confirm-email-view").await;
    b.click("#confirm-email-form button[type=submit]").await;
    b.text_contains("#status", "another account, not yours")
        .await;
    assert_eq!(b.eval("return sessionStorage.length;").await, json!(1));
    b.text_contains("#confirm-back", "Back to my account").await;
    b.click("#confirm-back").await;
    b.visible("#account-view").await;
    b.text_contains("#my-email", newer_email).await;

    // A session that ended for another reason (a logout elsewhere, an idle
    // timeout) is not taken for the change's doing: the page does not say
    // that the change ended it.
    let token = b
        .eval("return JSON.parse(sessionStorage.getItem(sessionStorage.key(0))).token;")
        .await;
    let token = token.as_str().expect("the tab's token").to_string();
    s.call("POST", "/user/auth/logout", Some(&token), None)
        .await
        .expect(204, None);
    let bob_again = s.login("bob.new@example.com", PASSWORD).await.token;
    s.put(
        &format!("/user/users/{bob_id}"),
        &bob_again,
        json!({"email": "bob.third@example.com", "currentPassword": PASSWORD}),
    )
    .await
    .ok();
    let third = s.last_token("bob.third@example.com");
    b.goto(&format!("/account#confirm-email={third}")).await;
    b.visible("#confirm-email-view").await;
    b.click("#confirm-email-form button[type=submit]").await;
    b.text_contains(
        "#status",
        "Your new email address is confirmed: sign in with it",
    )
    .await;
    assert_eq!(b.eval("return sessionStorage.length;").await, json!(0));
    b.close().await;
}

/// Swagger UI works under its Content-Security-Policy, which lets no
/// script but its own files run on the console's origin.
#[tokio::test]
async fn swagger_ui_works_under_its_policy() {
    let _one = ONE_BROWSER.lock().await;
    let s = TestServer::sqlite().await;
    let Some(b) = Browser::start(&s).await else {
        return;
    };
    b.goto("/swagger-ui/").await;
    b.text_contains(".swagger-ui .info .title", "MFA Server")
        .await;
    b.text_contains(".swagger-ui", "/user/auth/login").await;
    b.close().await;
}

/// "Start over" at a sign-in's challenge ends the password step's session
/// on the server too: kept, it could enroll a factor for ten minutes.
#[tokio::test]
async fn starting_a_sign_in_over_ends_its_session() {
    let _one = ONE_BROWSER.lock().await;
    let s = TestServer::sqlite().await;
    let Some(b) = Browser::start(&s).await else {
        return;
    };
    let root = s.root().await;
    let (_, ada) = person(&s, &root, "Ada", "Restart", false).await;
    let enrolled = s.login(&ada, PASSWORD).await.token;
    s.enroll_authenticator(&enrolled).await;
    s.put("/user/org/mfa", &root, json!({"isMfaEnforced": true}))
        .await
        .expect(204, None);
    b.goto("/account").await;
    b.eval(
        "const f = window.fetch; window.fetch = (u, o) => f(u, o).then((r) => { \
           if (String(u).endsWith('/user/auth/login')) \
             r.clone().json().then((j) => { window.partialToken = j.token; }); \
           return r; });",
    )
    .await;
    b.fill("#signin-email", &ada).await;
    b.fill("#signin-password", PASSWORD).await;
    b.click("#password-form button[type=submit]").await;
    b.visible("#challenge-view").await;
    let partial = b
        .until("the login's token", || async {
            b.eval("return window.partialToken || null;")
                .await
                .as_str()
                .map(String::from)
        })
        .await;
    s.get("/user/users/me", &partial).await.ok();
    b.click("#challenge-view button[data-action=restart-signin]")
        .await;
    b.visible("#password-form").await;
    b.until("the abandoned session to end", || async {
        (s.get("/user/users/me", &partial).await.status == 401).then_some(())
    })
    .await;
    b.close().await;
}

/// The console: sign-in refusals in words, Create User, an email change
/// pending with its resend, a superadmin's toggles refused once in words,
/// an admin's own MFA reset and own Admin right, and signing out while the
/// server cannot be reached.
#[tokio::test]
async fn admin_console_creates_users_and_guards_the_admins_own_account() {
    let _one = ONE_BROWSER.lock().await;
    let s = TestServer::sqlite().await;
    let Some(b) = Browser::start(&s).await else {
        return;
    };
    let root = s.root().await;
    let root_id = s.get("/user/users/me", &root).await.ok()["id"]
        .as_i64()
        .unwrap();
    let (ada_id, ada) = person(&s, &root, "Ada", "Admin", true).await;
    person(&s, &root, "Bea", "Backup", true).await;
    let secret = s
        .enroll_authenticator(&s.login(&ada, PASSWORD).await.token)
        .await;

    // Not a member of org 999: said once, and why.
    b.goto("/admin").await;
    b.fill("#signin-email", &ada).await;
    b.fill("#signin-password", PASSWORD).await;
    b.click("#password-form summary").await;
    b.fill("#signin-org", "999").await;
    b.click("#password-form button[type=submit]").await;
    let alert = b
        .text_contains(
            "#alert",
            "You cannot sign in to org 999: your account is not a member of that org",
        )
        .await;
    assert!(!alert.contains("not allowed"), "{alert}");
    // The password does not stay in the field.
    assert_eq!(
        b.eval("return document.querySelector('#signin-password').value;")
            .await,
        json!("")
    );
    // A new submit clears the old error, also one the browser stops.
    b.fill("#signin-org", "-1").await;
    b.fill("#signin-password", PASSWORD).await;
    b.click("#password-form button[type=submit]").await;
    b.until("the old error to go", || async {
        b.text_of("#alert").await?.is_empty().then_some(())
    })
    .await;
    b.fill("#signin-org", "").await;
    b.click("#password-form button[type=submit]").await;
    b.visible("#users-view").await;

    // Create User.
    b.click("#create-user").await;
    b.visible("#create-view").await;
    b.assert_accessible().await;
    b.fill("#create-first", "Zoë").await;
    b.fill("#create-last", "Øyvindsen").await;
    b.fill("#create-email", "zoe@example.com").await;
    b.fill("#create-password", "a long first password").await;
    b.screenshot("create-user").await;
    b.click("#create-form button[type=submit]").await;
    // Ada has a factor and this session verified none: an admin's change
    // asks for a code first, then is carried out.
    b.visible("#challenge-view").await;
    b.fill("#challenge-code", &s.totp(&secret)).await;
    b.click("#challenge-form button[type=submit]").await;
    b.visible("#edit-view").await;
    b.text_contains("#status", "Zoë Øyvindsen was created.")
        .await;
    b.text_contains("#edit-title", "Edit User: Zoë Øyvindsen")
        .await;
    assert!(!b.checked("#toggle-admin").await);
    s.login("zoe@example.com", "a long first password").await;
    // The same address again: refused in words.
    b.click("#edit-view a[href='#/users']").await;
    b.click("#create-user").await;
    b.fill("#create-first", "Zoe").await;
    b.fill("#create-last", "Again").await;
    b.fill("#create-email", "zoe@example.com").await;
    b.fill("#create-password", "a long first password").await;
    b.click("#create-form button[type=submit]").await;
    b.text_contains(
        "#alert",
        "A user with the email zoe@example.com exists already.",
    )
    .await;

    b.click("#create-view a[href='#/users']").await;

    // Her email changed by the admin: pending, and the mail sent again.
    b.fill("#user-search", "zoe").await;
    b.count("#user-list .user-row", 1).await;
    b.click("#user-list .user-name").await;
    b.visible("#edit-view").await;
    // The server's refusals in the form's words; an address keeps its case.
    assert_eq!(
        b.eval("return document.querySelector('#edit-first').maxLength;")
            .await,
        json!(100)
    );
    b.fill("#edit-first", "   ").await;
    b.click("#profile-form button[type=submit]").await;
    b.text_contains("#alert", "First name must not be empty.")
        .await;
    b.fill("#edit-first", "Zoë").await;
    b.fill("#edit-email", &ada).await;
    b.click("#profile-form button[type=submit]").await;
    let alert = b
        .text_contains("#alert", "belongs to another account")
        .await;
    assert!(alert.starts_with(&format!("{ada} belongs")), "{alert}");
    b.fill("#edit-email", "zoe.new@example.com").await;
    b.click("#profile-form button[type=submit]").await;
    b.text_contains("#status", "The email change is pending")
        .await;
    b.text_contains(
        "#edit-email-pending",
        "Pending: the email address changes to zoe.new@example.com",
    )
    .await;
    let first = s.last_token("zoe.new@example.com");
    s.advance(31);
    b.click("#resend-email-change").await;
    b.text_contains(
        "#status",
        "The confirmation was sent again to zoe.new@example.com",
    )
    .await;
    assert_ne!(s.last_token("zoe.new@example.com"), first);
    // Opened again, Edit User still says so (from `pendingEmail`).
    b.goto("/admin#/users").await;
    b.fill("#user-search", "zoe").await;
    b.count("#user-list .user-row", 1).await;
    b.click("#user-list .user-name").await;
    b.visible("#edit-view").await;
    b.text_contains(
        "#edit-email-pending",
        "Pending: the email address changes to zoe.new@example.com",
    )
    .await;

    // The superadmin's toggles: refused, once, in words.
    b.goto(&format!("/admin#/users/{root_id}")).await;
    b.visible("#edit-view").await;
    b.text_contains("#edit-title", "Edit User").await;
    b.until("the toggles", || async {
        b.client
            .find(Locator::Css("#toggle-all-access"))
            .await
            .ok()?
            .is_enabled()
            .await
            .ok()?
            .then_some(())
    })
    .await;
    b.click("#toggle-all-access").await;
    let alert = b
        .text_contains("#alert", "only a superadmin can change their account")
        .await;
    assert_eq!(alert.matches("not allowed").count(), 0, "{alert}");

    // Her own MFA, from a new session that verified no factor: the pop-up
    // warns, and the sign-in view says it was done.
    b.click("#sign-out").await;
    b.visible("#password-form").await;
    b.fill("#signin-email", &ada).await;
    b.fill("#signin-password", PASSWORD).await;
    b.click("#password-form button[type=submit]").await;
    b.visible("#users-view").await;
    s.advance(30);
    b.goto(&format!("/admin#/users/{ada_id}")).await;
    b.text_contains("#user-mfa", "set up: Authenticator app")
        .await;
    b.click("#reset-mfa").await;
    b.text_contains("#reset-dialog-self", "you will have to sign in again")
        .await;
    b.click("#reset-confirm").await;
    // Her session verified no factor: the challenge first, then the reset.
    b.visible("#challenge-view").await;
    b.fill("#challenge-code", &s.totp(&secret)).await;
    b.click("#challenge-form button[type=submit]").await;
    b.text_contains("#status", "Your MFA was reset").await;
    b.visible("#password-form").await;
    assert_eq!(b.eval("return sessionStorage.length;").await, json!(0));
    let user = s.get(&format!("/user/users/{ada_id}"), &root).await;
    assert_eq!(user.ok()["mfa"]["enrolled"], false);

    // Her own Admin right: asked first; then the console as a non-admin sees it.
    b.fill("#signin-email", &ada).await;
    b.fill("#signin-password", PASSWORD).await;
    b.click("#password-form button[type=submit]").await;
    b.visible("#users-view").await;
    b.goto(&format!("/admin#/users/{ada_id}")).await;
    assert!(b.checked("#toggle-admin").await);
    b.click("#toggle-admin").await;
    b.text_contains("#self-admin-text", "You will lose access to this console")
        .await;
    b.click("#self-admin-cancel").await;
    b.gone("#self-admin-dialog").await;
    assert!(b.checked("#toggle-admin").await);
    let membership = s
        .get(&format!("/user/org/{}/user/{ada_id}", s.root_org), &root)
        .await;
    assert_eq!(membership.ok()["isAdmin"], true);
    b.click("#toggle-admin").await;
    b.click("#self-admin-confirm").await;
    b.visible("#forbidden-view").await;
    b.text_contains("#status", "Your Admin right in this org was removed")
        .await;
    b.gone("#admin-nav").await;
    // Nothing of the org stays in the hidden views.
    assert_eq!(
        b.eval(
            "return [document.querySelectorAll('#user-list li').length, \
             document.querySelector('#user-counts').textContent, \
             document.querySelector('#edit-first').value, \
             document.querySelector('#edit-email').value];"
        )
        .await,
        json!([0, "", "", ""])
    );
    let membership = s
        .get(&format!("/user/org/{}/user/{ada_id}", s.root_org), &root)
        .await;
    assert_eq!(membership.ok()["isAdmin"], false);

    // Signing out while the server cannot be reached: gone from the tab.
    b.eval("window.fetch = () => Promise.reject(new TypeError('offline'));")
        .await;
    b.click("#sign-out").await;
    b.visible("#signin-view").await;
    b.text_contains("#alert", "You are signed out in this tab")
        .await;
    assert_eq!(b.eval("return sessionStorage.length;").await, json!(0));
    b.gone("#who").await;
    b.close().await;
}

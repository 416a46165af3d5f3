//! Runs every example to its end, with its input scripted, so that
//! `cargo test --workspace` (and so CI) executes them all.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mfa_totp::{Secret, TotpParams};

/// How long an example may take.
const LIMIT: Duration = Duration::from_secs(120);

/// Wait for the child, killing it after [`LIMIT`].
fn wait_bounded(child: &mut Child, name: &str) -> ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Run an example without input; its stdout.
fn run(name: &str, bin: &str) -> String {
    let mut child = Command::new(bin)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut child, name);
    let stdout = reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    assert!(status.success(), "{name}: {status}\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn embed_memory() {
    let out = run("embed-memory", env!("CARGO_BIN_EXE_embed-memory"));
    for line in [
        "MFA enforced on org",
        "enrollment started: otpauth://totp/Acme:alice%40example.com?secret=",
        "authenticator enrolled",
        "challenge passed",
        "replayed code refused",
        "email codes enrolled (a***@example.com); 10 recovery codes shown once",
        "signed in with an email code",
        "signed in with a recovery code",
        "MFA reset; next login: setup_required",
        "purge: ",
    ] {
        assert!(out.contains(line), "{line:?} not in:\n{out}");
    }
}

#[test]
fn embed_sqlite_actix() {
    let out = run(
        "embed-sqlite-actix",
        env!("CARGO_BIN_EXE_embed-sqlite-actix"),
    );
    assert!(out.contains("POST /login -> 200"), "{out}");
    assert!(out.contains("\"mfa\":\"none\""), "{out}");
    assert!(out.contains("GET /me -> 200"), "{out}");
    assert!(out.contains("GET /me with a bad token -> 401"), "{out}");
    assert!(out.trim_end().ends_with("ok"), "{out}");
}

/// The terminal enrollment: read the secret it prints, answer first with a
/// wrong code, then with the current one.
#[test]
fn terminal_enroll() {
    let bin = env!("CARGO_BIN_EXE_terminal-enroll");
    let mut child = Command::new(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start terminal-enroll");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let secret = loop {
        let line = rx
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("no secret printed: {seen:?}"));
        if let Some(s) = line.strip_prefix("Secret: ") {
            break Secret::from_base32(s.trim()).expect("a base32 secret");
        }
        seen.push(line);
    };
    assert!(
        seen.iter().any(|l| l.contains('█')),
        "a QR code is drawn: {seen:?}"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let params = TotpParams::default();
    let window: Vec<String> = (0..3)
        .map(|i| mfa_totp::totp(&secret, now + i * 30 - 30, &params))
        .collect();
    let wrong = (0..100u32)
        .map(|n| format!("{:06}", 314_159 + n))
        .find(|c| !window.contains(c))
        .unwrap();
    let code = mfa_totp::totp(&secret, now, &params);
    writeln!(stdin, "{wrong}").unwrap();
    writeln!(stdin, "{code}").unwrap();
    drop(stdin);
    let status = wait_bounded(&mut child, "terminal-enroll");
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        rest.push(line);
    }
    let rest = rest.join("\n");
    assert!(status.success(), "{status}: {rest}");
    assert!(rest.contains("did not verify; try again"), "{rest}");
    assert!(
        rest.contains("Verified: the authenticator is enrolled"),
        "{rest}"
    );
}

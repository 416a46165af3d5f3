//! A real SMTP server for tests, and helpers to read what it received.
//! Enabled by the `test-support` cargo feature; meant for dev-dependencies.
//!
//! [`SmtpSink`] listens on `127.0.0.1`, port 0 (a free port), and speaks
//! enough SMTP for lettre and most clients: the `220` greeting, `EHLO`/`HELO`
//! (no extensions advertised: no STARTTLS, no 8BITMIME, so a message that is
//! not 7-bit clean is refused by the client), `MAIL FROM`, `RCPT TO`, `DATA`
//! (with dot-unstuffing), `RSET`, `NOOP` and `QUIT`. Each connection is
//! served by its own thread with blocking IO and short read timeouts; an
//! idle connection is closed after 30 s, and everything stops when the sink
//! is dropped. [`SmtpSink::start_tls`] serves the same over implicit TLS
//! (`smtps://`) with the certificates of [`TEST_CA_PEM`].
//!
//! ```
//! use std::time::Duration;
//! use mfa_core::{Mail, MailKind, Mailer};
//! use mfa_email::{EmailMailer, MailConfig, test_support::SmtpSink};
//!
//! let sink = SmtpSink::start().unwrap();
//! let mailer = EmailMailer::new(MailConfig {
//!     smtp_url: Some(sink.url()),
//!     from: "MFA <no-reply@localhost>".into(),
//!     issuer: "Acme".into(),
//!     ..MailConfig::default()
//! })
//! .unwrap();
//! mailer
//!     .send(&Mail {
//!         to: "alice@example.com".into(),
//!         kind: MailKind::LoginCode { code: "042917".into(), valid_for_secs: 600 },
//!     })
//!     .unwrap();
//! let got = sink.wait_for_messages(1, Duration::from_secs(5));
//! assert_eq!(got[0].to, ["alice@example.com"]);
//! assert_eq!(got[0].code().as_deref(), Some("042917"));
//! ```

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A private CA, for tests only: it signed [`TEST_SERVER_CERT_PEM`], the
/// certificate [`SmtpSink::start_tls`] serves. A mailer trusts it only
/// when told to (`MailConfig::smtp_ca_file`).
pub const TEST_CA_PEM: &str = include_str!("../test-certs/ca.pem");
/// The certificate of [`SmtpSink::start_tls`]: `localhost` and
/// `127.0.0.1`, signed by [`TEST_CA_PEM`], valid until 2126.
pub const TEST_SERVER_CERT_PEM: &str = include_str!("../test-certs/server.pem");
/// The key of [`TEST_SERVER_CERT_PEM`] (PKCS #8).
const TEST_SERVER_KEY_PEM: &str = include_str!("../test-certs/server.key");

/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// An idle connection is closed after this long.
const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// Longest command or data line accepted (RFC 5321 says 1000 with CRLF).
const MAX_LINE: usize = 64 * 1024;
/// Largest message kept.
const MAX_MESSAGE: usize = 10 * 1024 * 1024;
/// Connections served at once; more are told to come back later.
const MAX_CONNECTIONS: usize = 64;

/// One message as the sink received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The `MAIL FROM` path, without angle brackets (empty for `<>`).
    pub from: String,
    /// The `RCPT TO` paths, without angle brackets, in order.
    pub to: Vec<String>,
    /// The message as sent after `DATA`, dot-unstuffed, lines ending in
    /// CRLF, without the final `.` line.
    pub data: String,
}

impl ReceivedMail {
    /// The first header of that name (case-insensitive), unfolded. Encoded
    /// words (RFC 2047) are left as they are.
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.data, name)
    }

    /// The `Subject` header (see [`header`](Self::header)).
    pub fn subject(&self) -> Option<String> {
        self.header("Subject")
    }

    /// The decoded `text/plain` part, lines ending in `\n`.
    pub fn text(&self) -> Option<String> {
        text_part(&self.data)
    }

    /// The decoded `text/html` part, lines ending in `\n`.
    pub fn html(&self) -> Option<String> {
        html_part(&self.data)
    }

    /// The 6-digit code of the text part: see [`extract_code`].
    pub fn code(&self) -> Option<String> {
        extract_code(&self.data)
    }

    /// The email-change token of the text part: see [`extract_token`].
    pub fn token(&self) -> Option<String> {
        extract_token(&self.data)
    }
}

#[derive(Default)]
struct State {
    messages: Vec<ReceivedMail>,
    mail_from_commands: usize,
    connections: usize,
}

struct Shared {
    stop: AtomicBool,
    fail_mail_from: AtomicBool,
    want_login: AtomicBool,
    refuse_recipients: AtomicBool,
    /// Milliseconds to wait before confirming a message it kept.
    data_reply_delay_ms: AtomicU64,
    /// Milliseconds to wait before answering `MAIL FROM`.
    mail_from_reply_delay_ms: AtomicU64,
    active: AtomicUsize,
    state: Mutex<State>,
    arrived: Condvar,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not take the sink down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// An SMTP server on `127.0.0.1` that keeps what it receives. Stops when
/// dropped.
pub struct SmtpSink {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl SmtpSink {
    /// Listen on a free loopback port and accept every message.
    pub fn start() -> io::Result<SmtpSink> {
        SmtpSink::listen(None)
    }

    /// Like [`start`](Self::start), over TLS from the first byte (what
    /// `smtps://` speaks), with [`TEST_SERVER_CERT_PEM`]: a client trusts it
    /// only with [`TEST_CA_PEM`]. A handshake that fails ends the
    /// connection.
    pub fn start_tls() -> io::Result<SmtpSink> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let invalid =
            |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        let certs = CertificateDer::pem_slice_iter(TEST_SERVER_CERT_PEM.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&e))?;
        let key = PrivateKeyDer::from_pem_slice(TEST_SERVER_KEY_PEM.as_bytes())
            .map_err(|e| invalid(&e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid(&e))?;
        SmtpSink::listen(Some(Arc::new(config)))
    }

    fn listen(tls: Option<Arc<rustls::ServerConfig>>) -> io::Result<SmtpSink> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let tls_mode = tls.is_some();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            fail_mail_from: AtomicBool::new(false),
            want_login: AtomicBool::new(false),
            refuse_recipients: AtomicBool::new(false),
            data_reply_delay_ms: AtomicU64::new(0),
            mail_from_reply_delay_ms: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            state: Mutex::new(State::default()),
            arrived: Condvar::new(),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("smtp-sink-accept".into())
                .spawn(move || accept_loop(listener, shared, tls))?
        };
        Ok(SmtpSink {
            addr,
            tls: tls_mode,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Like [`start`](Self::start), but every `MAIL FROM` is answered with
    /// a transient `451` (see [`set_failing`](Self::set_failing)).
    pub fn start_failing() -> io::Result<SmtpSink> {
        let sink = SmtpSink::start()?;
        sink.set_failing(true);
        Ok(sink)
    }

    /// Answer every later `MAIL FROM` with `451 4.3.0` (a transient failure)
    /// or, with `false`, accept again.
    pub fn set_failing(&self, failing: bool) {
        self.shared.fail_mail_from.store(failing, Ordering::SeqCst);
    }

    /// Answer every later `MAIL FROM` with `530 5.7.0` (a login is wanted
    /// first: the sink offers none, as a relay with a client that gives
    /// no credentials sees it) or, with `false`, accept again.
    pub fn set_wanting_login(&self, wanting: bool) {
        self.shared.want_login.store(wanting, Ordering::SeqCst);
    }

    /// Answer every later `RCPT TO` with `550 5.1.1` (no such mailbox: a
    /// permanent refusal) or, with `false`, accept again.
    pub fn set_refusing_recipients(&self, refusing: bool) {
        self.shared
            .refuse_recipients
            .store(refusing, Ordering::SeqCst);
    }

    /// Keep every later message at once, but confirm it (`250` after the
    /// end of the data) only `delay` later: a mail server whose content
    /// checks are slow. `Duration::ZERO` confirms at once again.
    pub fn set_data_reply_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.data_reply_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Answer every later `MAIL FROM` only `delay` later: a mail server
    /// that greets and then stalls before taking anything.
    /// `Duration::ZERO` answers at once again.
    pub fn set_mail_from_reply_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared
            .mail_from_reply_delay_ms
            .store(ms, Ordering::SeqCst);
    }

    /// The port it listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The SMTP URL to reach it: `smtp://127.0.0.1:PORT?tls=none`, or
    /// `smtps://localhost:PORT` for [`start_tls`](Self::start_tls).
    pub fn url(&self) -> String {
        if self.tls {
            format!("smtps://localhost:{}", self.port())
        } else {
            format!("smtp://127.0.0.1:{}?tls=none", self.port())
        }
    }

    /// Every message received so far, in order.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.shared.state().messages.clone()
    }

    /// Forget the messages received so far.
    pub fn clear(&self) {
        self.shared.state().messages.clear();
    }

    /// How many `MAIL FROM` commands arrived, accepted or refused: the
    /// number of delivery attempts.
    pub fn mail_from_commands(&self) -> usize {
        self.shared.state().mail_from_commands
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.shared.state().connections
    }

    /// Wait until at least `n` messages have arrived or `timeout` has
    /// passed, and return every message received (possibly fewer than `n`).
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state();
        while state.messages.len() < n {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = match self.shared.arrived.wait_timeout(state, deadline - now) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
        state.messages.clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            // The acceptor joins the connection threads; each notices the
            // flag within `POLL`.
            let _ = acceptor.join();
        }
    }
}

impl std::fmt::Debug for SmtpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSink")
            .field("addr", &self.addr)
            .field("messages", &self.shared.state().messages.len())
            .finish_non_exhaustive()
    }
}

/// A loopback port with nothing listening on it (bound, then released), to
/// test a dead SMTP server. Another process could take it meanwhile, but
/// the kernel does not hand a just-released port out again at once.
pub fn dead_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        // Port 9 (discard) is closed on any test machine worth the name.
        .unwrap_or(9)
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tls: Option<Arc<rustls::ServerConfig>>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopping() {
        match listener.accept() {
            Ok((stream, _)) => {
                workers.retain(|w| !w.is_finished());
                shared.state().connections += 1;
                if shared.active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    let mut stream = stream;
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = stream.write_all(b"421 4.3.2 too many connections\r\n");
                    continue;
                }
                shared.active.fetch_add(1, Ordering::SeqCst);
                let conn_shared = Arc::clone(&shared);
                let tls = tls.clone();
                let spawned =
                    thread::Builder::new()
                        .name("smtp-sink-conn".into())
                        .spawn(move || {
                            let _ = match tls {
                                None => {
                                    Session::new(stream, &conn_shared).and_then(|mut s| s.run())
                                }
                                Some(config) => handshake(stream, config).and_then(|stream| {
                                    Session::new(stream, &conn_shared).and_then(|mut s| s.run())
                                }),
                            };
                            conn_shared.active.fetch_sub(1, Ordering::SeqCst);
                        });
                match spawned {
                    Ok(handle) => workers.push(handle),
                    Err(_) => {
                        shared.active.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL / 5),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => thread::sleep(POLL),
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

/// A TLS stream of the sink.
type TlsStream = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

/// The TLS handshake on `stream`, blocking (5 s at most per read): the
/// session's short read timeouts would cut it.
fn handshake(mut stream: TcpStream, config: Arc<rustls::ServerConfig>) -> io::Result<TlsStream> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut stream)?;
    }
    Ok(rustls::StreamOwned::new(conn, stream))
}

/// What a session talks over: TCP, or TLS over TCP.
trait SessionStream: Read + Write {
    fn tcp(&self) -> &TcpStream;
    /// Close the connection, as far as the protocol says.
    fn close(&mut self) {
        let _ = self.tcp().shutdown(Shutdown::Both);
    }
}

impl SessionStream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl SessionStream for TlsStream {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
    fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.conn.complete_io(&mut self.sock);
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

/// Why a session ends early.
enum End {
    /// The peer closed, went idle or the sink is stopping.
    Closed,
    /// A line longer than `MAX_LINE`.
    LineTooLong,
}

struct Session<'a, S: SessionStream> {
    stream: S,
    shared: &'a Shared,
    pending: Vec<u8>,
    greeted: bool,
    from: Option<String>,
    to: Vec<String>,
}

impl<'a, S: SessionStream> Session<'a, S> {
    fn new(stream: S, shared: &'a Shared) -> io::Result<Session<'a, S>> {
        let tcp = stream.tcp();
        tcp.set_nonblocking(false)?;
        tcp.set_read_timeout(Some(POLL))?;
        tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(Session {
            stream,
            shared,
            pending: Vec::new(),
            greeted: false,
            from: None,
            to: Vec::new(),
        })
    }

    fn reply(&mut self, line: &str) -> io::Result<()> {
        self.stream.write_all(line.as_bytes())?;
        self.stream.write_all(b"\r\n")?;
        self.stream.flush()
    }

    /// The next line without its line ending.
    fn read_line(&mut self) -> Result<Vec<u8>, End> {
        let mut idle_since = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.pending.len() > MAX_LINE {
                return Err(End::LineTooLong);
            }
            if self.shared.stopping() || idle_since.elapsed() > IDLE_LIMIT {
                return Err(End::Closed);
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(End::Closed),
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    idle_since = Instant::now();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Err(End::Closed),
            }
        }
    }

    fn run(&mut self) -> io::Result<()> {
        self.reply("220 127.0.0.1 ESMTP mfa-email test sink")?;
        loop {
            let line = match self.read_line() {
                Ok(line) => String::from_utf8_lossy(&line).into_owned(),
                Err(End::LineTooLong) => {
                    let _ = self.reply("500 5.5.2 line too long");
                    break;
                }
                Err(End::Closed) => {
                    if self.shared.stopping() {
                        let _ = self.reply("421 4.3.2 shutting down");
                    }
                    break;
                }
            };
            let upper = line.to_ascii_uppercase();
            let verb = upper.split_whitespace().next().unwrap_or("");
            match verb {
                "EHLO" | "HELO" => {
                    self.greeted = true;
                    self.reset();
                    self.reply("250 127.0.0.1 greets you")?;
                }
                "MAIL" if upper.starts_with("MAIL FROM:") => {
                    self.shared.state().mail_from_commands += 1;
                    let delay = Duration::from_millis(
                        self.shared.mail_from_reply_delay_ms.load(Ordering::SeqCst),
                    );
                    let until = Instant::now() + delay;
                    while Instant::now() < until {
                        if self.shared.stopping() {
                            return Ok(());
                        }
                        thread::sleep(POLL);
                    }
                    if !self.greeted {
                        self.reply("503 5.5.1 say EHLO first")?;
                    } else if self.from.is_some() {
                        self.reply("503 5.5.1 nested MAIL command")?;
                    } else if self.shared.fail_mail_from.load(Ordering::SeqCst) {
                        self.reply("451 4.3.0 temporary failure, try again later")?;
                    } else if self.shared.want_login.load(Ordering::SeqCst) {
                        self.reply("530 5.7.0 Authentication required")?;
                    } else {
                        self.from = Some(path_of(&line["MAIL FROM:".len()..]));
                        self.reply("250 2.1.0 OK")?;
                    }
                }
                "RCPT" if upper.starts_with("RCPT TO:") => {
                    if self.from.is_none() {
                        self.reply("503 5.5.1 need MAIL first")?;
                    } else if self.shared.refuse_recipients.load(Ordering::SeqCst) {
                        self.reply("550 5.1.1 no such mailbox")?;
                    } else {
                        self.to.push(path_of(&line["RCPT TO:".len()..]));
                        self.reply("250 2.1.5 OK")?;
                    }
                }
                "DATA" => {
                    if self.from.is_none() || self.to.is_empty() {
                        self.reply("503 5.5.1 need MAIL and RCPT first")?;
                    } else {
                        self.reply("354 end data with <CR><LF>.<CR><LF>")?;
                        if !self.data()? {
                            break;
                        }
                    }
                }
                "RSET" => {
                    self.reset();
                    self.reply("250 2.0.0 OK")?;
                }
                "NOOP" => self.reply("250 2.0.0 OK")?,
                "QUIT" => {
                    let _ = self.reply("221 2.0.0 bye");
                    break;
                }
                "STARTTLS" | "AUTH" | "VRFY" | "EXPN" => {
                    self.reply("502 5.5.1 not implemented")?;
                }
                _ => self.reply("500 5.5.2 command not recognized")?,
            }
        }
        self.stream.close();
        Ok(())
    }

    /// Read a message after `354`; `Ok(false)` if the connection ended.
    fn data(&mut self) -> io::Result<bool> {
        let mut data = String::new();
        let mut too_big = false;
        loop {
            let line = match self.read_line() {
                Ok(line) => line,
                Err(End::LineTooLong) => {
                    let _ = self.reply("500 5.5.2 line too long");
                    return Ok(false);
                }
                Err(End::Closed) => return Ok(false),
            };
            if line == b"." {
                break;
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            if data.len() + line.len() > MAX_MESSAGE {
                too_big = true;
            }
            if !too_big {
                data.push_str(&String::from_utf8_lossy(line));
                data.push_str("\r\n");
            }
        }
        if too_big {
            self.reset();
            self.reply("552 5.3.4 message too big")?;
            return Ok(true);
        }
        let mail = ReceivedMail {
            from: self.from.take().unwrap_or_default(),
            to: std::mem::take(&mut self.to),
            data,
        };
        self.shared.state().messages.push(mail);
        self.shared.arrived.notify_all();
        let delay = Duration::from_millis(self.shared.data_reply_delay_ms.load(Ordering::SeqCst));
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if self.shared.stopping() {
                return Ok(false);
            }
            thread::sleep(POLL);
        }
        self.reply("250 2.0.0 OK queued")?;
        Ok(true)
    }

    fn reset(&mut self) {
        self.from = None;
        self.to.clear();
    }
}

/// `<a@b> SIZE=1` → `a@b`.
fn path_of(arg: &str) -> String {
    let arg = arg.trim_start();
    match arg.strip_prefix('<') {
        Some(rest) => rest.split('>').next().unwrap_or("").to_string(),
        None => arg.split_whitespace().next().unwrap_or("").to_string(),
    }
}

// ---- reading messages

/// Headers and body of a message or part.
fn split_head_body(message: &str) -> (&str, &str) {
    for sep in ["\r\n\r\n", "\n\n"] {
        if let Some(i) = message.find(sep) {
            return (&message[..i], &message[i + sep.len()..]);
        }
    }
    (message, "")
}

/// Unfolded headers, in order.
fn headers(head: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

/// The first header `name` of a message, unfolded.
pub fn header(message: &str, name: &str) -> Option<String> {
    let (head, _) = split_head_body(message);
    headers(head)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The first part of type `mime` (e.g. `text/plain`) of a MIME message,
/// multipart or not, decoded (7bit, 8bit, quoted-printable or base64), with
/// `\n` line endings.
pub fn find_part(message: &str, mime: &str) -> Option<String> {
    find_part_at(message, mime, 0)
}

fn find_part_at(entity: &str, mime: &str, depth: usize) -> Option<String> {
    if depth > 8 {
        return None;
    }
    let (head, body) = split_head_body(entity);
    let headers = headers(head);
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    // RFC 2045: no Content-Type means text/plain.
    let content_type = get("Content-Type").unwrap_or("text/plain");
    let mut params = content_type.split(';').map(str::trim);
    let kind = params.next().unwrap_or("").to_ascii_lowercase();
    if kind.starts_with("multipart/") {
        let boundary = params.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_string())
        })?;
        let delimiter = format!("--{boundary}");
        let mut parts = Vec::new();
        let mut current: Option<Vec<&str>> = None;
        for line in body.split('\n') {
            let line_trimmed = line.strip_suffix('\r').unwrap_or(line);
            if line_trimmed.trim_end() == delimiter
                || line_trimmed.trim_end() == format!("{delimiter}--")
            {
                if let Some(lines) = current.take() {
                    parts.push(lines.join("\n"));
                }
                if line_trimmed.trim_end() != delimiter {
                    break;
                }
                current = Some(Vec::new());
            } else if let Some(lines) = current.as_mut() {
                lines.push(line);
            }
        }
        return parts.iter().find_map(|p| find_part_at(p, mime, depth + 1));
    }
    if kind != mime.to_ascii_lowercase() {
        return None;
    }
    let encoding = get("Content-Transfer-Encoding")
        .unwrap_or("7bit")
        .to_ascii_lowercase();
    let decoded = match encoding.as_str() {
        "quoted-printable" => String::from_utf8_lossy(
            &quoted_printable::decode(body.as_bytes(), quoted_printable::ParseMode::Robust).ok()?,
        )
        .into_owned(),
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            String::from_utf8_lossy(&data_encoding::BASE64.decode(compact.as_bytes()).ok()?)
                .into_owned()
        }
        _ => body.to_string(),
    };
    Some(decoded.replace("\r\n", "\n"))
}

/// The decoded `text/plain` part of a raw message.
pub fn text_part(message: &str) -> Option<String> {
    find_part(message, "text/plain")
}

/// The decoded `text/html` part of a raw message.
pub fn html_part(message: &str) -> Option<String> {
    find_part(message, "text/html")
}

/// The text to search: the text part of a MIME message, or the input.
fn searchable(message: &str) -> String {
    let looks_like_mime = header(message, "Content-Type").is_some();
    match looks_like_mime.then(|| text_part(message)).flatten() {
        Some(text) => text,
        None => message.replace("\r\n", "\n"),
    }
}

/// The 6-digit one-time code of a message: `message` is a raw message (as
/// in [`ReceivedMail::data`] or an outbox `.eml` file), whose text part is
/// searched, or plain text. A line holding exactly six digits wins (the
/// built-in templates put the code on its own line); otherwise the first
/// run of exactly six ASCII digits between non-alphanumeric characters.
pub fn extract_code(message: &str) -> Option<String> {
    let text = searchable(message);
    let six_digits = |s: &str| s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit());
    text.lines()
        .map(str::trim)
        .find(|l| six_digits(l))
        .or_else(|| {
            text.split(|c: char| !c.is_alphanumeric())
                .find(|w| six_digits(w))
        })
        .map(str::to_string)
}

/// The email-change confirmation token of a message (raw or plain text,
/// as for [`extract_code`]): the first line that holds a single word of at
/// least 16 characters from `A-Z a-z 0-9 - _ . ~ + / =`. The built-in
/// `email_change_confirm` template puts the token on its own line.
pub fn extract_token(message: &str) -> Option<String> {
    let text = searchable(message);
    text.lines()
        .map(str::trim)
        .find(|l| {
            l.len() >= 16
                && l.bytes().any(|b| b.is_ascii_alphanumeric())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b))
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_parts_in_a_multipart_message() {
        let msg = "Subject: hi\r\n there\r\nContent-Type: multipart/alternative;\r\n boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
Your code is:\r\n\r\n    123456\r\n\r\nValid for 10 min=\r\nutes. Caf=C3=A9\r\n\
--B\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+MTIzNDU2PC9i\r\nPg==\r\n--B--\r\n";
        assert_eq!(header(msg, "subject").as_deref(), Some("hi there"));
        let text = text_part(msg).unwrap();
        assert!(text.contains("10 minutes. Café"), "{text}");
        assert_eq!(html_part(msg).as_deref(), Some("<b>123456</b>"));
        assert_eq!(extract_code(msg).as_deref(), Some("123456"));
    }

    #[test]
    fn code_and_token_from_plain_text() {
        assert_eq!(extract_code("code: 987654.").as_deref(), Some("987654"));
        assert_eq!(extract_code("1234567 and 12345").as_deref(), None);
        assert_eq!(
            extract_token("Use this:\n\n    abcDEF123_-abcdef123\n\nthanks").as_deref(),
            Some("abcDEF123_-abcdef123")
        );
        assert_eq!(extract_token("no such line here at all"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(path_of("<a@b> SIZE=10"), "a@b");
        assert_eq!(path_of(" <>"), "");
        assert_eq!(path_of("a@b"), "a@b");
    }
}

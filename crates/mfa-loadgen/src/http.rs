//! Two HTTP/1.1 clients over keep-alive connections: a minimal one written
//! for this harness (the default, like `wrk`: it only formats a request and
//! parses a status line, `Content-Length` or chunked bodies), and reqwest,
//! the workspace's client, to compare the client's own cost.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Which client drives the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// The harness's own minimal HTTP/1.1 client (least CPU per request).
    Raw,
    /// reqwest 0.13 (hyper underneath), one client per connection slot.
    Reqwest,
}

/// An HTTP method the scenarios use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

/// One request: method, path with query, optional bearer token and JSON body.
#[derive(Clone, Debug)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// Path and query, e.g. `/user/users/page?search=ann`.
    pub path: String,
    /// Bearer token, if any.
    pub token: Option<String>,
    /// JSON body, if any.
    pub body: Option<Vec<u8>>,
}

impl Request {
    /// A request without token or body.
    pub fn new(method: Method, path: impl Into<String>) -> Request {
        Request {
            method,
            path: path.into(),
            token: None,
            body: None,
        }
    }

    /// With `Authorization: Bearer token`.
    pub fn bearer(mut self, token: &str) -> Request {
        self.token = Some(token.to_string());
        self
    }

    /// With a JSON body.
    pub fn json(mut self, value: &serde_json::Value) -> Request {
        self.body = Some(value.to_string().into_bytes());
        self
    }

    /// The request on the wire.
    fn encode(&self, host: &str, out: &mut Vec<u8>) {
        use std::io::Write as _;
        out.clear();
        let _ = write!(
            out,
            "{} {} HTTP/1.1\r\nHost: {host}\r\n",
            self.method.as_str(),
            self.path
        );
        if let Some(token) = &self.token {
            let _ = write!(out, "Authorization: Bearer {token}\r\n");
        }
        match &self.body {
            Some(body) => {
                let _ = write!(
                    out,
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                out.extend_from_slice(body);
            }
            None => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
        }
    }
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body (decoded from chunks if needed).
    pub body: Vec<u8>,
}

impl Response {
    /// The `error` field of a JSON error body, or the status alone.
    pub fn error_kind(&self) -> String {
        let code = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
        match code {
            Some(code) => format!("{} {code}", self.status),
            None => format!("{}", self.status),
        }
    }

    /// The body as JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Makes connections of one kind to one server.
#[derive(Clone, Debug)]
pub struct Connector {
    kind: ClientKind,
    addr: SocketAddr,
    host: String,
}

impl Connector {
    /// Connections to `addr`.
    pub fn new(kind: ClientKind, addr: SocketAddr) -> Connector {
        Connector {
            kind,
            addr,
            host: addr.to_string(),
        }
    }

    /// A new keep-alive connection.
    pub async fn connect(&self) -> io::Result<Connection> {
        match self.kind {
            ClientKind::Raw => {
                let stream = TcpStream::connect(self.addr).await?;
                stream.set_nodelay(true)?;
                Ok(Connection::Raw(RawConnection {
                    stream,
                    host: self.host.clone(),
                    out: Vec::with_capacity(1024),
                    buf: Vec::with_capacity(8192),
                }))
            }
            ClientKind::Reqwest => {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .tcp_nodelay(true)
                    .timeout(Duration::from_secs(60))
                    .build()
                    .map_err(io::Error::other)?;
                Ok(Connection::Reqwest {
                    client,
                    base: format!("http://{}", self.addr),
                })
            }
        }
    }
}

/// One connection (reqwest: a client with a pool of one connection).
#[derive(Debug)]
pub enum Connection {
    /// The minimal client.
    Raw(RawConnection),
    /// reqwest.
    Reqwest {
        /// The client.
        client: reqwest::Client,
        /// `http://ADDR`.
        base: String,
    },
}

impl Connection {
    /// Send `req` and read the whole response. An error leaves the
    /// connection unusable: make a new one.
    pub async fn send(&mut self, req: &Request) -> io::Result<Response> {
        match self {
            Connection::Raw(raw) => raw.send(req).await,
            Connection::Reqwest { client, base } => {
                let url = format!("{base}{}", req.path);
                let mut builder = match req.method {
                    Method::Get => client.get(url),
                    Method::Post => client.post(url),
                    Method::Put => client.put(url),
                };
                if let Some(token) = &req.token {
                    builder = builder.bearer_auth(token);
                }
                if let Some(body) = &req.body {
                    builder = builder
                        .header("content-type", "application/json")
                        .body(body.clone());
                }
                let res = builder.send().await.map_err(io::Error::other)?;
                let status = res.status().as_u16();
                let body = res.bytes().await.map_err(io::Error::other)?.to_vec();
                Ok(Response { status, body })
            }
        }
    }
}

/// The minimal client's connection.
#[derive(Debug)]
pub struct RawConnection {
    stream: TcpStream,
    host: String,
    out: Vec<u8>,
    buf: Vec<u8>,
}

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

impl RawConnection {
    async fn send(&mut self, req: &Request) -> io::Result<Response> {
        req.encode(&self.host, &mut self.out);
        self.stream.write_all(&self.out).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("response head too large"));
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| invalid("response head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| invalid("no status line"))?;
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| invalid("bad Content-Length"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
        let body = if chunked {
            self.read_chunked(head_end).await?
        } else {
            let length = length.unwrap_or(0);
            while self.buf.len() < head_end + length {
                self.fill().await?;
            }
            self.buf[head_end..head_end + length].to_vec()
        };
        Ok(Response { status, body })
    }

    async fn read_chunked(&mut self, mut pos: usize) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf[pos..], b"\r\n") {
                    break pos + i;
                }
                self.fill().await?;
            };
            let size_text = std::str::from_utf8(&self.buf[pos..line_end])
                .map_err(|_| invalid("bad chunk size"))?;
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size =
                usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
            let start = line_end + 2;
            while self.buf.len() < start + size + 2 {
                self.fill().await?;
            }
            if size == 0 {
                // No trailers are expected; the last CRLF follows.
                return Ok(body);
            }
            body.extend_from_slice(&self.buf[start..start + size]);
            pos = start + size + 2;
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_encoded_with_length_and_token() {
        let mut out = Vec::new();
        Request::new(Method::Post, "/user/auth/mfa/verify")
            .bearer("tok")
            .json(&serde_json::json!({"code": "123456"}))
            .encode("127.0.0.1:1", &mut out);
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.starts_with("POST /user/auth/mfa/verify HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert!(text.contains("Authorization: Bearer tok\r\n"));
        assert!(text.ends_with("Content-Length: 17\r\n\r\n{\"code\":\"123456\"}"));
    }

    #[tokio::test]
    async fn responses_with_length_and_chunks_are_read() {
        use tokio::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n\
                      5\r\n{\"err\r\n11\r\nor\":\"invalid_code\r\n2\r\n\"}\r\n0\r\n\r\n",
                )
                .await;
        });
        let mut conn = Connector::new(ClientKind::Raw, addr)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let ok = conn
            .send(&Request::new(Method::Get, "/a"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((ok.status, ok.body.as_slice()), (200, &b"ok"[..]));
        let err = conn
            .send(&Request::new(Method::Get, "/b"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(err.error_kind(), "400 invalid_code");
        let _ = server.await;
    }
}

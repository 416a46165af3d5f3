//! What a request's log line says about where it came from and whose it
//! was: the client's address (behind a balancer, from the proxies'
//! `X-Forwarded-For`, believed only from `MFA_TRUSTED_PROXIES`), a request
//! id (echoed as `X-Request-Id`) and the user of its session. An operator
//! asking "where did last night's failed logins come from" finds the audit
//! event's time and user, then these lines.

use std::future::{Ready, ready};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use actix_web::dev::{Payload, ServiceRequest};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{FromRequest, HttpMessage as _, HttpRequest};
use ipnet::IpNet;
use mfa_core::{Randomness as _, UserId};

/// The header a request id is taken from (a trusted proxy's) and answered in.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a proxy.
const MAX_REQUEST_ID_LEN: usize = 64;

/// The proxies whose `X-Forwarded-For` and `X-Request-Id` are believed
/// (`MFA_TRUSTED_PROXIES`). Anyone else could write any address there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parse `MFA_TRUSTED_PROXIES`: addresses (`10.0.0.5`) and networks
    /// (`10.0.0.0/8`, `fd00::/8`) separated by commas.
    pub fn parse(text: &str) -> Result<TrustedProxies, String> {
        let mut networks = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let network = match item.parse::<IpNet>() {
                Ok(network) => network.trunc(),
                Err(_) => item
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("`{item}` is neither an IP address nor a network"))?,
            };
            networks.push(as_compared(network));
        }
        Ok(TrustedProxies(networks))
    }

    /// None configured: the peer is the client.
    ///
    /// (Addresses are compared in their canonical form: an IPv4 peer on an
    /// IPv6 socket, `::ffff:10.0.0.1`, is 10.0.0.1, and so is such a
    /// network in the setting.)
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks, as `check-config` shows them.
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }

    /// Whether `ip` (in its canonical form) is a trusted proxy's.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(&ip))
    }

    /// The client of a request from `peer` carrying these
    /// `X-Forwarded-For` values (as bytes: a client's own value need not
    /// be text, and the hop a proxy appends to it still counts): the peer,
    /// unless it is a trusted proxy; then the nearest address in the
    /// header, from its end, that is not one (each proxy appends the
    /// address it was reached from; `203.0.113.9:51234` and `[2001:db8::1]`
    /// forms too). `None`, unknown, where no such address is there: a hop
    /// that is no address, or none at all, would otherwise name a proxy
    /// as the client.
    pub fn client<'a>(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: impl Iterator<Item = &'a [u8]>,
    ) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.trusts(peer) {
            return Some(peer);
        }
        let hops: Vec<&[u8]> = forwarded_for
            .flat_map(|value| value.split(|b| *b == b','))
            .collect();
        for hop in hops.into_iter().rev() {
            let ip = hop_address(hop)?.to_canonical();
            if !self.trusts(ip) {
                return Some(ip);
            }
        }
        None
    }
}

/// `network` as addresses are compared: an IPv4-mapped IPv6 network
/// (`::ffff:10.0.0.0/104`) as the IPv4 network it maps.
fn as_compared(network: IpNet) -> IpNet {
    match network {
        IpNet::V6(v6) => match (
            v6.network().to_ipv4_mapped(),
            v6.prefix_len().checked_sub(96),
        ) {
            (Some(v4), Some(prefix)) => {
                ipnet::Ipv4Net::new(v4, prefix).map_or(network, |v4| IpNet::V4(v4).trunc())
            }
            _ => network,
        },
        v4 => v4,
    }
}

/// Request ids: a trusted proxy's own, where it sent a well-formed one
/// (so that its log and this one share it), else this process's prefix,
/// random at start, and a count.
#[derive(Debug)]
pub struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        let mut bytes = [0u8; 4];
        mfa_core::ports::OsRandomness.fill(&mut bytes);
        RequestIds {
            prefix: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            next: AtomicU64::new(1),
        }
    }
}

impl RequestIds {
    /// The id of `req`; `trusted` when it came through a trusted proxy.
    pub fn of(&self, req: &ServiceRequest, trusted: bool) -> String {
        let given = req
            .headers()
            .get(&REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .filter(|id| trusted && is_plain_id(id));
        match given {
            Some(id) => id.to_string(),
            None => format!(
                "{}-{}",
                self.prefix,
                self.next.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }
}

/// The client's address of a request, as its log line shows it, kept in
/// its extensions for the audit events it causes ([`mfa_core::Caller::client`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestClient(pub Option<IpAddr>);

impl RequestClient {
    /// Keep `client` in `req`'s extensions.
    pub fn attach(req: &ServiceRequest, client: Option<IpAddr>) {
        req.extensions_mut().insert(RequestClient(client));
    }

    /// The client of `req` (`None` where no middleware attached one, as
    /// in unit tests, or where a trusted proxy named none).
    pub fn of(req: &HttpRequest) -> Option<IpAddr> {
        req.extensions().get::<RequestClient>().and_then(|c| c.0)
    }
}

impl FromRequest for RequestClient {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(RequestClient(RequestClient::of(req))))
    }
}

/// A client address as the log shows it: `unknown` where a trusted proxy
/// named none (said, not left out).
pub struct ShownClient(pub Option<IpAddr>);

impl std::fmt::Display for ShownClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

/// The address of one `X-Forwarded-For` hop: `ADDR`, `IPV4:PORT`,
/// `[IPV6]` or `[IPV6]:PORT`.
fn hop_address(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|socket| socket.ip()))
        .or_else(|_| {
            hop.strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .unwrap_or(hop)
                .parse::<IpAddr>()
        })
        .ok()
}

/// 1 to 64 characters that cannot break a log line or a header.
fn is_plain_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The id as a header value (always valid: see [`is_plain_id`]).
pub fn header_value(id: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(id).ok()
}

/// The user of a request's session, noted where it is resolved (the
/// session middleware, an extractor, a handler that reads the session
/// with its own work, a login) and read for the request's log line.
#[derive(Clone, Debug, Default)]
pub struct RequestUser(Arc<OnceLock<UserId>>);

impl RequestUser {
    /// A new slot for `req`, in its extensions.
    pub fn attach(req: &ServiceRequest) -> RequestUser {
        let user = RequestUser::default();
        req.extensions_mut().insert(user.clone());
        user
    }

    /// The slot of `req` (a detached one where no middleware attached one,
    /// as in unit tests).
    pub fn of(req: &HttpRequest) -> RequestUser {
        req.extensions()
            .get::<RequestUser>()
            .cloned()
            .unwrap_or_default()
    }

    /// Note the request's user (the first one noted stays).
    pub fn note(&self, user: UserId) {
        let _ = self.0.set(user);
    }

    /// The user noted, if any.
    pub fn get(&self) -> Option<UserId> {
        self.0.get().copied()
    }
}

impl FromRequest for RequestUser {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(RequestUser::of(req)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(proxies: &str, peer: &str, forwarded: &[&str]) -> String {
        TrustedProxies::parse(proxies)
            .unwrap()
            .client(
                Some(peer.parse().unwrap()),
                forwarded.iter().map(|value| value.as_bytes()),
            )
            .map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
    }

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_says_otherwise() {
        // No proxy trusted: the header is anyone's words.
        assert_eq!(client("", "198.51.100.7", &["203.0.113.1"]), "198.51.100.7");
        // The balancer's own address, then the client it was reached from.
        assert_eq!(
            client("10.0.0.0/8", "10.1.2.3", &["203.0.113.1"]),
            "203.0.113.1"
        );
        // A client's forged first hop is passed over: the last untrusted
        // address is the one the trusted proxy saw.
        assert_eq!(
            client(
                "10.0.0.0/8",
                "10.1.2.3",
                &["6.6.6.6, 203.0.113.1, 10.9.9.9"]
            ),
            "203.0.113.1"
        );
        // Several headers count as one list, in order.
        assert_eq!(
            client("10.0.0.5", "10.0.0.5", &["6.6.6.6", "203.0.113.1"]),
            "203.0.113.1"
        );
        // A peer that is not trusted: its header is not read.
        assert_eq!(
            client("10.0.0.0/8", "192.0.2.1", &["203.0.113.1"]),
            "192.0.2.1"
        );
        // A hop that is no address before the client is found: unknown,
        // not the proxy's address (nor an empty hop, nor no header).
        for forwarded in [&["203.0.113.1, unknown"][..], &["203.0.113.1, "], &[]] {
            assert_eq!(client("10.0.0.0/8", "10.1.2.3", forwarded), "unknown");
        }
        // Only trusted hops: unknown.
        assert_eq!(client("10.0.0.0/8", "10.1.2.3", &["10.4.4.4"]), "unknown");
        // Ports and brackets, as some proxies write them.
        assert_eq!(
            client("10.0.0.0/8", "10.1.2.3", &["203.0.113.1:51234"]),
            "203.0.113.1"
        );
        assert_eq!(
            client("10.0.0.0/8", "10.1.2.3", &["[2001:db8::1]"]),
            "2001:db8::1"
        );
        assert_eq!(
            client("10.0.0.0/8", "10.1.2.3", &["[2001:db8::1]:443"]),
            "2001:db8::1"
        );
        // An IPv4 peer on an IPv6 socket is written as IPv4.
        assert_eq!(client("", "::ffff:192.0.2.9", &[]), "192.0.2.9");
        assert_eq!(
            client("fd00::/8, 127.0.0.1", "::ffff:127.0.0.1", &["2001:db8::1"]),
            "2001:db8::1"
        );
        // A proxy given in its IPv4-mapped form is trusted as IPv4.
        assert_eq!(
            client("::ffff:10.0.0.1", "10.0.0.1", &["203.0.113.1"]),
            "203.0.113.1"
        );
        assert_eq!(
            client("::ffff:10.0.0.0/104", "10.9.9.9", &["203.0.113.1"]),
            "203.0.113.1"
        );
    }

    /// A client's own `X-Forwarded-For` that is not text (a proxy keeps it
    /// and appends the client's address) no longer hides that address.
    #[test]
    fn a_value_that_is_not_text_still_has_the_proxys_hop() {
        let proxies = TrustedProxies::parse("127.0.0.1").unwrap();
        let value: &[u8] = b"\xe9, 203.0.113.5";
        assert_eq!(
            proxies.client(Some("127.0.0.1".parse().unwrap()), [value].into_iter()),
            Some("203.0.113.5".parse().unwrap())
        );
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_networks() {
        let parsed = TrustedProxies::parse(" 10.0.0.5, 192.168.0.0/16 ,fd00::1/8,").unwrap();
        let shown: Vec<String> = parsed.networks().iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["10.0.0.5/32", "192.168.0.0/16", "fd00::/8"]);
        let mapped = TrustedProxies::parse("::ffff:10.0.0.1, ::ffff:10.0.0.0/104").unwrap();
        let shown: Vec<String> = mapped.networks().iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["10.0.0.1/32", "10.0.0.0/8"]);
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        for bad in ["10.0.0.300", "example.com", "10.0.0.0/33"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_plain_request_ids_are_taken() {
        assert!(is_plain_id("lb-4f2a:9.x_y"));
        for bad in ["", "a b", "a\nb", "é", &"x".repeat(65)] {
            assert!(!is_plain_id(bad), "{bad:?}");
        }
    }
}

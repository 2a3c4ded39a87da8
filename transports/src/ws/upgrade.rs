//! The HTTP upgrade: a bounded request buffer, the checks of the path, the
//! `Origin` and the subprotocol, and tungstenite's handshake over the whole
//! request at once (so it never waits halfway, and a refusal is answered
//! with a specific HTTP status and reason).

use tungstenite::handshake::server::{ErrorResponse, Request, Response, write_response};
use tungstenite::http::{HeaderValue, StatusCode};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{HandshakeError, WebSocket};

use super::pipe::Pipe;
use super::site::Site;
use super::{PATH, SUBPROTOCOL};

/// Which browser origins may open a WebSocket (the `Origin` header, which
/// browsers always send and pages cannot forge; other clients send none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginCheck {
    /// Origins allowed besides the defaults, as `scheme://host[:port]`
    /// (compared without case and without a trailing `/`).
    pub allowed: Vec<String>,
    /// Whether an origin whose host is loopback (`localhost`, 127.0.0.0/8,
    /// `[::1]`) is allowed, whatever its scheme and port.
    pub loopback: bool,
}

impl Default for OriginCheck {
    /// No extra origins; loopback origins allowed.
    fn default() -> OriginCheck {
        OriginCheck { allowed: Vec::new(), loopback: true }
    }
}

impl OriginCheck {
    /// Whether a request with this `Origin` (and `Host`) may upgrade: no
    /// `Origin` (not a browser), one of [`allowed`](OriginCheck::allowed),
    /// a loopback origin (if [`loopback`](OriginCheck::loopback)), or the
    /// server's own origin: the origin's `host[:port]` is the request's
    /// `Host` and its scheme that of the connection (`https` when `tls`),
    /// where that `Host` can be trusted to name this server: over TLS (a
    /// browser reaches us under a name only if our certificate is valid
    /// for it), or when the `Host` is a loopback address or `localhost`.
    /// On a plain listener any other `Host` proves nothing: a DNS-rebinding
    /// page (its name pointed at this machine after it loaded) sends
    /// `Host` and `Origin` both naming the attacker's host.
    #[must_use]
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>, tls: bool) -> bool {
        let Some(origin) = origin else { return true };
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.allowed.iter().any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(&origin)) {
            return true;
        }
        let Some((scheme, authority)) = origin.split_once("://") else { return false };
        let own_scheme = if tls { "https" } else { "http" };
        let same_authority = host.is_some_and(|h| h.trim().eq_ignore_ascii_case(authority));
        if same_authority && scheme == own_scheme && (tls || is_loopback_authority(authority)) {
            return true;
        }
        self.loopback && is_loopback_authority(authority)
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_authority(authority: &str) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host == "localhost"
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || host.parse::<std::net::Ipv6Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// What an upgrade must look like: its path, its subprotocol, its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsPolicy {
    /// The endpoint path ([`PATH`]).
    pub path: String,
    /// The subprotocol the client must offer ([`SUBPROTOCOL`]).
    pub subprotocol: String,
    /// The `Origin` allow-list.
    pub origins: OriginCheck,
    /// The files a plain `GET` is answered with (the browser client), if any.
    pub site: Option<Site>,
}

impl Default for WsPolicy {
    fn default() -> WsPolicy {
        WsPolicy {
            path: PATH.to_owned(),
            subprotocol: SUBPROTOCOL.to_owned(),
            origins: OriginCheck::default(),
            site: None,
        }
    }
}

/// Where the upgrade request stands after more bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RequestEnd {
    /// The headers have not ended yet.
    Partial,
    /// The headers end after this many bytes (what follows is WebSocket data).
    Complete(usize),
    /// More than the limit without the end of the headers.
    TooLarge,
}

/// Where the request's headers end in `buf`, if they do within `max` bytes;
/// `seen` bytes of `buf` were already searched without finding the end (so
/// a request dripped byte by byte costs linear, not quadratic, time).
pub(super) fn request_end(buf: &[u8], seen: usize, max: usize) -> RequestEnd {
    let from = seen.saturating_sub(3).min(buf.len());
    match buf[from..].windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + from) {
        Some(at) if at + 4 <= max => RequestEnd::Complete(at + 4),
        Some(_) => RequestEnd::TooLarge,
        None if buf.len() >= max => RequestEnd::TooLarge,
        None => RequestEnd::Partial,
    }
}

/// A refused upgrade (or a served file): the HTTP answer to send before
/// closing, and the reason for the log.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) response: Vec<u8>,
    pub(super) reason: String,
}

/// An HTTP error answer with a one-line text body, then the connection closes.
pub(super) fn refusal(status: StatusCode, reason: &str) -> Refused {
    let body = format!("{reason}\n");
    let mut response = Vec::new();
    let head = tungstenite::http::Response::builder()
        .status(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("Content-Length", body.len())
        .header("Connection", "close")
        .body(())
        .expect("static header names and values");
    // Writing into a Vec does not fail; header values here are ASCII.
    let _ = write_response(&mut response, &head);
    response.extend_from_slice(body.as_bytes());
    Refused { response, reason: format!("upgrade refused ({}): {reason}", status.as_u16()) }
}

/// Runs tungstenite's server handshake over the complete request `head`;
/// `rest` (bytes after the headers) is the start of the WebSocket stream.
/// On success the 101 answer is in the pipe's output.
/// `tls`: whether the request came over TLS (`wss://`), for the `Origin`
/// check.
pub(super) fn accept(
    head: &[u8],
    rest: &[u8],
    policy: &WsPolicy,
    tls: bool,
    config: WebSocketConfig,
) -> Result<WebSocket<Pipe>, Refused> {
    // A plain GET for the browser client's files: answered, then closed.
    if let Some(served) = policy.site.as_ref().and_then(|site| super::site::answer(head, site)) {
        return Err(served);
    }
    let mut refused: Option<Refused> = None;
    // The signature is tungstenite's `Callback`.
    #[allow(clippy::result_large_err)]
    let check = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        match check_request(request, policy, tls) {
            Ok(()) => {
                let protocol = HeaderValue::from_str(&policy.subprotocol).map_err(|_| {
                    refused = Some(refusal(StatusCode::INTERNAL_SERVER_ERROR, "bad subprotocol configured"));
                    ErrorResponse::new(None)
                })?;
                response.headers_mut().insert("Sec-WebSocket-Protocol", protocol);
                Ok(response)
            }
            Err(r) => {
                refused = Some(r);
                Err(ErrorResponse::new(None))
            }
        }
    };
    let result = tungstenite::accept_hdr_with_config(Pipe::with_input(head), check, Some(config));
    let failed = match result {
        Ok(mut ws) => {
            ws.get_mut().feed(rest);
            return Ok(ws);
        }
        Err(HandshakeError::Interrupted(_)) => refusal(StatusCode::BAD_REQUEST, "incomplete upgrade request"),
        Err(HandshakeError::Failure(e)) => refusal(StatusCode::BAD_REQUEST, &format!("not a WebSocket upgrade: {e}")),
    };
    Err(refused.unwrap_or(failed))
}

/// The checks of the callback: path, origin, subprotocol (tungstenite
/// checks the rest: method, version, `Upgrade`, `Connection`, the key).
fn check_request(request: &Request, policy: &WsPolicy, tls: bool) -> Result<(), Refused> {
    if request.uri().path() != policy.path {
        return Err(refusal(
            StatusCode::NOT_FOUND,
            &format!("no WebSocket endpoint at {}: confab serves {}", request.uri().path(), policy.path),
        ));
    }
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    if !policy.origins.allows(header("Origin"), header("Host"), tls) {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            &format!("origin {} is not allowed", header("Origin").unwrap_or("(unreadable)")),
        ));
    }
    let offered = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == policy.subprotocol);
    if !offered {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            &format!("the client must offer the subprotocol {} (Sec-WebSocket-Protocol)", policy.subprotocol),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &str) -> String {
        format!(
            "GET /confab HTTP/1.1\r\nHost: 127.0.0.1:7702\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    }

    fn status(r: &Refused) -> String {
        String::from_utf8_lossy(&r.response).lines().next().unwrap_or("").to_owned()
    }

    #[test]
    fn a_good_request_gets_101_with_the_subprotocol_and_keeps_what_follows() {
        let req = request("Sec-WebSocket-Protocol: other, confab.v1\r\n");
        let mut ws = accept(req.as_bytes(), b"xy", &WsPolicy::default(), false, WebSocketConfig::default()).unwrap();
        let out = String::from_utf8(ws.get_mut().take_output()).unwrap();
        assert!(out.starts_with("HTTP/1.1 101"), "{out}");
        assert!(out.contains("sec-websocket-protocol: confab.v1"), "{out}");
        // RFC 6455's own example key and accept value.
        assert!(out.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{out}");
        assert_eq!(ws.get_ref().unread(), 2);
    }

    #[test]
    fn wrong_path_origin_or_subprotocol_get_a_specific_answer() {
        let policy = WsPolicy::default();
        let cfg = WebSocketConfig::default();
        let r = accept(request("").as_bytes(), b"", &policy, false, cfg).unwrap_err();
        assert!(status(&r).contains("400") && r.reason.contains("confab.v1"), "{r:?}");
        let proto = "Sec-WebSocket-Protocol: confab.v1\r\n";
        let r =
            accept(request(&format!("{proto}Origin: https://evil.example\r\n")).as_bytes(), b"", &policy, false, cfg)
                .unwrap_err();
        assert!(status(&r).contains("403") && r.reason.contains("evil.example"), "{r:?}");
        let other = request(proto).replace("/confab", "/ws/alice@bob");
        let r = accept(other.as_bytes(), b"", &policy, false, cfg).unwrap_err();
        assert!(status(&r).contains("404"), "{r:?}");
        let r = accept(b"GARBAGE\r\n\r\n", b"", &policy, false, cfg).unwrap_err();
        assert!(status(&r).contains("400") && r.reason.contains("not a WebSocket upgrade"), "{r:?}");
    }

    #[test]
    fn origins_no_origin_same_origin_loopback_and_listed_are_allowed() {
        let check = OriginCheck { allowed: vec!["https://chat.example.org/".into()], loopback: true };
        for tls in [false, true] {
            assert!(check.allows(None, None, tls));
            assert!(check.allows(Some("https://CHAT.example.org"), None, tls));
            assert!(check.allows(Some("http://localhost:3000"), None, tls));
            assert!(check.allows(Some("http://127.0.0.1:8080"), None, tls));
            assert!(check.allows(Some("http://[::1]:8080"), None, tls));
            assert!(!check.allows(Some("https://evil.example"), Some("relay.example.net:7702"), tls));
            assert!(!check.allows(Some("null"), None, tls));
        }
        // The own origin over TLS: the certificate vouches for the Host.
        assert!(check.allows(Some("https://relay.example.net:7702"), Some("relay.example.net:7702"), true));
        assert!(!check.allows(Some("http://relay.example.net:7702"), Some("relay.example.net:7702"), true));
        // On a plain listener a non-loopback Host proves nothing (DNS rebinding).
        assert!(!check.allows(Some("http://rebind.example:7702"), Some("rebind.example:7702"), false));
        let strict = OriginCheck { loopback: false, ..check };
        assert!(!strict.allows(Some("http://localhost:3000"), None, false));
        assert!(!strict.allows(Some("http://localhost:3000"), Some("localhost:7702"), false));
        // The page this server serves on loopback stays its own origin.
        assert!(strict.allows(Some("http://127.0.0.1:7702"), Some("127.0.0.1:7702"), false));
        assert!(strict.allows(Some("http://localhost:7702"), Some("LOCALHOST:7702"), false));
        assert!(!strict.allows(Some("http://rebind.example:7702"), Some("rebind.example:7702"), false));
    }

    #[test]
    fn the_request_is_bounded() {
        assert_eq!(request_end(b"GET / HTTP/1.1\r\n", 0, 64), RequestEnd::Partial);
        assert_eq!(request_end(b"GET / HTTP/1.1\r\n\r\nrest", 0, 64), RequestEnd::Complete(18));
        assert_eq!(request_end(&[b'a'; 64], 0, 64), RequestEnd::TooLarge);
        assert_eq!(request_end(b"GET / HTTP/1.1\r\n\r\n", 0, 10), RequestEnd::TooLarge);
    }

    #[test]
    fn the_end_is_found_across_reads_of_any_size() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
        let end = req.len() - b"rest".len();
        assert_eq!(&req[end - 4..end], b"\r\n\r\n");
        // Fed byte by byte, and in every split around the blank line, the
        // incremental search finds the same end as a search of the whole.
        for step in 1..=req.len() {
            let mut seen = 0;
            let mut found = None;
            while seen < req.len() {
                let upto = (seen + step).min(req.len());
                match request_end(&req[..upto], seen, 64) {
                    RequestEnd::Complete(at) => {
                        found = Some(at);
                        break;
                    }
                    RequestEnd::Partial => seen = upto,
                    RequestEnd::TooLarge => panic!("not too large"),
                }
            }
            assert_eq!(found, Some(end), "step {step}");
        }
    }
}

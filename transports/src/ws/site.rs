//! Static files on the WebSocket listener: the browser client.
//!
//! A request on the WebSocket listener that is a plain `GET` or `HEAD`
//! (no `Upgrade` header) for a path of the configured [`Site`] is answered
//! with that file, then the connection closes; any other path gets 404.
//! Every answer carries a strict `Content-Security-Policy` (scripts and
//! WebAssembly from this origin only, no inline script or style, network
//! access to this server only, no framing), `X-Content-Type-Options:
//! nosniff`, no referrer, and `Cache-Control: no-cache` (a new server
//! version is picked up on the next load). Without a site, such requests
//! get the refusal they got before (400, not a WebSocket upgrade).

use std::fmt::Write as _;

use super::upgrade::Refused;

/// A file of the [`Site`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteFile {
    /// Its path (`/index.html`, `/pkg/confab_web_bg.wasm`); `/` serves `/index.html`.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// The static files served to browsers (embedded in the server binary).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Site {
    /// The files, by path.
    pub files: Vec<SiteFile>,
}

/// The most headers a static request may have (more: not served here).
const MAX_HEADERS: usize = 64;

/// The answer to a plain `GET`/`HEAD` request for `site`, or `None` when
/// `head` is not one (an upgrade, another method, not HTTP): then the
/// WebSocket handshake judges it.
pub(super) fn answer(head: &[u8], site: &Site) -> Option<Refused> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = request.parse(head) else { return None };
    let method = request.method?;
    if method != "GET" && method != "HEAD" {
        return None;
    }
    if request.headers.iter().any(|h| h.name.eq_ignore_ascii_case("upgrade")) {
        return None;
    }
    let host = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .filter(|h| is_plain_authority(h));
    let target = request.path?;
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let path = if path == "/" { "/index.html" } else { path };
    let csp = content_security_policy(host);
    let (status, content_type, body) = match site.files.iter().find(|f| f.path == path) {
        Some(file) => ("200 OK", file.content_type, file.body),
        None => ("404 Not Found", "text/plain; charset=utf-8", &b"not found\n"[..]),
    };
    let mut response = String::new();
    let _ = write!(
        response,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: {csp}\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\
         X-Frame-Options: DENY\r\nCross-Origin-Opener-Policy: same-origin\r\nCache-Control: no-cache\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let mut response = response.into_bytes();
    if method == "GET" {
        response.extend_from_slice(body);
    }
    let code = &status[..3];
    Some(Refused { response, reason: format!("served {method} {path} ({code})") })
}

/// The page's policy: everything from this origin only; WebAssembly may be
/// compiled (`'wasm-unsafe-eval'`, not `'unsafe-eval'`); the WebSocket to
/// this host (named when the `Host` header is a plain authority).
fn content_security_policy(host: Option<&str>) -> String {
    let connect = host.map_or_else(|| "'self'".to_owned(), |h| format!("'self' ws://{h} wss://{h}"));
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self'; \
         connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// `host[:port]` or `[v6]:port` made of the characters an authority has:
/// nothing a header or a policy could be bent with.
fn is_plain_authority(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site {
            files: vec![
                SiteFile { path: "/index.html", content_type: "text/html; charset=utf-8", body: b"<html>hi</html>" },
                SiteFile { path: "/app.js", content_type: "text/javascript; charset=utf-8", body: b"let x = 1;" },
            ],
        }
    }

    fn text(r: &Refused) -> String {
        String::from_utf8_lossy(&r.response).into_owned()
    }

    #[test]
    fn a_get_is_served_with_its_type_and_the_security_headers() {
        let r = answer(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:7702\r\n\r\n", &site()).expect("served");
        let t = text(&r);
        assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
        assert!(t.contains("Content-Type: text/html; charset=utf-8\r\n"), "{t}");
        assert!(t.contains("Content-Length: 15\r\n") && t.ends_with("\r\n\r\n<html>hi</html>"), "{t}");
        assert!(t.contains("X-Content-Type-Options: nosniff\r\n"), "{t}");
        assert!(t.contains("script-src 'self' 'wasm-unsafe-eval';"), "{t}");
        assert!(t.contains("connect-src 'self' ws://127.0.0.1:7702 wss://127.0.0.1:7702;"), "{t}");
        assert!(t.contains("frame-ancestors 'none'") && !t.contains("unsafe-inline"), "{t}");
        assert_eq!(r.reason, "served GET /index.html (200)");
        let js = text(&answer(b"GET /app.js?v=2 HTTP/1.1\r\nHost: h\r\n\r\n", &site()).unwrap());
        assert!(js.contains("Content-Type: text/javascript; charset=utf-8\r\n") && js.ends_with("let x = 1;"), "{js}");
    }

    #[test]
    fn head_has_no_body_unknown_paths_get_404() {
        let t = text(&answer(b"HEAD /app.js HTTP/1.1\r\n\r\n", &site()).unwrap());
        assert!(t.contains("Content-Length: 10\r\n") && t.ends_with("\r\n\r\n"), "{t}");
        let r = answer(b"GET /../etc/passwd HTTP/1.1\r\n\r\n", &site()).unwrap();
        assert!(text(&r).starts_with("HTTP/1.1 404"), "{}", text(&r));
        assert!(text(&r).contains("Content-Security-Policy: "));
    }

    #[test]
    fn upgrades_other_methods_and_garbage_are_left_to_the_handshake() {
        let upgrade = b"GET /confab HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        assert!(answer(upgrade, &site()).is_none());
        assert!(answer(b"POST / HTTP/1.1\r\n\r\n", &site()).is_none());
        assert!(answer(b"GARBAGE\r\n\r\n", &site()).is_none());
    }

    #[test]
    fn a_strange_host_is_kept_out_of_the_policy() {
        let t = text(&answer(b"GET / HTTP/1.1\r\nHost: evil; script-src *\r\n\r\n", &site()).unwrap());
        assert!(t.contains("connect-src 'self'; object-src"), "{t}");
        assert!(!t.contains("evil"), "{t}");
    }
}

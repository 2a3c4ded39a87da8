//! The browser client's files on the WebSocket listener, with the
//! `confab-server` binary: the printed web address serves the page and
//! its WebAssembly with their content types and a strict
//! Content-Security-Policy, an unknown path gets 404, and WebSocket
//! upgrades on the same listener still work. The real-browser test is
//! tests/tests/browser.rs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use confab_tests::procs::{ServerProc, TempDir};

/// One HTTP/1.1 GET; the whole answer (the server closes after it).
fn get(addr: &str, path: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read to the close");
    let at = all.windows(4).position(|w| w == b"\r\n\r\n").expect("headers end") + 4;
    (String::from_utf8_lossy(&all[..at]).into_owned(), all[at..].to_vec())
}

#[test]
fn the_web_address_serves_the_page_and_its_wasm_with_a_strict_policy() {
    let dir = TempDir::new("web");
    let server = ServerProc::start(&dir.path().join("data"), None);
    let web = server.web.clone().expect("the server printed its web address");
    let addr = web.strip_prefix("http://").and_then(|a| a.strip_suffix('/')).expect("http://ADDR/ on loopback");
    assert!(server.ws.contains(addr), "the page is served on the WebSocket listener: {web} vs {}", server.ws);

    let (head, body) = get(addr, "/");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/html; charset=utf-8\r\n"), "{head}");
    assert!(head.contains("X-Content-Type-Options: nosniff\r\n"), "{head}");
    let csp = head.lines().find_map(|l| l.strip_prefix("Content-Security-Policy: ")).expect("a CSP");
    assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self' 'wasm-unsafe-eval'"), "{csp}");
    assert!(csp.contains(&format!("connect-src 'self' ws://{addr} wss://{addr}")), "{csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("'unsafe-eval'"), "{csp}");
    assert!(String::from_utf8_lossy(&body).contains("<script type=\"module\" src=\"app.js\">"));

    let (head, body) = get(addr, "/pkg/confab_web_bg.wasm");
    assert!(head.contains("Content-Type: application/wasm\r\n"), "{head}");
    assert!(body.starts_with(b"\0asm"));
    let (head, _) = get(addr, "/app.js");
    assert!(head.contains("Content-Type: text/javascript; charset=utf-8\r\n"), "{head}");
    let (head, _) = get(addr, "/secret.txt");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // The WebSocket endpoint on the same listener still upgrades.
    let request = tungstenite::client::ClientRequestBuilder::new(server.ws.parse().unwrap())
        .with_sub_protocol(confab_transports::ws::SUBPROTOCOL);
    let (mut socket, response) = tungstenite::connect(request).expect("the upgrade still works");
    assert_eq!(response.status().as_u16(), 101);
    let _ = socket.close(None);
}

#[test]
fn without_ws_web_no_page_and_no_web_address() {
    let dir = TempDir::new("web-off");
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "[ws]\nweb = false\n").unwrap();
    let server = ServerProc::start(&dir.path().join("data"), Some(&config));
    assert_eq!(server.web, None);
    let addr = server.ws.strip_prefix("ws://").and_then(|a| a.strip_suffix("/confab")).unwrap().to_owned();
    let (head, _) = get(&addr, "/");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}

//! The WebSocket transport against a tiny echo loop: a mio Poll and a
//! WsServer on a thread, echoing what each connection sends; clients are
//! the crate's `WsLink` and plain tungstenite over a std socket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use confab_transports::hub::{ConnIds, NetEvent, Transport};
use confab_transports::link::Link;
use confab_transports::tls::{self, ClientTrust, Pin, ServerIdentity};
use confab_transports::ws::{self, WsLimits, WsPolicy, WsServer, WsUrl};
use mio::{Events, Poll};
use tungstenite::Message;
use tungstenite::client::ClientRequestBuilder;

const SECOND: Duration = Duration::from_secs(1);

/// What the echo loop reports.
#[derive(Debug)]
enum Seen {
    Opened(Transport),
    Closed(String),
}

struct Echo {
    addr: SocketAddr,
    pin: Pin,
    seen: mpsc::Receiver<Seen>,
    stop: Arc<AtomicBool>,
    /// Handed to `WsServer::refuse_new` at every turn of the loop.
    refusing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    /// An echo server; `tls`: wss:// with a fresh self-signed identity.
    fn start(tls: bool, limits: WsLimits) -> Echo {
        let made = ServerIdentity::self_signed(&["localhost".to_owned()]).unwrap();
        let pin = made.identity.pin().unwrap();
        let config = tls.then(|| Arc::new(tls::ws_server_config(&made.identity).unwrap()));
        let mut poll = Poll::new().unwrap();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut server =
            WsServer::bind(poll.registry(), addr, config, ConnIds::default(), limits, WsPolicy::default()).unwrap();
        let addr = server.local_addr();
        let (tx, seen) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let refusing = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, refusing) = (Arc::clone(&stop), Arc::clone(&refusing));
            std::thread::spawn(move || {
                let mut events = Events::with_capacity(256);
                let mut net = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    server.refuse_new(refusing.load(Ordering::SeqCst));
                    let timeout = server
                        .poll_timeout()
                        .map_or(Duration::from_millis(20), |t| t.saturating_duration_since(Instant::now()))
                        .min(Duration::from_millis(20));
                    poll.poll(&mut events, Some(timeout)).unwrap();
                    let now = Instant::now();
                    for event in &events {
                        assert!(server.owns(event.token()), "{:?} {}", event.token(), WsServer::FIRST_TOKEN);
                        server.handle_event(poll.registry(), now, event, &mut net);
                    }
                    if server.poll_timeout().is_some_and(|t| t <= now) {
                        server.handle_timeout(poll.registry(), now, &mut net);
                    }
                    let mut later = Vec::new();
                    for e in net.drain(..) {
                        match e {
                            NetEvent::Opened { transport, .. } => {
                                let _ = tx.send(Seen::Opened(transport));
                            }
                            NetEvent::Received { conn, bytes } => {
                                if bytes == b"bye" {
                                    server.close(poll.registry(), conn, ws::close_code_for(200), "bye", &mut later);
                                } else {
                                    server.send(poll.registry(), conn, bytes.into());
                                }
                            }
                            NetEvent::Closed { reason, .. } => {
                                let _ = tx.send(Seen::Closed(reason));
                            }
                        }
                    }
                    net.append(&mut later);
                }
            })
        };
        Echo { addr, pin, seen, stop, refusing, thread: Some(thread) }
    }

    fn url(&self, tls: bool) -> WsUrl {
        WsUrl { tls, host: "127.0.0.1".to_owned(), port: self.addr.port(), path: ws::PATH.to_owned() }
    }

    /// The next report, within 5 s.
    fn next(&self) -> Seen {
        self.seen.recv_timeout(5 * SECOND).expect("the echo loop reports within 5 s")
    }

    fn closed(&self) -> String {
        loop {
            if let Seen::Closed(reason) = self.next() {
                return reason;
            }
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads from `link` until `want` bytes arrived.
fn recv_exactly(link: &mut dyn Link, want: usize) -> Vec<u8> {
    let deadline = Instant::now() + 5 * SECOND;
    let mut got = Vec::new();
    while got.len() < want {
        match link.recv(deadline).expect("recv") {
            Some(bytes) => got.extend_from_slice(&bytes),
            None => panic!("only {} of {want} bytes within 5 s", got.len()),
        }
    }
    got
}

#[test]
fn plain_ws_echoes_binary_messages_in_any_chunking() {
    let echo = Echo::start(false, WsLimits::default());
    let mut link = ws::connect(echo.addr, &echo.url(false), None, 5 * SECOND).unwrap();
    assert!(matches!(echo.next(), Seen::Opened(Transport::Ws)));
    link.send(b"hello ").unwrap();
    link.send(b"world").unwrap();
    assert_eq!(recv_exactly(&mut link, 11), b"hello world");
    // A large message (above one read chunk) comes back whole.
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    link.send(&big).unwrap();
    assert_eq!(recv_exactly(&mut link, big.len()), big);
    link.send(b"bye").unwrap();
    let e = loop {
        match link.recv(Instant::now() + 5 * SECOND) {
            Err(e) => break e,
            Ok(Some(_)) => {}
            Ok(None) => panic!("no close within 5 s"),
        }
    };
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(e.to_string().contains("close 200: bye"), "{e}");
    assert!(echo.closed().contains("closed by the server"));
}

#[test]
fn wss_checks_the_pin_exactly_as_tcp() {
    let echo = Echo::start(true, WsLimits::default());
    let config = Arc::new(tls::ws_client_config(&ClientTrust::Pin(echo.pin)).unwrap());
    let name = tls::server_name("localhost");
    let mut link = ws::connect(echo.addr, &echo.url(true), Some((name.clone(), config)), 5 * SECOND).unwrap();
    assert!(matches!(echo.next(), Seen::Opened(Transport::Ws)));
    link.send(b"over tls").unwrap();
    assert_eq!(recv_exactly(&mut link, 8), b"over tls");

    let other = ServerIdentity::self_signed(&["localhost".to_owned()]).unwrap().identity.pin().unwrap();
    let wrong = Arc::new(tls::ws_client_config(&ClientTrust::Pin(other)).unwrap());
    let e = ws::connect(echo.addr, &echo.url(true), Some((name, wrong)), 5 * SECOND).unwrap_err();
    assert!(e.to_string().contains("does not match the pinned key"), "{e}");
    // Plain ws:// against wss:// does not get through.
    assert!(ws::connect(echo.addr, &echo.url(false), None, 2 * SECOND).is_err());
}

/// A tungstenite client over a blocking std socket, offering the subprotocol.
fn raw_client(echo: &Echo, origin: Option<&str>) -> tungstenite::Result<tungstenite::WebSocket<TcpStream>> {
    let sock = TcpStream::connect(echo.addr).unwrap();
    sock.set_read_timeout(Some(5 * SECOND)).unwrap();
    let uri = echo.url(false).to_string().parse().unwrap();
    let mut request = ClientRequestBuilder::new(uri).with_sub_protocol(ws::SUBPROTOCOL);
    if let Some(o) = origin {
        request = request.with_header("Origin", o);
    }
    tungstenite::client::client(request, sock).map(|(ws, _)| ws).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => unreachable!("blocking socket"),
    })
}

#[test]
fn a_text_message_is_closed_with_1003_and_a_wrong_origin_gets_403() {
    let echo = Echo::start(false, WsLimits::default());
    let mut ws = raw_client(&echo, Some("http://localhost:3000")).unwrap();
    assert!(matches!(echo.next(), Seen::Opened(Transport::Ws)));
    ws.send(Message::text("hello")).unwrap();
    let close = match ws.read().unwrap() {
        Message::Close(frame) => frame.expect("a close frame with a code"),
        other => panic!("expected a close, got {other:?}"),
    };
    assert_eq!(u16::from(close.code), 1003);
    assert!(echo.closed().contains("text message refused"));

    let e = raw_client(&echo, Some("https://evil.example")).unwrap_err();
    let tungstenite::Error::Http(response) = e else { panic!("expected an HTTP refusal, got {e:?}") };
    assert_eq!(response.status(), 403);
    let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
    assert!(body.contains("origin https://evil.example is not allowed"), "{body}");
    assert!(echo.closed().contains("upgrade refused (403)"));
}

/// DNS rebinding: a page at `http://rebind.attacker.example:PORT/` whose
/// name the attacker then points at 127.0.0.1 opens a WebSocket to "its own"
/// origin; the browser sends `Host` and `Origin` both naming the attacker's
/// host. On a plain listener nothing proves which name the client reached
/// us by, so `Origin` == `Host` must not count as the server's own origin.
#[test]
fn a_dns_rebinding_page_is_not_taken_for_the_servers_own_origin() {
    let echo = Echo::start(false, WsLimits::default());
    let port = echo.addr.port();
    let authority = format!("rebind.attacker.example:{port}");
    let sock = TcpStream::connect(echo.addr).unwrap();
    sock.set_read_timeout(Some(5 * SECOND)).unwrap();
    let uri = format!("ws://{authority}{}", ws::PATH).parse().unwrap();
    let request = ClientRequestBuilder::new(uri)
        .with_sub_protocol(ws::SUBPROTOCOL)
        .with_header("Origin", format!("http://{authority}"));
    let e = match tungstenite::client::client(request, sock) {
        Ok(_) => panic!("a rebinding page's upgrade was accepted on a plain listener"),
        Err(tungstenite::HandshakeError::Failure(e)) => e,
        Err(tungstenite::HandshakeError::Interrupted(_)) => unreachable!("blocking socket"),
    };
    let tungstenite::Error::Http(response) = e else { panic!("expected an HTTP refusal, got {e:?}") };
    assert_eq!(response.status(), 403);
    assert!(echo.closed().contains("upgrade refused (403)"));

    // A page on a loopback origin is still let in (`loopback_origins`, on
    // by default; the own-origin rule itself is unit-tested in upgrade.rs).
    let ws = raw_client(&echo, Some(&format!("http://127.0.0.1:{port}"))).unwrap();
    assert!(matches!(echo.next(), Seen::Opened(Transport::Ws)));
    drop(ws);
}

#[test]
fn an_oversized_upgrade_request_gets_431_and_a_huge_frame_1009() {
    let limits = WsLimits { max_message: 1024, ..WsLimits::default() };
    let echo = Echo::start(false, limits);
    let mut sock = TcpStream::connect(echo.addr).unwrap();
    sock.set_read_timeout(Some(5 * SECOND)).unwrap();
    let mut request = b"GET /confab HTTP/1.1\r\nHost: x\r\n".to_vec();
    while request.len() < 10_000 {
        request.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let _ = sock.write_all(&request);
    let mut answer = String::new();
    let _ = sock.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(echo.closed().contains("longer than 8192 bytes"));

    let mut ws = raw_client(&echo, None).unwrap();
    assert!(matches!(echo.next(), Seen::Opened(Transport::Ws)));
    ws.send(Message::binary(vec![0u8; 4096])).unwrap();
    let close = match ws.read() {
        Ok(Message::Close(frame)) => frame.expect("a close frame"),
        Ok(other) => panic!("expected a close, got {other:?}"),
        Err(e) => panic!("expected a close frame, got {e}"),
    };
    assert_eq!(u16::from(close.code), 1009);
    assert!(echo.closed().contains("message too big"));
}

/// A server that sends a last message and its close in one write: the
/// message comes first, then the close code and reason, not a bare EOF.
#[test]
fn data_and_the_close_in_one_read_give_the_data_then_the_close_code() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(5 * SECOND)).unwrap();
        // The signature is tungstenite's `Callback`.
        #[allow(clippy::result_large_err)]
        let accept_protocol = |_: &tungstenite::handshake::server::Request,
                               mut response: tungstenite::handshake::server::Response| {
            response.headers_mut().insert("Sec-WebSocket-Protocol", ws::SUBPROTOCOL.parse().unwrap());
            Ok(response)
        };
        let mut ws = tungstenite::accept_hdr(sock, accept_protocol).unwrap();
        ws.write(Message::binary(&b"last words"[..])).unwrap();
        ws.close(Some(tungstenite::protocol::CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::from(4000 + 503),
            reason: "going away".into(),
        }))
        .unwrap();
        // Both in one flush; then read until the client goes.
        let _ = ws.flush();
        while ws.read().is_ok() {}
    });
    let url: WsUrl = format!("ws://{addr}{}", ws::PATH).parse().unwrap();
    let mut link = ws::connect(addr, &url, None, 5 * SECOND).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let data = link.recv(Instant::now() + 5 * SECOND).unwrap().expect("the last message");
    assert_eq!(data, b"last words");
    let e = link.recv(Instant::now() + 5 * SECOND).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(e.to_string().contains("close 503: going away"), "{e}");
    // And it stays the reason.
    assert!(link.recv(Instant::now() + SECOND).unwrap_err().to_string().contains("close 503"));
    drop(link);
    server.join().unwrap();
}

/// `refuse_new` (a cluster edge that hears no owner): each new connection is
/// closed as soon as it is accepted, so a client's upgrade fails at once and
/// it tries another node; the listener stays bound (the same port serves
/// again the moment refusing ends), and open connections are not touched.
#[test]
fn refusing_closes_new_connections_at_once_and_keeps_the_port() {
    let echo = Echo::start(false, WsLimits::default());
    let mut open = raw_client(&echo, None).expect("an upgrade before refusing");
    assert!(matches!(echo.next(), Seen::Opened(Transport::Ws)));
    echo.refusing.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        let started = Instant::now();
        let refused = raw_client(&echo, None);
        assert!(refused.is_err(), "an upgrade went through while refusing");
        assert!(started.elapsed() < 2 * SECOND, "refused only after {:?}", started.elapsed());
    }
    // The connection opened before is still served.
    open.send(Message::Binary(b"still here".to_vec().into())).unwrap();
    match open.read().unwrap() {
        Message::Binary(b) => assert_eq!(&b[..], b"still here"),
        other => panic!("expected the echo, got {other:?}"),
    }
    echo.refusing.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    raw_client(&echo, None).expect("the same port serves again");
}

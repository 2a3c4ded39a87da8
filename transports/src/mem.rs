//! In-memory links: a server embedded in a test or another program, with
//! clients on std channels.
//!
//! [`connect`] makes a connection through a [`HubSender`]: the server's
//! loop gets `NetEvent::Opened { transport: Transport::Mem, peer: None,
//! handle: Some(..) }` from its [`Hub`](crate::net::Hub) and answers through
//! the hub; the client gets a [`MemLink`]. Closing either side ends the
//! connection for both: the server gets one `Closed`, the client's
//! [`Link::recv`] returns [`io::ErrorKind::UnexpectedEof`] after the bytes
//! sent before the close.
//!
//! Backlog (see [`ConnHandle`]): bytes the server sent that the client's
//! `recv` has not returned yet.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use crate::link::Link;
use crate::net::{ConnHandle, ConnId, HubSender, NetEvent, Outbound, Transport};

/// The client end of an in-memory connection.
#[derive(Debug)]
pub struct MemLink {
    conn: ConnId,
    hub: HubSender,
    rx: mpsc::Receiver<Outbound>,
    backlog: Arc<AtomicUsize>,
    /// Set by whichever side closes first; that side reports `Closed`.
    closed: Arc<AtomicBool>,
    /// The server asked to close: `recv` ends with end of file.
    eof: bool,
    /// [`Link::close`] was called (or the link was dropped).
    we_closed: bool,
}

/// Opens an in-memory connection to the server behind `hub`. If that
/// server is gone the link is too: its first `send` or `recv` fails.
#[must_use]
pub fn connect(hub: &HubSender) -> MemLink {
    let conn = hub.next_id();
    let (tx, rx) = mpsc::channel();
    let backlog = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicBool::new(false));
    let handle = {
        let (hub, closed) = (hub.clone(), Arc::clone(&closed));
        ConnHandle::new(
            move |out: Outbound| {
                if closed.load(Ordering::SeqCst) {
                    return false;
                }
                match out {
                    Outbound::Data(bytes) => tx.send(Outbound::Data(bytes)).is_ok(),
                    Outbound::Close => {
                        if closed.swap(true, Ordering::SeqCst) {
                            return false;
                        }
                        // The link may be gone already; the server still gets its Closed.
                        let _ = tx.send(Outbound::Close);
                        hub.send(NetEvent::Closed { conn, reason: "closed by the server".to_owned() });
                        true
                    }
                }
            },
            Arc::clone(&backlog),
        )
    };
    let opened = hub.send(NetEvent::Opened { conn, transport: Transport::Mem, peer: None, handle: Some(handle) });
    let link = MemLink { conn, hub: hub.clone(), rx, backlog, closed, eof: false, we_closed: false };
    if !opened {
        // Nobody will ever answer: make the link fail at once.
        link.closed.store(true, Ordering::SeqCst);
    }
    link
}

impl MemLink {
    /// The connection's id on the server.
    #[must_use]
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    fn take(&mut self, out: Outbound, bytes: &mut Vec<u8>) {
        match out {
            Outbound::Data(data) => {
                self.backlog.fetch_sub(data.len(), Ordering::Relaxed);
                bytes.extend_from_slice(&data);
            }
            Outbound::Close => self.eof = true,
        }
    }

    fn end(&self) -> io::Error {
        if self.eof {
            io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection")
        } else if self.we_closed {
            io::Error::new(io::ErrorKind::NotConnected, "the link was closed")
        } else if self.closed.load(Ordering::SeqCst) {
            io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection")
        } else {
            io::Error::new(io::ErrorKind::ConnectionReset, "the server is gone")
        }
    }
}

impl Link for MemLink {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.eof || self.closed.load(Ordering::SeqCst) {
            return Err(self.end());
        }
        if bytes.is_empty() {
            return Ok(());
        }
        if self.hub.send(NetEvent::Received { conn: self.conn, bytes: bytes.to_vec() }) {
            Ok(())
        } else {
            Err(self.end())
        }
    }

    fn recv(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        let mut bytes = Vec::new();
        while !self.eof && bytes.is_empty() {
            let wait = deadline.saturating_duration_since(Instant::now());
            let first = match self.rx.recv_timeout(wait) {
                Ok(out) => out,
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(self.end()),
            };
            self.take(first, &mut bytes);
            // Whatever else is already queued, in one chunk.
            while !self.eof
                && let Ok(out) = self.rx.try_recv()
            {
                self.take(out, &mut bytes);
            }
        }
        if bytes.is_empty() {
            return Err(self.end());
        }
        Ok(Some(bytes))
    }

    fn close(&mut self) {
        self.we_closed = true;
        if !self.closed.swap(true, Ordering::SeqCst) {
            // A gone server needs no Closed.
            self.hub.send(NetEvent::Closed { conn: self.conn, reason: "peer closed".to_owned() });
        }
    }

    fn transport(&self) -> &'static str {
        "mem"
    }
}

impl Drop for MemLink {
    fn drop(&mut self) {
        self.close();
    }
}

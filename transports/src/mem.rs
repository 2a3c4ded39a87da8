//! In-memory links: a server embedded in a test or another program, with
//! clients on std channels.
//!
//! [`connect`] makes a connection through a [`HubSender`]: the server's
//! loop gets `NetEvent::Opened { transport: Transport::Mem, peer: None,
//! handle: Some(..) }` from its [`Hub`](crate::hub::Hub) and answers through
//! the hub; the client gets a [`MemLink`]. Closing either side ends the
//! connection for both: the server gets one `Closed`, the client's
//! [`Link::recv`] returns [`io::ErrorKind::UnexpectedEof`] after the bytes
//! sent before the close.
//!
//! Backlog (see [`ConnHandle`]): bytes the server sent that the client's
//! `recv` has not returned yet.
//!
//! Inbound credit: a link has at most [`MAX_INBOUND`] bytes sent and not yet
//! consumed by the server's loop ([`Hub::consumed`](crate::hub::Hub::consumed));
//! beyond that, [`Link::send`] blocks until the loop consumes some (or the
//! connection ends). The loop must therefore not run on the thread that
//! sends more than that on a link.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

/// Bytes one link may have sent that the server's loop has not consumed.
pub const MAX_INBOUND: usize = 1 << 20;
/// The largest `Received` event a link sends (a larger send is split).
const CHUNK: usize = 64 * 1024;
/// How often a blocked `send` looks again at whether the connection ended.
const RECHECK: Duration = Duration::from_millis(100);

use crate::hub::{ConnHandle, ConnId, HubSender, NetEvent, Outbound, Transport};
use crate::link::Link;

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
    credit: Arc<Credit>,
}

/// Inbound credit of one link, returned by the server's loop.
#[derive(Debug)]
struct Credit {
    state: Mutex<CreditState>,
    changed: Condvar,
    max: usize,
}

#[derive(Debug)]
struct CreditState {
    /// Bytes the link may still send.
    available: usize,
    /// The loop dropped its handle: no credit will ever come back.
    gone: bool,
}

impl Credit {
    fn give(&self, n: usize) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.available = state.available.saturating_add(n).min(self.max);
        self.changed.notify_all();
    }
}

/// Held by the loop's handle: its drop tells a blocked `send` that no
/// credit will come back.
struct HandleAlive(Arc<Credit>);

impl Drop for HandleAlive {
    fn drop(&mut self) {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner).gone = true;
        self.0.changed.notify_all();
    }
}

/// Opens an in-memory connection to the server behind `hub`. If that
/// server is gone the link is too: its first `send` or `recv` fails.
#[must_use]
pub fn connect(hub: &HubSender) -> MemLink {
    let conn = hub.next_id();
    let (tx, rx) = mpsc::channel();
    let backlog = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicBool::new(false));
    let credit = Arc::new(Credit {
        state: Mutex::new(CreditState { available: MAX_INBOUND, gone: false }),
        changed: Condvar::new(),
        max: MAX_INBOUND,
    });
    let handle = {
        let (hub, closed) = (hub.clone(), Arc::clone(&closed));
        let alive = HandleAlive(Arc::clone(&credit));
        ConnHandle::with_inbound_credit(
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
            move |n| alive.0.give(n),
        )
    };
    let opened = hub.send(NetEvent::Opened { conn, transport: Transport::Mem, peer: None, handle: Some(handle) });
    let link = MemLink { conn, hub: hub.clone(), rx, backlog, closed, eof: false, we_closed: false, credit };
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

    /// Waits until `n` bytes of credit are there and takes them. False: the
    /// connection ended meanwhile.
    fn take_credit(&self, n: usize) -> bool {
        let mut state = self.credit.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return false;
            }
            if state.available >= n {
                state.available -= n;
                return true;
            }
            if state.gone {
                return false;
            }
            state = self.credit.changed.wait_timeout(state, RECHECK).unwrap_or_else(PoisonError::into_inner).0;
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
        for piece in bytes.chunks(CHUNK.min(self.credit.max)) {
            if !self.take_credit(piece.len())
                || !self.hub.send(NetEvent::Received { conn: self.conn, bytes: piece.to_vec() })
            {
                return Err(self.end());
            }
        }
        Ok(())
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

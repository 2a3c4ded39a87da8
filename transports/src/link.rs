//! [`Link`]: the client side of a transport, as a blocking byte pipe.
//!
//! A client program owns one sans-IO machine and one `Link`: it writes the
//! machine's `Transmit` bytes with [`Link::send`] and feeds what
//! [`Link::recv`] returns to the machine's `handle_input`, waking at least at
//! the machine's `Timeout`. TCP+TLS, QUIC and in-memory links implement it,
//! so the `confab` client and the tests run the same loop over any of them.

use std::io;
use std::time::Instant;

/// A connected, ordered, reliable byte stream to a confab server.
///
/// Errors: a link the peer closed returns [`io::ErrorKind::UnexpectedEof`]
/// from [`recv`](Link::recv) once every byte before the close was returned;
/// a reset or a TLS/QUIC failure returns the underlying error. After an
/// error the link is dead: make a new one.
pub trait Link: Send {
    /// Queues `bytes` for the server and writes as much as the transport
    /// takes without blocking for long. Bytes are delivered in order.
    fn send(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Waits until bytes arrive or `deadline` passes. `Ok(None)`: the
    /// deadline passed with nothing new; `Ok(Some(bytes))`: a non-empty chunk
    /// (any split: frames may straddle chunks).
    fn recv(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>>;

    /// Flushes what was sent and closes the link (TLS close_notify, QUIC
    /// stream finish). Best effort: errors are ignored.
    fn close(&mut self);

    /// Which transport this is, for logs and `--json` output: `"tcp"`, `"quic"` or `"mem"`.
    fn transport(&self) -> &'static str;
}

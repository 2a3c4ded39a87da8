//! One UDP socket for a QUIC endpoint: a non-blocking mio socket with
//! quinn-udp's batched I/O (GSO on send; GRO and `recvmmsg` on receive; ECN
//! both ways, where the kernel supports them).

use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use bytes::BytesMut;
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use quinn_proto::{EcnCodepoint, Transmit};
use quinn_udp::{RecvMeta, UdpSocketState};

/// The largest UDP payload received (one datagram, or one GRO segment).
const MAX_DATAGRAM: usize = 1500;

/// Datagrams per GSO send, at most (as quinn does): a batch of full-size
/// datagrams must stay under the 64 KiB a UDP send may carry.
const MAX_GSO_SEGMENTS: usize = 10;

/// Sends that met a full socket buffer, kept (at most this many bytes) until it drains.
const MAX_BLOCKED: usize = 4 << 20;

/// Datagram and send counts of one socket since it was bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Send calls (`sendmsg`), each carrying one datagram or a GSO batch.
    pub sends: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Receive calls that returned datagrams.
    pub recvs: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Sends the kernel refused (other than a full buffer): dropped.
    pub send_errors: u64,
}

/// One datagram (or GSO batch) waiting for room in the socket buffer.
struct Blocked {
    destination: SocketAddr,
    ecn: Option<EcnCodepoint>,
    segment_size: Option<usize>,
    contents: Vec<u8>,
}

/// A bound UDP socket, its quinn-udp state and its receive buffers.
pub(super) struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
    pub(super) token: Token,
    /// `BATCH` receive buffers of `MAX_DATAGRAM * gro_segments` bytes each.
    bufs: Vec<Vec<u8>>,
    metas: Vec<RecvMeta>,
    blocked: VecDeque<Blocked>,
    blocked_bytes: usize,
    writable_interest: bool,
    pub(super) stats: UdpStats,
}

impl Udp {
    /// Binds `addr` and registers the socket for reading under `token`.
    /// `batch`: how many buffers one receive call fills (`recvmmsg`);
    /// `buffer`: the socket's receive and send buffer sizes asked for (the
    /// kernel caps them; a refusal leaves its defaults).
    pub(super) fn bind(
        registry: &Registry,
        token: Token,
        addr: SocketAddr,
        batch: usize,
        buffer: usize,
    ) -> io::Result<Udp> {
        let mut socket = UdpSocket::bind(addr)?;
        let state = UdpSocketState::new((&socket).into())?;
        let _ = state.set_recv_buffer_size((&socket).into(), buffer);
        let _ = state.set_send_buffer_size((&socket).into(), buffer);
        registry.register(&mut socket, token, Interest::READABLE)?;
        let batch = batch.clamp(1, quinn_udp::BATCH_SIZE);
        let size = MAX_DATAGRAM * state.gro_segments().max(1);
        Ok(Udp {
            socket,
            state,
            token,
            bufs: vec![vec![0; size]; batch],
            metas: vec![RecvMeta::default(); batch],
            blocked: VecDeque::new(),
            blocked_bytes: 0,
            writable_interest: false,
            stats: UdpStats::default(),
        })
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Datagrams one GSO send may carry (1 without GSO).
    pub(super) fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments().clamp(1, MAX_GSO_SEGMENTS)
    }

    /// Whether the kernel may fragment datagrams (then no path MTU discovery).
    pub(super) fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    /// Whether sends are waiting for room in the socket buffer.
    pub(super) fn is_blocked(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// Sends `transmit` (the first `transmit.size` bytes of `buf`). A full
    /// socket buffer keeps it, and later ones, until the socket is writable
    /// ([`Udp::flush_blocked`]); beyond [`MAX_BLOCKED`] they are dropped
    /// (QUIC resends what is lost). Other errors (an unreachable peer) drop
    /// the datagram the same way.
    pub(super) fn send(&mut self, registry: &Registry, transmit: &Transmit, buf: &[u8]) {
        let contents = &buf[..transmit.size];
        if self.blocked.is_empty() && self.try_send(transmit.destination, transmit.ecn, transmit.segment_size, contents)
        {
            return;
        }
        if self.blocked_bytes + contents.len() <= MAX_BLOCKED {
            self.blocked_bytes += contents.len();
            self.blocked.push_back(Blocked {
                destination: transmit.destination,
                ecn: transmit.ecn,
                segment_size: transmit.segment_size,
                contents: contents.to_vec(),
            });
        }
        self.want_writable(registry, true);
    }

    /// True: sent (or dropped for good); false: the socket buffer is full.
    fn try_send(
        &mut self,
        destination: SocketAddr,
        ecn: Option<EcnCodepoint>,
        segment_size: Option<usize>,
        contents: &[u8],
    ) -> bool {
        let transmit = quinn_udp::Transmit {
            destination,
            ecn: ecn.and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
            contents,
            segment_size,
            src_ip: None,
        };
        match self.state.try_send((&self.socket).into(), &transmit) {
            Ok(()) => {
                self.stats.sends += 1;
                self.stats.datagrams_sent += segment_size.map_or(1, |s| contents.len().div_ceil(s.max(1))) as u64;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            // Not worth retrying (an MTU probe too large, an unreachable
            // peer): QUIC resends what is lost.
            Err(_) => {
                self.stats.send_errors += 1;
                true
            }
        }
    }

    /// Sends what waited for room, until the socket is full again.
    pub(super) fn flush_blocked(&mut self, registry: &Registry) {
        while let Some(b) = self.blocked.pop_front() {
            if !self.try_send(b.destination, b.ecn, b.segment_size, &b.contents) {
                self.blocked.push_front(b);
                return;
            }
            self.blocked_bytes -= b.contents.len();
        }
        self.want_writable(registry, false);
    }

    fn want_writable(&mut self, registry: &Registry, on: bool) {
        if self.writable_interest == on {
            return;
        }
        let interest = if on { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        // A failed reregistration leaves the old interest: sends wait for the next readable edge.
        if registry.reregister(&mut self.socket, self.token, interest).is_ok() {
            self.writable_interest = on;
        }
    }

    /// One receive call: hands every datagram it got to `each` (source,
    /// ECN, bytes). `Ok(false)`: nothing was waiting (`WouldBlock`).
    pub(super) fn recv(
        &mut self,
        mut each: impl FnMut(SocketAddr, Option<EcnCodepoint>, BytesMut),
    ) -> io::Result<bool> {
        let n = {
            let mut slices: Vec<IoSliceMut<'_>> = self.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            match self.state.recv((&self.socket).into(), &mut slices, &mut self.metas) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        };
        self.stats.recvs += 1;
        for (meta, buf) in self.metas.iter().zip(&self.bufs).take(n) {
            let ecn = meta.ecn.and_then(|e| EcnCodepoint::from_bits(e as u8));
            let stride = meta.stride.max(1);
            for datagram in buf[..meta.len].chunks(stride) {
                self.stats.datagrams_received += 1;
                each(meta.addr, ecn, BytesMut::from(datagram));
            }
        }
        Ok(true)
    }
}

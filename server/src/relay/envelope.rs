//! The relay's messages between nodes: one NATS message each, a fixed
//! 33-byte header then a body.
//!
//! ```text
//! kind u8 | token u64 BE | incarnation u64 BE | conn u64 BE | seq u64 BE | body
//! ```
//!
//! `token` is the lease token of the owner the connection is bound to (0
//! in `Alive`): an owner takes only messages carrying its own token, and an
//! edge only replies carrying its connection's, so an old owner resumed
//! after a takeover can neither take new connections nor write to them;
//! `incarnation` names one run of the edge node (drawn at its start), so a
//! restarted edge's connection numbers never meet its last run's; `conn`
//! is the edge's connection; `seq` counts the messages of one connection
//! in one direction (the open is 0, the first data 1), so a lost message is
//! seen as a gap and ends the connection instead of corrupting its stream.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};

/// The header's length.
pub const HEADER: usize = 33;

/// One relay message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// Edge to owner: a client connected (seq 0).
    Open {
        /// The edge's run.
        incarnation: u64,
        /// The edge's connection.
        conn: u64,
        /// The client's transport, as `Transport::as_str` spells it.
        transport: String,
        /// The client's address, for the core's per-source limits.
        peer: Option<SocketAddr>,
    },
    /// Either way: bytes of the connection's stream.
    Data {
        /// The edge's run.
        incarnation: u64,
        /// The edge's connection.
        conn: u64,
        /// This message's number on the connection, in its direction.
        seq: u64,
        /// The bytes.
        bytes: Bytes,
    },
    /// Either way: the connection is over (after the data before it).
    Close {
        /// The edge's run.
        incarnation: u64,
        /// The edge's connection.
        conn: u64,
        /// Why, for the log (never content).
        reason: String,
    },
    /// Edge to owner, every [`super::ALIVE_EVERY`]: this edge still relays.
    Alive {
        /// The edge's run.
        incarnation: u64,
    },
}

const OPEN: u8 = 1;
const DATA: u8 = 2;
const CLOSE: u8 = 3;
const ALIVE: u8 = 4;

/// Why a message is not an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Shorter than the header.
    #[error("relay message of {0} bytes, shorter than its {HEADER}-byte header")]
    Short(usize),
    /// An unknown kind.
    #[error("relay message of unknown kind {0}")]
    Kind(u8),
    /// An open or close whose body does not parse.
    #[error("relay message with a malformed body: {0}")]
    Body(&'static str),
}

impl Envelope {
    /// The message's bytes, for the owner whose lease token is `token`.
    #[must_use]
    pub fn encode(&self, token: u64) -> Bytes {
        let (kind, incarnation, conn, seq, body): (u8, u64, u64, u64, &[u8]) = match self {
            Envelope::Open { incarnation, conn, transport, peer } => {
                let peer = peer.map(|p| p.to_string()).unwrap_or_default();
                let mut b = BytesMut::with_capacity(HEADER + 2 + transport.len() + peer.len());
                put_header(&mut b, OPEN, token, *incarnation, *conn, 0);
                b.put_u8(u8::try_from(transport.len()).unwrap_or(u8::MAX));
                b.put_slice(&transport.as_bytes()[..transport.len().min(255)]);
                b.put_slice(peer.as_bytes());
                return b.freeze();
            }
            Envelope::Data { incarnation, conn, seq, bytes } => (DATA, *incarnation, *conn, *seq, bytes),
            Envelope::Close { incarnation, conn, reason } => (CLOSE, *incarnation, *conn, 0, reason.as_bytes()),
            Envelope::Alive { incarnation } => (ALIVE, *incarnation, 0, 0, &[]),
        };
        let mut b = BytesMut::with_capacity(HEADER + body.len());
        put_header(&mut b, kind, token, incarnation, conn, seq);
        b.put_slice(body);
        b.freeze()
    }

    /// Parses a message: the owner's token it carries, and the message
    /// (`bytes` is shared, not copied, for data).
    ///
    /// # Errors
    /// See [`EnvelopeError`].
    pub fn decode(bytes: &Bytes) -> Result<(u64, Envelope), EnvelopeError> {
        if bytes.len() < HEADER {
            return Err(EnvelopeError::Short(bytes.len()));
        }
        let u64_at = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
        let (kind, token, incarnation, conn, seq) = (bytes[0], u64_at(1), u64_at(9), u64_at(17), u64_at(25));
        Envelope::parse(bytes, kind, incarnation, conn, seq).map(|e| (token, e))
    }

    fn parse(bytes: &Bytes, kind: u8, incarnation: u64, conn: u64, seq: u64) -> Result<Envelope, EnvelopeError> {
        let body = &bytes[HEADER..];
        match kind {
            OPEN => {
                let (&n, rest) = body.split_first().ok_or(EnvelopeError::Body("open without a transport"))?;
                let n = usize::from(n);
                if rest.len() < n {
                    return Err(EnvelopeError::Body("open's transport is cut"));
                }
                let transport =
                    std::str::from_utf8(&rest[..n]).map_err(|_| EnvelopeError::Body("transport not UTF-8"))?;
                let peer = std::str::from_utf8(&rest[n..]).map_err(|_| EnvelopeError::Body("peer not UTF-8"))?;
                let peer = if peer.is_empty() {
                    None
                } else {
                    Some(peer.parse().map_err(|_| EnvelopeError::Body("peer is not an address"))?)
                };
                Ok(Envelope::Open { incarnation, conn, transport: transport.to_owned(), peer })
            }
            DATA => Ok(Envelope::Data { incarnation, conn, seq, bytes: bytes.slice(HEADER..) }),
            CLOSE => {
                let reason = String::from_utf8_lossy(body).into_owned();
                Ok(Envelope::Close { incarnation, conn, reason })
            }
            ALIVE => Ok(Envelope::Alive { incarnation }),
            other => Err(EnvelopeError::Kind(other)),
        }
    }
}

fn put_header(b: &mut BytesMut, kind: u8, token: u64, incarnation: u64, conn: u64, seq: u64) {
    b.put_u8(kind);
    b.put_u64(token);
    b.put_u64(incarnation);
    b.put_u64(conn);
    b.put_u64(seq);
}

/// The owner's heartbeat on [`super::Subjects::owner`]: its fencing token,
/// whether it is leaving (stopping: the edges stop relaying to it at once
/// instead of after a silence), and its node name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerBeat {
    /// The lease's token: a new owner has a greater one.
    pub token: u64,
    /// The owner is stopping.
    pub leaving: bool,
    /// The owner's node name, for the log.
    pub node: String,
}

impl OwnerBeat {
    /// The message's bytes: the token (u64 BE), a flags byte (bit 0:
    /// leaving), then the name.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(9 + self.node.len());
        b.put_u64(self.token);
        b.put_u8(u8::from(self.leaving));
        b.put_slice(self.node.as_bytes());
        b.freeze()
    }

    /// Parses a heartbeat.
    ///
    /// # Errors
    /// Shorter than a token and its flags.
    pub fn decode(bytes: &[u8]) -> Result<OwnerBeat, EnvelopeError> {
        if bytes.len() < 9 {
            return Err(EnvelopeError::Short(bytes.len()));
        }
        let token = u64::from_be_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
        let leaving = bytes[8] & 1 == 1;
        Ok(OwnerBeat { token, leaving, node: String::from_utf8_lossy(&bytes[9..]).into_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let all = [
            Envelope::Open {
                incarnation: 7,
                conn: 3,
                transport: "tcp".into(),
                peer: Some("127.0.0.1:4000".parse().unwrap()),
            },
            Envelope::Open { incarnation: 7, conn: 4, transport: "ws".into(), peer: Some("[::1]:9".parse().unwrap()) },
            Envelope::Open { incarnation: 7, conn: 5, transport: "mem".into(), peer: None },
            Envelope::Data { incarnation: 7, conn: 3, seq: 1, bytes: Bytes::from_static(b"frame") },
            Envelope::Data { incarnation: 7, conn: 3, seq: 2, bytes: Bytes::new() },
            Envelope::Close { incarnation: u64::MAX, conn: 3, reason: "peer closed".into() },
            Envelope::Alive { incarnation: 1 },
        ];
        for (token, e) in all.into_iter().enumerate() {
            let token = token as u64 * 1000;
            assert_eq!(Envelope::decode(&e.encode(token)), Ok((token, e.clone())), "{e:?}");
        }
    }

    #[test]
    fn the_header_is_what_the_docs_say() {
        let e = Envelope::Data { incarnation: 0x0102, conn: 0x0304, seq: 0x0506, bytes: Bytes::from_static(b"xy") };
        let b = e.encode(0x0708);
        assert_eq!(b.len(), HEADER + 2);
        assert_eq!(b[0], DATA);
        assert_eq!(&b[1..9], &0x0708u64.to_be_bytes());
        assert_eq!(&b[9..17], &0x0102u64.to_be_bytes());
        assert_eq!(&b[17..25], &0x0304u64.to_be_bytes());
        assert_eq!(&b[25..33], &0x0506u64.to_be_bytes());
        assert_eq!(&b[33..], b"xy");
    }

    #[test]
    fn malformed_messages_are_refused_not_misread() {
        assert_eq!(Envelope::decode(&Bytes::from_static(&[2; 32])), Err(EnvelopeError::Short(32)));
        let mut unknown = Envelope::Alive { incarnation: 1 }.encode(0).to_vec();
        unknown[0] = 9;
        assert_eq!(Envelope::decode(&Bytes::from(unknown)), Err(EnvelopeError::Kind(9)));
        let open = Envelope::Open { incarnation: 1, conn: 1, transport: "tcp".into(), peer: None }.encode(1);
        // The transport's length says 3 bytes; only 2 follow.
        assert!(matches!(Envelope::decode(&open.slice(..HEADER + 3)), Err(EnvelopeError::Body(_))));
        let mut bad_peer = open.to_vec();
        bad_peer.extend_from_slice(b"not an address");
        assert!(matches!(Envelope::decode(&Bytes::from(bad_peer)), Err(EnvelopeError::Body(_))));
        assert_eq!(OwnerBeat::decode(&[0; 8]), Err(EnvelopeError::Short(8)));
        for leaving in [false, true] {
            let beat = OwnerBeat { token: 42, leaving, node: "b".into() };
            assert_eq!(OwnerBeat::decode(&beat.encode()), Ok(beat));
        }
    }
}

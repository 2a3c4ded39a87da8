//! [`Lone`]: a client alone, against a hand-played server.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{PASSPHRASE, PASSWORD, start};
use crate::machine::checked::Checked;
use crate::token::{self, TokenKind};
use crate::wire::{
    Connected, DeliveryAck, Event, EventBody, FrameDecoder, Limits, Message, Opcode, RequestBody, Response,
    ResponseBody, Status, Tokens, UserMessage,
};
use crate::{Client, ClientConfig, ClientEvent, ClientOutput, Now};

/// A client alone, fed hand-made frames: everything it writes is decoded.
pub(crate) struct Lone {
    pub(crate) client: Client,
    pub(crate) now: Now,
    pub(crate) sent: Vec<Message>,
    pub(crate) events: Vec<ClientEvent>,
    pub(crate) closes: Vec<(u16, String)>,
    pub(crate) timeout: Option<Instant>,
    decoder: FrameDecoder,
    store: Checked<Client>,
}

impl Lone {
    pub(crate) fn new(config: ClientConfig) -> Lone {
        let now = start();
        Lone {
            client: Client::new(config, now),
            now,
            sent: Vec::new(),
            events: Vec::new(),
            closes: Vec::new(),
            timeout: None,
            decoder: FrameDecoder::new(Limits::DEFAULT),
            store: Checked::default(),
        }
    }

    /// Drains the client's outputs.
    pub(crate) fn drain(&mut self) {
        for output in self.store.turn(&mut self.client) {
            match output {
                ClientOutput::Transmit(bytes) => {
                    self.decoder.push(&bytes);
                    while let Some(frame) = self.decoder.next_frame().expect("client wrote a valid stream") {
                        let msg = Message::decode(&frame, &Limits::DEFAULT).expect("client wrote a valid frame");
                        self.sent.push(msg);
                    }
                }
                ClientOutput::Event(e) => self.events.push(e),
                ClientOutput::Close { code, reason } => self.closes.push((code, reason)),
                ClientOutput::Timeout(t) => {
                    self.timeout = t;
                    return;
                }
            }
        }
    }

    pub(crate) fn connect(&mut self) {
        self.client.connected(self.now);
        self.decoder = FrameDecoder::new(Limits::DEFAULT);
        self.drain();
    }

    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.client.handle_input(self.now, bytes);
        self.drain();
    }

    pub(crate) fn feed_event(&mut self, body: impl Into<EventBody>) {
        let msg = Message::Event(Event { request_id: 0, timestamp_ms: self.now.unix_ms, body: body.into() });
        self.feed(&msg.to_bytes(b""));
    }

    pub(crate) fn advance(&mut self, d: Duration) {
        self.now = self.now.advance(d);
        self.client.handle_timeout(self.now);
        self.drain();
    }
}

/// Answers the request `id` (opcode `opcode`) as the server would.
pub(super) fn response(opcode: Opcode, id: u32, status: Status, code: u16, body: ResponseBody) -> Vec<u8> {
    let r = Response { opcode, request_id: id, timestamp_ms: 0, status, code, body };
    Message::Response(r).to_bytes(b"").to_vec()
}

/// The id of the last request the client wrote.
pub(super) fn last_request(lone: &Lone) -> (Opcode, u32) {
    match lone.sent.last() {
        Some(Message::Request(r)) => (r.body.opcode(), r.request_id),
        other => panic!("expected a request, got {other:?}"),
    }
}

/// A client logged in as alice against a hand-played server.
pub(super) fn logged_in(config: ClientConfig) -> Lone {
    let mut lone = Lone::new(config);
    lone.connect();
    let now = lone.now;
    lone.client.login(now, "alice", PASSWORD, PASSPHRASE).unwrap();
    lone.drain();
    let (op, id) = last_request(&lone);
    assert_eq!(op, Opcode::Login);
    lone.feed(&response(op, id, Status::InProgress, 202, ResponseBody::Empty));
    let (op, id) = last_request(&lone);
    assert_eq!(op, Opcode::Passphrase);
    let tokens = Tokens {
        access_token: token::encode(TokenKind::Access, "QxWnTrBkLmPzYvHd"),
        refresh_token: token::encode(TokenKind::Refresh, "MfRtGhJkLpQwErTy"),
        access_expires_ms: now.unix_ms + 900_000,
        refresh_expires_ms: now.unix_ms + 9_000_000,
    };
    lone.feed(&response(op, id, Status::Valid, 200, ResponseBody::Tokens(tokens)));
    lone.feed_event(Connected { username: "alice".into(), queued: 0 });
    assert!(lone.client.is_logged_in());
    lone.events.clear();
    lone.sent.clear();
    lone
}

pub(super) fn user_message(from: &str, seq: u64) -> Vec<u8> {
    let body = UserMessage { from: from.into(), seq, sent_ms: 1, sealed: Bytes::from(format!("{from}-{seq}")) };
    Message::Event(crate::wire::Event { request_id: 0, timestamp_ms: 0, body: body.into() }).to_bytes(b"").to_vec()
}

pub(super) fn acks(lone: &Lone) -> Vec<(u32, String, u64)> {
    lone.sent
        .iter()
        .filter_map(|m| match m {
            Message::Request(r) => match &r.body {
                RequestBody::DeliveryAck(DeliveryAck { peer, seq }) => Some((r.request_id, peer.clone(), *seq)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

pub(super) fn error_body(reason: &str) -> ResponseBody {
    ResponseBody::Error(crate::wire::ErrorBody { reason: reason.into(), retry_after_ms: 0 })
}

//! One server-side QUIC connection: quinn-proto's connection state, the
//! session's stream, its outbound queue and where it is in its life.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{Connection, Dir, Event, ReadError, StreamEvent, StreamId, VarInt, WriteError};

use super::{CODE_CLOSED, CODE_ONE_STREAM, describe};
use crate::hub::{ConnId, ConnIds, NetEvent, Transport};

/// What servicing a connection found.
#[derive(Debug, Default)]
pub(super) struct Serviced {
    /// The read budget ran out with input left: read again next turn.
    pub(super) more_input: bool,
}

/// One accepted connection.
pub(super) struct Conn {
    pub(super) conn: Connection,
    pub(super) peer: SocketAddr,
    /// Set when `Opened` is reported (the session's stream arrived).
    pub(super) id: Option<ConnId>,
    stream: Option<StreamId>,
    connected: bool,
    /// The stream must be open by then (cleared once it is).
    pub(super) handshake_deadline: Option<Instant>,
    /// The loop asked for a close: the queue is flushed, the stream
    /// finished and acknowledged by this instant, or the connection closed.
    pub(super) closing: Option<Instant>,
    finished: bool,
    /// The stream may have input we have not read.
    readable: bool,
    /// The turn (the loop's `now`) of the last read, and the bytes read in it.
    read_turn: Option<(Instant, usize)>,
    /// Frames not yet taken by the stream (flow control, send window).
    out: VecDeque<Bytes>,
    backlog: usize,
    /// `Closed` was reported (or there is nothing to report: never opened).
    pub(super) reported: bool,
    /// Its entry in the server's timer set.
    pub(super) timer: Option<Instant>,
    /// On the server's list of connections to transmit for.
    pub(super) dirty: bool,
}

impl Conn {
    pub(super) fn new(conn: Connection, peer: SocketAddr, handshake_deadline: Instant) -> Conn {
        Conn {
            conn,
            peer,
            id: None,
            stream: None,
            connected: false,
            handshake_deadline: Some(handshake_deadline),
            closing: None,
            finished: false,
            readable: false,
            read_turn: None,
            out: VecDeque::new(),
            backlog: 0,
            reported: false,
            timer: None,
            dirty: false,
        }
    }

    /// Opened, not closing, not lost: it takes frames.
    pub(super) fn is_open(&self) -> bool {
        self.stream.is_some() && self.closing.is_none() && !self.reported && !self.conn.is_closed()
    }

    /// Bytes queued and not yet taken by the stream.
    pub(super) fn backlog(&self) -> usize {
        self.backlog
    }

    /// The earliest instant something is due: quinn's timer, the handshake's or the close's deadline.
    pub(super) fn deadline(&mut self) -> Option<Instant> {
        [self.conn.poll_timeout(), self.handshake_deadline, self.closing].into_iter().flatten().min()
    }

    /// Reports `Closed` once (nothing if it never opened).
    pub(super) fn report(&mut self, reason: String, out: &mut Vec<NetEvent>) {
        if !self.reported {
            self.reported = true;
            if let Some(conn) = self.id {
                out.push(NetEvent::Closed { conn, reason });
            }
        }
    }

    /// Closes the connection with `code` and reports `Closed` with `reason`.
    pub(super) fn close(
        &mut self,
        now: Instant,
        code: VarInt,
        why: &'static [u8],
        reason: String,
        out: &mut Vec<NetEvent>,
    ) {
        if !self.conn.is_closed() {
            self.conn.close(now, code, Bytes::from_static(why));
        }
        self.report(reason, out);
    }

    /// Handles the application events quinn queued, reads the stream (at
    /// most `budget` bytes) and writes what is queued.
    pub(super) fn service(&mut self, now: Instant, ids: &ConnIds, budget: usize, out: &mut Vec<NetEvent>) -> Serviced {
        while let Some(event) = self.conn.poll() {
            match event {
                Event::Connected => {
                    self.connected = true;
                    self.accept_streams(ids, out);
                }
                Event::Stream(StreamEvent::Opened { .. }) => self.accept_streams(ids, out),
                Event::Stream(StreamEvent::Readable { id }) if Some(id) == self.stream => self.readable = true,
                Event::Stream(StreamEvent::Finished { id }) if Some(id) == self.stream && self.closing.is_some() => {
                    self.close(now, CODE_CLOSED, b"closed", "closed by the server".into(), out);
                }
                Event::Stream(StreamEvent::Stopped { id, error_code }) if Some(id) == self.stream => {
                    let reason = if self.closing.is_some() {
                        "closed by the server".into()
                    } else {
                        format!("peer stopped the stream (code {error_code})")
                    };
                    self.close(now, CODE_CLOSED, b"closed", reason, out);
                }
                Event::ConnectionLost { reason } => self.report(describe(&reason), out),
                // Writable: written below; the rest does not concern one stream of bytes.
                _ => {}
            }
        }
        let mut serviced = Serviced::default();
        if self.readable && !self.reported {
            serviced.more_input = self.read(now, budget, out);
        }
        if !self.reported
            && let Err(reason) = self.write_out()
        {
            self.close(now, CODE_CLOSED, b"closed", reason, out);
        }
        serviced
    }

    /// Takes the session's stream once connected (reporting `Opened`) and
    /// refuses every later one (stop and reset, code 3).
    fn accept_streams(&mut self, ids: &ConnIds, out: &mut Vec<NetEvent>) {
        if !self.connected {
            return;
        }
        while let Some(id) = self.conn.streams().accept(Dir::Bi) {
            if self.stream.is_none() && !self.reported && !self.conn.is_closed() {
                let conn = ids.next();
                self.stream = Some(id);
                self.id = Some(conn);
                self.handshake_deadline = None;
                self.readable = true;
                out.push(NetEvent::Opened { conn, transport: Transport::Quic, peer: Some(self.peer), handle: None });
            } else {
                // Either side may already be closed by the peer: nothing to refuse then.
                let _ = self.conn.recv_stream(id).stop(CODE_ONE_STREAM);
                let _ = self.conn.send_stream(id).reset(CODE_ONE_STREAM);
            }
        }
    }

    /// Reads up to what is left of this turn's `budget` (one turn: one
    /// `now` of the loop) into one `Received`. True: the budget ran out with
    /// input left. The end of the stream ends the connection.
    fn read(&mut self, now: Instant, budget: usize, out: &mut Vec<NetEvent>) -> bool {
        let (Some(stream), Some(conn)) = (self.stream, self.id) else { return false };
        let spent = match self.read_turn {
            Some((turn, spent)) if turn == now => spent,
            _ => 0,
        };
        let budget = budget.max(1).saturating_sub(spent);
        if budget == 0 {
            return true;
        }
        let mut got = Vec::new();
        let mut more = false;
        let mut end = None;
        {
            let mut recv = self.conn.recv_stream(stream);
            let Ok(mut chunks) = recv.read(true) else {
                self.readable = false;
                return false;
            };
            loop {
                if got.len() >= budget {
                    more = true;
                    break;
                }
                match chunks.next(budget - got.len()) {
                    Ok(Some(chunk)) => got.extend_from_slice(&chunk.bytes),
                    Ok(None) => {
                        end = Some("peer finished the stream".to_owned());
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                    Err(ReadError::Reset(code)) => {
                        end = Some(format!("peer reset the stream (code {code})"));
                        break;
                    }
                }
            }
            // Flow control credit goes out with the next transmit.
            let _ = chunks.finalize();
        }
        self.readable = more;
        self.read_turn = Some((now, spent + got.len()));
        if !got.is_empty() {
            out.push(NetEvent::Received { conn, bytes: got });
        }
        if let Some(reason) = end {
            self.close(now, CODE_CLOSED, b"closed", reason, out);
        }
        more
    }

    /// Queues `bytes` after what is queued and writes what the stream takes.
    pub(super) fn queue(&mut self, bytes: Bytes) -> Result<(), String> {
        if !bytes.is_empty() {
            self.backlog += bytes.len();
            self.out.push_back(bytes);
        }
        self.write_out()
    }

    /// Starts a graceful close: flush, finish the stream, wait for the
    /// peer's acknowledgement until `deadline`.
    pub(super) fn start_close(&mut self, deadline: Instant) -> Result<(), String> {
        self.closing = Some(deadline);
        self.write_out()
    }

    /// Writes the queue into the stream until it blocks; once a closing
    /// connection's queue is empty, finishes the stream.
    fn write_out(&mut self) -> Result<(), String> {
        let Some(stream) = self.stream else { return Ok(()) };
        if self.conn.is_closed() {
            return Ok(());
        }
        while !self.out.is_empty() {
            let written = self.conn.send_stream(stream).write_chunks(self.out.make_contiguous());
            match written {
                Ok(w) => {
                    self.backlog -= w.bytes;
                    self.out.drain(..w.chunks);
                    if w.chunks == 0 || w.bytes == 0 {
                        break;
                    }
                }
                Err(WriteError::Blocked) => break,
                Err(WriteError::Stopped(code)) => return Err(format!("peer stopped the stream (code {code})")),
                Err(WriteError::ClosedStream) => return Err("stream write failed: the stream is closed".into()),
            }
        }
        if self.closing.is_some() && self.out.is_empty() && !self.finished {
            self.finished = true;
            if let Err(e) = self.conn.send_stream(stream).finish() {
                return Err(format!("stream finish failed: {e}"));
            }
        }
        Ok(())
    }
}

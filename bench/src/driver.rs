//! One client: a sans-IO [`Client`] machine over a blocking [`Link`].

use std::collections::VecDeque;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use confab_proto::{Client, ClientConfig, ClientEvent, ClientOutput, Now};
use confab_transports::link::Link;

use crate::BenchError;

/// The wall and monotonic clocks, read together.
pub(crate) fn now() -> Now {
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Now::new(Instant::now(), unix_ms)
}

/// A client machine and its link: what one bench thread drives.
pub(crate) struct Peer {
    pub(crate) client: Client,
    link: Box<dyn Link>,
    /// The machine's next timer.
    timer: Option<Instant>,
    /// Events not yet taken.
    pub(crate) events: VecDeque<ClientEvent>,
}

impl Peer {
    /// A client on a fresh link.
    pub(crate) fn new(link: Box<dyn Link>) -> Result<Peer, BenchError> {
        let t = now();
        let config = ClientConfig { max_outbox: crate::RATE_MAX_IN_FLIGHT + 24, ..ClientConfig::default() };
        let mut client = Client::new(config, t);
        client.connected(t);
        let mut peer = Peer { client, link, timer: None, events: VecDeque::new() };
        peer.pump()?;
        Ok(peer)
    }

    /// Drains the machine: writes its frames, keeps its events and its timer.
    pub(crate) fn pump(&mut self) -> Result<(), BenchError> {
        loop {
            match self.client.poll_output() {
                ClientOutput::Transmit(bytes) => {
                    self.link.send(&bytes).map_err(|e| BenchError(format!("send failed: {e}")))?;
                }
                ClientOutput::Event(e) => self.events.push_back(e),
                ClientOutput::Close { code, reason } => {
                    return Err(BenchError(format!("client closed the connection: {code} {reason}")));
                }
                ClientOutput::Timeout(t) => {
                    self.timer = t;
                    return Ok(());
                }
            }
        }
    }

    /// Waits for input until `deadline` (or the machine's timer), feeds it
    /// to the machine and drains it. New events land in [`Peer::events`].
    pub(crate) fn step(&mut self, deadline: Instant) -> Result<(), BenchError> {
        let wake = self.timer.map_or(deadline, |t| t.min(deadline));
        let got = self.link.recv(wake).map_err(|e| BenchError(format!("connection lost: {e}")))?;
        if let Some(bytes) = got {
            self.client.handle_input(now(), &bytes);
        }
        if self.timer.is_some_and(|t| t <= Instant::now()) {
            self.client.handle_timeout(now());
        }
        self.pump()
    }

    /// Steps until an event for which `f` returns `Some` arrives (it is taken
    /// out of the queue; other events stay), or `deadline` passes.
    pub(crate) fn wait_for<T>(
        &mut self,
        deadline: Instant,
        what: &str,
        mut f: impl FnMut(&ClientEvent) -> Option<T>,
    ) -> Result<T, BenchError> {
        // What the command queued goes out first.
        self.pump()?;
        let mut scanned = 0;
        loop {
            while scanned < self.events.len() {
                if let Some(t) = f(&self.events[scanned]) {
                    self.events.remove(scanned);
                    return Ok(t);
                }
                scanned += 1;
            }
            if let Some(ClientEvent::Closed { code, reason }) =
                self.events.iter().find(|e| matches!(e, ClientEvent::Closed { .. }))
            {
                return Err(BenchError(format!("waiting for {what}: connection closed: {code} {reason}")));
            }
            if Instant::now() >= deadline {
                return Err(BenchError(format!("timed out waiting for {what}")));
            }
            self.step(deadline)?;
        }
    }

    /// Waits for the outcome of request `id`: `Ok(code)` if done, an error if it failed.
    pub(crate) fn outcome(&mut self, deadline: Instant, id: u32, what: &str) -> Result<u16, BenchError> {
        self.wait_for(deadline, what, |e| match e {
            ClientEvent::Done { request_id, code, .. } if *request_id == id => Some(Ok(*code)),
            ClientEvent::Failed { request_id, code, reason, .. } if *request_id == id => {
                Some(Err(BenchError(format!("{what} failed: {code} {reason}"))))
            }
            ClientEvent::Indeterminate { request_id, reason, .. } if *request_id == id => {
                Some(Err(BenchError(format!("{what} unconfirmed: {reason}"))))
            }
            _ => None,
        })?
    }

    /// Closes the link (best effort).
    pub(crate) fn close(mut self) {
        self.client.close(now());
        loop {
            match self.client.poll_output() {
                ClientOutput::Transmit(bytes) => {
                    let _ = self.link.send(&bytes);
                }
                ClientOutput::Event(_) | ClientOutput::Close { .. } => {}
                ClientOutput::Timeout(_) => break,
            }
        }
        self.link.close();
    }
}

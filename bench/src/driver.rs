//! One client: a sans-IO [`Client`] machine over a blocking [`Link`],
//! driven by the transports' [`Driver`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use confab_proto::{Client, ClientConfig, ClientEvent, Ephemeral, Now};
use confab_transports::link::{DriveError, Driver, Link};

use crate::BenchError;

/// The wall and monotonic clocks, read together.
pub fn now() -> Now {
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Now::new(Instant::now(), unix_ms)
}

/// A client machine and its link: what one bench thread drives, with the
/// transports' [`Driver`] (the bench keeps no state across runs: its turns
/// commit into [`Ephemeral`]).
pub struct Peer {
    driver: Driver<Client, Ephemeral>,
}

impl Peer {
    /// A client on a fresh link.
    pub fn new(link: Box<dyn Link>, ack_delay: std::time::Duration) -> Result<Peer, BenchError> {
        let t = now();
        let config = ClientConfig { max_outbox: crate::RATE_MAX_IN_FLIGHT + 24, ack_delay, ..ClientConfig::default() };
        let mut driver = Driver::new(Client::new(config, t), Ephemeral, Arc::new(now));
        driver.connect(link).map_err(failed)?;
        Ok(Peer { driver })
    }

    /// The client machine, for commands (then [`Peer::pump`]).
    pub fn client(&mut self) -> &mut Client {
        self.driver.machine_mut()
    }

    /// Events not yet taken.
    pub fn events(&mut self) -> &mut VecDeque<ClientEvent> {
        self.driver.events_mut()
    }

    /// Events not yet taken, read only.
    pub fn events_ref(&self) -> &VecDeque<ClientEvent> {
        self.driver.events()
    }

    /// Drains the machine: writes its frames, keeps its events and its timer.
    pub fn pump(&mut self) -> Result<(), BenchError> {
        self.driver.pump().map(drop).map_err(failed)
    }

    /// Waits for input until `deadline` (or the machine's timer), feeds it
    /// to the machine and drains it. New events land in [`Peer::events`].
    pub fn step(&mut self, deadline: Instant) -> Result<(), BenchError> {
        self.driver.step(deadline).map(drop).map_err(failed)
    }

    /// Steps until an event for which `f` returns `Some` arrives (it is taken
    /// out of the queue; other events stay), or `deadline` passes.
    pub fn wait_for<T>(
        &mut self,
        deadline: Instant,
        what: &str,
        mut f: impl FnMut(&ClientEvent) -> Option<T>,
    ) -> Result<T, BenchError> {
        // What the command queued goes out first.
        self.pump()?;
        let mut scanned = 0;
        loop {
            while scanned < self.events().len() {
                if let Some(t) = f(&self.events()[scanned]) {
                    self.events().remove(scanned);
                    return Ok(t);
                }
                scanned += 1;
            }
            if let Some(ClientEvent::Closed { code, reason }) =
                self.events().iter().find(|e| matches!(e, ClientEvent::Closed { .. }))
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
    pub fn outcome(&mut self, deadline: Instant, id: u32, what: &str) -> Result<u16, BenchError> {
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
    pub fn close(mut self) {
        let _ = self.driver.close();
    }
}

/// A driver error as the bench reports it.
fn failed(e: DriveError<Infallible>) -> BenchError {
    match e {
        DriveError::Store(never) => match never {},
        DriveError::LinkLost(e) => BenchError(format!("connection lost: {e}")),
        DriveError::Closed { code, reason } => BenchError(format!("client closed the connection: {code} {reason}")),
    }
}

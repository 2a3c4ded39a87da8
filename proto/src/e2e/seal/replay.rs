//! The receiving side: which counters of which epochs were accepted
//! ([`ReplayWindow`], [`ReplayState`]) and the [`Opener`] that checks a
//! blob against them. See "Replays" in the [module docs](super).

use std::collections::BTreeMap;

use super::{
    ConversationId, Epoch, Header, MAX_EPOCHS, OpenError, Opened, REPLAY_WINDOW, StreamKey, associated_data,
    open_message, peek_header,
};

/// The counters a receiver has accepted in one epoch: the highest, and which
/// of the [`REPLAY_WINDOW`] counters below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// `None` until the first message.
    highest: Option<u64>,
    /// Bit `i` set: counter `highest - i` was accepted (bit 0 is `highest`).
    seen: u64,
}

impl ReplayWindow {
    /// A window that has seen nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores a window from [`highest`](Self::highest) and [`bitmap`](Self::bitmap).
    #[must_use]
    pub fn from_parts(highest: Option<u64>, bitmap: u64) -> Self {
        match highest {
            Some(_) => Self { highest, seen: bitmap | 1 },
            None => Self::default(),
        }
    }

    /// The highest counter accepted, if any.
    #[must_use]
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Bit `i` set: counter `highest - i` was accepted.
    #[must_use]
    pub fn bitmap(&self) -> u64 {
        self.seen
    }

    /// Whether `counter` would be accepted (does not record it).
    pub fn check(&self, counter: u64) -> Result<(), OpenError> {
        let Some(highest) = self.highest else { return Ok(()) };
        if counter > highest {
            return Ok(());
        }
        let behind = highest - counter;
        if behind >= REPLAY_WINDOW {
            return Err(OpenError::TooOld { counter, highest });
        }
        if self.seen & (1u64 << behind) != 0 {
            return Err(OpenError::Replayed { counter });
        }
        Ok(())
    }

    /// Records `counter` as accepted. Call only after [`check`](Self::check)
    /// and authentication succeeded.
    pub fn accept(&mut self, counter: u64) {
        match self.highest {
            None => {
                self.highest = Some(counter);
                self.seen = 1;
            }
            Some(highest) if counter > highest => {
                let shift = counter - highest;
                self.seen = if shift >= 64 { 1 } else { (self.seen << shift) | 1 };
                self.highest = Some(counter);
            }
            Some(highest) => {
                let behind = highest - counter;
                if behind < 64 {
                    self.seen |= 1u64 << behind;
                }
            }
        }
    }
}

/// What a receiver remembers of one epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EpochRecord {
    /// The epoch.
    pub epoch: Epoch,
    /// Highest counter accepted in it.
    pub highest: Option<u64>,
    /// Replay bitmap below it (see [`ReplayWindow::bitmap`]).
    pub bitmap: u64,
    /// Newest sender timestamp accepted in it.
    pub newest_ms: u64,
}

/// What one receiver has accepted of one stream: the epochs it remembers
/// (at most [`MAX_EPOCHS`]) and the floor below which an unknown epoch is
/// refused. See the [module docs](super).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayState {
    epochs: BTreeMap<Epoch, (ReplayWindow, u64)>,
    floor_ms: Option<u64>,
}

impl ReplayState {
    /// Nothing accepted yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores a persisted state (see [`records`](Self::records) and
    /// [`floor_ms`](Self::floor_ms)). Extra records beyond [`MAX_EPOCHS`]
    /// are forgotten as usual.
    #[must_use]
    pub fn from_parts(records: &[EpochRecord], floor_ms: Option<u64>) -> Self {
        let mut state = Self { epochs: BTreeMap::new(), floor_ms };
        for r in records {
            state.epochs.insert(r.epoch, (ReplayWindow::from_parts(r.highest, r.bitmap), r.newest_ms));
        }
        state.forget_excess();
        state
    }

    /// Every remembered epoch, in epoch order (to persist them).
    #[must_use]
    pub fn records(&self) -> Vec<EpochRecord> {
        self.epochs
            .iter()
            .map(|(epoch, (w, newest_ms))| EpochRecord {
                epoch: *epoch,
                highest: w.highest(),
                bitmap: w.bitmap(),
                newest_ms: *newest_ms,
            })
            .collect()
    }

    /// Messages of unknown epochs must be newer than this (Unix milliseconds,
    /// sender clock); `None` until an epoch was forgotten.
    #[must_use]
    pub fn floor_ms(&self) -> Option<u64> {
        self.floor_ms
    }

    /// The window of `epoch`, if remembered.
    #[must_use]
    pub fn window(&self, epoch: &Epoch) -> Option<ReplayWindow> {
        self.epochs.get(epoch).map(|(w, _)| *w)
    }

    /// Whether a message with this header could be new, before its tag is
    /// checked (a cheap early refusal; [`accept`](Self::accept) decides).
    pub fn precheck(&self, header: &Header) -> Result<(), OpenError> {
        match self.epochs.get(&header.epoch) {
            Some((window, _)) => window.check(header.counter),
            None => Ok(()),
        }
    }

    /// Records an authenticated message, or refuses it as not new.
    ///
    /// A message sealed no later than the floor is refused whatever its
    /// epoch: an epoch forgotten and then heard from again (a sending
    /// session that outlived 512 others) comes back with an empty window,
    /// and its older messages must not pass through it a second time.
    pub fn accept(&mut self, header: &Header, sent_ms: u64) -> Result<(), OpenError> {
        if let Some(floor_ms) = self.floor_ms.filter(|floor| sent_ms <= *floor) {
            return Err(OpenError::Stale { sent_ms, floor_ms });
        }
        match self.epochs.get_mut(&header.epoch) {
            Some((window, newest)) => {
                window.check(header.counter)?;
                window.accept(header.counter);
                *newest = (*newest).max(sent_ms);
            }
            None => {
                let mut window = ReplayWindow::new();
                window.accept(header.counter);
                self.epochs.insert(header.epoch, (window, sent_ms));
                self.forget_excess();
            }
        }
        Ok(())
    }

    /// Forgets the epochs with the oldest newest message beyond
    /// [`MAX_EPOCHS`], raising the floor to cover them.
    fn forget_excess(&mut self) {
        while self.epochs.len() > MAX_EPOCHS {
            let Some((&epoch, &(_, newest))) = self.epochs.iter().min_by_key(|(e, (_, newest))| (*newest, **e)) else {
                return;
            };
            self.epochs.remove(&epoch);
            self.floor_ms = Some(self.floor_ms.map_or(newest, |floor| floor.max(newest)));
        }
    }
}

/// The receiving side of one stream: its key and what was accepted.
#[derive(Debug, Clone)]
pub struct Opener {
    stream: StreamKey,
    state: ReplayState,
}

impl Opener {
    /// A stream with nothing accepted yet.
    #[must_use]
    pub fn new(stream: StreamKey) -> Self {
        Self { stream, state: ReplayState::new() }
    }

    /// Resumes a stream with a persisted replay state.
    #[must_use]
    pub fn resume(stream: StreamKey, state: ReplayState) -> Self {
        Self { stream, state }
    }

    /// The stream's key (to persist it, encrypted).
    #[must_use]
    pub fn stream(&self) -> &StreamKey {
        &self.stream
    }

    /// What was accepted (to persist it).
    #[must_use]
    pub fn state(&self) -> &ReplayState {
        &self.state
    }

    /// Opens a blob from `sender` in `conversation`: checks the version, the
    /// window, the tag (in constant time), the floor, then records it.
    pub fn open(&mut self, conversation: &ConversationId, sender: &str, blob: &[u8]) -> Result<Opened, OpenError> {
        open_stream(&self.stream, &mut self.state, conversation, sender, blob)
    }
}

/// Opens a message of `stream` against `state` (see [`Opener::open`]).
pub(crate) fn open_stream(
    stream: &StreamKey,
    state: &mut ReplayState,
    conversation: &ConversationId,
    sender: &str,
    blob: &[u8],
) -> Result<Opened, OpenError> {
    let header = peek_header(blob)?;
    state.precheck(&header)?;
    let keys = stream.epoch_keys(&header.epoch);
    let (header, opened) = open_message(&keys, &associated_data(conversation, sender), blob)?;
    state.accept(&header, opened.sent_ms)?;
    Ok(opened)
}

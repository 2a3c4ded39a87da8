//! The durability barrier: what a machine changed is made durable before
//! any frame that depends on it leaves.
//!
//! Every machine in this crate works in *turns*: an input (bytes, a timer, a
//! command, a job result) changes its state, and draining it gives the
//! frames to write. A frame may acknowledge something (a message stored, a
//! token issued, a delivery received), so it must not reach a peer before
//! the state it acknowledges survives a crash. [`Durable`] is the one place
//! where that happens: a drained turn hands out its frames only through a
//! `commit` that takes a `Durable` store first (see
//! [`server::Turn`](crate::server::Turn)).
//!
//! Stores implement `Durable<T>` for what they persist: the server's stores
//! take a turn's [`Change`](crate::server::Change)s as one batch (one
//! transaction); a client profile takes the client machine and writes its
//! snapshot, whenever the machine's state changed
//! ([`ClientTurn`](crate::machine::ClientTurn)).

/// A store that makes a machine's state durable.
pub trait Durable<T: ?Sized> {
    /// Why a commit failed. The turn's frames are then never written: the
    /// caller stops (or closes the affected sessions) instead.
    type Error;

    /// Makes `item` durable, all of it or nothing: once this returns `Ok`, a
    /// crash loses none of it.
    fn commit(&mut self, item: &T) -> Result<(), Self::Error>;
}

impl<T: ?Sized, D: Durable<T> + ?Sized> Durable<T> for &mut D {
    type Error = D::Error;

    fn commit(&mut self, item: &T) -> Result<(), D::Error> {
        (**self).commit(item)
    }
}

/// A store that keeps nothing, for machines whose state need not outlive the
/// process: benchmarks, one-shot commands that hold no profile, tests that
/// never restart. Using it says so in the code, where a reader sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ephemeral;

impl<T: ?Sized> Durable<T> for Ephemeral {
    type Error = std::convert::Infallible;

    fn commit(&mut self, _item: &T) -> Result<(), std::convert::Infallible> {
        Ok(())
    }
}

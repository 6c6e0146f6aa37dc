//! What the main loop tells the worker threads about the connection.

use crossbeam_channel::{Receiver, Sender};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkChange {
    /// A ConnAck arrived (and `Online` was published): send fresh data now.
    Up,
    /// The connection broke.
    Down,
}

/// A small channel per worker. The main loop never blocks on it (`try_send`); workers drain
/// it at once, so it is never full in practice.
pub fn channel() -> (Sender<LinkChange>, Receiver<LinkChange>) {
    crossbeam_channel::bounded(8)
}

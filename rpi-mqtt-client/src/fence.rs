//! The Pi's leader fence (docs/protocol.md, "Fencing on the Pi"), shared by the two threads
//! that see epochs: the main loop (the `Online` statuses of servers) and the `vehicles` thread
//! (segments and actions). The rule itself is `common::leader::Fence`'s; this only shares it.

use std::sync::{Arc, Mutex};

use common::leader::Fence;

#[derive(Debug, Clone, Default)]
pub struct SharedFence(Arc<Mutex<Fence>>);

impl SharedFence {
    fn with<T>(&self, f: impl FnOnce(&mut Fence) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The highest epoch seen.
    pub fn highest(&self) -> u32 {
        self.with(|f| f.highest())
    }

    /// Raises the fence (an order, or a server's `Online` status).
    pub fn raise(&self, epoch: u32) {
        self.with(|f| f.raise(epoch))
    }

    /// Raises the fence and says whether an order with `epoch` is admitted (not lower).
    pub fn admit(&self, epoch: u32) -> bool {
        self.with(|f| f.admit(epoch))
    }
}

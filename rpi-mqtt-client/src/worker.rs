//! Named worker threads: each gets a stop channel (closed to stop it), tells the main loop when
//! it ends (normally or by a panic), and is joined with its panic handed back to the caller.

use std::any::Any;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

/// Sends the thread's name on the exit channel when dropped, even while unwinding a panic.
struct ExitNotice {
    name: &'static str,
    exits: Sender<&'static str>,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.exits.try_send(self.name);
    }
}

/// A running worker thread.
pub struct Worker {
    name: &'static str,
    stop: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts `body(stop)` on a thread called `name`; `stop` disconnects when the worker is
    /// asked to end. `exits` hears `name` when the thread ends for any reason.
    pub fn spawn(
        name: &'static str,
        exits: &Sender<&'static str>,
        body: impl FnOnce(Receiver<()>) + Send + 'static,
    ) -> std::io::Result<Worker> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let notice = ExitNotice {
            name,
            exits: exits.clone(),
        };
        let handle = thread::Builder::new().name(name.into()).spawn(move || {
            let _notice = notice;
            body(stop_rx);
        })?;
        Ok(Worker {
            name,
            stop: Some(stop_tx),
            handle: Some(handle),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Asks the thread to end (does not wait).
    pub fn stop(&mut self) {
        self.stop.take();
    }

    /// Stops and joins the thread; `Err` carries its panic.
    pub fn join(mut self) -> Result<(), Box<dyn Any + Send>> {
        self.stop();
        match self.handle.take() {
            Some(h) => h.join(),
            None => Ok(()),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
        if let Some(h) = self.handle.take() {
            if !thread::panicking() {
                let _ = h.join();
            }
        }
    }
}

//! Named worker threads for both daemons: each gets a stop channel (closed to stop it), tells
//! its owner when it ends (normally or by a panic) on an exit channel the owner selects on,
//! and is joined with its panic re-raised, so a dead thread is noticed, never waited on.

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

/// A running worker thread whose body returns a `T`.
pub struct Worker<T = ()> {
    name: &'static str,
    stop: Option<Sender<()>>,
    handle: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Worker<T> {
    /// Starts `body(stop)` on a thread called `name`; `stop` disconnects when the worker is
    /// asked to end. `exits` hears `name` when the thread ends for any reason (a full exit
    /// channel drops the notice: size it for the owner's workers).
    pub fn spawn(
        name: &'static str,
        exits: &Sender<&'static str>,
        body: impl FnOnce(Receiver<()>) -> T + Send + 'static,
    ) -> std::io::Result<Worker<T>> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let notice = ExitNotice {
            name,
            exits: exits.clone(),
        };
        let handle = thread::Builder::new().name(name.into()).spawn(move || {
            let _notice = notice;
            body(stop_rx)
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
    pub fn join(mut self) -> Result<T, Box<dyn Any + Send>> {
        self.stop();
        match self.handle.take() {
            Some(h) => h.join(),
            None => Err(Box::new("joined twice")),
        }
    }

    /// Stops and joins the thread, re-raising its panic (unless this thread is already
    /// panicking: then None).
    pub fn stop_join(self) -> Option<T> {
        match self.join() {
            Ok(v) => Some(v),
            Err(panic) if !thread::panicking() => std::panic::resume_unwind(panic),
            Err(_) => None,
        }
    }
}

impl<T> Drop for Worker<T> {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(h) = self.handle.take() {
            if !thread::panicking() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stops_joins_and_returns_the_value() {
        let (exits, exited) = crossbeam_channel::bounded(4);
        let w = Worker::spawn("waiter", &exits, |stop| {
            let _ = stop.recv();
            42
        })
        .unwrap();
        assert_eq!(w.name(), "waiter");
        assert!(exited.try_recv().is_err(), "still running");
        assert_eq!(w.stop_join(), Some(42));
        assert_eq!(exited.recv_timeout(Duration::from_secs(5)), Ok("waiter"));
    }

    #[test]
    fn a_panic_is_announced_on_the_exit_channel_and_re_raised_by_the_joiner() {
        let (exits, exited) = crossbeam_channel::bounded(4);
        let w = Worker::spawn("doomed", &exits, |_stop| -> u32 { panic!("boom") }).unwrap();
        assert_eq!(exited.recv_timeout(Duration::from_secs(5)), Ok("doomed"));
        let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.stop_join()));
        assert!(joined.is_err(), "the panic reaches the joiner");
    }
}
